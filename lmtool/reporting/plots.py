"""The report's PNG plots, against steps, several runs on one figure (one colour per run).

What a figure shows is decided first (`loss_panels`, ... give the exact series, taken from metrics.jsonl)
and drawn second (`render`), so a test can hold the drawn lines against the file. matplotlib is the
optional `report` extra: it is imported only here, through the object API (no pyplot, no display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lmtool.reporting.history import RunHistory

DPI = 100
LOSS_SIZE = (800, 450)  # pixels
TRAINING_SIZE = (1000, 700)
EVAL_WIDTH, EVAL_ROW_HEIGHT, EVAL_COLUMNS = 1000, 350, 3


@dataclass
class Line:
    label: str
    steps: list[int]
    values: list[float]
    color: str
    dashed: bool = False


@dataclass
class Panel:
    title: str
    lines: list[Line]


def loss_panels(histories: list[RunHistory]) -> list[Panel]:
    """Train loss (solid) and validation loss (dashed, dots) of every run."""
    lines = []
    for i, history in enumerate(histories):
        lines.append(Line(f"{history.label} train", *history.series("train", "loss"), f"C{i}"))
        steps, values = history.series("eval", "loss")
        if steps:
            lines.append(Line(f"{history.label} validation", steps, values, f"C{i}", dashed=True))
    return [Panel("loss", lines)]


def training_panels(histories: list[RunHistory]) -> list[Panel]:
    """Learning rate, gradient norm (before clipping), tokens/s and MFU of every run."""
    keys = (("lr", "learning rate"), ("grad_norm", "grad norm"), ("tokens_per_s", "tokens/s"), ("mfu", "MFU"))
    return [
        Panel(title, [Line(h.label, *h.series("train", key), f"C{i}") for i, h in enumerate(histories)])
        for key, title in keys
    ]


def eval_panels(histories: list[RunHistory]) -> list[Panel]:
    """One panel per eval metric besides the loss (perplexity, accuracy, f1, ...); none without them."""
    names: list[str] = []
    for history in histories:
        names += [name for name in history.eval_metrics() if name not in names]
    return [
        Panel(
            name,
            [Line(h.label, *h.series("eval", name), f"C{i}", dashed=True) for i, h in enumerate(histories)],
        )
        for name in names
    ]


def eval_size(panels: list[Panel]) -> tuple[int, int]:
    return EVAL_WIDTH, EVAL_ROW_HEIGHT * math.ceil(len(panels) / EVAL_COLUMNS)


def render(panels: list[Panel], size: tuple[int, int], columns: int):
    """A matplotlib Figure of `size` pixels with one axes per panel; an empty series says "not recorded"."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    rows = math.ceil(len(panels) / columns)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_title(panel.title)
        axes.set_xlabel("step")
        drawn = [line for line in panel.lines if line.steps]
        for line in drawn:
            axes.plot(
                line.steps,
                line.values,
                color=line.color,
                label=line.label,
                linestyle="--" if line.dashed else "-",
                marker="o" if line.dashed else None,
                markersize=3,
            )
        if not drawn:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
        elif len(drawn) > 1:
            axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    return figure


def write_plots(histories: list[RunHistory], out: Path) -> list[Path]:
    """loss.png, training.png and (when there are eval metrics besides the loss) eval.png in `out`."""
    jobs = [
        ("loss.png", loss_panels(histories), LOSS_SIZE, 1),
        ("training.png", training_panels(histories), TRAINING_SIZE, 2),
    ]
    evals = eval_panels(histories)
    if evals:
        jobs.append(("eval.png", evals, eval_size(evals), min(len(evals), EVAL_COLUMNS)))
    written = []
    for name, panels, size, columns in jobs:
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        render(panels, size, columns).savefig(tmp, format="png")
        tmp.replace(path)  # atomic: a reader sees the old plot or the new one
        written.append(path)
    return written
