"""Embedding speed and fidelity of the embedded all-MiniLM-L6-v2 (ONNX Runtime, no torch).

    .venv/bin/python benchmarks/embeddings.py [--sentences 2048] [--passages 512]
        [--torch-python PATH] [--baseline-rev GIT_REV]

Two workloads. Sentences: half from the `instruction` column of
../shared/data/bitext-support/support.csv (customer questions), half titles from
../shared/data/scifact/corpus.jsonl. Passages: SciFact title + abstract, as knowledge bases
embed them (most are cut at the model's 256-token window). Without that folder, generated
text. Throughput is texts/s and tokens/s at batch 32 on this machine's cores, median of 3 passes.
Fidelity is the cosine to sentence-transformers' vectors in tests/fixtures/minilm_reference.npz.
With --torch-python (a Python that has torch and sentence-transformers, for example the one
scripts/make_minilm_reference.py was run with), the same texts are timed with
sentence-transformers on the CPU for comparison. With --baseline-rev, the encoder of that git
revision (src/concierge/models/minilm.py) is timed too, in the same run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import ROOT, save

SHARED = ROOT.parent / "shared" / "data"
TORCH_SNIPPET = """
import json, sys, time, statistics, torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads({threads})
model = SentenceTransformer(sys.argv[2], device="cpu")
for texts in json.load(open(sys.argv[1])):
    model.encode(texts[:64], batch_size=32)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model.encode(texts, batch_size=32)
        times.append(time.perf_counter() - t)
    print(len(texts) / statistics.median(times))
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


def passages(n: int) -> list[str]:
    corpus = SHARED / "scifact" / "corpus.jsonl"
    if not corpus.exists():
        words = ["patients", "treated", "with", "the", "drug", "showed", "reduced", "relapse"]
        return [" ".join(words[(i + j) % len(words)] for j in range(150)) for i in range(n)]
    with corpus.open() as fh:
        docs = [json.loads(line) for _, line in zip(range(n), fh, strict=False)]
    return [f"{d['title']}\n{d['text']}" for d in docs]


def timed(encoder: Any, texts: list[str]) -> tuple[float, float]:
    """Texts/s and tokens/s, median of 3 passes after a warm-up."""
    encoder.encode(texts[:64], 32)
    times = []
    tokens = 0
    for _ in range(3):
        start = time.perf_counter()
        _, tokens = encoder.encode(texts, 32)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return len(texts) / median, tokens / median


def baseline_encoder(rev: str, model_dir: Path) -> Any:
    """The BertEncoder of git revision ``rev``, loaded from its source."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/concierge/models/minilm.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "minilm_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("minilm_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BertEncoder(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=2048)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--torch-python")
    parser.add_argument("--baseline-rev", help="also time the encoder of this git revision")
    args = parser.parse_args()
    from concierge.models.assets import minilm_dir
    from concierge.models.minilm import BertEncoder

    texts, source = sentences(args.sentences)
    long_texts = passages(args.passages)
    model_dir = minilm_dir(ROOT / "data" / "models")
    encoder = BertEncoder(model_dir)
    rates = {"Concierge (ONNX Runtime)": (timed(encoder, texts), timed(encoder, long_texts))}
    if args.baseline_rev:
        old = baseline_encoder(args.baseline_rev, model_dir)
        rates[f"Concierge at {args.baseline_rev}"] = (timed(old, texts), timed(old, long_texts))

    ref = np.load(ROOT / "tests" / "fixtures" / "minilm_reference.npz")
    vectors, _ = encoder.encode([str(s) for s in ref["sentences"]], 32)
    expected = ref["vectors"] / np.linalg.norm(ref["vectors"], axis=1, keepdims=True)
    cosines = (vectors * expected).sum(axis=1)

    if args.torch_python:
        data = Path(ROOT / "benchmarks" / "results" / "embedding_texts.json")
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text(json.dumps([texts, long_texts]))
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
        short_rate, long_rate = map(float, result.stdout.strip().splitlines()[-2:])
        tokens_short = sum(len(i) for i in encoder.tokenize(texts))
        tokens_long = sum(len(i) for i in encoder.tokenize(long_texts))
        rates["sentence-transformers, torch CPU"] = (
            (short_rate, short_rate * tokens_short / len(texts)),
            (long_rate, long_rate * tokens_long / len(long_texts)),
        )

    lines = [
        f"Sentences: {len(texts)} ({source}); passages: {len(long_texts)} SciFact title + "
        f"abstract; batch 32, {os.cpu_count()} cores, median of 3 passes.",
        "",
        "| implementation | sentences/s | passages/s | passage tokens/s |",
        "|---|---|---|---|",
    ]
    for name, ((s_rate, _), (p_rate, p_tokens)) in rates.items():
        lines.append(f"| {name} | {s_rate:.0f} | {p_rate:.1f} | {p_tokens:.0f} |")
    lines += ["", f"Cosine to the reference: min {cosines.min():.7f}, mean {cosines.mean():.7f}."]
    summary = "\n".join(lines)
    print(summary)
    save(
        "embeddings",
        {
            "rates": {
                name: {
                    "sentences_per_s": a[0],
                    "passages_per_s": b[0],
                    "passage_tokens_per_s": b[1],
                }
                for name, (a, b) in rates.items()
            },
            "cosine_min": float(cosines.min()),
            "cosine_mean": float(cosines.mean()),
            "sentences": len(texts),
            "passages": len(long_texts),
            "source": source,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
