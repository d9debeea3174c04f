"""Fine-tuning helpers the finetune recipe wires together: loading a pretrained model with a head (the
tasks say which), freezing parts of it, and layer-wise learning-rate decay."""

from lmtool.finetune.heads import freeze, layer_lr_scale

__all__ = ["freeze", "layer_lr_scale"]
