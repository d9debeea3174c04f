"""Calls whose name differs across the library versions pyproject.toml allows, in one place.

Each function uses whichever spelling the installed version has, so lmtool runs unchanged from the floor
of each dependency to its ceiling (`make test-min` runs the tests of these calls on the floors).
"""

from __future__ import annotations

from torch import nn


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward (non-reentrant torch checkpointing).

    transformers 5.23 renamed `gradient_checkpointing_enable(gradient_checkpointing_kwargs=)` to
    `activation_checkpointing_enable(activation_checkpointing_kwargs=)` and deprecated the old name (a
    FutureWarning); 5.0-5.22 have only the old one.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
