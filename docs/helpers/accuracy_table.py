"""Markdown tables from the JSON lines ``bench/accuracy.py --record`` writes (docs/accuracy.md).

``python docs/helpers/accuracy_table.py docs/accuracy_runs.jsonl [--split val]``: one row per
configuration (in the order first run), one column per dataset with the transformer's macro-F1
(mean over its seeds) and, in the header, the logreg baseline's on the same cells; then the training
wall time per dataset in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ORDER = ("bladder", "pbmc68k", "pancreas", "kidney", "cbmc")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("record", type=Path)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict]] = {}
    logreg: dict[str, float] = {}
    for line in args.record.read_text().splitlines():
        record = json.loads(line)
        if record["split"] != args.split:
            continue
        by_dataset = rows.setdefault(record["label"], {})
        if record["dataset"] in by_dataset:  # more seeds of the same configuration
            by_dataset[record["dataset"]]["transformer"] += record["transformer"]
        else:
            by_dataset[record["dataset"]] = record
        logreg[record["dataset"]] = record["logreg"]["macro_f1"]
    datasets = [d for d in ORDER if d in logreg]
    head = " | ".join(f"{d} (logreg {logreg[d]:.3f})" for d in datasets)
    print(f"| configuration | {head} | training s ({', '.join(datasets)}) |")
    print("| --- |" + " ---: |" * len(datasets) + " --- |")
    for label, by_dataset in rows.items():
        cells, seconds = [], []
        for d in datasets:
            record = by_dataset.get(d)
            if record is None:
                cells.append("")
                seconds.append("")
                continue
            f1 = [run["macro_f1"] for run in record["transformer"]]
            text = f"{statistics.mean(f1):.3f}" + (f" ± {statistics.stdev(f1):.3f}" if len(f1) > 1 else "")
            cells.append(text)
            seconds.append(f"{statistics.mean(run['train_seconds'] for run in record['transformer']):.0f}")
        print(f"| {label} | {' | '.join(cells)} | {' / '.join(seconds)} |")


if __name__ == "__main__":
    main()
