"""The embedded model through the gateway vs. llama-cpp-python called directly.

    .venv/bin/python benchmarks/embedded_llm.py [--runs 5] [--max-tokens 128]

Same GGUF (the packaged Gemma 3 270M), same context, threads, batch size and sampling
(temperature 0), same prompt text. Each run starts with a different number, so neither side
reuses llama.cpp's prompt cache. Direct: `Llama.create_completion(stream=True)`. Gateway:
`concierge serve` and a streaming `POST /v1/completions` read over HTTP. Reported: time to first
token, prompt processing tokens/s (prompt tokens / time to first token), generation tokens/s
(tokens after the first / time after the first), medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import httpx
from harness import ROOT, free_port, save, server

KEY = "sk-cc-benchmark-admin-key-0123456789"
CTX, BATCH = 2048, 512
THREADS = os.cpu_count() or 2
TEXT = (
    "The history of the small mountain village goes back many centuries. Farmers grew barley "
    "and kept goats on the steep slopes, and every summer traders came over the pass. "
) * 6


def prompt(run: int) -> str:
    return f"Chapter {run + 1}. {TEXT}\nThe next morning"


def direct(runs: int, max_tokens: int) -> list[dict[str, float]]:
    from llama_cpp import Llama

    from concierge.models.assets import default_gguf

    path = default_gguf(ROOT / "data" / "models")
    llm = Llama(model_path=str(path), n_ctx=CTX, n_threads=THREADS, n_batch=BATCH, verbose=False)
    out = []
    for run in range(runs + 1):  # the first run warms up
        tokens = llm.tokenize(prompt(run).encode(), add_bos=True, special=True)
        start = time.perf_counter()
        first = None
        n = 0
        for chunk in llm.create_completion(
            tokens, max_tokens=max_tokens, temperature=0, top_p=0.95, stream=True
        ):
            if chunk["choices"][0]["text"]:
                n += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if run:
            out.append(measure(len(tokens), n, start, first or end, end))
    llm.close()
    return out


def gateway(runs: int, max_tokens: int) -> list[dict[str, float]]:
    port = free_port()
    env = {
        "CONCIERGE_DATA_DIR": tempfile.mkdtemp(prefix="bench-llm-"),
        "CONCIERGE_MODELS_DIR": str(ROOT / "data" / "models"),
        "CONCIERGE_PORT": str(port),
        "CONCIERGE_ADMIN_KEY": KEY,
        "CONCIERGE_EMBEDDING_ENABLED": "false",
        "CONCIERGE_LLM_CONTEXT_LENGTH": str(CTX),
        "CONCIERGE_LLM_THREADS": str(THREADS),
        "CONCIERGE_LLM_BATCH_SIZE": str(BATCH),
        "CONCIERGE_LOG_LEVEL": "warning",
    }
    out = []
    with (
        server(
            [sys.executable, "-m", "concierge", "serve"], f"http://127.0.0.1:{port}/readyz", env
        ),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=120,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as client,
    ):
        for run in range(runs + 1):
            body = {
                "model": "gemma-3-270m",
                "prompt": prompt(run),
                "max_tokens": max_tokens,
                "temperature": 0,
                "top_p": 0.95,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            start = time.perf_counter()
            first = None
            n = 0
            usage = {}
            with client.stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if data.get("usage"):
                        usage = data["usage"]
                    if data["choices"] and data["choices"][0]["text"]:
                        n += 1
                        if first is None:
                            first = time.perf_counter()
            end = time.perf_counter()
            if run:
                out.append(measure(usage["prompt_tokens"], n, start, first or end, end))
    return out


def measure(
    prompt_tokens: int, chunks: int, start: float, first: float, end: float
) -> dict[str, float]:
    return {
        "prompt_tokens": prompt_tokens,
        "generated_chunks": chunks,
        "ttft_ms": (first - start) * 1000,
        "prompt_tok_s": prompt_tokens / (first - start),
        "gen_tok_s": (chunks - 1) / (end - first) if chunks > 1 else 0.0,
    }


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    d = direct(args.runs, args.max_tokens)
    g = gateway(args.runs, args.max_tokens)
    lines = [
        "| path | prompt tokens | TTFT ms | prompt tok/s | generation tok/s |",
        "|---|---|---|---|---|",
    ]
    for name, rows in (("llama-cpp-python direct", d), ("through the gateway (HTTP, SSE)", g)):
        lines.append(
            f"| {name} | {median(rows, 'prompt_tokens'):.0f} | {median(rows, 'ttft_ms'):.1f} | "
            f"{median(rows, 'prompt_tok_s'):.0f} | {median(rows, 'gen_tok_s'):.1f} |"
        )
    ratio = median(g, "gen_tok_s") / median(d, "gen_tok_s")
    added = median(g, "ttft_ms") - median(d, "ttft_ms")
    lines.append("")
    lines.append(
        f"Generation speed through the gateway: {ratio:.1%} of direct; "
        f"time to first token: {added:+.1f} ms."
    )
    summary = "\n".join(lines)
    print(summary)
    save(
        "embedded_llm",
        {
            "direct": d,
            "gateway": g,
            "summary": summary,
            "threads": THREADS,
            "context": CTX,
            "batch": BATCH,
            "max_tokens": args.max_tokens,
        },
    )


if __name__ == "__main__":
    main()
