"""`lmtool report` and the report written at the end of a run: the PNGs are images of the stated size, the
plotted series and the summary's numbers are metrics.jsonl's."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from lmtool import reporting
from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.reporting import plots, read_history, summarize, write_report
from lmtool.reporting.summary import num
from tests.conftest import run_cli
from tests.engine_fixtures import make_processed_dir, tiny_config

pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def synthetic_run(run_dir: Path, scale: float = 1.0, resumed_at: int | None = None) -> list[dict]:
    """40 steps, an eval every 10 (timed); with `resumed_at`, a second process took over after that step
    (its elapsed_s starts again from zero)."""
    records, elapsed = [], 0.0
    for step in range(1, 41):
        elapsed = (step - resumed_at if resumed_at and step > resumed_at else step) * 0.5
        records.append({
            "type": "train", "step": step, "loss": scale * (5 * math.exp(-step / 12) + 2), "lr": 1e-3 * min(1, step / 5),
            "grad_norm": 2.0 / step, "tokens_per_s": 1000.0 + 10 * step, "tokens": 256 * step, "samples": 4 * step,
            "elapsed_s": elapsed, "eta_s": 1.0, "mfu": 0.01 * step, "memory_gb": 0.1 + step / 1000,
        })  # fmt: skip
        if step % 10 == 0:
            records.append({
                "type": "eval", "step": step, "loss": scale * (5 * math.exp(-step / 12) + 2.5),
                "perplexity": 100.0 / step, "tokens": 999, "examples": 50, "eval_s": 2.0, "per_class": {"a": 1.0},
            })  # fmt: skip
    run_dir.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "metrics.jsonl").write_text(
        text + '{"type": "train", "st', encoding="utf-8"
    )  # a cut last line
    (run_dir / "config.yaml").write_text("run:\n  name: synthetic\ntrain:\n  lr: 0.001\n", encoding="utf-8")
    return records


def test_the_plots_draw_the_values_of_metrics_jsonl_several_runs_on_one_figure(tmp_path):
    first = synthetic_run(tmp_path / "a")
    second = synthetic_run(tmp_path / "b", scale=1.5)
    histories = [read_history(tmp_path / "a"), read_history(tmp_path / "b")]

    figure = plots.render(plots.loss_panels(histories), plots.LOSS_SIZE, 1)
    drawn = {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in figure.axes[0].get_lines()
    }
    for name, records in (("a", first), ("b", second)):
        for kind, label in (("train", f"{name} train"), ("eval", f"{name} validation")):
            chosen = [r for r in records if r["type"] == kind]
            assert drawn[label] == ([r["step"] for r in chosen], [r["loss"] for r in chosen])

    figure = plots.render(plots.training_panels(histories), plots.TRAINING_SIZE, 2)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["learning rate", "grad norm", "tokens/s", "MFU"]
    for axes, key in zip(figure.axes, ("lr", "grad_norm", "tokens_per_s", "mfu"), strict=True):
        line = axes.get_lines()[1]  # run b
        assert list(line.get_ydata()) == [r[key] for r in second if r["type"] == "train"]

    evals = plots.eval_panels(histories)
    assert [panel.title for panel in evals] == [
        "perplexity"
    ]  # loss is on loss.png; counts, eval_s, nested: not metrics
    assert evals[0].lines[0].values == [r["perplexity"] for r in first if r["type"] == "eval"]


def test_report_writes_pngs_of_the_stated_size_and_a_summary_with_the_numbers_of_metrics_jsonl(tmp_path):
    records = synthetic_run(tmp_path / "run", resumed_at=25)
    result = run_cli("report", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    report = tmp_path / "run" / "report.md"
    assert result.stdout == f"{report}\n"  # stdout: the result only

    assert png_size(tmp_path / "run" / "loss.png") == plots.LOSS_SIZE
    assert png_size(tmp_path / "run" / "training.png") == plots.TRAINING_SIZE
    assert png_size(tmp_path / "run" / "eval.png") == (plots.EVAL_WIDTH, plots.EVAL_ROW_HEIGHT)

    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    summary = summarize(read_history(tmp_path / "run"))
    assert summary["steps"] == 40 and summary["tokens"] == train[-1]["tokens"]
    assert summary["train_loss"] == train[-1]["loss"]
    assert summary["eval"] == {"loss": evals[-1]["loss"], "perplexity": evals[-1]["perplexity"]}
    assert summary["best_eval_loss"] == min(r["loss"] for r in evals)
    assert summary["memory_gb"] == max(r["memory_gb"] for r in train)
    # Two processes: up to step 25 (12.5 s, its evals inside), then 15 steps (7.5 s) and the final eval after them.
    assert summary["wall_s"] == pytest.approx(12.5 + 7.5 + 2.0)
    assert summary["eval_s"] == pytest.approx(8.0)
    assert summary["train_s"] == pytest.approx(22.0 - 8.0)
    assert summary["tokens_per_s_overall"] == pytest.approx(train[-1]["tokens"] / 14.0)

    page = report.read_text()
    for value in (
        summary["train_loss"],
        evals[-1]["loss"],
        evals[-1]["perplexity"],
        summary["best_eval_loss"],
    ):
        assert num(value) in page
    assert f"| {train[-1]['tokens']:,} |" in page and "0m22.0s" in page and "evaluation 0m08.0s (36%)" in page
    assert "![loss](loss.png)" in page and "lr: 0.001" in page  # the plots and the config


def test_several_runs_go_to_out_and_a_missing_metrics_file_exits_2(tmp_path):
    synthetic_run(tmp_path / "a")
    synthetic_run(tmp_path / "b")
    result = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "cmp" / "report.md")
    assert "| a |" in (tmp_path / "cmp" / "report.md").read_text()
    assert png_size(tmp_path / "cmp" / "loss.png") == plots.LOSS_SIZE

    result = run_cli("report", str(tmp_path / "nothing"))
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'nothing' / 'metrics.jsonl'}: not found (is {tmp_path / 'nothing'} a run directory of lmtool pretrain/finetune?)"
    )


def test_without_matplotlib_report_md_is_written_and_a_warning_says_how_to_get_plots(
    tmp_path, monkeypatch, capsys
):
    synthetic_run(tmp_path / "run")
    monkeypatch.setattr(reporting, "have_matplotlib", lambda: False)
    path = write_report([tmp_path / "run"])
    assert path.is_file() and not list((tmp_path / "run").glob("*.png"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1 and "pip install 'lmtool[report]'" in warnings[0]


def test_a_run_writes_its_report_at_the_end_unless_logging_report_is_false(tmp_path, capsys, one_thread):
    data = make_processed_dir(tmp_path / "processed")
    config = tiny_config(tmp_path, data, max_steps=6, eval_every=3, log_every=2)
    assert load_config(None).logging.report is True  # on by default (the test configs turn it off)
    run_pretrain(load_config(config, ["logging.report=true"]))
    run = tmp_path / "run"
    assert f"report: {run / 'report.md'}" in capsys.readouterr().err
    assert png_size(run / "loss.png") == plots.LOSS_SIZE
    history = read_history(run)
    assert [r["step"] for r in history.evals] == [3, 6] and all(r["eval_s"] > 0 for r in history.evals)
    assert num(history.train[-1]["loss"]) in (run / "report.md").read_text()

    off = tmp_path / "off"
    off.mkdir()
    run_pretrain(load_config(tiny_config(off, data, max_steps=2), ["logging.report=false"]))
    assert (off / "run" / "metrics.jsonl").is_file() and not (off / "run" / "report.md").exists()
