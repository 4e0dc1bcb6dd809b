"""``log.csv``: one row of metrics per finished epoch, kept consistent with the checkpoints on resume."""

from __future__ import annotations

import csv
from pathlib import Path

from cellformer.runs import LOG_COLUMNS as COLUMNS
from cellformer.text import plural


class EpochLog:
    """Append epoch rows to ``path``; rows from epochs a resumed run will redo are dropped first."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def start(self, completed_epochs: int) -> None:
        """Keep the header and the rows of the first ``completed_epochs`` epochs only."""
        rows = [row for row in self.read() if int(row["epoch"]) <= completed_epochs]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def __call__(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, COLUMNS).writerow(
                {k: ("" if row.get(k) is None else _fmt(row[k])) for k in COLUMNS}
            )
            handle.flush()


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def best_epoch(rows: list[dict[str, str]], monitor: str) -> tuple[int, float] | None:
    """``(epoch, value)`` of the best ``monitor`` value in ``log.csv`` rows (first of equals), or ``None``."""
    scored = [(int(row["epoch"]), float(row[monitor])) for row in rows if row.get(monitor)]
    if not scored:
        return None
    lower = monitor.endswith("loss")
    return (min if lower else max)(scored, key=lambda item: item[1])


def summary_line(out: Path, result: dict, rows: list[dict[str, str]]) -> str:
    """The end-of-training line: epochs, whether it stopped early, the best epoch and its value."""
    text = f"trained {plural(len(rows), 'epoch')}"
    if result.get("stopped_early"):
        text += " (stopped early)"
    monitor = result.get("monitor")
    best = best_epoch(rows, monitor) if monitor else None
    if best is None:
        text += "; no validation cells: the last epoch's model is kept"
    else:
        value = result.get(f"best_{monitor}")
        text += f"; best epoch {best[0]} ({monitor} {best[1] if value is None else value:.4f})"
    return f"{text}; run directory {out}"
