"""Channels as stored: one row per connected number, page, account or bot, its secrets sealed.

Every function takes the caller's organisation and filters by it inside the query: another
organisation's channel is "not found", like one that does not exist. The webhook, which has no
organisation, reads a channel by its id alone (:func:`by_id`) and then checks the platform's
signature with the channel's own secret.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, delete, insert, select, update

from concierge.channels.base import ChannelConfig, ChannelType
from concierge.channels.registry import ChannelTypes
from concierge.errors import InvalidRequest, NotFound
from concierge.governance import audit
from concierge.secretbox import SecretBox
from concierge.store import aware
from concierge.store.tables import channels

MASK = "********"


class ChannelStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # webhooks are refused, nothing is sent


@dataclass(frozen=True)
class Channel:
    id: str
    org_id: int
    assistant_id: int
    type: str
    name: str
    config: ChannelConfig  # secrets included: never shown
    status: ChannelStatus
    created_at: datetime
    updated_at: datetime

    def public_config(self) -> dict[str, Any]:
        """The settings as the API shows them: secrets replaced by a mask."""
        shown = self.config.model_dump(mode="json")
        for name in self.config.SECRETS:
            if shown.get(name) is not None:
                shown[name] = MASK
        return shown

    def to_dict(self, webhook_url: str, assistant: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "channel",
            "type": self.type,
            "name": self.name,
            "assistant_id": self.assistant_id,
            "assistant": assistant,
            "status": str(self.status),
            "config": self.public_config(),
            "webhook_url": webhook_url,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def new_id() -> str:
    return "ch_" + secrets.token_hex(12)


def _validate(kind: ChannelType, values: dict[str, Any]) -> ChannelConfig:
    try:
        return kind.config_model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise InvalidRequest(
            f"{kind.title} channel config: {where}: {first['msg']}", param=f"config.{where}"
        ) from None


def _split(config: ChannelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    data = config.model_dump(mode="json")
    hidden = {k: data.pop(k) for k in list(data) if k in config.SECRETS}
    return data, hidden


def _row(row: Any, types: ChannelTypes, box: SecretBox) -> Channel:
    kind = types.get(row.type)
    hidden = orjson.loads(box.open(row.secrets))
    config = kind.config_model.model_validate({**row.config, **hidden})
    return Channel(
        row.id,
        row.org_id,
        row.assistant_id,
        row.type,
        row.name,
        config,
        ChannelStatus(row.status),
        aware(row.created_at),
        aware(row.updated_at),
    )


def create(
    conn: Connection,
    types: ChannelTypes,
    box: SecretBox,
    *,
    org_id: int,
    assistant_id: int,
    type: str,
    name: str | None,
    config: dict[str, Any],
    actor: str,
) -> Channel:
    kind = types.get(type)
    checked = _validate(kind, config)
    plain, hidden = _split(checked)
    now = datetime.now(UTC)
    ident = new_id()
    conn.execute(
        insert(channels).values(
            id=ident,
            org_id=org_id,
            assistant_id=assistant_id,
            type=kind.name,
            name=(name or kind.title).strip()[:200],
            config=plain,
            secrets=box.seal(orjson.dumps(hidden).decode()),
            status=ChannelStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
    )
    audit.record(
        conn,
        org_id=org_id,
        actor=actor,
        action="channel.create",
        target=ident,
        details={"type": kind.name, "assistant_id": assistant_id, "fields": sorted(plain)},
    )
    return get(conn, types, box, org_id, ident)


def by_id(conn: Connection, types: ChannelTypes, box: SecretBox, channel_id: str) -> Channel:
    row = conn.execute(select(channels).where(channels.c.id == channel_id)).one_or_none()
    if row is None:
        raise NotFound(f"channel '{channel_id[:40]}' not found", param="channel")
    return _row(row, types, box)


def get(
    conn: Connection, types: ChannelTypes, box: SecretBox, org_id: int, channel_id: str
) -> Channel:
    row = conn.execute(
        select(channels).where(channels.c.id == channel_id, channels.c.org_id == org_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"channel '{channel_id[:40]}' not found", param="channel")
    return _row(row, types, box)


def list_all(conn: Connection, types: ChannelTypes, box: SecretBox, org_id: int) -> list[Channel]:
    rows = conn.execute(
        select(channels).where(channels.c.org_id == org_id).order_by(channels.c.created_at)
    )
    return [_row(r, types, box) for r in rows]


def update_channel(
    conn: Connection,
    types: ChannelTypes,
    box: SecretBox,
    current: Channel,
    *,
    assistant_id: int | None,
    name: str | None,
    config: dict[str, Any] | None,
    status: ChannelStatus | None,
    actor: str,
) -> Channel:
    """Change what is given; a secret sent as the mask (or left out) keeps its stored value."""
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    changed: list[str] = []
    if config is not None:
        kind = types.get(current.type)
        merged = current.config.model_dump(mode="json")
        for key, value in config.items():
            if key in current.config.SECRETS and value == MASK:
                continue
            merged[key] = value
        checked = _validate(kind, merged)
        plain, hidden = _split(checked)
        values.update(config=plain, secrets=box.seal(orjson.dumps(hidden).decode()))
        changed += sorted(config)
    if assistant_id is not None:
        values["assistant_id"] = assistant_id
        changed.append("assistant")
    if name is not None:
        values["name"] = name.strip()[:200]
        changed.append("name")
    if status is not None:
        values["status"] = status
        changed.append("status")
    conn.execute(update(channels).where(channels.c.id == current.id).values(values))
    audit.record(
        conn,
        org_id=current.org_id,
        actor=actor,
        action="channel.update",
        target=current.id,
        details={"changed": changed},  # names only: values may be secrets
    )
    return get(conn, types, box, current.org_id, current.id)


def remove(conn: Connection, current: Channel, actor: str) -> None:
    conn.execute(delete(channels).where(channels.c.id == current.id))
    audit.record(
        conn,
        org_id=current.org_id,
        actor=actor,
        action="channel.delete",
        target=current.id,
        details={"type": current.type},
    )


def reseal(conn: Connection, box: SecretBox) -> int:
    """Every channel's secrets encrypted again under the first key (after a key rotation)."""
    count = 0
    for row in conn.execute(select(channels.c.id, channels.c.secrets)).all():
        conn.execute(
            update(channels).where(channels.c.id == row.id).values(secrets=box.rotate(row.secrets))
        )
        count += 1
    return count
