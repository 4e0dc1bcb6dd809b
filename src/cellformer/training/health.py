"""Training health: stop at the first non-finite loss or gradient instead of training on NaN.

Gradients are checked on the device every optimizer step (no synchronisation) and the result is read
every :data:`CHECK_EVERY` steps and at each epoch's end, before its checkpoint is written, so the last
checkpoint on disk is always one of a healthy epoch. Under DDP the gradients are already averaged over
the processes, and the epoch metrics synchronised, so every process stops at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cellformer.errors import ConfigError

if TYPE_CHECKING:
    import torch

CHECK_EVERY = 25  # optimizer steps between two looks at the gradient flag (each look is a device sync)


class TrainingDiverged(ConfigError):
    """The loss or the gradients became NaN or infinite: training cannot go on (usually too high an lr)."""

    def __init__(self, what: str, epoch: int, step: int | None = None) -> None:
        self.what = what
        self.epoch = epoch  # 1-based epoch in which it was found
        self.step = step  # first optimizer step with non-finite gradients, when known
        at = f"epoch {epoch}" + ("" if step is None else f" (optimizer step {step})")
        super().__init__(f"training diverged: {what} became NaN or infinite in {at}")


class GradientWatch:
    """Notes on the device whether a step's gradients are finite; :meth:`check` reads the note."""

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # global step of the first bad step, -1 while none

    def note(self, parameters: Iterable[torch.nn.Parameter], step: int) -> None:
        import torch

        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        bad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=bad.device)
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)

    def check(self, epoch: int) -> None:
        """Raise :class:`TrainingDiverged` if a noted step had non-finite gradients."""
        if self._first_bad is not None:
            step = int(self._first_bad)
            if step >= 0:
                raise TrainingDiverged("the gradients", epoch, step)


def check_epoch(row: dict[str, float], epoch: int) -> None:
    """Raise :class:`TrainingDiverged` if an epoch's training or validation loss is not finite."""
    for key, what in (("train_loss", "the training loss"), ("val_loss", "the validation loss")):
        if key in row and not math.isfinite(float(row[key])):
            raise TrainingDiverged(what, epoch)


def diverged_message(exc: TrainingDiverged, out, lr: float, kept: str | None) -> str:
    """The one line a user sees: what happened, what was kept, what to do."""
    keep = (
        f"the last checkpoint of a healthy epoch is kept ({kept})"
        if kept
        else "no checkpoint of a healthy epoch was written"
    )
    return (
        f"{exc}; the run {out} is marked 'diverged' and has no usable model ({keep}); lower the learning "
        f"rate (--lr, now {lr:g}; {_lower_lr(lr)}) and train again into a new --out"
    )


def _lower_lr(lr: float) -> str:
    """A concrete lower learning rate to try: a tenth, or the default when far above it."""
    from cellformer.config import TrainConfig

    default = TrainConfig().lr
    return f"e.g. --lr {lr / 10:g}" if lr <= 100 * default else f"the default is {default:g}"
