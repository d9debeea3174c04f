"""report.md: one page per report, a table with a row per run, where the time went, the plots, the configs.

Numbers are printed with `num` so that a test can find each value of metrics.jsonl in the page.
"""

from __future__ import annotations

from pathlib import Path

from lmtool.reporting.history import RunHistory, summarize


def num(value: float | int | None, digits: int = 4) -> str:
    """A number as the report prints it: integers with thousands separators, others to `digits` figures."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{secs:02.0f}s" if hours else f"{minutes}m{secs:04.1f}s"


def _percent(part: float | None, whole: float | None) -> str:
    return f" ({part / whole:.0%})" if part is not None and whole else ""


def render_markdown(histories: list[RunHistory], out: Path, plots: list[Path], note: str | None) -> str:
    """The page. `plots` are linked relative to `out`; `note` says why there are none."""
    rows = [(h, summarize(h)) for h in histories]
    lines = [
        f"# Run report: {', '.join(h.label for h in histories)}",
        "",
        f"Made by `lmtool report {' '.join(str(h.run_dir) for h in histories)}` from metrics.jsonl.",
        "",
        "| run | steps | tokens | train loss | eval (last) | best eval loss | wall time | tokens/s (median, overall) | MFU (median) | peak memory GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for history, s in rows:
        evals = ", ".join(f"{k} {num(v)}" for k, v in s["eval"].items()) or "-"
        if s["eval_step"] is not None:
            evals += f" (step {s['eval_step']})"
        mfu = f"{s['mfu_median']:.2%}" if s["mfu_median"] is not None else "-"
        lines.append(
            f"| {history.label} | {num(s['steps'])} | {num(s['tokens'])} | {num(s['train_loss'])} | {evals} "
            f"| {num(s['best_eval_loss'])} | {duration(s['wall_s'])} "
            f"| {num(s['tokens_per_s_median'])}, {num(s['tokens_per_s_overall'])} | {mfu} | {num(s['memory_gb'])} |"
        )
    lines += ["", "## Where the time went", ""]
    for history, s in rows:
        if s["eval_step"] is None:
            evals = "none (no eval record)"
        else:
            evals = "not timed in metrics.jsonl" if s["eval_s"] is None else duration(s["eval_s"])
        lines.append(
            f"- {history.label}: {duration(s['wall_s'])} in the training loop: train steps and checkpoint "
            f"saves {duration(s['train_s'])}{_percent(s['train_s'], s['wall_s'])}, evaluation {evals}"
            f"{_percent(s['eval_s'], s['wall_s'])}."
        )
    lines += ["", "## Plots", ""]
    if note:
        lines.append(note)
    lines += [f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in plots]
    lines += ["", "## Config", ""]
    for history in histories:
        lines += [
            f"<details><summary>{history.label}: config.yaml</summary>",
            "",
            "```yaml",
            (history.config_yaml or "(no config.yaml in the run directory)").rstrip("\n"),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)
