"""`lmtool pretrain`: processed data + model + task + engine, under one or many processes."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from lmtool import console
from lmtool.config import Config, ConfigError
from lmtool.errors import LmtoolError
from lmtool.recipes.common import (
    open_run,
    processed_dir,
    refuse_stale,
    run_on_every_rank,
    seed_everything,
    use_fused_loss,
    write_run_report,
)
from lmtool.train import distributed
from lmtool.train.precision import enable_tf32, keep_cpu_memory, resolve_precision
from lmtool.validate import validate


def run_pretrain(config: Config, *, overwrite: bool = False) -> Path:
    """Train as the config says and return the final model directory."""
    return run_on_every_rank(config, _pretrain, overwrite, checks=partial(validate, command="pretrain"))


def _pretrain(config: Config, env: distributed.DistEnv, device: torch.device, overwrite: bool) -> Path:
    from lmtool.models import build_model
    from lmtool.pairing import check_pairing
    from lmtool.tasks import make_task
    from lmtool.train.engine import Trainer

    resume_from = open_run(config, env, overwrite)
    processed = processed_dir(config)
    tokenizer, train_data, eval_data = load_processed(processed, config)
    refuse_stale(processed, config, device)
    check_pairing(config, tokenizer, f"the tokenizer in {processed / 'tokenizer'}")

    precision = resolve_precision(config.train.precision, device)
    enable_tf32(device)
    keep_cpu_memory(device)
    model = build_model(config, tokenizer)
    task = make_task(config.data.objective, tokenizer, seed=config.run.seed, mlm=config.train.mlm)
    use_fused_loss(task, model.to(device), config, device, env.world_size)
    seed_everything(config.run.seed + env.rank)  # dropout differs per rank; resume restores these streams
    trainer = Trainer(
        config=config,
        model=model,
        task=task,
        tokenizer=tokenizer,
        train_data=train_data,
        eval_data=eval_data,
        run_dir=Path(config.run.output_dir),
        env=env,
        device=device,
        precision=precision,
        resume_from=resume_from,
    )
    final = trainer.fit()
    write_run_report(config, env)
    console.info(f"done: model and tokenizer in {final}")
    return final


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
