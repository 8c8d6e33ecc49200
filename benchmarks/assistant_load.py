"""Load: many concurrent conversations through the assistant pipeline, against a mock model.

    .venv/bin/python benchmarks/assistant_load.py [--users 50] [--duration 300]
        [--think 2:8] [--database sqlite|postgresql]

Starts the mock OpenAI upstream (benchmarks/mock_upstream.py: 20 streamed chunks, no waiting)
and ``concierge serve`` (one worker; the embedded LLM off, the mock as its only chat model; the
embedded MiniLM on, so retrieval is real), seeds the demo business, and runs ``--users``
virtual customers for ``--duration`` seconds. Each opens a conversation, then in a loop sends
one of the demo questions (streamed, SSE), reads the reply to its ``turn.completed`` event,
and thinks for a random time in ``--think`` seconds, as people do.

Reported: turns, errors (any non-200 or missing completion), turns/s, client latency p50/p99,
and the **pipeline overhead** — everything but the model: client latency minus the time the
pipeline spent in the model call (``timings.model_ms`` of the turn, which includes the round
trip to the mock) — p50/p99, plus the server's own view (turn total minus model). Memory: the
server's resident set size sampled every 5 s after a 30 s warm-up; start, end, peak and the
least-squares slope. Target: zero errors, p99 overhead <= 50 ms, memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from harness import ROOT, free_port, save

ADMIN = "sk-cc-bench-admin-0123456789abcdefghijkl"
QUESTIONS = [
    "How long do I have to return a jacket?",
    "How much does express shipping cost?",
    "Do you have a physical shop?",
    "What is the warranty on tents?",
    "Which payment methods do you accept?",
    "How should I wash my waterproof jacket?",
    "Can I cancel my order?",
    "Is the Ridge jacket waterproof?",
]
PG_SERVER = os.environ.get(
    "CONCIERGE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def slope(points: list[tuple[float, float]]) -> float:
    """MB per minute, least squares."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in points) / den * 60, 3) if den else 0.0


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready:\n{log.read_text()[-3000:]}")


async def customer(
    session: aiohttp.ClientSession,
    base: str,
    key: str,
    think: tuple[float, float],
    deadline: float,
    out: dict[str, list[Any]],
    index: int,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random(index)
    async with session.post(
        f"{base}/v1/assistants/acme-support/conversations",
        json={"user": f"customer-{index}"},
        headers=headers,
    ) as made:
        cid = (await made.json())["id"]
    await asyncio.sleep(rng.uniform(0, think[1]))  # the customers do not all start at once
    while time.monotonic() < deadline:
        question = rng.choice(QUESTIONS)
        started = time.perf_counter()
        completed: dict[str, Any] | None = None
        try:
            async with session.post(
                f"{base}/v1/assistants/acme-support/conversations/{cid}/messages",
                json={"content": question, "stream": True},
                headers=headers,
            ) as response:
                if response.status != 200:
                    out["errors"].append(f"HTTP {response.status}: {(await response.text())[:200]}")
                    continue
                buffer = b""
                async for piece in response.content.iter_any():
                    buffer += piece
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    if block.startswith(b"event: turn.completed"):
                        completed = json.loads(block.split(b"\ndata: ", 1)[1])
                    elif block.startswith(b"event: error"):
                        out["errors"].append(block.decode()[:200])
        except aiohttp.ClientError as exc:
            out["errors"].append(repr(exc))
            continue
        elapsed = (time.perf_counter() - started) * 1000
        if completed is None or completed["reply"] is None:
            out["errors"].append("no turn.completed event")
            continue
        timings = completed["timings"]
        out["latency"].append(elapsed)
        out["overhead"].append(elapsed - timings["model_ms"])
        out["server_overhead"].append(timings["total_ms"] - timings["model_ms"])
        out["steps"].append(timings)
        await asyncio.sleep(rng.uniform(*think))


async def drive(
    base: str, key: str, users: int, duration: float, think: tuple[float, float], pid: int
) -> dict[str, Any]:
    out: dict[str, list[Any]] = {
        "latency": [],
        "overhead": [],
        "server_overhead": [],
        "errors": [],
        "steps": [],
    }
    memory: list[tuple[float, float]] = []
    started = time.monotonic()
    deadline = started + duration

    async def sample() -> None:
        await asyncio.sleep(min(30.0, duration / 5))
        while time.monotonic() < deadline:
            memory.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(5)

    # Idle connections are dropped before the server's keep-alive (uvicorn: 5 s) can close
    # them under a request being sent, as browsers do; a think time is often longer than that.
    connector = aiohttp.TCPConnector(limit=users * 2, keepalive_timeout=3)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(
            *(customer(session, base, key, think, deadline, out, i) for i in range(users))
        )
        sampler.cancel()
    memory.append((time.monotonic() - started, rss_mb(pid)))
    elapsed = time.monotonic() - started
    mb = [m for _, m in memory]
    return {
        "users": users,
        "duration_s": round(elapsed, 1),
        "think_s": list(think),
        "turns": len(out["latency"]),
        "errors": len(out["errors"]),
        "error_examples": out["errors"][:5],
        "turns_per_s": round(len(out["latency"]) / elapsed, 2),
        "latency_ms": {"p50": pct(out["latency"], 0.5), "p99": pct(out["latency"], 0.99)},
        "overhead_ms": {"p50": pct(out["overhead"], 0.5), "p99": pct(out["overhead"], 0.99)},
        "server_overhead_ms": {
            "p50": pct(out["server_overhead"], 0.5),
            "p99": pct(out["server_overhead"], 0.99),
        },
        "steps_ms": {
            step: {
                "p50": pct([t.get(step, 0.0) for t in out["steps"]], 0.5),
                "p99": pct([t.get(step, 0.0) for t in out["steps"]], 0.99),
            }
            for step in ("load_ms", "retrieval_ms", "prompt_ms", "model_ms", "storage_ms")
        },
        "memory_mb": {
            "start": round(mb[0], 1),
            "end": round(mb[-1], 1),
            "peak": round(max(mb), 1),
            "slope_mb_per_min": slope(memory),
            "samples": len(mb),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--think", default="2:8", help="MIN:MAX seconds between messages.")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    think = tuple(float(x) for x in args.think.split(":"))
    assert len(think) == 2
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'concierge.db'}"
        pg_name = None
        if args.database == "postgresql":
            from sqlalchemy import create_engine, text

            pg_name = f"concierge_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
            database_url = f"{PG_SERVER}/{pg_name}"
        mock_port, port = free_port(), free_port()
        env = {
            **os.environ,
            "CONCIERGE_DATA_DIR": str(workdir),
            "CONCIERGE_DATABASE_URL": database_url,
            "CONCIERGE_MODELS_DIR": str(ROOT / "data" / "models"),
            "CONCIERGE_ADMIN_KEY": ADMIN,
            "CONCIERGE_LLM_ENABLED": "false",
            "CONCIERGE_PORT": str(port),
            "CONCIERGE_LOG_LEVEL": "warning",
            "CONCIERGE_UPSTREAMS": json.dumps(
                [
                    {
                        "name": "mock",
                        "base_url": f"http://127.0.0.1:{mock_port}/v1",
                        "models": ["mock-model"],
                    }
                ]
            ),
        }
        seeded = subprocess.run(
            [py, "-m", "concierge", "demo", "seed"], env=env, capture_output=True, text=True
        )
        if seeded.returncode != 0:
            raise SystemExit(seeded.stderr)
        mock_log, server_log = workdir / "mock.log", workdir / "server.log"
        mock = subprocess.Popen(
            [py, str(ROOT / "benchmarks" / "mock_upstream.py"), "--port", str(mock_port)],
            stdout=mock_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        server = subprocess.Popen(
            [py, "-m", "concierge", "serve"],
            env=env,
            cwd=workdir,
            stdout=server_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{mock_port}/v1/models", mock, mock_log)
            base = f"http://127.0.0.1:{port}"
            wait_ready(base + "/readyz", server, server_log)
            made = httpx.post(
                base + "/api/keys",
                json={"org": "acme", "name": "load", "scopes": ["inference"]},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            made.raise_for_status()
            result = asyncio.run(
                drive(base, made.json()["key"], args.users, args.duration, think, server.pid)
            )
        finally:
            for proc in (server, mock):
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if pg_name:
                from sqlalchemy import create_engine, text

                admin = create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
    result["database"] = args.database
    path = save(f"assistant_load_{args.database}", result)
    for k, v in result.items():
        print(f"{k}: {v}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
