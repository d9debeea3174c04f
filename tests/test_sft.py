"""finetune.task: sft: response-only loss, packing that leaks nothing, learning a templated task, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmtool.config import FinetuneConfig
from lmtool.data.sft_data import IGNORE, SftExample, chat_segments, encode_sft
from lmtool.data.sft_pack import pack_bins, pack_dataset
from lmtool.errors import LmtoolError
from lmtool.tasks.sft import SftTask
from tests.conftest import assert_usage_error
from tests.eval_fixtures import run_inproc
from tests.sft_fixtures import reversal_rows, tiny_gpt2, word_tokenizer, write_jsonl

TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
CHAT = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "{{ m['role'] }} {{ m['content'] }}{% if m['role'] == 'assistant' %} <eos>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**sft) -> FinetuneConfig:
    return FinetuneConfig(task="sft", max_length=64, sft=sft)


def _pair(prompt: str, response: str) -> SftExample:
    return SftExample("test", [(TEMPLATE.replace("{prompt}", prompt), False), (response, True)])


def test_loss_is_the_mean_over_response_tokens_and_counts_only_them():
    tokenizer = word_tokenizer()
    examples = [_pair("reverse: a b c", "c b a"), _pair("reverse: d e", "e d")]
    columns, counts = encode_sft(tokenizer, examples, _cfg())
    # prompt tokens: ### Instruction: reverse: a b c ### Response: (8) / 7; response + <eos>: 4 / 3
    assert [sum(label != IGNORE for label in row) for row in columns["labels"]] == [4, 3]
    assert counts["target_tokens"] == 7
    assert columns["labels"][0][-4:] == tokenizer("c b a <eos>")["input_ids"]
    torch.manual_seed(0)
    logits = torch.randn(2, 12, len(tokenizer))
    model = lambda **kwargs: type("Out", (), {"logits": logits[:, : kwargs["input_ids"].size(1)]})  # noqa: E731
    task = SftTask(tokenizer)
    batch = task.collate(
        [
            {"input_ids": i, "labels": la}
            for i, la in zip(columns["input_ids"], columns["labels"], strict=True)
        ]
    )
    loss, count = task.loss(model, batch)
    assert int(count) == 7
    by_hand = []
    for row, ids in enumerate(columns["input_ids"]):
        start = len(ids) - (4 if row == 0 else 3)  # the response's first token is predicted at start - 1
        for t in range(start, len(ids)):
            by_hand.append(F.cross_entropy(logits[row, t - 1], torch.tensor(ids[t])))
    assert torch.allclose(loss, torch.stack(by_hand).mean(), atol=1e-6)
    on_prompt, _ = encode_sft(tokenizer, examples, _cfg(train_on_prompt=True))
    assert [sum(label != IGNORE for label in row) for row in on_prompt["labels"]] == [11, 9]
    short, counts = encode_sft(tokenizer, examples, FinetuneConfig(task="sft", max_length=10))
    assert counts["truncated"] == 1 and short["length"] == [10, 10]
    assert counts["target_tokens"] == 2 + 3  # "c b" of the cut response, all of the other


def test_chat_trains_only_assistant_turns_and_an_unrendered_role_is_named():
    tokenizer = word_tokenizer()
    tokenizer.chat_template = CHAT
    messages = [
        {"role": "system", "content": "hello"},
        {"role": "user", "content": "reverse: a b"},
        {"role": "assistant", "content": "b a"},
        {"role": "user", "content": "reverse: c d"},
        {"role": "assistant", "content": "d c"},
    ]
    segments = chat_segments(tokenizer, messages, "x.jsonl line 3")
    assert [text for text, trained in segments if trained] == ["b a <eos>", "d c <eos>"]
    columns, _ = encode_sft(tokenizer, [SftExample("x", segments)], _cfg(format="messages"))
    trained = [
        t for t, label in zip(columns["input_ids"][0], columns["labels"][0], strict=True) if label != IGNORE
    ]
    assert tokenizer.decode(trained) == "b a <eos> d c <eos>"
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'tool' %}{{ m['content'] }} {% endif %}{% endfor %}"
    )
    with pytest.raises(LmtoolError, match=r"x.jsonl line 3: the chat template does not render role 'tool'"):
        chat_segments(tokenizer, [*messages, {"role": "tool", "content": "world"}], "x.jsonl line 3")


def test_packing_is_deterministic_fills_rows_and_keeps_every_example_once():
    lengths = [5, 30, 12, 7, 33, 2, 20, 9, 14, 1]
    rows = pack_bins(lengths, 40)
    assert rows == pack_bins(lengths, 40)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 40 for row in rows)
    assert len(rows) == -(-sum(lengths) // 40)  # as few rows as the tokens need, here


def _examples(tokenizer) -> list[dict]:
    rows, _ = reversal_rows()
    examples = [_pair(r["prompt"], r["response"]) for r in rows[:6]]
    examples += [SftExample("t", [("hello world a b c d e f g h", True)]), _pair("reverse: a", "a")]
    columns, _ = encode_sft(tokenizer, examples, _cfg())
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_unpacked_training_give_the_same_loss_and_gradients(tmp_path, attn):
    import datasets
    from transformers import AutoModelForCausalLM

    tokenizer = word_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2(tmp_path / "m", attn=attn))
    model.eval()  # no dropout: the two forwards must see the same network
    rows = _examples(tokenizer)
    packed = pack_dataset(datasets.Dataset.from_list(rows), 64)
    assert len(packed) < len(rows)
    task = SftTask(tokenizer)

    def loss_and_grads(batch_rows):
        model.zero_grad()
        loss, count = task.loss(model, task.collate(batch_rows))
        (loss * count).backward()
        return loss.item(), int(count), [p.grad.clone() for p in model.parameters()]

    plain = loss_and_grads(rows)
    together = loss_and_grads(list(packed))
    assert plain[1] == together[1]
    assert abs(plain[0] - together[0]) < 1e-5
    for a, b in zip(plain[2], together[2], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    leaky = dict(task.collate(list(packed)))  # positions restart, but no per-example mask: it leaks
    logits = model(
        input_ids=leaky["input_ids"],
        attention_mask=leaky["attention_mask"],
        position_ids=leaky["position_ids"],
    ).logits
    from lmtool.tasks.clm import token_nll

    nll, count = token_nll(logits, leaky["labels"])
    assert abs((nll / count).item() - together[0]) > 1e-4


def _generate(model: Path, prompts: Path) -> list[str]:
    result = run_inproc(
        "generate", "-m", str(model), "-f", str(prompts), "--greedy", "-n", "6", "--format", "jsonl"
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["text"].strip() for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_sft_teaches_a_tiny_gpt2_to_answer_held_out_prompts(tmp_path):
    model = tiny_gpt2(tmp_path / "model")
    train, held = reversal_rows()
    write_jsonl(tmp_path / "train.jsonl", train)
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": TEMPLATE.replace("{prompt}", r["prompt"])} for r in held]
    )
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"run: {{name: sft, seed: 1, output_dir: {tmp_path / 'out'}}}\n"
        f"data: {{sources: [{{path: {tmp_path / 'train.jsonl'}}}], validation_fraction: 0.1, "
        f"processed_dir: {tmp_path / 'processed'}}}\n"
        f"model: {{init_from: {model}}}\n"
        "finetune: {task: sft, max_length: 64}\n"
        "train: {lr: 3.0e-3, batch_size: 8, epochs: 10, precision: fp32}\n"
    )
    for command in ("preprocess", "finetune"):  # in-process: the CLI's own behaviour is tested elsewhere
        result = run_inproc(command, str(config))
        assert result.returncode == 0, result.stderr
    assert "packing:" in result.stderr
    gold = [r["response"] for r in held]
    before = sum(a == b for a, b in zip(_generate(model, prompts), gold, strict=True))
    after = sum(a == b for a, b in zip(_generate(tmp_path / "out" / "final", prompts), gold, strict=True))
    assert before <= 2 and after >= 0.8 * len(held), (before, after)


def _chat_config(tmp_path: Path, rows: list[dict], chat_template: str | None) -> Path:
    model = tiny_gpt2(tmp_path / "model")
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    config = tmp_path / "chat.yaml"
    line = f", chat_template: {json.dumps(chat_template)}" if chat_template else ""
    config.write_text(
        f"run: {{output_dir: {tmp_path / 'out'}}}\n"
        f"data: {{sources: [{{path: {data}}}], processed_dir: {tmp_path / 'processed'}}}\n"
        f"model: {{init_from: {model}}}\n"
        f"finetune: {{task: sft, max_length: 64, sft: {{format: messages{line}}}}}\n"
    )
    return config


def test_messages_without_any_chat_template_exit_2(tmp_path):
    config = _chat_config(tmp_path, [{"messages": [{"role": "user", "content": "a"}]}], None)
    assert_usage_error(
        run_inproc("preprocess", str(config)), "finetune.sft.chat_template", "no chat template"
    )


def test_a_role_the_chat_template_does_not_know_exits_2_naming_it_and_the_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}
    config = _chat_config(tmp_path, [good, good, bad], CHAT)
    assert_usage_error(run_inproc("preprocess", str(config)), "chat.jsonl line 3", "role 'robot'")


def _read(tmp_path: Path, rows: list[dict], tokenizer=None, **sft) -> list[SftExample]:
    from lmtool.config.data import SourceConfig
    from lmtool.data.sft_data import read_sft_examples
    from lmtool.data.sources import Source

    path = write_jsonl(tmp_path / "d.jsonl", rows)
    source = Source("data.sources.0", SourceConfig(path=str(path)), [path], "json")
    return list(read_sft_examples(source, _cfg(**sft), tokenizer, "strict", tmp_path / "cache"))


def test_a_row_without_its_response_names_the_file_line_and_field(tmp_path):
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "c"}]
    with pytest.raises(LmtoolError, match=r"finetune.sft.response_field: .*d.jsonl line 2 has no field "
                       r"'response' \(its fields: prompt\)"):  # fmt: skip
        _read(tmp_path, rows, template=TEMPLATE)


def test_a_role_outside_system_user_assistant_is_warned_about_once(tmp_path, capsys):
    tokenizer = word_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}"
    )
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
    assert len(_read(tmp_path, [chat, chat], tokenizer, format="messages")) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "role 'bot'" in line]
    assert len(warnings) == 1 and "d.jsonl line 1" in warnings[0] and "not trained" in warnings[0]


def test_a_model_that_cannot_isolate_packed_examples_is_trained_unpacked_and_says_so(tmp_path, capsys):
    import datasets
    from transformers import AutoModelForCausalLM

    from lmtool.finetune.causal import sft_rows
    from lmtool.lstm import LstmConfig, LstmForCausalLM

    rows = datasets.Dataset.from_list(_examples(word_tokenizer()))
    lstm = LstmForCausalLM(LstmConfig(vocab_size=20, hidden_size=16, num_layers=1))
    assert sft_rows(lstm, True, 64, rows, None) == (rows, None)
    assert "padding each example instead" in capsys.readouterr().err
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2(tmp_path / "m"))
    packed, _ = sft_rows(gpt2, True, 64, rows, None)
    assert "position_ids" in packed.column_names and len(packed) < len(rows)


def test_switching_packing_needs_no_new_preprocessing_but_masking_does(tmp_path):
    from lmtool.config import load_config
    from lmtool.data.preprocess import content_key

    model = tiny_gpt2(tmp_path / "model")
    data = write_jsonl(tmp_path / "d.jsonl", reversal_rows()[0][:5])
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{sources: [{{path: {data}}}]}}\nmodel: {{init_from: {model}}}\n"
        "finetune: {task: sft, max_length: 64}\n"
    )
    key = content_key(load_config(config), [])
    assert key == content_key(load_config(config, ["finetune.sft.packing=false"]), [])
    assert key != content_key(load_config(config, ["finetune.sft.train_on_prompt=true"]), [])
