"""Turning chat messages into a prompt for a local model, and tool calls back out of its text.

Chat template, in order of precedence:

1. the ``llm_chat_template`` setting (a Jinja template, Hugging Face style);
2. ``tokenizer.chat_template`` from the GGUF metadata (instruction-tuned models carry one);
3. the **transcript fallback**, for base models such as the packaged Gemma 3 270M, which carry
   none. It renders the conversation as a plain transcript that a base model continues::

       <system text>

       User: <message>
       Assistant: <message>
       User: <message>
       Assistant:

   and stops at the next ``\\nUser:``. Tool results appear as ``Tool (<name>): <result>`` lines.

Tools on a local model are prompt-based: the tool list and the calling convention go into the
system text, and the model calls a tool by answering with one JSON object
``{"tool_call": {"name": ..., "arguments": {...}}}``. When the request forces a call
(``tool_choice`` "required" or a named tool) generation is constrained by a JSON-schema grammar
so the call is always well-formed; with "auto" the text is parsed and, if it is not a valid call,
delivered as an ordinary answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from concierge.models.base import Message, ToolCall, ToolSpec

TRANSCRIPT_STOP = ["\nUser:", "\nSystem:"]


@dataclass(frozen=True)
class FormattedPrompt:
    text: str
    stop: list[str]
    add_bos: bool


def _tool_instructions(tools: Sequence[ToolSpec]) -> str:
    lines = [
        "You can call tools. To call one, answer with only this JSON and nothing else:",
        '{"tool_call": {"name": "<tool name>", "arguments": {<arguments>}}}',
        "Otherwise answer normally. Available tools:",
    ]
    for tool in tools:
        params = json.dumps(tool.parameters, separators=(",", ":"))
        lines.append(f"- {tool.name}: {tool.description} Arguments (JSON Schema): {params}")
    return "\n".join(lines)


def _flatten(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """Messages as plain role/content pairs; tool traffic spelled out as text."""
    out: list[dict[str, str]] = []
    system_parts = [m.content or "" for m in messages if m.role == "system"]
    if tools:
        system_parts.append(_tool_instructions(tools))
    if system_parts:
        out.append({"role": "system", "content": "\n\n".join(p for p in system_parts if p)})
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            out.append(
                {"role": "tool", "content": message.content or "", "name": message.name or ""}
            )
        elif message.role == "assistant" and message.tool_calls:
            calls = [
                json.dumps({"tool_call": {"name": c.name, "arguments": _loads(c.arguments)}})
                for c in message.tool_calls
            ]
            out.append({"role": "assistant", "content": "\n".join(calls)})
        else:
            out.append({"role": message.role, "content": message.content or ""})
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class ChatFormatter:
    """Formats messages with a Jinja chat template, or the transcript fallback without one."""

    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        self.template = template
        self._jinja = (
            Jinja2ChatFormatter(template, eos_token=eos_token, bos_token=bos_token)
            if template
            else None
        )

    @property
    def uses_fallback(self) -> bool:
        return self._jinja is None

    def format(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> FormattedPrompt:
        flat = _flatten(messages, tools)
        if self._jinja is not None:
            # Templates know system/user/assistant; tool results go in as user turns.
            jinja_messages = [
                {"role": "user", "content": f"Tool ({m['name']}) result: {m['content']}"}
                if m["role"] == "tool"
                else {"role": m["role"], "content": m["content"]}
                for m in flat
            ]
            result = self._jinja(messages=jinja_messages)  # type: ignore[arg-type]
            stop = [result.stop] if isinstance(result.stop, str) else list(result.stop or [])
            # The template writes BOS itself when it wants one.
            return FormattedPrompt(result.prompt, stop, add_bos=False)
        return FormattedPrompt(_transcript(flat), list(TRANSCRIPT_STOP), add_bos=True)


def _transcript(flat: list[dict[str, str]]) -> str:
    parts: list[str] = []
    body = flat
    if flat and flat[0]["role"] == "system":
        parts.append(flat[0]["content"].strip() + "\n")
        body = flat[1:]
    for m in body:
        content = m["content"].strip()
        if m["role"] == "user":
            parts.append(f"User: {content}")
        elif m["role"] == "assistant":
            parts.append(f"Assistant: {content}")
        else:
            parts.append(f"Tool ({m['name']}): {content}")
    parts.append("Assistant:")
    return "\n".join(parts)


def forced_call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """JSON Schema that admits exactly one call of one of ``tools``."""
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    call = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"]}


def parse_tool_call(text: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """The tool call in a model's answer, or None if the answer is not one."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    call = data.get("tool_call") if isinstance(data, dict) else None
    if not isinstance(call, dict):
        return None
    name = call.get("name")
    if name not in {t.name for t in tools}:
        return None
    arguments = call.get("arguments", {})
    return ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        name=str(name),
        arguments=json.dumps(arguments if arguments is not None else {}),
    )
