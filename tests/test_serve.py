"""`lmtool serve`: the real server on a free port, spoken to with the official `openai` client and plain HTTP.

One server (tiny GPT-2, an API key, small limits) serves the module; the last test stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT, assert_usage_error, free_port
from tests.eval_fixtures import run_inproc, save_causal_model

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

KEY = "test-key"
MAX_BODY = 4096
PROMPTS = ["The king and", "A dog sleeps near the river in the", "Every bird", "Queen", "The hills of spring"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_causal_model(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """A running `lmtool serve`: (base URL, the process, its stderr file)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "LMTOOL_API_KEY": KEY}  # fmt: skip
    args = ["--model", str(model_dir), "--port", str(port), "--device", "cpu", "--max-tokens", "32",
            "--max-n", "4", "--max-body-bytes", str(MAX_BODY)]  # fmt: skip
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lmtool", "serve", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {log.read_text()}")
    yield url, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=30)


def greedy(model_dir, n: int, *prompts: str) -> list[str]:
    """What `lmtool generate --greedy -n N` writes for these prompts."""
    result = run_inproc(
        "generate", "--model", str(model_dir), "--format", "jsonl", "--greedy", "-n", str(n), *prompts
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["text"] for line in result.stdout.splitlines()]


def test_models_and_health(server, client, model_dir):
    assert [m.id for m in client.models.list().data] == [str(model_dir)]
    assert httpx.get(f"{server[0]}/health").json()["status"] == "ok"  # no key needed for health checks


def test_concurrent_greedy_completions_equal_generate(client, model_dir):
    """Five concurrent requests are batched together (left padding) and still equal `generate --greedy`."""
    expected = greedy(model_dir, 12, *PROMPTS)

    def complete(prompt: str):
        return client.completions.create(model=str(model_dir), prompt=prompt, max_tokens=12, temperature=0)

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        responses = list(pool.map(complete, PROMPTS))
    assert [r.choices[0].text for r in responses] == expected
    assert responses[0].usage.completion_tokens == 12 and responses[0].choices[0].finish_reason == "length"


def test_streaming_completion_and_n(client, model_dir):
    stream = client.completions.create(model=str(model_dir), prompt=PROMPTS[1], max_tokens=10, temperature=0,
                                       stream=True)  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == greedy(model_dir, 10, PROMPTS[1])[0]
    assert chunks[-1].choices[0].finish_reason == "length" and len(chunks) > 2
    many = client.completions.create(model=str(model_dir), prompt=[PROMPTS[0], PROMPTS[2]], max_tokens=6,
                                     temperature=1.0, n=3, seed=5)  # fmt: skip
    assert [c.index for c in many.choices] == list(range(6))
    again = client.completions.create(model=str(model_dir), prompt=[PROMPTS[0], PROMPTS[2]], max_tokens=6,
                                      temperature=1.0, n=3, seed=5)  # fmt: skip
    assert [c.text for c in many.choices] == [c.text for c in again.choices]  # a seed reproduces


def test_chat_plain_join_and_stop(client, model_dir):
    """No chat template: "role: content" lines then "assistant:"; the reply equals generate on that text."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The king"}]
    reply = client.chat.completions.create(
        model=str(model_dir), messages=messages, max_tokens=8, temperature=0
    )
    expected = greedy(model_dir, 8, "system: Be brief.\nuser: The king\nassistant:")[0]
    assert reply.choices[0].message.content == expected and reply.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=str(model_dir), messages=messages, max_tokens=8, temperature=0,
                                            stream=True)  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected
    word = expected.split()[1] if len(expected.split()) > 1 else expected.strip()
    cut = client.chat.completions.create(model=str(model_dir), messages=messages, max_tokens=8, temperature=0,
                                         stop=[word])  # fmt: skip
    assert cut.choices[0].message.content == expected[: expected.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def _post(url: str, body, key: str | None = KEY, path: str = "/v1/completions") -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=30)


OK = {"model": "MODEL", "prompt": "The king", "max_tokens": 4, "temperature": 0}
CHAT = {"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# (name, body, key, path, status, error code, param)
BAD = [
    ("bad JSON", b'{"model": "MODEL", "prompt": ', KEY, "/v1/completions", 400, "invalid_json", None),
    ("not an object", b"[1, 2]", KEY, "/v1/completions", 400, "invalid_json", None),
    ("invalid UTF-8", b'{"model": "MODEL", "prompt": "\xff\xfe"}', KEY, "/v1/completions", 400, "invalid_encoding", None),
    ("missing prompt", {"model": "MODEL"}, KEY, "/v1/completions", 400, "invalid_value", "prompt"),
    ("missing model", {"prompt": "x"}, KEY, "/v1/completions", 400, "invalid_value", "model"),
    ("prompt wrong type", {**OK, "prompt": 5}, KEY, "/v1/completions", 400, "invalid_value", "prompt"),
    ("empty prompt list", {**OK, "prompt": []}, KEY, "/v1/completions", 400, "invalid_value", "prompt"),
    ("max_tokens a string", {**OK, "max_tokens": "4"}, KEY, "/v1/completions", 400, "invalid_value", "max_tokens"),
    ("negative max_tokens", {**OK, "max_tokens": -1}, KEY, "/v1/completions", 400, "invalid_value", "max_tokens"),
    ("huge max_tokens", {**OK, "max_tokens": 10**9}, KEY, "/v1/completions", 400, "invalid_value", "max_tokens"),
    ("temperature out of range", {**OK, "temperature": 7}, KEY, "/v1/completions", 400, "invalid_value", "temperature"),
    ("n too large", {**OK, "n": 50}, KEY, "/v1/completions", 400, "invalid_value", "n"),
    ("unknown field", {**OK, "logprobs": 3}, KEY, "/v1/completions", 400, "invalid_value", "logprobs"),
    ("stop wrong type", {**OK, "stop": 3}, KEY, "/v1/completions", 400, "invalid_value", "stop"),
    ("over-long prompt", {**OK, "prompt": "the king " * 100}, KEY, "/v1/completions", 400, "context_length_exceeded", "prompt"),
    ("oversized body", {**OK, "prompt": "x" * MAX_BODY}, KEY, "/v1/completions", 413, "body_too_large", None),
    ("unknown model", {**OK, "model": "gpt-4"}, KEY, "/v1/completions", 404, "model_not_found", "model"),
    ("missing API key", OK, None, "/v1/completions", 401, "invalid_api_key", None),
    ("wrong API key", OK, "nope", "/v1/completions", 401, "invalid_api_key", None),
    ("chat bad role", {**CHAT, "messages": [{"role": "robot", "content": "hi"}]}, KEY, "/v1/chat/completions", 400, "invalid_value", "messages.0.role"),
    ("chat no messages", {**CHAT, "messages": []}, KEY, "/v1/chat/completions", 400, "invalid_value", "messages"),
    ("chat over-long", {**CHAT, "messages": [{"role": "user", "content": "the " * 100}]}, KEY, "/v1/chat/completions", 400, "context_length_exceeded", "messages"),
    ("unknown route", OK, KEY, "/v1/embeddings", 404, "not_found", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "key", "path", "status", "code", "param"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_request_gets_4xx_and_server_keeps_serving(
    server, model_dir, name, body, key, path, status, code, param
):
    url = server[0]
    if isinstance(body, bytes):
        body = body.replace(b"MODEL", str(model_dir).encode())
    else:
        body = {k: str(model_dir) if v == "MODEL" else v for k, v in body.items()}
    response = _post(url, body, key, path)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["code"], error["param"]) == (code, param), error
    ok = _post(url, {**OK, "model": str(model_dir)})
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length"


def test_refuses_public_bind_without_key(model_dir, monkeypatch):
    monkeypatch.delenv("LMTOOL_API_KEY", raising=False)
    result = run_inproc("serve", "--model", str(model_dir), "--host", "0.0.0.0")
    assert_usage_error(result, "--host 0.0.0.0", "--api-key")


def test_port_in_use_exit_2(model_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_inproc("serve", "--model", str(model_dir), "--port", str(port))
    assert_usage_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_without_the_extra_exit_2(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if `pip install lmtool[serve]` was never run
    result = run_inproc("serve", "--model", str(model_dir))
    assert_usage_error(result, "pip install lmtool[serve]")


def test_queue_full_is_429(model_dir):
    """With --max-queue 1, a request arriving while one is still generating gets 429; then it is served."""
    import asyncio

    from lmtool.serve import Limits, load_server
    from lmtool.serve.app import build_app

    server = load_server(str(model_dir), Limits(max_queue=1), None, "cpu", "fp32", 16, 5.0)
    held = []
    submit, server.batcher.submit = server.batcher.submit, held.append  # the first job waits here
    body = {**OK, "model": str(model_dir)}

    async def scenario() -> tuple[int, dict, int]:
        transport = httpx.ASGITransport(app=build_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            first = asyncio.create_task(http.post("/v1/completions", json=body))
            while not held:
                await asyncio.sleep(0.01)
            busy = await http.post("/v1/completions", json=body)
            submit(held[0])
            return busy.status_code, busy.json()["error"], (await first).status_code

    try:
        status, error, first = asyncio.run(scenario())
    finally:
        server.batcher.stop()
    assert (status, error["code"], error["type"], first) == (429, "queue_full", "rate_limit_error", 200)


def test_sigterm_drains_in_flight_then_exits_0(server, model_dir):
    """Runs last: a streamed request in flight when SIGTERM arrives still completes; then exit 0."""
    url, proc, log = server
    body = {"model": str(model_dir), "prompt": "The king", "max_tokens": 32, "temperature": 0, "stream": True}
    lines: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=30) as response:  # fmt: skip
            for line in filter(None, response.iter_lines()):
                lines.append(line)
                if len(lines) == 1:
                    proc.send_signal(signal.SIGTERM)

    reader = threading.Thread(target=stream)
    reader.start()
    reader.join(30)
    assert proc.wait(30) == 0, log.read_text()
    assert lines[-1] == "data: [DONE]" and '"finish_reason": "length"' in lines[-2]
    assert "Traceback" not in log.read_text()


def _in_process(model_dir):
    """The app without a socket (starlette's TestClient): enough for the task endpoints' records."""
    from starlette.testclient import TestClient

    from lmtool.serve import Limits, load_server
    from lmtool.serve.app import build_app

    return TestClient(build_app(load_server(str(model_dir), Limits(), None, "cpu", "fp32", 16, 5.0)))


def test_classify_equals_predict(tmp_path):
    from tests.finetune_fixtures import save_classifier
    from tests.test_predict import TEXTS

    model_dir = save_classifier(tmp_path / "cls", ["neg", "pos"])
    expected = [
        json.loads(line)
        for line in run_inproc("predict", "--model", str(model_dir), *TEXTS[:3]).stdout.splitlines()
    ]
    http = _in_process(model_dir)
    got = http.post("/v1/classify", json={"input": TEXTS[:3]})
    assert got.status_code == 200 and got.json()["data"] == expected
    pair = http.post("/v1/classify", json={"input": {"text": TEXTS[0], "text_pair": TEXTS[1]}}).json()["data"]
    assert pair[0]["text_pair"] == TEXTS[1]
    assert http.post("/v1/classify", json={"input": [{"txt": "x"}]}).status_code == 400
    assert http.post("/v1/completions", json=OK).status_code == 404  # not a causal LM


def test_fill_mask_equals_generate(tmp_path):
    from tests.eval_fixtures import save_masked_model

    model_dir = save_masked_model(tmp_path / "bert")
    prompt = "the king and the [MASK] walk"
    result = run_inproc("generate", "--model", str(model_dir), "--format", "jsonl", prompt)
    http = _in_process(model_dir)
    got = http.post("/v1/fill-mask", json={"input": prompt, "top_k": 5})
    assert got.status_code == 200 and got.json()["data"] == [json.loads(result.stdout)]
    no_mask = http.post("/v1/fill-mask", json={"input": "no mask here"})
    assert no_mask.status_code == 400 and no_mask.json()["error"]["param"] == "input"


def test_chat_template_without_a_doubled_bos():
    """A template that writes BOS itself, with a tokenizer that adds one: the prompt keeps one BOS."""
    from tokenizers import processors

    from lmtool.serve.completions import chat_prompt
    from lmtool.serve.schemas import ChatRequest
    from tests.eval_fixtures import _bpe_tokenizer

    tokenizer = _bpe_tokenizer()
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    assert chat_prompt(tokenizer, req) == "<|endoftext|><user>hi<assistant>"  # GPT-2 style: adds no BOS
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tokenizer.bos_token_id)]
    )
    assert chat_prompt(tokenizer, req) == "<user>hi<assistant>"


@pytest.mark.parametrize("kind", ["entities", "answer"])
def test_tagger_and_qa_equal_predict(tmp_path, kind):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification

    from tests.eval_fixtures import _wordpiece_tokenizer
    from tests.finetune_fixtures import TINY_BERT

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    labels = ["O", "B-PER", "I-PER"] if kind == "entities" else ["start", "end"]
    config = BertConfig(**TINY_BERT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    model = (BertForTokenClassification if kind == "entities" else BertForQuestionAnswering)(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if kind == "entities":
        inputs = ["the king and the queen walk", "every bird sings"]
    else:
        inputs = [{"question": "who walks?", "context": "the king and the queen walk to the castle"}]
    args = [json.dumps(i) if isinstance(i, dict) else i for i in inputs]
    result = run_inproc("predict", "--model", str(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    got = _in_process(tmp_path).post(f"/v1/{kind}", json={"input": inputs})
    assert got.status_code == 200 and got.json()["data"] == [
        json.loads(line) for line in result.stdout.splitlines()
    ]


def test_concurrent_task_requests_share_one_forward(tmp_path):
    """Requests waiting together are decoded in one forward; each gets its own records, as if alone."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from lmtool.prediction.model import load_predictor
    from lmtool.serve.tasks import TaskBatcher, TextsRequest
    from tests.finetune_fixtures import save_classifier
    from tests.test_predict import TEXTS

    pred = load_predictor(str(save_classifier(tmp_path / "cls", ["neg", "pos"])), "cpu")
    forward, calls = pred.model.forward, []
    pred.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    requests = [TextsRequest(input=TEXTS[i : i + 1 + i % 2]) for i in range(6)]

    async def send(batcher: TaskBatcher, reqs: list[TextsRequest]) -> list[list[dict]]:
        return await asyncio.gather(*(batcher.predict(req) for req in reqs))

    with ThreadPoolExecutor(max_workers=1) as pool:
        together = asyncio.run(send(TaskBatcher(pred, pool), requests))
        assert len(calls) == 1
        alone = [asyncio.run(send(TaskBatcher(pred, pool), [req]))[0] for req in requests]
    assert len(calls) == 1 + len(requests)
    for got, expected, req in zip(together, alone, requests, strict=True):
        assert [r["text"] for r in got] == req.input == [r["text"] for r in expected]
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        for a, b in zip(got, expected, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_a_bad_task_request_fails_alone_in_its_batch(tmp_path):
    """A batch the tagger refuses (one request has a text_pair) is redone request by request."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from transformers import BertForTokenClassification

    from lmtool.prediction.model import load_predictor
    from lmtool.serve.http import ApiError
    from lmtool.serve.tasks import TaskBatcher, TextsRequest
    from tests.finetune_fixtures import save_classifier

    model_dir = save_classifier(tmp_path / "tagger", ["O", "B-PER"], auto=BertForTokenClassification)
    pred = load_predictor(str(model_dir), "cpu")
    good = TextsRequest(input="the king walks")
    bad = TextsRequest(input={"text": "the king", "text_pair": "walks"})

    async def send(batcher: TaskBatcher) -> list:
        return await asyncio.gather(*(batcher.predict(r) for r in (good, bad, good)), return_exceptions=True)

    with ThreadPoolExecutor(max_workers=1) as pool:
        first, refused, last = asyncio.run(send(TaskBatcher(pred, pool)))
    assert isinstance(refused, ApiError) and refused.status == 400 and "text_pair" in refused.message
    assert first == last and first[0]["text"] == "the king walks"
