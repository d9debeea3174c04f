"""final/: the model a run hands over, a plain save_pretrained directory swapped in atomically: the last
weights, or with train.final_model best those of the best evaluation (copied from its checkpoint)."""

from __future__ import annotations

from pathlib import Path

from lmtool import console
from lmtool.train import atomic, checkpoint
from lmtool.train.model_files import ModelFiles
from lmtool.train.progress import Progress


def best_checkpoint(run_dir: Path, state: Progress, metric: str) -> Path | None:
    """The checkpoint of the best evaluation, or None (saying why) when final/ gets the last weights."""
    step = state.best_step
    if step is None:
        console.info("train.final_model best: no evaluation, so final/ holds the last weights")
        return None
    path = Path(run_dir) / checkpoint.CHECKPOINTS / checkpoint.checkpoint_name(step)
    if not checkpoint.is_complete(path):
        console.warning(f"the best checkpoint {path} is missing or incomplete: final/ holds the last weights")
        return None
    console.info(f"final/: the weights of step {step} ({metric} {state.best_value:.4g})")
    return path


def write_final(final: Path, model, tokenizer, best: Path | None, files: ModelFiles | None = None) -> None:
    """Rank 0: write `final` from `best` (a checkpoint) when given, else from the model in memory, the way
    `files` says (default: a plain save_pretrained directory)."""
    files = files or ModelFiles()
    atomic.write_dir(
        final.parent / ".tmp-final",
        final,
        lambda tmp: files.export(model, tokenizer, best, tmp),
        "the final model",
    )
