"""Embedding speed and fidelity of the embedded all-MiniLM-L6-v2 (NumPy, no torch).

    .venv/bin/python benchmarks/embeddings.py [--sentences 2048] [--torch-python PATH]

Sentences: half from the `instruction` column of ../shared/data/bitext-support/support.csv
(customer questions), half titles from ../shared/data/scifact/corpus.jsonl; without that
folder, generated sentences. Throughput is sentences/s at batch 32 on this machine's cores,
median of 3 passes.
Fidelity is the cosine to sentence-transformers' vectors in tests/fixtures/minilm_reference.npz.
With --torch-python (a Python that has torch and sentence-transformers, for example the one
scripts/make_minilm_reference.py was run with), the same sentences are timed with
sentence-transformers on the CPU for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from harness import ROOT, save

SHARED = ROOT.parent / "shared" / "data"
TORCH_SNIPPET = """
import json, sys, time, statistics, torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads({threads})
sentences = json.load(open(sys.argv[1]))
model = SentenceTransformer(sys.argv[2], device="cpu")
model.encode(sentences[:64], batch_size=32)
times = []
for _ in range(3):
    t = time.perf_counter()
    model.encode(sentences, batch_size=32)
    times.append(time.perf_counter() - t)
print(len(sentences) / statistics.median(times))
"""


def sentences(n: int) -> tuple[list[str], str]:
    out: list[str] = []
    support = SHARED / "bitext-support" / "support.csv"
    corpus = SHARED / "scifact" / "corpus.jsonl"
    if support.exists() and corpus.exists():
        with support.open(newline="") as fh:
            out += [row["instruction"] for row in csv.DictReader(fh)][: n - n // 2]
        with corpus.open() as fh:
            out += [json.loads(line)["title"] for line in fh][: n // 2]
        source = "half bitext-support instructions, half SciFact titles"
    else:
        print(f"{SHARED} not found: using generated sentences")
        words = [
            "order",
            "return",
            "shipping",
            "refund",
            "parcel",
            "invoice",
            "size",
            "colour",
            "warranty",
            "store",
        ]
        out = [
            " ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 12)) for i in range(n)
        ]
        source = "generated"
    return out[:n], source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=2048)
    parser.add_argument("--torch-python")
    args = parser.parse_args()
    from concierge.models.assets import minilm_dir
    from concierge.models.minilm import BertEncoder

    texts, source = sentences(args.sentences)
    model_dir = minilm_dir(ROOT / "data" / "models")
    encoder = BertEncoder(model_dir)
    encoder.encode(texts[:64], 32)  # warm-up
    times = []
    tokens = 0
    for _ in range(3):
        start = time.perf_counter()
        _, tokens = encoder.encode(texts, 32)
        times.append(time.perf_counter() - start)
    numpy_rate = len(texts) / statistics.median(times)

    ref = np.load(ROOT / "tests" / "fixtures" / "minilm_reference.npz")
    vectors, _ = encoder.encode([str(s) for s in ref["sentences"]], 32)
    expected = ref["vectors"] / np.linalg.norm(ref["vectors"], axis=1, keepdims=True)
    cosines = (vectors * expected).sum(axis=1)

    torch_rate = None
    if args.torch_python:
        data = Path(ROOT / "benchmarks" / "results" / "embedding_sentences.json")
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text(json.dumps(texts))
        result = subprocess.run(
            [
                args.torch_python,
                "-c",
                TORCH_SNIPPET.format(threads=os.cpu_count() or 2),
                str(data),
                str(model_dir),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        torch_rate = float(result.stdout.strip().splitlines()[-1])

    lines = [
        f"Sentences: {len(texts)} ({source}), {tokens} tokens, batch 32, {os.cpu_count()} cores.",
        "",
        "| implementation | sentences/s | cosine to reference (min / mean) |",
        "|---|---|---|",
        f"| NumPy (Concierge) | {numpy_rate:.0f} | {cosines.min():.7f} / {cosines.mean():.7f} |",
    ]
    if torch_rate:
        lines.append(f"| sentence-transformers, torch CPU | {torch_rate:.0f} | (the reference) |")
    summary = "\n".join(lines)
    print(summary)
    save(
        "embeddings",
        {
            "numpy_sentences_per_s": numpy_rate,
            "torch_sentences_per_s": torch_rate,
            "cosine_min": float(cosines.min()),
            "cosine_mean": float(cosines.mean()),
            "sentences": len(texts),
            "tokens": tokens,
            "source": source,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
