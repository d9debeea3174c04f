"""Entity spans from word tags by the chunk rules of CoNLL-2000's conlleval.pl.

Works for IOB1, IOB2 and BIOES (and BILOU's L-/U- read as E-/S-): a B- or S- always starts an entity,
an I- or E- starts one after O, after the end of another entity or when the type changes; a tag
without a prefix is an I- of that type.
"""

from __future__ import annotations

_ENDS_BEFORE = {"B": "BOS", "I": "BOS", "E": "BEIOS", "S": "BEIOS"}  # prefix -> next prefixes that end it
_ALIASES = {"L": "E", "U": "S"}


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type): `B-PER` -> (B, PER), `O` -> (O, ""), `PER` -> (I, PER)."""
    if tag in ("O", ""):
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix.upper() in "BIESLU" and len(prefix) == 1:
        return _ALIASES.get(prefix.upper(), prefix.upper()), kind
    return "I", tag


def chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) for each entity, `first` and `last` inclusive word indices."""
    spans: list[tuple[str, int, int]] = []
    start: int | None = None
    prev_prefix, prev_kind = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = split_tag(tag)
        ends = prev_prefix != "O" and (prefix in _ENDS_BEFORE[prev_prefix] or kind != prev_kind)
        if start is not None and ends:
            spans.append((prev_kind, start, i - 1))
            start = None
        starts = prefix in "BS" or (prefix in "IE" and (prev_prefix in "OES" or kind != prev_kind))
        if prefix != "O" and starts:
            start = i
        prev_prefix, prev_kind = prefix, kind
    return spans
