"""Render the comparison report as Markdown (PNGs beside it) and one self-contained HTML file.

The report is built once as a list of blocks (:func:`report_document`: title, paragraphs, verdict,
tables, figures, notes); each block renders itself as Markdown and as HTML, so both files show the same
report from one source.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.atomic import atomic_path
from cellformer.evaluation import plots

if TYPE_CHECKING:
    from cellformer.evaluation.result import RunResult

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
table.runs td:nth-child(2), table.runs th:nth-child(2) { text-align: left; }
td.best { font-weight: bold; background: #eef7ee; }
.verdict { background: #f7f9fc; border-left: 4px solid #3366aa; padding: 0.6em 1.2em; }
.verdict li { margin: 0.35em 0; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.1:
        return "<0.1 s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _count(value: int | None) -> str:
    if value is None:
        return "—"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g} {suffix}"
    return str(value)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def summary_table(results: list[RunResult], analysis: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (plain text cells)."""
    reference = analysis["reference_baseline"]
    header = [
        "Run",
        "Kind",
        "Accuracy [95% CI]",
        "Macro-F1 [95% CI]",
        "Weighted F1",
        "Balanced acc.",
        "Top-2 acc.",
        "ECE before → after temperature scaling (T)",
        "Flagged unknown; unknown score median [5%, 95%]",
        f"Δ macro-F1 vs {reference} [95% CI]" if reference else "Δ macro-F1 vs best baseline",
        "p (bootstrap / McNemar)",
        "Parameters",
        "Training time",
    ]
    from cellformer.evaluation.result import ece, scaling_hurt
    from cellformer.evaluation.unknown import report_cell

    rows = []
    for r in results:
        m = r.metrics
        cal = m["calibration"]
        worse = "; worse after scaling" if scaling_hurt(r) else ""
        test = analysis["vs_reference_baseline"].get(r.name)
        rows.append(
            [
                r.name,
                r.kind,
                f"{m['accuracy']:.3f} {_ci(m['ci']['accuracy'])}",
                f"{m['macro_f1']:.3f} {_ci(m['ci']['macro_f1'])}",
                f"{m['weighted_f1']:.3f}",
                f"{m['balanced_accuracy']:.3f}",
                f"{m['top2_accuracy']:.3f}",
                f"{ece(cal['ece_before'])} → {ece(cal['ece_after'])} (T={cal['temperature']:.2f}{worse})"
                if cal.get("fitted_on")
                else f"{ece(cal['ece_before'])} (not calibrated: no validation split)",
                report_cell(m),
                "reference"
                if r.name == reference
                else (
                    "—"
                    if test is None
                    else f"{test['macro_f1']['difference']:+.3f} {_ci(test['macro_f1']['ci'])}"
                ),
                "—"
                if test is None
                else f"{_p(test['macro_f1']['p_value'])} / {_p(test['mcnemar']['p_value'])}",
                _count(m["model"].get("n_parameters")),
                _seconds(m["model"].get("train_seconds")),
            ]
        )
    return header, rows


def per_class_table(results: list[RunResult]) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """Header, rows (F1 of each run per class, by number of cells) and each row's best runs.

    A run is marked best when its F1 (as shown, 3 decimals) is the row's highest and some run scores
    lower: all tied best runs are marked, none when every run scores the same.
    """
    header = ["Cell type", "Cells"] + [r.name for r in results]
    first = results[0].metrics["per_class"]
    order = sorted(
        (i for i, c in enumerate(first) if c["seen_in_training"]), key=lambda i: -first[i]["support"]
    )
    rows, best = [], []
    for i in order:
        f1 = [r.metrics["per_class"][i]["f1"] for r in results]
        rows.append([first[i]["label"], str(first[i]["support"])] + [f"{v:.3f}" for v in f1])
        shown = np.round(f1, 3)
        top = shown.max()
        tied = shown == top
        best.append(
            {int(k) for k in np.flatnonzero(tied)} if first[i]["support"] > 0 and not tied.all() else set()
        )
    return header, rows, best


def _figures(out: Path, results: list[RunResult]) -> list[tuple[str, str, str]]:
    """Write the report's PNGs into ``out``; returns ``(section, caption, file name)`` in report order."""
    from cellformer.evaluation.result import calibrated_proba, slug

    figures: list[tuple[str, str, str]] = []
    split = results[0].metrics["split"]

    def add(section: str, caption: str, name: str, fig) -> None:
        plots.save_png(fig, out / name)
        figures.append((section, caption, name))

    add(
        "overview",
        f"Macro-F1 and accuracy on the {split} split with bootstrap 95% confidence intervals.",
        "intervals.png",
        plots.intervals_figure(
            [r.name for r in results], [r.metrics for r in results], f"All runs ({split} split)"
        ),
    )
    seen = [c for c in results[0].metrics["per_class"] if c["seen_in_training"]]
    add(
        "per_class",
        "F1 of every cell type for every run (cell types ordered by number of cells).",
        "per_class_f1.png",
        plots.per_class_f1_figure(
            [c["label"] for c in seen],
            [c["support"] for c in seen],
            {r.name: [c["f1"] for c in r.metrics["per_class"] if c["seen_in_training"]] for r in results},
            f"F1 per cell type ({split} split)",
        ),
    )
    series = {}
    for r in results:
        proba = calibrated_proba(r)
        series[f"{r.name} (T={r.metrics['calibration']['temperature']:.2f})"] = (
            proba.max(axis=1),
            proba.argmax(axis=1) == r.y_true,
        )
    add(
        "calibration",
        "Reliability of every run after temperature scaling: points on the diagonal mean "
        "a stated confidence of p is right a share p of the time.",
        "reliability_all.png",
        plots.reliability_figure(series, f"Calibrated confidence ({split} split)"),
    )

    used: set[str] = set()
    for r in results:
        stem = slug(r.name)
        while stem in used:
            stem += "_"
        used.add(stem)
        for key, section, caption in (
            (
                "confusion",
                "confusion",
                f"{r.name}: confusion matrix, rows normalised (share of each true cell type).",
            ),
            (
                "learning_curves",
                "learning",
                f"{r.name}: loss, accuracy and macro-F1 per epoch (train and validation).",
            ),
            (
                "reliability",
                "calibration_runs",
                f"{r.name}: reliability before and after temperature scaling.",
            ),
        ):
            source = r.plots.get(key)
            if source is not None and source.exists():
                name = f"{stem}_{key}.png"
                shutil.copyfile(source, out / name)
                figures.append((section, caption, name))
    return figures


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(
    header: list[str],
    rows: list[list[str]],
    best: list[set[int]] | None = None,
    offset: int = 0,
    css_class: str = "",
) -> str:
    parts = [
        f'<table class="{css_class}">' if css_class else "<table>",
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
    ]
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="best"' if best is not None and j - offset in best[i] else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _bold_html(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


SECTIONS = (
    ("overview", "Headline metrics"),
    ("per_class", "Per cell type"),
    ("confusion", "Confusion matrices"),
    ("learning", "Learning curves"),
    ("calibration", "Calibration"),
)


def _intro(results: list[RunResult], analysis: dict[str, Any]) -> list[str]:
    from cellformer.evaluation.result import SMALL_CLASS

    data = results[0].metrics["data"]
    n_boot = results[0].metrics["ci"].get("n_bootstrap", 1000)
    return [
        f"{len(results)} run(s) compared on the same {analysis['n_cells']} cells of the "
        f"**{analysis['split']}** split of `{data['prepared']}` ({len(data['classes'])} cell types).",
        f"Confidence intervals: percentile bootstrap over cells ({n_boot} resamples). For macro-F1 the "
        "cells are resampled within each true cell type, so every resample keeps every cell type (even one "
        "with a single cell) and averages over the same cell types as the point estimate; the interval is "
        "conditional on the split's number of cells per type. Paired test: the same resamples for both "
        "runs (bootstrap "
        "p-value of the macro-F1 difference) and McNemar's exact test on which cells each run gets right. "
        "Calibration: temperature scaling fitted on the validation split; ECE (expected calibration "
        "error) is given as a fraction, 0 is perfect. Per-class scores of cell types with fewer than "
        f"{SMALL_CLASS} cells are too uncertain to rank models on; in the per-cell-type table the best "
        "F1 of each row is marked only where the runs differ.",
    ]


def _unseen_rows(results: list[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        for u in r.metrics.get("unseen", []):
            called = ", ".join(f"{k} ({v})" for k, v in list(u["predicted_as"].items())[:4])
            rows.append([r.name, u["label"], str(u["n_cells"]), called])
    return rows


# -- the report as one document: built once (report_document), rendered as Markdown and as HTML --------
@dataclasses.dataclass(frozen=True)
class Title:
    text: str

    def markdown(self) -> list[str]:
        return [f"# {self.text}", ""]

    def html(self, image_dir: Path) -> list[str]:
        return [f"<h1>{html.escape(self.text)}</h1>"]


@dataclasses.dataclass(frozen=True)
class Heading:
    text: str
    anchor: str  # the HTML id

    def markdown(self) -> list[str]:
        return [f"## {self.text}", ""]

    def html(self, image_dir: Path) -> list[str]:
        return [f'<h2 id="{self.anchor}">{html.escape(self.text)}</h2>']


@dataclasses.dataclass(frozen=True)
class Paragraphs:
    """Lines with ``**bold**`` and ``code``: one Markdown paragraph, one HTML paragraph each."""

    lines: list[str]

    def markdown(self) -> list[str]:
        return [*self.lines, ""]

    def html(self, image_dir: Path) -> list[str]:
        return [f"<p>{_bold_html(line).replace('`', '')}</p>" for line in self.lines]


@dataclasses.dataclass(frozen=True)
class Verdict:
    lines: list[str]

    def markdown(self) -> list[str]:
        return [*(f"- {line}" for line in self.lines), ""]

    def html(self, image_dir: Path) -> list[str]:
        return [
            '<div class="verdict"><ul>',
            *(f"<li>{_bold_html(line)}</li>" for line in self.lines),
            "</ul></div>",
        ]


@dataclasses.dataclass(frozen=True)
class Table:
    """``best[i]``: columns (counted from ``offset``) of row ``i`` to mark as the best."""

    header: list[str]
    rows: list[list[str]]
    best: list[set[int]] | None = None
    offset: int = 0
    css_class: str = ""

    def markdown(self) -> list[str]:
        rows = self.rows
        if self.best is not None:
            rows = [
                [f"**{cell}**" if j - self.offset in marked else cell for j, cell in enumerate(row)]
                for row, marked in zip(rows, self.best, strict=True)
            ]
        return [_md_table(self.header, rows), ""]

    def html(self, image_dir: Path) -> list[str]:
        return [_html_table(self.header, self.rows, self.best, self.offset, self.css_class)]


@dataclasses.dataclass(frozen=True)
class Text:
    text: str
    note: bool = False  # HTML: small grey print

    def markdown(self) -> list[str]:
        return [self.text, ""]

    def html(self, image_dir: Path) -> list[str]:
        opening = '<p class="note">' if self.note else "<p>"
        return [f"{opening}{html.escape(self.text)}</p>"]


@dataclasses.dataclass(frozen=True)
class Figure:
    caption: str
    name: str  # the PNG beside report.md (embedded in the HTML)

    def markdown(self) -> list[str]:
        return [f"![{self.caption}]({self.name})", "", f"*{self.caption}*", ""]

    def html(self, image_dir: Path) -> list[str]:
        data = base64.b64encode((image_dir / self.name).read_bytes()).decode("ascii")
        return [
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(self.caption)}">'
            f'<figcaption class="note">{html.escape(self.caption)}</figcaption></figure>'
        ]


@dataclasses.dataclass(frozen=True)
class Footer:
    text: str

    def markdown(self) -> list[str]:
        return ["---", self.text]

    def html(self, image_dir: Path) -> list[str]:
        return [f'<hr><p class="note">{html.escape(self.text)}</p>']


Block = Title | Heading | Paragraphs | Verdict | Table | Text | Figure | Footer


def report_document(
    results: list[RunResult], analysis: dict[str, Any], figures: list[tuple[str, str, str]]
) -> list[Block]:
    """The report, once: what both renderings show, in order (``figures``: section, caption, PNG name)."""
    header, rows = summary_table(results, analysis)
    pc_header, pc_rows, best = per_class_table(results)
    blocks: list[Block] = [
        Title("Cell-type classifier comparison"),
        Paragraphs(_intro(results, analysis)),
        Heading("Verdict", "verdict"),
        Verdict(list(analysis["verdict"])),
        Heading("All runs side by side", "runs"),
        Table(header, rows, css_class="runs"),
    ]
    no_log = [r.name for r in results if r.metrics["model"].get("epochs") is None]
    for section, title in SECTIONS:
        if section != "per_class" and not any(f[0] == section for f in figures):
            continue
        blocks.append(Heading(title, section))
        if section == "per_class":
            blocks.append(Table(pc_header, pc_rows, best, offset=2))
            unseen = _unseen_rows(results)
            if unseen:
                blocks.append(Text("Cells with labels never seen in training (always errors):"))
                blocks.append(Table(["Run", "Label", "Cells", "Predicted as"], unseen))
        sections = (section, "calibration_runs") if section == "calibration" else (section,)
        blocks += [Figure(caption, name) for where, caption, name in figures if where in sections]
        if section == "learning" and no_log:
            blocks.append(Text(f"No training log (fitted in one step): {', '.join(no_log)}.", note=True))
    blocks.append(Footer(f"Made by cellformer {analysis['cellformer_version']} on {analysis['created']}."))
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    """``report.md`` (its figures are the PNGs beside it)."""
    return "\n".join(line for block in blocks for line in block.markdown()) + "\n"


def render_html(blocks: list[Block], image_dir: Path) -> str:
    """``report.html``, self-contained: the PNGs in ``image_dir`` embedded."""
    body = [line for block in blocks for line in block.html(image_dir)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>cellformer: model comparison</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(out: Path, results: list[RunResult], analysis: dict[str, Any]) -> None:
    """Write the PNGs, ``report.md`` and the self-contained ``report.html`` into ``out``."""
    blocks = report_document(results, analysis, _figures(out, results))
    for name, text in (("report.md", render_markdown(blocks)), ("report.html", render_html(blocks, out))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
