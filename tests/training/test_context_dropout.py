"""Context dropout (``--context-dropout``): training cells' context tokens become ``<UNK>`` at random.

Real data: pbmc68k with two covariates, a synthetic ``batch`` (context token 1) and the cell-cycle
``phase`` (token 2), so each covariate's own ``<UNK>`` id is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import THREADS, TINY, metrics

import cellformer
from cellformer.config import ModelConfig, TrainConfig
from cellformer.data.dataset import TokenDataset, collate_tokens
from cellformer.errors import ConfigError
from cellformer.model import CellTransformer
from cellformer.preparation.prepared import PreparedData
from cellformer.training.context_dropout import ContextDropout

# Tiny and fast (plumbing, not accuracy). weight_decay 0: AdamW decays every row of the context table,
# trained or not, so only without it does a row that never gets a gradient keep its initial value.
TINY_CTX = {
    **{k: v for k, v in TINY.items() if k not in ("dropout", "warmup_fraction")},
    **dict(
        d_model=16, ff_hidden=32, head_hidden=16, max_length=20, max_epochs=2, weight_decay=0.0, patience=0
    ),
}


def _cli_flags(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def prepared(pbmc68k_path: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """pbmc68k (700 cells) with a synthetic 3-value ``batch`` and ``phase`` as context tokens."""
    import anndata as ad

    adata = ad.read_h5ad(pbmc68k_path)
    adata.obs["batch"] = np.random.default_rng(0).choice(["b0", "b1", "b2"], adata.n_obs)
    base = tmp_path_factory.mktemp("context_dropout")
    adata.write_h5ad(base / "pbmc_batch.h5ad")
    return cellformer.prepare(
        base / "pbmc_batch.h5ad",
        out=base / "prepared",
        input_normalized=True,
        max_genes=16,
        tokenizer="rank",  # context tokens are the subject here, not value tokens
        batch_key="batch",
        context_keys=["phase"],
    )


@pytest.fixture(scope="module")
def runs(prepared: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """Two tiny runs: context dropout 0.5 through the CLI, 0 through the API (same seed otherwise)."""
    from cellformer.cli import main

    base = tmp_path_factory.mktemp("context_dropout_runs")
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        args = ["-q", "train", str(prepared.path), "--out", str(base / "p05"), "--context-dropout", "0.5"]
        assert main(args + _cli_flags(TINY_CTX)) == 0
        cellformer.train(prepared.path, out=base / "p0", context_dropout=0.0, **TINY_CTX)
    finally:
        torch.set_num_threads(previous)
    return {0.5: base / "p05", 0.0: base / "p0"}


def _batch(prepared: PreparedData, rows: int | np.ndarray = 700) -> dict[str, torch.Tensor]:
    """Cells ``rows`` (or the first ``rows``) of the store, collated as training batches are."""
    if isinstance(rows, int):
        rows = np.arange(min(rows, prepared.meta["n_cells"]))
    dataset = TokenDataset(prepared.store, rows, None, TINY_CTX["max_length"])
    return collate_tokens([dataset[i] for i in range(len(rows))])


def test_drops_each_covariate_to_its_own_unk(prepared: PreparedData) -> None:
    context = prepared.context
    unk = context.starts.tolist()  # [batch <UNK>, phase <UNK>]
    assert context.keys == ["batch", "phase"] and unk[1] == unk[0] + 4  # <UNK> b0 b1 b2
    batch = _batch(prepared)
    ids = batch["ids"]
    original = ids.clone()
    dropout = ContextDropout.from_vocab(context, 0.3, seed=0)
    out = dropout(ids, step=7)
    assert torch.equal(ids, original)  # the batch itself is not modified
    assert torch.equal(out[:, 0], ids[:, 0]) and torch.equal(out[:, 3:], ids[:, 3:])  # <CLS>, genes kept
    assert not (ids[:, 1:3] == torch.tensor(unk)).any()  # no training cell carries <UNK> ...
    dropped = out[:, 1:3] != ids[:, 1:3]
    for j in range(2):  # ... a dropped token becomes its own covariate's <UNK>
        assert (out[dropped[:, j], 1 + j] == unk[j]).all()
    assert 0.2 < dropped.float().mean() < 0.4  # 1400 draws at p = 0.3
    # the draws depend on (seed, step, rank) only: a resumed run repeats them
    assert torch.equal(dropout(ids, step=7), out)
    assert not torch.equal(dropout(ids, step=8), out)
    assert not torch.equal(dropout(ids, step=7, rank=1), out)
    # no covariates, or p = 0: nothing to do, no random numbers drawn
    assert (
        ContextDropout.from_vocab(None, 0.3, 0) is None and ContextDropout.from_vocab(context, 0.0, 0) is None
    )


def test_a_slot_without_its_context_token_is_left_alone(prepared: PreparedData) -> None:
    unk = prepared.context.starts.tolist()
    gene = prepared.vocab_size - 1
    ids = torch.tensor([[1, unk[0] + 2, gene, 0], [1, gene, 0, 0], [1, 0, 0, 0]])  # truncated, padded
    out = ContextDropout.from_vocab(prepared.context, 0.999999, seed=0)(ids, step=0)
    assert out.tolist() == [[1, unk[0], gene, 0], [1, gene, 0, 0], [1, 0, 0, 0]]
    assert torch.equal(ContextDropout.from_vocab(prepared.context, 0.5, 0)(ids[:, :1], 0), ids[:, :1])


def test_unk_rows_are_trained_only_with_context_dropout(
    prepared: PreparedData, runs: dict[float, Path]
) -> None:
    unk_rows = prepared.context.starts - prepared.context.first_id  # rows of the context table
    other_rows = np.setdiff1d(np.arange(prepared.n_context), unk_rows)
    for p, run in runs.items():
        config = json.loads((run / "config.json").read_text())
        assert config["train"]["context_dropout"] == p  # recorded like every other option
        torch.manual_seed(config["seed"])  # what training starts from (seed_everything, then the model)
        initial = CellTransformer(ModelConfig.from_dict(config["model"])).context_embedding.weight.detach()
        trained = load_file(str(run / "model.safetensors"))["context_embedding.weight"]
        assert not torch.equal(trained[other_rows], initial[other_rows])  # seen values are trained
        if p == 0:
            assert torch.equal(trained[unk_rows], initial[unk_rows]), "no gradient should reach <UNK>"
        else:
            for row in unk_rows:
                assert not torch.equal(trained[row], initial[row]), f"<UNK> row {row} was not trained"
    assert metrics(runs[0.5])[-1]["val_loss"] != metrics(runs[0.0])[-1]["val_loss"]


def test_validation_and_prediction_inputs_are_never_dropped(
    prepared: PreparedData, runs: dict[float, Path]
) -> None:
    from cellformer.training.module import CellClassifierModule

    config = json.loads((runs[0.5] / "config.json").read_text())
    module = CellClassifierModule(
        ModelConfig.from_dict(config["model"]),
        TrainConfig.from_dict(config["train"]),
        context_dropout=ContextDropout.from_vocab(prepared.context, 0.9, seed=0),
    )
    seen: list[torch.Tensor] = []
    forward = module.model.forward
    module.model.forward = lambda ids, *rest: seen.append(ids.clone()) or forward(ids, *rest)
    batch = _batch(prepared, 200)
    batch["label"] = torch.zeros(len(batch["ids"]), dtype=torch.int64)
    original = batch["ids"].clone()
    module.training_step(batch, 0)
    module.validation_step(batch, 0)
    module.validation_step(batch, 1)
    assert torch.equal(batch["ids"], original)
    assert (seen[0][:, 1:3] != original[:, 1:3]).float().mean() > 0.8  # training: ~90% dropped
    assert torch.equal(seen[1], original) and torch.equal(seen[2], original)  # validation: none

    # evaluation / prediction of the run trained with dropout: the stored tokens, the same every time
    model = cellformer.load(runs[0.5])
    first, second = model.predict_split(prepared, "val"), model.predict_split(prepared, "val")
    assert np.array_equal(first.logits, second.logits)
    stored = _batch(prepared, first.rows[:50])  # the tokens as stored, context tokens included
    with torch.no_grad():
        direct, _ = model.model(stored["ids"], stored["padding_mask"])
    assert np.allclose(first.logits[:50], direct.numpy(), atol=1e-5)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_probability_outside_0_1_is_a_config_error(p: float) -> None:
    with pytest.raises(ConfigError, match=r"train context_dropout must be in \[0, 1\).*<UNK>.*got"):
        TrainConfig(context_dropout=p)


def test_cli_refuses_a_bad_probability(prepared: PreparedData, tmp_path: Path, cli) -> None:
    code, err = cli("train", prepared.path, "--out", tmp_path / "run", "--context-dropout", "1")
    assert code == 2 and err.strip().splitlines() == [
        "error: train context_dropout must be in [0, 1) (the probability of replacing a training cell's "
        "context token by <UNK>), got 1.0"
    ]
    assert not (tmp_path / "run").exists()
    code, err = cli("train", prepared.path, "--out", tmp_path / "run", "--context-dropout", "half")
    assert code == 2 and "context_dropout must be float" in err
