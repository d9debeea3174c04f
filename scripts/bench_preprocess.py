"""Benchmark `lmtool preprocess`: throughput against a naive loop, and memory against corpus size.

Prints one JSON line:
- tokens/s of `lmtool preprocess` (end to end: read, clean, tokenize, pack, write; from its manifest)
  and of a naive baseline (a Python loop calling the same tokenizer on one document at a time,
  documents already in memory, nothing written), on the same generated corpus, and their ratio;
  the two alternate for `--rounds` rounds and the medians are compared, so a burst of load from
  elsewhere on a shared machine does not decide the ratio;
- peak RSS (the whole process tree, sampled) of `lmtool preprocess` in streaming mode on a small
  and a 10x larger generated corpus, and their ratio.

The corpora are made of real prose: documents assembled from the docstrings of Python's standard
library (random picks, numbered so none is a duplicate), so the bench needs no download.

Usage: python scripts/bench_preprocess.py [--quick] [--rounds N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a .txt corpus of blank-line-separated documents; returns the number of documents."""
    from lmtool.data.stdlib_docs import iter_docstrings

    pool = [" ".join(d.split()) for d in iter_docstrings() if len(d) > 80]
    rng = random.Random(seed)
    target = int(megabytes * (1 << 20))
    written = docs = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            doc = " ".join(rng.choices(pool, k=rng.randint(2, 6))) + f" (document {docs})"
            f.write(doc + "\n\n")
            written += len(doc.encode()) + 2
            docs += 1
    return docs


def write_config(path: Path, corpus: Path, out: Path, tokenizer: Path | None, streaming: bool) -> None:
    tok = f"  path: {tokenizer}\n" if tokenizer else "  train: {vocab_size: 8192}\n"
    path.write_text(
        f"data:\n  sources: [{{path: {corpus}}}]\n  processed_dir: {out}\n  block_size: 512\n"
        f"  validation_fraction: 0.01\n  streaming: {str(streaming).lower()}\n"
        f"tokenizer:\n{tok}"
    )


def run_preprocess(config: Path) -> tuple[dict, int]:
    """Run `lmtool preprocess` in a subprocess; return its manifest and the peak RSS of its process tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtool", "--quiet", "preprocess", str(config), "--overwrite"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"lmtool preprocess failed ({proc.returncode}):\n{stderr}")
    manifest = json.loads((Path(stdout.strip()) / "manifest.json").read_text())
    return manifest, peak


def naive_tokens_per_second(tok, docs: list[str]) -> tuple[float, int]:
    """The baseline: one tokenizer call per document, documents already split in memory."""
    start = time.perf_counter()
    tokens = 0
    for doc in docs:
        tokens += len(tok(doc)["input_ids"]) + 1  # + EOS, as lmtool counts it
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small corpora (5 MB throughput; 10 vs 100 MB memory)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side (default 3)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    speed_mb, small_mb, large_mb = (5, 10, 100) if args.quick else (20, 50, 500)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # A tokenizer trained once (by lmtool itself) and reused, so the timed runs only tokenize.
        sample = work / "sample.txt"
        make_corpus(sample, 2, seed=1)
        write_config(work / "tok.yaml", sample, work / "tok-out", None, streaming=False)
        run_preprocess(work / "tok.yaml")
        tokenizer = work / "tok-out" / "tokenizer"

        speed = work / "speed.txt"
        make_corpus(speed, speed_mb, seed=2)
        write_config(work / "speed.yaml", speed, work / "speed-out", tokenizer, streaming=False)
        transformers.logging.set_verbosity_error()  # long documents are fine here: we only count tokens
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer)
        docs = [d for d in speed.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        manifests, naive = [], []
        for _ in range(args.rounds):
            shutil.rmtree(work / "speed-out", ignore_errors=True)  # else the second run is a cache hit
            manifests.append(run_preprocess(work / "speed.yaml")[0])
            naive.append(naive_tokens_per_second(tok, docs))
        manifest = sorted(manifests, key=lambda m: m["tokens_per_second"])[len(manifests) // 2]
        naive_tps, naive_tokens = sorted(naive)[len(naive) // 2]
        lmtool_tokens = sum(s["tokens"] for s in manifest["splits"].values())

        peaks = {}
        for label, size in (("small", small_mb), ("large", large_mb)):
            corpus = work / f"{label}.txt"
            make_corpus(corpus, size, seed=3)
            write_config(work / f"{label}.yaml", corpus, work / f"{label}-out", tokenizer, streaming=True)
            _, peaks[label] = run_preprocess(work / f"{label}.yaml")
            corpus.unlink()
            shutil.rmtree(work / f"{label}-out", ignore_errors=True)

        result = {
            "bench": "preprocess",
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "corpus_mb": speed_mb,
            "rounds": args.rounds,
            "tokens": lmtool_tokens,
            "lmtool_tokens_per_s": round(manifest["tokens_per_second"]),
            "lmtool_engine": manifest["tokenize_engine"],
            "lmtool_timings_s": manifest["timings"],
            "naive_tokens_per_s": round(naive_tps),
            "lmtool_tokens_per_s_each_round": [round(m["tokens_per_second"]) for m in manifests],
            "naive_tokens_per_s_each_round": [round(t) for t, _ in naive],
            "naive_tokens": naive_tokens,
            "ratio": round(manifest["tokens_per_second"] / naive_tps, 2),
            "streaming_peak_rss_mb": {
                f"{small_mb}MB": round(peaks["small"] / (1 << 20)),
                f"{large_mb}MB": round(peaks["large"] / (1 << 20)),
            },
            "rss_ratio": round(peaks["large"] / peaks["small"], 3),
            "goals": {"ratio": ">= 5", "rss_ratio": "<= 1.3"},
        }
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
