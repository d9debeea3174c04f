"""Pretraining throughput: lmtool's engine vs the `transformers` Trainer, back to back, plus MFU.

Same GPT-2 (6 layers, 384 wide, 8 heads, vocab 8192, block 256, ~14M parameters), same token
blocks (the built-in stdlib-docs corpus, preprocessed by `lmtool preprocess` with an 8192-token
BPE), same batch, same machine. Each run is a fresh subprocess; the runs are interleaved
(HF, lmtool, lmtool fp32, HF, ...) and each figure is the median over `--rounds`. With the default
`--dropout 0.1` HF's like-for-like run is its default run (fp32 and dropout 0.1 already), so the
same HF runs are the baseline of (a) and (b). Prints one JSON line:

- (a) `default`: steady-state training tokens/s of `lmtool pretrain` with its defaults vs the HF
  Trainer with its defaults (what run_clm.py gives a user: GPT2Config dropout 0.1, fp32 on CPU,
  TrainingArguments defaults). Goal >= 2.5x.
- (b) `like_for_like`: both in fp32 with the same dropout (`--dropout`, default 0.1, HF's), so only
  the engines differ, and lmtool's other from-scratch default: GPT-2's tanh GELU as one fused
  kernel (`gelu_pytorch_tanh`, the same formula as HF's `gelu_new`). Goal >= 1.15x.
- (c) `mfu`: lmtool's model FLOPs utilisation in run (a): steady tokens/s x FLOPs per token
  (6N + 12·L·H·Q·T) / the matmul peak lmtool measures in its training dtype (the higher of its
  start-up figure and a 2 s re-measurement after the run, so a busy machine cannot inflate MFU).
  Goal >= 45%. `hf_default_mfu` is HF's figure against the same peak; 1 / it is the most any
  fp32 engine could gain over HF with this model on this machine (at 100% MFU).

Steady state = the median optimizer step after `--warmup` steps, each timed from the end of the
previous step to its own end (its data loading included). Excluded: imports, data loading and
model building, lmtool's peak measurement, compilation (in the warm-up steps, when on; `auto` does
not compile on CPU) and everything after the last step (final eval and save).

    python scripts/bench_pretrain.py [--quick] [--rounds 3] [--batch-size 8] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = {"n_layer": 6, "n_embd": 384, "n_head": 8, "n_positions": 256}
VOCAB, BLOCK, SEED = 8192, 256, 1234
HF_DROPOUT = 0.1  # GPT2Config's default
ORDER = (("hf", "default"), ("lmtool", "default"), ("hf", "like"), ("lmtool", "like"))  # one round
GOALS = {"default": 2.5, "like_for_like": 1.15, "mfu": 0.45}


def dropout(p: float) -> dict:
    return {"resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p}


def preprocess(out: Path) -> Path:
    """The stdlib-docs corpus as 256-token blocks with a freshly trained 8192-token BPE."""
    from lmtool.config import load_config
    from lmtool.data.preprocess import run_preprocess

    config = {
        "run": {"name": "bench", "seed": SEED},
        "data": {
            "sources": [{"builtin": "stdlib-docs"}],
            "validation_fraction": 0.02,
            "objective": "clm",
            "block_size": BLOCK,
            "processed_dir": str(out),
        },
        "tokenizer": {"train": {"type": "bpe", "vocab_size": VOCAB}},
    }
    path = out.parent / "preprocess.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_preprocess(load_config(path))
    return out


def steady_tokens_per_s(end_times: list[float], warmup: int, tokens_per_step: int) -> float:
    """Tokens/s of the median step after `warmup`, from the end time of every step (the median, not
    the mean: a burst of other work on a 2-core machine would otherwise decide the figure)."""
    timed = end_times[warmup - 1 :]
    return tokens_per_step / statistics.median(b - a for a, b in zip(timed, timed[1:], strict=False))


# --------------------------------------------------------------------------- workers (one per subprocess)


def run_hf(data: Path, out: Path, args: argparse.Namespace) -> dict:
    """transformers.Trainer as run_clm.py sets it up: only output dir, batch, steps, no reporting or saving."""
    import datasets
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    datasets.disable_progress_bars()
    train = datasets.load_from_disk(str(data / "train"))
    train = train.map(lambda batch: {"labels": batch["input_ids"]}, batched=True)  # run_clm's group_texts
    extra = {} if args.mode == "default" else dropout(args.dropout)
    config = GPT2Config(vocab_size=VOCAB, **MODEL, **extra)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        seed=SEED,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=default_data_collator,
        callbacks=[Clock()],
    )
    trainer.train()
    tps = steady_tokens_per_s(ends, args.warmup, args.batch_size * BLOCK)
    return {"tokens_per_s": tps, "dropout": config.resid_pdrop, "precision": "fp32"}


def run_lmtool(data: Path, out: Path, args: argparse.Namespace) -> dict:
    """`lmtool pretrain` with its defaults (batch and step count aside); log every step to time it."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmtool import console
    from lmtool.config import load_config
    from lmtool.recipes.pretrain import run_pretrain
    from lmtool.runtime import resolve_precision
    from lmtool.train.metrics import flops_per_token, measure_cpu_matmul_peak, peak_flops

    console.configure(quiet=True)
    model = dict(MODEL)
    train = {"batch_size": args.batch_size, "max_steps": args.warmup + args.steps, "log_every": 1}
    if args.mode == "like":
        model.update(dropout(args.dropout))
        train["precision"] = "fp32"
    config = {
        "run": {"name": "bench", "seed": SEED, "output_dir": str(out)},
        "data": {"processed_dir": str(data), "objective": "clm", "block_size": BLOCK},
        "model": {"arch": "gpt2", "config": model},
        "train": train,
    }
    path = out.parent / "lmtool.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    final = run_pretrain(load_config(path))

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    ends = [r["elapsed_s"] for r in train_records]
    tps = steady_tokens_per_s(ends, args.warmup, args.batch_size * BLOCK)
    saved = AutoModelForCausalLM.from_pretrained(final)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    dtype = resolve_precision(resolved["train"]["precision"], torch.device("cpu")).compute_dtype
    fpt = flops_per_token(saved, BLOCK)
    # The engine's 0.3 s figure, or a 2 s re-measurement if higher (another process may have slowed either).
    peak = max(peak_flops(torch.device("cpu"), dtype), measure_cpu_matmul_peak(dtype, seconds=2.0))
    return {
        "tokens_per_s": tps,
        "dropout": saved.config.resid_pdrop,
        "activation": saved.config.activation_function,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "mfu": tps * fpt / peak if peak else None,
    }


# --------------------------------------------------------------------------- driver


def spawn(system: str, mode: str, data: Path, work: Path, args: argparse.Namespace) -> dict:
    out = work / f"{system}-{mode}-{time.monotonic_ns()}" / "run"
    out.parent.mkdir(parents=True)
    command = [
        sys.executable,
        __file__,
        "--worker",
        system,
        "--mode",
        mode,
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--dropout",
        str(args.dropout),
    ]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{system} {mode} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one round (about 2 minutes)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (HF's default is 8)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--dropout", type=float, default=HF_DROPOUT, help="dropout of both in like-for-like runs"
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: torch's choice)")
    parser.add_argument("--data", type=Path, help="processed data dir (default: preprocess stdlib-docs)")
    parser.add_argument("--worker", choices=["hf", "lmtool"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["default", "like"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker = run_hf if args.worker == "hf" else run_lmtool
        print(json.dumps(worker(args.data, args.out, args)))
        return
    if args.quick:
        args.steps, args.warmup, args.rounds = 4, 2, 1

    import torch

    from lmtool import console

    console.configure(quiet=True)
    load = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or preprocess(work / "processed")
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for system, mode in ORDER:
                if (system, mode) == ("hf", "like") and args.dropout == HF_DROPOUT:
                    continue  # the same run as HF's default
                runs.setdefault((system, mode), []).append(spawn(system, mode, data, work, args))
    per_round = {f"{s}_{m}": [round(r["tokens_per_s"], 1) for r in rs] for (s, m), rs in runs.items()}
    runs.setdefault(("hf", "like"), runs["hf", "default"])

    def median(system: str, mode: str, key: str = "tokens_per_s") -> float:
        return statistics.median(r[key] for r in runs[system, mode])

    figures = {
        "default": median("lmtool", "default") / median("hf", "default"),
        "like_for_like": median("lmtool", "like") / median("hf", "like"),
        "mfu": median("lmtool", "default", "mfu"),
    }
    lm_default = runs["lmtool", "default"][0]
    peak = median("lmtool", "default", "peak_flops")
    hf_mfu = median("hf", "default") * lm_default["flops_per_token"] / peak
    print(json.dumps({
        "benchmark": "pretrain", "model": "gpt2 6x384, 8 heads, vocab 8192, block 256",
        "parameters_m": 13.9, "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": args.threads or torch.get_num_threads(), "load_avg_1m_at_start": load,
        "batch_size": args.batch_size,
        "timed_steps": args.steps, "warmup_steps": args.warmup, "rounds": args.rounds,
        "hf_default_tokens_per_s": round(median("hf", "default"), 1),
        "lmtool_default_tokens_per_s": round(median("lmtool", "default"), 1),
        "hf_fp32_tokens_per_s": round(median("hf", "like"), 1),
        "lmtool_fp32_tokens_per_s": round(median("lmtool", "like"), 1),
        "like_for_like_dropout": args.dropout,
        "lmtool_default_dropout": lm_default["dropout"], "lmtool_default_activation": lm_default["activation"],
        "peak_gflops": round(peak / 1e9, 1),
        "flops_per_token_m": round(lm_default["flops_per_token"] / 1e6, 2),
        "ratio_default": round(figures["default"], 3), "ratio_like_for_like": round(figures["like_for_like"], 3),
        "mfu": round(figures["mfu"], 4), "hf_default_mfu": round(hf_mfu, 4),
        "default_ratio_at_100pct_mfu": round(1 / hf_mfu, 2),
        "goals": GOALS, "met": {k: figures[k] >= goal for k, goal in GOALS.items()},
        "per_round_tokens_per_s": per_round,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
