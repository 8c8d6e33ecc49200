"""Every extension point, used the way a third-party plugin would: a tool, a document format,
routes, commands and the start-up/shutdown pair, registered through the hooks the built-ins
use (and the built-ins found there)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner
from fastapi import APIRouter, Depends

from concierge import plugins as plugins_module
from concierge.app import Concierge
from concierge.assistants.toolbox import Tool, ToolFailure, ToolTurn
from concierge.cli import CommandGroup
from concierge.config import Settings
from concierge.gateway.auth import ApiKeyAuth
from concierge.gateway.routes import Routes
from concierge.governance.pii import Span
from concierge.hookspecs import hookimpl
from concierge.keys import ApiKey
from concierge.knowledge.parsers import (
    Block,
    DocumentParser,
    ParsedDocument,
    ParseLimits,
    decode_text,
)
from concierge.models.base import ToolSpec
from concierge.plugins import DEFAULT_PLUGINS, plugin_manager
from tests.conftest import http_client, make_settings
from tests.scripted import Pipeline, calls, says, tool_messages
from tests.test_gateway import assert_openai_error
from tests.test_knowledge_api import wait_job

ORDERS = {"123456": "shipped yesterday", "654321": "being packed"}


class OrderStatus(Tool):
    spec = ToolSpec(
        "order_status",
        "Look up the status of one of the user's orders.",
        {
            "type": "object",
            "properties": {"order": {"type": "string", "pattern": "^[0-9]{6}$"}},
            "required": ["order"],
            "additionalProperties": False,
        },
    )

    async def run(self, arguments: dict[str, Any], turn: ToolTurn) -> str:
        status = ORDERS.get(arguments["order"])
        if status is None:
            raise ToolFailure("no such order")
        return f"Order {arguments['order']}: {status}"


class ShopPlugin:
    @hookimpl
    def register_tools(self, register: Callable[[Tool], None], settings: Settings) -> None:
        register(OrderStatus())


@pytest.mark.plugins(ShopPlugin())
async def test_a_plugin_tool_is_offered_checked_run_and_recorded(pipeline: Pipeline) -> None:
    await pipeline.assistant(builtin_tools=["order_status", "handoff_to_human"])
    answers = iter(
        [
            calls("order_status", {"order": "123456"}),
            says("It shipped yesterday."),
            calls("order_status", {"order": "12"}),  # against its schema
            says("Which order?"),
            calls("order_status", {"order": "999999"}),  # the tool refuses
            says("I cannot find it."),
        ]
    )
    pipeline.script = lambda body: next(answers)
    cid = await pipeline.conversation()

    sent = await pipeline.send(cid, "Where is order 123456?")
    assert sent.status_code == 200, sent.text
    offered = [t["function"]["name"] for t in pipeline.bodies[0]["tools"]]
    assert offered == ["order_status", "handoff_to_human"]
    assert "shipped" in tool_messages(pipeline.bodies[1])[0]["content"]  # datamarked
    record = sent.json()["reply"]["tool_calls"][0]
    assert (
        record["name"] == "order_status" and record["result"] == "Order 123456: shipped yesterday"
    )

    refused = (await pipeline.send(cid, "And order 12?")).json()["reply"]["tool_calls"][0]
    assert "do not match order_status's schema" in refused["error"]
    missing = (await pipeline.send(cid, "And 999999?")).json()["reply"]["tool_calls"][0]
    assert missing["error"] == "no such order"


@pytest.mark.plugins(ShopPlugin())
async def test_names_are_checked_against_the_registered_tools(pipeline: Pipeline) -> None:
    made = await pipeline.client.post(
        "/v1/assistants", json={"name": "a", "builtin_tools": ["order_statuz"]}
    )
    assert_openai_error(made, 400)
    assert "order_status" in made.json()["error"]["message"]  # the known ones are listed
    http_tool = {
        "name": "order_status",
        "description": "x",
        "url": "http://127.0.0.1:9/x",
    }
    clash = await pipeline.client.post("/v1/assistants", json={"name": "b", "tools": [http_tool]})
    assert_openai_error(clash, 400)
    assert clash.json()["error"]["param"] == "tools"


# -- a document format ----------------------------------------------------------------------


class IniParser(DocumentParser):
    """INI files: a section is a heading, each key a paragraph under it."""

    format, label = "ini", "INI"
    extensions = (".ini",)
    content_types = ("text/x-ini",)

    def parse(self, data: bytes, filename: str | None, limits: ParseLimits) -> ParsedDocument:
        blocks: list[Block] = []
        section: tuple[str, ...] = ()
        for line in decode_text(data, filename).splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = (line[1:-1],)
                blocks.append(Block("heading", line[1:-1], level=1))
            elif "=" in line:
                key, _, value = line.partition("=")
                blocks.append(Block("paragraph", f"{key.strip()}: {value.strip()}", None, section))
        return ParsedDocument(filename, self.format, blocks)


class IniPlugin:
    @hookimpl
    def register_document_parsers(
        self, register: Callable[[DocumentParser], None], settings: Settings
    ) -> None:
        register(IniParser())


@pytest.mark.plugins(IniPlugin())
async def test_a_plugin_parser_reads_a_new_format_in_the_sandbox(pipeline: Pipeline) -> None:
    client = pipeline.client
    kb = (await client.post("/v1/knowledge_bases", json={"name": "config"})).json()
    ini = b"[shipping]\nregions = EU, UK\ndays = 3 to 5\n"
    job = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[("file", ("shop.ini", ini, "application/octet-stream"))],
    )
    assert job.status_code == 202, job.text
    assert (await wait_job(client, kb["id"], job.json()))["done"] == 1
    docs = (await client.get(f"/v1/knowledge_bases/{kb['id']}/documents")).json()["data"]
    assert docs[0]["format"] == "ini"
    hits = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/search", json={"query": "regions", "mode": "bm25"}
    )
    assert "regions: EU, UK" in hits.json()["data"][0]["text"]

    # Formats nobody registered are still refused, naming the ones this server reads.
    other = await client.post(
        f"/v1/knowledge_bases/{kb['id']}/documents",
        files=[("file", ("shop.toml", b"a = 1", "application/toml"))],
    )
    error = (await wait_job(client, kb["id"], other.json()))["errors"][0]["error"]
    assert "'.toml' is not a supported document type (INI, PDF" in error


# -- routes, start-up and shutdown ------------------------------------------------------------


class StatusPlugin:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def register_routes(self, routes: Routes, concierge: Concierge) -> None:
        router = APIRouter(prefix="/plugin")

        @router.get("/hello")
        async def hello(key: ApiKey = Depends(ApiKeyAuth("inference"))) -> dict[str, Any]:
            return {"hello": key.org_id, "database": concierge.settings.database_url[:6]}

        routes.include(router)

    @hookimpl
    def startup(self, concierge: Concierge) -> Any:
        async def started() -> None:
            self.events.append("startup")

        return started()

    @hookimpl
    def shutdown(self, concierge: Concierge) -> None:
        self.events.append("shutdown")


async def test_plugin_routes_are_served_with_auth_and_documented(
    tmp_path: Any, db_url: str, models_dir: Any
) -> None:
    plugin = StatusPlugin()
    settings = make_settings(
        tmp_path, db_url, models_dir, llm_enabled=False, embedding_enabled=False
    )
    app = Concierge(settings, plugins=[plugin], entry_points=False, preload_models=False)
    await app.startup()
    assert plugin.events == ["startup"]
    try:
        async with http_client(app) as client:
            hello = await client.get("/plugin/hello")
            assert hello.status_code == 200 and hello.json()["hello"] >= 1
            assert_openai_error(
                await client.get("/plugin/hello", headers={"Authorization": "Bearer no"}), 401
            )
            assert "/plugin/hello" in (await client.get("/openapi.json")).json()["paths"]
            assert (await client.get("/healthz")).status_code == 200  # the built-ins still are
    finally:
        await app.shutdown()
    assert plugin.events == ["startup", "shutdown"]


# -- commands ---------------------------------------------------------------------------------


class GreetPlugin:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("greet")
        @click.argument("name")
        def greet(name: str) -> None:
            """Say hello."""
            click.echo(f"Hello, {name}!")


def test_a_plugin_command_joins_the_built_in_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        plugins_module,
        "plugin_manager",
        lambda: plugin_manager([GreetPlugin()], entry_points=False),
    )
    cli = CommandGroup("concierge")
    listed = CliRunner().invoke(cli, ["--help"])
    assert "greet" in listed.output and "kb" in listed.output and "serve" in listed.output
    ran = CliRunner().invoke(cli, ["greet", "Ada"])
    assert ran.exit_code == 0 and ran.output == "Hello, Ada!\n"


def test_the_built_ins_are_plugins_on_the_same_hooks() -> None:
    pm = plugin_manager(entry_points=False)
    for name in DEFAULT_PLUGINS:
        assert pm.get_plugin(name) is not None, name
    hooks = {
        hook.name: [pm.get_name(impl.plugin) for impl in hook.get_hookimpls()]
        for hook in (getattr(pm.hook, n) for n in dir(pm.hook) if not n.startswith("_"))
    }
    assert hooks["register_tools"] == ["concierge.default_plugins.tools"]
    assert hooks["register_document_parsers"] == ["concierge.default_plugins.parsers"]
    assert hooks["register_routes"] == ["concierge.default_plugins.routes"]
    assert hooks["register_commands"] == ["concierge.default_plugins.commands"]
    assert hooks["register_models"] == ["concierge.default_plugins.models"]


# -- two servers in one process keep their own log masking -----------------------------------


class MemberNumbers:
    """A local identifier format only one of the servers knows."""

    name = "member_number"
    entities = ("MEMBER_NUMBER",)

    def find(self, text: str) -> list[Span]:
        return [
            Span(m.start(), m.end(), "MEMBER_NUMBER", m.group())
            for m in re.finditer(r"\bM-\d{6}\b", text)
        ]


class Echo:
    """Logs what it is sent (as careless code does) and registers a recogniser if asked."""

    def __init__(self, recognizer: bool) -> None:
        self.recognizer = recognizer

    @hookimpl
    def register_pii_recognizers(self, register: Callable[[Any], None], settings: Settings) -> None:
        if self.recognizer:
            register(MemberNumbers())

    @hookimpl
    def register_routes(self, routes: Routes, concierge: Concierge) -> None:
        router = APIRouter()

        @router.get("/echo")
        async def echo(text: str) -> dict[str, str]:
            logging.getLogger("concierge.test.echo").warning("asked: %s", text)
            return {"ok": "yes"}

        routes.include(router)


async def test_each_server_masks_its_own_log_lines(
    tmp_path: Any, db_url: str, models_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="concierge.test.echo")
    apps = []
    for name, knows in (("a", True), ("b", False)):
        settings = make_settings(
            tmp_path / name, db_url, models_dir, llm_enabled=False, embedding_enabled=False
        )
        apps.append(
            Concierge(settings, plugins=[Echo(knows)], entry_points=False, preload_models=False)
        )
    for app in apps:
        await app.startup()
    try:
        said = "member M-123456 wrote from ada@example.com"
        for app in apps:
            async with http_client(app) as client:
                assert (await client.get("/echo", params={"text": said})).status_code == 200
    finally:
        for app in apps:
            await app.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "concierge.test.echo"]
    assert len(lines) == 2
    assert "M-123456" not in lines[0] and "ada@example.com" not in lines[0]  # its own recogniser
    assert "M-123456" in lines[1] and "ada@example.com" not in lines[1]  # the built-in ones only
