"""A trained transformer rebuilt from its run directory alone (``cellformer.load(run_dir)``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cellformer.atomic import read_json
from cellformer.calibration.unknown import TRANSFORMER_SPACE
from cellformer.config import ModelConfig
from cellformer.data.dataset import LengthBucketSampler, TokenDataset, collate_tokens
from cellformer.errors import RunDirError
from cellformer.kinds import TRANSFORMER
from cellformer.model import CellTransformer, TransformerEnsemble, build_model
from cellformer.runs import Predictions, read_run_config
from cellformer.tokens import TokenizedCells

if TYPE_CHECKING:
    import anndata as ad

    from cellformer.preparation.prepared import PreparedData


class _TokenizedDataset(Dataset):
    """Cells of a :class:`TokenizedCells` as items for :func:`collate_tokens`."""

    def __init__(self, cells: TokenizedCells, max_length: int) -> None:
        self.cells = cells
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.cells)

    def lengths(self) -> np.ndarray:
        return np.minimum(self.cells.lengths, self.max_length)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = int(self.cells.offsets[index])
        stop = min(int(self.cells.offsets[index + 1]), start + self.max_length)
        item = {
            "ids": torch.from_numpy(self.cells.ids[start:stop].astype(np.int64)),
            "label": torch.tensor(-1),
            "row": torch.tensor(index),
        }
        if self.cells.values is not None:
            item["values"] = torch.from_numpy(self.cells.values[start:stop].astype(np.int64))
        return item


class TransformerRun:
    """A finished ``cellformer train`` run: the model, its classes and configuration.

    Use :func:`cellformer.load` rather than the constructor. Predictions run on a GPU when one is
    available (bf16 autocast), else on the CPU; cells are batched by length, outputs keep input order.
    """

    kind = TRANSFORMER
    is_baseline = False
    unknown_space = TRANSFORMER_SPACE  # what the unknown-cell detector measures

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        model: CellTransformer | TransformerEnsemble,
        classes: list[str],
    ) -> None:
        self.run_dir = run_dir
        self.config = config
        self.model = model.eval()
        self.classes = classes
        # where this process predicts (the weights move there at the first prediction, so the processes of
        # a multi-device prediction, which Lightning places, never touch this device)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def use_device(self, device: torch.device | None) -> None:
        """Predict on ``device`` from now on (``None``: the one chosen at loading, a GPU if there is one)."""
        if device is not None:
            self.device = device

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def embedding_name(self) -> str:
        """What its embedding is (predict's ``params['embedding']``), e.g. ``<CLS> of 4 members, side by side``."""
        config = self.model_config
        pooled = "<CLS>" if config.pooling == "cls" else "mean of the final token states"
        return pooled if config.members == 1 else f"{pooled} of {config.members} members, side by side"

    @property
    def member_heads(self) -> dict[str, np.ndarray] | None:
        """The ensemble members' classifier heads (``fc_weight.i``, ``fc_bias.i``, ``out_weight.i``,
        ``out_bias.i``), which the unknown score's disagreement part applies to each member's slice of the
        embedding; ``None`` for one transformer."""
        return self.model.head_weights() if isinstance(self.model, TransformerEnsemble) else None

    @classmethod
    def load(cls, run_dir: str | Path) -> TransformerRun:
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        config = read_run_config(run_dir)
        weights = run_dir / "model.safetensors"
        if not weights.exists():
            raise RunDirError(
                f"{run_dir} has no model.safetensors: training did not finish; "
                "continue it with `cellformer train PREPARED --out RUN --resume`"
            )
        model = build_model(ModelConfig.from_dict(config["model"]))
        try:
            model.load_state_dict(load_file(str(weights)))
        except Exception as exc:  # safetensors' own error types, or tensors of other shapes / names
            raise RunDirError(
                f"cannot read the weights {weights}: the file is damaged or truncated, or not this run's "
                f"model ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); copy the "
                "run again from a good copy or train it again"
            ) from None
        classes = read_json(run_dir / "classes.json")["classes"]
        return cls(run_dir, config, model, classes)

    def predict_split(self, prepared: PreparedData, split: str, *, batch_size: int = 256) -> Predictions:
        """Outputs for every cell of ``split`` of the prepared dataset (in ``splits.npz`` order)."""
        rows = prepared.split_rows(split)
        dataset = TokenDataset(prepared.store, rows, None, self.model_config.max_length)
        logits, embeddings = self._run(dataset, batch_size)
        return Predictions(logits=logits, embeddings=embeddings, rows=np.asarray(rows))

    def predict_tokens(
        self, tokenized: TokenizedCells, *, batch_size: int = 256, progress: bool = True
    ) -> Predictions:
        """Outputs for cells already tokenized with this run's tokenizer and vocabulary."""
        dataset = _TokenizedDataset(tokenized, self.model_config.max_length)
        logits, embeddings = self._run(dataset, batch_size, progress=progress)
        return Predictions(logits=logits, embeddings=embeddings, rows=None)

    def predict_adata(self, adata: ad.AnnData, *, batch_size: int = 256, **options: Any) -> Predictions:
        """Outputs for new cells: genes aligned to the vocabulary, tokenized with the saved tokenizer.

        ``options`` override how the input is read (``layer``, ``gene_key``, ``min_overlap``).
        """
        from cellformer.preparation.new_cells import tokenize_adata

        tokenized, _ = tokenize_adata(self, adata, **options)
        return self.predict_tokens(tokenized, batch_size=batch_size)

    def outputs(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 256,
        log: bool = True,
        progress: bool = True,
        **options: Any,
    ) -> tuple[Predictions, dict[str, Any], np.ndarray]:
        """Outputs for new cells (tokenized with the run's tokenizer), the gene-overlap report, and which
        cells have no gene token of their own (:class:`~cellformer.runs.TrainedModel`)."""
        from cellformer.preparation.new_cells import cells_without_genes, tokenize_adata

        tokenized, overlap = tokenize_adata(self, adata, log=log, progress=progress, **options)
        no_genes = cells_without_genes(tokenized, self.config["model"]["vocab_size"])
        outputs = self.predict_tokens(tokenized, batch_size=batch_size, progress=progress)
        return outputs, overlap, np.asarray(no_genes, dtype=bool)

    @torch.inference_mode()
    def _run(self, dataset, batch_size: int, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        from tqdm.auto import tqdm

        self.model.to(self.device)
        n = len(dataset)
        logits = np.zeros((n, self.model_config.n_classes), np.float32)
        embeddings = np.zeros((n, self.model_config.embedding_width), np.float32)
        batches = list(LengthBucketSampler(dataset.lengths(), batch_size, shuffle=False))
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_tokens)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with tqdm(
            total=n, desc="predicting", unit="cells", leave=False, disable=not progress or n < 10 * batch_size
        ) as bar:
            for indices, batch in zip(batches, loader, strict=True):
                values = batch.get("values") if self.model.value_embedding is not None else None
                _check_ids(batch["ids"], values, self.model_config, self.run_dir)
                with autocast:
                    out, cls = self.model(
                        batch["ids"].to(self.device),
                        batch["padding_mask"].to(self.device),
                        None if values is None else values.to(self.device),
                    )
                logits[indices] = out.float().cpu().numpy()
                embeddings[indices] = cls.float().cpu().numpy()
                bar.update(len(indices))
        return logits, embeddings


def _check_ids(ids: torch.Tensor, values: torch.Tensor | None, config: ModelConfig, run_dir: Path) -> None:
    """Refuse token ids past the model's embedding tables (a damaged token store) with one clear line."""
    limit = int(config.vocab_size or 0) + int(config.n_context or 0)
    if values is not None and values.numel() and config.n_values:
        if int(values.max()) >= config.n_values or int(values.min()) < 0:
            raise RunDirError(
                f"value ids {int(values.min())}..{int(values.max())} are outside the {config.n_values} value "
                f"bins of run {run_dir}: the token store (tokens/values.bin) is damaged or was made with other "
                "settings; prepare the data again"
            )
    if ids.numel() and (int(ids.max()) >= limit or int(ids.min()) < 0):
        raise RunDirError(
            f"token ids {int(ids.min())}..{int(ids.max())} are outside the {limit} tokens of run {run_dir}'s "
            "vocabulary: the token store (tokens/ids.bin) is damaged or was made for another vocabulary; "
            "prepare the data again"
        )
