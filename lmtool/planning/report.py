"""`lmtool plan` output: rich tables on a terminal, one JSON object when stdout is a pipe or file."""

from __future__ import annotations

import json
from typing import TextIO

from rich.console import Console
from rich.table import Table

from lmtool.train.metrics import format_duration

FORMATS = ("auto", "text", "json")
MEMORY_PARTS = (
    "weights",
    "gradients",
    "optimizer",
    "gathered",
    "weight_copies",
    "activations",
    "logits",
    "total",
)


def write_report(result: dict, stdout: TextIO, output_format: str) -> None:
    as_text = output_format == "text" or (output_format == "auto" and stdout.isatty())
    if not as_text:
        stdout.write(json.dumps(result) + "\n")
        return
    out = Console(file=stdout, highlight=False, soft_wrap=True)
    model, cluster, batch, speed = result["model"], result["cluster"], result["batch"], result["throughput"]
    out.print(
        f"{model['class']}: {model['parameters'] / 1e6:.2f}M parameters "
        f"({model['embedding_parameters'] / 1e6:.2f}M in embeddings), vocab {model['vocab_size']} "
        f"({model['vocab_from']}), {model['attention']} attention"
    )
    out.print(
        f"{cluster['nodes']} node(s) x {cluster['gpus_per_node']} {cluster['gpu']} "
        f"({cluster['gpu_memory_gb']} GB), {cluster['precision']}: global batch {batch['global_batch']} x "
        f"{batch['sequence_length']} = {batch['tokens_per_step']:,} tokens/step "
        f"({batch['accumulation']} micro-step(s) of {batch['micro_batch']} per GPU)"
    )
    out.print(f"FLOPs: {batch['flops_per_token']:.3g} per token, {batch['flops_per_step']:.3g} per step")
    table = Table(title="memory per GPU (GB)")
    table.add_column("")
    for name in result["memory_gb_per_gpu"]:
        table.add_column(name.replace("_checkpointing", " + ckpt"), justify="right")
    for part in MEMORY_PARTS:
        table.add_row(part, *(f"{m[part]:.2f}" for m in result["memory_gb_per_gpu"].values()))
    table.add_row("peak at", *(m["peak_at"] for m in result["memory_gb_per_gpu"].values()))
    table.add_row("fits", *("yes" if m["fits"] else "NO" for m in result["memory_gb_per_gpu"].values()))
    out.print(table)
    if speed["tokens_per_s"] is not None:
        wall = format_duration(speed["wall_seconds"]) if speed["wall_seconds"] is not None else "unknown"
        out.print(
            f"at MFU {speed['mfu']:.0%}: {speed['tokens_per_s']:,.0f} tokens/s, {speed['step_seconds']:.3g} s/step, "
            f"{speed['total_steps'] or '?'} steps in {wall}"
        )
    for warning in result["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {warning}")
