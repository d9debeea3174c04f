"""The whole config: one section per part of the pipeline."""

from __future__ import annotations

from pydantic import Field, model_validator

from lmtool.config.base import Section
from lmtool.config.data import DataConfig, RunConfig, TokenizerConfig
from lmtool.config.errors import ConfigError
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

    @model_validator(mode="after")
    def _lora_not_sharded(self) -> Config:
        if (
            self.finetune is not None
            and self.finetune.lora is not None
            and self.train.distributed.strategy == "fsdp"
        ):
            raise ConfigError(
                "train.distributed.strategy",
                "fsdp cannot checkpoint a LoRA model (its checkpoints hold only the adapters): use ddp with finetune.lora",
                value="fsdp",
            )
        return self
