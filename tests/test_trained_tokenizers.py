"""Every tokenizer type trains for every objective, with the special tokens that objective needs."""

from __future__ import annotations

import datasets
import pytest
from transformers import AutoTokenizer

from lmtool.data.preprocess import run_preprocess
from tests.test_preprocess import EXPECTED, make_config, write_txt_paragraph


@pytest.mark.parametrize(("kind", "objective"), [("bpe", "mlm"), ("wordpiece", "clm")])
def test_uncommon_type_and_objective_pairs_preprocess(tmp_path, kind, objective):
    config = make_config(tmp_path, [write_txt_paragraph(tmp_path)], objective=objective)
    config.tokenizer.train.type = kind
    out = run_preprocess(config)
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    blocks = datasets.load_from_disk(str(out / "train"))["input_ids"]
    if objective == "mlm":
        assert None not in (tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id)
        assert all(b[0] == tok.cls_token_id and tok.sep_token_id in b for b in blocks)
        encoded = tok("a b")["input_ids"]
        assert (encoded[0], encoded[-1]) == (tok.cls_token_id, tok.sep_token_id)
    else:
        assert tok.eos_token_id is not None and tok.mask_token is None
        ids = [i for b in blocks for i in b]
        assert ids.count(tok.eos_token_id) == len(EXPECTED)
        first = tok.decode(ids[: ids.index(tok.eos_token_id)])
        assert first == EXPECTED[0]
