"""Small-data levers: gene-token dropout, gene embeddings from the training cells (SVD), mean pooling,
label smoothing. Real data: the bladder cells prepared by the session fixture (rank tokens, 128 genes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY, assert_same_run, token_batch

import cellformer
from cellformer.config import ModelConfig, TrainConfig
from cellformer.errors import ConfigError
from cellformer.model import CellTransformer
from cellformer.preparation.prepared import PreparedData
from cellformer.tokens import CLS, N_SPECIAL, PAD
from cellformer.training.augment import GeneDropout
from cellformer.training.embedding_init import principal_axes, svd_gene_embeddings, token_matrix

# --------------------------------------------------------------------------- gene dropout


def test_gene_dropout_drops_only_gene_tokens_and_is_seeded(bladder_prepared: Path) -> None:
    prepared = PreparedData(bladder_prepared)
    batch = token_batch(prepared)
    before = {k: v.clone() for k, v in batch.items()}
    vocab_size = 10**6  # no context tokens: every id from N_SPECIAL on is a gene
    dropout = GeneDropout(0.3, vocab_size, seed=7)
    out = dropout(batch, step=3)
    for key, value in before.items():  # the input batch is not modified
        assert torch.equal(batch[key], value)
    dropped = (out["ids"] == PAD) & (before["ids"] != PAD)
    assert torch.equal(out["padding_mask"], out["ids"] == PAD)  # dropped tokens are masked like padding
    assert (out["ids"][:, 0] == CLS).all()  # <CLS> is never dropped
    is_gene = before["ids"] >= N_SPECIAL
    share = dropped.sum().item() / is_gene.sum().item()
    assert 0.25 < share < 0.35  # about p of the gene tokens
    assert ((out["ids"] >= N_SPECIAL).sum(dim=1) >= 1).all()  # every cell keeps a gene
    assert torch.equal(dropout(batch, step=3)["ids"], out["ids"])  # same (seed, step, rank): same draw
    assert not torch.equal(dropout(batch, step=4)["ids"], out["ids"])
    assert not torch.equal(dropout(batch, step=3, rank=1)["ids"], out["ids"])
    assert not torch.equal(GeneDropout(0.3, vocab_size, seed=8)(batch, step=3)["ids"], out["ids"])


def test_gene_dropout_keeps_context_tokens_and_zeroes_values() -> None:
    vocab_size = N_SPECIAL + 20  # ids 24.. are context tokens
    ids = torch.tensor([[CLS, 25, 5, 6, 7, 8, 9, 10, PAD], [CLS, 24, 11, PAD, PAD, PAD, PAD, PAD, PAD]])
    values = torch.where(ids == PAD, 0, 3)
    batch = {"ids": ids, "padding_mask": ids == PAD, "values": values}
    for step in range(20):
        out = GeneDropout(0.9, vocab_size, seed=0)(batch, step)
        assert torch.equal(out["ids"][:, :2], ids[:, :2])  # <CLS> and the context token stay
        assert out["ids"][1, 2] == 11  # a cell's only gene is kept
        assert torch.equal(out["values"] == 0, out["ids"] == PAD)


def test_gene_dropout_is_a_train_option() -> None:
    assert TrainConfig(gene_dropout=0.2).gene_dropout == 0.2
    with pytest.raises(ConfigError, match="gene_dropout"):
        TrainConfig(gene_dropout=1.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=-0.1)
    with pytest.raises(ConfigError, match="embedding_init"):
        TrainConfig(embedding_init="pca")
    with pytest.raises(ConfigError, match="pooling"):
        ModelConfig(pooling="max")


# --------------------------------------------------------------------------- SVD initialisation


def test_principal_axes_equal_a_dense_standardised_svd() -> None:
    rng = np.random.default_rng(0)
    dense = rng.poisson(1.0, (80, 30)).astype(float) * rng.uniform(0.5, 3, 30)
    dense[:, 5] = 0  # a gene never seen: no variance, zero loadings
    import scipy.sparse as sp

    S, Vt = principal_axes(sp.csr_matrix(dense), k=6, seed=0, n_iter=8)
    sd = dense.std(axis=0)
    Z = (dense - dense.mean(axis=0)) / np.where(sd > 0, sd, 1)
    _, S_ref, Vt_ref = np.linalg.svd(Z, full_matrices=False)
    np.testing.assert_allclose(S, S_ref[:6], rtol=1e-3)
    np.testing.assert_allclose(np.abs(np.sum(Vt * Vt_ref[:6], axis=1)), 1, atol=1e-3)  # same axes up to sign
    np.testing.assert_allclose(Vt[:, 5], 0, atol=1e-12)


def test_token_matrix_reads_rank_weights_within_max_length(bladder_prepared: Path) -> None:
    prepared = PreparedData(bladder_prepared)
    rows = prepared.splits["train"][:5]
    n_genes = prepared.store.ids.max() + 1 - N_SPECIAL
    X = token_matrix(prepared.store, rows, int(n_genes), None, max_length=33)
    for i, row in enumerate(rows):
        ids, _ = prepared.store.cell(int(row))
        genes = ids[1:33].astype(np.int64) - N_SPECIAL  # <CLS> + 32 genes seen by the model
        weights = X[i].toarray().ravel()
        assert set(np.flatnonzero(weights)) == set(genes)
        assert weights[genes[0]] == 1.0  # the top-ranked gene weighs 1, falling with rank
        assert np.all(np.diff(weights[genes]) < 0)


def test_svd_embeddings_are_reproducible_and_separate_cell_types(bladder_prepared: Path) -> None:
    """Bag-of-genes cell vectors in the initial embedding space already separate the bladder types."""
    prepared = PreparedData(bladder_prepared)
    train, val = prepared.splits["train"], prepared.splits["val"]
    n_genes = int(prepared.store.ids.max()) + 1 - N_SPECIAL
    kwargs = dict(n_genes=n_genes, d_model=32, value_limit=None, max_length=64)
    coordinates, seen = svd_gene_embeddings(prepared.store, train, seed=0, **kwargs)
    again, _ = svd_gene_embeddings(prepared.store, train, seed=0, **kwargs)
    assert coordinates.shape == (n_genes, 32) and coordinates.dtype == np.float32
    np.testing.assert_array_equal(coordinates, again)
    assert abs(coordinates[seen].std() - 0.02) < 1e-4  # the random initialisation's scale
    labels = np.asarray(prepared.labels)

    def nearest_centroid_accuracy(table: np.ndarray) -> float:
        bag = lambda rows: (token_matrix(prepared.store, rows, n_genes, None, 64) > 0) @ table  # noqa: E731
        fit, test = bag(train), bag(val)
        centroids = np.stack([fit[labels[train] == c].mean(axis=0) for c in range(prepared.n_classes)])
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
        return float(((unit(test) @ unit(centroids).T).argmax(axis=1) == labels[val]).mean())

    random_table = np.random.default_rng(0).normal(0, 0.02, coordinates.shape)
    assert nearest_centroid_accuracy(coordinates) > nearest_centroid_accuracy(random_table) + 0.1


def test_svd_initialisation_sets_the_model_and_is_recorded(bladder_prepared: Path, tmp_path: Path) -> None:
    options = {**TINY, "max_epochs": 1, "embedding_init": "svd", "gene_dropout": 0.2, "label_smoothing": 0.1}
    run = cellformer.train(bladder_prepared, out=tmp_path / "a", **options)
    config = cellformer.load(run).config
    assert config["train"]["embedding_init"] == "svd" and config["train"]["gene_dropout"] == 0.2
    twin = cellformer.train(bladder_prepared, out=tmp_path / "b", **options)
    assert_same_run(run, twin)  # seeded: same seed, same run


# --------------------------------------------------------------------------- mean pooling


def test_mean_pooling_ignores_padding() -> None:
    torch.manual_seed(0)
    config = ModelConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=50, n_classes=5, pooling="mean")
    model = CellTransformer(config).eval()
    ids = torch.tensor([[CLS, 5, 6, 7, PAD, PAD], [CLS, 8, 9, 10, 11, 12]])
    logits, pooled = model(ids, ids == PAD)
    alone, alone_pooled = model(ids[:1, :4], None)
    torch.testing.assert_close(alone[0], logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone_pooled[0], pooled[0], atol=1e-5, rtol=1e-5)
    states = model.encode(ids[:1, :4])
    torch.testing.assert_close(pooled[0], states[0].mean(dim=0), atol=1e-5, rtol=1e-5)


def test_frozen_gene_embeddings_stay_as_initialised(bladder_prepared: Path, tmp_path: Path) -> None:
    """``embedding_lr_factor=0`` keeps the SVD gene table; everything else trains."""
    from safetensors.torch import load_file

    from cellformer.training.embedding_init import initialize_gene_embeddings

    options = {**TINY, "max_epochs": 1, "embedding_init": "svd", "embedding_lr_factor": 0.0}
    run = cellformer.train(bladder_prepared, out=tmp_path / "frozen", **options)
    weights = load_file(str(run / "model.safetensors"))
    config = ModelConfig.from_dict(cellformer.load(run).config["model"])
    torch.manual_seed(0)
    fresh = CellTransformer(config)
    prepared = PreparedData(bladder_prepared)
    initialize_gene_embeddings(
        fresh.gene_tables(),
        prepared.store,
        prepared.splits["train"],
        value_limit=prepared.value_bins,
        seed=0,
        max_length=64,
    )
    genes = slice(N_SPECIAL, None)
    torch.testing.assert_close(weights["gene_embedding.weight"][genes], fresh.gene_embedding.weight[genes])
    assert not torch.equal(weights["head.out.weight"], fresh.head.out.weight)
    with pytest.raises(ConfigError, match="embedding_lr_factor"):
        TrainConfig(embedding_lr_factor=1.5)


# --------------------------------------------------------------------------- class weights


def test_class_weights_follow_inverse_frequency_to_a_power(bladder_prepared: Path) -> None:
    from cellformer.training.api import class_weights

    prepared = PreparedData(bladder_prepared)
    rows = prepared.splits["train"]
    counts = np.bincount(np.asarray(prepared.labels)[rows], minlength=prepared.n_classes)
    inverse = class_weights(prepared, rows)
    np.testing.assert_allclose(inverse * counts, counts.sum() / prepared.n_classes)  # weight x cells: equal
    np.testing.assert_allclose(class_weights(prepared, rows, 0.5), np.sqrt(inverse))
    np.testing.assert_allclose(class_weights(prepared, rows, 0.0), 1.0)
    assert TrainConfig(class_weight_power=0.5).class_weight_power == 0.5
    with pytest.raises(ConfigError, match="class_weight_power"):
        TrainConfig(class_weight_power=-1.0)
