"""Shared by the integrity tests: tiny settings and the one-line error check."""

from __future__ import annotations

# tests/training/training_helpers.py TINY, one epoch: the plumbing is tested, not accuracy
TINY = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    dropout=0.1,
    max_length=64,
    batch_size=64,
    max_epochs=1,
    lr=1e-2,
    warmup_fraction=0.1,
    progress_bar=False,
)
PREPARE = dict(max_genes=32, input_normalized=True)  # pbmc68k_reduced holds log1p-normalized values


def error_line(code: int, err: str) -> str:
    """The one ``error:`` line of a refused command (no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]
