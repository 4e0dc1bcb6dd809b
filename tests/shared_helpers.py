"""Shared by every test folder (``tests/`` is on ``sys.path``: pytest puts the root conftest's folder there)."""

from __future__ import annotations

# A model small enough that a few epochs on ~1500 cells take seconds on a 2-core CPU.
TINY = dict(
    n_layers=1,
    members=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    dropout=0.1,
    max_length=64,
    batch_size=64,
    max_epochs=8,
    lr=1e-2,
    warmup_fraction=0.1,
    progress_bar=False,
)


def error_line(code: int, err: str) -> str:
    """The one ``error:`` line of a refused command (no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]
