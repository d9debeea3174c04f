"""The classic recurrent LM baseline (embedding, multi-layer LSTM, tied linear head).

Written as a `transformers` config + model pair so that save/load, evaluate and generate
treat it like any other architecture. Importing this module registers it with the Auto classes.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


@strict
class LstmConfig(PreTrainedConfig):
    model_type = "lmtool_lstm"
    attribute_map = {"num_hidden_layers": "num_layers"}

    vocab_size: int = 8192
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float | int = 0.1
    initializer_range: float = 0.1
    tie_word_embeddings: bool = True
    use_cache: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None


class LstmForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LstmConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}

    def __init__(self, config: LstmConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.hidden_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        bound = self.config.initializer_range
        if isinstance(module, nn.Embedding | nn.Linear):
            nn.init.uniform_(module.weight, -bound, bound)
        elif isinstance(module, nn.LSTM):
            for name, param in module.named_parameters():
                if "bias" in name:
                    nn.init.zeros_(param)
                else:
                    nn.init.uniform_(param, -bound, bound)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutput:
        hidden = self.drop(self.embed(input_ids))
        if attention_mask is not None:
            hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)  # padding feeds zeros
        hidden, _ = self.lstm(hidden)
        logits = self.lm_head(self.drop(hidden))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, attention_mask=None, **kwargs
    ) -> dict:
        """No recurrent-state cache: each step re-reads the whole sequence (simple and exact)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _supports_default_dynamic_cache(self) -> bool:
        return False


AutoConfig.register(LstmConfig.model_type, LstmConfig)
AutoModelForCausalLM.register(LstmConfig, LstmForCausalLM)
