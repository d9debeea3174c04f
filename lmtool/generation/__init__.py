"""`lmtool generate`: continue prompts with a causal LM, or fill masks with a masked LM.

Output is JSON lines (one object per prompt x sample) when stdout is a pipe or file, and text
streamed as it is produced on a terminal. Nothing but results goes to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TextIO

import torch

from lmtool import console
from lmtool.config import GenerateConfig
from lmtool.errors import LmtoolError
from lmtool.generation.prompts import PER_PROMPT_KEYS, SAMPLING_KEYS, Prompt, read_prompts, sampling_settings
from lmtool.inference import Loaded, load_for_inference


def run_generate(
    cfg: GenerateConfig,
    args: list[str],
    file: str | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Generate for every prompt and write the results; returns the number of records written."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    prompts = read_prompts(args, file, cfg, stdin)
    as_text = cfg.format == "text" or (cfg.format == "auto" and stdout.isatty())
    loaded = load_for_inference(cfg.model, device=cfg.device, precision=cfg.precision, section="generate",
                                trust_remote_code=cfg.trust_remote_code)  # fmt: skip
    if _mode(cfg, loaded) == "fill-mask":
        _check_no_sampling(cfg, prompts)
        return _fill_masks(loaded, prompts, cfg.batch_size, stdout, as_text)
    return _continue(loaded, prompts, cfg.batch_size, stdout, as_text)


def _mode(cfg: GenerateConfig, loaded: Loaded) -> str:
    kind = type(loaded.model).__name__
    if cfg.mode == "fill-mask" and loaded.causal:
        has_mask = loaded.tokenizer.mask_token is not None
        why = "" if has_mask else " and its tokenizer has no mask token"
        raise LmtoolError(
            f"fill-mask needs a masked LM; {cfg.model} is a causal LM ({kind}){why}: use generate mode"
        )
    if cfg.mode == "generate" and not loaded.causal:
        raise LmtoolError(
            f"{cfg.model} is a masked LM ({kind}), which cannot continue text: use fill-mask mode"
        )
    return "generate" if loaded.causal else "fill-mask"


def _check_no_sampling(cfg: GenerateConfig, prompts: list[Prompt]) -> None:
    """Sampling settings silently ignored would mislead: name the ones that were set."""
    defaults = GenerateConfig(model=cfg.model)
    for settings, where in [(cfg, "the config/flags"), *((p.settings, p.origin) for p in prompts)]:
        changed = [k for k in SAMPLING_KEYS if k != "seed" and getattr(settings, k) != getattr(defaults, k)]
        if changed:
            raise LmtoolError(
                f"sampling options do not apply to a masked LM (fill-mask): {', '.join(changed)} set in {where}; "
                "only fill_mask_top_k does"
            )


def _batches(prompts: list[Prompt], size: int) -> Iterator[tuple[list[Prompt], GenerateConfig]]:
    """Runs of consecutive prompts with the same settings, at most `size` long (output stays in order)."""
    run: list[Prompt] = []
    for prompt in prompts:
        if run and (len(run) == size or _key(prompt.settings) != _key(run[0].settings)):
            yield run, run[0].settings
            run = []
        run.append(prompt)
    if run:
        yield run, run[0].settings


def _key(settings: GenerateConfig) -> tuple:
    return tuple(json.dumps(getattr(settings, k)) for k in PER_PROMPT_KEYS)


def _continue(loaded: Loaded, prompts: list[Prompt], batch_size: int, out: TextIO, as_text: bool) -> int:
    from lmtool.generation.causal import Generator, TextStream

    gen = Generator(loaded)
    written = 0
    stream = as_text and all(p.settings.num_beams == 1 for p in prompts)
    if not gen.pads_safely and batch_size > 1:
        console.info(
            f"{type(loaded.model).__name__} cannot hide left padding: generating one prompt at a time"
        )
        batch_size = 1
    with console.progress("generating", total=len(prompts), beside=out) as bar:
        for batch, settings in _batches(prompts, 1 if stream else batch_size):
            # Seeded before every batch, so a prompt's output depends only on its seed and its batch's
            # rows (they draw from one stream), not on what earlier batches consumed.
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            if stream:  # one sample at a time, written as it is produced
                single = settings.model_copy(update={"num_return_sequences": 1})
                for index in range(settings.num_return_sequences):
                    out.write(("\n" if written else "") + batch[0].text)
                    streamer = TextStream(
                        loaded.tokenizer, settings.stop, gen.eos_ids, lambda s: (out.write(s), out.flush())
                    )
                    sample = gen.run(batch, single, streamer=streamer)[0]
                    sample.sample = index
                    out.write("\n")
                    out.flush()  # the sample's line ends before stderr's note about it
                    written += 1
                    console.info(f"[{sample.finish_reason}, {sample.tokens} tokens]")
            else:
                for sample in gen.run(batch, settings):
                    if as_text:
                        out.write(("\n" if written else "") + sample.prompt.text + sample.text + "\n")
                    else:
                        record = {"index": sample.prompt.index, "prompt": sample.prompt.text, "sample": sample.sample,
                                  "text": sample.text, "tokens": sample.tokens, "finish_reason": sample.finish_reason,
                                  "settings": sampling_settings(settings)}  # fmt: skip
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written += 1
            out.flush()
            bar.advance(len(batch))
    return written


def _fill_masks(loaded: Loaded, prompts: list[Prompt], batch_size: int, out: TextIO, as_text: bool) -> int:
    from lmtool.generation.fill_mask import check_masks, fill_mask

    check_masks(loaded.tokenizer, prompts)
    with console.progress("filling masks", total=len(prompts), beside=out) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            for record in fill_mask(loaded, batch):
                if as_text:
                    lines = [record["text"]]
                    for m in record["masks"]:
                        best = ", ".join(f"{c['token']} {c['score']:.3f}" for c in m["candidates"])
                        lines.append(f"  mask at token {m['position']}: {best}")
                    out.write("\n".join(lines) + "\n")
                else:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.advance(len(batch))
    return len(prompts)
