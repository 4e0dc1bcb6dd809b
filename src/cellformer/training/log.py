"""``log.csv``: one row of metrics per finished epoch, kept consistent with the checkpoints on resume."""

from __future__ import annotations

import csv
from pathlib import Path

from cellformer.runs import LOG_COLUMNS as COLUMNS


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
