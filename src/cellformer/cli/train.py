"""``cellformer train PREPARED_DIR --out RUN_DIR [--config FILE.yaml] [--KEY VALUE ...] [--resume]``."""

from __future__ import annotations

import argparse
import dataclasses

from cellformer.config import EMBEDDING_INITS, KEEPS, MONITORS, POOLINGS, ModelConfig, TrainConfig


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
            if field.name not in FROM_DATA:
                _add_field(group, field)
    parser.set_defaults(run=run)


# Model sizes fixed by the prepared dataset: config fields (filled in from the data), not options.
FROM_DATA = ("vocab_size", "n_classes", "n_values", "n_context")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
_METAVARS = {"bool": "BOOL", "int": "N", "float": "X", "str": "NAME"}
_CHOICES = {
    "monitor": MONITORS,
    "keep": KEEPS,
    "precision": PRECISIONS,
    "norm": ("pre", "post"),
    "pooling": POOLINGS,
    "embedding_init": EMBEDDING_INITS,
}
_TYPES = {"precision": str, "norm": str, "monitor": str, "keep": str, "pooling": str, "embedding_init": str}


def _add_field(group, field: dataclasses.Field) -> None:
    from cellformer.training.options import parse_value

    flags = [f"--{field.name.replace('_', '-')}"]
    if "_" in field.name:
        flags.append(f"--{field.name}")
    is_bool = field.type in ("bool", bool)
    default = field.default
    text = field.metadata.get("help", "").replace("%", "%%")  # the config field's own help (declared once)
    help_text = f"{text}; default: {default}" if text else f"default: {default}"
    group.add_argument(
        *flags,
        dest=f"cfg_{field.name}",
        type=_TYPES.get(field.name, parse_value),
        nargs="?" if is_bool else None,
        const=True if is_bool else None,
        default=argparse.SUPPRESS,
        choices=_CHOICES.get(field.name),
        metavar=None if field.name in _CHOICES else _METAVARS.get(str(field.type).split(" |")[0], "VALUE"),
        help=help_text,
    )


class Interrupted(KeyboardInterrupt):
    """Raised by the CLI's SIGINT / SIGTERM handler; remembers which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _interrupted_by(exc: BaseException) -> int | None:
    """The signal that stopped training, when ``exc`` comes from one; else ``None``."""
    import signal

    if isinstance(exc, Interrupted):
        return exc.signum
    if isinstance(exc, SystemExit):
        if isinstance(exc.__context__, Interrupted):  # Lightning turns Ctrl-C into sys.exit(1)
            return exc.__context__.signum
        if type(exc).__name__ == "SIGTERMException":  # Lightning's own graceful SIGTERM stop
            return int(signal.SIGTERM)
    return None


def os_error_hint(args: argparse.Namespace) -> str | None:
    """After a disk-full or permission failure: continue the run if an epoch of it was saved."""
    import os
    import shlex

    if not os.path.exists(os.path.join(args.out, "checkpoints", "last.ckpt")):
        return None
    return (
        f"continue with: cellformer train {shlex.quote(args.prepared)} --out {shlex.quote(args.out)} --resume"
    )


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import signal
    import sys

    from cellformer.cli import quiet_lightning
    from cellformer.text import is_primary_process

    quiet_lightning()
    overrides = {k.removeprefix("cfg_"): v for k, v in vars(args).items() if k.startswith("cfg_")}
    if args.quiet and "progress_bar" not in overrides:
        overrides["progress_bar"] = False
    # Ctrl-C and SIGTERM (what SLURM and `kill` send) stop training at once, leaving the run resumable
    # from its last finished epoch's checkpoint. Lightning turns Ctrl-C into exit status 1 and would
    # swallow SIGTERM (stop, then return normally); its SIGTERM handler calls this one after its own.
    previous = {  # a signal the caller ignores (nohup, `&` in a script) stays ignored
        sig: signal.signal(sig, _raise_interrupted)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        from cellformer.training.api import train

        train(args.prepared, out=args.out, config=args.config, resume=args.resume, **overrides)
    except (KeyboardInterrupt, SystemExit) as exc:
        signum = _interrupted_by(exc)
        if signum is None:
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        if is_primary_process():
            started = os.path.exists(os.path.join(args.out, "config.json"))
            hint = (
                f"; continue with: cellformer train {shlex.quote(args.prepared)} "
                f"--out {shlex.quote(args.out)} --resume"
                if started
                else " before the run directory was started"
            )
            print(f"interrupted{hint}", file=sys.stderr)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
