"""Config resolution: presets, YAML sections and flat keys, command-line values, resume rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellformer.config import ModelConfig, TrainConfig
from cellformer.data.dataset import LengthBucketSampler
from cellformer.errors import ConfigError
from cellformer.training import options
from cellformer.training.data import ShardedBatchSampler
from cellformer.training.module import warmup_cosine


def test_reference_gpu_preset_is_the_reference_model() -> None:
    model, train = options.resolve("reference_gpu")
    assert (model.n_layers, model.d_model, model.n_heads, model.head_dim) == (3, 128, 3, 32)
    assert (model.head_hidden, model.dropout, model.max_length) == (64, 0.05, 2049)
    assert train.accelerator == "gpu" and train.precision == "bf16-mixed"


def test_laptop_defaults_are_small() -> None:
    model, train = ModelConfig(), TrainConfig()
    assert model.max_length <= 512 and model.d_model <= 128 and train.accelerator == "cpu"
    assert train.patience == 20 and train.class_weights


def test_yaml_sections_flat_keys_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  d_model: 48\n  n_heads: 3\ntrain:\n  lr: 0.002\nbatch_size: 16\n")
    model, train = options.resolve(path, {"lr": 0.01, "norm": "post"})
    assert (model.d_model, model.n_heads, model.norm) == (48, 3, "post")
    assert (train.lr, train.batch_size) == (0.01, 16)


def test_missing_config_names_presets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="presets: reference_gpu"):
        options.resolve(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("true", True),
        ("False", False),
        ("none", None),
        ("post", "post"),
    ],
)
def test_parse_value(text: str, value) -> None:
    assert options.parse_value(text) == value


def test_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="TrainConfig.batch_size must be int"):
        TrainConfig(batch_size=2.5)
    assert TrainConfig(lr=1).lr == 1.0  # ints are fine where floats are expected


def test_resume_differences_ignore_execution_keys() -> None:
    stored = {"model": {"d_model": 32}, "train": {"lr": 0.01, "devices": 1}}
    assert options.resume_differences(stored, {"model": {"d_model": 32}, "train": {"devices": 4}}) == []
    assert options.resume_differences(stored, {"model": {"d_model": 64}, "train": {}}) == [
        "model.d_model: run has 32, asked 64"
    ]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sharded_batches_are_even_and_cover_every_cell(world_size: int) -> None:
    lengths = np.random.default_rng(0).integers(2, 50, size=103)
    shards = [
        list(ShardedBatchSampler(LengthBucketSampler(lengths, 8, seed=1), rank, world_size))
        for rank in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1  # DDP: every process takes the same number of steps
    assert len(shards[0]) == len(ShardedBatchSampler(LengthBucketSampler(lengths, 8), 0, world_size))
    cells = [i for shard in shards for batch in shard for i in batch]
    assert set(cells) == set(range(103))


def test_sampler_epoch_changes_the_order() -> None:
    sampler = ShardedBatchSampler(LengthBucketSampler(np.arange(2, 66), 8, seed=0))
    first = list(sampler)
    sampler.sampler.set_epoch(1)  # what Lightning calls at each epoch start
    assert list(sampler) != first


def test_warmup_then_cosine() -> None:
    factor = warmup_cosine(100, 0.1, 0.05)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(99) == pytest.approx(0.05, abs=1e-3)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 99))


def test_trainer_setup(tmp_path: Path) -> None:
    from cellformer.training.trainer import build_trainer, precision

    trainer, checkpoint, early = build_trainer(tmp_path, TrainConfig(grad_clip=0.5), validate=True)
    assert early is not None and early.patience == 20 and early.monitor == "val_macro_f1"
    assert checkpoint.monitor == "val_macro_f1" and checkpoint.mode == "max" and checkpoint.save_last
    assert trainer.gradient_clip_val == 0.5
    assert precision(TrainConfig()) == "32-true"
    assert precision(TrainConfig(accelerator="gpu")) == "bf16-mixed"
    _, checkpoint, early = build_trainer(tmp_path, TrainConfig(), validate=False)
    assert early is None and checkpoint.monitor is None


def test_every_config_field_carries_its_help_and_train_help_shows_it(capsys) -> None:
    """A new option is declared once, in its config dataclass: its text reaches ``--help`` from there."""
    import dataclasses

    from cellformer.config import ModelConfig, PrepareConfig, TrainConfig

    for cls in (PrepareConfig, ModelConfig, TrainConfig):
        missing = [f.name for f in dataclasses.fields(cls) if not cls.help(f.name)]
        assert not missing, f"{cls.__name__} fields without help text: {missing}"
    from cellformer.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["train", "--help"])
    assert exit_code.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    for name in ("gene_dropout", "pretrain_epochs", "max_length"):
        cls = ModelConfig if name == "max_length" else TrainConfig
        assert " ".join(cls.help(name).split()) in flat, name


def test_the_run_input_record_is_read_in_one_typed_place(bladder_prepared) -> None:
    """``config.json["prepared"]`` (path hint + meta.json at training time) has one reader, RunInput."""
    from cellformer.config import PrepareConfig, RunInput
    from cellformer.data.align import training_input_options
    from cellformer.preparation.prepared import PreparedData

    meta = PreparedData(bladder_prepared).meta
    record = RunInput.of({"prepared": {"path": "/data/bladder", "meta": meta}})
    assert record.path == "/data/bladder" and record.created == meta["created"]
    assert record.prepare == PrepareConfig.from_dict(meta["config"])
    assert record.tokenizer == meta["tokenizer"] and record.label_key == meta["label_key"]
    options = training_input_options({"prepared": {"meta": meta}})
    assert options["input_normalized"] == record.prepare.input_normalized
    assert options["min_overlap"] == record.prepare.min_gene_overlap
    empty = RunInput.of({})  # nothing recorded: no path, the default prepare settings
    assert empty.path is None and empty.prepare == PrepareConfig()
