"""`lmtool preprocess` for finetune.task: sft: sources → train/, validation/, test/ (input_ids, labels,
length; unpacked: the recipe packs them when finetune.sft.packing and the model allows), tokenizer/
(with the chat template used) and manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

from lmtool import console
from lmtool.config import Config
from lmtool.data.documents import HoldOut
from lmtool.data.labeled_build import load_finetune_tokenizer, test_sources, tokenizer_source, write_manifest
from lmtool.data.sft_data import SftExample, encode_sft, read_sft_examples, require_chat_template
from lmtool.errors import LmtoolError


def build_sft(config: Config, train_sources, val_sources, out: Path, scratch: Path, key: str) -> None:
    """Read, render, tokenize and save every split of the SFT data into `out`."""
    import datasets

    cfg, data = config.finetune, config.data
    tests = test_sources(config)
    tokenizer = load_finetune_tokenizer(config)
    if cfg.sft.format == "messages":
        require_chat_template(tokenizer, cfg, tokenizer_source(config)[0])
    cache = scratch / "hf-cache"
    splits: dict[str, list[SftExample]] = {"train": [], "validation": []}
    hold_out = HoldOut(data.seed, data.validation_fraction if not val_sources else 0.0)
    for source in train_sources:
        for example in read_sft_examples(source, cfg, tokenizer, data.encoding_errors, cache):
            identity = json.dumps(example.segments, ensure_ascii=False).encode("utf-8", "surrogatepass")
            splits["validation" if hold_out(identity) else "train"].append(example)
    for name, sources in (("validation", val_sources), ("test", tests)):
        for source in sources:
            splits.setdefault(name, []).extend(
                read_sft_examples(source, cfg, tokenizer, data.encoding_errors, cache)
            )
    if not splits["train"]:
        raise LmtoolError("no training examples in data.sources (after holding out data.validation_fraction)")
    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "labels": datasets.List(datasets.Value("int64")),
            "length": datasets.Value("int32"),
        }
    )
    counts: dict[str, dict] = {}
    for split, examples in splits.items():
        columns, numbers = encode_sft(tokenizer, examples, cfg)
        counts[split] = {"examples": len(columns["length"]), **numbers}
        datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out / split))
    if not counts["train"]["examples"]:
        raise LmtoolError("no training example has a response token left (see finetune.max_length)")
    sft = cfg.sft.model_dump(mode="json", exclude={"packing"})
    write_manifest(out, config, key, tokenizer, counts, (train_sources, val_sources), sft=sft)
    shown = ", ".join(f"{counts[s]['examples']} {s}" for s in counts)
    truncated = sum(c["truncated"] for c in counts.values())
    console.info(
        f"preprocessed {shown} examples ({counts['train']['target_tokens']} trained tokens in train, "
        f"{truncated} truncated to max_length {cfg.max_length})"
    )
