"""End users, conversations, turns and memories on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from concierge import orgs
from concierge.assistants import definitions
from concierge.assistants.definitions import AssistantConfig
from concierge.conversations import memory, store
from concierge.errors import InvalidRequest, NotFound
from concierge.store import Database


def test_end_users_conversations_turns_and_isolation(db: Database) -> None:
    def run(conn: Connection) -> None:
        acme = orgs.ensure(conn, "acme").id
        globex = orgs.ensure(conn, "globex").id
        bot = definitions.create(conn, acme, "support", AssistantConfig())
        alice = store.end_user(conn, acme, "api", " alice ")
        assert store.end_user(conn, acme, "api", "alice").id == alice.id
        assert store.end_user(conn, acme, "web", "alice").id != alice.id
        assert store.end_user(conn, globex, "api", "alice").id != alice.id
        with pytest.raises(InvalidRequest):
            store.end_user(conn, acme, "api", "x" * 300)

        chat = store.create(conn, acme, bot.id, alice, "api")
        assert chat.status == "assistant" and chat.end_user_id == alice.id
        assert store.latest(conn, acme, bot.id, alice, "api") == chat
        for i in range(5):
            store.add_turn(conn, chat, "user", f"question {i}")
            store.add_turn(
                conn,
                chat,
                "assistant",
                f"answer {i}",
                citations=[{"document_id": 1, "title": "FAQ", "position": None, "snippet": "s"}],
                assistant_version=1,
                model="m",
                prompt_tokens=10,
                completion_tokens=3,
                latency_ms=12.5,
            )
        page, more = store.list_turns(conn, chat, limit=4)
        assert [t.content for t in page] == ["question 0", "answer 0", "question 1", "answer 1"]
        assert more
        rest, more = store.list_turns(conn, chat, after=page[-1].id)
        assert len(rest) == 6 and not more
        window = store.recent_turns(conn, chat, 3)
        assert [t.content for t in window] == ["answer 3", "question 4", "answer 4"]
        assert window[-1].citations[0]["title"] == "FAQ" and window[-1].latency_ms == 12.5
        assert window[-1].to_dict()["usage"] == {"prompt_tokens": 10, "completion_tokens": 3}

        waiting = store.set_status(conn, chat, "handoff", "asked for a person")
        assert waiting.status == "handoff" and waiting.handoff_at is not None
        queue, _ = store.list_page(conn, acme, status="handoff", oldest_first=True)
        assert [c.id for c in queue] == [chat.id]
        assert store.list_page(conn, globex, status="handoff")[0] == []
        back = store.set_status(conn, waiting, "assistant")
        assert back.handoff_reason is None and back.handoff_at is None
        with pytest.raises(NotFound):
            store.get(conn, globex, chat.id)
        with pytest.raises(NotFound):
            store.get_end_user(conn, globex, alice.id)

    db.write_sync(run)


def test_memories_dedupe_cap_and_forget(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_MEMORIES", 3)

    def run(conn: Connection) -> None:
        acme = orgs.ensure(conn, "acme").id
        bot = definitions.create(conn, acme, "support", AssistantConfig())
        other = definitions.create(conn, acme, "sales", AssistantConfig())
        bob = store.end_user(conn, acme, "web", "visitor-1")
        first = memory.remember(conn, acme, bot.id, bob, "  Size   M  ")
        assert first.fact == "Size M"
        assert memory.remember(conn, acme, bot.id, bob, "size m").id == first.id
        for fact in ("Lives in Lyon", "Prefers e-mail", "Has a dog"):
            memory.remember(conn, acme, bot.id, bob, fact)
        facts = [m.fact for m in memory.memories_of(conn, acme, bot.id, bob)]
        assert facts == ["Lives in Lyon", "Prefers e-mail", "Has a dog"]  # the oldest went
        assert memory.memories_of(conn, acme, other.id, bob) == []
        with pytest.raises(InvalidRequest):
            memory.remember(conn, acme, bot.id, bob, "   ")
        some = memory.memories_of(conn, acme, bot.id, bob)[0]
        assert memory.forget(conn, acme, bot.id, bob, some.id) == 1
        with pytest.raises(NotFound):
            memory.forget(conn, acme, bot.id, bob, some.id)
        assert memory.forget(conn, acme, bot.id, bob) == 2

    db.write_sync(run)
