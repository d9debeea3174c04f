"""The commands that write: `preprocess`, `pretrain`, `finetune`, `report` on runs, and `plan` that sizes a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmtool import console
from lmtool.cli.app import ConfigArg, OverwriteOpt, SetOpt, app

# --------------------------------------------------------------------------- preprocess


@app.command("preprocess")
def preprocess(config: ConfigArg, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Clean and tokenize the data sources into packed blocks; print the processed directory.

    Example: lmtool preprocess configs/quickstart.yaml --set data.block_size=256
    """
    from lmtool.config import load_config
    from lmtool.tasks.registry import preprocess as run_preprocess

    print(run_preprocess(load_config(config, set_ or []), overwrite=overwrite))


# --------------------------------------------------------------------------- pretrain


@app.command("pretrain")
def pretrain(config: ConfigArg, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Train a causal or masked LM from scratch (or continue one); print the final model directory.

    Example: lmtool pretrain configs/quickstart.yaml --set train.max_steps=100
    """
    from lmtool.config import load_config
    from lmtool.recipes.pretrain import run_pretrain

    final = run_pretrain(load_config(config, set_ or []), overwrite=overwrite)
    if console.is_rank_zero():
        print(final)


@app.command("finetune")
def finetune(config: ConfigArg, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Fine-tune a pretrained model (classification, NER, extractive QA, SFT; LoRA); print the best model's directory.

    Example: lmtool finetune configs/finetune-sentiment.yaml --set train.epochs=1
    """
    from lmtool.config import load_config
    from lmtool.recipes.finetune import run_finetune

    final = run_finetune(load_config(config, set_ or []), overwrite=overwrite)
    if console.is_rank_zero():
        print(final)


# --------------------------------------------------------------------------- report


@app.command("report")
def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run directories (run.output_dir).", show_default=False, metavar="RUN_DIR"),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write report.md and the plots [default: the first RUN_DIR].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Plot loss, learning rate, grad norm, tokens/s, MFU and eval metrics of runs (several: on one figure)
    and summarise them in report.md, from metrics.jsonl; print report.md's path.

    Example: lmtool report runs/quickstart runs/quickstart-wide --out runs/compare
    """
    from lmtool.reporting import write_report

    print(write_report(run_dirs, out))


# --------------------------------------------------------------------------- plan


@app.command("plan")
def plan(
    config: ConfigArg,
    set_: SetOpt = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs per node.")] = 8,
    gpu: Annotated[
        str, typer.Option("--gpu", help="h100 | h200 | a100 | a100-40 | b200 | l40s | v100 | ...")
    ] = "h100",
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes.")] = 1,
    mfu: Annotated[float, typer.Option("--mfu", help="Model FLOPs utilisation the wall time assumes.")] = 0.4,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time-limit",
            help="Job time limit (4h, 90m, 1:30:00) [default: $SLURM_JOB_END_TIME].",
            show_default=False,
        ),  # fmt: skip
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="auto | text | json (auto: text on a terminal, else json).")
    ] = "auto",
) -> None:
    """Estimate parameters, FLOPs, memory per GPU (DDP/FSDP), throughput and wall time of a training config.

    Example: lmtool plan configs/gpt2-124m.yaml --gpus 8 --gpu h100 --nodes 2 | jq .memory_gb_per_gpu.ddp
    """
    from lmtool.config import load_config
    from lmtool.planning import run_plan

    run_plan(load_config(config, set_ or []), gpu=gpu, gpus_per_node=gpus, nodes=nodes, mfu=mfu,
             limit=time_limit, output_format=output_format)  # fmt: skip
