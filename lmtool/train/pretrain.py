"""`lmtool pretrain`: processed data + model + task + engine, under one or many processes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lmtool import console
from lmtool.config import Config, ConfigError
from lmtool.errors import LmtoolError, Preempted
from lmtool.train import checkpoint, distributed
from lmtool.train.precision import enable_tf32, keep_cpu_memory, resolve_device, resolve_precision
from lmtool.train.rundir import check_run_dir, run_dir_lock


def run_pretrain(config: Config, *, overwrite: bool = False) -> Path:
    """Train as the config says and return the final model directory.

    Under torchrun each process runs this; rank 0 preprocesses and writes, all ranks train.
    """
    env = distributed.read_env()
    device = resolve_device(config.train.device, env.local_rank)
    distributed.init(env, device)
    try:
        with run_dir_lock(Path(config.run.output_dir), env, device):
            final = _pretrain(config, env, device, overwrite)
    except (LmtoolError, Preempted):
        # Raised on every rank alike (config checks, agreed stop): leave the group in order.
        distributed.shutdown()
        raise
    distributed.shutdown()
    return final


def _pretrain(config: Config, env: distributed.DistEnv, device: torch.device, overwrite: bool) -> Path:
    from lmtool.models import build_model
    from lmtool.tasks import make_task
    from lmtool.train.engine import Trainer

    run_dir = Path(config.run.output_dir)
    check_run_dir(config, run_dir, overwrite)
    resume_from, wipe = checkpoint.resolve_resume(run_dir, config.train.resume, overwrite)
    distributed.barrier()  # every rank has decided before rank 0 changes anything
    if env.is_main and wipe:
        console.info(f"--overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    processed = _processed_dir(config, env)
    tokenizer, train_data, eval_data = load_processed(processed, config)

    precision = resolve_precision(config.train.precision, device)
    enable_tf32(device)
    keep_cpu_memory(device)
    model = build_model(config, tokenizer)
    task = make_task(config.data.objective, tokenizer, seed=config.run.seed, mlm=config.train.mlm)
    _seed_everything(config.run.seed + env.rank)  # dropout differs per rank; resume restores these streams
    trainer = Trainer(
        config=config,
        model=model,
        task=task,
        tokenizer=tokenizer,
        train_data=train_data,
        eval_data=eval_data,
        run_dir=run_dir,
        env=env,
        device=device,
        precision=precision,
        resume_from=resume_from,
    )
    final = trainer.fit()
    console.info(f"done: model and tokenizer in {final}")
    return final


def _processed_dir(config: Config, env: distributed.DistEnv) -> Path:
    """The processed data directory, made by rank 0 first if it does not exist yet."""
    processed = Path(config.data.processed_dir)
    if not processed.exists():
        if env.is_main:
            from lmtool.data.preprocess import run_preprocess

            console.info(f"{processed} does not exist: preprocessing first")
            run_preprocess(config)
        distributed.barrier()
    return processed


def load_processed(processed: Path, config: Config):
    """(tokenizer, train split, validation split or None), checked against the config."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    manifest_path = processed / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for key in ("objective", "block_size"):
            made, wanted = manifest.get(key), getattr(config.data, key)
            if made is not None and made != wanted:
                raise ConfigError(
                    f"data.{key}",
                    f"{processed} was preprocessed with {made}; "
                    "run `lmtool preprocess --overwrite` with this config or point data.processed_dir elsewhere",
                    value=wanted,
                )
    if not (processed / "train").is_dir() or not (processed / "tokenizer").is_dir():
        raise LmtoolError(
            f"{processed} is not a processed data directory (no train/ or tokenizer/): run `lmtool preprocess` first"
        )
    tokenizer = AutoTokenizer.from_pretrained(processed / "tokenizer")
    train = datasets.load_from_disk(str(processed / "train"))
    validation = (
        datasets.load_from_disk(str(processed / "validation"))
        if (processed / "validation").is_dir()
        else None
    )
    return tokenizer, train, validation


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
