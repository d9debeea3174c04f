"""GPU checks of issue 16 through the real CLI, on one GPU, in one go (a few minutes on an H100/H200):
(a) `memory`: `lmtool plan`'s memory per GPU (`memory_gb_per_gpu.ddp[_checkpointing].total`) against the
`memory_gb` (torch.cuda.max_memory_allocated) `lmtool pretrain` logs, eager, for configs/gpt2-124m.yaml and
configs/bert-base.yaml, without and with gradient checkpointing (goal: within 15%); (b) `ddp_fsdp`:
`torchrun --nproc_per_node 1` (nccl), GPT-2 124M under ddp then fsdp: exit 0, finite losses and their
largest relative difference; (c) `mfu`: GPT-2 124M, block 1024, bf16 + torch.compile: the `mfu` of the last
logged window, after compilation (goal: >= 40% on an H100).

Runs train on synthetic processed data (random ids; a WordLevel tokenizer of the real tokenizer's size, so
model and plan pad the same vocabulary), the config's micro-batch as the global batch, no evaluation, no
checkpoints: nothing is downloaded. One JSON line on stdout, progress on stderr. Exit 0 even when a goal is
missed (the numbers are the result); 1 when a run failed (named, with its stderr tail, in the JSON; the
other parts still run). Where a GPU is lent, with lmtool's dependencies installed:

    python scripts/gpu_check.py 2>gpu_check.log

On the project's `device` machine (its image lacks datasets, pydantic and typer 0.29): here, once,
`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic-core==2.50.5
annotated-types==0.8.0 typing-inspection==0.4.5 typer==0.29.2` (.whl ignored via .git/info/exclude), then
`run` with carry [".whl"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3 scripts/gpu_check.py --gpu h200 2>$OUT/gpu_check.log | tee $OUT/gpu_check.json

`--device cpu` checks the plumbing (2-layer 64-wide models, block 32, micro-batch 2, 2 steps, gloo, fp32,
no compile, no goals; memory is then the process's peak RSS, not comparable with plan): about a minute.
`--only gpt2|bert|ddp-fsdp|mfu` runs one part; `--steps N` sets every run's length (default 30; 2 on CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
from pathlib import Path

from gpu_runs import (
    CONFIGS,
    RunFailed,
    describe_machine,
    lmtool,
    plan_json,
    progress,
    short_run_sets,
    with_sets,
)

GOALS = {"memory_rel_error": 0.15, "mfu": 0.40}


@functools.cache
def plan_memory(key: str, sets: tuple[str, ...], gpu: str) -> dict:
    """`lmtool plan`'s memory per GPU, every strategy with and without checkpointing (one call per shape)."""
    return plan_json(key, list(sets), gpu)["memory_gb_per_gpu"]


def pretrain(name: str, key: str, sets: list[str], work: Path, torchrun: bool = False) -> list[dict]:
    """Train; the run's train records from metrics.jsonl."""
    run_dir = work / name
    progress(f"{name}: lmtool pretrain {CONFIGS[key].name}" + (" under torchrun" if torchrun else ""))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    result = lmtool(name, ["pretrain", str(CONFIGS[key]), *with_sets([*sets, f"run.output_dir={run_dir}"])],
                    launcher if torchrun else None)  # fmt: skip
    for line in result.stderr.splitlines():  # what ran: model, devices, precision, compile, batch geometry
        if "training " in line and " parameters" in line:
            progress(f"{name}: {line.strip()}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "train"]


def compare(plan: dict, records: list[dict]) -> dict:
    """Plan's total against the run's peak, with plan's parts (to explain an error) and the run's last
    window (loss, tokens/s, MFU: eager runs beside the compiled one show what compiling gains)."""
    measured, last = max(r["memory_gb"] for r in records), records[-1]
    return {"predicted_gb": round(plan["total"], 3), "measured_gb": measured,
            "rel_error": round((plan["total"] - measured) / measured, 4),
            "predicted_parts_gb": {k: round(v, 3) for k, v in plan.items() if k not in ("total", "fits", "peak_at")},
            "predicted_peak_at": plan["peak_at"],
            "last_loss": last["loss"], "tokens_per_s": round(last["tokens_per_s"], 1), "mfu": last.get("mfu")}  # fmt: skip


def check_memory(key: str, work: Path, args: argparse.Namespace) -> dict:
    """(a) plan's DDP memory per GPU against the measured peak, without and with gradient checkpointing."""
    sets, out = short_run_sets(key, work, args.device, args.steps), {}
    memory = plan_memory(key, tuple(sets), args.gpu)
    for name in (key, f"{key}_checkpointing"):
        checkpointing = str(name != key).lower()
        records = pretrain(name, key, [*sets, f"train.gradient_checkpointing={checkpointing}"], work)
        out[name] = compare(memory["ddp_checkpointing" if name != key else "ddp"], records)
    return out


def check_strategies(work: Path, args: argparse.Namespace) -> dict:
    """(b) GPT-2 124M under torchrun with one process: ddp and fsdp (nccl on a GPU), losses side by side."""
    sets = short_run_sets("gpt2", work, args.device, args.steps)
    memory = plan_memory("gpt2", tuple(sets), args.gpu)
    out, losses = {}, {}
    for strategy in ("ddp", "fsdp"):
        strategy_set = f"train.distributed.strategy={strategy}"
        records = pretrain(strategy, "gpt2", [*sets, strategy_set], work, torchrun=True)
        out[strategy] = compare(memory[strategy], records)
        losses[strategy] = {r["step"]: r["loss"] for r in records}
    pairs = [(loss, losses["fsdp"].get(step, math.nan)) for step, loss in losses["ddp"].items()]
    out["losses_finite"] = all(math.isfinite(x) for pair in pairs for x in pair)
    out["max_loss_rel_diff"] = round(max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs), 6)
    return out


def check_mfu(work: Path, args: argparse.Namespace) -> dict:
    """(c) GPT-2 124M, bf16 + torch.compile (not on the CPU smoke run): MFU of the last logged window."""
    steps = args.steps if args.device == "cpu" else max(args.steps, 30)
    sets = short_run_sets("gpt2", work, args.device, args.steps)
    sets += [f"train.max_steps={steps}", f"train.compile={str(args.device == 'cuda').lower()}",
             f"train.log_every={10 if steps >= 20 else 1}"]  # fmt: skip
    predicted = plan_memory("gpt2", tuple(sets), args.gpu)["ddp"]  # compiled: plan counts the fused loss
    records = pretrain("mfu", "gpt2", sets, work)
    compiled = args.device == "cuda"
    return {**compare(predicted, records), "window_end_step": records[-1]["step"], "compiled": compiled}


def goals_met(result: dict, args: argparse.Namespace) -> dict | None:
    if args.device == "cpu":
        return None  # a smoke run measures plumbing, not the GPU goals
    errors = [m["rel_error"] for m in result.get("memory", {}).values()]
    mfu = result.get("mfu", {}).get("mfu")
    return {"memory_rel_error": all(abs(e) <= GOALS["memory_rel_error"] for e in errors) if errors else None,
            "mfu": mfu >= GOALS["mfu"] if mfu is not None else None}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--steps", type=int, help="steps of every run (default 30; 2 on cpu; mfu: at least 30 on cuda)"
    )
    parser.add_argument("--only", choices=["gpt2", "bert", "ddp-fsdp", "mfu"], help="run one part")
    parser.add_argument("--gpu", default="h100", help="lmtool plan --gpu (only plan's `fits` depends on it)")
    args = parser.parse_args()
    args.steps = args.steps or (30 if args.device == "cuda" else 2)
    result: dict = {"benchmark": "gpu_check", "device": args.device, **describe_machine(args.device),
                    "plan_gpu": args.gpu, "steps": args.steps, "goals": GOALS}  # fmt: skip
    parts = {
        "gpt2": lambda work: ("memory", check_memory("gpt2", work, args)),
        "bert": lambda work: ("memory", check_memory("bert", work, args)),
        "ddp-fsdp": lambda work: ("ddp_fsdp", check_strategies(work, args)),
        "mfu": lambda work: ("mfu", check_mfu(work, args)),
    }
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for part, check in parts.items():
            if args.only not in (None, part):
                continue
            try:
                field, value = check(Path(tmp))
            except RunFailed as exc:
                name, tail = exc.args
                progress(f"{name} failed: {tail}")
                failed.append({"part": part, "run": name, "stderr_tail": tail})
                continue
            result[field] = {**result.get(field, {}), **value} if field == "memory" else value
    result["met"] = goals_met(result, args)
    result["failed"] = failed
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
