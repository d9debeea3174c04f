"""SFT throughput, bench_finetune.py's SFT row: packing short examples into max_length rows vs padding each
batch (same data, model): trained-on (non-padding) tokens/s for each way and their ratio (goal >= 1.5x on
mostly short examples). A random GPT-2 (4 layers, 256 wide, the size of configs/quickstart.yaml) with
a 4096-token vocabulary; examples of 8-64 tokens (85%) and 64-512 (15%), max_length 512, both ways
going once through the same examples in the same shuffled order with the same number of optimizer
steps (16 examples per padded batch; as many packed rows per batch as keep the step count equal).
Also shown: padding with batches of similar lengths (finetune.group_by_length's effect), for reference.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def examples(count: int, vocab: int, seed: int = 0) -> list[dict]:
    """Rows as lmtool preprocess writes them: a prompt (not trained) then a response (trained)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        length = rng.randint(8, 64) if rng.random() < 0.85 else rng.randint(64, 512)
        prompt = max(1, length // 3)
        ids = [rng.randrange(vocab) for _ in range(length)]
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "length": length})
    return rows


def run(model, task, batches, device) -> tuple[float, int]:
    """(seconds, non-padding tokens) for one pass of training steps over `batches`."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = 0
    start = time.perf_counter()
    for rows in batches:
        batch = {k: v.to(device) for k, v in task.collate(rows).items()}
        loss, _ = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def measure(n_examples: int = 512, threads: int = 2, device_name: str | None = None) -> dict:
    """Trained tokens/s of SFT with packing, padding each batch, and padding length-grouped batches."""
    import datasets
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmtool.data.sft_pack import pack_dataset
    from lmtool.tasks.sft import SftTask

    torch.set_num_threads(threads)
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    vocab, max_length, batch_size = 4096, 512, 16
    rows = examples(n_examples, vocab)
    random.Random(1).shuffle(rows)
    packed = list(pack_dataset(datasets.Dataset.from_list(rows), max_length))
    random.Random(1).shuffle(packed)
    steps = math.ceil(len(rows) / batch_size)
    per_step = math.ceil(len(packed) / steps)
    tokenizer = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 0, "__len__": lambda self: vocab})()
    task = SftTask(tokenizer)  # its loss counts len(tokenizer) vocabulary rows
    results = {}
    grouped = sorted(rows, key=lambda row: row["length"])  # lmtool's group_by_length, the other cure
    grouped_batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    random.Random(1).shuffle(grouped_batches)
    ways = (
        ("padding", rows, batch_size),
        ("padding_grouped", [row for b in grouped_batches for row in b], batch_size),
        ("packing", packed, per_step),
    )
    for name, data, size in ways:
        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=max_length,
            n_embd=256,
            n_layer=4,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config).to(device).train()
        batches = [data[i : i + size] for i in range(0, len(data), size)]
        run(model, task, batches[:2], device)  # warm-up
        seconds, tokens = run(model, task, batches, device)
        results[name] = {"tokens_per_s": round(tokens / seconds, 1), "steps": len(batches), "tokens": tokens}
    ratio = results["packing"]["tokens_per_s"] / results["padding"]["tokens_per_s"]
    grouped_ratio = results["packing"]["tokens_per_s"] / results["padding_grouped"]["tokens_per_s"]
    return {
        "device": str(device),
        "examples": len(rows),
        "packed_rows": len(packed),
        **results,
        "ratio": round(ratio, 2),
        "ratio_vs_grouped": round(grouped_ratio, 2),
        "goal": 1.5,
    }
