"""Turning dataset rows into batches: dynamic padding and MLM masking.

Masking is a pure function of (seed, sample_id): a resumed run, a run on a different number
of processes and an evaluation with a fixed seed all see exactly the same masks, with no
random-number state to save.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmtool.config import MLMConfig

IGNORE = -100  # label value the losses skip


def pad_batch(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack `input_ids`, right-padding short rows; `attention_mask` only when something was padded."""
    rows = [torch.as_tensor(ex["input_ids"], dtype=torch.long) for ex in examples]
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
    batch = {"input_ids": input_ids}
    if not bool(attention.all()):
        batch["attention_mask"] = attention
    return batch


def sample_generator(seed: int, sample_id: int) -> torch.Generator:
    """A generator whose stream depends only on the run seed and the sample."""
    return torch.Generator().manual_seed((seed * 1_000_003 + sample_id * 7_919 + 0x9E3779B9) % (2**63))


class Masker:
    """BERT-style dynamic masking: pick `probability` of the maskable tokens (or whole words);
    of those, replace `mask_fraction` by [MASK], `random_fraction` by a random token, keep the rest."""

    def __init__(
        self,
        cfg: MLMConfig,
        *,
        mask_id: int,
        vocab_size: int,
        special_ids: Sequence[int],
        continuation: torch.Tensor | None,
    ):
        self.cfg = cfg
        self.mask_id = mask_id
        self.vocab_size = vocab_size
        self.special = torch.zeros(max(vocab_size, max(special_ids, default=0) + 1), dtype=torch.bool)
        self.special[list(special_ids)] = True
        self.continuation = continuation  # per token id: True if it continues the previous token's word

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        seed: int,
        sample_ids: Sequence[int],
    ):
        """Returns (masked input_ids, labels with IGNORE on unselected positions)."""
        inputs = input_ids.clone()
        labels = torch.full_like(input_ids, IGNORE)
        for row, sample_id in enumerate(sample_ids):
            gen = sample_generator(seed, int(sample_id))
            ids = input_ids[row]
            maskable = ~self.special[ids]
            if attention_mask is not None:
                maskable &= attention_mask[row].bool()
            selected = self._select(ids, maskable, gen)
            action = torch.rand(ids.shape, generator=gen)
            random_ids = torch.randint(self.vocab_size, ids.shape, generator=gen)
            to_mask = selected & (action < self.cfg.mask_fraction)
            to_random = selected & ~to_mask & (action < self.cfg.mask_fraction + self.cfg.random_fraction)
            labels[row][selected] = ids[selected]
            inputs[row][to_mask] = self.mask_id
            inputs[row][to_random] = random_ids[to_random]
        return inputs, labels

    def _select(self, ids: torch.Tensor, maskable: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        draw = torch.rand(ids.shape, generator=gen)
        if not self.cfg.whole_word or self.continuation is None:
            return maskable & (draw < self.cfg.probability)
        # A word = a token that starts a word plus the continuation tokens after it; all share its draw.
        starts = ~self.continuation[ids] | ~maskable
        word_index = torch.cumsum(starts.long(), dim=0) - 1
        return maskable & (draw[starts][word_index] < self.cfg.probability)


def continuation_table(tokenizer, vocab_size: int) -> torch.Tensor:
    """Which token ids continue a word: WordPiece `##x`, or byte-level BPE tokens without a leading space."""
    table = torch.zeros(vocab_size, dtype=torch.bool)
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab_size))))
    wordpiece = any(t is not None and t.startswith("##") for t in tokens)
    for index, token in enumerate(tokens):
        if token is None or token in tokenizer.all_special_tokens:
            continue
        table[index] = token.startswith("##") if wordpiece else not token.startswith(("Ġ", "Ċ", " "))
    return table
