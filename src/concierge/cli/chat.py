"""``concierge chat``: an interactive, streaming conversation in the terminal."""

from __future__ import annotations

import asyncio
import sys

import click

from concierge.cli import Context, pass_context
from concierge.config import UpstreamConfig
from concierge.models.base import GenerationRequest, Message, Model, TextDelta, ToolCallDelta
from concierge.models.registry import ModelRegistry, generate
from concierge.plugins import plugin_manager

HELP = "Type a message; /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer."


async def _turn(route: list[Model], request: GenerationRequest, remote: bool) -> str:
    parts: list[str] = []
    try:
        async for _model, event in generate(route, request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ToolCallDelta) and event.name:
                sys.stdout.write(f"[tool call: {event.name}({event.arguments})]")
    finally:
        if remote:  # its connection pool belongs to this turn's event loop
            for model in route:
                await model.aclose()
    sys.stdout.write("\n")
    return "".join(parts)


def _remote_route(url: str, api_key: str | None, model: str) -> list[Model]:
    from concierge.models.upstream import OpenAIUpstream, UpstreamClient

    upstream = UpstreamConfig(
        name="server", base_url=url, models=[model], api_key=api_key, timeout=600
    )
    return [OpenAIUpstream(model, upstream, UpstreamClient(upstream))]


@click.command("chat")
@click.option("-m", "--model", help="Model id or alias (default: the embedded LLM).")
@click.option("-s", "--system", help="A system prompt.")
@click.option(
    "--url",
    help="Talk to a running server, e.g. http://127.0.0.1:8000/v1, "
    "instead of loading the model in this process.",
)
@click.option(
    "--api-key", envvar="CONCIERGE_API_KEY", help="Key for --url (env CONCIERGE_API_KEY)."
)
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2))
@pass_context
def command(
    ctx: Context,
    model: str | None,
    system: str | None,
    url: str | None,
    api_key: str | None,
    max_tokens: int,
    temperature: float | None,
) -> None:
    """Chat with a model, streaming its answers."""
    settings = ctx.settings()
    model = model or settings.llm_model_name
    registry = None if url else ModelRegistry.from_plugins(plugin_manager(), settings)
    history: list[Message] = [Message("system", system)] if system else []
    click.secho(f"Chatting with {model}. {HELP}", dim=True, err=True)
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo("", err=True)
            break
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = history[:1] if system else []
            click.secho("(conversation cleared)", dim=True, err=True)
            continue
        history.append(Message("user", line))
        route = _remote_route(url, api_key, model) if url else registry.route(model)  # type: ignore[union-attr]
        request = GenerationRequest(
            model=model,
            messages=list(history),
            max_tokens=max_tokens,
            temperature=temperature,
            priority_key="cli",
        )
        try:
            answer = asyncio.run(_turn(route, request, remote=url is not None))
        except KeyboardInterrupt:
            click.secho("\n(stopped)", dim=True, err=True)
            history.pop()
            continue
        history.append(Message("assistant", answer))
