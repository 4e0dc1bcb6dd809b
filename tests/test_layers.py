"""The import direction: a module imports only from its own stage or an earlier one (docs/design.md).

Parsed from the source (``ast``), lazy imports inside functions included, so a backward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cellformer

ROOT = Path(cellformer.__file__).parent

# the stages in flow order; a module belongs to the first entry that is its name or a package above it
STAGES: list[tuple[str, ...]] = [
    ("errors", "atomic", "provenance", "config", "tokens", "text"),  # leaves
    ("data",),
    ("tokenize",),
    ("timecourse",),  # previous-time-point profiles: ancestor mapping, prepare's and predict's sources
    ("integrity",),  # manifests of prepared datasets and run directories
    ("preparation",),  # prepare: input files -> prepared dataset (tokenized); reading one
    ("runs",),  # the run-directory protocol (loading any kind of run)
    ("model",),
    ("training",),
    ("baselines",),
    ("unknown_scores", "unknown", "calibrate_run"),
    ("evaluation", "unknown_report"),
    ("annotations", "prediction"),  # annotations: writing prediction's results (copy, pieces, merge)
    ("datasets", "presets", "demo_workflow", "cli", "__init__", "__main__"),
]

# imports that still run against the flow (issue 14), each to be removed by moving code, never added to:
# the test fails on a backward import not listed here, and on a listed one that is gone (delete its line)
KNOWN_BACKWARD = {
    ("cellformer.baselines.api", "cellformer.unknown"),
    ("cellformer.training.api", "cellformer.calibrate_run"),
    ("cellformer.unknown", "cellformer.evaluation.calibration"),
    ("cellformer.unknown", "cellformer.evaluation.metrics"),
    ("cellformer.unknown_scores", "cellformer.evaluation.metrics"),
}


def stage(module: str) -> int:
    parts = module.split(".")[1:] or ["__init__"]
    for index, names in enumerate(STAGES):
        if parts[0] in names:
            return index
    raise AssertionError(f"module {module} is in no stage of STAGES; add it where it belongs in the flow")


def imports() -> set[tuple[str, str]]:
    found = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([target] if target else []))
                names = [target] if target != "cellformer" else [f"cellformer.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("cellformer.") and name != module:
                    found.add((module, name))
    return found


def test_no_module_imports_from_a_later_stage() -> None:
    backward = {(a, b) for a, b in imports() if stage(b) > stage(a)}
    new = sorted(backward - KNOWN_BACKWARD)
    assert not new, "imports against the flow (move the code, see docs/design.md): " + "; ".join(
        f"{a} -> {b}" for a, b in new
    )
    gone = sorted(KNOWN_BACKWARD - backward)
    assert not gone, "fixed, so delete from KNOWN_BACKWARD: " + "; ".join(f"{a} -> {b}" for a, b in gone)


def test_the_leaves_import_only_errors() -> None:
    leaves = {f"cellformer.{name}" for name in STAGES[0]}
    assert not sorted((a, b) for a, b in imports() if a in leaves and b != "cellformer.errors")


# pairs of modules importing each other (one of the two at call time), to be untangled the same way
KNOWN_CYCLES: set[tuple[str, str]] = set()


def test_no_two_modules_import_each_other() -> None:
    found = imports()
    cycles = {tuple(sorted((a, b))) for a, b in found if (b, a) in found}
    assert not sorted(cycles - KNOWN_CYCLES), f"import cycles: {sorted(cycles - KNOWN_CYCLES)}"
    assert not sorted(KNOWN_CYCLES - cycles), (
        f"untangled, delete from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - cycles)}"
    )


def test_the_module_graph_picture_is_drawn_from_these_stages(tmp_path: Path) -> None:
    """docs/module_graph.py re-draws docs/module_graph.png from STAGES and the parsed imports."""
    import importlib.util

    script = ROOT.parents[1] / "docs" / "module_graph.py"
    spec = importlib.util.spec_from_file_location("module_graph", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path / "graph.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
