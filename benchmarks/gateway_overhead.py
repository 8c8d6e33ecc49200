"""Gateway overhead: a mock OpenAI upstream, called directly, through Concierge, through LiteLLM.

    .venv/bin/python benchmarks/gateway_overhead.py [--seconds 10] [--no-litellm]

For non-streaming and streaming chat completions at 1, 32 and 256 concurrent connections, wrk
measures requests/s and latency p50/p99 against: the mock directly; Concierge (one worker,
SQLite, auth, rate-limit check, usage ledger, metrics all on) in front of it; and LiteLLM's proxy
(`litellm[proxy]` in .bench/litellm, made by benchmarks/setup-litellm; one worker, a master key,
no database) in front of the same mock. Overhead is the gateway's latency minus the direct
latency at the same concurrency.

Each gateway runs alone: the mock, then the mock and Concierge, then the mock and LiteLLM, so
no process takes CPU from another's measurement. wrk, the mock and the gateway share the
machine's cores, as they would on one box.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from harness import ROOT, WrkResult, free_port, save, server, wrk

KEY = "sk-cc-benchmark-admin-key-0123456789"
LITELLM = ROOT / ".bench" / "litellm" / "bin" / "litellm"
BODY = {
    "model": "mock-model",
    "messages": [{"role": "user", "content": "Hello there"}],
    "max_tokens": 20,
}
Results = dict[str, WrkResult]


def measure(
    name: str, url: str, key: str | None, levels: list[int], seconds: int, results: Results
) -> None:
    for stream in (False, True):
        body = {**BODY, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        for c in levels:
            wrk(url, body, key, c, 2)  # warm-up: connections, caches, JIT-free but lazy imports
            r = wrk(url, body, key, c, seconds)
            label = f"{'stream' if stream else 'json'}/c{c}/{name}"
            results[label] = r
            print(
                f"{label:24s} {r.requests_per_s:8.1f} req/s  p50 {r.p50_ms:8.3f} ms"
                f"  p99 {r.p99_ms:9.3f} ms  errors {r.errors}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 256])
    args = parser.parse_args()
    py = sys.executable
    mock_port, cc_port, ll_port = free_port(), free_port(), free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    upstreams = f'[{{"name": "mock", "base_url": "{mock}/v1", "models": ["mock-model"]}}]'
    cc_env = {
        "CONCIERGE_DATA_DIR": str(tmp),
        "CONCIERGE_PORT": str(cc_port),
        "CONCIERGE_ADMIN_KEY": KEY,
        "CONCIERGE_LLM_ENABLED": "false",
        "CONCIERGE_EMBEDDING_ENABLED": "false",
        "CONCIERGE_UPSTREAMS": upstreams,
        "CONCIERGE_LOG_LEVEL": "warning",
    }
    litellm = not args.no_litellm and LITELLM.exists()
    if not args.no_litellm and not litellm:
        print(f"LiteLLM not found at {LITELLM}; run benchmarks/setup-litellm first. Skipping it.")
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: mock-model\n    litellm_params:\n"
        f"      model: openai/mock-model\n      api_base: {mock}/v1\n      api_key: mock\n"
        f"general_settings:\n  master_key: {KEY}\n"
        "litellm_settings:\n  drop_params: true\n  set_verbose: false\n"
    )
    gateways: list[tuple[str, int, Callable[[], AbstractContextManager[None]]]] = [
        (
            "concierge",
            cc_port,
            lambda: server(
                [py, "-m", "concierge", "serve"], f"http://127.0.0.1:{cc_port}/readyz", cc_env
            ),
        )
    ]
    if litellm:
        gateways.append(
            (
                "litellm",
                ll_port,
                lambda: server(
                    [
                        str(LITELLM),
                        "--config",
                        str(config),
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    f"http://127.0.0.1:{ll_port}/health/liveliness",
                    {"LITELLM_LOG": "ERROR"},
                    timeout=180,
                ),
            )
        )
    results: Results = {}
    levels, seconds = args.concurrency, args.seconds
    mock_cmd = [py, "benchmarks/mock_upstream.py", "--port", str(mock_port)]
    with server(mock_cmd, f"{mock}/v1/models"):
        measure("direct", f"{mock}/v1/chat/completions", None, levels, seconds, results)
        for name, port, start in gateways:
            with start():
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                measure(name, url, KEY, levels, seconds, results)
    summary = summarise(results, levels, litellm)
    print(summary)
    save("gateway_overhead", {"results": results, "summary": summary, "seconds": seconds})


def summarise(results: Results, levels: list[int], litellm: bool) -> str:
    head = "| mode | clients | direct p50 / p99 ms | Concierge +p50 / +p99 ms | Concierge req/s |"
    if litellm:
        head += " LiteLLM +p50 / +p99 ms | LiteLLM req/s | overhead ratio | throughput ratio |"
    lines = [head, "|" + "---|" * (9 if litellm else 5)]
    for mode in ("json", "stream"):
        for c in levels:
            d = results[f"{mode}/c{c}/direct"]
            cc = results[f"{mode}/c{c}/concierge"]
            cc_over = cc.p50_ms - d.p50_ms
            row = (
                f"| {mode} | {c} | {d.p50_ms:.2f} / {d.p99_ms:.2f} | "
                f"{cc_over:+.2f} / {cc.p99_ms - d.p99_ms:+.2f} | {cc.requests_per_s:.0f} |"
            )
            if litellm:
                ll = results[f"{mode}/c{c}/litellm"]
                ll_over = ll.p50_ms - d.p50_ms
                row += (
                    f" {ll_over:+.2f} / {ll.p99_ms - d.p99_ms:+.2f} | {ll.requests_per_s:.0f} |"
                    f" {ll_over / max(cc_over, 1e-3):.1f}x |"
                    f" {cc.requests_per_s / ll.requests_per_s:.1f}x |"
                )
            lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
