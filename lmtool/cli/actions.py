"""What each command of the table (commands.py) runs: a thin call of the module doing the work,
imported when the command runs (so that `lmtool --help` stays fast), and the commands' usage checks.

A command's docstring is its `--help` text (first line: the summary in `lmtool --help`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtool import console
from lmtool.cli.options import CONFIG, MODEL, SET
from lmtool.errors import LmtoolError

if TYPE_CHECKING:
    from lmtool.config import Config


def evaluate(cfg: Config) -> None:
    """Score a model: perplexity and bits per byte (causal LMs), masked-token loss and accuracy (masked LMs),
    the task's metrics (fine-tuned classifiers and taggers).

    Example: lmtool evaluate configs/quickstart.yaml --stride 128 | jq .perplexity
    """
    from lmtool.evaluation import run_evaluate

    print(json.dumps(run_evaluate(cfg), indent=2))


def check_evaluate(values: Mapping[str, Any]) -> None:
    sets = values[SET.name] or []
    if (
        values[CONFIG.name] is None
        and values[MODEL.name] is None
        and not any(s.startswith("evaluate.model=") for s in sets)
    ):
        raise LmtoolError(
            "nothing to evaluate: give --model DIR (a model directory) or a CONFIG (its run's final/)"
        )


def generate(cfg: Config, prompts: list[str] | None, file: str | None) -> None:
    """Continue prompts with a causal LM or fill [MASK]s with a masked LM; JSON lines when piped.

    Example: printf 'Once upon\\nThe king\\n' | lmtool generate --model runs/quickstart/final --seed 1 | jq -r .text
    """
    from lmtool.generation import run_generate

    run_generate(cfg.generate, prompts or [], file)


def unescape(stops: list[str] | None) -> list[str] | None:
    """`--stop '\\n'` as typed in a shell: the newline it means."""
    return [s.replace("\\n", "\n").replace("\\t", "\t") for s in stops] if stops else None


def predict(texts: list[str] | None, model: str, file: str | None, **settings: Any) -> None:
    """Label texts with a fine-tuned classifier, or find entities (with character offsets) with a tagger.

    Example: printf 'great film\\nawful plot\\n' | lmtool predict --model runs/sentiment/final | jq -r .label
    """
    from lmtool.prediction import run_predict

    run_predict(model, texts or [], file, **settings)


def export(
    model: str, output_format: str, quantize: str | None, out: str | None, data: str | None, overwrite: bool
) -> None:
    """Export a classifier, tagger or causal LM to ONNX, checked against PyTorch; --quantize int8.

    Example: lmtool export --model runs/sentiment/final --quantize int8 | jq .quantize.validation
    """
    from lmtool.export import run_export

    report = run_export(model, fmt=output_format, quantize=quantize, out=out, data=data, overwrite=overwrite)
    print(json.dumps(report, indent=2))


def serve(
    model: str,
    host: str,
    port: int,
    api_key: str | None,
    device: str,
    precision: str,
    max_batch: int,
    batch_window_ms: float,
    **limits: int,
) -> None:
    """Serve a model over HTTP: OpenAI-compatible completions and chat (causal LMs), fill-mask (masked LMs),
    classify / entities / answer (the models predict reads).

    Example: lmtool serve --model runs/quickstart/final --port 8000
    """
    from lmtool.serve import Limits, run_serve

    run_serve(
        model,
        host=host,
        port=port,
        api_key=api_key or None,
        device=device,
        precision=precision,
        limits=Limits(**limits),
        max_batch=max_batch,
        window_ms=batch_window_ms,
    )


def check_serve(values: Mapping[str, Any]) -> None:
    for name in ("max_batch", "max_tokens", "max_n", "max_queue", "max_body_bytes"):
        if values[name] < 1:
            raise LmtoolError(f"--{name.replace('_', '-')} must be at least 1 (got {values[name]})")


def preprocess(cfg: Config, overwrite: bool) -> None:
    """Clean and tokenize the data sources into packed blocks; print the processed directory.

    Example: lmtool preprocess configs/quickstart.yaml --set data.block_size=256
    """
    from lmtool.tasks.registry import preprocess as run_preprocess
    from lmtool.validate import validate

    validate(cfg, "preprocess")
    print(run_preprocess(cfg, overwrite=overwrite))


def pretrain(cfg: Config, overwrite: bool) -> None:
    """Train a causal or masked LM from scratch (or continue one); print the final model directory.

    Example: lmtool pretrain configs/quickstart.yaml --set train.max_steps=100
    """
    from lmtool.recipes.pretrain import run_pretrain

    final = run_pretrain(cfg, overwrite=overwrite)
    if console.is_rank_zero():
        print(final)


def finetune(cfg: Config, overwrite: bool) -> None:
    """Fine-tune a pretrained model (classification, NER, extractive QA, SFT; LoRA); print the best model's directory.

    Example: lmtool finetune configs/finetune-sentiment.yaml --set train.epochs=1
    """
    from lmtool.recipes.finetune import run_finetune

    final = run_finetune(cfg, overwrite=overwrite)
    if console.is_rank_zero():
        print(final)


def report(run_dirs: list[Path], out: Path | None) -> None:
    """Plot loss, learning rate, grad norm, tokens/s, MFU and eval metrics of runs (several: on one figure)
    and summarise them in report.md, from metrics.jsonl; print report.md's path.

    Example: lmtool report runs/quickstart runs/quickstart-wide --out runs/compare
    """
    from lmtool.reporting import write_report

    print(write_report(run_dirs, out))


def plan(
    cfg: Config, gpus: int, gpu: str, nodes: int, mfu: float, time_limit: str | None, output_format: str
) -> None:
    """Estimate parameters, FLOPs, memory per GPU (DDP/FSDP), throughput and wall time of a training config.

    Example: lmtool plan configs/gpt2-124m.yaml --gpus 8 --gpu h100 --nodes 2 | jq .memory_gb_per_gpu.ddp
    """
    from lmtool.planning import run_plan

    run_plan(
        cfg, gpu=gpu, gpus_per_node=gpus, nodes=nodes, mfu=mfu, limit=time_limit, output_format=output_format
    )


def config_show(cfg: Config) -> None:
    """Print the resolved config (defaults filled in, overrides and ${...} applied) as YAML.

    Example: lmtool config show configs/quickstart.yaml --set train.lr=0.001
    """
    from lmtool.config import dump_config

    sys.stdout.write(dump_config(cfg))


def config_validate(path: Path, set_: list[str] | None) -> None:
    """Check a config and the local paths it names; exit 0 if valid, 2 if not.

    Example: lmtool config validate configs/quickstart.yaml
    """
    # Loads its config itself (its row names the file `path`, not CONFIG): the message names the file.
    from lmtool.config import load_config
    from lmtool.validate import validate

    validate(load_config(path, set_ or []))
    console.info(f"{path}: valid")


def config_schema() -> None:
    """Print the config's JSON schema (every key with its type, default and description).

    Example: lmtool config schema | jq '.["$defs"].TrainConfig.properties.lr'
    """
    from lmtool.config import json_schema

    print(json.dumps(json_schema(), indent=2))
