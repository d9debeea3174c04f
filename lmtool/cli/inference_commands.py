"""The commands that read a trained model: `evaluate`, `generate`, `predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.app import SetOpt, app
from lmtool.errors import LmtoolError

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

    if config is None and model is None and not any(s.startswith("evaluate.model=") for s in set_ or []):
        raise LmtoolError(
            "nothing to evaluate: give --model DIR (a model directory) or a CONFIG (its run's final/)"
        )
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


@app.command("serve")
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory (e.g. runs/NAME/final).")],
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (not loopback: needs --api-key).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LMTOOL_API_KEY",
            help="Require Authorization: Bearer KEY on /v1.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps.")] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16 (causal and masked LMs).")
    ] = "fp32",
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Most sequences in one batched generate.")
    ] = 16,
    batch_window_ms: Annotated[
        float, typer.Option("--batch-window-ms", help="How long to collect a batch.")
    ] = 5.0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Most tokens one choice may generate.")
    ] = 512,
    max_n: Annotated[int, typer.Option("--max-n", help="Most choices (n) per request.")] = 8,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests admitted at once; more get 429.")
    ] = 256,
    max_body: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body; more get 413.")] = 1
    << 20,
) -> None:
    """Serve a model over HTTP: OpenAI-compatible completions and chat (causal LMs), fill-mask (masked LMs),
    classify / entities / answer (the models predict reads).

    Example: lmtool serve --model runs/quickstart/final --port 8000
    """
    from lmtool.errors import LmtoolError
    from lmtool.serve import Limits, run_serve

    for name, value in [("--max-batch", max_batch), ("--max-tokens", max_tokens), ("--max-n", max_n),
                        ("--max-queue", max_queue), ("--max-body-bytes", max_body)]:  # fmt: skip
        if value < 1:
            raise LmtoolError(f"{name} must be at least 1 (got {value})")
    limits = Limits(max_body_bytes=max_body, max_tokens=max_tokens, max_n=max_n, max_queue=max_queue)
    run_serve(model, host=host, port=port, api_key=api_key or None, device=device, precision=precision,
              limits=limits, max_batch=max_batch, window_ms=batch_window_ms)  # fmt: skip


@app.command("export")
def export(
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory (e.g. runs/NAME/final).")],
    output_format: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option("--quantize", help="int8: onnxruntime dynamic quantization.", show_default=False),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", help="Output directory [default: MODEL-onnx].", show_default=False),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labeled validation data for int8's accuracy change [default: the run's validation split].",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export at --out.")
    ] = False,
) -> None:
    """Export a classifier, tagger or causal LM to ONNX, checked against PyTorch; --quantize int8.

    Example: lmtool export --model runs/sentiment/final --quantize int8 | jq .quantize.validation
    """
    from lmtool.export import run_export

    report = run_export(model, fmt=output_format, quantize=quantize, out=out, data=data, overwrite=overwrite)
    print(json.dumps(report, indent=2))
