"""An ordinary client's latency while another client sends each abusive request of the
hardening review.

    .venv/bin/python benchmarks/abuse.py [--seconds 12]

Starts ``concierge serve`` as a user would (SQLite, the embedded Gemma 3 270M and MiniLM,
the demo seeded), then, for each scenario, runs an attacker loop for ``--seconds`` while an
ordinary client (another API key) sends, every 250 ms, the requests an application makes
all day: a one-sentence embedding, a hybrid knowledge search, the model list, and a widget
visitor reading its conversation. Reports the attacker's outcomes (status codes, how fast it
was answered) and the ordinary client's p50 / p95 / max latency, which should stay under 1 s.

The scenarios: a chat of 100,000 one-character messages; a 50,000-value enum and a pattern
whose grammar crashed llama.cpp; 2,048 long embedding inputs dropped after 1 s; a DOCX zip
bomb upload; a catastrophic moderation pattern hit by widget messages; 20 concurrent
assistant turns; knowledge URLs at the server's own metrics; and a baseline without an
attacker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import httpx
from harness import ROOT, free_port, save, server

sys.path.insert(0, str(ROOT))  # the test helpers' zip bomb
from tests.helpers import docx_bomb

ADMIN = "sk-cc-bench-admin-abuse-0123456789abcdef"
Attack = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[int]]


# -- the attacks: each sends one abusive request and returns its status ----------------------


async def many_messages(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "a"}] * 100_000}
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def huge_schema(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    ctx["n"] = ctx.get("n", 0) + 1
    schema: dict[str, Any] = (
        {"type": "string", "enum": [f"value{i}" for i in range(50_000)]}
        if ctx["n"] % 2
        else {"type": "string", "pattern": "^a{1,2000}$"}
    )
    body = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Pick one."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def dropped_embeddings(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    body = {"model": "all-minilm-l6-v2", "input": ["many words go here " * 20] * 2048}
    try:
        return (await client.post("/v1/embeddings", json=body, timeout=1.0)).status_code
    except httpx.ReadTimeout:
        return 499  # the attacker hung up


async def zip_bomb(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    files = {"file": ("invoice.docx", ctx["bomb"], "application/octet-stream")}
    return (
        await client.post(f"/v1/knowledge_bases/{ctx['kb']}/documents", files=files)
    ).status_code


async def redos_widget(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    widget = ctx["widget"]
    made = await widget.post("/widget/v1/acme/acme-support/visitors")
    if made.status_code != 201:
        return made.status_code
    me = {"X-Concierge-Visitor": made.json()["token"]}
    started = await widget.post("/widget/v1/acme/acme-support/conversations", headers=me)
    if started.status_code != 201:
        return started.status_code
    cid = started.json()["id"]
    sent = await widget.post(
        f"/widget/v1/acme/acme-support/conversations/{cid}/messages",
        headers=me,
        json={"content": "a" * 15_000 + "b"},
    )
    return sent.status_code


async def burst(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    body = {
        "model": "assistant:acme-support",
        "messages": [{"role": "user", "content": "What is your returns policy?"}],
    }
    answers = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=body, timeout=120) for _ in range(20))
    )
    ctx.setdefault("burst", Counter()).update(a.status_code for a in answers)
    return answers[0].status_code


async def ssrf(client: httpx.AsyncClient, ctx: dict[str, Any]) -> int:
    port = ctx["port"]
    urls = [
        f"http://１２７.０.０.１:{port}/metrics",
        f"http://[::ffff:127.0.0.1]:{port}/metrics",
        f"http://localhost:{port}/metrics",
        "http://169.254.169.254/latest/meta-data/",
    ]
    body = {"urls": [{"url": u} for u in urls]}
    return (await client.post(f"/v1/knowledge_bases/{ctx['kb']}/documents", json=body)).status_code


SCENARIOS: dict[str, Attack | None] = {
    "baseline (no attacker)": None,
    "100,000 one-character messages": many_messages,
    "50,000-value enum / crashing grammar": huge_schema,
    "2,048 embedding inputs, dropped after 1 s": dropped_embeddings,
    "DOCX zip bomb upload": zip_bomb,
    "(a+)+$ moderation pattern via the widget": redos_widget,
    "20 concurrent assistant turns": burst,
    "knowledge URLs at the server itself": ssrf,
}


# -- the ordinary client ---------------------------------------------------------------------


async def ordinary(
    client: httpx.AsyncClient, widget: httpx.AsyncClient, ctx: dict[str, Any], until: float
) -> list[float]:
    """Ordinary requests every 250 ms until ``until``: their latencies in ms (an error counts
    as the time it took, and is noted)."""
    latencies: list[float] = []
    n = 0
    while time.monotonic() < until:
        n += 1
        kind = n % 4
        started = time.perf_counter()
        if kind == 0:
            answer = await client.post(
                "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "Where is my order?"}
            )
        elif kind == 1:
            answer = await client.post(
                f"/v1/knowledge_bases/{ctx['help']}/search",
                json={"query": "how long do returns take", "k": 5},
            )
        elif kind == 2:
            answer = await client.get("/v1/models")
        else:
            answer = await widget.get(
                f"/widget/v1/acme/acme-support/conversations/{ctx['visitor_cid']}",
                headers=ctx["visitor"],
            )
        latencies.append((time.perf_counter() - started) * 1000)
        if os.environ.get("ABUSE_DEBUG") and latencies[-1] > 500:
            print(
                f"  slow ordinary request: kind {kind}, {latencies[-1]:.0f} ms at "
                f"{until - time.monotonic():.1f} s before the end",
                file=sys.stderr,
            )
        if answer.status_code >= 400:
            ctx.setdefault("ordinary_errors", Counter())[answer.status_code] += 1
        await asyncio.sleep(0.25)
    return latencies


async def attack_loop(name: str, base: str, ctx: dict[str, Any], seconds: float) -> dict[str, Any]:
    """In the attacker's own process: run scenario ``name`` for ``seconds``."""
    attack = SCENARIOS[name]
    assert attack is not None
    admin_headers = {"Authorization": f"Bearer {ADMIN}", "OpenAI-Organization": "acme"}
    outcomes: Counter[int] = Counter()
    answer_ms: list[float] = []
    until = time.monotonic() + seconds
    async with (
        httpx.AsyncClient(base_url=base, headers=admin_headers, timeout=120) as admin,
        httpx.AsyncClient(base_url=base, timeout=30) as widget,
    ):
        ctx = {**ctx, "widget": widget}
        if name.startswith("DOCX"):
            ctx["bomb"] = docx_bomb(10_000_000)  # built before the clock starts
            until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status = await attack(admin, ctx)
            except httpx.HTTPError as exc:
                status = 0
                print(f"  attacker: {type(exc).__name__}", file=sys.stderr)
            answer_ms.append((time.perf_counter() - started) * 1000)
            outcomes[status] += 1
    return {
        "statuses": dict(outcomes),
        "answer_ms_p50": round(statistics.median(answer_ms), 1) if answer_ms else None,
        "burst": dict(ctx.get("burst", {})) or None,
    }


def attacker_process(name: str, base: str, ctx: dict[str, Any], seconds: float) -> dict[str, Any]:
    return asyncio.run(attack_loop(name, base, ctx, seconds))


async def scenario(
    name: str,
    seconds: float,
    base: str,
    app: httpx.AsyncClient,
    widget: httpx.AsyncClient,
    ctx: dict[str, Any],
    pool: ProcessPoolExecutor,
) -> dict[str, Any]:
    """The ordinary client here, the attacker in a process of its own (building an abusive
    request costs the client CPU time that must not count against the server)."""
    ctx.pop("ordinary_errors", None)
    loop = asyncio.get_running_loop()
    attacker: asyncio.Future[dict[str, Any]] | None = None
    if SCENARIOS[name] is not None:
        plain = {k: v for k, v in ctx.items() if k in ("kb", "help", "port")}
        attacker = loop.run_in_executor(pool, attacker_process, name, base, plain, seconds)
        await asyncio.sleep(0.5)  # the attacker's interpreter starts; then both run
    latencies = sorted(await ordinary(app, widget, ctx, time.monotonic() + seconds))
    attacked = await attacker if attacker is not None else {"statuses": {}, "burst": None}
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return {
        "scenario": name,
        "attacker_requests": sum(attacked["statuses"].values()),
        "attacker_statuses": attacked["statuses"],
        "attacker_answer_ms_p50": attacked.get("answer_ms_p50"),
        "ordinary_requests": len(latencies),
        "ordinary_p50_ms": round(statistics.median(latencies), 1),
        "ordinary_p95_ms": round(p95, 1),
        "ordinary_max_ms": round(latencies[-1], 1),
        "ordinary_errors": dict(ctx.get("ordinary_errors", {})),
        "burst_statuses": attacked["burst"],
    }


async def prepare(base: str, port: int) -> dict[str, Any]:
    ctx: dict[str, Any] = {"port": port}
    headers = {"Authorization": f"Bearer {ADMIN}", "OpenAI-Organization": "acme"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as admin:
        kbs = (await admin.get("/v1/knowledge_bases")).json()["data"]
        ctx["help"] = next(k["id"] for k in kbs if k["name"] == "acme-help")
        ctx["kb"] = (await admin.post("/v1/knowledge_bases", json={"name": "uploads"})).json()["id"]
        ctx["admin_key"] = ADMIN
        app_key = await admin.post(
            "/api/keys", json={"org": "acme", "name": "shop app", "scopes": ["inference"]}
        )
        ctx["app_key"] = app_key.json()["key"]
        patched = await admin.patch(
            "/api/orgs/acme/policy", json={"moderation": {"blocked_patterns": ["(a+)+$"]}}
        )
        assert patched.status_code == 200, patched.text
    async with httpx.AsyncClient(base_url=base, timeout=60) as widget:
        token = (await widget.post("/widget/v1/acme/acme-support/visitors")).json()["token"]
        ctx["visitor"] = {"X-Concierge-Visitor": token}
        made = await widget.post(
            "/widget/v1/acme/acme-support/conversations", headers=ctx["visitor"]
        )
        ctx["visitor_cid"] = made.json()["id"]
    return ctx


async def run(seconds: float, database: str | None = None) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "CONCIERGE_DATA_DIR": tmp,
            "CONCIERGE_MODELS_DIR": str(ROOT / "data" / "models"),
            "CONCIERGE_ADMIN_KEY": ADMIN,
            "CONCIERGE_PORT": str(port),
            "CONCIERGE_LOG_LEVEL": "warning",
            **({"CONCIERGE_DATABASE_URL": database} if database else {}),
            # The attacker and the widget scenario come from one address: let it through the
            # per-address budgets, so what is measured is the server's own protection.
            "CONCIERGE_WIDGET_IP_REQUESTS_PER_MINUTE": "100000",
            "CONCIERGE_WIDGET_NEW_VISITORS_PER_MINUTE": "100000",
        }
        concierge = [sys.executable, "-m", "concierge"]
        subprocess.run(
            [*concierge, "demo", "seed"],
            env={**os.environ, **env},
            check=True,
            cwd=tmp,
            capture_output=True,
        )
        with server([*concierge, "serve"], base + "/readyz", env=env, timeout=300):
            ctx = await prepare(base, port)
            app_headers = {"Authorization": f"Bearer {ctx['app_key']}"}
            async with (
                httpx.AsyncClient(base_url=base, headers=app_headers, timeout=30) as app,
                httpx.AsyncClient(base_url=base, timeout=30) as widget,
            ):
                results = []
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    for name in SCENARIOS:
                        print(f"- {name}", file=sys.stderr)
                        results.append(await scenario(name, seconds, base, app, widget, ctx, pool))
                        await asyncio.sleep(1.0)  # let the previous attack's work drain
    return {
        "seconds_per_scenario": seconds,
        "database": "postgresql" if database else "sqlite",
        "scenarios": results,
    }


def reset(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument(
        "--only", help="run the scenarios whose name contains this (and the baseline)"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL database to use instead of SQLite (it is emptied first)",
    )
    args = parser.parse_args()
    if args.only:
        for name in list(SCENARIOS):
            if args.only not in name and not name.startswith("baseline"):
                del SCENARIOS[name]
    if args.database_url:
        reset(args.database_url)
    result = asyncio.run(run(args.seconds, args.database_url))
    path = save("abuse", result)
    print("| scenario | attacker (status: count) | ordinary p50 / p95 / max ms | ordinary errors |")
    print("|---|---|---|---|")
    for row in result["scenarios"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row["attacker_statuses"].items()))
        if row["burst_statuses"]:
            statuses += (
                " (burst: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(row["burst_statuses"].items()))
                + ")"
            )
        print(
            f"| {row['scenario']} | {statuses or '—'} | {row['ordinary_p50_ms']} / "
            f"{row['ordinary_p95_ms']} / {row['ordinary_max_ms']} | "
            f"{row['ordinary_errors'] or 0} |"
        )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
