"""`lmtool pretrain` never trains on processed data that no longer matches the config: a changed corpus or
tokenizer setting is refused with exit 2 (README: "data preprocessed with other settings")."""

from __future__ import annotations

import pytest

from tests.conftest import assert_usage_error
from tests.eval_fixtures import corpus

CONFIG = """\
run: {{name: stale, output_dir: {out}/run}}
data:
  sources: [{{path: {out}/corpus.txt, doc_split: line}}]
  processed_dir: {out}/processed
  validation_fraction: 0.2
  block_size: 16
tokenizer: {{train: {{type: bpe, vocab_size: 300}}}}
model: {{arch: gpt2, config: {{n_layer: 1, n_head: 2, n_embd: 32, n_positions: 16}}}}
train: {{batch_size: 4, max_steps: 2, warmup_steps: 1, eval_every: 0, save_every: 0, compile: false, precision: fp32}}
"""


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(capsys, *args: str) -> _Result:
    from lmtool.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return _Result(exit_info.value.code, captured.out, captured.err)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pretrain_refuses_processed_data_made_from_another_corpus_or_tokenizer(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(corpus(200)) + "\n", encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path), encoding="utf-8")
    first = _cli(capsys, "pretrain", str(cfg))  # preprocesses first, then trains
    assert first.returncode == 0, first.stderr

    again = _cli(capsys, "pretrain", str(cfg))  # same inputs: the data is current, the run resumes
    assert again.returncode == 0, again.stderr

    bigger_vocab = _cli(capsys, "pretrain", str(cfg), "--set", "tokenizer.train.vocab_size=320")
    assert_usage_error(bigger_vocab, "data.processed_dir", "lmtool preprocess --overwrite")

    text.write_text("\n".join(corpus(150)) + "\n", encoding="utf-8")
    new_corpus = _cli(capsys, "pretrain", str(cfg))
    assert_usage_error(new_corpus, "data.processed_dir", str(tmp_path / "processed"))

    text.unlink()  # the raw corpus is gone (a cluster that only has the processed copy): warn, train
    no_corpus = _cli(capsys, "pretrain", str(cfg))
    assert no_corpus.returncode == 0, no_corpus.stderr
    assert "cannot check that" in no_corpus.stderr
