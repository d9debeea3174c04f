"""The whole config: one section per part of the pipeline."""

from __future__ import annotations

from pydantic import Field

from lmtool.config.base import Section
from lmtool.config.data import DataConfig, RunConfig, TokenizerConfig
from lmtool.config.finetune import FinetuneConfig
from lmtool.config.inference import EvaluateConfig, GenerateConfig, LoggingConfig
from lmtool.config.model import ModelConfig
from lmtool.config.train import TrainConfig

# --------------------------------------------------------------------------- root


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    finetune: FinetuneConfig | None = Field(
        None,
        description="Fine-tune a pretrained encoder on labeled data (lmtool finetune); null for pretraining.",
    )
