"""`--help` texts: defaults and choices shown, no internal names, no options that cannot be changed."""

from __future__ import annotations

import pytest

from cellformer.cli import build_parser


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


def test_help_texts() -> None:
    for command in ("evaluate", "compare"):
        assert "95% " in _help(command) and "%%" not in _help(command)
    prepare = " ".join(_help("prepare").split())
    for text in ("--train-fraction TRAIN_FRACTION without --test: fraction of cells for training (0.7)",
                 "(0.15)", "cells read at a time (2048)", "tokenizer processes (1)",
                 "{rank,binned,hybrid}", "'off' (or 'none') disables (0.2)"):  # fmt: skip
        assert text in prepare
    train = _help("train")
    for hidden in ("--vocab-size", "--n-classes", "--n-values", "--n-context", "default: data"):
        assert hidden not in train
    assert "--norm {pre,post}" in train and "--precision {32-true,bf16-mixed," in train


def test_tokenizer_choices_match_the_registry() -> None:
    from cellformer.cli.prepare import TOKENIZERS
    from cellformer.tokenize.base import _REGISTRY

    assert set(TOKENIZERS) == set(_REGISTRY)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "x.h5ad", "--out", "y", "--max-mito-fraction", "abc"],
         "--max-mito-fraction: expected a fraction between 0 and 1, or 'off'; got 'abc'"),
        (["train", "p", "--out", "r", "--precision", "16"], "--precision: invalid choice: '16'"),
        (["train", "p", "--out", "r", "--norm", "mid"], "--norm: invalid choice: 'mid'"),
    ],
)  # fmt: skip
def test_bad_option_values_say_what_is_accepted(capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_max_mito_fraction_values() -> None:
    from cellformer.cli.prepare import fraction_or_off

    assert (
        fraction_or_off("0.1") == 0.1 and fraction_or_off("none") is None and fraction_or_off("OFF") is None
    )
