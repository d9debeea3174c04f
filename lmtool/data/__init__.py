"""Data: reading sources, cleaning, tokenizers, packing, batching."""
