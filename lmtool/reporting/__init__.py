"""`lmtool report`: plots and a one-page summary of one or more runs, from their metrics.jsonl alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmtool import console
from lmtool.reporting.history import RunHistory, read_history, summarize
from lmtool.train.atomic import rewrite_lines

__all__ = ["RunHistory", "read_history", "summarize", "write_report"]

NO_PLOTS = "matplotlib is not installed: report.md has no plots (pip install 'lmtool[report]' for them)"


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write report.md and its PNG plots into `out` (default: the first run directory); return report.md.
    Without matplotlib the page is written without plots, and a warning says how to get them."""
    from lmtool.reporting.summary import render_markdown

    histories = [read_history(Path(d)) for d in run_dirs]
    if len({h.label for h in histories}) < len(histories):  # runs/a/run and runs/b/run: the paths tell
        for history in histories:
            history.label = str(history.run_dir)
    out = Path(out) if out is not None else histories[0].run_dir
    out.mkdir(parents=True, exist_ok=True)
    if not have_matplotlib():
        console.warning(NO_PLOTS)
        plots, note = [], NO_PLOTS + "."
    else:
        from lmtool.reporting.plots import write_plots

        plots, note = write_plots(histories, out), None
    path = out / "report.md"
    rewrite_lines(path, render_markdown(histories, out, plots, note).splitlines())
    return path
