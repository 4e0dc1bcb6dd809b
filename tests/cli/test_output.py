"""What commands print: one summary per command, per-epoch lines, plurals."""

from __future__ import annotations

import logging
from pathlib import Path

from cellformer.text import plural
from cellformer.training.log import best_epoch, summary_line
from cellformer.training.module import epoch_line


def test_epoch_and_summary_lines() -> None:
    row = {"epoch": 3, "train_loss": 0.51234, "val_loss": 0.61111, "val_macro_f1": 0.7321, "seconds": 4.12}
    assert epoch_line(row, 30) == "epoch 3/30: train loss 0.5123, val loss 0.6111, val macro-F1 0.732 (4.1 s)"
    assert epoch_line({"epoch": 1, "train_loss": 1.0, "seconds": 1.0}) == "epoch 1: train loss 1.0000 (1.0 s)"
    rows = [{"epoch": str(i), "val_loss": v, "val_macro_f1": f} for i, v, f in
            [(1, "0.9", "0.5"), (2, "0.7", "0.4"), (3, "0.7", "0.8")]]  # fmt: skip
    assert best_epoch(rows, "val_loss") == (2, 0.7) and best_epoch(rows, "val_macro_f1") == (3, 0.8)
    result = {"monitor": "val_macro_f1", "best_val_macro_f1": 0.8, "stopped_early": True}
    assert summary_line(Path("r"), result, rows) == (
        "trained 3 epochs (stopped early); best epoch 3 (val_macro_f1 0.8000); run directory r"
    )
    assert summary_line(Path("r"), {"monitor": None}, rows[:1]).startswith("trained 1 epoch; no validation")
    assert plural(1, "cell") == "1 cell" and plural(2, "class", "classes") == "2 classes"


def test_prepare_prints_one_summary(cli, bladder_path: Path, tmp_path: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO):
        code, _ = cli("prepare", bladder_path, "--out", tmp_path / "p", "--max-genes", "16")
    assert code == 0
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prepared ")]
    assert len(summaries) == 1 and "2100 cells" in summaries[0], summaries
    assert capsys.readouterr().out == ""
