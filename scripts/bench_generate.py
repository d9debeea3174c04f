"""Generation throughput: 32 prompts at batch size 16 vs one prompt at a time (same model, greedy).

Prints one JSON line: generated tokens/s for each and the ratio (goal on CPU: >= 4x). Uses
--model DIR if given, else a randomly initialised GPT-2 (4 layers, 256 wide, the size of
configs/quickstart.yaml) with a 4096-token byte-level BPE trained on the fly (on the shared
Shakespeare corpus when it is there), so it runs anywhere offline.

    python scripts/bench_generate.py [--model runs/quickstart/final] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "king",
    "and",
    "queen",
    "walk",
    "to",
    "a",
    "castle",
    "while",
    "dog",
    "sleeps",
    "near",
    "river",
    "in",
    "morning",
    "light",
    "of",
    "spring",
    "every",
    "bird",
    "sings",
]


def prompts(count: int) -> list[str]:
    """Prompts of 2 to 16 words, so batches need real left padding."""
    return [
        " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(2 + (i * 7) % 15)).capitalize()
        for i in range(count)
    ]


def training_text() -> list[str]:
    """Lines of the shared Shakespeare corpus when present (a realistic 4096-token vocabulary), else the prompts."""
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "shakespeare"
    files = sorted(corpus.glob("*.txt"))[:8]
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines or prompts(2000)


def build_model(path: Path) -> tuple[str, str]:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    transformers.utils.logging.disable_progress_bar()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer)
    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, pad_token=eot, unk_token=eot
    )
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        n_layer=4,
        n_head=4,
        n_embd=256,
        n_positions=256,
        vocab_size=len(tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), f"random gpt2 4 layers x 256, vocab {len(tokenizer)}"


def run(model: str, texts: list[str], batch_size: int, max_new_tokens: int) -> tuple[float, int, list[str]]:
    """Seconds, generated tokens (as counted in the output) and texts for one in-process `lmtool generate` run."""
    from lmtool.config import GenerateConfig
    from lmtool.generation import run_generate

    cfg = GenerateConfig(
        model=model, do_sample=False, max_new_tokens=max_new_tokens, batch_size=batch_size, format="jsonl"
    )
    out = io.StringIO()
    start = time.perf_counter()
    run_generate(cfg, texts, None, stdout=out)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return seconds, sum(r["tokens"] for r in records), [r["text"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: a random GPT-2 of the quickstart size)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from lmtool import console

    console.configure(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        model, label = (args.model, args.model) if args.model else build_model(Path(tmp) / "model")
        texts = prompts(args.prompts)
        run(model, texts[:2], args.batch_size, 4)  # warm-up: load, allocate, first kernels
        batched_s, batched_tokens, batched_texts = run(model, texts, args.batch_size, args.max_new_tokens)
        single_s, single_tokens, single_texts = run(model, texts, 1, args.max_new_tokens)
    batched_tps, single_tps = batched_tokens / batched_s, single_tokens / single_s
    print(json.dumps({
        "benchmark": "generate", "model": label, "prompts": args.prompts,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "decoding": "greedy",
        "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
        "batched_tokens_per_s": round(batched_tps, 1), "single_tokens_per_s": round(single_tps, 1),
        "ratio": round(batched_tps / single_tps, 2), "same_text": batched_texts == single_texts,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
