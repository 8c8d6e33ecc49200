"""An organisation's inbox settings: business hours and the out-of-hours reply, SLA targets,
the CSAT question, automatic assignment. Stored as one validated document per organisation;
an organisation that never set them has the defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, insert, select, update

from concierge.errors import InvalidRequest
from concierge.governance import audit
from concierge.store.tables import inbox_settings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Span = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")]
Assignment = Literal["manual", "round_robin", "capacity"]
OUT_OF_HOURS = (
    "Thank you for your message. Our team is away right now; we will answer as soon as we are back."
)
CSAT_QUESTION = "How would you rate the help you received? (1 = poor, 5 = excellent)"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusinessHours(_Part):
    enabled: bool = Field(False, description="Off: the team is always in.")
    timezone: str = Field("UTC", description="IANA time zone of the hours (Europe/Paris).")
    week: dict[Literal[DAYS], list[Span]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {d: ["09:00-17:00"] for d in DAYS[:5]},
        description="Opening hours per day, as HH:MM-HH:MM spans; a day left out is closed.",
    )
    out_of_hours_text: str = Field(OUT_OF_HOURS, min_length=1, max_length=1000)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _spans(self) -> BusinessHours:
        for day, spans in self.week.items():
            for span in spans:
                start, end = span.split("-")
                if end != "24:00" and end <= start:
                    raise ValueError(f"{day}: {span} ends before it starts")
        return self

    def is_open(self, when: datetime) -> bool:
        if not self.enabled:
            return True
        local = when.astimezone(ZoneInfo(self.timezone))
        clock = local.strftime("%H:%M")
        for span in self.week.get(DAYS[local.weekday()], []):
            start, end = span.split("-")
            if start <= clock < end or (end == "24:00" and clock >= start):
                return True
        return False


class Sla(_Part):
    first_response_minutes: int | None = Field(
        60, ge=1, le=60 * 24 * 30, description="A person answers within this (None: no target)."
    )
    resolution_minutes: int | None = Field(
        60 * 24, ge=1, le=60 * 24 * 90, description="Resolved within this (None: no target)."
    )

    def due(self, opened: datetime) -> tuple[datetime | None, datetime | None]:
        first = self.first_response_minutes
        resolve = self.resolution_minutes
        return (
            opened + timedelta(minutes=first) if first else None,
            opened + timedelta(minutes=resolve) if resolve else None,
        )


class Csat(_Part):
    enabled: bool = Field(True, description="Ask for a rating when a conversation is resolved.")
    question: str = Field(CSAT_QUESTION, min_length=1, max_length=500)


class InboxSettings(_Part):
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    sla: Sla = Field(default_factory=Sla)
    csat: Csat = Field(default_factory=Csat)
    assignment: Assignment = Field(
        "round_robin",
        description="How a conversation handed to people without a team is assigned: "
        "round_robin (the available agent assigned longest ago), capacity (the available agent "
        "with the fewest open conversations, under their capacity) or manual.",
    )
    team: str | None = Field(None, description="The team new conversations go to (None: all).")


def parse(data: dict[str, Any]) -> InboxSettings:
    try:
        return InboxSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InvalidRequest(f"inbox settings: {where}: {first['msg']}", param=where) from None


def get(conn: Connection, org_id: int) -> InboxSettings:
    row = conn.execute(
        select(inbox_settings.c.config).where(inbox_settings.c.org_id == org_id)
    ).first()
    return InboxSettings() if row is None else InboxSettings.model_validate(row.config)


def put(conn: Connection, org_id: int, new: InboxSettings, *, actor: str) -> InboxSettings:
    now = datetime.now(UTC)
    values = {"config": new.model_dump(mode="json"), "updated_at": now}
    done = conn.execute(
        update(inbox_settings).where(inbox_settings.c.org_id == org_id).values(values)
    )
    if not done.rowcount:
        conn.execute(insert(inbox_settings).values(org_id=org_id, **values))
    audit.record(conn, "inbox.settings", actor=actor, org_id=org_id, target=f"org:{org_id}")
    return new
