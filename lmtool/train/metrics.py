"""Where training metrics go (metrics.jsonl always, TensorBoard optionally) and how throughput and
MFU (model FLOPs utilisation) are computed.

MFU = achieved model FLOP/s / peak FLOP/s, with model FLOPs per token = 6N + 12·L·H·Q·T
(PaLM appendix B): 6N for the forward and backward matmuls of N parameters, plus attention
scores and values over T positions for L layers of H heads of size Q. N counts parameters that
take part in matmuls: embedding tables only when tied to the output head. The peak comes from a
table for known GPUs, or on CPU from a short matmul benchmark in the training dtype; on other
devices there is no MFU rather than a guess.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lmtool import console
from lmtool.train import atomic
from lmtool.train.trackers import Tracker, scalars

if TYPE_CHECKING:
    from lmtool.train.progress import Progress

# Dense bf16/fp16 tensor-core peaks (FLOP/s, no sparsity) by substring of the device name; most specific first.
GPU_PEAK_BF16 = (
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),  # fp16 (no bf16)
    ("T4", 65e12),  # fp16
)

# Memory (GB) by substring of the device name, most specific first (`lmtool plan` checks fits against it).
GPU_MEMORY_GB = (
    ("H200", 141),
    ("GH200", 96),
    ("H100 NVL", 94),
    ("H100", 80),
    ("H800", 80),
    ("B200", 180),
    ("A100 40GB", 40),
    ("A100", 80),
    ("A800", 80),
    ("A10G", 24),
    ("A10", 24),
    ("L40S", 48),
    ("L4", 24),
    ("RTX 4090", 24),
    ("RTX 3090", 24),
    ("V100 16GB", 16),
    ("V100", 32),
    ("T4", 16),
)


class MetricsSink:
    """Appends one JSON object per line to metrics.jsonl, and passes each record to the trackers
    (TensorBoard, W&B); rank 0 only. A tracker that fails is warned about and dropped: training goes on."""

    def __init__(self, path: Path, trackers: Sequence[Tracker] = ()):
        self.path = Path(path)
        _, self._eval_steps = _recorded_steps(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        self._trackers = list(trackers)
        self._final: dict[str, float] = {}  # the last value of each metric, the trackers' summary

    def evaluated(self, step: int) -> bool:
        """Whether metrics.jsonl has the eval record of `step` (a run resumed at its end has its final eval)."""
        return step in self._eval_steps

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if record["type"] == "eval":
            self._eval_steps.add(record["step"])
        self._final.update(scalars(record))
        for tracker in list(self._trackers):
            self._call(tracker, tracker.log, record)

    def close(self) -> None:
        self._file.close()
        for tracker in list(self._trackers):
            self._call(tracker, tracker.close, dict(self._final))

    def _call(self, tracker: Tracker, method, argument) -> None:
        try:
            method(argument)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops training
            self._trackers.remove(tracker)
            console.warning(
                f"{tracker.name} failed ({type(exc).__name__}: {exc}); training goes on without it"
            )


def _parse(text: str) -> list[tuple[str, dict]]:
    """(line, record) for each line of a metrics file that parses (a line cut short by a kill does not)."""
    pairs = []
    for line in text.splitlines():
        try:
            pairs.append((line, json.loads(line)))
        except ValueError:
            continue
    return pairs


def _recorded_steps(path: Path) -> tuple[int, set[int]]:
    """(last step with a record, steps with an eval record) in a metrics file."""
    records = [record for _, record in _parse(path.read_text(encoding="utf-8"))] if path.exists() else []
    last = max((record.get("step", 0) for record in records), default=0)
    return last, {record.get("step", 0) for record in records if record.get("type") == "eval"}


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop records past `after_step` (a resumed run rewrites them), so each step appears once.

    The file is replaced, not rewritten in place: a kill or a full disk meanwhile leaves the old history.
    """
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    kept = [line for line, record in _parse(text) if record.get("step", 0) <= after_step]
    if text != "".join(f"{line}\n" for line in kept):
        atomic.rewrite_lines(path, kept)


def matmul_parameters(model: nn.Module) -> int:
    """Parameters used in matmuls: all except embedding tables that are only looked up."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = id(head.weight) if head is not None else None
    lookup_only = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and id(m.weight) != head_weight
    }
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen and id(param) not in lookup_only:
            seen.add(id(param))
            total += param.numel()
    return total


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """6N + 12·L·H·Q·T; the attention term is zero for models without attention (the LSTM)."""
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    attention = 0.0
    if layers and heads and hidden:
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        attention = 12.0 * layers * heads * head_dim * seq_len
    return 6.0 * matmul_parameters(model) + attention


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s for MFU: the GPU table, a measured matmul peak on CPU, None when unknown."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, bf16 in GPU_PEAK_BF16:
            if key in name:
                return bf16 if dtype in (torch.bfloat16, torch.float16) else None
        return None
    if device.type == "cpu":
        if dtype not in _CPU_PEAK:  # measured once per process
            _CPU_PEAK[dtype] = measure_cpu_matmul_peak(dtype)
        return _CPU_PEAK[dtype]
    return None


_CPU_PEAK: dict[torch.dtype, float] = {}


def remeasure_cpu_peak(dtype: torch.dtype) -> float:
    """Measure the CPU peak again and keep the higher figure: one taken while other processes held the
    cores is too low, and would put MFU above 100%."""
    _CPU_PEAK[dtype] = max(_CPU_PEAK.get(dtype, 0.0), measure_cpu_matmul_peak(dtype))
    return _CPU_PEAK[dtype]


def measure_cpu_matmul_peak(dtype: torch.dtype, seconds: float = 0.3, size: int = 1024) -> float:
    """Best FLOP/s of square matmuls in `dtype` over ~`seconds`."""
    # Not the global generator: a resumed run's RNG stream stays intact.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    torch.mm(a, b)  # warm-up
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def model_flops_utilization(
    tokens_per_s: float, flops_per_token: float, peak: float, processes: int
) -> float:
    """MFU of the whole job: `tokens_per_s` counts every process's tokens, so it is set against the peak of
    all of them (`peak` is one process's: its GPU, or on CPU the matmul rate of the threads it has)."""
    return tokens_per_s * flops_per_token / (peak * processes)


class MfuMeter:
    """MFU of the job from its tokens/s. On CPU the peak is measured again (at most once a minute) when MFU
    comes out above 100%: a start-up figure taken while other processes held the cores is too low."""

    def __init__(self, flops_per_token: float, peak: float, processes: int, device: torch.device, dtype):
        self.flops_per_token, self.peak, self.processes = flops_per_token, peak, processes
        self.device, self.dtype = device, dtype
        self._remeasure_after = 0.0  # monotonic time before which the CPU peak is not measured again

    def __call__(self, tokens_per_s: float) -> float:
        mfu = model_flops_utilization(tokens_per_s, self.flops_per_token, self.peak, self.processes)
        if mfu > 1.0 and self.device.type == "cpu" and time.monotonic() > self._remeasure_after:
            self.peak = remeasure_cpu_peak(self.dtype)
            self._remeasure_after = time.monotonic() + 60.0
            mfu = model_flops_utilization(tokens_per_s, self.flops_per_token, self.peak, self.processes)
        return mfu


def memory_gb(device: torch.device) -> float:
    """Peak memory: GPU allocator peak on CUDA, peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train_line(record: dict, total_steps: int) -> str:
    """The console line of a train record."""
    line = (
        f"step {record['step']}/{total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
        f"grad {record['grad_norm']:.3g} | {record['tokens_per_s']:,.0f} tok/s"
    )
    if "mfu" in record:
        line += f" | MFU {record['mfu']:.1%}"
    return line + f" | mem {record['memory_gb']:.2f} GB | ETA {format_duration(record['eta_s'])}"


def eval_line(metrics: dict, step: int) -> str:
    """The console line of an evaluation: its float metrics (nested ones go to metrics.jsonl only)."""
    shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float) and k != "tokens")
    return f"eval step {step}: {shown}"


class TrainWindow:
    """Token-weighted loss and throughput since the last log line."""

    def __init__(self, state: Progress):
        self.start_time = time.perf_counter()
        self.run_start_time = self.start_time
        self.run_start_step = state.step
        self.loss_sum = 0.0
        self.targets = 0
        self.tokens = 0

    def add(self, loss_sum: float, targets: int, tokens: int) -> None:
        self.loss_sum += loss_sum
        self.targets += targets
        self.tokens += tokens

    def flush(self, state: Progress, total_steps: int, *, lr: float, grad_norm: float) -> dict:
        now = time.perf_counter()
        elapsed = max(now - self.start_time, 1e-9)
        per_step = (now - self.run_start_time) / max(state.step - self.run_start_step, 1)
        record = {
            "type": "train",
            "step": state.step,
            "loss": self.loss_sum / max(self.targets, 1),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": self.tokens / elapsed,
            "tokens": state.tokens_seen,
            "samples": state.samples_seen,
            "elapsed_s": now - self.run_start_time,
            "eta_s": per_step * (total_steps - state.step),
            "nonfinite_skipped": state.nonfinite_total,
            "scaler_skipped": state.scaler_skipped,
        }
        self.start_time, self.loss_sum, self.targets, self.tokens = now, 0.0, 0, 0
        return record
