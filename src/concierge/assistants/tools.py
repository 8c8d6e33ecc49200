"""Calling an operator's HTTP tool on the model's behalf.

The model proposes a call (a tool name and JSON arguments); this module checks the arguments
against the tool's JSON Schema, makes the request within its timeout and the turn's remaining
tool time, to the tool's allowed hosts only (a redirect elsewhere is refused), through the
server's egress policy (no private or metadata addresses, :mod:`concierge.egress`), reads at
most :data:`MAX_RESPONSE_BYTES`, and returns a :class:`ToolResult` either way. A failure is a
result too: the model is told what went wrong and answers anyway, and the turn records it.

The tool's secret headers go only to the origin (scheme, host, port) of its ``url``: not to
another allowed host a redirect leads to, never over a downgraded scheme. Header values never
appear in a result, an error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from jsonschema.exceptions import _Error as JsonSchemaError
from referencing.exceptions import Unresolvable

from concierge.assistants.definitions import HttpTool
from concierge.conversations.records import ToolRecord
from concierge.egress import normalise_host, origin, refused
from concierge.regex import PatternError, validator

MAX_RESPONSE_BYTES = 64 * 1024
MAX_REDIRECTS = 3
USER_AGENT = "Concierge-tools/1"


@dataclass(frozen=True)
class ToolResult:
    name: str
    arguments: Any  # the parsed arguments, or the raw text when they were not JSON
    content: str  # what the model reads back
    error: str | None = None
    ms: float = 0.0
    refused: bool = False  # by the prompt-injection guard, not run

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> ToolRecord:
        """As stored on the turn."""
        return ToolRecord(
            self.name,
            self.arguments,
            self.ms,
            result=self.content if self.error is None else None,
            error=self.error,
            refused_by="injection_guard" if self.refused else None,
        )


def parse_arguments(tool_name: str, schema: dict[str, Any], raw: str) -> dict[str, Any] | str:
    """The arguments as an object, or the reason they are not acceptable (a str)."""
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        return f"the arguments are not valid JSON ({exc.msg})"
    if not isinstance(arguments, dict):
        return "the arguments must be a JSON object"
    try:
        error = next(iter(validator(schema).iter_errors(arguments)), None)
    except PatternError as exc:  # a schema stored before its patterns were checked for RE2
        return f"{tool_name}'s schema cannot be checked: {exc}"
    except (Unresolvable, JsonSchemaError):  # a reference to nowhere (never fetched)
        return f"{tool_name}'s schema has a reference that cannot be resolved"
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return f"the arguments do not match {tool_name}'s schema at {where}: {error.message}"
    return arguments


def _failure(tool: HttpTool, arguments: Any, error: str, started: float) -> ToolResult:
    return ToolResult(
        tool.name,
        arguments,
        f"The tool {tool.name} failed: {error}",
        error,
        round((time.perf_counter() - started) * 1000, 1),
    )


def _query(arguments: dict[str, Any]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in arguments.items()
        if value is not None
    }


async def call_http_tool(
    tool: HttpTool,
    raw_arguments: str,
    session: aiohttp.ClientSession,
    *,
    seconds_left: float | None = None,
) -> ToolResult:
    started = time.perf_counter()
    arguments = parse_arguments(tool.name, tool.parameters, raw_arguments)
    if isinstance(arguments, str):
        return _failure(tool, raw_arguments, arguments, started)
    timeout = (
        tool.timeout_seconds if seconds_left is None else min(tool.timeout_seconds, seconds_left)
    )
    if timeout <= 0:
        return _failure(tool, arguments, "no tool time left in this turn", started)
    plain = {"User-Agent": USER_AGENT, "Accept": "application/json, text/plain;q=0.9"}
    secret_origin = origin(tool.url)
    send_query = tool.method in ("GET", "DELETE")
    url = tool.url
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                host = normalise_host(url)
                if host not in tool.allowed_hosts or urlsplit(url).scheme not in ("http", "https"):
                    shown = host or urlsplit(url).hostname or url
                    return _failure(tool, arguments, f"{shown} is not an allowed host", started)
                secrets = tool.headers if origin(url) == secret_origin else {}
                async with session.request(
                    tool.method,
                    url,
                    params=_query(arguments) if send_query else None,
                    json=None if send_query else arguments,
                    headers={**plain, **secrets},
                    allow_redirects=False,
                ) as response:
                    if (
                        response.status in (301, 302, 303, 307, 308)
                        and "Location" in response.headers
                    ):
                        url = urljoin(url, response.headers["Location"])
                        continue
                    body = bytearray()
                    async for piece in response.content.iter_chunked(65536):
                        body += piece
                        if len(body) > MAX_RESPONSE_BYTES:
                            return _failure(
                                tool,
                                arguments,
                                f"the answer is over {MAX_RESPONSE_BYTES} bytes",
                                started,
                            )
                    text = body.decode("utf-8", errors="replace")
                    if response.status >= 400:
                        detail = " ".join(text.split())[:200]
                        return _failure(
                            tool,
                            arguments,
                            f"HTTP {response.status}: {detail}".rstrip(": "),
                            started,
                        )
                    if "json" in (response.content_type or ""):
                        try:
                            text = json.dumps(json.loads(text), ensure_ascii=False)
                        except json.JSONDecodeError:
                            return _failure(
                                tool, arguments, "the answer is not valid JSON", started
                            )
                    elapsed = round((time.perf_counter() - started) * 1000, 1)
                    return ToolResult(tool.name, arguments, text, None, elapsed)
            return _failure(tool, arguments, "too many redirects", started)
    except TimeoutError:
        return _failure(tool, arguments, f"no answer within {timeout:g} s", started)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        policy = refused(exc)
        if policy is not None:
            return _failure(tool, arguments, policy.message, started)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return _failure(tool, arguments, f"could not connect to {normalise_host(url)}", started)
        return _failure(tool, arguments, f"the request failed ({type(exc).__name__})", started)
