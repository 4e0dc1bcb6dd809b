"""``cellformer compare RUN_DIR... --out REPORT_DIR``: one report comparing runs on the same cells."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="HTML + Markdown report comparing runs (transformers and baselines)",
        description=(
            "Compare runs prepared from the same dataset and splits: metrics side by side with bootstrap "
            "95% CIs, a paired test against the best baseline, per-class F1, confusion matrices, learning "
            "curves, calibration, training time and model size, and a plain-language verdict. Runs not yet "
            "evaluated on the split are evaluated first. Writes REPORT_DIR/report.html (self-contained) and "
            "REPORT_DIR/report.md."
        ),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to compare")
    parser.add_argument("--out", required=True, help="report directory (must not exist unless --overwrite)")
    parser.add_argument(
        "--split", default="test", choices=("test", "val", "train"), help="split (%(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report directory")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import os

    from cellformer.cli import drop_log_lines
    from cellformer.errors import ConfigError
    from cellformer.evaluation.report import compare

    seen: dict[str, str] = {}
    for run_dir in args.run_dirs:
        key = os.path.realpath(run_dir)
        if key in seen:
            raise ConfigError(
                f"run directory {run_dir} is given twice (also as {seen[key]}); compare different runs"
            )
        seen[key] = run_dir
    # the report's path goes to stdout alone (for scripts), so the library's log line would repeat it
    drop_log_lines("cellformer.evaluation.report", "report written to")
    print(compare(args.run_dirs, out=args.out, split=args.split, overwrite=args.overwrite))
    return 0
