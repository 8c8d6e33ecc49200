"""Concurrent writes: two replicas changing the same versioned object at once lose nothing,
never answer 500, get versions of their own, and audit only what took effect; If-Match
turns a stale change into a 412. Two apps on one database stand for two replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from concierge.app import Concierge
from concierge.models.registry import ModelRegistry
from concierge.store.tables import audit_log
from tests.conftest import http_client, make_settings


@pytest.fixture
async def replicas(
    tmp_path: Path, db_url: str, models_dir: Path, registry: ModelRegistry
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Concierge]]:
    apps = []
    for _ in range(2):
        settings = make_settings(tmp_path, db_url, models_dir, llm_enabled=False)
        app = Concierge(settings, registry=registry, entry_points=False, preload_models=False)
        await app.startup()
        apps.append(app)
    async with http_client(apps[0]) as one, http_client(apps[1]) as two:
        yield one, two, apps[0]
    for app in apps:
        await app.shutdown()


async def _audit(app: Concierge, action: str) -> list[Any]:
    return await app.db.read(
        lambda conn: conn.execute(select(audit_log).where(audit_log.c.action == action)).all()
    )


async def test_concurrent_policy_changes_all_take_effect(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient, Concierge],
) -> None:
    one, two, app = replicas
    path = "/api/orgs/default/policy"
    rounds = 8
    for n in range(rounds):
        # The very first round has no policy row yet (it gave a 500 before).
        first, second = await asyncio.gather(
            one.patch(path, json={"moderation": {"blocked_terms": [f"alpha{n}"]}}),
            two.patch(
                path, json={"disclosure": {"texts": {"en": f"Hello from a bot, round {n}."}}}
            ),
        )
        assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
        versions = {first.json()["version"], second.json()["version"]}
        assert versions == {2 * n + 1, 2 * n + 2}  # each change a version of its own
        now = (await one.get(path)).json()
        assert now["moderation"]["blocked_terms"] == [f"alpha{n}"]  # neither change was lost
        assert now["disclosure"]["texts"]["en"] == f"Hello from a bot, round {n}."
    assert len(await _audit(app, "policy.updated")) == 2 * rounds  # only what took effect


async def test_if_match_refuses_a_stale_policy_change(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient, Concierge],
) -> None:
    one, two, app = replicas
    path = "/api/orgs/default/policy"
    read = await one.get(path)
    tag = read.headers["etag"]
    assert tag == '"0"'
    changed = await two.patch(
        path, json={"moderation": {"blocked_terms": ["x"]}}, headers={"If-Match": tag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] == '"1"'
    stale = await one.patch(
        path, json={"moderation": {"blocked_terms": ["y"]}}, headers={"If-Match": tag}
    )
    assert stale.status_code == 412, stale.text
    assert stale.json()["error"]["code"] == "version_mismatch"
    assert (await one.get(path)).json()["moderation"]["blocked_terms"] == ["x"]
    bad = await one.patch(path, json={}, headers={"If-Match": "yesterday"})
    assert bad.status_code == 400
    assert len(await _audit(app, "policy.updated")) == 1


async def test_concurrent_assistant_changes_each_get_a_version(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient, Concierge],
) -> None:
    one, two, app = replicas
    made = await one.post("/v1/assistants", json={"name": "support"})
    assert made.status_code == 201 and made.headers["etag"] == '"1"'
    for n in range(6):
        first, second = await asyncio.gather(
            one.patch("/v1/assistants/support", json={"instructions": f"Be brief {n}."}),
            two.patch("/v1/assistants/support", json={"greeting": f"Hello {n}!"}),
        )
        assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
        assert {first.json()["version"], second.json()["version"]} == {2 * n + 2, 2 * n + 3}
        now = (await two.get("/v1/assistants/support")).json()
        assert (now["instructions"], now["greeting"]) == (f"Be brief {n}.", f"Hello {n}!")
    versions = (await one.get("/v1/assistants/support/versions")).json()["data"]
    assert [v["version"] for v in versions] == list(range(1, 14))
    assert len(await _audit(app, "assistant.updated")) == 12

    current = (await one.get("/v1/assistants/support")).headers["etag"]
    stale = await two.patch(
        "/v1/assistants/support", json={"temperature": 0.1}, headers={"If-Match": '"2"'}
    )
    assert stale.status_code == 412
    fresh = await two.patch(
        "/v1/assistants/support", json={"temperature": 0.1}, headers={"If-Match": current}
    )
    assert fresh.status_code == 200
    gone = await one.delete("/v1/assistants/support", headers={"If-Match": current})
    assert gone.status_code == 412  # changed since


async def test_a_report_is_resolved_once(pipeline: Any) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    sent = (await pipeline.send(cid, "Hello")).json()
    turn = sent["reply"]["id"]
    report = await pipeline.client.post(
        f"/v1/conversations/{cid}/turns/{turn}/report", json={"category": "inaccurate"}
    )
    rid = report.json()["id"]
    answers = await asyncio.gather(
        *(
            pipeline.client.post(f"/v1/reports/{rid}/resolve", json={"resolution": "upheld"})
            for _ in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert len(await _audit(pipeline.app, "report.resolved")) == 1
