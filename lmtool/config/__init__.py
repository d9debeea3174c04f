"""The config: one schema (options, defaults, docs and validation) and its loading.

A YAML file plus `--set a.b.c=value` overrides becomes a validated `Config`. Every section
forbids unknown keys, so a typo anywhere is an error that names the dotted key. Values may
refer to other values as `${run.name}` or to the environment as `${env:HOME}`.
"""

from lmtool.config.base import Device, Precision, Section
from lmtool.config.data import (
    CleanConfig,
    DataConfig,
    RunConfig,
    SourceConfig,
    TokenizerConfig,
    TokenizerTrainConfig,
)
from lmtool.config.errors import ConfigError
from lmtool.config.finetune import ConllConfig, FinetuneConfig
from lmtool.config.inference import EvaluateConfig, GenerateConfig, LoggingConfig, WandbConfig
from lmtool.config.loader import dump_config, json_schema, load_config, parse_override
from lmtool.config.model import ModelConfig, looks_like_hub_id
from lmtool.config.schema import Config
from lmtool.config.train import DistributedConfig, MLMConfig, TrainConfig
from lmtool.config.yaml_io import yaml_load

__all__ = [
    "CleanConfig", "Config", "ConllConfig", "ConfigError", "DataConfig", "Device", "EvaluateConfig", "FinetuneConfig", "GenerateConfig",
    "DistributedConfig", "LoggingConfig", "MLMConfig", "ModelConfig", "Precision", "RunConfig", "Section", "SourceConfig",
    "TokenizerConfig", "TokenizerTrainConfig", "TrainConfig", "WandbConfig",
    "dump_config", "json_schema", "load_config", "looks_like_hub_id", "parse_override", "yaml_load",
]  # fmt: skip
