"""The OpenAI door to an assistant: ``model="assistant:<name>"`` on ``/v1/chat/completions``.

Any OpenAI client talks to an assistant's whole pipeline (knowledge, tools, memory,
governance) by naming it as the model; the reply comes back as a chat completion (streamed as
chunks), with its citations on the message and the conversation in ``metadata``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from starlette.responses import Response

from concierge import names
from concierge.assistants.events import Completed, Delta, Inbound, Replaced, ReplyEvent, ToolUsed
from concierge.assistants.prompt import HistoryTurn
from concierge.errors import ConciergeError, InvalidRequest
from concierge.gateway.conversations import API_CHANNEL
from concierge.gateway.replies import respond
from concierge.gateway.responses import SSE_DONE, ChunkEncoder, sse_event
from concierge.gateway.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    UserMessage,
    message_text,
)
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.models.base import TokenCount, Usage

ASSISTANT_PREFIX = "assistant:"
_REFUSED = ("tools", "tool_choice", "response_format", "n")


class OpenAIFormat:
    """Chat-completion objects, with the reply's ``citations`` on the message and the
    conversation's id in ``metadata``."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.ident = "chatcmpl-" + uuid.uuid4().hex
        self.chunks = ChunkEncoder(self.ident, model, chat=True, include_usage=include_usage)
        self.opened = False

    @staticmethod
    def _metadata(completed: Completed) -> dict[str, str]:
        meta = {
            "conversation_id": str(completed.conversation.id),
            "user_turn_id": str(completed.user_turn.id),
        }
        if completed.reply is not None:
            meta["turn_id"] = str(completed.reply.id)
        meta["conversation_status"] = str(completed.conversation.status)
        return meta

    @staticmethod
    def _usage(completed: Completed) -> Usage:
        reply = completed.reply
        return Usage(reply.prompt_tokens, reply.completion_tokens) if reply else Usage()

    def whole(self, completed: Completed) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "chat.completion",
            "created": self.chunks.base["created"],
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": completed.delivered if completed.reply else "",
                        "refusal": None,
                        "citations": completed.citations,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(completed).to_dict(),
            "metadata": self._metadata(completed),
            "aigc": completed.label,
        }

    def event(self, event: ReplyEvent) -> bytes:
        head = b""
        if not self.opened:
            self.opened = True
            head = self.chunks.chunk({"role": "assistant", "content": ""})
        if isinstance(event, Delta):
            return head + self.chunks.chunk({"content": event.text})
        if isinstance(event, Replaced):
            # A client cannot take back what it was sent: the replacement follows it.
            return head + self.chunks.chunk({"content": "\n\n" + event.answer})
        if isinstance(event, ToolUsed):
            return head  # the assistant's own tools are not the client's business
        # The last chunk's own metadata field carries the conversation, as on the whole reply.
        tail = [
            self.chunks.chunk(
                {"citations": event.citations},
                finish="stop",
                extra={"metadata": self._metadata(event), "aigc": event.label},
            )
        ]
        if self.include_usage:
            tail.append(self.chunks.usage(self._usage(event)))
        tail.append(SSE_DONE)
        return head + b"".join(tail)

    def error(self, exc: ConciergeError) -> bytes:
        return sse_event(exc.to_dict())


async def chat_with_assistant(
    request: Request, key: ApiKey, body: ChatCompletionRequest
) -> Response:
    """``/v1/chat/completions`` with ``model="assistant:<name>"``: the reply pipeline.

    The last message is the user's new message. The request's ``user`` names the end user
    (their id in the caller's system): their conversation continues and their memories apply.
    Earlier user/assistant messages in the request, if any, are the conversation window;
    otherwise the stored conversation is. ``metadata.conversation_id`` picks a conversation;
    without ``user`` every request is a one-off conversation of an anonymous user. The
    operator's definition decides instructions, tools and sampling: a client's system
    messages, sampling settings and tools are not applied (tools are refused).
    """
    name = body.model[len(ASSISTANT_PREFIX) :]
    for field_name in _REFUSED:
        if getattr(body, field_name, None) not in (None, 1):
            raise InvalidRequest(
                f"'{field_name}' cannot be used with an assistant; its definition decides",
                param=field_name,
            )
    last = body.messages[-1]
    if not isinstance(last, UserMessage):
        raise InvalidRequest(
            "the last message must be the user's when talking to an assistant",
            param=f"messages.{len(body.messages) - 1}.role",
        )
    text = message_text(last.content, f"messages.{len(body.messages) - 1}.content") or ""
    history: list[HistoryTurn] = []
    for i, m in enumerate(body.messages[:-1]):
        if isinstance(m, UserMessage | AssistantMessage) and m.content is not None:
            content = message_text(m.content, f"messages.{i}.content") or ""
            if content.strip():
                history.append(HistoryTurn(m.role, content))
    conversation_id: int | None = None
    raw_id = (body.metadata or {}).get("conversation_id")
    if raw_id is not None:
        if not names.is_row_id(raw_id):
            raise InvalidRequest(
                "metadata.conversation_id must be a conversation id",
                param="metadata.conversation_id",
            )
        conversation_id = int(raw_id)
    inbound = Inbound(
        org_id=key.org_id,
        assistant=name,
        channel=API_CHANNEL,
        external_id=body.user or f"anonymous-{uuid.uuid4().hex}",
        text=text,
        conversation_id=conversation_id,
        new_conversation=body.user is None,
        history=history or None,
        priority_key=f"key:{key.id}",
        language=request.headers.get("accept-language"),
    )
    spent: list[TokenCount] = []
    events = concierge(request).runtime.reply(inbound, spent)
    return await respond(
        request,
        key,
        "chat.completions",
        events,
        OpenAIFormat(body.model, body.include_usage),
        stream=body.stream,
        spent=spent,
    )
