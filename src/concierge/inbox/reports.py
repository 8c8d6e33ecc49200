"""Inbox reports: first-response and resolution times, the bot's resolution rate and the
handoff rate, CSAT and SLA breaches, by day, channel, assistant or agent."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select

from concierge.conversations import feed
from concierge.inbox import items
from concierge.store.tables import inbox_items

By = Literal["day", "channel", "assistant", "agent"]


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "mean": None, "p90": None}
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "mean": round(statistics.fmean(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
    }


def report(
    conn: Connection, org_id: int, since: datetime, until: datetime, by: By
) -> dict[str, Any]:
    def key_of(day: datetime, channel: str, assistant_id: int, agent: int | None) -> str:
        if by == "day":
            return day.date().isoformat()
        if by == "channel":
            return channel
        if by == "assistant":
            return str(assistant_id)
        return str(agent) if agent is not None else "unassigned"

    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "conversations": 0,
            "handed_off": 0,
            "first_response": [],
            "resolution": [],
            "resolved": 0,
            "csat": [],
            "breaches": 0,
        }
    )
    started = feed.started_between(conn, org_id, since, until)
    handed = items.find_many(conn, [cid for cid, *_ in started])
    if by != "agent":  # conversations are not anybody's until handed to people
        for cid, channel, assistant_id, created in started:
            group = groups[key_of(created, channel, assistant_id, None)]
            group["conversations"] += 1
            group["handed_off"] += cid in handed
    rows = conn.execute(
        select(inbox_items).where(
            inbox_items.c.org_id == org_id,
            inbox_items.c.opened_at >= since,
            inbox_items.c.opened_at < until,
        )
    )
    for row in rows:
        item = items.item_of(row)
        group = groups[key_of(item.opened_at, item.channel, item.assistant_id, item.assignee_id)]
        if by == "agent":
            group["handed_off"] += 1
        if item.first_response_at is not None:
            group["first_response"].append(
                (item.first_response_at - item.opened_at).total_seconds()
            )
        if item.resolved_at is not None:
            group["resolved"] += 1
            group["resolution"].append((item.resolved_at - item.opened_at).total_seconds())
        if item.csat_score is not None:
            group["csat"].append(item.csat_score)
        group["breaches"] += bool(item.breaches)
    data = []
    for key in sorted(groups):
        g = groups[key]
        total = g["conversations"]
        data.append(
            {
                by: key,
                "conversations": total if by != "agent" else None,
                "handed_off": g["handed_off"],
                "handoff_rate": round(g["handed_off"] / total, 4) if total else None,
                "bot_resolution_rate": round(1 - g["handed_off"] / total, 4) if total else None,
                "first_response_seconds": _summary(g["first_response"]),
                "resolution_seconds": _summary(g["resolution"]),
                "resolved": g["resolved"],
                "csat": {
                    "responses": len(g["csat"]),
                    "average": round(statistics.fmean(g["csat"]), 2) if g["csat"] else None,
                    "satisfied_share": (
                        round(sum(1 for s in g["csat"] if s >= 4) / len(g["csat"]), 4)
                        if g["csat"]
                        else None
                    ),
                },
                "sla_breached": g["breaches"],
            }
        )
    return {
        "object": "inbox.report",
        "by": by,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "data": data,
    }
