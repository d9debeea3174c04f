"""How the engine reads a model back from a checkpoint and writes final/.

Checkpoints hold whatever `model.save_pretrained` writes. For a plain transformers model that is the
whole model, read back with `checkpoint.load_model_weights` and handed over as is; a model that saves
only part of itself (LoRA adapters) comes with its own `ModelFiles` from the recipe, so the engine
needs to know nothing about it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmtool.train import checkpoint
from lmtool.train.vocab_trim import save_final_model


class ModelFiles:
    """The default: full save_pretrained directories."""

    def load(self, model: torch.nn.Module, path: Path) -> None:
        """Restore `model`'s trained weights in place from checkpoint `path` (on resume)."""
        checkpoint.load_model_weights(model, path)

    def export(self, model: torch.nn.Module, tokenizer, best: Path | None, directory: Path) -> None:
        """Write the model a run hands over into the empty `directory`, with the tokenizer's vocabulary
        size: checkpoint `best`'s weights when given (loaded into the model, which trains no further),
        else the model in memory (rank 0, once, at the end of training)."""
        if best is not None:
            self.load(model, best)
        save_final_model(model, tokenizer, directory)
