"""Support quality on Bitext: does the assistant pipeline put the right answer in front of the
model?

    .venv/bin/python benchmarks/support_quality.py [--limit N] [--k 3]

Reads ../shared/data/bitext-support/support.csv (2,999 customer utterances, 27 intents); skips
with a message where it is absent. Builds a knowledge base with one help article per intent
(the first response written for that intent, titled like a help-centre page: "Cancel order"),
then sends every utterance through the real reply pipeline (``Runtime.reply``: load, retrieval,
prompt building, storage) of an assistant that answers from that knowledge base (its handoff
tool off, so that every utterance reaches retrieval), and scores
the passages the pipeline put into the prompt, in order: accuracy@1 (the first is the
utterance's intent) and accuracy@3. The chat model is a null model registered through the
``register_models`` hook (it answers "ok" at once), because what is measured is the context
the pipeline gives a model, not a model's wording. Target: accuracy@3 >= 0.90. Also reported:
how the platform's "asks for a person" detector does on the contact_human_agent utterances and
on all the others.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from harness import ROOT, save

DATA = ROOT.parent / "shared" / "data" / "bitext-support" / "support.csv"


def title_of(intent: str) -> str:
    return intent.replace("_", " ").capitalize()


class NullModelPlugin:
    """A chat model that answers "ok" immediately (the benchmark measures the context)."""

    def __init__(self) -> None:
        from concierge.hookspecs import hookimpl
        from concierge.models.base import Finish, GenerationRequest, Model, TextDelta, Usage

        class NullModel(Model):
            model_id = "null"
            supports_tools = True

            async def execute(
                self, request: GenerationRequest
            ) -> AsyncGenerator[TextDelta | Finish, None]:
                yield TextDelta("ok")
                yield Finish("stop", Usage(0, 1))

        self.model = NullModel()

        @hookimpl
        def register_models(register: Callable[[Any], None], settings: Any) -> None:
            register(self.model)

        self.register_models = register_models


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from concierge.app import Concierge
    from concierge.assistants import definitions
    from concierge.assistants.definitions import AssistantConfig
    from concierge.assistants.events import Completed, Inbound
    from concierge.config import Settings
    from concierge.knowledge import documents
    from concierge.knowledge.corpus import CorpusRecord
    from concierge.knowledge.service import ingest_now
    from concierge.knowledge.sources import Source

    rows = list(csv.DictReader(DATA.open(encoding="utf-8")))
    articles: dict[str, str] = {}
    for row in rows:
        articles.setdefault(row["intent"], row["response"])
    questions = rows[: args.limit] if args.limit else rows

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            llm_enabled=False,
            models_dir=ROOT / "data" / "models",
            admin_key="sk-cc-bench-admin-not-used-0123456789",
        )
        app = Concierge(settings, plugins=[NullModelPlugin()], entry_points=False)
        await app.startup()
        try:
            kb = await app.knowledge.create(1, "help-centre")
            started = time.perf_counter()
            sources = [
                Source(
                    intent,
                    record=CorpusRecord(0, intent, title_of(intent), text, {"intent": intent}),
                    metadata={"intent": intent},
                )
                for intent, text in articles.items()
            ]
            await ingest_now(app.knowledge, kb, sources)
            ingest_s = time.perf_counter() - started
            config = AssistantConfig(
                instructions="You are a customer support assistant.",
                model="null",
                knowledge_bases=[kb.id],
                retrieval_k=args.k,
                # Every utterance goes to retrieval here, also those asking for a person
                # (which a deployed assistant hands off: scored separately below).
                builtin_tools=["search_knowledge", "remember"],
            )
            await app.db.write(lambda conn: definitions.create(conn, 1, "support", config))
            listed = await app.db.read(lambda conn: documents.list_page(conn, kb, limit=100)[0])
            by_document = {doc.id: doc.external_id for doc in listed}

            hits_at: Counter[int] = Counter()
            per_intent: dict[str, list[int]] = defaultdict(list)
            latencies: list[float] = []
            retrieval: list[float] = []
            for i, row in enumerate(questions):
                inbound = Inbound(
                    org_id=1,
                    assistant="support",
                    channel="api",
                    external_id=f"user-{i}",
                    text=row["instruction"],
                )
                t0 = time.perf_counter()
                completed = None
                async for event in app.runtime.reply(inbound):
                    if isinstance(event, Completed):
                        completed = event
                latencies.append((time.perf_counter() - t0) * 1000)
                assert completed is not None
                retrieval.append(completed.timings["retrieval_ms"])
                ranked = [by_document[c["document_id"]] for c in completed.citations]
                rank = ranked.index(row["intent"]) + 1 if row["intent"] in ranked else 0
                hits_at[rank] += 1
                per_intent[row["intent"]].append(rank)
                if (i + 1) % 500 == 0:
                    print(f"  {i + 1}/{len(questions)} asked", file=sys.stderr)
        finally:
            await app.shutdown()

    n = len(questions)
    from concierge.assistants.intents import wants_human

    asks = [wants_human(r["instruction"]) for r in questions]
    human_rows = [
        a for a, r in zip(asks, questions, strict=True) if r["intent"] == "contact_human_agent"
    ]
    other_rows = [
        a for a, r in zip(asks, questions, strict=True) if r["intent"] != "contact_human_agent"
    ]

    def accuracy(k: int) -> float:
        return sum(c for r, c in hits_at.items() if 1 <= r <= k) / n

    worst = sorted(
        (
            (sum(1 for r in ranks if 1 <= r <= 3) / len(ranks), intent)
            for intent, ranks in per_intent.items()
        )
    )[:5]
    return {
        "questions": n,
        "intents": len(articles),
        "k": args.k,
        "accuracy_at_1": round(accuracy(1), 4),
        "accuracy_at_3": round(accuracy(min(3, args.k)), 4),
        "ingest_seconds": round(ingest_s, 2),
        "turn_ms_p50": round(statistics.median(latencies), 2),
        "turn_ms_p95": round(statistics.quantiles(latencies, n=20)[-1], 2),
        "retrieval_ms_p50": round(statistics.median(retrieval), 2),
        "handoff_detector": {
            "recall_on_contact_human_agent": round(sum(human_rows) / max(len(human_rows), 1), 4),
            "false_positive_rate_elsewhere": round(sum(other_rows) / max(len(other_rows), 1), 4),
        },
        "weakest_intents_at_3": [{"intent": i, "accuracy_at_3": round(a, 3)} for a, i in worst],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="Ask only the first N utterances.")
    parser.add_argument("--k", type=int, default=3, help="Passages retrieved per message.")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent (the shared benchmark data is not beside the repo)")
        return
    result = asyncio.run(run(args))
    path = save("support_quality", result)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
