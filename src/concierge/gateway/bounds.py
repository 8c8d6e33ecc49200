"""How much work one request may ask for, checked before any of it is done.

The body size limit (``max_body_bytes``) is not enough: 2.4 MB of one-character messages cost
minutes of tokenising, a 50,000-value ``enum`` holds the model's worker for minutes of
constrained sampling. Each request's shape is measured here, in time linear in its size, and
refused with a 400 that names the setting before it reaches a model:

- ``max_messages`` messages in a chat request;
- ``max_input_characters`` characters of text: messages (and their tool calls), the prompt,
  tool definitions; every input of an embeddings request together;
- each JSON Schema (``response_format``, every tool's ``parameters``) at most
  ``max_schema_bytes`` as JSON and ``max_schema_depth`` deep, and all of a request's schemas
  together at most ``max_schema_choices`` alternatives (enum values, consts, anyOf/oneOf
  branches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from concierge.config import Settings
from concierge.errors import InvalidRequest
from concierge.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ImagePart,
    TextPart,
)


@dataclass(frozen=True)
class Bounds:
    max_messages: int
    max_input_characters: int
    max_schema_bytes: int
    max_schema_depth: int
    max_schema_choices: int
    max_embedding_inputs: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            settings.max_messages,
            settings.max_input_characters,
            settings.max_schema_bytes,
            settings.max_schema_depth,
            settings.max_schema_choices,
            settings.embedding_max_inputs,
        )

    # -- requests --------------------------------------------------------------------------

    def chat(self, body: ChatCompletionRequest) -> None:
        if len(body.messages) > self.max_messages:
            raise InvalidRequest(
                f"Too many messages: {len(body.messages)}; the limit is {self.max_messages} "
                "per request (max_messages).",
                param="messages",
            )
        characters = 0
        for message in body.messages:
            characters += _content_length(message.content)
            for call in getattr(message, "tool_calls", None) or ():
                characters += len(call.function.arguments) + len(call.function.name)
        choices = 0
        for index, tool in enumerate(body.tools or ()):
            function = tool.function
            characters += len(function.description) + len(function.name)
            where = f"tools.{index}.function.parameters"
            choices, size = self.schema(function.parameters, where, choices)
            characters += size  # a tool's schema goes into the prompt
        fmt = body.response_format
        if fmt is not None and fmt.json_schema is not None and fmt.json_schema.schema_ is not None:
            _, size = self.schema(
                fmt.json_schema.schema_, "response_format.json_schema.schema", choices
            )
            characters += size
        self.characters(characters, "messages")

    def completion(self, body: CompletionRequest) -> None:
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        self.characters(len(prompt), "prompt")

    def embeddings(self, texts: Sequence[str]) -> None:
        if len(texts) > self.max_embedding_inputs:
            raise InvalidRequest(
                f"Too many inputs: {len(texts)}; the limit is {self.max_embedding_inputs} "
                "per request.",
                param="input",
            )
        self.characters(sum(len(t) for t in texts), "input")

    def characters(self, count: int, param: str) -> None:
        if count > self.max_input_characters:
            raise InvalidRequest(
                f"The request holds {count:,} characters of text; the limit is "
                f"{self.max_input_characters:,} (max_input_characters).",
                param=param,
            )

    # -- JSON Schemas ----------------------------------------------------------------------

    def schema(self, schema: Any, param: str, choices: int = 0) -> tuple[int, int]:
        """Check one schema; returns the alternatives counted so far (``choices`` plus its)
        and its size as JSON."""
        size = len(orjson.dumps(schema))
        if size > self.max_schema_bytes:
            raise InvalidRequest(
                f"The JSON Schema is {size:,} bytes; the limit is {self.max_schema_bytes:,} "
                "(max_schema_bytes).",
                param=param,
            )
        stack: list[tuple[Any, int]] = [(schema, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > self.max_schema_depth:
                raise InvalidRequest(
                    f"The JSON Schema nests deeper than {self.max_schema_depth} levels "
                    "(max_schema_depth).",
                    param=param,
                )
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "enum" and isinstance(value, list):
                        choices += len(value)
                    elif key == "const":
                        choices += 1
                    elif key in ("anyOf", "oneOf") and isinstance(value, list):
                        choices += len(value)
                    if key not in ("enum", "const"):
                        stack.append((value, depth + 1))
            elif isinstance(node, list):
                stack.extend((item, depth + 1) for item in node)
        if choices > self.max_schema_choices:
            raise InvalidRequest(
                f"The request's JSON Schemas hold {choices:,} alternatives (enum values, consts, "
                f"anyOf/oneOf branches); the limit is {self.max_schema_choices:,} "
                "(max_schema_choices).",
                param=param,
            )
        return choices, size


def _content_length(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content:
        if isinstance(part, TextPart):
            total += len(part.text)
        elif isinstance(part, ImagePart):
            total += len(part.image_url.url)
    return total
