"""Messaging channels under load: webhook acknowledgement, inbound to reply, the outbox under a
per-number limit with injected 429s, and recovery after kill -9.

    .venv/bin/python benchmarks/channels.py [--seconds 10] [--connections 16]
        [--e2e 200] [--outbox 1200] [--database sqlite|postgresql]

Starts the mock model (benchmarks/mock_upstream.py), a fake Graph API
(benchmarks/mock_graph.py) and ``concierge serve`` (one worker, the embedded LLM off, the
mock as the assistant's model), connects a WhatsApp channel, then:

1. **Acknowledgement**: wrk posts signed WhatsApp webhooks (each a distinct ``wamid`` from one
   of 500 customers) with ``--connections`` connections for ``--seconds``; each is stored
   before its 200. Meanwhile the workers answer them through the pipeline and the outbox, on
   the same 2 cores. Then the queue is drained and counted: stored events = requests sent,
   replies sent = events (nothing lost, nothing twice).
2. **Inbound to reply**: ``--e2e`` messages at 20/s from distinct customers; latency from the
   webhook's POST to the fake Graph API receiving the reply.
3. **Outbox**: ``--outbox`` replies queued at once for one sending number limited to 80
   messages/s, the fake refusing every 20th send with 130429; throughput, the most sends in
   any one-second window, and every message sent exactly once.
4. **kill -9**: 300 messages posted, the server killed with SIGKILL at once, restarted; time
   to ready, and from ready until every message is answered (once).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from harness import ROOT, free_port, save, wrk_lines

ADMIN = "sk-cc-bench-admin-0123456789abcdefghijkl"
SECRET = "bench-app-secret"
PHONE = "106540352242922"
PG_SERVER = os.environ.get(
    "CONCIERGE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
PY = sys.executable


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def webhook(sender: str, wamid: str, text: str) -> bytes:
    message = {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "text": {"body": text},
        "type": "text",
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE},
        "contacts": [{"profile": {"name": "Customer"}, "wa_id": sender}],
        "messages": [message],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


class Stack:
    """The mock model, the fake Graph API and concierge serve, in one folder."""

    def __init__(self, workdir: Path, database_url: str) -> None:
        self.workdir = workdir
        self.model_port, self.graph_port, self.port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.graph = f"http://127.0.0.1:{self.graph_port}"
        self.env = {
            **os.environ,
            "CONCIERGE_DATA_DIR": str(workdir),
            "CONCIERGE_DATABASE_URL": database_url,
            "CONCIERGE_MODELS_DIR": str(ROOT / "data" / "models"),
            "CONCIERGE_ADMIN_KEY": ADMIN,
            "CONCIERGE_LLM_ENABLED": "false",
            "CONCIERGE_PORT": str(self.port),
            "CONCIERGE_LOG_LEVEL": "warning",
            "CONCIERGE_EGRESS_ALLOWED_NETWORKS": '["127.0.0.1"]',
            "CONCIERGE_CHANNEL_LEASE_SECONDS": "5",
            "CONCIERGE_UPSTREAMS": json.dumps(
                [
                    {
                        "name": "mock",
                        "base_url": f"http://127.0.0.1:{self.model_port}/v1",
                        "models": ["mock-model"],
                    }
                ]
            ),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], ready: str) -> float:
        started = time.monotonic()
        log = (self.workdir / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise SystemExit(f"{name} exited:\n{(self.workdir / f'{name}.log').read_text()}")
            try:
                if httpx.get(ready, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{name} not ready")

    def start_all(self, refuse_every: int = 0) -> None:
        bench = ROOT / "benchmarks"
        self.start(
            "model",
            [PY, str(bench / "mock_upstream.py"), "--port", str(self.model_port)],
            f"http://127.0.0.1:{self.model_port}/v1/models",
        )
        self.start(
            "graph",
            [
                PY,
                str(bench / "mock_graph.py"),
                "--port",
                str(self.graph_port),
                "--refuse-every",
                str(refuse_every),
            ],
            f"{self.graph}/stats",
        )
        self.start_server()

    def start_server(self) -> float:
        return self.start("server", [PY, "-m", "concierge", "serve"], self.base + "/readyz")

    def start_worker(self) -> None:
        log = (self.workdir / "worker.log").open("a")
        self.procs["worker"] = subprocess.Popen(
            [PY, "-m", "concierge", "channels", "work"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_server(self) -> None:
        self.procs["server"].send_signal(signal.SIGKILL)
        self.procs["server"].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
        )

    def connect(self, rate: float = 80.0) -> str:
        with self.admin() as client:
            if client.get("/v1/assistants/support").status_code == 404:
                client.post(
                    "/v1/assistants",
                    json={"name": "support", "model": "mock-model", "instructions": "Be brief."},
                ).raise_for_status()
            made = client.post(
                "/v1/channels",
                json={
                    "type": "whatsapp",
                    "assistant": "support",
                    "config": {
                        "phone_number_id": PHONE,
                        "access_token": "bench-token",
                        "app_secret": SECRET,
                        "verify_token": "bench-verify",
                        "api_base_url": self.graph,
                        "messages_per_second": rate,
                    },
                },
            )
            made.raise_for_status()
            return str(made.json()["id"])

    def sent(self) -> list[list[Any]]:
        return list(httpx.get(f"{self.graph}/stats", timeout=30).json()["sent"])

    def reset_graph(self) -> None:
        httpx.post(f"{self.graph}/reset", timeout=10)

    def counts(self, channel: str) -> dict[str, int]:
        """Events by status, through the API as an operator sees them (one listing, newest
        first, so an event that changes status meanwhile is counted once)."""
        out: Counter[str] = Counter()
        before = None
        with self.admin() as client:
            while True:
                params: dict[str, Any] = {"limit": 500}
                if before:
                    params["before"] = before
                page = client.get(f"/v1/channels/{channel}/events", params=params).json()
                out.update(e["status"] for e in page["data"])
                if not page["has_more"]:
                    return dict(out)
                before = page["data"][-1]["id"]


def wait_for(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def acknowledgement(
    stack: Stack, channel: str, seconds: int, connections: int, offset: int, drain: bool
) -> dict[str, Any]:
    """wrk posts distinct signed webhooks (numbered from ``offset``); then, with ``drain``,
    waits until every one is answered and counts."""
    bodies = stack.workdir / f"webhooks-{offset}.txt"
    count = 20_000 * max(1, seconds // 5)
    with bodies.open("w") as out:
        for i in range(offset, offset + count):
            body = webhook(f"4479{i % 500:08d}", f"wamid.ACK{i:08d}", f"Question {i}")
            out.write(sign(body) + "\t" + body.decode() + "\n")
    before = stack.counts(channel)
    result = wrk_lines(f"{stack.base}/channels/{channel}/webhook", bodies, connections, seconds)
    out_: dict[str, Any] = {
        "connections": connections,
        "seconds": seconds,
        "requests": result.requests,
        "errors": result.errors,
        "acknowledged_per_s": round(result.requests_per_s, 1),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "wrapped": result.requests > count,
    }
    time.sleep(1.0)  # calls in flight when wrk stopped (it does not count them) are stored too
    stored = sum(stack.counts(channel).values()) - sum(before.values())
    out_["stored"] = stored
    if not drain:
        return out_
    started = time.monotonic()

    def drained() -> bool:
        counts = stack.counts(channel)
        replies = sum(1 for row in stack.sent() if row[4] == "text")
        return counts.get("pending", 0) == 0 and replies >= counts.get("done", 0)

    out_["drained"] = wait_for(drained, timeout=max(900, seconds * 60))
    out_["drain_after_load_s"] = round(time.monotonic() - started, 1)
    counts = stack.counts(channel)
    tags = Counter(row[3] for row in stack.sent())
    out_["events"] = counts
    out_["replies_sent"] = sum(1 for row in stack.sent() if row[4] == "text")
    out_["consent_questions_sent"] = sum(1 for row in stack.sent() if row[4] == "interactive")
    out_["replies_sent_twice"] = sum(1 for c in tags.values() if c > 1)
    out_["nothing_lost"] = (
        stored >= result.requests
        and counts.get("pending", 0) == 0
        and out_["replies_sent"] == stored
    )
    return out_


async def inbound_to_reply(stack: Stack, channel: str, messages: int) -> dict[str, Any]:
    stack.reset_graph()
    posted: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=stack.base, timeout=30) as client:
        for i in range(messages):
            sender = f"4478{i:08d}"
            body = webhook(sender, f"wamid.E2E{uuid.uuid4().hex}", "When do you open?")
            posted[sender] = time.time()
            answer = await client.post(
                f"/channels/{channel}/webhook",
                content=body,
                headers={"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"},
            )
            answer.raise_for_status()
            await asyncio.sleep(0.05)
    wait_for(lambda: len(stack.sent()) >= messages, 300)
    first: dict[str, float] = {}
    for at, to, *_ in stack.sent():
        first.setdefault(to, at)  # the reply, not the consent question after it
    latencies = [(at - posted[to]) * 1000 for to, at in first.items() if to in posted]
    return {
        "messages": messages,
        "rate_per_s": 20,
        "replies": len(latencies),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
    }


def outbox(stack: Stack, total: int, rate: float) -> dict[str, Any]:
    """Replies queued at once for one number, sent under its limit through 429s."""
    from datetime import UTC, datetime

    from sqlalchemy import select, update

    from concierge.channels import outbox as box
    from concierge.channels import queue
    from concierge.channels.base import Outbound
    from concierge.store import Database
    from concierge.store.tables import channel_threads, channels

    channel = stack.connect(rate)
    stack.reset_graph()
    db = Database(stack.env["CONCIERGE_DATABASE_URL"], pooled=False)

    def enqueue(conn: Any) -> None:
        """As the pipeline queues replies: one per customer, each within its window."""
        org = conn.execute(select(channels.c.org_id).where(channels.c.id == channel)).scalar()
        for i in range(total):
            thread = queue.thread_for(conn, channel, org, f"4477{i:08d}")
            conn.execute(
                update(channel_threads)
                .where(channel_threads.c.id == thread.id)
                .values(last_inbound_at=datetime.now(UTC))
            )
            box.enqueue(
                conn,
                channel_id=channel,
                org_id=org,
                thread_id=thread.id,
                conversation_id=None,
                turn_id=None,
                messages=[Outbound(text=f"Your order {i} has shipped.")],
                dedupe=f"bench:{i}",
            )

    db.write_sync(enqueue)
    db.close()
    started = time.time()
    wait_for(lambda: len(stack.sent()) >= total, 600)
    sent = sorted(stack.sent())
    times = [s[0] for s in sent]
    window = max(
        (bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0
    )  # the most sends in any one-second window [t, t + 1)
    refused = httpx.get(f"{stack.graph}/stats").json()["refused"]
    recipients = Counter(s[1] for s in sent)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "queued": total,
        "limit_per_s": rate,
        "sent": len(sent),
        "duplicates": sum(1 for c in recipients.values() if c > 1),
        "refused_429": refused,
        "throughput_per_s": round((len(sent) - 1) / span, 1) if span else None,
        "max_in_any_second": window,
        "limit_kept": window <= rate,
        "queued_to_last_send_s": round(times[-1] - started, 1) if times else None,
    }


def kill_recovery(stack: Stack, channel: str, messages: int) -> dict[str, Any]:
    """``messages`` posted 16 at a time (faster than they are answered), the server killed
    with SIGKILL as soon as the last is acknowledged, then restarted."""
    stack.reset_graph()

    async def post_all() -> None:
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=stack.base, timeout=30) as client:

            async def one(i: int) -> None:
                body = webhook(f"4476{i:08d}", f"wamid.KILL{uuid.uuid4().hex}", "Hello?")
                async with gate:
                    answer = await client.post(
                        f"/channels/{channel}/webhook",
                        content=body,
                        headers={
                            "X-Hub-Signature-256": sign(body),
                            "Content-Type": "application/json",
                        },
                    )
                    answer.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(messages)))

    asyncio.run(post_all())
    stack.kill_server()
    killed = time.monotonic()

    def replies() -> list[list[Any]]:
        return [s for s in stack.sent() if s[4] == "text"]  # not the consent questions

    answered_before = len({s[1] for s in replies()})
    killed_at = time.time()
    ready_s = stack.start_server()

    def unknown() -> int:
        """Replies caught mid-send: not sent again on a guess (marked unknown after
        outbox_in_doubt_seconds without a status callback)."""
        with stack.admin() as client:
            page = client.get(
                f"/v1/channels/{channel}/messages", params={"status": "unknown", "limit": 500}
            )
            return len(page.json()["data"])

    wait_for(lambda: len({s[1] for s in replies()}) >= messages, 30)
    wait_for(lambda: len({s[1] for s in replies()}) + unknown() >= messages, 300)
    done = time.monotonic() - killed
    recipients = Counter(s[1] for s in replies())
    after = sorted(s[0] - killed_at - ready_s for s in replies() if s[0] > killed_at)
    return {
        "messages": messages,
        "answered_before_kill": answered_before,
        "answered_after_restart": len(after),
        "after_ready_p50_s": pct(after, 0.5) if after else None,
        "after_ready_p90_s": pct(after, 0.9) if after else None,
        "in_doubt_waits": sum(1 for a in after if a > 30),
        "restart_to_ready_s": round(ready_s, 2),
        "kill_to_all_answered_s": round(done, 2),
        "ready_to_all_answered_s": round(done - ready_s, 2),
        "answered": len(recipients),
        "answered_twice": sum(1 for c in recipients.values() if c > 1),
        "in_doubt_marked_unknown": unknown(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--e2e", type=int, default=200)
    parser.add_argument("--outbox", type=int, default=1200)
    parser.add_argument("--kill", type=int, default=300)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--only",
        default="intake,split,single,outbox",
        help="comma-separated parts to run: intake, split, single (with inbound-to-reply and "
        "kill -9), outbox",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    results: dict[str, Any] = {"database": args.database}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        def run(name: str, refuse_every: int = 0, **env: str) -> Stack:
            folder = workdir / name
            folder.mkdir()
            stack = Stack(folder, database(folder))
            stack.env.update(env)
            stack.start_all(refuse_every=refuse_every)
            return stack

        databases: list[str] = []

        def database(folder: Path) -> str:
            if args.database == "sqlite":
                return f"sqlite:///{folder / 'concierge.db'}"
            from sqlalchemy import create_engine, text

            name = f"concierge_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            databases.append(name)
            return f"{PG_SERVER}/{name}"

        try:
            # 1a. Intake alone: the server only takes webhooks (channel_dispatch = false).
            if "intake" in parts:
                stack = run("intake", CONCIERGE_CHANNEL_DISPATCH="false")
                try:
                    channel = stack.connect()
                    results["intake"] = [
                        acknowledgement(stack, channel, args.seconds, c, i * 1_000_000, False)
                        for i, c in enumerate((2, 4, 8, 16))
                    ]
                    print("intake:", results["intake"], flush=True)
                finally:
                    stack.stop()
            # 1b. Intake beside a worker process; 1c. one process doing both (the default).
            for name, env in (
                ("split", {"CONCIERGE_CHANNEL_DISPATCH": "false"}),
                ("single", {}),
            ):
                if name not in parts:
                    continue
                stack = run(name, **env)
                try:
                    if name == "split":
                        stack.start_worker()
                    channel = stack.connect()
                    results[name] = acknowledgement(
                        stack, channel, args.seconds, args.connections, 0, drain=True
                    )
                    print(f"{name}:", results[name], flush=True)
                    if name == "single":
                        results["inbound_to_reply"] = asyncio.run(
                            inbound_to_reply(stack, channel, args.e2e)
                        )
                        print("inbound to reply:", results["inbound_to_reply"], flush=True)
                        results["kill_9"] = kill_recovery(stack, channel, args.kill)
                        print("kill -9:", results["kill_9"], flush=True)
                finally:
                    stack.stop()
            # 2. The outbox under 429s: a fake that refuses every 20th send.
            if "outbox" in parts:
                stack = run("outbox", refuse_every=20)
                try:
                    results["outbox"] = outbox(stack, args.outbox, 80.0)
                    print("outbox:", results["outbox"], flush=True)
                finally:
                    stack.stop()
        finally:
            if databases:
                from sqlalchemy import create_engine, text

                admin = create_engine(PG_SERVER + "/postgres", isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    for name in databases:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    path = save(f"channels_{args.database}", results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
