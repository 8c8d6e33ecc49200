"""The retrieval step: passages from several knowledge bases, merged, best first."""

from __future__ import annotations

from httpx import AsyncClient

from concierge.app import Concierge
from concierge.assistants.retrieval import knowledge_bases, retrieve
from tests.test_knowledge_api import wait_job


async def test_passages_from_several_knowledge_bases(
    client: AsyncClient, concierge: Concierge
) -> None:
    ids = []
    for name, docs in [
        ("policies", [("returns", "Returns are accepted within 30 days of delivery.")]),
        ("catalogue", [("boots", "Trail boots, waterproof, sizes 36 to 47, 129 euros.")]),
    ]:
        kb = (await client.post("/v1/knowledge_bases", json={"name": name})).json()
        job = await client.post(
            f"/v1/knowledge_bases/{kb['id']}/documents",
            json={"documents": [{"id": i, "text": t, "title": i.title()} for i, t in docs]},
        )
        await wait_job(client, kb["id"], job.json())
        ids.append(kb["id"])
    org = concierge.db.read_sync(
        lambda conn: conn.exec_driver_sql(
            f"SELECT org_id FROM knowledge_bases WHERE id = {ids[0]}"
        ).scalar_one()
    )
    kbs = concierge.db.read_sync(lambda conn: knowledge_bases(conn, org, [*ids, 999999]))
    assert [kb.id for kb in kbs] == ids  # a missing one is skipped
    found = await retrieve(concierge.knowledge, kbs, "how many days to return", 2)
    assert [p.title for p in found] == ["Returns", "Boots"]
    assert found[0].knowledge_base_id == ids[0] and found[0].score >= found[1].score
    assert found[0].citation()["snippet"].startswith("Returns are accepted")
    assert await retrieve(concierge.knowledge, kbs, "   ", 3) == []
    assert await retrieve(concierge.knowledge, [], "boots", 3) == []
    # Another organisation's ids find nothing.
    assert concierge.db.read_sync(lambda conn: knowledge_bases(conn, org + 100, ids)) == []
