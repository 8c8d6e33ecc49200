"""Precision and recall of the personal-data detector, per entity type.

Reads the labelled set ``benchmarks/data/pii_cases.jsonl`` (259 messages in 11 locales, 68 of
them hard negatives; see ``benchmarks/pii_dataset.py``), which the detector was tuned on, and
``benchmarks/data/pii_heldout.jsonl`` (30 messages written by hand afterwards, never tuned
on). A finding counts as correct when its
type and its exact text match a labelled entity of the message; anything else found is a false
positive, anything labelled and not found a false negative. Also times detection per message.

    .venv/bin/python benchmarks/pii_quality.py [--show-errors]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from concierge.governance.pii import Detector
from concierge.governance.policy import ENTITY_TYPES

CASES = Path(__file__).parent / "data" / "pii_cases.jsonl"
# Written by hand after the detector was tuned on CASES, and never tuned on.
HELD_OUT = Path(__file__).parent / "data" / "pii_heldout.jsonl"


def evaluate(path: Path, detector: Detector, show_errors: bool) -> None:
    cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    timings = []
    negatives_clean = 0
    negatives = 0
    for item in cases:
        started = time.perf_counter()
        found = detector.find(item["text"])
        timings.append((time.perf_counter() - started) * 1e6)
        expected = Counter((e["type"], e["value"]) for e in item["entities"])
        got = Counter((s.type, s.text) for s in found)
        for key in got | expected:
            hit = min(got[key], expected[key])
            tp[key[0]] += hit
            fp[key[0]] += got[key] - hit
            fn[key[0]] += expected[key] - hit
            if show_errors and got[key] != expected[key]:
                print(
                    f"  {item['locale']}: {key} expected {expected[key]} got {got[key]}: "
                    f"{item['text']!r}"
                )
        if not item["entities"]:
            negatives += 1
            negatives_clean += not found
    print(
        f"\n{path.name}: {len(cases)} messages, {len({c['locale'] for c in cases})} locales, "
        f"{negatives} without personal data ({negatives_clean} with nothing found)"
    )
    print(f"{'type':<12} {'labelled':>8} {'found':>6} {'precision':>9} {'recall':>7}")
    for kind in ENTITY_TYPES:
        labelled = tp[kind] + fn[kind]
        reported = tp[kind] + fp[kind]
        precision = tp[kind] / reported if reported else float("nan")
        recall = tp[kind] / labelled if labelled else float("nan")
        print(f"{kind:<12} {labelled:>8} {reported:>6} {precision:>9.3f} {recall:>7.3f}")
    all_tp, all_fp, all_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    print(
        f"{'all':<12} {all_tp + all_fn:>8} {all_tp + all_fp:>6} "
        f"{all_tp / max(1, all_tp + all_fp):>9.3f} {all_tp / max(1, all_tp + all_fn):>7.3f}"
    )
    print(
        f"detection time per message: median {statistics.median(timings):.0f} µs, "
        f"p95 {sorted(timings)[int(len(timings) * 0.95)]:.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()
    detector = Detector()
    detector.find("warm up +44 20 7946 0958")
    for path in (CASES, HELD_OUT):
        evaluate(path, detector, args.show_errors)


if __name__ == "__main__":
    main()
