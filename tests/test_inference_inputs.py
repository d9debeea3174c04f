"""Bad input to `predict`, `generate` and `evaluate`, and their output streams (issue 21): exit 2 with one
line naming the input, never an internal error, never garbage; a closed stdout reader ends quietly.
The README's exit-code section lists these cases."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from lmtool.config import GenerateConfig
from lmtool.errors import LmtoolError
from lmtool.generation.prompts import read_prompts
from lmtool.prediction.inputs import read_inputs
from tests.conftest import ROOT, Result, assert_usage_error
from tests.eval_fixtures import run_inproc, save_causal_model
from tests.finetune_fixtures import save_classifier

SEPARATORS = "\x0c\x0b\x1c\x1d\x1e\x85\u2028\u2029"  # line boundaries to str.splitlines, not to a file


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("cls"), ["neg", "pos"])


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return save_causal_model(tmp_path_factory.mktemp("gpt"))


def _stdin(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


# --------------------------------------------------------------------------- input lines


def test_stdin_that_is_not_utf8_names_stdin_and_line():
    """Row 1: undecodable stdin was an internal error (a TypeError in the tokenizer, or UnicodeDecodeError)."""
    for read in (lambda s: read_inputs([], None, s), lambda s: read_prompts([], None, GenerateConfig(), s)):
        with pytest.raises(LmtoolError, match=r"stdin:2: not UTF-8 text \(byte 0xff\)"):
            read(_stdin(b"fine\na\xff\n"))
        # Python under a C locale decodes stdin with surrogate escapes: the same error
        with pytest.raises(LmtoolError, match=r"stdin:1: not UTF-8 text \(byte 0xff\)"):
            read(io.StringIO("a\udcff\n"))


def test_one_text_per_line_whatever_the_line_holds(tmp_path):
    """Row 6: form feed, \\v, \\x1c-\\x1e, \\x85, U+2028/9 inside a line do not split it (str.splitlines did)."""
    data = f"a{SEPARATORS}b\r\n\nc\n".encode()
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    for source in ({"file": str(path), "stdin": _stdin(b"")}, {"file": None, "stdin": _stdin(data)}):
        items = read_inputs([], source["file"], source["stdin"])
        assert [(i.text, i.origin.rsplit(":", 1)[1]) for i in items] == [(f"a{SEPARATORS}b", "1"), ("c", "3")]
        prompts = read_prompts([], source["file"], GenerateConfig(), _stdin(data))
        assert [p.text for p in prompts] == [f"a{SEPARATORS}b", "c"]


# --------------------------------------------------------------------------- stdout


class _FailingStdout(io.StringIO):
    """A stdout that takes `room` characters, then fails with `code` (a full disk, a closed pipe)."""

    def __init__(self, room: int, code: int):
        super().__init__()
        self.room, self.code = room, code

    def write(self, text: str) -> int:
        if self.tell() + len(text) > self.room:
            super().write(text[: max(self.room - self.tell(), 0)])
            raise OSError(
                self.code, "No space left on device" if self.code == errno.ENOSPC else "Broken pipe"
            )
        return super().write(text)


def _run_with_stdout(stream: io.StringIO, *args: str) -> Result:
    from lmtool import console
    from lmtool.cli import main

    err = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
    finally:
        console.configure()
    return Result(code, stream.getvalue(), err.getvalue())


def test_full_disk_on_stdout_names_stdout_and_never_exits_0(classifier_dir, causal_dir):
    """Row 7: a write to stdout failing part-way (here inside a long JSON line) is exit 2 naming stdout."""
    long_text = "the king " * 20_000  # one ~200 kB output line
    result = _run_with_stdout(
        _FailingStdout(1000, errno.ENOSPC), "predict", "--model", str(classifier_dir), long_text
    )
    assert_usage_error(result, "stdout", "No space left on device")
    result = _run_with_stdout(
        _FailingStdout(10, errno.ENOSPC), "generate", "--model", str(causal_dir), "-n", "3", "hello", "world"
    )
    assert_usage_error(result, "stdout", "No space left on device")


def test_dev_full_as_stdout_exits_2():
    """Row 7, as a user meets it: `lmtool ... > /dev/full` (the last flush, at exit, was unguarded)."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "lmtool", "config", "schema"], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
            text=True, timeout=120,
        )  # fmt: skip
    assert_usage_error(Result(proc.returncode, "", proc.stderr), "stdout", "No space left on device")


def test_closed_stdout_reader_ends_quietly(classifier_dir, tmp_path):
    """Row 8: `lmtool predict ... | head -1` exits 141 (as `yes | head -1` does), with nothing on stderr
    (it was exit 1 with no message). The 240 kB of results outgrow the pipe's buffer."""
    result = _run_with_stdout(
        _FailingStdout(50, errno.EPIPE), "predict", "--model", str(classifier_dir), "a", "b"
    )
    assert result.returncode == 141 and "error" not in result.stderr, result.stderr
    path = tmp_path / "many.txt"
    path.write_text("".join(f"the king {'sings ' * 1000}{i}\n" for i in range(40)), encoding="utf-8")
    proc = subprocess.run(
        f"{sys.executable} -m lmtool predict --model {classifier_dir} --file {path} | head -1; "
        'echo "${PIPESTATUS[0]}" >&2',
        shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.stdout.count("\n") == 1
    assert proc.stderr.splitlines()[-1] == "141", proc.stderr
    assert "Exception ignored" not in proc.stderr and "error" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- --max-length


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory, classifier_dir):
    """Untrained tiny BERT tagger and QA model (64 positions, like the classifier)."""
    from transformers import BertForQuestionAnswering, BertForTokenClassification

    ner = save_classifier(tmp_path_factory.mktemp("ner"), ["O", "B-PER"], auto=BertForTokenClassification)
    qa = save_classifier(tmp_path_factory.mktemp("qa"), ["start", "end"], auto=BertForQuestionAnswering)
    return {"classifier": classifier_dir, "ner": ner, "qa": qa}


@pytest.mark.parametrize("task", ["classifier", "ner", "qa"])
def test_max_length_past_the_model_positions(task_dirs, task):
    """Row 2: --max-length past the positions was exit 1 (a tensor size RuntimeError) on a long input."""
    text = "the king sings " * 40
    line = json.dumps({"question": "who sings", "context": text}) if task == "qa" else text
    result = run_inproc(
        "predict", "--model", str(task_dirs[task]), "--max-length", "100000", input=line + "\n"
    )
    assert_usage_error(result, "--max-length", "64 positions", "100000")


def test_evaluate_max_length_past_the_model_positions(classifier_dir, tmp_path):
    data = tmp_path / "val.csv"
    data.write_text(
        "label,text\n" + "".join(f"pos,{'the king sings ' * 40}\n" for _ in range(3)), encoding="utf-8"
    )
    result = run_inproc(
        "evaluate", "--model", str(classifier_dir), "--data", str(data), "--max-length", "100000"
    )
    assert_usage_error(result, "evaluate.max_length", "64 positions", "100000")


def test_qa_evaluate_max_length_past_the_model_positions(task_dirs, tmp_path):
    """QA models are evaluated on their own path (EM/F1): the same refusal (was exit 1 on a long window)."""
    context = "the king sings " * 40
    row = {
        "question": "who sings",
        "context": context,
        "answers": {"text": ["the king"], "answer_start": [0]},
    }
    data = tmp_path / "val.jsonl"
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    result = run_inproc(
        "evaluate", "--model", str(task_dirs["qa"]), "--data", str(data), "--max-length", "100000"
    )
    assert_usage_error(result, "evaluate.max_length", "64 positions", "100000")


def test_max_length_0_is_refused(classifier_dir):
    """Row 3: --max-length 0 silently meant the default."""
    result = run_inproc("predict", "--model", str(classifier_dir), "--max-length", "0", "the king")
    assert_usage_error(result, "--max-length", "at least 2", "got 0")


# --------------------------------------------------------------------------- model directories


def _broken_copies(model_dir, tmp_path) -> dict:
    """Copies of `model_dir`, each broken one way: (directory, what the error must say)."""
    from tests.eval_fixtures import _bpe_tokenizer

    cases = {}
    for name in ("no-tokenizer", "truncated", "no-weights", "bad-config", "other-tokenizer"):
        cases[name] = shutil.copytree(model_dir, tmp_path / name)
    for file in cases["no-tokenizer"].glob("tokenizer*"):
        file.unlink()
    os.truncate(cases["truncated"] / "model.safetensors", 5000)
    (cases["no-weights"] / "model.safetensors").unlink()
    (cases["bad-config"] / "config.json").write_text("{", encoding="utf-8")
    _bpe_tokenizer().save_pretrained(cases["other-tokenizer"])  # 365 tokens for 115 embedding rows
    return {
        "no-tokenizer": (cases["no-tokenizer"], "has no tokenizer"),
        "truncated": (cases["truncated"], "model.safetensors is truncated or corrupt"),
        "no-weights": (cases["no-weights"], "has no weights"),
        "bad-config": (cases["bad-config"], "config.json is not readable JSON"),
        "other-tokenizer": (cases["other-tokenizer"], "365 tokens but the model's embeddings 115 rows"),
    }


def test_model_directory_is_checked_whole(classifier_dir, causal_dir, tmp_path):
    """Rows 4 and 5: no tokenizer files was exit 0 with garbage (every word [UNK]) for predict and
    fine-tuned evaluate; a truncated model.safetensors exit 1 (SafetensorError)."""
    data = tmp_path / "val.csv"
    data.write_text("label,text\npos,the king sings\nneg,a dog sleeps\n", encoding="utf-8")
    for path, says in _broken_copies(classifier_dir, tmp_path / "cls").values():
        assert_usage_error(run_inproc("predict", "--model", str(path), "the king"), str(path.name), says)
        result = run_inproc("evaluate", "--model", str(path), "--data", str(data))
        assert_usage_error(result, str(path.name), says)
    for name, (path, says) in _broken_copies(causal_dir, tmp_path / "gpt").items():
        if name != "other-tokenizer":
            assert_usage_error(
                run_inproc("generate", "--model", str(path), "-n", "2", "hi"), str(path.name), says
            )


def test_adapter_or_sharded_checkpoint_says_what_it_is(classifier_dir, tmp_path):
    """A LoRA adapter or a sharded checkpoint gave transformers' 'Unrecognized model ... model_type'
    for predict, evaluate, generate, plan and model.init_from."""
    final = shutil.copytree(classifier_dir, tmp_path / "final")
    merged_adapter = final / "adapter"  # finetune.lora.merge true: the adapter next to the merged model
    merged_adapter.mkdir()
    (merged_adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    unmerged = tmp_path / "unmerged"  # merge false: the adapter, its tokenizer and LORA_ADAPTER.txt
    unmerged.mkdir()
    for name in ("adapter_config.json", "LORA_ADAPTER.txt", "tokenizer.json"):
        (unmerged / name).write_text("{}", encoding="utf-8")
    sharded = tmp_path / "step-10"
    (sharded / "sharded").mkdir(parents=True)
    cases = [
        (merged_adapter, ["LoRA adapter", f"use its merged parent {final}"]),
        (unmerged, ["LoRA adapter (LORA_ADAPTER.txt)", "finetune.lora.merge: true"]),
        (sharded, ["sharded", "final/"]),
    ]
    for path, says in cases:
        for args in (["predict", "--model", str(path), "x"], ["generate", "--model", str(path), "x"],
                     ["evaluate", "--model", str(path)]):  # fmt: skip
            assert_usage_error(run_inproc(*args), *says)
        for command in ("plan", "finetune"):
            config = tmp_path / f"{command}.yaml"
            section = "\nfinetune: {task: classification}" if command == "finetune" else ""
            config.write_text(f"model: {{init_from: {path}}}{section}\n", encoding="utf-8")
            assert_usage_error(run_inproc(command, str(config)), "model.init_from", *says)
