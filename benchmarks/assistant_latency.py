"""Where the time of one assistant turn goes, with the embedded model.

    .venv/bin/python benchmarks/assistant_latency.py [--rounds 2]

Seeds the demo business (Acme Outfitters: policies, FAQ, catalogue) in a fresh SQLite
database, then asks its assistant a fixed list of customer questions through the real reply
pipeline (``Runtime.reply``, in process, the embedded Gemma 3 270M and MiniLM), one at a time,
each in a new conversation. Reports the median and p95 of each step: loading the assistant
and the conversation, retrieval (query embedding + hybrid search), prompt building, the model
(time to first token and whole generation), storage, and the whole turn.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT, save

QUESTIONS = [
    "How long do I have to return a jacket?",
    "How much does express shipping cost?",
    "Do you have a physical shop?",
    "What is the warranty on tents?",
    "Which payment methods do you accept?",
    "How should I wash my waterproof jacket?",
    "How long does standard shipping take to Norway?",
    "Can I cancel my order?",
    "Is the Ridge jacket waterproof?",
    "Which sleeping bag is warm enough for winter?",
]
STEPS = ("load_ms", "retrieval_ms", "prompt_ms", "first_token_ms", "model_ms", "storage_ms")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2)}


async def run(rounds: int) -> dict[str, Any]:
    from concierge import demo
    from concierge.app import Concierge
    from concierge.assistants.events import Completed, Delta, Inbound
    from concierge.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            models_dir=ROOT / "data" / "models",
            admin_key="sk-cc-bench-admin-not-used-0123456789",
        )
        app = Concierge(settings, entry_points=False)
        await app.startup()
        try:
            seeded = await demo.seed(app.knowledge)
            samples: dict[str, list[float]] = {s: [] for s in (*STEPS, "total_ms")}
            tokens: list[int] = []
            # One warm-up turn: model weights paged in, index built.
            async for _ in app.runtime.reply(
                Inbound(seeded.org_id, demo.ASSISTANT, "api", "warm-up", "hello")
            ):
                pass
            for r in range(rounds):
                for i, question in enumerate(QUESTIONS):
                    inbound = Inbound(seeded.org_id, demo.ASSISTANT, "api", f"u{r}-{i}", question)
                    started = time.perf_counter()
                    first: float | None = None
                    done: Completed | None = None
                    async for event in app.runtime.reply(inbound):
                        if isinstance(event, Delta) and first is None:
                            first = (time.perf_counter() - started) * 1000
                        elif isinstance(event, Completed):
                            done = event
                    assert done is not None and done.reply is not None
                    timings = dict(done.timings)
                    timings["first_token_ms"] = first or timings["total_ms"]
                    for step in samples:
                        samples[step].append(timings.get(step, 0.0))
                    tokens.append(done.reply.completion_tokens)
        finally:
            await app.shutdown()
    return {
        "turns": len(tokens),
        "completion_tokens_p50": statistics.median(tokens),
        "steps": {step: summary(values) for step, values in samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="Times the question list is asked.")
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    path = save("assistant_latency", result)
    print(f"turns: {result['turns']}, completion tokens p50 {result['completion_tokens_p50']}")
    for step, figures in result["steps"].items():
        print(f"  {step:16s} p50 {figures['p50']:9.2f}   p95 {figures['p95']:9.2f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
