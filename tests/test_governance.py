"""Governance in the reply pipeline, through real HTTP on SQLite and PostgreSQL: disclosure,
provenance labels (and exports that keep them), personal data, moderation and complaints,
consent. The chat model is the scripted upstream of the pipeline tests (it stands for a
remote model API); everything else is real.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from concierge.governance.policy import DISCLOSURE_TEXTS, EXPLICIT_LABEL_TEXTS, REFUSAL_TEXT
from tests.scripted import DISCLOSED, Pipeline, says
from tests.test_gateway import assert_openai_error


def completion_json(text: str) -> web.Response:
    """A non-streamed chat completion from the scripted upstream."""
    return web.json_response(
        {
            "id": "up-1",
            "object": "chat.completion",
            "created": 0,
            "model": "big",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )


async def _policy(p: Pipeline, changes: dict[str, Any]) -> dict[str, Any]:
    response = await p.client.patch("/api/orgs/default/policy", json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _verify(p: Pipeline, content: str, label: dict[str, Any]) -> dict[str, Any]:
    out = await p.client.post("/v1/labels/verify", json={"content": content, "aigc": label})
    assert out.status_code == 200, out.text
    return dict(out.json())


# -- disclosure ------------------------------------------------------------------------------


async def test_the_first_answer_discloses_the_ai_in_the_users_language(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("Bonjour !")
    first = await pipeline.client.post(
        f"/v1/assistants/support/conversations/{cid}/messages",
        json={"content": "Bonjour"},
        headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"},
    )
    reply = first.json()["reply"]
    assert reply["content"] == DISCLOSURE_TEXTS["fr"] + "\n\nBonjour !"
    assert reply["governance"]["disclosure"] == DISCLOSURE_TEXTS["fr"]
    # Only the first assistant message carries it, and the model never sees it.
    second = (await pipeline.send(cid, "Encore")).json()["reply"]
    assert second["content"] == "Bonjour !"
    window = [m["content"] for m in pipeline.bodies[-1]["messages"] if m["role"] == "assistant"]
    assert window == ["Bonjour !"]

    # Switching it off is the organisation's explicit choice, and is audited.
    await _policy(pipeline, {"disclosure": {"enabled": False}})
    other = await pipeline.conversation(user="cust-2")
    assert (await pipeline.send(other, "hi")).json()["reply"]["content"] == "Bonjour !"
    audit = (
        await pipeline.client.get("/api/audit", params={"action": "disclosure.disabled"})
    ).json()
    assert len(audit["data"]) == 1

    # An operator's own text per language, on one assistant only.
    await _policy(pipeline, {"disclosure": {"enabled": True}})
    changed = await pipeline.client.patch(
        "/v1/assistants/support",
        json={"governance": {"disclosure_texts": {"en": "Hi, I am Acme's AI helper."}}},
    )
    assert changed.status_code == 200, changed.text
    third = await pipeline.conversation(user="cust-3")
    content = (await pipeline.send(third, "hi")).json()["reply"]["content"]
    assert content == "Hi, I am Acme's AI helper.\n\nBonjour !"


# -- provenance labels -----------------------------------------------------------------------


async def test_replies_and_completions_carry_signed_labels(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("Your order ships today.")
    response = await pipeline.send(cid, "Where is my order?")
    assert response.headers["x-ai-generated"] == "1"
    body = response.json()
    label = body["aigc"]
    assert set(label) == {"Label", "ContentProducer", "ProduceID", "ReservedCode1"}
    assert label["Label"] == "1" and label["ContentProducer"] == "Concierge"
    assert label["ProduceID"] == body["reply"]["governance"]["label_id"]
    checked = await _verify(pipeline, body["reply"]["content"], label)
    assert checked["ok"] is True, checked
    # Change one character of the content, or the label: the check fails and says why.
    tampered = await _verify(pipeline, body["reply"]["content"] + "!", label)
    assert tampered["ok"] is False and "signature does not match" in tampered["problems"][0]
    forged = await _verify(pipeline, body["reply"]["content"], {**label, "ContentProducer": "X"})
    assert forged["ok"] is False
    unknown = await _verify(
        pipeline, "x", {**label, "ReservedCode1": "ed25519:0000000000000000:AAAA"}
    )
    assert "not a known key" in unknown["problems"][0]
    malformed = await pipeline.client.post("/v1/labels/verify", json={"content": "x"})
    assert_openai_error(malformed, 400)

    # The plain OpenAI endpoints label too: whole, and on the last chunk of a stream.
    pipeline.script = lambda body: (
        says("Hello there.") if body.get("stream") else completion_json("Hi.")
    )
    whole = await pipeline.client.post(
        "/v1/chat/completions",
        json={"model": "big", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert whole.headers["x-ai-generated"] == "1"
    completion = whole.json()
    assert completion["aigc"]["ProduceID"] == completion["id"]
    text = completion["choices"][0]["message"]["content"]
    assert (await _verify(pipeline, text, completion["aigc"]))["ok"] is True
    async with pipeline.client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "big", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as streamed:
        assert streamed.headers["x-ai-generated"] == "1"
        raw = (await streamed.aread()).decode()
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    labelled = [c for c in chunks if "aigc" in c]
    assert len(labelled) == 1 and labelled[0]["choices"][0]["finish_reason"] == "stop"
    streamed_text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert (await _verify(pipeline, streamed_text, labelled[0]["aigc"]))["ok"] is True
    # A saved stream verifies as a file, too.
    found = (await pipeline.client.post("/v1/labels/verify-file", content=raw.encode())).json()
    assert found["ok"] is True and found["kind"] == "stream"

    keys = (await pipeline.client.get("/.well-known/aigc-keys")).json()["keys"]
    assert keys[0]["crv"] == "Ed25519" and label["ReservedCode1"].split(":")[1] == keys[0]["kid"]


async def test_exports_keep_both_labels_and_verify(
    pipeline: Pipeline,
    cli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    await _policy(pipeline, {"labels": {"explicit": "end", "producer": "Acme Ltd (91310000)"}})
    await pipeline.assistant(greeting="Welcome to Acme.")
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("Returns take 30 days.")
    reply = (await pipeline.send(cid, "How long are returns?")).json()
    marked = EXPLICIT_LABEL_TEXTS["en"]
    assert reply["reply"]["content"] == "Returns take 30 days.\n\n" + marked
    assert reply["aigc"]["ContentProducer"] == "Acme Ltd (91310000)"

    for fmt in ("json", "text", "html"):
        exported = await pipeline.client.get(f"/v1/conversations/{cid}/export?format={fmt}")
        assert exported.status_code == 200, exported.text
        target = tmp_path / f"export.{fmt}"
        target.write_bytes(exported.content)
        checked = cli("labels", "verify", str(target))
        assert "label valid (AI-generated by Acme Ltd (91310000)" in checked.stdout, checked.stdout
        if fmt != "json":
            assert marked in exported.text and "AI-generated" in exported.text
            # The greeting is the operator's text, not generated: no AI mark on it.
            ai_marks = "Assistant [AI-generated]:" if fmt == "text" else 'class="ai" title'
            assert exported.text.count(ai_marks) == 1
        # Edited after export: the check fails, and exits non-zero.
        target.write_bytes(exported.content.replace(b"30 days", b"90 days", 1))
        tampered = cli("labels", "verify", str(target), ok=False)
        assert tampered.returncode == 1
        assert "signature does not match" in tampered.stdout or "differs" in tampered.stdout

    listed = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert "aigc" not in listed[0] and listed[-1]["aigc"]["ProduceID"] == reply["aigc"]["ProduceID"]
    bad = cli("labels", "verify", '{"content": "x", "aigc": {"Label": "1"}}', ok=False)
    assert bad.returncode == 1 and "ProduceID is missing" in bad.stdout


# -- personal data ---------------------------------------------------------------------------


async def test_personal_data_is_masked_in_storage_for_remote_models_and_in_logs(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    # The remote model only ever sees placeholders; its answer gets the real values back.
    pipeline.script = lambda body: says("I will write to [EMAIL_1] today.")
    message = "My email is jane.doe@example.com and my card is 4539 1488 0343 6467."
    out = (await pipeline.send(cid, message)).json()
    assert out["reply"]["content"].endswith("I will write to jane.doe@example.com today.")
    sent = pipeline.bodies[-1]["messages"][-1]["content"]
    assert sent == "My email is [EMAIL_1] and my card is [CARD_1]."
    assert "jane.doe" not in json.dumps(pipeline.bodies)
    turns = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert turns[0]["content"] == "My email is [EMAIL] and my card is [CARD]."
    assert turns[0]["governance"]["pii"] == {"email": 1, "card": 1}
    assert "[EMAIL]" in turns[1]["content"] and "example.com" not in turns[1]["content"]
    # The stored reply's label is issued over what was stored, and verifies.
    assert (await _verify(pipeline, turns[1]["content"], turns[1]["aigc"]))["ok"] is True

    logging.getLogger("concierge.test").warning("caller wrote from 203.0.113.7: %s", message)
    logged = [r.getMessage() for r in caplog.records if r.name == "concierge.test"]
    assert logged and "jane.doe" not in logged[0] and "203.0.113.7" not in logged[0]

    # An organisation that keeps messages as written turns storage masking off.
    await _policy(pipeline, {"pii": {"redact_storage": False}})
    await pipeline.send(cid, "Call me on +44 20 7946 0958")
    turns = (await pipeline.client.get(f"/v1/conversations/{cid}/turns")).json()["data"]
    assert turns[-2]["content"] == "Call me on +44 20 7946 0958"
    assert pipeline.bodies[-1]["messages"][-1]["content"] == "Call me on [PHONE_1]"


# -- moderation and complaints ---------------------------------------------------------------


async def test_blocked_input_is_refused_and_queued_for_review(pipeline: Pipeline) -> None:
    await _policy(pipeline, {"moderation": {"blocked_terms": ["counterfeit"]}})
    await pipeline.assistant()
    cid = await pipeline.conversation()
    calls_before = len(pipeline.bodies)
    out = (await pipeline.send(cid, "Where can I buy COUNTERFEIT watches?")).json()
    assert out["reply"]["content"] == DISCLOSED + REFUSAL_TEXT
    assert len(pipeline.bodies) == calls_before  # the model was never asked
    assert out["aigc"] is None  # the platform's refusal is not AI-generated content
    assert out["user_turn"]["governance"]["moderation"]["rule"] == "counterfeit"
    queue = (await pipeline.client.get("/v1/reports")).json()
    assert queue["total"] == 1
    flagged = queue["data"][0]
    assert flagged["source"] == "moderation" and flagged["turn_id"] == out["user_turn"]["id"]
    audit = (
        await pipeline.client.get("/api/audit", params={"action": "moderation.flagged"})
    ).json()
    assert audit["data"][0]["target"] == f"turn:{out['user_turn']['id']}"


async def test_blocked_output_is_replaced_mid_stream(pipeline: Pipeline) -> None:
    await _policy(pipeline, {"moderation": {"blocked_patterns": [r"\bguaranteed? returns?\b"]}})
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("This fund has guaranteed returns of 20% a year.")
    async with pipeline.client.stream(
        "POST",
        f"/v1/assistants/support/conversations/{cid}/messages",
        json={"content": "Is it a good investment?", "stream": True},
    ) as response:
        raw = (await response.aread()).decode()
    events = [
        (block.split("\n")[0][7:], json.loads(block.split("\n")[1][6:]))
        for block in raw.strip().split("\n\n")
    ]
    names = [name for name, _ in events]
    assert "turn.replaced" in names
    replaced = dict(events)["turn.replaced"]["content"]
    assert replaced == DISCLOSED + REFUSAL_TEXT
    shown = "".join(d["content"] for n, d in events if n == "turn.delta")
    assert "guaranteed returns" not in shown  # the offending words never went out
    completed = dict(events)["turn.completed"]
    assert completed["reply"]["content"] == DISCLOSED + REFUSAL_TEXT
    assert completed["reply"]["governance"]["moderation"]["stage"] == "output"

    # With action "flag" the answer is delivered and a person reviews it.
    await _policy(pipeline, {"moderation": {"action": "flag"}})
    out = (await pipeline.send(cid, "Really?")).json()
    assert "guaranteed returns" in out["reply"]["content"]
    reports = (await pipeline.client.get("/v1/reports")).json()["data"]
    assert [r["turn_id"] for r in reports][-1] == out["reply"]["id"]


async def test_users_report_answers_and_operators_resolve_them(pipeline: Pipeline) -> None:
    await pipeline.assistant()
    cid = await pipeline.conversation()
    pipeline.script = lambda body: says("Our shop is closed on Sundays.")
    out = (await pipeline.send(cid, "Opening hours?")).json()
    turn = out["reply"]["id"]
    made = await pipeline.client.post(
        f"/v1/conversations/{cid}/turns/{turn}/report",
        json={"category": "inaccurate", "reason": "It is open on Sundays."},
    )
    assert made.status_code == 201, made.text
    report = made.json()
    assert report["status"] == "open" and report["source"] == "user"
    # Reporting the user's own message, an unknown turn or an unknown category is refused.
    mine = await pipeline.client.post(
        f"/v1/conversations/{cid}/turns/{out['user_turn']['id']}/report",
        json={"category": "other"},
    )
    assert_openai_error(mine, 400)
    missing = await pipeline.client.post(
        f"/v1/conversations/{cid}/turns/999999/report", json={"category": "other"}
    )
    assert_openai_error(missing, 404)
    odd = await pipeline.client.post(
        f"/v1/conversations/{cid}/turns/{turn}/report", json={"category": "boring"}
    )
    assert_openai_error(odd, 400)

    shown = (await pipeline.client.get(f"/v1/reports/{report['id']}")).json()
    assert shown["turn"]["content"].endswith("Our shop is closed on Sundays.")
    resolved = await pipeline.client.post(
        f"/v1/reports/{report['id']}/resolve",
        json={"resolution": "content_removed", "note": "Wrong hours."},
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["turn"]["content"] == "This answer was removed after review."
    again = await pipeline.client.post(
        f"/v1/reports/{report['id']}/resolve", json={"resolution": "dismissed"}
    )
    assert_openai_error(again, 409)
    assert (await pipeline.client.get("/v1/reports")).json()["total"] == 0
    actions = [e["action"] for e in (await pipeline.client.get("/api/audit")).json()["data"]]
    assert "report.opened" in actions and "report.resolved" in actions


# -- consent ---------------------------------------------------------------------------------


async def test_consent_is_recorded_with_its_history(pipeline: Pipeline) -> None:
    first = await pipeline.client.post(
        "/v1/consents",
        json={"user": "cust-9", "purpose": "marketing", "granted": True, "text_version": "2026-10"},
    )
    assert first.status_code == 201, first.text
    await pipeline.client.post(
        "/v1/consents", json={"user": "cust-9", "purpose": "marketing", "granted": False}
    )
    summary = (await pipeline.client.get("/v1/consents", params={"user": "cust-9"})).json()
    assert summary["purposes"]["marketing"]["granted"] is False
    assert summary["purposes"]["marketing"]["current_text"] is True
    assert summary["purposes"]["terms"] is None
    assert [d["granted"] for d in summary["history"]] == [False, True]
    assert summary["history"][1]["text_version"] == "2026-10"
    for bad in (
        {"user": "cust-9", "purpose": "spam", "granted": True},
        {"user": "cust-9", "purpose": "marketing", "granted": "yes"},
        {"user": "cust-9", "purpose": "marketing"},
    ):
        assert_openai_error(await pipeline.client.post("/v1/consents", json=bad), 400)
    unknown = await pipeline.client.get("/v1/consents", params={"user": "nobody"})
    assert_openai_error(unknown, 404)
    actions = [e["action"] for e in (await pipeline.client.get("/api/audit")).json()["data"]]
    assert actions.count("consent.granted") == 1 and actions.count("consent.withdrawn") == 1


async def test_bad_policies_are_refused_and_nothing_changes(pipeline: Pipeline) -> None:
    for bad, where in (
        ({"moderation": {"blocked_patterns": ["(unclosed"]}}, "moderation.blocked_patterns"),
        ({"retention": {"conversation_days": 0}}, "retention.conversation_days"),
        ({"disclosure": {"texts": {"en": "  "}}}, "disclosure.texts"),
        ({"labels": {"explicit": "middle"}}, "labels.explicit"),
        ({"nonsense": True}, "nonsense"),
    ):
        response = await pipeline.client.patch("/api/orgs/default/policy", json=bad)
        assert_openai_error(response, 400)
        assert where in response.json()["error"]["message"], response.text
    whole = await pipeline.client.put(
        "/api/orgs/default/policy", json={"pii": {"entities": ["dna"]}}
    )
    assert_openai_error(whole, 400)
    assert (await pipeline.client.get("/api/orgs/default/policy")).json()["version"] == 0
    assert_openai_error(await pipeline.client.get("/api/orgs/nowhere/policy"), 404)
