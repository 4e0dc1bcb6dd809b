"""Each run kind answers for itself: one list of kinds, one baseline registry, no switch on a kind name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import cellformer
from cellformer.kinds import BASELINES, KINDS, LOADERS, TRANSFORMER

ROOT = Path(cellformer.__file__).parent
# the registries themselves, the only modules that may name a kind
REGISTRIES = {ROOT / "kinds.py", ROOT / "baselines" / "models.py"}


def test_the_baseline_registry_is_the_list_of_baseline_kinds() -> None:
    from cellformer.baselines.models import METHODS

    assert tuple(METHODS) == BASELINES and KINDS == (TRANSFORMER, *BASELINES)
    for name, method in METHODS.items():
        assert method.name == name and method.embedding and method.unknown_space


def test_every_kind_loads_into_a_class_that_answers_the_protocol() -> None:
    for kind, loader in LOADERS.items():
        module, attr = loader.split(":")
        cls = getattr(importlib.import_module(module), attr)
        for name in ("load", "predict_split", "predict_adata", "outputs", "is_baseline", "embedding_name",
                     "unknown_space"):  # fmt: skip
            assert hasattr(cls, name), f"{kind}: {attr} lacks {name}"


def test_no_module_switches_on_a_kind_name() -> None:
    """No ``kind == "mlp"`` nor ``{"logreg": ...}`` outside the registries: ask the loaded run instead."""
    found = []
    for path in ROOT.rglob("*.py"):
        if path in REGISTRIES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [node.left, *node.comparators]
            elif isinstance(node, ast.Dict):
                constants = [k for k in node.keys if k is not None]
            else:
                continue
            for c in constants:
                if isinstance(c, ast.Constant) and c.value in KINDS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} ({c.value!r})")
    assert not found, "kind names switched on outside cellformer.kinds / baselines.models: " + ", ".join(
        found
    )
