"""GPU training speed of lmtool against the two things a user could run instead, back to back on one GPU:
(1) `lmtool pretrain` through the CLI (bf16, train.compile on), (2) `transformers.Trainer` with `bf16`,
`torch_compile` and fused AdamW (`optim="adamw_torch_fused"`), (3) a plain compiled loop: `torch.autocast`
(bf16), `torch.compile(model)`, `AdamW(fused=True)`, `clip_grad_norm_(1.0)`, `model(input_ids=x,
labels=x).loss`. The same model (built by lmtool from the config, so the vocabulary is padded alike), micro-
batch, block, precision and synthetic data (random ids) for the three: GPT-2 124M (configs/gpt2-124m.yaml,
block 1024, micro-batch 12) and BERT-base MLM (configs/bert-base.yaml, block 512, micro-batch 32; the
Trainer masks with DataCollatorForLanguageModeling, the loop 15% of the tokens, lmtool as configured).

Each run is a fresh subprocess (one process tree). Tokens/s are timed over `--steps` optimizer steps after
`--warmup` (compilation falls in the warm-up; the clock reads after a device synchronize at both ends; lmtool
logs every gcd(warmup, steps) steps, so it syncs no more than that). MFU = tokens/s x lmtool's FLOPs per
token (6N + 12·L·H·Q·T, `lmtool.train.metrics.flops_per_token`) / the GPU's bf16 peak from lmtool's table
(`peak_flops`). Peak memory: `torch.cuda.max_memory_allocated` (GB = 1e9), on CPU the process's peak RSS
(not comparable with plan). `lmtool plan --gpus 1 --gpu GPU --format json` for the same overrides gives the
predicted memory (`plan.memory_gb_per_gpu.ddp`) and `plan_rel_error` against lmtool's measured peak.

One JSON line on stdout (progress on stderr): per model the three runs, `ratio_lmtool_trainer` and
`ratio_lmtool_loop` (tokens/s; GPT-2 also `lmtool_fused`, `train.fused_loss: true`, and its ratios), the plan, and `met` against the goals of issue 20 (cuda only); exit 1 when
a run failed (named with its stderr tail; the other runs still go). About 6 minutes on an H100/H200, mostly
compilation. Where a GPU is lent, with lmtool's dependencies installed:

    python scripts/bench_gpu.py --gpu h200 2>bench_gpu.log

On the project's `device` machine (its image has torch and transformers but lacks datasets, pydantic and
typer 0.29): here, once, `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
manylinux2014_x86_64 -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4
pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typer==0.29.2 accelerate==1.16.0 liger-kernel==0.8.5`
(.whl ignored via .git/info/exclude; accelerate for the Trainer, liger-kernel for GPT-2's `lmtool_fused` run:
`train.fused_loss` true), then `run` with carry [".whl"] and
timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3 scripts/bench_gpu.py --gpu h200 2>$OUT/bench_gpu.log | tee $OUT/bench_gpu.json

`--device cpu` is the smoke mode CI runs (tests/test_bench_gpu.py): 2-layer 64-wide models, block 32,
micro-batch 2, fp32, no compile, 1 + 2 steps, no goals. `--only gpt2|bert` runs one model.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_runs import (
    CONFIGS,
    ROOT,
    RUN_ENV,
    RunFailed,
    describe_machine,
    lmtool,
    plan_json,
    progress,
    short_run_sets,
    with_sets,
)

GOALS = {"gpt2_mfu": 0.40, "ratio_lmtool_trainer": 1.35, "ratio_lmtool_loop": 1.1, "plan_rel_error": 0.15}


# --------------------------------------------------------------------------- workers (one per subprocess)


class Clock:
    """Wall time at the end of the warm-up and at the end of the timed steps, each after a device sync."""

    def __init__(self, device, warmup: int, steps: int):
        self.device, self.marks, self.times = device, {warmup, warmup + steps}, []

    def step_done(self, step: int) -> None:
        import torch

        if step in self.marks:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times.append(time.perf_counter())

    def seconds(self) -> float:
        return self.times[1] - self.times[0]


def setup(args: argparse.Namespace):
    """The config, the model lmtool builds for it (seeded), the tokenizer and the synthetic blocks."""
    import datasets
    import torch
    from transformers import AutoTokenizer

    from lmtool.config import load_config
    from lmtool.models import build_model

    datasets.disable_progress_bars()
    cfg = load_config(CONFIGS[args.key], json.loads(args.sets))
    tokenizer = AutoTokenizer.from_pretrained(str(Path(cfg.data.processed_dir) / "tokenizer"))
    model = build_model(cfg, tokenizer)
    train = datasets.load_from_disk(str(Path(cfg.data.processed_dir) / "train"))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as lmtool does
    return cfg, model, tokenizer, train, device


def figures(model, cfg, device, clock: Clock, steps: int) -> dict:
    """Tokens/s over the timed steps, MFU with lmtool's formula and table, peak memory."""
    import torch

    from lmtool.train.metrics import flops_per_token, memory_gb, peak_flops

    tokens_per_s = steps * cfg.train.batch_size * cfg.data.block_size / clock.seconds()
    fpt = flops_per_token(model, cfg.data.block_size)
    peak = peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    return {"tokens_per_s": round(tokens_per_s, 1), "mfu": round(tokens_per_s * fpt / peak, 4) if peak else None,
            "peak_memory_gb": round(memory_gb(device), 3), "flops_per_token": fpt}  # fmt: skip


def run_trainer(args: argparse.Namespace) -> dict:
    """transformers.Trainer: bf16, torch_compile, fused AdamW, the config's lr, betas, decay and clipping."""
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    cfg, model, tokenizer, train, device = setup(args)
    cuda, mlm = device.type == "cuda", cfg.data.objective == "mlm"
    clock = Clock(device, args.warmup, args.steps)

    class Timing(TrainerCallback):
        def on_step_end(self, _args, state, *_, **__):
            clock.step_done(state.global_step)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=cfg.train.batch_size,
        max_steps=args.warmup + args.steps, learning_rate=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        adam_beta1=cfg.train.betas[0], adam_beta2=cfg.train.betas[1], adam_epsilon=cfg.train.eps,
        max_grad_norm=cfg.train.grad_clip, lr_scheduler_type="constant", bf16=cuda, torch_compile=cuda,
        optim="adamw_torch_fused", report_to="none", save_strategy="no", logging_strategy="no",
        use_cpu=not cuda, seed=cfg.run.seed, dataloader_pin_memory=cuda,
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=mlm, mlm_probability=0.15)
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train, data_collator=collator, callbacks=[Timing()]
    )
    trainer.train()
    return figures(model, cfg, device, clock, args.steps)


def run_loop(args: argparse.Namespace) -> dict:
    """The plain loop: autocast bf16, torch.compile(model), fused AdamW, clip 1.0, the model's own loss."""
    import torch

    cfg, model, tokenizer, train, device = setup(args)
    cuda, mlm = device.type == "cuda", cfg.data.objective == "mlm"
    clock = Clock(device, args.warmup, args.steps)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device).train()
    step_model = torch.compile(model) if cuda else model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas), eps=cfg.train.eps,
        weight_decay=cfg.train.weight_decay, fused=True,
    )  # fmt: skip
    blocks = torch.tensor(train["input_ids"], dtype=torch.long)
    batch = cfg.train.batch_size
    for step in range(1, args.warmup + args.steps + 1):
        x = blocks[(step - 1) * batch : step * batch].to(device, non_blocking=True)
        labels = x
        if mlm:  # 15% of the tokens masked, the rest ignored by the loss
            chosen = torch.rand(x.shape, device=device) < 0.15
            labels = torch.where(chosen, x, -100)
            x = torch.where(chosen, tokenizer.mask_token_id, x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = step_model(input_ids=x, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step_done(step)
    return figures(model, cfg, device, clock, args.steps)


WORKERS = {"trainer": run_trainer, "loop": run_loop}


# --------------------------------------------------------------------------- driver


def spawn(worker: str, key: str, sets: list[str], work: Path, args: argparse.Namespace) -> dict:
    """One worker in a fresh Python process; its figures (or RunFailed)."""
    progress(f"{key}: {worker}")
    command = [sys.executable, __file__, "--worker", worker, "--key", key, "--sets", json.dumps(sets),
               "--out", str(work / f"{key}-{worker}"), "--device", args.device,
               "--warmup", str(args.warmup), "--steps", str(args.steps)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=RUN_ENV)
    if result.returncode != 0:
        raise RunFailed(f"{key} {worker}", f"exit {result.returncode}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_lmtool(
    key: str,
    sets: list[str],
    work: Path,
    args: argparse.Namespace,
    flops_per_token: float,
    name: str = "lmtool",
) -> dict:
    """`lmtool pretrain` through the CLI; tokens/s between the records at the end of the warm-up and the
    last step (each record is written once the step's loss reached the host)."""
    import torch

    from lmtool.train.metrics import peak_flops

    progress(f"{key}: {name} pretrain")
    run_dir = work / f"{key}-{name}"
    lmtool(f"{key} {name}", ["pretrain", str(CONFIGS[key]), *with_sets([*sets, f"run.output_dir={run_dir}"])])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records if r["type"] == "train"}
    first, last = by_step[args.warmup], by_step[args.warmup + args.steps]
    tokens_per_s = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
    device = torch.device(args.device)
    peak = peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    return {"tokens_per_s": round(tokens_per_s, 1),
            "mfu": round(tokens_per_s * flops_per_token / peak, 4) if peak else None,
            "peak_memory_gb": round(max(r["memory_gb"] for r in by_step.values()), 3)}  # fmt: skip


def bench_model(key: str, work: Path, args: argparse.Namespace, failed: list[dict]) -> dict:
    """The three runs of one model, the plan and the ratios."""
    cuda = args.device == "cuda"
    steps = args.warmup + args.steps
    sets = [*short_run_sets(key, work, args.device, steps), f"train.compile={str(cuda).lower()}",
            f"train.log_every={math.gcd(args.warmup, args.steps)}"]  # fmt: skip
    plan = plan_json(key, sets, args.gpu)
    out: dict = {"block": plan["batch"]["sequence_length"], "micro_batch": plan["batch"]["micro_batch"],
                 "precision": "bf16" if cuda else "fp32", "compiled": cuda, "parameters": plan["model"]["parameters"],
                 "plan": {"memory_gb_per_gpu_ddp": plan["memory_gb_per_gpu"]["ddp"],
                          "flops_per_token": plan["batch"]["flops_per_token"]}}  # fmt: skip
    # the loop first: a GPU problem shows without lmtool; GPT-2 also with train.fused_loss (liger-kernel on CUDA)
    workers = (
        ("loop", "trainer", "lmtool", "lmtool_fused") if key == "gpt2" else ("loop", "trainer", "lmtool")
    )
    for worker in workers:
        try:
            if worker == "lmtool":
                out[worker] = run_lmtool(key, sets, work, args, plan["batch"]["flops_per_token"])
            elif worker == "lmtool_fused":
                fused = [*sets, "train.fused_loss=true"]
                out[worker] = run_lmtool(key, fused, work, args, plan["batch"]["flops_per_token"], worker)
            else:
                out[worker] = spawn(worker, key, sets, work, args)
        except RunFailed as exc:
            name, tail = exc.args
            progress(f"{name} failed: {tail}")
            failed.append({"run": name, "stderr_tail": tail})
    for ours in ("lmtool", "lmtool_fused")[: 2 if key == "gpt2" else 1]:
        lm = out.get(ours, {}).get("tokens_per_s")
        for other in ("trainer", "loop"):
            theirs = out.get(other, {}).get("tokens_per_s")
            out[f"ratio_{ours}_{other}"] = round(lm / theirs, 3) if lm and theirs else None
    if "lmtool" in out:
        predicted, measured = plan["memory_gb_per_gpu"]["ddp"]["total"], out["lmtool"]["peak_memory_gb"]
        out["plan_rel_error"] = round((predicted - measured) / measured, 4)
    return out


def goals_met(result: dict) -> dict | None:
    """Issue 20's goals, from what ran (None for a figure that did not)."""
    if result["device"] != "cuda":
        return None  # the smoke run measures plumbing, not the GPU goals
    met: dict = {}
    for key, model in result["models"].items():
        lm, loop = model.get("lmtool", {}), model.get("loop", {})
        checks = {
            "ratio_lmtool_trainer": model.get("ratio_lmtool_trainer")
            and model["ratio_lmtool_trainer"] >= 1.35,
            "ratio_lmtool_loop": model.get("ratio_lmtool_loop") and model["ratio_lmtool_loop"] >= 1.1,
            "memory_le_loop": lm["peak_memory_gb"] <= loop["peak_memory_gb"] if lm and loop else None,
            "plan_within_15pct": abs(model["plan_rel_error"]) <= 0.15 if "plan_rel_error" in model else None,
        }
        if key == "gpt2":
            checks["mfu"] = lm["mfu"] >= GOALS["gpt2_mfu"] if lm.get("mfu") is not None else None
        met[key] = {name: (None if value is None else bool(value)) for name, value in checks.items()}
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--only", choices=list(CONFIGS), help="bench one model")
    parser.add_argument("--gpu", default="h100", help="lmtool plan --gpu (only plan's `fits` depends on it)")
    parser.add_argument("--warmup", type=int, help="untimed steps first, compilation included (10; cpu: 1)")
    parser.add_argument("--steps", type=int, help="timed steps (30; cpu: 2)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--key", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--sets", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.warmup = args.warmup or (10 if cuda else 1)
    args.steps = args.steps or (30 if cuda else 2)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    result: dict = {"benchmark": "gpu", "device": args.device, **describe_machine(args.device),
                    "plan_gpu": args.gpu, "warmup_steps": args.warmup, "timed_steps": args.steps,
                    "goals": GOALS, "models": {}}  # fmt: skip
    failed: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        for key in CONFIGS:
            if args.only in (None, key):
                try:
                    result["models"][key] = bench_model(key, Path(tmp), args, failed)
                except RunFailed as exc:  # the plan itself
                    failed.append({"run": exc.args[0], "stderr_tail": exc.args[1]})
    result["met"] = goals_met(result)
    result["failed"] = failed
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
