"""The ``cellformer`` command line: a thin layer over the public API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.
Modules import torch and the heavy libraries only inside ``run`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from cellformer.errors import CellformerError
from cellformer.text import is_primary_process

COMMANDS = ("prepare", "train", "evaluate", "baseline", "compare", "predict", "merge_annotations", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellformer",
        description="Train, evaluate and compare transformer cell-type classifiers on scRNA-seq (.h5ad).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.add_parser(subparsers)
    return parser


def _command_module(name: str):
    try:
        return importlib.import_module(f"cellformer.cli.{name}")
    except ModuleNotFoundError as exc:  # a sub-command not built yet
        if exc.name == f"cellformer.cli.{name}":
            return None
        raise


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    if not is_primary_process():  # the first process reports; the others only their own errors
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "numba", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def drop_log_lines(logger_name: str, *prefixes: str) -> None:
    """Hide a library's log lines that the command's own summary repeats (one summary per command)."""
    logging.getLogger(logger_name).addFilter(_DropMessages(prefixes))


def quiet_lightning() -> None:
    """Lightning sets its own log levels (INFO, with its own handler) when imported: lower them again."""
    import lightning.pytorch  # noqa: F401

    level = max(logging.getLogger().level, logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    _configure_logging(args.verbose, args.quiet)
    from cellformer.cli.os_errors import quiet_failed_write_cleanup

    with quiet_failed_write_cleanup():
        code = _run(args)
    if argv is None and getattr(args, "hdf5_write_failed", False):
        # HDF5 cannot be torn down after a failed write (it crashes at exit): this process is the
        # command's own (no argv given), so end it now, with the error line already written
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args) or 0)
    except CellformerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # disk full, permission denied, read-only location: one line, no traceback
        from cellformer.cli.os_errors import as_os_error, os_error_line

        os_error = as_os_error(exc)
        if os_error is None:
            raise
        hint = getattr(sys.modules.get(getattr(args.run, "__module__", "")), "os_error_hint", None)
        print(f"error: {os_error_line(os_error, args, hint(args) if hint else None)}", file=sys.stderr)
        args.hdf5_write_failed = "file write failed" in str(exc)  # HDF5's text for it
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
