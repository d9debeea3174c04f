"""Fine-tuning helpers the finetune recipe wires together: loading a pretrained model with a task head,
freezing parts of it, and layer-wise learning-rate decay."""

from lmtool.finetune.heads import freeze, layer_lr_scale, load_for_task

__all__ = ["freeze", "layer_lr_scale", "load_for_task"]
