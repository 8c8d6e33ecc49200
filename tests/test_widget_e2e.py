"""The web chat widget in a real browser (Debian's Chromium, driven by Playwright) against a
real server (``concierge serve`` in a subprocess) with the demo seeded and the embedded model.

Set ``CONCIERGE_SCREENSHOTS=docs/images`` to write the documentation's screenshots.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import ADMIN_KEY, LiveServer, server_env

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = os.environ.get("CONCIERGE_SCREENSHOTS")
WIDGET = "#concierge-widget"


@pytest.fixture(scope="module")
def demo_server(
    module_db_url: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The demo, seeded once per backend and served to every test of the module (each test
    is its own visitor; the widget's per-address limits are raised, as all of them come from
    this machine)."""
    cwd = tmp_path_factory.mktemp("demo")
    env = server_env(
        cwd,
        module_db_url,
        models_dir,
        widget_ip_requests_per_minute="100000",
        widget_new_visitors_per_minute="100000",
        widget_poll_seconds="2",  # a person stepping in shows up sooner
    )
    seeded = subprocess.run(
        [sys.executable, "-m", "concierge", "demo", "seed"],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr
    server = LiveServer(env, cwd)
    yield server
    server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install chromium"
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield launched
        await launched.close()


async def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / name))


def _in(selector: str) -> str:
    return f"{WIDGET} >> css={selector}"


async def _ask(page: Page, text: str) -> None:
    box = page.locator(_in("textarea"))
    await box.fill(text)
    await box.press("Enter")


async def test_a_visitor_chats_with_citations_and_the_disclosure(
    demo_server: LiveServer, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(demo_server.url + "/")
    await expect(page.locator("h1")).to_contain_text("Acme Outfitters")

    launcher = page.locator(_in(".launcher"))
    await expect(launcher).to_have_attribute("aria-expanded", "false")
    # Keyboard only: focus the launcher, open with Enter; focus lands in the message box.
    await launcher.focus()
    await page.keyboard.press("Enter")
    await expect(launcher).to_have_attribute("aria-expanded", "true")
    await expect(page.locator(_in("textarea"))).to_be_focused()
    await expect(page.locator(_in(".disclosure"))).to_contain_text("AI assistant")
    await expect(page.locator(_in(".msg.assistant")).first).to_contain_text("Acme's virtual")
    await page.locator(_in(".consent button"), has_text="No, thanks").click()

    await _ask(page, "How long does standard shipping take?")
    await expect(page.locator(_in(".msg.user"))).to_contain_text("standard shipping")
    reply = page.locator(_in(".msg.assistant")).nth(1)
    await expect(reply.locator(".sources")).to_be_visible(timeout=90_000)
    assert (await reply.locator(".text").inner_text()).strip()
    await reply.locator(".sources summary").click()
    await expect(reply.locator(".sources li").first).to_be_visible()
    titles = await reply.locator(".sources li strong").all_inner_texts()
    assert "Shipping and delivery" in titles
    await _shot(page, "widget-desktop.png")

    # The answer can be reported to the team; the report lands in the review queue.
    await reply.locator(".report").click()
    form = reply.locator(".report-form")
    await form.locator("select").select_option("inaccurate")
    await form.locator("input").fill("Express shipping is faster than that.")
    await _shot(page, "widget-report.png")
    await form.locator("button", has_text="Send report").click()
    await expect(reply.locator(".reported")).to_contain_text("will review this answer")
    queue = httpx.get(
        demo_server.url + "/v1/reports",
        headers={"Authorization": f"Bearer {await _acme_key(demo_server)}"},
    ).json()
    assert [(r["source"], r["category"]) for r in queue["data"]] == [("user", "inaccurate")]

    # The log is announced to screen readers; Escape closes and gives focus back.
    assert await page.locator(_in(".log")).get_attribute("aria-live") == "polite"
    await page.locator(_in("textarea")).focus()
    await page.keyboard.press("Escape")
    await expect(page.locator(_in(".panel"))).to_be_hidden()
    await expect(launcher).to_be_focused()

    # A reload keeps the conversation (the visitor token and conversation are remembered).
    await page.reload()
    await page.locator(_in(".launcher")).click()
    await expect(page.locator(_in(".msg.user"))).to_contain_text("standard shipping")
    assert errors == []


async def test_a_visitor_decides_what_the_assistant_may_remember(
    demo_server: LiveServer, browser: Browser
) -> None:
    withdrawn_before = _withdrawals(demo_server)
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(demo_server.url + "/")
    await page.locator(_in(".launcher")).click()
    box = page.locator(_in(".consent"))
    # Asked in the organisation's words before anything is remembered.
    await expect(box.locator(".ask")).to_contain_text("May the assistant remember")
    await _shot(page, "widget-consent.png")
    await box.locator("button", has_text="Allow").click()
    await expect(box.locator(".state")).to_have_text("The assistant remembers what you tell it.")
    # Withdrawing is one click too, and the answer outlives a reload.
    await box.locator("button", has_text="Stop remembering").click()
    await expect(box.locator(".state")).to_contain_text("does not remember you")
    await page.reload()
    await page.locator(_in(".launcher")).click()
    await expect(page.locator(_in(".consent .state"))).to_contain_text("does not remember you")
    await expect(page.locator(_in(".consent .ask"))).to_have_count(0)

    # The record: both decisions, through the widget, against the text version shown.
    saved = await page.evaluate(
        "Object.keys(localStorage).filter(k => k.startsWith('concierge:'))"
        ".map(k => JSON.parse(localStorage.getItem(k)).token)[0]"
    )
    mine = httpx.get(
        demo_server.url + "/widget/v1/acme/acme-support/consents",
        headers={"X-Concierge-Visitor": saved},
    ).json()
    assert mine["purposes"]["personalization"]["granted"] is False
    assert [(d["granted"], d["channel"], d["text_version"]) for d in mine["history"]] == [
        (False, "web", "1"),
        (True, "web", "1"),
    ]
    assert _withdrawals(demo_server) == withdrawn_before + 1
    assert errors == []


def _withdrawals(server: LiveServer) -> int:
    """How many consent withdrawals the audit log holds (the server is shared by the module's
    tests: each counts its own)."""
    audit = httpx.get(
        server.url + "/api/audit",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        params={"action": "consent.withdrawn", "limit": 1000},
    )
    assert audit.status_code == 200, audit.text
    return len(audit.json()["data"])


async def test_the_widget_is_readable_on_a_phone(demo_server: LiveServer, browser: Browser) -> None:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page = await context.new_page()
    await page.goto(demo_server.url + "/")
    await page.locator(_in(".launcher")).click()
    panel = page.locator(_in(".panel"))
    await expect(panel).to_be_visible()
    box = await panel.bounding_box()
    assert box is not None and box["width"] == 390 and box["x"] == 0  # the whole screen
    await expect(page.locator(_in(".msg.assistant")).first).to_be_visible()
    font = await page.locator(_in("textarea")).evaluate("e => getComputedStyle(e).fontSize")
    assert float(font.removesuffix("px")) >= 15  # no zoom-on-focus, readable
    await _shot(page, "widget-phone.png")
    await context.close()


async def _acme_key(server: LiveServer, scopes: tuple[str, ...] = ("inbox",)) -> str:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as admin:
        made = await admin.post(
            "/api/keys",
            json={
                "org": "acme",
                "name": f"operator-{uuid.uuid4().hex[:8]}",
                "scopes": list(scopes),
            },
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


async def test_a_handoff_round_trip_through_the_widget(
    demo_server: LiveServer, browser: Browser
) -> None:
    """Handed over, answered by a person, handed back; then a person steps in again without a
    handoff (the widget looks for new turns now and then), and the page's security policy
    blocked nothing the widget needs all along."""
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    await page.goto(demo_server.url + "/")
    await page.locator(_in(".launcher")).click()
    await expect(page.locator(_in(".msg.assistant")).first).to_be_visible()
    await _ask(page, "I'd like to talk to a person, please.")
    await expect(page.locator(_in(".notice"))).to_contain_text("in the queue")

    key = await _acme_key(demo_server)
    async with httpx.AsyncClient(
        base_url=demo_server.url, headers={"Authorization": f"Bearer {key}"}
    ) as operator:
        queue: list[Any] = (await operator.get("/v1/conversations?status=handoff")).json()["data"]
        assert len(queue) == 1 and queue[0]["channel"] == "web"
        cid = queue[0]["id"]
        sent = await operator.post(
            f"/v1/conversations/{cid}/human_messages",
            json={"content": "Hi, I'm Sam from Acme. How can I help?", "author": "Sam"},
        )
        assert sent.status_code == 201
        human = page.locator(_in(".msg.human"))
        await expect(human).to_contain_text("I'm Sam from Acme", timeout=15_000)
        await expect(human.locator(".who")).to_have_text("Sam")
        await _shot(page, "widget-handoff.png")

        # The visitor answers the person; the model stays out while people have it.
        await _ask(page, "My order 1042 arrived damaged.")
        await expect(page.locator(_in(".msg.user")).last).to_contain_text("damaged")
        for _ in range(50):
            turns = (await operator.get(f"/v1/conversations/{cid}/turns")).json()["data"]
            if turns[-1]["content"] == "My order 1042 arrived damaged.":
                break
            await asyncio.sleep(0.1)
        assert [t["role"] for t in turns][-2:] == ["human", "user"]

        back = await operator.post(f"/v1/conversations/{cid}/handback")
        assert back.json()["status"] == "assistant"
        await expect(page.locator(_in(".notice")).last).to_contain_text(
            "assistant is back", timeout=15_000
        )

        # The assistant has it again; a person replies without taking it over first.
        sent = await operator.post(
            f"/v1/conversations/{cid}/human_messages",
            json={"content": "Alex here: a replacement is on its way.", "author": "Alex"},
        )
        assert sent.status_code == 201
        await expect(page.locator(_in(".msg.human")).last).to_contain_text(
            "replacement is on its way", timeout=20_000
        )
    assert blocked == []


async def test_the_widget_api_refuses_what_it_should(demo_server: LiveServer) -> None:
    base = demo_server.url + "/widget/v1"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/acme/nobody")).status_code == 404
        assert (await client.get("/nobody/acme-support")).status_code == 404
        made = await client.post("/acme/acme-support/visitors")
        token = made.json()["token"]
        # Without a token, or with a forged one: 401.
        assert (await client.post("/acme/acme-support/conversations")).status_code == 401
        forged = {"X-Concierge-Visitor": token[:-4] + "AAAA"}
        assert (
            await client.post("/acme/acme-support/conversations", headers=forged)
        ).status_code == 401
        mine = {"X-Concierge-Visitor": token}
        started = await client.post("/acme/acme-support/conversations", headers=mine)
        cid = started.json()["id"]
        # Another visitor cannot read or write this conversation.
        other = {
            "X-Concierge-Visitor": (await client.post("/acme/acme-support/visitors")).json()[
                "token"
            ]
        }
        assert (
            await client.get(f"/acme/acme-support/conversations/{cid}", headers=other)
        ).status_code == 404
        posted = await client.post(
            f"/acme/acme-support/conversations/{cid}/messages",
            headers=other,
            json={"content": "hi"},
        )
        assert posted.status_code == 404
        bad = await client.post(
            f"/acme/acme-support/conversations/{cid}/messages", headers=mine, json={"content": ""}
        )
        assert bad.status_code == 400 and bad.json()["error"]["message"]
        # Consent: only the visitor's own, only known purposes, nothing recorded when refused.
        assert (await client.get("/acme/acme-support/consents")).status_code == 401
        for wrong in ({"purpose": "everything", "granted": True}, {"purpose": "marketing"}):
            refused = await client.post("/acme/acme-support/consents", headers=mine, json=wrong)
            assert refused.status_code == 400 and refused.json()["error"]["message"]
        fresh = (await client.get("/acme/acme-support/consents", headers=mine)).json()
        assert fresh["purposes"] == {"terms": None, "personalization": None, "marketing": None}
        assert fresh["history"] == []
        # Cross-origin use is allowed (any site may embed it unless widget_origins says not).
        preflight = await client.options(
            "/acme/acme-support/visitors",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-concierge-visitor,content-type",
            },
        )
        assert preflight.status_code == 200
    # An operator restricts the sites: others are refused.
    key = await _acme_key(demo_server, ("admin",))
    async with httpx.AsyncClient(
        base_url=demo_server.url, headers={"Authorization": f"Bearer {key}"}
    ) as operator:
        changed = await operator.patch(
            "/v1/assistants/acme-support", json={"widget_origins": ["https://acme.example"]}
        )
        assert changed.status_code == 200, changed.text
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            evil = {"Origin": "https://evil.example"}
            assert (await client.get("/acme/acme-support", headers=evil)).status_code == 403
            acme = {"Origin": "https://acme.example"}
            assert (await client.get("/acme/acme-support", headers=acme)).status_code == 200
    finally:  # the next tests on this server embed the widget from its own page again
        async with httpx.AsyncClient(
            base_url=demo_server.url, headers={"Authorization": f"Bearer {key}"}
        ) as operator:
            await operator.patch("/v1/assistants/acme-support", json={"widget_origins": []})
