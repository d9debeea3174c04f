"""Causal LM generation: prompts batched with left padding and the KV cache, stop strings, finish reasons.

`transformers.generate` does the decoding (greedy, sampling, beam search); this module prepares
batches, stops rows at stop strings, and turns the returned ids into text and a finish reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from lmtool import console
from lmtool.config import GenerateConfig
from lmtool.errors import LmtoolError
from lmtool.generation.prompts import Prompt
from lmtool.inference import Loaded
from lmtool.lstm import LstmConfig


@dataclass
class Sample:
    prompt: Prompt
    sample: int
    text: str
    tokens: int  # generated tokens, not counting the final EOS or padding
    finish_reason: str  # "stop" (a stop string), "eos" (the model ended), "length" (max_new_tokens)


class Generator:
    """Generates continuations for lists of prompts that share one set of settings."""

    def __init__(self, loaded: Loaded):
        from lmtool.positions import max_positions

        self.loaded = loaded
        tok = loaded.tokenizer
        eos = loaded.model.generation_config.eos_token_id
        eos = eos if eos is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        self.start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.context = max_positions(loaded.model.config)
        # Left padding is invisible only to attention models; a recurrent model's state would carry it.
        self.pads_safely = loaded.model.config.model_type != LstmConfig.model_type
        self._warned_truncation = False

    def encode(self, texts: list[str], settings: GenerateConfig) -> list[list[int]]:
        """Token ids per prompt; an empty prompt starts from BOS, long prompts keep their end."""
        limit = None
        if self.context is not None:
            if settings.max_new_tokens >= self.context:
                raise LmtoolError(
                    f"generate.max_new_tokens ({settings.max_new_tokens}) must be smaller than the model's context ({self.context})"
                )
            limit = self.context - settings.max_new_tokens
        rows = []
        for text in texts:
            ids = self.loaded.tokenizer(text)["input_ids"]
            if not ids:
                if self.start_id is None:
                    raise LmtoolError(
                        "an empty prompt needs a BOS or EOS token to start from; this tokenizer has neither"
                    )
                ids = [self.start_id]
            if limit is not None and len(ids) > limit:
                if not self._warned_truncation:
                    console.warning(
                        f"prompts longer than {limit} tokens keep only their last {limit} (context {self.context})"
                    )
                    self._warned_truncation = True
                ids = ids[-limit:]
            rows.append(ids)
        return rows

    def left_pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention[i, width - len(row) :] = 1
        dev = self.loaded.device
        return {"input_ids": input_ids.to(dev), "attention_mask": attention.to(dev)}

    def kwargs(self, settings: GenerateConfig) -> dict:
        """Arguments for `model.generate` (only those that apply, so transformers does not warn)."""
        kw = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "num_beams": settings.num_beams,
            "num_return_sequences": settings.num_return_sequences,
            "repetition_penalty": settings.repetition_penalty,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids) or None,
        }
        if settings.do_sample:
            kw.update(temperature=settings.temperature, top_k=settings.top_k or 0, top_p=settings.top_p)
        else:
            kw.update(temperature=None, top_k=None, top_p=None)
        return kw

    def run(
        self, prompts: list[Prompt], settings: GenerateConfig, streamer: BaseStreamer | None = None
    ) -> list[Sample]:
        """One `generate` call for these prompts: num_return_sequences samples each, in prompt order."""
        batch = self.left_pad(self.encode([p.text for p in prompts], settings))
        prompt_len = batch["input_ids"].shape[1]
        stopping = StoppingCriteriaList(
            [StopStrings(self.loaded.tokenizer, settings.stop, prompt_len)] if settings.stop else []
        )
        with torch.inference_mode(), self.loaded.precision.autocast():
            out = self.loaded.model.generate(
                **batch, **self.kwargs(settings), stopping_criteria=stopping, streamer=streamer
            )
        new = out[:, prompt_len:].tolist()
        n = settings.num_return_sequences
        return [self.finish(prompts[i // n], i % n, ids, settings) for i, ids in enumerate(new)]

    def finish(self, prompt: Prompt, sample: int, ids: list[int], settings: GenerateConfig) -> Sample:
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids or t == self.pad_id), len(ids))
        text = self.loaded.tokenizer.decode(ids[:end], skip_special_tokens=True)
        cut = first_stop(text, settings.stop)
        if cut is not None:
            return Sample(prompt, sample, text[:cut], end, "stop")
        reason = "eos" if end < len(ids) and ids[end] in self.eos_ids else "length"
        return Sample(prompt, sample, text, end, reason)


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


class StopStrings(StoppingCriteria):
    """Stops a row once its generated text contains a stop string (decodes only the recent tokens)."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, [s for s in stops if s], prompt_len
        self.tail = max(len(s.encode("utf-8")) for s in self.stops) + 2  # every token is at least one byte

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_len :][:, -self.tail :], skip_special_tokens=True
        )
        return torch.tensor([first_stop(t, self.stops) is not None for t in tails], device=input_ids.device)


class TextStream(BaseStreamer):
    """Writes one sample's text as it is produced, holding back what could still become a stop string."""

    def __init__(self, tokenizer, stops: list[str], eos_ids: set[int], write: Callable[[str], None]):
        self.tokenizer, self.stops, self.eos_ids, self.write = tokenizer, stops, eos_ids, write
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.printed = 0
        self.seen_prompt = False
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # the first call carries the prompt
            self.seen_prompt = True
            return
        if not self.ended:
            for token in value.view(-1).tolist():
                if token in self.eos_ids:
                    self.ended = True
                    break
                self.ids.append(token)
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = first_stop(text, self.stops)
        if cut is not None:
            text, final = text[:cut], True
        # U+FFFD at the end: a character whose bytes have not all arrived yet.
        upto = len(text) if final else len(text.rstrip("\ufffd")) - self.hold
        if upto > self.printed:
            self.write(text[self.printed : upto])
            self.printed = upto
