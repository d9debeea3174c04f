"""The command table: every `lmtool` command, its function, its parameters and its help, in help order.

A new command is one row in COMMANDS plus its small function in actions.py; parameters several
commands share are declared once in options.py; table.py turns the rows into typer commands.
"""

from __future__ import annotations

from pathlib import Path

from lmtool.cli import actions
from lmtool.cli.options import (
    BATCH_SIZE,
    CONFIG,
    DEVICE,
    FILE,
    FORMAT,
    MAX_LENGTH,
    MODEL,
    OUT,
    OVERWRITE,
    PRECISION,
    SET,
    STRIDE,
    argument,
    option,
)
from lmtool.cli.table import Command

# --------------------------------------------------------------------------- the table

_TRAIN = (CONFIG, SET, OVERWRITE)

COMMANDS: tuple[Command, ...] = (
    Command(
        "evaluate",
        actions.evaluate,
        """Score a model: perplexity and bits per byte (causal LMs), masked-token loss and accuracy (masked LMs),
        the task's metrics (fine-tuned classifiers and taggers).

        Example: lmtool evaluate configs/quickstart.yaml --stride 128 | jq .perplexity
        """,
        section="evaluate",
        check=actions.check_evaluate,
        params=(
            CONFIG.but(
                type=Path | None,
                default=None,
                help="YAML config file (optional).",
                extra={"metavar": "[CONFIG]"},
            ),
            MODEL.but(key="model"),
            option(
                "data",
                str | None,
                "--data",
                key="data",
                help="Processed data dir, or a .txt/.jsonl file tokenized with the model's tokenizer "
                "(fine-tuned models: a labeled .csv/.tsv/.jsonl/.conll file).",
            ),
            option(
                "split",
                str | None,
                "--split",
                key="split",
                help="Split of a processed data dir [default: validation].",
            ),
            MAX_LENGTH.but(key="max_length"),
            STRIDE.but(key="stride"),
            option(
                "max_samples",
                int | None,
                "--max-samples",
                key="max_samples",
                help="Evaluate at most this many documents/blocks.",
            ),
            BATCH_SIZE.but(key="batch_size"),
            option(
                "output",
                str | None,
                "--output",
                "-o",
                key="output",
                help="Write the JSON here [default: MODEL/eval.json].",
            ),
            SET,
        ),
    ),
    Command(
        "generate",
        actions.generate,
        """Continue prompts with a causal LM or fill [MASK]s with a masked LM; JSON lines when piped.

        Example: printf 'Once upon\\nThe king\\n' | lmtool generate --model runs/quickstart/final --seed 1 | jq -r .text
        """,
        section="generate",
        params=(
            argument(
                "prompts",
                list[str] | None,
                default=None,
                metavar="[PROMPT]...",
                help="Prompts (none: read --file, else stdin).",
            ),
            CONFIG.but(
                type=Path | None,
                default=None,
                flags=("--config", "-c"),
                extra={},
                help="YAML config file (its generate: section).",
            ),
            MODEL.but(help="Model directory.", key="model"),
            FILE,
            option(
                "max_new_tokens",
                int | None,
                "--max-new-tokens",
                "-n",
                key="max_new_tokens",
                help="Tokens to generate per sample.",
            ),
            option(
                "sample",
                bool | None,
                "--sample/--greedy",
                key="do_sample",
                help="Sample, or decode greedily (beam search with --num-beams).",
            ),
            option(
                "temperature",
                float | None,
                "--temperature",
                "-t",
                key="temperature",
                help="Sampling temperature.",
            ),
            option("top_k", int | None, "--top-k", key="top_k", help="Sample from the k most likely tokens."),
            option("top_p", float | None, "--top-p", key="top_p", help="Nucleus sampling threshold."),
            option("num_beams", int | None, "--num-beams", key="num_beams", help="Beam search width."),
            option(
                "num_return_sequences",
                int | None,
                "--num-return-sequences",
                key="num_return_sequences",
                help="Samples per prompt.",
            ),
            option(
                "stop",
                list[str] | None,
                "--stop",
                key="stop",
                callback=actions.unescape,
                help="Stop string (repeatable; \\n and \\t are understood).",
            ),
            option(
                "seed", int | None, "--seed", key="seed", help="Seed: the same seed gives the same output."
            ),
            BATCH_SIZE.but(help="Prompts per batch.", key="batch_size"),
            option(
                "fill_top_k",
                int | None,
                "--fill-top-k",
                key="fill_mask_top_k",
                help="Masked LMs: candidates per mask.",
            ),
            FORMAT.but(key="format"),
            SET,
        ),
    ),
    Command(
        "predict",
        actions.predict,
        """Label texts with a fine-tuned classifier, or find entities (with character offsets) with a tagger.

        Example: printf 'great film\\nawful plot\\n' | lmtool predict --model runs/sentiment/final | jq -r .label
        """,
        params=(
            argument(
                "texts",
                list[str] | None,
                default=None,
                metavar="[TEXT]...",
                help="Texts (none: read --file, else stdin).",
            ),
            MODEL.but(type=str, default=..., help="Fine-tuned model directory (e.g. runs/NAME/final)."),
            FILE.but(help='Texts, one per line, or JSON lines {"text": ..., "text_pair": ...}.'),
            BATCH_SIZE.but(type=int, default=32, help="Texts (NER: windows) per batch."),
            FORMAT.but(
                type=str, default="auto", help="auto | text | jsonl (auto: text on a terminal, else jsonl)."
            ),
            MAX_LENGTH.but(help="Tokens per input or NER window [default: the model's limit]."),
            STRIDE.but(help="NER: tokens shared by consecutive windows of a long text [default: 32]."),
            DEVICE,
        ),
    ),
    Command(
        "serve",
        actions.serve,
        """Serve a model over HTTP: OpenAI-compatible completions and chat (causal LMs), fill-mask (masked LMs),
        classify / entities / answer (the models predict reads).

        Example: lmtool serve --model runs/quickstart/final --port 8000
        """,
        check=actions.check_serve,
        params=(
            MODEL.but(type=str, default=..., help="Model directory (e.g. runs/NAME/final)."),
            option(
                "host",
                str,
                "--host",
                default="127.0.0.1",
                help="Address to bind (not loopback: needs --api-key).",
            ),
            option("port", int, "--port", default=8000, help="TCP port."),
            option(
                "api_key",
                str | None,
                "--api-key",
                envvar="LMTOOL_API_KEY",
                help="Require Authorization: Bearer KEY on /v1.",
            ),
            DEVICE,
            PRECISION,
            option(
                "max_batch", int, "--max-batch", default=16, help="Most sequences in one batched generate."
            ),
            option(
                "batch_window_ms",
                float,
                "--batch-window-ms",
                default=5.0,
                help="How long to collect a batch.",
            ),
            option(
                "max_tokens", int, "--max-tokens", default=512, help="Most tokens one choice may generate."
            ),
            option("max_n", int, "--max-n", default=8, help="Most choices (n) per request."),
            option(
                "max_queue", int, "--max-queue", default=256, help="Requests admitted at once; more get 429."
            ),
            option(
                "max_body_bytes",
                int,
                "--max-body-bytes",
                default=1 << 20,
                help="Largest request body; more get 413.",
            ),
        ),
    ),
    Command(
        "export",
        actions.export,
        """Export a classifier, tagger or causal LM to ONNX, checked against PyTorch; --quantize int8.

        Example: lmtool export --model runs/sentiment/final --quantize int8 | jq .quantize.validation
        """,
        params=(
            MODEL.but(type=str, default=..., help="Model directory (e.g. runs/NAME/final)."),
            option("output_format", str, "--format", default="onnx", help="onnx."),
            option(
                "quantize",
                str | None,
                "--quantize",
                help="int8: onnxruntime dynamic quantization.",
                show_default=False,
            ),
            OUT.but(type=str | None, flags=("--out", "-o"), help="Output directory [default: MODEL-onnx]."),
            option(
                "data",
                str | None,
                "--data",
                help="Labeled validation data for int8's accuracy change [default: the run's validation split].",
            ),
            OVERWRITE,
        ),
    ),
    Command(
        "preprocess",
        actions.preprocess,
        """Clean and tokenize the data sources into packed blocks; print the processed directory.

        Example: lmtool preprocess configs/quickstart.yaml --set data.block_size=256
        """,
        section="data",
        params=_TRAIN,
    ),
    Command(
        "pretrain",
        actions.pretrain,
        """Train a causal or masked LM from scratch (or continue one); print the final model directory.

        Example: lmtool pretrain configs/quickstart.yaml --set train.max_steps=100
        """,
        section="train",
        params=_TRAIN,
    ),
    Command(
        "finetune",
        actions.finetune,
        """Fine-tune a pretrained model (classification, NER, extractive QA, SFT; LoRA); print the best model's directory.

        Example: lmtool finetune configs/finetune-sentiment.yaml --set train.epochs=1
        """,
        section="finetune",
        params=_TRAIN,
    ),
    Command(
        "report",
        actions.report,
        """Plot loss, learning rate, grad norm, tokens/s, MFU and eval metrics of runs (several: on one figure)
        and summarise them in report.md, from metrics.jsonl; print report.md's path.

        Example: lmtool report runs/quickstart runs/quickstart-wide --out runs/compare
        """,
        params=(
            argument("run_dirs", list[Path], metavar="RUN_DIR", help="Run directories (run.output_dir)."),
            OUT,
        ),
    ),
    Command(
        "plan",
        actions.plan,
        """Estimate parameters, FLOPs, memory per GPU (DDP/FSDP), throughput and wall time of a training config.

        Example: lmtool plan configs/gpt2-124m.yaml --gpus 8 --gpu h100 --nodes 2 | jq .memory_gb_per_gpu.ddp
        """,
        params=(
            CONFIG,
            SET,
            option("gpus", int, "--gpus", default=8, help="GPUs per node."),
            option(
                "gpu",
                str,
                "--gpu",
                default="h100",
                help="h100 | h200 | a100 | a100-40 | b200 | l40s | v100 | ...",
            ),
            option("nodes", int, "--nodes", default=1, help="Nodes."),
            option("mfu", float, "--mfu", default=0.4, help="Model FLOPs utilisation the wall time assumes."),
            option(
                "time_limit",
                str | None,
                "--time-limit",
                help="Job time limit (4h, 90m, 1:30:00) [default: $SLURM_JOB_END_TIME].",
            ),
            FORMAT.but(
                type=str, default="auto", help="auto | text | json (auto: text on a terminal, else json)."
            ),
        ),
    ),
    Command(
        "config show",
        actions.config_show,
        """Print the resolved config (defaults filled in, overrides and ${...} applied) as YAML.

        Example: lmtool config show configs/quickstart.yaml --set train.lr=0.001
        """,
        params=(CONFIG, SET),
    ),
    Command(
        "config validate",
        actions.config_validate,
        """Check a config and the local paths it names; exit 0 if valid, 2 if not.

        Example: lmtool config validate configs/quickstart.yaml
        """,
        params=(CONFIG.but(name="path"), SET),
    ),
    Command(
        "config schema",
        actions.config_schema,
        """Print the config's JSON schema (every key with its type, default and description).

        Example: lmtool config schema | jq '.["$defs"].TrainConfig.properties.lr'
        """,
    ),
)
