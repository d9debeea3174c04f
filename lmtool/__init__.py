"""lmtool: pretrain, fine-tune, evaluate and sample Hugging Face language models."""

__version__ = "0.1.0"
