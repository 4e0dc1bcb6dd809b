"""The import direction: a module imports only from its own stage or an earlier one, and no two modules
import each other (docs/design.md).

Parsed from the source (``ast``), lazy imports inside functions and ``TYPE_CHECKING`` imports included, so
a backward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cellformer

ROOT = Path(cellformer.__file__).parent

# the stages in flow order; a module belongs to the first entry that is its name or a package above it
STAGES: list[tuple[str, ...]] = [
    ("errors", "atomic", "provenance", "config", "tokens", "text", "kinds", "threads"),  # leaves
    ("data",),
    ("tokenize",),
    ("timecourse",),  # previous-time-point profiles: ancestor mapping, prepare's and predict's sources
    ("integrity",),  # manifests of prepared datasets and run directories
    ("preparation",),  # prepare: input files -> prepared dataset (tokenized); reading one
    ("runs",),  # the run-directory protocol (loading any kind of run)
    ("calibration",),  # temperature and unknown-cell detector, fitted once per run, stored in it
    ("model",),
    ("training",),
    ("baselines",),
    ("evaluation",),
    ("prediction",),  # run directory + AnnData -> annotated AnnData (files: copy, annotations, shards)
    ("datasets", "presets", "demo_workflow", "cli", "__init__", "__main__"),
]


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
    backward = sorted((a, b) for a, b in imports() if stage(b) > stage(a))
    assert not backward, "imports against the flow (move the code, see docs/design.md): " + "; ".join(
        f"{a} -> {b}" for a, b in backward
    )


def test_the_leaves_import_only_errors() -> None:
    leaves = {f"cellformer.{name}" for name in STAGES[0]}
    assert not sorted((a, b) for a, b in imports() if a in leaves and b != "cellformer.errors")


def test_no_two_modules_import_each_other() -> None:
    """Not even within a stage, and not when one of the two imports the other at call time."""
    found = imports()
    cycles = sorted({tuple(sorted((a, b))) for a, b in found if (b, a) in found})
    assert not cycles, f"import cycles: {cycles}"


def test_the_module_graph_picture_is_drawn_from_these_stages(tmp_path: Path) -> None:
    """docs/module_graph.py re-draws docs/module_graph.png from STAGES and the parsed imports."""
    import importlib.util

    script = ROOT.parents[1] / "docs" / "module_graph.py"
    spec = importlib.util.spec_from_file_location("module_graph", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path / "graph.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
