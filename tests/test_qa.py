"""Extractive QA (`finetune.task: qa`): SQuAD data to windows with the right answer labels, bad input
(exit 2 naming the element), run_qa's post-processing, learning far above chance end to end, and
`lmtool predict` giving exact character offsets into the original context."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from lmtool.tasks.qa_postprocess import NO_OFFSET, Window, best_answer
from tests.conftest import ROOT, assert_usage_error
from tests.eval_fixtures import run_inproc

_spec = importlib.util.spec_from_file_location("make_tiny_squad", ROOT / "scripts" / "make_tiny_squad.py")
tiny_squad = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_squad)

MAX_LENGTH, STRIDE = 48, 16


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A random tiny BERT (2 x 64) with a word-level WordPiece vocabulary of the synthetic set."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(
        set(tiny_squad.FILLER + tiny_squad.CODES + ["the", "code", "is", "what", "which", "given", "name"])
    )
    vocab = {t: i for i, t in enumerate(specials + words + list(".?,"))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, pad_token_id=0)  # fmt: skip
    path = tmp_path_factory.mktemp("bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _squad(path: Path, questions: list[dict]) -> Path:
    path.write_text(json.dumps(tiny_squad.squad_file(questions, path.stem)))
    return path


def _config(tmp: Path, bert: Path, train: Path, validation: Path | None = None, **qa) -> Path:
    """A finetune config for the tiny BERT; `qa` keys go to finetune.qa."""
    data = {"sources": [{"path": str(train)}], "processed_dir": str(tmp / "processed")}
    if validation is not None:
        data["validation_sources"] = [{"path": str(validation)}]
    config = {
        "run": {"output_dir": str(tmp / "run"), "seed": 0},
        "model": {"init_from": str(bert)},
        "data": data,
        "finetune": {"task": "qa", "max_length": MAX_LENGTH, "qa": {"doc_stride": STRIDE, **qa}},
        "train": {"lr": 1e-3, "batch_size": 16, "epochs": 3, "device": "cpu", "warmup_ratio": 0.0,
                  "precision": "fp32"},
    }  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def _preprocess(config: Path):
    import datasets

    result = run_inproc("preprocess", str(config))
    assert result.returncode == 0, result.stderr
    processed = Path(json.loads(config.read_text())["data"]["processed_dir"])
    manifest = json.loads((processed / "manifest.json").read_text())
    return processed, manifest, datasets.load_from_disk(str(processed / "train"))


def test_windows_label_the_answer_where_the_window_holds_it_whole_and_cls_elsewhere(tmp_path, bert_dir):
    from transformers import AutoTokenizer

    rng = random.Random(1)
    questions = [tiny_squad.make_question(rng, i, words=(60, 90)) for i in range(40)]
    # An answer of three words placed to cross the first window's end: only the next window holds it.
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    question = "what is the code?"
    body = MAX_LENGTH - len(tokenizer(question)["input_ids"]) - 1  # context tokens of the first window
    filler = " ".join(["river"] * (body - 4))  # "the code is" + 1 answer word inside window 0
    context = f"{filler} the code is delta echo falcon . summer valley"
    start = context.index("delta")
    questions.append({"id": "cross", "question": question, "context": context,
                      "answers": [{"text": "delta echo falcon", "answer_start": start}]})  # fmt: skip
    path = _squad(tmp_path / "train.json", questions)
    processed, manifest, train = _preprocess(_config(tmp_path, bert_dir, path, validation=path))
    import datasets

    windows = datasets.load_from_disk(str(processed / "validation"))  # the same questions, with offsets
    assert windows["input_ids"] == train["input_ids"]
    assert manifest["counts"]["validation"]["examples"] == 41 and len(windows) > 41
    labeled_in: dict[int, list[int]] = {}
    for row in windows:
        start, end, offsets = row["start_positions"], row["end_positions"], row["offset_mapping"]
        gold = questions[row["example_id"]]["answers"][0]
        per_question = labeled_in.setdefault(row["example_id"], [])
        if start == end == 0:  # CLS: this window does not hold the whole answer
            inside = [o for o in offsets if o != NO_OFFSET]
            assert inside[0][0] > gold["answer_start"] or inside[-1][1] < gold["answer_start"] + len(
                gold["text"]
            )
            per_question.append(-1)
            continue
        context = questions[row["example_id"]]["context"]
        assert context[offsets[start][0] : offsets[end][1]] == gold["text"]
        per_question.append(row["window"])
    assert all(any(w >= 0 for w in ws) for ws in labeled_in.values())  # every answer is labeled somewhere
    later = [q for q, ws in labeled_in.items() if ws[0] == -1]  # not in the question's first window
    assert len(later) >= 10
    assert labeled_in[40][:2] == [-1, labeled_in[40][1]] and labeled_in[40][1] >= 0  # the crossing answer


def test_an_answer_crossing_a_window_boundary_is_found_through_the_other_window():
    """The gold "bb cc" crosses window 0's end: window 0 can only offer a cut span, window 1 holds it whole."""
    context = "aa bb cc dd"
    first = Window(  # context tokens aa bb; the model starts at bb but sees no good end
        torch.tensor([0.0, 0, 9, 0]), torch.tensor([0.0, -5, -5, 0]), [NO_OFFSET, [0, 2], [3, 5], NO_OFFSET]
    )
    second = Window(  # context tokens bb cc dd
        torch.tensor([0.0, 5, 0, 0]), torch.tensor([0.0, 0, 6, 0]), [NO_OFFSET, [3, 5], [6, 8], [9, 11]]
    )
    assert best_answer([first], context, n_best=5).text == "bb"  # the cut span, score 4
    answer = best_answer([first, second], context, n_best=5)
    assert (answer.text, answer.start, answer.end) == ("bb cc", 3, 8)  # 5 + 6 = 11 from window 1
    # spans longer than max_answer_length tokens are not candidates
    assert best_answer([first, second], context, n_best=5, max_answer_length=1).text == "cc"  # 0 + 6


def test_version_2_answers_nothing_when_the_null_score_beats_the_best_span_by_the_threshold():
    window = Window(torch.tensor([4.0, 3, 0]), torch.tensor([4.0, 0, 3]), [NO_OFFSET, [0, 3], [4, 7]])
    assert best_answer([window], "one two", version_2=True).text == ""  # null 8 > span 6
    assert best_answer([window], "one two", version_2=True, null_threshold=2.5).text == "one two"
    assert best_answer([window], "one two").text == "one two"  # v1.1 always answers


@pytest.mark.slow
def test_finetune_learns_far_above_chance_and_predict_gives_exact_character_offsets(tmp_path, bert_dir):
    rng = random.Random(0)
    train = _squad(tmp_path / "train.json", [tiny_squad.make_question(rng, i) for i in range(300)])
    validation = _squad(
        tmp_path / "validation.json", [tiny_squad.make_question(rng, 300 + i) for i in range(50)]
    )
    config = _config(tmp_path, bert_dir, train, validation)
    result = run_inproc("finetune", str(config))
    assert result.returncode == 0, result.stderr
    final = Path(result.stdout.strip())
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scores = [e for e in evals if "f1" in e]
    # chance: one of ~60 context words, EM ~2%
    assert scores[-1]["exact_match"] >= 70 and scores[-1]["f1"] >= 70, scores
    manifest = json.loads((tmp_path / "processed" / "manifest.json").read_text())
    assert manifest["counts"]["validation"]["windows"] > 50  # answers had to be found in later windows

    contexts = [
        "river  stone \t the code is  mango . café light",  # runs of whitespace, a tab, an accent
        "orchard ☃ valley 🙂 the code is zinc . river",  # a snowman and an emoji before the answer
        " ".join(["meadow"] * 70) + " the code is quartz . tower",  # beyond the first window
    ]
    lines = "\n".join(json.dumps({"question": "what is the code?", "context": c}) for c in contexts)
    result = run_inproc("predict", "--model", str(final), "--max-length", str(MAX_LENGTH), input=lines)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record, context, code in zip(records, contexts, ["mango", "zinc", "quartz"], strict=True):
        assert record["answer"] == code
        assert (record["start"], record["end"]) == (context.index(code), context.index(code) + len(code))
        assert context[record["start"] : record["end"]] == code and 0 < record["score"] <= 1


def _nested(tmp_path: Path, qas: list, context: str = "the code is apple") -> Path:
    path = tmp_path / "bad.json"
    ok = {
        "context": context,
        "qas": [{"id": "a", "question": "q?", "answers": [{"text": "apple", "answer_start": 12}]}],
    }
    path.write_text(json.dumps({"data": [{"paragraphs": [ok, {"context": context, "qas": qas}]}]}))
    return path


@pytest.mark.parametrize(
    ("qas", "message"),
    [
        ([{"id": "b", "question": "q?", "answers": [{"text": "apple"}]}],
         "data[0].paragraphs[1].qas[0].answers[0]: answer_start missing"),
        ({"id": "b"}, "data[0].paragraphs[1].qas: is a dict, not a list"),
        ([{"id": "b", "answers": []}], "data[0].paragraphs[1].qas[0]: question missing"),
        ([{"id": "b", "question": "q?", "answers": [{"text": "apple", "answer_start": "12"}]}],
         "data[0].paragraphs[1].qas[0].answers[0]: answer_start must be a character index"),
        ([{"id": "b", "question": "q?", "answers": []}], "set finetune.qa.version_2: true"),
        ([{"id": "b", "question": "  ", "answers": []}], "data[0].paragraphs[1].qas[0]: question is blank"),
    ],
)  # fmt: skip
def test_squad_json_of_the_wrong_shape_exits_2_naming_the_element(tmp_path, bert_dir, qas, message):
    result = run_inproc("preprocess", str(_config(tmp_path, bert_dir, _nested(tmp_path, qas))))
    assert_usage_error(result, "bad.json", message)


def test_a_squad_file_without_data_names_the_missing_top_level_key(tmp_path, bert_dir):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "articles": [{"paragraphs": []}]}))
    result = run_inproc("preprocess", str(_config(tmp_path, bert_dir, path)))
    assert_usage_error(
        result, "squad.json", "top-level 'data' key is missing", "keys here: version, articles"
    )


def test_rows_with_malformed_answers_exit_2_naming_the_line(tmp_path, bert_dir):
    path = tmp_path / "rows.jsonl"
    good = {
        "question": "q?",
        "context": "the code is apple",
        "answers": {"text": ["apple"], "answer_start": [12]},
    }
    bad = {"question": "q?", "context": "the code is apple", "answers": {"text": ["apple"]}}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = run_inproc("preprocess", str(_config(tmp_path, bert_dir, path)))
    assert_usage_error(result, "rows.jsonl line 2", "answers.answer_start missing")
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "context": " "}) + "\n")
    result = run_inproc("preprocess", str(_config(tmp_path, bert_dir, path)))
    assert_usage_error(result, "rows.jsonl line 2", "context is blank (finetune.qa.context_field)")


def test_an_answer_start_off_its_text_is_skipped_and_counted_or_fails_with_on_bad_answer_fail(
    tmp_path, bert_dir
):
    qas = [
        {"id": "off", "question": "q?", "answers": [{"text": "apple", "answer_start": 3}]},
        {"id": "half", "question": "q?", "answers": [{"text": "apple", "answer_start": 2}, {"text": "apple", "answer_start": 12}]},
    ]  # fmt: skip
    path = _nested(tmp_path, qas)
    _, manifest, train = _preprocess(_config(tmp_path, bert_dir, path))
    counts = manifest["counts"]["train"]
    assert (counts["bad_answers"], counts["dropped_questions"], counts["examples"]) == (2, 1, 2)
    assert len(train) == 2
    (tmp_path / "processed").rename(tmp_path / "old")
    result = run_inproc("preprocess", str(_config(tmp_path, bert_dir, path, on_bad_answer="fail")))
    assert_usage_error(
        result, "data[0].paragraphs[1].qas[0].answers[0]: answer_start 3 does not point at its text"
    )


def test_hub_style_rows_and_v2_unanswerable_questions_label_cls_in_every_window(tmp_path, bert_dir):
    path = tmp_path / "rows.jsonl"
    context = " ".join(["river"] * 60) + " the code is apple . tower"
    rows = [
        {"question": "what is the code?", "context": context,
         "answers": {"text": ["apple", "apple"], "answer_start": [context.index("apple")] * 2}},
        {"question": "what is the code?", "context": "river stone tower", "answers": {"text": [], "answer_start": []}},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert_usage_error(
        run_inproc("preprocess", str(_config(tmp_path, bert_dir, path))), "set finetune.qa.version_2"
    )
    _, manifest, train = _preprocess(_config(tmp_path, bert_dir, path, version_2=True))
    assert manifest["counts"]["train"]["unanswerable"] == 1 and manifest["qa"]["version_2"] is True
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    answered = [r for r in train if r["start_positions"] != 0]
    assert answered and all(
        tokenizer.decode(r["input_ids"][r["start_positions"] : r["end_positions"] + 1]) == "apple"
        for r in answered
    )
    short = [r for r in train if len(r["input_ids"]) < 20]  # the unanswerable question's one window
    assert len(short) == 1 and (short[0]["start_positions"], short[0]["end_positions"]) == (0, 0)


def test_a_question_that_leaves_no_room_beyond_doc_stride_exits_2_instead_of_a_tokenizer_panic(
    tmp_path, bert_dir
):
    path = _squad(tmp_path / "train.json", [tiny_squad.make_question(random.Random(2), 0)])
    config = json.loads(_config(tmp_path, bert_dir, path).read_text())
    config["finetune"]["max_length"] = 20  # [CLS] question [SEP] ... [SEP]: 11 context tokens <= stride 16
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    result = run_inproc("preprocess", str(tmp_path / "config.yaml"))
    assert_usage_error(result, "train.json: data[0].paragraphs[0].qas[0]", "finetune.qa.doc_stride (16)")


def test_evaluate_gives_exact_match_and_f1_as_predict_answers(tmp_path, bert_dir):
    """`lmtool evaluate` refused QA models: EM/F1 existed only in training logs."""
    from transformers import AutoConfig, AutoTokenizer, BertForQuestionAnswering

    from lmtool.tasks.metrics.squad import squad_v1

    config = AutoConfig.from_pretrained(bert_dir)
    config.lmtool_qa = {"doc_stride": STRIDE}  # as finetune saves it
    torch.manual_seed(1)
    model_dir = tmp_path / "qa-model"
    BertForQuestionAnswering(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(bert_dir).save_pretrained(model_dir)
    rng = random.Random(3)
    questions = [tiny_squad.make_question(rng, i) for i in range(12)]
    data = _squad(tmp_path / "dev.json", questions)
    result = run_inproc(
        "evaluate", "--model", str(model_dir), "--data", str(data), "--max-length", str(MAX_LENGTH)
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["task"] == "qa" and scores["data"] == str(data)

    pairs = [(q["question"], q["context"], [a["text"] for a in q["answers"]]) for q in questions]
    lines = "\n".join(json.dumps({"question": q, "context": c}) for q, c, _ in pairs)
    predicted = run_inproc("predict", "--model", str(model_dir), "--max-length", str(MAX_LENGTH), input=lines)
    answers = [json.loads(line)["answer"] for line in predicted.stdout.splitlines()]
    expected = squad_v1(answers, [golds for _, _, golds in pairs])
    assert (scores["exact_match"], scores["f1"]) == (expected["exact_match"], expected["f1"]), (
        scores,
        expected,
    )
