"""The `lmtool` command line: one thin function per subcommand; the work lives in the modules."""

from __future__ import annotations

import json
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lmtool import __version__, console
from lmtool.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, LmtoolError, Preempted, Terminated

# The exceptions of the click that typer runs on: typer >= 0.29 vendors click as `typer._click`,
# older typers use the plain `click` package, so `click.ClickException` misses the first kind.
_click = sys.modules[typer.BadParameter.__module__]

app = typer.Typer(
    name="lmtool",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show, validate and describe configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


class LogFormat(str, Enum):
    auto = "auto"
    plain = "plain"
    json = "json"


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False, metavar="CONFIG")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value: key.path=value (repeatable).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output directory instead of refusing.")
]


def _version(value: bool) -> None:
    if value:
        print(f"lmtool {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", help="stderr log style: auto (rich on a TTY), plain, or json lines."),
    ] = LogFormat.auto,
) -> None:
    """Pretrain, fine-tune, evaluate and sample Hugging Face language models.

    Results go to stdout, logs to stderr. Exit codes: 0 ok, 1 internal error,
    2 bad config or input, 3 checkpoint saved after a preemption signal (requeue), 130 interrupted,
    143 preprocess stopped by SIGTERM.
    """
    _state["debug"] = debug
    console.configure(quiet=quiet, log_format=log_format.value)


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in, overrides and ${...} applied) as YAML.

    Example: lmtool config show configs/quickstart.yaml --set train.lr=0.001
    """
    from lmtool.config import dump_config, load_config

    sys.stdout.write(dump_config(load_config(config, set_ or [])))


@config_app.command("validate")
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config and the local paths it names; exit 0 if valid, 2 if not.

    Example: lmtool config validate configs/quickstart.yaml
    """
    from lmtool.config import check_references, load_config

    cfg = load_config(config, set_ or [])
    check_references(cfg)
    console.info(f"{config}: valid")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (every key with its type, default and description).

    Example: lmtool config schema | jq '.$defs.TrainConfig.properties.lr'
    """
    from lmtool.config import json_schema

    print(json.dumps(json_schema(), indent=2))


# --------------------------------------------------------------------------- preprocess


@app.command("preprocess")
def preprocess(config: ConfigArg, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Clean and tokenize the data sources into packed blocks; print the processed directory.

    Example: lmtool preprocess configs/quickstart.yaml --set data.block_size=256
    """
    from lmtool.config import load_config
    from lmtool.data.preprocess import run_preprocess

    print(run_preprocess(load_config(config, set_ or []), overwrite=overwrite))


# --------------------------------------------------------------------------- evaluate / generate


def _flag_overrides(section: str, **flags: object) -> list[str]:
    """Command-line flags as `--set` overrides (applied after the config's own `--set`s, so flags win)."""
    return [f"{section}.{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


@app.command("evaluate")
def evaluate(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML config file (optional).", show_default=False, metavar="[CONFIG]"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model directory (default: the run's final/).", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Processed data dir, or a .txt/.jsonl file tokenized with the model's tokenizer "
            "(fine-tuned models: a labeled .csv/.tsv/.jsonl/.conll file).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="Split of a processed data dir [default: validation].", show_default=False
        ),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            help="Perplexity window in tokens [default: the model's context].",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride", help="Tokens the window moves each step [default: the window].", show_default=False
        ),
    ] = None,
    max_samples: Annotated[
        int | None,
        typer.Option(
            "--max-samples", help="Evaluate at most this many documents/blocks.", show_default=False
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Windows/sequences per forward pass.", show_default=False),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write the JSON here [default: MODEL/eval.json].", show_default=False
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Score a model: perplexity and bits per byte (causal LMs), masked-token loss and accuracy (masked LMs),
    the task's metrics (fine-tuned classifiers and taggers).

    Example: lmtool evaluate configs/quickstart.yaml --stride 128 | jq .perplexity
    """
    from lmtool.config import load_config
    from lmtool.evaluation import run_evaluate

    flags = _flag_overrides("evaluate", model=model, data=data, split=split, max_length=max_length, stride=stride,
                            max_samples=max_samples, batch_size=batch_size, output=output)  # fmt: skip
    result = run_evaluate(load_config(config, [*(set_ or []), *flags]))
    print(json.dumps(result, indent=2))


@app.command("generate")
def generate(
    prompts: Annotated[
        list[str] | None,
        typer.Argument(
            help="Prompts (none: read --file, else stdin).", show_default=False, metavar="[PROMPT]..."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (its generate: section).", show_default=False),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model directory.", show_default=False)
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help='Prompts, one per line, or JSON lines {"prompt": ..., settings}.',
            show_default=False,
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", "-n", help="Tokens to generate per sample.", show_default=False),
    ] = None,
    sample: Annotated[
        bool | None,
        typer.Option(
            "--sample/--greedy",
            help="Sample, or decode greedily (beam search with --num-beams).",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", "-t", help="Sampling temperature.", show_default=False)
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Sample from the k most likely tokens.", show_default=False)
    ] = None,
    top_p: Annotated[
        float | None, typer.Option("--top-p", help="Nucleus sampling threshold.", show_default=False)
    ] = None,
    num_beams: Annotated[
        int | None, typer.Option("--num-beams", help="Beam search width.", show_default=False)
    ] = None,
    num_return_sequences: Annotated[
        int | None, typer.Option("--num-return-sequences", help="Samples per prompt.", show_default=False)
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            "--stop", help="Stop string (repeatable; \\n and \\t are understood).", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed: the same seed gives the same output.", show_default=False),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Prompts per batch.", show_default=False)
    ] = None,
    top_k_fill: Annotated[
        int | None, typer.Option("--fill-top-k", help="Masked LMs: candidates per mask.", show_default=False)
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="auto | text | jsonl [default: text on a terminal, else jsonl].",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Continue prompts with a causal LM or fill [MASK]s with a masked LM; JSON lines when piped.

    Example: printf 'Once upon\\nThe king\\n' | lmtool generate --model runs/quickstart/final --seed 1 | jq -r .text
    """
    from lmtool.config import load_config
    from lmtool.generation import run_generate

    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in stop] if stop else None
    flags = _flag_overrides("generate", model=model, max_new_tokens=max_new_tokens, do_sample=sample,
                            temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams,
                            num_return_sequences=num_return_sequences, stop=stops, seed=seed, batch_size=batch_size,
                            fill_mask_top_k=top_k_fill, format=output_format)  # fmt: skip
    run_generate(load_config(config, [*(set_ or []), *flags]).generate, prompts or [], file)


@app.command("predict")
def predict(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            help="Texts (none: read --file, else stdin).", show_default=False, metavar="[TEXT]..."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Fine-tuned model directory (e.g. runs/NAME/final).")
    ] = ...,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help='Texts, one per line, or JSON lines {"text": ..., "text_pair": ...}.',
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts (NER: windows) per batch.")] = 32,
    output_format: Annotated[
        str, typer.Option("--format", help="auto | text | jsonl (auto: text on a terminal, else jsonl).")
    ] = "auto",
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            help="Tokens per input or NER window [default: the model's limit].",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            help="NER: tokens shared by consecutive windows of a long text [default: 32].",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps.")] = "auto",
) -> None:
    """Label texts with a fine-tuned classifier, or find entities (with character offsets) with a tagger.

    Example: printf 'great film\\nawful plot\\n' | lmtool predict --model runs/sentiment/final | jq -r .label
    """
    from lmtool.prediction import run_predict

    run_predict(model, texts or [], file, batch_size=batch_size, output_format=output_format,
                max_length=max_length, stride=stride, device=device)  # fmt: skip


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


# --------------------------------------------------------------------------- entry point


def _show_usage_error(exc: Exception) -> None:
    """click's usage line and help hint, then one `error:` line; the whole help when nothing was given."""
    if isinstance(exc, getattr(_click, "NoArgsIsHelpError", ())):
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        help_option = ctx.help_option_names[0]
        sys.stderr.write(f"{ctx.get_usage()}\nTry '{ctx.command_path} {help_option}' for help.\n\n")
    console.error(exc.format_message())


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning errors into one line on stderr and a documented exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="lmtool")
        if code == EXIT_INTERRUPTED:  # typer returns a KeyboardInterrupt (Ctrl-C) as this code
            console.error("interrupted")
    except LmtoolError as exc:
        if _state["debug"]:
            traceback.print_exc()
        console.error(str(exc))
        code = exc.exit_code
    except Preempted as exc:
        console.warning(str(exc))
        code = exc.exit_code
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        console.error("interrupted")
        code = EXIT_INTERRUPTED
    except Terminated as exc:
        console.error(str(exc))
        code = exc.exit_code
    except _click.UsageError as exc:
        _show_usage_error(exc)
        code = EXIT_USAGE
    except _click.ClickException as exc:
        console.error(exc.format_message())
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: exit 1, traceback behind --debug
        if _state["debug"]:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        code = EXIT_INTERNAL
    sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)
