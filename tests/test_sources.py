"""Reading local sources: encodings and byte-order marks, bad rows named by their 1-based line,
empty and unreadable files, and globs over symlink loops."""

from __future__ import annotations

import builtins
import codecs
import io
import json
import os
from glob import glob
from pathlib import Path

import pytest

from lmtool.config import SourceConfig
from lmtool.data import sources as src
from lmtool.data.preprocess import content_key, run_preprocess
from lmtool.errors import LmtoolError
from tests.conftest import assert_usage_error, run_cli
from tests.eval_fixtures import run_inproc
from tests.test_preprocess import decoded_docs, make_config

PARAGRAPHS = [f"Paragraph {i}: café, naïve, Übermaß and ☃ number {i}." for i in range(300)]


def read(tmp_path: Path, **source) -> list:
    """Every document text of one source as preprocess reads it (ends stripped, as cleaning does)."""
    resolved = src.resolve(SourceConfig(**source), "data.sources.0")
    batches = src.iter_texts(resolved, streaming=False, encoding_errors="replace", cache_dir=tmp_path / "c")
    return [text.strip() for batch in batches for text in batch]


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("b.txt", "Hello\n\nWorld\n"),
        ("b.jsonl", '{"text": "Hello"}\n{"text": "World"}\n'),
        ("b.csv", "text,n\nHello,1\nWorld,2\n"),
    ],
)
def test_utf8_bom_is_stripped_in_every_text_format(tmp_path, name, body):
    (tmp_path / name).write_bytes(codecs.BOM_UTF8 + body.encode())
    assert read(tmp_path, path=str(tmp_path / name)) == ["Hello", "World"]


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),  # BOM + native order, as Windows tools write it
        lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        lambda text: text.encode("utf-32"),
    ],
    ids=["utf-16", "utf-16-be", "utf-32"],
)
def test_utf16_and_utf32_files_with_a_bom_are_decoded(tmp_path, encode):
    (tmp_path / "w.txt").write_bytes(encode("\r\n\r\n".join(PARAGRAPHS) + "\r\n"))
    assert read(tmp_path, path=str(tmp_path / "w.txt")) == PARAGRAPHS
    rows = "".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in PARAGRAPHS[:20])
    (tmp_path / "w.jsonl").write_bytes(encode(rows))
    assert read(tmp_path, path=str(tmp_path / "w.jsonl")) == PARAGRAPHS[:20]


def test_encoding_option_decodes_latin1_and_is_part_of_the_cache_key(tmp_path):
    latin = [p.replace(" and ☃", "") for p in PARAGRAPHS[:5]]
    (tmp_path / "l.txt").write_bytes("\n\n".join(latin).encode("latin-1"))
    assert read(tmp_path, path=str(tmp_path / "l.txt"), encoding="latin-1") == latin
    source = {"path": str(tmp_path / "l.txt")}
    configs = [make_config(tmp_path, [{**source, "encoding": name}]) for name in ("latin-1", "cp1252")]
    keys = [content_key(c, [src.resolve(c.data.sources[0], "data.sources.0")]) for c in configs]
    assert keys[0] != keys[1]


def test_encoding_is_checked_to_be_a_text_codec(tmp_path):
    (tmp_path / "ok.txt").write_text("fine\n")
    config = tmp_path / "c.yaml"
    for name, ok in (("latin-1", True), ("klingon", False), ("base64", False)):
        config.write_text(f"data:\n  sources: [{{path: {tmp_path / 'ok.txt'}, encoding: {name}}}]\n")
        result = run_inproc("config", "validate", str(config))  # in-process: ~5 s of CPU less a call
        if ok:
            assert result.returncode == 0, result.stderr
        else:
            assert_usage_error(result, "data.sources.0.encoding", "unknown text encoding", name)
    config.write_text("data:\n  sources: [{hf: wikitext, encoding: latin-1}]\n")
    assert_usage_error(
        run_inproc("config", "validate", str(config)), "data.sources.0", "local files (path) only"
    )


def test_replaced_bytes_are_reported_and_a_mostly_undecodable_file_is_refused(tmp_path, capsys):
    (tmp_path / "l.txt").write_bytes("Café au lait\n\nplain text\n\nnaïve".encode("latin-1"))
    out = run_preprocess(make_config(tmp_path, [{"path": str(tmp_path / "l.txt")}]))
    err = capsys.readouterr().err
    assert "l.txt: 2 bytes are not valid UTF-8; 2 document(s)" in err
    assert "data.sources.0.encoding" in err
    assert decoded_docs(out) == ["Caf\ufffd au lait", "plain text", "na\ufffdve"]

    russian = "Привет, мир! Это текст в кодировке Windows-1251.\n\n" * 20
    (tmp_path / "ru.txt").write_bytes(russian.encode("cp1251"))
    with pytest.raises(
        LmtoolError, match=r"ru.txt: \d+% of its bytes are not valid UTF-8.*data.sources.0.encoding"
    ):
        read(tmp_path, path=str(tmp_path / "ru.txt"))
    assert read(tmp_path, path=str(tmp_path / "ru.txt"), encoding="cp1251")[0] == russian.split("\n\n")[0]


# --------------------------------------------------------------------------- bad rows, empty files


def test_jsonl_row_without_the_text_field_is_counted_missing_and_named(tmp_path, capsys):
    rows = [{"text": "first document"}, {"body": "no text here"}, {"text": "second one"}, {"text": None}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_preprocess(make_config(tmp_path, [{"path": str(tmp_path / "m.jsonl")}]))
    cleaning = json.loads((out / "manifest.json").read_text())["cleaning"]
    assert cleaning["dropped"] == {"empty": 1, "missing": 1}
    assert (
        "m.jsonl: 1 row(s) without the text field 'text' counted as missing (line 2)"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        (
            "bad.jsonl",
            '{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n',
            "bad.jsonl line 4 is not valid JSON",
        ),
        ("array.jsonl", '[1, 2, 3]\n{"text": "b"}\n', "array.jsonl line 1 is a JSON list, not an object"),
        ("bad.csv", 'label,text\n1,hello\n2,"two\nlines"\n3,world,extra\n', "bad.csv line 5 has 3 fields"),
        ("bad.tsv", "text\tn\nhello\t1\nworld\n", "bad.tsv line 3 has 1 fields"),
    ],
)
def test_a_bad_row_is_named_by_its_1_based_line(tmp_path, name, body, fragment):
    (tmp_path / name).write_text(body)
    with pytest.raises(LmtoolError, match=f"data.sources.0: .*{fragment}"):
        run_preprocess(make_config(tmp_path, [{"path": str(tmp_path / name)}]))


def test_cli_reports_a_bad_row_in_one_line_without_library_logs(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": oops}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  sources: [{{path: {tmp_path / 'bad.jsonl'}}}]\n  processed_dir: {tmp_path / 'p'}\n"
    )
    result = run_cli("preprocess", str(config))
    assert_usage_error(result, "data.sources.0", "bad.jsonl line 2 is not valid JSON")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("name", ["e.txt", "e.jsonl", "e.csv", "e.txt.gz", "e.parquet"])
def test_an_empty_file_is_refused_by_name(tmp_path, name):
    if name.endswith(".gz"):
        import gzip

        with gzip.open(tmp_path / name, "wb"):
            pass
    else:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(LmtoolError, match=f"data.sources.0: .*{name} is empty"):
        run_preprocess(make_config(tmp_path, [{"path": str(tmp_path / name)}]))


# --------------------------------------------------------------------------- files: unreadable, globs


def deny(monkeypatch, denied: Path) -> None:
    """Make opening `denied` fail as it does for a user without read permission (tests run as root)."""
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def test_an_unreadable_file_or_directory_is_named(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("some text\n")
    deny(monkeypatch, tmp_path / "d" / "a.txt")
    for path in (tmp_path / "d" / "a.txt", tmp_path / "d"):
        with pytest.raises(
            LmtoolError,
            match=f"data.sources.0.path: {path / 'a.txt' if path.is_dir() else path} is not readable",
        ):
            run_preprocess(make_config(tmp_path, [{"path": str(path)}]))

    real_scandir = os.scandir

    def fake_scandir(path="."):
        if Path(path) == tmp_path / "d":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    with pytest.raises(LmtoolError, match=f"data.sources.0.path: directory {tmp_path / 'd'} is not readable"):
        run_preprocess(make_config(tmp_path, [{"path": str(tmp_path / "d")}]))
    assert not (tmp_path / "processed").exists()


def test_globs_and_directories_read_each_real_file_once_despite_symlink_loops(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha document\n")
    (d / "sub" / "b.txt").write_text("beta document\n")
    (d / "sub" / "loop").symlink_to(d)
    want = [d / "a.txt", d / "sub" / "b.txt"]
    assert src.resolve(SourceConfig(path=str(d / "**" / "*.txt")), "k").files == want
    out = run_preprocess(make_config(tmp_path, [{"path": str(d / "**" / "*.txt")}], clean={"dedupe": False}))
    assert json.loads((out / "manifest.json").read_text())["cleaning"]["read"] == 2

    e = tmp_path / "e"
    (e / "real").mkdir(parents=True)
    (e / "real" / "c.txt").write_text("gamma document\n")
    (e / "link").symlink_to(e / "real")  # listed before real/, but the file is read once, as real/c.txt
    for path in (e, e / "**" / "*.txt"):
        assert src.resolve(SourceConfig(path=str(path)), "k").files == [e / "real" / "c.txt"]


def test_recursive_globs_match_what_the_standard_glob_matches_without_loops(tmp_path, monkeypatch):
    for name in ("a.txt", "x/b.txt", "x/y/c.txt", "x/y/d.md", ".hidden/e.txt", "x/.f.txt", "z.txt/g.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text\n")
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.txt", "**", "x/**/*.txt", "x/**/y/*", "*/**/c.txt", f"{tmp_path}/**/*.md"):
        expected = sorted(p for p in glob(pattern, recursive=True) if os.path.isfile(p))
        assert [str(p) for p in src.resolve(SourceConfig(path=pattern), "k").files] == expected, pattern
