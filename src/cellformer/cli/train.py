"""``cellformer train PREPARED_DIR --out RUN_DIR [--config FILE.yaml] [--KEY VALUE ...] [--resume]``."""

from __future__ import annotations

import argparse
import dataclasses

from cellformer.config import MONITORS, ModelConfig, TrainConfig


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a transformer classifier on a prepared dataset",
        description=(
            "Train the cell transformer on a prepared dataset into a run directory. Settings come from the "
            "defaults (a small model for a laptop CPU), then --config (a YAML file with model:/train: "
            "sections, or a preset such as reference_gpu), then single --KEY VALUE options."
        ),
    )
    parser.add_argument("prepared", metavar="PREPARED_DIR", help="output of `cellformer prepare`")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML config file or preset name (reference_gpu)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in RUN_DIR from its last checkpoint",
    )
    for cls, title in ((ModelConfig, "model"), (TrainConfig, "training")):
        group = parser.add_argument_group(f"{title} options (override --config)")
        for field in dataclasses.fields(cls):
            _add_field(group, field)
    parser.set_defaults(run=run)


_METAVARS = {"bool": "BOOL", "int": "N", "float": "X", "str": "NAME"}
_CHOICES = {"monitor": MONITORS}
_HELP = {
    "monitor": "validation metric for early stopping and the best checkpoint: val_loss (lowest) or "
    "val_macro_f1 (highest)",
    "context_dropout": "probability of replacing each training cell's context token (--batch-key / "
    "--context-key) by its covariate's <UNK>, so cells of batches unseen in training get a trained token",
}


def _add_field(group, field: dataclasses.Field) -> None:
    from cellformer.training.options import parse_value

    flags = [f"--{field.name.replace('_', '-')}"]
    if "_" in field.name:
        flags.append(f"--{field.name}")
    is_bool = field.type in ("bool", bool)
    default = (
        "data"
        if field.name in ("vocab_size", "n_classes", "n_values", "n_context") and field.default is None
        else field.default
    )
    group.add_argument(
        *flags,
        dest=f"cfg_{field.name}",
        type=parse_value,
        nargs="?" if is_bool else None,
        const=True if is_bool else None,
        default=argparse.SUPPRESS,
        choices=_CHOICES.get(field.name),
        metavar=None if field.name in _CHOICES else _METAVARS.get(str(field.type).split(" |")[0], "VALUE"),
        help=f"{_HELP[field.name]}; default: {default}" if field.name in _HELP else f"default: {default}",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from cellformer.cli import quiet_lightning
    from cellformer.training.api import train

    quiet_lightning()
    overrides = {k.removeprefix("cfg_"): v for k, v in vars(args).items() if k.startswith("cfg_")}
    out = train(args.prepared, out=args.out, config=args.config, resume=args.resume, **overrides)
    logging.getLogger(__name__).info("trained model in %s", out)
    return 0
