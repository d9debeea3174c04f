"""Checkpoint stall under fsdp: how long the step loop is blocked by a periodic sharded save, with
train.async_checkpoint off (dcp.save) and on (dcp.async_save), back to back.

A GPT-2 (`--layers` x `--width`, the synthetic 41-word language of tests/engine_fixtures.py, block 64,
batch 4 per rank) trains `--steps` steps on 2 gloo ranks on CPU (`torchrun --nproc_per_node 2`, one thread
each) with a checkpoint every `--every` steps. The stall of a save is the time its call keeps the loop
from the next step (for async: staging the state in memory, plus waiting for the previous save if it has
not finished), the slower of the 2 ranks; the figure is the median over the saves of all rounds, the
final save (which always waits) left out. Sync and async runs alternate for `--rounds` rounds. Prints one
JSON line with both stalls, their ratio (sync / async) and the CPU.

    python scripts/bench_checkpoint.py [--rounds 3] [--layers 4] [--width 512] [--steps 40] [--every 10]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(config: str, out: str) -> None:
    """Under torchrun: train, recording how long each periodic save blocked this rank."""
    from lmtool.config import load_config
    from lmtool.recipes.pretrain import run_pretrain
    from lmtool.train.saving import Saver

    real_save, stalls = Saver.save, []

    def timed(self, progress, scheduler, wait: bool = True) -> None:
        started = time.perf_counter()
        real_save(self, progress, scheduler, wait)
        if not wait:
            stalls.append(time.perf_counter() - started)

    Saver.save = timed
    run_pretrain(load_config(config))
    Path(f"{out}.{os.environ['RANK']}").write_text(json.dumps(stalls))


def run(base: Path, data: Path, args, use_async: bool, round_: int) -> list[float]:
    from tests.engine_fixtures import tiny_config

    work = base / f"{'async' if use_async else 'sync'}-{round_}"
    work.mkdir()
    width = {"n_layer": args.layers, "n_embd": args.width, "n_head": 8}
    config = tiny_config(work, data, model_overrides=width, batch_size=4, max_steps=args.steps,
                         save_every=args.every, keep_last=2, log_every=args.steps,
                         distributed={"strategy": "fsdp"}, async_checkpoint=use_async)  # fmt: skip
    out = work / "stalls"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, "--worker", str(config), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    per_rank = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    return [max(pair) for pair in zip(*per_rank, strict=True)]


def cpu() -> dict:
    model, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": model, "cores": os.cpu_count(), "features": [f for f in wanted if f in flags]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    from tests.engine_fixtures import make_processed_dir

    stalls: dict[str, list[float]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = make_processed_dir(base / "processed", block_size=64, documents=400)
        for round_ in range(args.rounds):
            for use_async in (False, True):
                stalls["async" if use_async else "sync"] += run(base, data, args, use_async, round_)
    params = args.layers * 12 * args.width**2 + 64 * args.width  # blocks + embeddings (64-token vocab)
    sync_s, async_s = statistics.median(stalls["sync"]), statistics.median(stalls["async"])
    print(json.dumps({
        "benchmark": "checkpoint_stall_fsdp_2_ranks",
        "params_approx": params,
        "saves_per_mode": len(stalls["sync"]),
        "sync_stall_s": round(sync_s, 4),
        "async_stall_s": round(async_s, 4),
        "ratio_sync_over_async": round(sync_s / async_s, 2),
        "cpu": cpu(),
    }))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
