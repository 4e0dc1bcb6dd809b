"""The ``prepare`` command line maps onto :class:`PrepareConfig` one flag per field."""

from __future__ import annotations

import argparse

from cellformer.cli.prepare import add_parser, config_from_args
from cellformer.config import PrepareConfig


def _parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["prepare", "in.h5ad", "--out", "out", *args])


def test_every_config_field_has_a_flag():
    namespace = vars(_parse())
    assert set(PrepareConfig.field_names()) <= set(namespace)
    assert config_from_args(_parse()) == PrepareConfig()


def test_flags_reach_the_config():
    config = config_from_args(
        _parse(
            "--label-key",
            "bulk_labels",
            "--layer",
            "raw.X",
            "--gene-key",
            "ensembl",
            "--input-normalized",
            "--input-transform",
            "log1p",
            "--max-genes",
            "512",
            "--min-genes",
            "0",
            "--min-cells",
            "0",
            "--max-mito-fraction",
            "off",
            "--doublets",
            "--seed",
            "7",
            "--train-fraction",
            "0.8",
            "--val-fraction",
            "0.1",
            "--test-val-fraction",
            "0.5",
            "--min-gene-overlap",
            "0.3",
            "--chunk-size",
            "100",
            "--workers",
            "3",
            "--previous-layer",
            "X_previous",
        )  # fmt: skip
    )
    assert config == PrepareConfig(
        label_key="bulk_labels", layer="raw.X", gene_key="ensembl", input_normalized=True,
        input_transform="log1p", max_genes=512, min_genes=0, min_cells=0, max_mito_fraction=None,
        doublets=True, seed=7, train_fraction=0.8, val_fraction=0.1, test_val_fraction=0.5,
        min_gene_overlap=0.3, chunk_size=100, workers=3, previous_layer="X_previous",
    )  # fmt: skip


def test_input_transform_override(pbmc68k_path, tmp_path):
    from cellformer.preparation.prepare import prepare

    prepared = prepare(
        pbmc68k_path, out=tmp_path / "p", input_normalized=True, input_transform="none", max_genes=8
    )
    assert prepared.meta["inputs"][0]["value_transform"] == "none"
