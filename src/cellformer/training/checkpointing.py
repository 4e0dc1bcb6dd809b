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
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def completed_epochs(checkpoint: Path) -> int:
    """How many epochs a Lightning checkpoint saved at an epoch's end has finished."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state["epoch"]) + 1


def model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The :class:`CellTransformer` weights inside a checkpoint of :class:`CellClassifierModule`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v.contiguous() for k, v in state.items() if k.startswith("model.")}
