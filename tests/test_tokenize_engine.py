"""The tiktoken engine of `lmtool preprocess` gives exactly the ids of the `tokenizers` backend, or it
is not used: a tokenizer it cannot express, one whose merges it would not follow, or one it disagrees
with on the corpus, stays on `tokenizers`. Both encode a special token's text in a document as text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lmtool.config import TokenizerTrainConfig
from lmtool.data.encode import choose_encoder, ordinary_backend
from lmtool.data.fast_bpe import encode_ordinary, tiktoken_encoding
from lmtool.data.preprocess import run_preprocess
from lmtool.data.tokenizer import train_tokenizer
from tests.test_preprocess import EOT, make_config

TRICKY = [
    f"two documents{EOT}in one string, and a trailing one{EOT}",
    "It's   spaced\t\tout \n\n\n and \u00a0odd\u2028 whitespace  ",
    "Ünïcödé, 東京, Привет, مرحبا, 🦊🚀, x²+y³, 1234567890 and 3.14159",
    "don't you'll we've they're I'm he'd she's 'quoted'",
]


def plays(shared_data: Path, n: int = 4) -> list[Path]:
    return sorted((shared_data / "corpus" / "shakespeare").glob("*.txt"))[:n]


def byte_level_bpe(merges: list[tuple[str, str]], merged_ids: list[int]) -> Tokenizer:
    """A byte-level BPE tokenizer with the 256 byte symbols (ids 0-255), the given merges whose
    results get `merged_ids`, and <|endoftext|> as an added special token."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab.update({left + right: i for (left, right), i in zip(merges, merged_ids, strict=True)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return tok


# The split regex of GPT-4's cl100k_base, which Llama 3 also uses.
CL100K_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_style_bpe(texts: list[str]) -> Tokenizer:
    """Byte-level BPE whose pre-tokenizer is a Split on cl100k's regex, then ByteLevel without its own."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CL100K_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def test_gpt2_and_trained_bpes_give_the_same_ids_through_tiktoken(shared_data):
    texts = [p.read_text(encoding="utf-8") for p in plays(shared_data)] + TRICKY
    trained = train_tokenizer(
        TokenizerTrainConfig(vocab_size=2000),
        "clm",
        iter(texts[:2]),
        length=2,
        model_max_length=128,
    )
    gpt2 = AutoTokenizer.from_pretrained(shared_data / "gpt2-tokenizer")
    llama3 = PreTrainedTokenizerFast(tokenizer_object=llama3_style_bpe(texts[:2]), eos_token=EOT)
    for tokenizer in (gpt2, trained, llama3):
        started = time.perf_counter()
        encoding = tiktoken_encoding(tokenizer.backend_tokenizer)
        assert encoding is not None
        assert time.perf_counter() - started < 10  # GPT-2: ~0.5 s, ~0.15 s of it checking the 50k merges
        backend = ordinary_backend(tokenizer)  # special tokens' text (in TRICKY) encoded as text
        for text in texts:
            expected = backend.encode(text, add_special_tokens=False).ids
            assert encode_ordinary(encoding, text).tolist() == expected


def test_preprocess_writes_the_same_blocks_with_either_engine(tmp_path, shared_data):
    (tmp_path / "in").mkdir()
    for play in plays(shared_data):
        (tmp_path / "in" / play.name).write_bytes(play.read_bytes())
    (tmp_path / "in" / "tricky.txt").write_text("\n\n".join(TRICKY))
    outs = {}
    for engine in ("auto", "tokenizers"):
        config = make_config(
            tmp_path,
            [{"path": str(tmp_path / "in")}],
            validation_fraction=0.1,
            block_size=64,
            processed_dir=str(tmp_path / engine),
        )
        config.tokenizer.train, config.tokenizer.path = None, str(shared_data / "gpt2-tokenizer")
        config.tokenizer.engine = engine
        outs[engine] = run_preprocess(config)
    manifests = {e: json.loads((d / "manifest.json").read_text()) for e, d in outs.items()}
    assert manifests["auto"]["tokenize_engine"] == "tiktoken"
    assert manifests["tokenizers"]["tokenize_engine"] == "tokenizers"
    assert manifests["auto"]["splits"] == manifests["tokenizers"]["splits"]
    for split in ("train", "validation"):
        a, b = (datasets.load_from_disk(str(outs[e] / split))["input_ids"] for e in outs)
        assert a == b and len(a) > 10


def test_tokenizers_tiktoken_cannot_express_are_not_converted():
    wordpiece = train_tokenizer(
        TokenizerTrainConfig(vocab_size=200),
        "mlm",
        iter(["some text to learn from"] * 10),
        length=10,
        model_max_length=64,
    )
    assert tiktoken_encoding(wordpiece.backend_tokenizer) is None
    prefixed = byte_level_bpe([("a", "b")], [256])
    assert tiktoken_encoding(prefixed) is not None
    # tokenizers matches a non-special added token inside ordinary text; tiktoken has no such thing.
    with_added = byte_level_bpe([("a", "b")], [256])
    with_added.add_tokens(["<word>"])
    assert tiktoken_encoding(with_added) is None
    prefixed.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert tiktoken_encoding(prefixed) is None
    # With ignore_merges, `tokenizers` emits a whole-piece token that no merge makes; tiktoken cannot.
    for extra, convertible in (({}, True), ({"xyz": 257}, False)):
        vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())} | {"ab": 256, **extra}
        loose = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], ignore_merges=True))
        loose.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        assert (tiktoken_encoding(loose) is not None) == convertible
    # tiktoken merges by the id of the result, so ids out of merge order would change the merges.
    assert tiktoken_encoding(byte_level_bpe([("a", "b"), ("b", "c")], [257, 256])) is None


def test_merges_tiktoken_would_not_follow_are_refused_whatever_the_sample(shared_data, capsys):
    # A trained BPE plus three merges: "QXZ" exists as QX+Z, but in the word "QXZ" X+Z merges first and
    # Q+XZ is no merge, so `tokenizers` stops at [Q, XZ]; tiktoken, which merges any pair whose result
    # is a token, goes on to [QXZ]. A sample without the word agrees; the merges themselves do not.
    trained = train_tokenizer(
        TokenizerTrainConfig(vocab_size=300, min_frequency=1),
        "clm",
        iter([plays(shared_data, 1)[0].read_text(encoding="utf-8")]),
        length=1,
        model_max_length=64,
    )
    spec = json.loads(trained.backend_tokenizer.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    assert not {"XZ", "QX", "QXZ"} & set(vocab)
    for left, right in (("X", "Z"), ("Q", "X"), ("QX", "Z")):
        vocab[left + right] = len(vocab)
        merges.append([left, right])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOT)
    eos = tokenizer.eos_token_id
    late = "A word first seen late: (QXZ)."

    encoder = choose_encoder(tokenizer, eos, ["The first batch of text, without that word."] * 100, "auto")
    assert encoder.name == "tokenizers"
    assert "QXZ" in capsys.readouterr().err
    expected = tokenizer.backend_tokenizer.encode(late, add_special_tokens=False).ids
    assert vocab["QXZ"] not in expected
    assert encoder([late]).tolist() == [*expected, eos]
    # The same kind of edit on bare bytes: b+c, a+b, ab+c.
    assert tiktoken_encoding(byte_level_bpe([("b", "c"), ("a", "b"), ("ab", "c")], [256, 257, 258])) is None


def test_a_disagreement_on_the_corpus_falls_back_to_tokenizers(tmp_path, capsys):
    # A split regex with a POSIX class: Unicode letters for `tokenizers` (Oniguruma), ASCII ones for
    # tiktoken (Rust regex), so "Café" is one piece for one and two for the other. The merges are
    # sound; only the check on the corpus sees the difference.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[[:alpha:]]+|[^[:alpha:]\s]+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    docs = [f"Café crème brûlée, document {i}" for i in range(20)]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    assert tiktoken_encoding(tok) is not None
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT).save_pretrained(str(tmp_path / "tok"))
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    config = make_config(tmp_path, [{"path": str(tmp_path / "c.txt")}], block_size=16)
    config.tokenizer.train, config.tokenizer.path = None, str(tmp_path / "tok")
    out = run_preprocess(config)
    assert json.loads((out / "manifest.json").read_text())["tokenize_engine"] == "tokenizers"
    assert "disagree" in capsys.readouterr().err
    ids = [i for row in datasets.load_from_disk(str(out / "train"))["input_ids"] for i in row]
    expected = tok.encode(docs[0], add_special_tokens=False).ids
    assert ids[: len(expected)] == expected


def test_literal_special_tokens_in_documents_are_text_with_either_engine(tmp_path, shared_data):
    docs = [
        f"Document {i} quotes {EOT} in its text" if i % 3 else f"Plain document {i} without it"
        for i in range(60)
    ] + [f"{EOT}{EOT} starts and ends with it {EOT}", "ends with a broken one <|endoftext|"]
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    gpt2 = AutoTokenizer.from_pretrained(shared_data / "gpt2-tokenizer")
    eos = gpt2.eos_token_id
    streams = {}
    for engine in ("auto", "tokenizers"):
        config = make_config(
            tmp_path, [{"path": str(tmp_path / "c.txt")}], block_size=16, processed_dir=str(tmp_path / engine)
        )
        config.tokenizer.train, config.tokenizer.path = None, str(shared_data / "gpt2-tokenizer")
        config.tokenizer.engine = engine
        out = run_preprocess(config)
        assert json.loads((out / "manifest.json").read_text())["tokenize_engine"] == engine.replace(
            "auto", "tiktoken"
        )
        streams[engine] = [i for row in datasets.load_from_disk(str(out / "train"))["input_ids"] for i in row]
    assert streams["auto"] == streams["tokenizers"]
    ids = streams["auto"]
    ends = [n for n, i in enumerate(ids) if i == eos]
    assert len(ends) == len(docs) and ends[-1] == len(ids) - 1  # one EOS per document, at its end
    starts = [0] + [n + 1 for n in ends[:-1]]
    assert [gpt2.decode(ids[a:b]) for a, b in zip(starts, ends, strict=True)] == docs


def test_a_separator_that_overlaps_itself_never_joins_documents():
    # Joined by "##", "ends with #" and "next" would read "ends with ###next##": the first "##" found
    # would take the document's own "#", so such a separator is never used to join a batch.
    tok = byte_level_bpe([("a", "b")], [256])
    tok.add_special_tokens(["##"])
    separator = tok.token_to_id("##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="##")
    encoder = choose_encoder(tokenizer, separator, ["some sample text"], "auto")
    assert encoder.name == "tiktoken"
    backend = ordinary_backend(tokenizer)
    for docs in (["ends with #", "next"], ["## in it ##", "#"]):
        expected = [
            i for doc in docs for i in [*backend.encode(doc, add_special_tokens=False).ids, separator]
        ]
        assert encoder(docs).tolist() == expected
