"""The Telegram Bot API emulator (telegram-test-api from npm, with the additions in
``telegram/server.js``) as a subprocess on a local port, and a Concierge served on a real port
for it to call back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from concierge.app import Concierge
from tests.conftest import ADMIN_KEY, free_port

PEER = Path(__file__).parent / "telegram"


def consent(message: dict[str, Any]) -> bool:
    """The memory consent question (asked after a first reply)."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return any(str(b.get("callback_data", "")).startswith("cc:consent:") for r in rows for b in r)


class TelegramEmulator:
    def __init__(self) -> None:
        node = shutil.which("node")
        assert node, "Node.js is needed for the Telegram emulator"
        assert (PEER / "node_modules").exists(), "run `make peers` (npm ci in tests/peers/telegram)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [node, str(PEER / "server.js"), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", line
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def user_says(self, token: str, chat: int, text: str, name: str = "Ana") -> None:
        who = {"id": chat, "is_bot": False, "first_name": name}
        answer = await self.client.post(
            "/sendMessage",
            json={
                "botToken": token,
                "from": who,
                "chat": {"id": chat, "type": "private", "first_name": name},
                "date": int(time.time()),
                "text": text,
            },
        )
        assert answer.json()["ok"], answer.text

    async def user_presses(self, token: str, chat: int, data: str) -> None:
        answer = await self.client.post(
            "/sendCallback",
            json={
                "botToken": token,
                "from": {"id": chat, "is_bot": False, "first_name": "Ana"},
                "message": {"message_id": 1, "chat": {"id": chat, "type": "private"}},
                "data": data,
            },
        )
        assert answer.json()["ok"], answer.text

    async def history(self, token: str) -> list[dict[str, Any]]:
        answer = await self.client.post("/getUpdatesHistory", json={"token": token})
        return list(answer.json()["result"])

    async def bot_messages(self, token: str, count: int, timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [
                u["message"]
                for u in await self.history(token)
                if "messageId" in u and "chat_id" in u["message"] and not consent(u["message"])
            ]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} bot messages: {await self.history(token)}"
                )
            await asyncio.sleep(0.05)

    async def actions(self) -> list[dict[str, Any]]:
        return list((await self.client.post("/actions")).json()["result"])

    async def close(self) -> None:
        await self.client.aclose()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    yield emulator
    await emulator.close()


class Served:
    """An in-process Concierge (already started) on a real port."""

    def __init__(self, app: Concierge) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app.app(), host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        if self.task is not None:
            await self.task
