"""The whole chain as a user runs it in a shell: preprocess && pretrain && evaluate, then generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.eval_fixtures import corpus

CONFIG = """\
run: {{name: chain, output_dir: {out}/run}}
data:
  sources: [{{path: {out}/corpus.txt, doc_split: line}}]
  processed_dir: {out}/processed
  validation_fraction: 0.2
  block_size: 32
  remainder: pad
tokenizer: {{train: {{type: bpe, vocab_size: 300}}}}
model: {{arch: gpt2, config: {{n_layer: 2, n_head: 2, n_embd: 64}}}}
train: {{batch_size: 8, max_steps: 4, warmup_steps: 1, eval_every: 0, save_every: 0, compile: false}}
"""


def _pretrain_registered() -> bool:
    from lmtool.cli import app

    return any(cmd.name == "pretrain" for cmd in app.registered_commands)


@pytest.mark.slow
@pytest.mark.skipif(not _pretrain_registered(), reason="`lmtool pretrain` is not registered yet")
def test_preprocess_pretrain_evaluate_generate_in_a_shell(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(corpus(400)) + "\n", encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path))
    lmtool = f"{sys.executable} -m lmtool"
    chain = (
        f"set -o pipefail; {lmtool} preprocess {cfg} && {lmtool} pretrain {cfg} "
        f"&& {lmtool} evaluate {cfg} | {sys.executable} -c 'import json,sys; print(json.load(sys.stdin)[\"perplexity\"])'"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        ["bash", "-c", chain], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # preprocess and pretrain print their output paths, evaluate its JSON
    assert len(lines) == 3 and lines[0] == str(tmp_path / "processed"), done.stdout
    assert Path(lines[1]).is_relative_to(tmp_path / "run") and Path(lines[1]).is_dir()
    assert float(lines[2]) > 1.0
    saved = json.loads((tmp_path / "run" / "final" / "eval.json").read_text())
    assert saved["perplexity"] == pytest.approx(float(lines[2]))

    generated = run_cli(
        "generate",
        "--model",
        str(tmp_path / "run" / "final"),
        "-n",
        "5",
        "--seed",
        "1",
        input="The king\nA dog\n",
    )
    assert generated.returncode == 0, generated.stderr
    assert [json.loads(line)["prompt"] for line in generated.stdout.splitlines()] == ["The king", "A dog"]
