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


def run_pretrain(config: Config, *, overwrite: bool = False) -> Path:
    """Train as the config says and return the final model directory.

    Under torchrun each process runs this; rank 0 preprocesses and writes, all ranks train.
    """
    env = distributed.read_env()
    device = resolve_device(config.train.device, env.local_rank)
    distributed.init(env, device)
    try:
        final = _pretrain(config, env, device, overwrite)
    except (LmtoolError, Preempted):
        # Raised on every rank alike (config checks, agreed stop): leave the group in order.
        distributed.shutdown()
        raise
    distributed.shutdown()
    return final


def _pretrain(config: Config, env: distributed.DistEnv, device: torch.device, overwrite: bool) -> Path:
    from lmtool.model_check import check_model_config
    from lmtool.models import build_model
    from lmtool.pairing import check_init_from, check_pairing
    from lmtool.tasks import make_task
    from lmtool.train.engine import Trainer

    run_dir = Path(config.run.output_dir)
    # Settings that would fail later are refused before any preprocessing or training time is spent.
    _check_output_dir(run_dir)
    check_model_config(config)
    check_init_from(config)
    resume_from, wipe = checkpoint.resolve_resume(run_dir, config.train.resume, overwrite)
    distributed.barrier()  # every rank has decided before rank 0 changes anything
    if env.is_main and wipe:
        console.info(f"--overwrite: removing {run_dir}")
        shutil.rmtree(run_dir)
    processed = _processed_dir(config, env)
    tokenizer, train_data, eval_data = load_processed(processed, config)
    if distributed.any_rank(env.is_main and is_stale(processed, config), device):
        raise ConfigError(
            "data.processed_dir",
            f"{processed} was preprocessed from other sources or data/tokenizer settings than this config's",
            has_value=False,
            hint="run `lmtool preprocess --overwrite` with this config, or point data.processed_dir elsewhere",
        )
    check_pairing(config, tokenizer, f"the tokenizer in {processed / 'tokenizer'}")

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


def _check_output_dir(run_dir: Path) -> None:
    """run.output_dir must be a directory or creatable as one: not a file, nor under a file."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = (
                    "is a file, not a directory" if path == run_dir else f"lies under {path}, which is a file"
                )
                raise ConfigError("run.output_dir", where, value=str(run_dir))
            return


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


def is_stale(processed: Path, config: Config) -> bool:
    """True when `lmtool preprocess` made `processed` with another content key than this config gives
    (changed corpus, cleaning, tokenizer or data settings). A directory without a key (not made by
    lmtool preprocess) or a config without sources cannot be compared and is used as is."""
    from lmtool.data import sources as src
    from lmtool.data.preprocess import content_key

    try:
        made = json.loads((processed / "manifest.json").read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return False
    data = config.data
    if made is None or not data.sources:
        return False
    try:
        sources = [src.resolve(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
        sources += [
            src.resolve(s, f"data.validation_sources.{i}") for i, s in enumerate(data.validation_sources)
        ]
    except LmtoolError as exc:
        console.warning(f"cannot check that {processed} is up to date ({exc}); training on it as is")
        return False
    return content_key(config, sources) != made


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
