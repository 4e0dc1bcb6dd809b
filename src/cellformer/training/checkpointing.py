"""Checkpoint files written atomically, so a process killed mid-write never leaves a corrupt ``last.ckpt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cellformer.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
        except RuntimeError as exc:  # torch.save reports a failed write (e.g. disk full) as RuntimeError
            raise _write_error(exc, path) from exc


def _write_error(exc: RuntimeError, path: Path) -> OSError:
    """The OSError a failed checkpoint write is (ENOSPC when the disk is all but full)."""
    import errno
    import shutil

    try:
        full = shutil.disk_usage(path.parent).free < 64 * 2**20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    first = (str(exc).strip().splitlines() or ["write failed"])[0]
    return OSError(errno.EIO, f"torch.save failed ({first})", str(path))


def completed_epochs(checkpoint: Path) -> int:
    """How many epochs a Lightning checkpoint saved at an epoch's end has finished."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state["epoch"]) + 1


def model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The :class:`CellTransformer` weights inside a checkpoint of :class:`CellClassifierModule`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v.contiguous() for k, v in state.items() if k.startswith("model.")}
