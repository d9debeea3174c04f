"""What the GPU scripts (gpu_check.py, bench_gpu.py) share: synthetic processed data for the GPT-2 124M and
BERT-base configs, the overrides that make a short timed run of them, `lmtool` through its CLI, and a
description of the machine. Imported from beside them (`python scripts/NAME.py` puts scripts/ on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = {"gpt2": ROOT / "configs" / "gpt2-124m.yaml", "bert": ROOT / "configs" / "bert-base.yaml"}
VOCAB = {"gpt2": 50257, "bert": 30522}  # the real GPT-2 tokenizer's size; bert-base's tokenizer.train
SPECIAL = {"gpt2": ["<|endoftext|>"], "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}
SMOKE = {  # --device cpu: the same configs shrunk, so the plumbing runs in seconds per run
    "gpt2": ["model.config.n_layer=2", "model.config.n_embd=64", "model.config.n_head=2"],
    "bert": ["model.config.num_hidden_layers=2", "model.config.hidden_size=64",
             "model.config.num_attention_heads=2", "model.config.intermediate_size=128"],
}  # fmt: skip
SMOKE_BLOCK, SMOKE_BATCH = 32, 2
RUN_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


class RunFailed(Exception):
    """A run exited non-zero: its name and the tail of its stderr."""


def progress(message: str) -> None:
    print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr, flush=True)


def make_data(path: Path, key: str, block: int, blocks: int) -> Path:
    """A processed data directory as `lmtool preprocess` writes it: random ids, a tokenizer of VOCAB[key]."""
    import datasets
    import numpy as np
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    datasets.disable_progress_bars()
    special = SPECIAL[key]
    # BERT: a third of the tokens continue a word (WordPiece `##`), so whole-word masking has words to mask.
    words = [f"##w{i}" if key == "bert" and i % 3 == 2 else f"w{i}" for i in range(VOCAB[key] - len(special))]
    vocab = {token: i for i, token in enumerate(special + words)}
    if key == "gpt2":
        names = dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), special[0])
    else:
        names = dict(
            zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), special, strict=True)
        )
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=names["unk_token"]))
    PreTrainedTokenizerFast(tokenizer_object=core, **names).save_pretrained(path / "tokenizer")
    ids = np.random.default_rng(0).integers(len(special), VOCAB[key], size=(blocks, block), dtype=np.uint16)
    if key == "bert":
        ids[:, 0], ids[:, -1] = vocab["[CLS]"], vocab["[SEP]"]
    datasets.Dataset.from_dict({"input_ids": ids}).save_to_disk(str(path / "train"))
    objective = "clm" if key == "gpt2" else "mlm"
    manifest = {"objective": objective, "block_size": block, "vocab_size": VOCAB[key],
                "splits": {"train": {"blocks": blocks, "tokens": blocks * block}}}  # fmt: skip
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def short_run_sets(key: str, work: Path, device: str, steps: int) -> list[str]:
    """The synthetic data for `key` (enough blocks for every step) and the overrides every run of it shares:
    data, length, one micro-batch per step, no evaluation or saves, a 1-step warm-up (the configs' thousands
    would keep the lr near 0), eager, precision, the plain loss (bench_gpu adds a fused-loss run), no trackers or
    report (they are not the engine's speed); the smoke shape (2 layers, 64 wide, block 32, fp32) on CPU."""
    from lmtool.config import load_config

    config, smoke = load_config(CONFIGS[key]), device == "cpu"
    block, batch = (SMOKE_BLOCK, SMOKE_BATCH) if smoke else (config.data.block_size, config.train.batch_size)
    data = work / f"data-{key}"
    if not data.exists():
        progress(f"synthetic {key} data: {VOCAB[key]} tokens, block {block}")
        make_data(data, key, block, batch * max(steps, 30) + batch)
    sets = [f"data.processed_dir={data}", f"train.max_steps={steps}", "train.global_batch_tokens=null",
            f"train.global_batch_size={batch}", "train.eval_every=0", "train.save_every=0", "train.log_every=1",
            "train.keep_best=false", "train.stop_before=null", "train.warmup_steps=1", "train.compile=false",
            f"train.device={device}", f"train.precision={'fp32' if smoke else 'bf16'}", "train.fused_loss=false",
            "logging.wandb=null", "logging.report=false", "logging.tensorboard=false"]  # fmt: skip
    return [*sets, *SMOKE[key], f"data.block_size={block}", f"train.batch_size={batch}"] if smoke else sets


def lmtool(name: str, args: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m lmtool ARGS` (or `LAUNCHER -m lmtool ARGS`), or raise RunFailed."""
    command = [*(launcher or [sys.executable]), "-m", "lmtool", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=RUN_ENV)
    if result.returncode != 0:
        raise RunFailed(name, f"exit {result.returncode}: {result.stderr[-3000:]}")
    return result


def with_sets(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def plan_json(key: str, sets: list[str], gpu: str) -> dict:
    """`lmtool plan`'s JSON for one process on a `gpu` with these overrides."""
    out = lmtool(f"plan {key}", ["plan", str(CONFIGS[key]), "--gpus", "1", "--gpu", gpu, "--format", "json",
                                 *with_sets(sets)])  # fmt: skip
    return json.loads(out.stdout)


def cpu_features() -> dict:
    """What decides CPU speed here: the vector ISA torch dispatches to and native bf16 units."""
    import torch

    from lmtool.runtime import cpu_has_bf16

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_units": cpu_has_bf16()}


def describe_machine(device: str) -> dict:
    import torch
    import transformers

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {"cpu": names[0] if names else platform.processor(), "cpu_count": os.cpu_count(), **cpu_features(),
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "torch": torch.__version__,
            "cuda": torch.version.cuda if device == "cuda" else None,
            "transformers": transformers.__version__}  # fmt: skip
