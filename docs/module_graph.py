"""Draw cellformer's module graph from the code: ``python docs/module_graph.py`` writes docs/module_graph.png.

Each box is a top-level module or package of ``src/cellformer``, placed in its stage of the flow (columns,
left to right, as ``tests/test_layers.py`` defines them: that test fails when an import runs against
the flow). An arrow ``a -> b`` means some module of ``a`` imports from ``b`` (lazy imports inside
functions included); grey arrows follow the flow or stay inside a stage, red ones would run against it
(none do: the test fails on one). Re-run it after moving code.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYERS = HERE.parent / "tests" / "test_layers.py"


def _layers():
    """``tests/test_layers.py`` as a module: its STAGES, ``stage`` and ``imports`` are the one definition."""
    spec = importlib.util.spec_from_file_location("test_layers", LAYERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def component(module: str) -> str:
    """``cellformer.preparation.prepare`` -> ``preparation``; ``cellformer`` -> ``__init__``."""
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def main(out: Path = HERE / "module_graph.png") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = _layers()
    edges = Counter()
    for source, target in layers.imports():
        a, b = component(source), component(target)
        if a != b:
            edges[(a, b)] += 1
    nodes = sorted({n for edge in edges for n in edge}, key=lambda n: (layers.stage(f"cellformer.{n}"), n))
    columns: dict[int, list[str]] = {}
    for node in nodes:
        columns.setdefault(layers.stage(f"cellformer.{node}"), []).append(node)
    position = {}
    for column, members in columns.items():
        for row, node in enumerate(members):
            position[node] = (column * 2.2, -row * 1.1 - 0.55 * (column % 2))
    fig, ax = plt.subplots(figsize=(2.2 * len(columns) + 1, 1.1 * max(map(len, columns.values())) + 2))
    for (a, b), count in sorted(edges.items()):
        backward = layers.stage(f"cellformer.{a}") < layers.stage(f"cellformer.{b}")
        ax.annotate(
            "",
            xy=position[b],
            xytext=position[a],
            arrowprops=dict(
                arrowstyle="-|>",
                color="tab:red" if backward else "0.6",
                lw=0.6 + 0.25 * min(count, 6),
                alpha=0.9 if backward else 0.5,
                shrinkA=14,
                shrinkB=14,
                connectionstyle="arc3,rad=0.12",
            ),
        )
    for node, (x, y) in position.items():
        ax.text(
            x, y, node, ha="center", va="center", fontsize=8,
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="0.3"),
        )  # fmt: skip
    for column in columns:
        ax.text(column * 2.2, 1.0, f"stage {column}", ha="center", fontsize=8, color="0.4")
    ax.set_title(
        "cellformer modules: an arrow a -> b means a imports from b "
        "(grey: with the flow or within a stage; red: against it)",
        fontsize=9,
    )
    xs, ys = zip(*position.values(), strict=True)
    ax.set_xlim(min(xs) - 1.1, max(xs) + 1.1)  # annotations do not grow the axes by themselves
    ax.set_ylim(min(ys) - 0.8, 1.4)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
