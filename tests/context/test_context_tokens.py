"""Context tokens (``--batch-key`` / ``--context-key``): layout, prepare, train, predict, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from context_helpers import PBMC, TINY
from hypothesis import given, settings
from hypothesis import strategies as st

from cellformer.errors import ConfigError, InputError
from cellformer.preparation.prepared import PreparedData
from cellformer.tokenize.context import UNK, ContextVocab, covariate_strings
from cellformer.tokens import CLS, N_SPECIAL, TokenizedCells


def _ragged(lengths: list[int], rng: np.random.Generator, with_values: bool) -> TokenizedCells:
    cells = [np.r_[CLS, rng.integers(N_SPECIAL, 50, n - 1)] for n in lengths]
    ids = np.concatenate([np.zeros(0, np.int64), *cells]).astype(np.int32)
    values = rng.integers(1, 10, len(ids)).astype(np.int16) if with_values else None
    return TokenizedCells(ids, np.r_[0, np.cumsum(lengths)].astype(np.int64), values)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), max_size=8),
    n_covariates=st.integers(0, 3),
    with_values=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_insert_puts_context_right_after_cls(lengths, n_covariates, with_values, seed):
    rng = np.random.default_rng(seed)
    cells = _ragged(lengths, rng, with_values)
    vocab = ContextVocab([], 100)
    ids = rng.integers(100, 110, (len(lengths), n_covariates)).astype(np.int32)
    out = vocab.insert(cells, ids, value_id=99)
    assert len(out) == len(cells)
    for i in range(len(cells)):  # plain per-cell reference
        old = cells.cell(i)
        assert out.cell(i).tolist() == [old[0], *ids[i], *old[1:]]
        if with_values:
            old_values = cells.values[cells.offsets[i] : cells.offsets[i + 1]]
            new_values = out.values[out.offsets[i] : out.offsets[i + 1]]
            assert new_values.tolist() == [old_values[0], *[99] * n_covariates, *old_values[1:]]


def test_vocab_layout_and_unseen_values(caplog):
    vocab = ContextVocab.fit(
        {"batch": np.array(["b10", "b2", "b1"], object), "assay": np.array(["x", "x", "y"], object)}, 20
    )
    assert vocab.to_json() == [
        {"key": "batch", "tokens": [UNK, "b1", "b2", "b10"]},
        {"key": "assay", "tokens": [UNK, "x", "y"]},
    ]
    assert vocab.n_tokens == 7
    with caplog.at_level(logging.WARNING):
        ids = vocab.encode({"batch": np.array(["b2", "b3"]), "assay": np.array(["y", "x"])}, where="new")
    assert ids.tolist() == [[22, 26], [20, 25]]  # b3 unseen -> batch <UNK> (id 20)
    assert "b3" in caplog.text and UNK in caplog.text and "'batch'" in caplog.text
    again = ContextVocab.from_vocab({"genes": ["g"] * 16, "context": vocab.to_json()}, N_SPECIAL)
    assert again.to_json() == vocab.to_json() and again.first_id == 20


def test_covariate_values_are_checked():
    assert covariate_strings(pd.Series([1.0, 2.0]), key="batch", where="f").tolist() == ["1", "2"]
    with pytest.raises(InputError, match="'batch'.*missing value.*'c1'"):
        covariate_strings(pd.Series(["a", None]), key="batch", where="f", names=["c0", "c1"])
    with pytest.raises(InputError, match="'depth'.*non-integer"):
        covariate_strings(pd.Series([0.5, 2.0]), key="depth", where="f")


def test_prepared_tokens_have_the_context_token_at_position_1(pbmc68k_path, pbmc_phase):
    import anndata as ad

    plain, with_phase = PreparedData(pbmc_phase["rank"]), PreparedData(pbmc_phase["rank_phase"])
    context = with_phase.context
    assert context.keys == ["phase"] and context.first_id == N_SPECIAL + len(with_phase.genes)
    assert json.loads((with_phase.path / "vocab.json").read_text())["context"][0]["tokens"][0] == UNK
    assert with_phase.n_context == 1 + len(context.covariates[0].categories) and plain.n_context == 0
    assert with_phase.meta["context"]["keys"] == ["phase"] and with_phase.meta["n_values"] == 0

    phase = ad.read_h5ad(pbmc68k_path, backed="r").obs["phase"].astype(str)
    names = pd.read_csv(with_phase.path / "cells.csv.gz")["obs_name"].astype(str)
    categories = list(context.covariates[0].categories)
    for row in range(0, len(names), 37):
        ids, _ = with_phase.store.cell(row)
        expected = context.first_id + 1 + categories.index(phase[names[row]])
        assert ids[0] == CLS and ids[1] == expected
        # the genes are untouched: the same tokens as without context
        assert np.array_equal(np.delete(ids, 1), plain.store.cell(row)[0])


def test_binned_context_tokens_get_the_reserved_value(pbmc_phase):
    plain, with_phase = PreparedData(pbmc_phase["binned"]), PreparedData(pbmc_phase["binned_phase"])
    tokenizer = plain.tokenizer()
    assert plain.meta["n_values"] == tokenizer.value_vocab_size  # not values.max() + 1
    assert with_phase.meta["n_values"] == tokenizer.value_vocab_size + 1
    assert with_phase.meta["context"]["value_id"] == tokenizer.value_vocab_size
    ids, values = with_phase.store.cell(0)
    plain_ids, plain_values = plain.store.cell(0)
    assert values[0] == tokenizer.cls_value and values[1] == tokenizer.value_vocab_size
    assert np.array_equal(np.delete(values, 1), plain_values) and np.array_equal(np.delete(ids, 1), plain_ids)


def test_train_evaluate_predict_with_a_batch_key(bladder_batch, tmp_path, caplog):
    import cellformer
    from cellformer.preparation.new_cells import tokenize_adata
    from cellformer.training.api import train

    adata, path = bladder_batch
    prepared = cellformer.prepare(
        path, out=tmp_path / "prepared", tokenizer="hybrid", batch_key="batch", max_genes=20, n_bins=11
    )
    assert prepared.context.keys == ["batch"] and prepared.n_context == 4
    run = train(prepared.path, out=tmp_path / "run", **TINY)
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["n_context"] == 4 and config["n_values"] == prepared.tokenizer().value_vocab_size + 1
    assert "context" in json.loads((run / "vocab.json").read_text())  # the run dir alone can predict
    metrics = cellformer.evaluate(run)
    assert 0 <= metrics["macro_f1"] <= 1

    model = cellformer.load(run)
    members = model.model.members  # the default model is an ensemble: every member has the table
    assert len(members) > 1 and all(member.context_embedding.weight.shape[0] == 4 for member in members)
    new = adata[:30].copy()
    new.obs["batch"] = ["b1"] * 29 + ["b9"]
    with caplog.at_level(logging.WARNING):
        tokens, _ = tokenize_adata(model, new)
    assert "b9" in caplog.text and UNK in caplog.text
    first = prepared.context.first_id
    assert tokens.cell(0)[1] == first + 2 and tokens.cell(29)[1] == first  # b1, then <UNK>
    annotated = cellformer.predict(new, run)
    assert annotated.n_obs == 30 and "batch" in annotated.obs

    with pytest.raises(InputError, match="'batch' not found in obs.*add the column"):
        missing = new.copy()
        del missing.obs["batch"]
        cellformer.predict(missing, run)
    broken = new.copy()
    broken.obs["batch"] = pd.Series([None] + ["b1"] * 29, index=broken.obs_names, dtype=object)
    with pytest.raises(InputError, match="'batch'.*missing value"):
        cellformer.predict(broken, run)


def test_bad_covariates_at_prepare(pbmc68k_path, bladder_batch, tmp_path):
    import anndata as ad

    from cellformer.preparation.prepare import prepare

    with pytest.raises(InputError, match="column 'plate' not found in obs.*phase"):
        prepare(pbmc68k_path, out=tmp_path / "a", batch_key="plate", **PBMC)
    with pytest.raises(ConfigError, match="label_key 'cell_type' is also a context covariate"):
        prepare(pbmc68k_path, out=tmp_path / "b", context_keys=["cell_type"], **PBMC)
    with pytest.raises(ConfigError, match="given twice"):
        prepare(pbmc68k_path, out=tmp_path / "c", batch_key="phase", context_keys=["phase"], **PBMC)
    adata = ad.read_h5ad(pbmc68k_path)
    adata.obs["batch"] = pd.Series(["a"] * (adata.n_obs - 1) + [None], index=adata.obs_names, dtype=object)
    adata.write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(InputError, match=r"'batch' in .*nan\.h5ad has 1 missing value.*fill them"):
        prepare(tmp_path / "nan.h5ad", out=tmp_path / "d", batch_key="batch", **PBMC)
    assert not (tmp_path / "d").exists()


def test_cli_flags(tmp_path):
    import argparse

    from cellformer.cli.prepare import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "prepare",
            "x.h5ad",
            "--out",
            "o",
            "--batch-key",
            "batch",
            "--context-key",
            "assay",
            "--context-key",
            "site",
        ]
    )
    config = config_from_args(args)
    assert config.batch_key == "batch" and config.context_keys == ("assay", "site")
    assert config.covariate_keys == ("batch", "assay", "site")
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_names_a_missing_covariate(pbmc68k_path, tmp_path, capsys):
    from cellformer.cli import main

    code = main(
        [
            "prepare",
            str(pbmc68k_path),
            "--out",
            str(tmp_path / "p"),
            "--input-normalized",
            "--batch-key",
            "plate",
        ]
    )
    assert code == 2
    assert "column 'plate' not found in obs" in capsys.readouterr().err
