"""Predicting with a transformer on several devices or nodes through Lightning's ``Trainer.predict``.

``cellformer predict --devices N --num-nodes M`` (``devices=`` / ``num_nodes=`` in Python). Lightning
starts and connects the processes (its DDP launcher runs the same command once per device; a scheduler
such as SLURM may start them instead) and this module only says what each one does with a chunk of cells:

- its share: process ``r`` of ``W`` takes the contiguous rows ``[r n / W, (r + 1) n / W)`` of a chunk of
  ``n`` cells (:func:`share_rows`; shares differ by at most one cell), which it reads, tokenizes and
  predicts (``predict_step``, length-bucketed batches) on its own device;
- the gathering: each per-cell array of a share is padded to the largest share and gathered with
  Lightning's ``all_gather``; the shares, joined in rank order, are the chunk's cells in input order.

Every process ends with every cell's outputs; the caller decides which one writes
(:attr:`DevicePredictor.is_global_zero`). One process (``devices * num_nodes == 1``) never gets here:
prediction then runs in-process, without a Trainer.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset

from cellformer.data.dataset import LengthBucketSampler, collate_tokens
from cellformer.errors import CellformerError, ConfigError
from cellformer.model import CellTransformer
from cellformer.tokens import TokenizedCells
from cellformer.training.model_run import _check_ids, _TokenizedDataset

# what a process does with its share of a chunk: (first row, stop row) of the chunk ->
# (its cells tokenized, other per-cell arrays to gather (first axis: cells), anything else it reports)
PrepareShare = Callable[[int, int], tuple[TokenizedCells, dict[str, np.ndarray], Any]]


_LIGHTNING_NOISE = (  # warnings about Lightning's internals, or about what is meant here
    ".*does not have many workers.*",  # the loader's items are batches already tokenized in this process
    ".*across ranks is zero.*",  # no cells, or a chunk of fewer cells than processes
    ".*treespec, LeafSpec.*",
    ".*all_gather is deprecated.*",
)


def _peer_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process ended (gloo / NCCL)."""
    text = str(exc)
    lost = ("closed by peer", "reset by peer", "remote worker", "communicator was aborted")
    return isinstance(exc, RuntimeError) and (
        isinstance(exc, torch.distributed.DistError) or any(words in text for words in lost)
    )


def share_rows(rank: int, world_size: int, n_cells: int) -> tuple[int, int]:
    """The contiguous rows ``[start, stop)`` of a chunk of ``n_cells`` that process ``rank`` predicts."""
    return rank * n_cells // world_size, (rank + 1) * n_cells // world_size


class _Batches(Dataset):
    """Length-bucketed, collated batches of a share's cells (the loader's items are whole batches)."""

    def __init__(self, cells: TokenizedCells, max_length: int, batch_size: int) -> None:
        self.cells = _TokenizedDataset(cells, max_length)
        self.batches = list(LengthBucketSampler(self.cells.lengths(), batch_size, shuffle=False))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return collate_tokens([self.cells[i] for i in self.batches[index]])


class _ShareData(pl.LightningDataModule):
    """One chunk of cells; each process prepares and loads its own share (known once the processes run)."""

    def __init__(self, prepare: PrepareShare, n_cells: int, *, max_length: int, batch_size: int) -> None:
        super().__init__()
        self.prepare = prepare
        self.n_cells = n_cells
        self.max_length = max_length
        self.batch_size = batch_size
        self.rows = (0, 0)
        self.cells: TokenizedCells | None = None
        self.per_cell: dict[str, np.ndarray] = {}
        self.info: Any = None

    def setup(self, stage: str) -> None:
        self.rows = share_rows(self.trainer.global_rank, self.trainer.world_size, self.n_cells)
        self.cells, self.per_cell, self.info = self.prepare(*self.rows)

    def predict_dataloader(self) -> DataLoader:
        assert self.cells is not None
        return DataLoader(_Batches(self.cells, self.max_length, self.batch_size), batch_size=None)


class _PredictModule(pl.LightningModule):
    """``predict_step``: a batch of tokenized cells -> their logits and ``<CLS>`` embeddings."""

    def __init__(self, model: CellTransformer, run_dir: Path) -> None:
        super().__init__()
        self.model = model
        self.run_dir = run_dir
        # a chunk of fewer cells than processes leaves some with nothing to predict
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        values = batch.get("values") if self.model.value_embedding is not None else None
        _check_ids(batch["ids"], values, self.model.config, self.run_dir)
        logits, cls = self.model(batch["ids"], batch["padding_mask"], values)  # (B, C), (B, D)
        return {"row": batch["row"], "logits": logits.float(), "embeddings": cls.float()}


class DevicePredictor:
    """A transformer's forward over ``devices * num_nodes`` processes, one chunk of cells at a time.

    Parameters
    ----------
    model, run_dir
        The network (the run's weights loaded) and the run it came from (named in errors).
    accelerator, devices, num_nodes
        As Lightning's ``Trainer`` takes them (checked by :func:`cellformer.prediction.run_setup.check_devices`).
    batch_size
        Cells per forward pass.
    """

    def __init__(
        self,
        model: CellTransformer,
        run_dir: Path,
        *,
        accelerator: str,
        devices: int,
        num_nodes: int,
        batch_size: int,
    ) -> None:
        on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
        try:
            self.trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy="ddp",  # every process runs the caller's code, which gathers after each chunk
                precision="bf16-mixed" if on_gpu else "32-true",  # as one process predicts on a GPU
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                use_distributed_sampler=False,  # each process loads its own share (_ShareData)
            )
        except (ValueError, TypeError, RuntimeError, ImportError, MisconfigurationException) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if "interactive" in first:
                first = (
                    "several processes start the command or script again, once per device, which a notebook "
                    "cannot do: run it as a script or with `cellformer predict`"
                )
            raise ConfigError(
                f"cannot set up prediction with accelerator={accelerator}, devices={devices}, "
                f"num_nodes={num_nodes}: {first}"
            ) from None
        self.module = _PredictModule(model, run_dir)
        self.max_length = model.config.max_length
        self.batch_size = batch_size

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the first process of all (the one that writes); known once a chunk ran."""
        return self.trainer.is_global_zero

    def predict(self, prepare: PrepareShare, n_cells: int) -> tuple[dict[str, np.ndarray], Any]:
        """Every cell's ``logits``, ``embeddings`` and ``prepare``'s per-cell arrays (in input order), and
        this process's ``prepare`` report, for a chunk of ``n_cells`` cells."""
        import warnings

        data = _ShareData(prepare, n_cells, max_length=self.max_length, batch_size=self.batch_size)
        try:
            with warnings.catch_warnings():
                for message in _LIGHTNING_NOISE:
                    warnings.filterwarnings("ignore", message)
                batches = self.trainer.predict(self.module, datamodule=data, return_predictions=True) or []
                arrays = {**self._share_outputs(batches, data), **data.per_cell}
                gathered = {name: self._gather(array, n_cells) for name, array in arrays.items()}
        except BaseException as exc:
            self._stop_others()
            if _peer_failed(exc):  # its own error line is above: one line here too, not a traceback
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise CellformerError(
                    "another process of this multi-process prediction stopped (its error is above), so this "
                    f"one stops too ({first[:200]})"
                ) from None
            raise
        return gathered, data.info

    def _share_outputs(
        self, batches: list[dict[str, torch.Tensor]], data: _ShareData
    ) -> dict[str, np.ndarray]:
        n = data.rows[1] - data.rows[0]
        config = self.module.model.config
        logits = np.zeros((n, config.n_classes), np.float32)
        embeddings = np.zeros((n, config.embedding_width), np.float32)
        for batch in batches:
            rows = batch["row"].cpu().numpy()
            logits[rows] = batch["logits"].cpu().numpy()
            embeddings[rows] = batch["embeddings"].cpu().numpy()
        return {"logits": logits, "embeddings": embeddings}

    def _gather(self, array: np.ndarray, n_cells: int) -> np.ndarray:
        """Every process's share of a per-cell array, in rank order (= input order)."""
        world = self.trainer.world_size
        width = max(-(-n_cells // world), 1)  # at least the largest share
        dtype = np.uint8 if array.dtype == bool else array.dtype  # collectives take no bool on every backend
        padded = np.zeros((width, *array.shape[1:]), dtype)
        padded[: len(array)] = array
        tensor = torch.from_numpy(padded).to(self.trainer.strategy.root_device)
        stacked = self.trainer.strategy.all_gather(tensor).cpu().numpy()  # (world, width, ...)
        parts = []
        for rank in range(world):
            start, stop = share_rows(rank, world, n_cells)
            parts.append(stacked[rank, : stop - start])
        return np.concatenate(parts).astype(array.dtype, copy=False)

    def _stop_others(self) -> None:
        """After a failure here, end the processes this one started (they would wait for it)."""
        launcher = self.trainer.strategy.launcher
        if launcher is not None:
            launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))
