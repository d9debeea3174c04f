"""The command table: every `lmtool` command, its function and its parameters, in help order.

A new command is one row in COMMANDS plus its small function in actions.py (whose docstring is the
command's help); parameters several commands share are declared once in options.py; table.py turns
the rows into typer commands.
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
                key="data",
                help="Processed data dir, or a .txt/.jsonl file tokenized with the model's tokenizer "
                "(fine-tuned models: a labeled .csv/.tsv/.jsonl/.conll file).",
            ),
            option(
                "split", str | None, key="split", help="Split of a processed data dir [default: validation]."
            ),
            MAX_LENGTH.but(key="max_length"),
            STRIDE.but(key="stride"),
            option(
                "max_samples",
                int | None,
                key="max_samples",
                help="Evaluate at most this many documents/blocks.",
            ),
            BATCH_SIZE.but(key="batch_size"),
            option(
                "output",
                str | None,
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
            option("temperature", float | None, "-t", key="temperature", help="Sampling temperature."),
            option("top_k", int | None, key="top_k", help="Sample from the k most likely tokens."),
            option("top_p", float | None, key="top_p", help="Nucleus sampling threshold."),
            option("num_beams", int | None, key="num_beams", help="Beam search width."),
            option(
                "num_return_sequences", int | None, key="num_return_sequences", help="Samples per prompt."
            ),
            option(
                "stop",
                list[str] | None,
                key="stop",
                callback=actions.unescape,
                help="Stop string (repeatable; \\n and \\t are understood).",
            ),
            option("seed", int | None, key="seed", help="Seed: the same seed gives the same output."),
            BATCH_SIZE.but(help="Prompts per batch.", key="batch_size"),
            option("fill_top_k", int | None, key="fill_mask_top_k", help="Masked LMs: candidates per mask."),
            FORMAT.but(key="format"),
            SET,
        ),
    ),
    Command(
        "predict",
        actions.predict,
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
        check=actions.check_serve,
        params=(
            MODEL.but(type=str, default=..., help="Model directory (e.g. runs/NAME/final)."),
            option("host", str, default="127.0.0.1", help="Address to bind (not loopback: needs --api-key)."),
            option("port", int, default=8000, help="TCP port."),
            option(
                "api_key",
                str | None,
                envvar="LMTOOL_API_KEY",
                help="Require Authorization: Bearer KEY on /v1.",
            ),
            DEVICE,
            PRECISION,
            option("max_batch", int, default=16, help="Most sequences in one batched generate."),
            option("batch_window_ms", float, default=5.0, help="How long to collect a batch."),
            option("max_tokens", int, default=512, help="Most tokens one choice may generate."),
            option("max_n", int, default=8, help="Most choices (n) per request."),
            option("max_queue", int, default=256, help="Requests admitted at once; more get 429."),
            option("max_body_bytes", int, default=1 << 20, help="Largest request body; more get 413."),
        ),
    ),
    Command(
        "export",
        actions.export,
        params=(
            MODEL.but(type=str, default=..., help="Model directory (e.g. runs/NAME/final)."),
            option("output_format", str, "--format", default="onnx", help="onnx."),
            option(
                "quantize", str | None, help="int8: onnxruntime dynamic quantization.", show_default=False
            ),
            OUT.but(type=str | None, flags=("--out", "-o"), help="Output directory [default: MODEL-onnx]."),
            option(
                "data",
                str | None,
                help="Labeled validation data for int8's accuracy change [default: the run's validation split].",
            ),
            OVERWRITE,
        ),
    ),
    Command("preprocess", actions.preprocess, section="data", params=_TRAIN),
    Command("pretrain", actions.pretrain, section="train", params=_TRAIN),
    Command("finetune", actions.finetune, section="finetune", params=_TRAIN),
    Command(
        "report",
        actions.report,
        params=(
            argument("run_dirs", list[Path], metavar="RUN_DIR", help="Run directories (run.output_dir)."),
            OUT,
        ),
    ),
    Command(
        "plan",
        actions.plan,
        params=(
            CONFIG,
            SET,
            option("gpus", int, default=8, help="GPUs per node."),
            option(
                "gpu", str, default="h100", help="h100 | h200 | a100 | a100-40 | b200 | l40s | v100 | ..."
            ),
            option("nodes", int, default=1, help="Nodes."),
            option("mfu", float, default=0.4, help="Model FLOPs utilisation the wall time assumes."),
            option(
                "time_limit",
                str | None,
                help="Job time limit (4h, 90m, 1:30:00) [default: $SLURM_JOB_END_TIME].",
            ),
            FORMAT.but(
                type=str, default="auto", help="auto | text | json (auto: text on a terminal, else json)."
            ),
        ),
    ),
    Command("config show", actions.config_show, params=(CONFIG, SET)),
    Command("config validate", actions.config_validate, params=(CONFIG.but(name="path"), SET)),
    Command("config schema", actions.config_schema),
)
