"""Pure metrics of the fine-tune tasks (no torch, no model): classification, NER (seqeval), SQuAD."""
