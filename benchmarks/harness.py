"""Shared benchmark plumbing: start servers, wait for them, run wrk, parse its figures."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, str | int]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


@contextmanager
def server(
    cmd: list[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[None]:
    """Run ``cmd`` until the block ends; wait until ``ready_url`` answers 200 first."""
    with tempfile.TemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while not _ready(ready_url, headers):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    why = "exited early" if proc.poll() is not None else f"not ready in {timeout}s"
                    raise RuntimeError(f"{cmd[0]} {why}:\n{log.read()[-3000:]}")
                time.sleep(0.25)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ready(url: str, headers: dict[str, str] | None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    body: dict[str, object],
    key: str | None,
    connections: int,
    seconds: int,
    threads: int = 1,
) -> WrkResult:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    script = "wrk.method = 'POST'\n"
    script += f"wrk.body = {json.dumps(json.dumps(body))}\n"
    for name, value in headers.items():
        script += f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n"
    return _run_wrk(script, url, connections, seconds, min(threads, connections))


def wrk_lines(url: str, lines: Path, connections: int, seconds: int) -> WrkResult:
    """POST each line of ``lines`` in turn (``<X-Hub-Signature-256>\t<JSON body>``: webhook
    calls, each signed), cycling; one wrk thread, so no line is sent twice before the end."""
    script = f"""
local items = {{}}
for line in io.lines({json.dumps(str(lines))}) do
  local tab = line:find("\\t", 1, true)
  items[#items + 1] = {{line:sub(1, tab - 1), line:sub(tab + 1)}}
end
local i = 0
request = function()
  i = i + 1
  if i > #items then i = 1 end
  local headers = {{["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = items[i][1]}}
  return wrk.format("POST", nil, headers, items[i][2])
end
"""
    return _run_wrk(script, url, connections, seconds, 1)


def _run_wrk(script: str, url: str, connections: int, seconds: int, threads: int) -> WrkResult:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--latency",
                "--timeout",
                "30s",
                "-s",
                fh.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(fh.name)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in lat or "99" not in lat:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return WrkResult(rps, _ms(lat["50"]), _ms(lat["99"]), total, errors)


def save(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(
        json.dumps({"machine": machine(), **data}, indent=2, default=lambda o: asdict(o))
    )
    return path
