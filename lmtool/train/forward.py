"""The module the strategies wrap and compile: the model together with the task's loss.

Compiling the model alone leaves the loss eager: an fp32 copy of the full-vocabulary logits, its saved
log-softmax and their gradients (three logit-sized fp32 buffers alive at once in the backward, 2.5 GB
each for GPT-2 124M at 12 x 1024 tokens). With the loss inside the compiled module inductor fuses the
cross-entropy with the logits, as a hand-written `model(input_ids, labels=...)` loop gets it, and DDP
sees one forward.
"""

from __future__ import annotations

import torch
from torch import nn


class TaskForward(nn.Module):
    """`forward(batch)` = the task's (mean loss, target count) of `model` on the batch."""

    def __init__(self, model: nn.Module, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.loss(self.model, batch)
