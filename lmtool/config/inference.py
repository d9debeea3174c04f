"""The evaluate, generate and logging sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmtool.config.base import Count, Device, Precision, Section, Seed

# --------------------------------------------------------------------------- evaluate / generate


class EvaluateConfig(Section):
    model: str = Field("${run.output_dir}/final", description="Model directory to evaluate.")
    data: str | None = Field(
        None,
        description="Processed data dir or a raw text/jsonl file; for a fine-tuned model a labeled csv/tsv/jsonl/conll file (null = data.processed_dir).",
    )
    split: str = Field("validation", description="Split of a processed data dir to evaluate.")
    max_length: int | None = Field(
        None,
        ge=2,
        description="Window length for causal LM perplexity (null = the model's context); fine-tuned models: tokens per example of a raw labeled file.",
    )
    stride: Count | None = Field(
        None, description="Tokens the window moves each step (null = the window: no overlap)."
    )
    documents: Literal["concatenate", "separate"] = Field(
        "concatenate", description="Score documents as one stream or each on its own."
    )
    batch_size: Count = Field(8, description="Windows/sequences per forward pass.")
    max_samples: Count | None = Field(
        None, description="Evaluate at most this many documents/blocks (quick checks)."
    )
    pseudo_perplexity: bool = Field(
        False, description="Masked LMs: also compute pseudo-perplexity (slow: one pass per token)."
    )
    mask_probability: float = Field(
        0.15, gt=0.0, lt=1.0, description="Masked LMs: fraction of tokens masked for loss/accuracy."
    )
    seed: Seed = Field(0, description="Seed for the evaluation mask.")
    precision: Precision = Field("fp32", description="Evaluation precision.")
    device: Device = Field("auto", description="Evaluation device.")
    output: str | None = Field(
        None, description="Where to write the result JSON (null = eval.json in the model directory)."
    )
    text_field: str = Field("text", description="Field holding the text when data is a .jsonl file.")
    doc_split: Literal["line", "paragraph", "file"] = Field(
        "file",
        description="How a raw .txt data file splits into documents: whole file (scored exactly as written), or per line / blank-line-separated paragraph (joined with EOS).",
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")


class GenerateConfig(Section):
    model: str = Field("${run.output_dir}/final", description="Model directory to sample from.")
    max_new_tokens: Count = Field(64, description="Tokens to generate per sample.")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily / by beam search (false).")
    temperature: float = Field(0.8, gt=0.0, description="Sampling temperature.")
    top_k: Count | None = Field(50, description="Sample from the k most likely tokens (null = all).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty for repeating tokens (1.0 = none).")
    num_beams: Count = Field(1, description="Beam search width (1 = no beam search).")
    num_return_sequences: Count = Field(1, description="Samples per prompt.")
    stop: list[str] = Field(
        default_factory=list, description="Stop strings: output is cut before the first one."
    )
    seed: Seed | None = Field(None, description="Seed; the same seed gives the same output (null = random).")
    batch_size: Count = Field(16, description="Prompts per batch (left-padded, KV cache).")
    fill_mask_top_k: Count = Field(5, description="Masked LMs: candidates per mask token.")
    mode: Literal["auto", "generate", "fill-mask"] = Field(
        "auto",
        description="generate: continue prompts (causal LMs); fill-mask: predict each mask token (masked LMs); auto: by the model type.",
    )
    format: Literal["auto", "text", "jsonl"] = Field(
        "auto",
        description="stdout format: text (streamed as produced), jsonl (one JSON object per prompt x sample); auto: text on a terminal, jsonl otherwise.",
    )
    precision: Precision = Field("fp32", description="Generation precision.")
    device: Device = Field("auto", description="Generation device.")
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")

    @model_validator(mode="after")
    def _sequences(self) -> GenerateConfig:
        if self.num_return_sequences > 1 and not self.do_sample and self.num_beams == 1:
            raise ValueError(
                "num_return_sequences > 1 needs do_sample: true or num_beams > 1 (greedy decoding gives one sequence)"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:  # beam search, sampled or not
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) must be at most num_beams ({self.num_beams}) for beam search"
            )
        return self


class WandbConfig(Section):
    project: str = Field(description="Weights & Biases project the run is logged to (needs the wandb extra).")
    entity: str | None = Field(None, description="W&B team or user (null = your default entity).")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online",
        description="online: stream to the server; offline: write under <output_dir>/wandb for `wandb sync` later; disabled: no-op.",
    )


class LoggingConfig(Section):
    tensorboard: bool | Literal["auto"] = Field(
        "auto",
        description="Also write TensorBoard event files to <output_dir>/tensorboard; auto: when tensorboard is installed (the tensorboard extra).",
    )
    wandb: WandbConfig | None = Field(
        None,
        description="Log metrics, the config and the final metrics to Weights & Biases from rank 0 (null = off); a tracker that fails warns and training goes on.",
    )
    report: bool = Field(
        True,
        description="Write report.md and loss/throughput plots (PNG, needs the report extra) into run.output_dir at the end of a run, as `lmtool report` does.",
    )
