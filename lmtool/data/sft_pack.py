"""Packing SFT examples into rows of at most max_length tokens (best-fit decreasing, deterministic).

A packed row keeps each example's own positions (`position_ids` restart at 0 per example), which is
also how the task rebuilds the per-example block-diagonal causal mask: no token attends across an
example boundary, so a packed batch gives the same loss as the examples one per row.
"""

from __future__ import annotations

import bisect


def pack_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Example indices per row: longest first, each into the fullest row it still fits (a new row
    otherwise); rows list their examples in data order. The same lengths always give the same rows."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row), sorted
    for index in order:
        size = lengths[index]
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            space, row = free.pop(at)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        bisect.insort(free, (space - size, row))
    return [sorted(row) for row in rows]


def pack_dataset(dataset, capacity: int):
    """A dataset of packed rows: input_ids, labels, position_ids and length (tokens in the row)."""
    import datasets

    ids, labels = dataset["input_ids"], dataset["labels"]
    columns: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "length": []}
    for row in pack_bins(list(dataset["length"]), capacity):
        columns["input_ids"].append([t for i in row for t in ids[i]])
        columns["labels"].append([t for i in row for t in labels[i]])
        columns["position_ids"].append([p for i in row for p in range(len(ids[i]))])
        columns["length"].append(sum(len(ids[i]) for i in row))
    return datasets.Dataset.from_dict(columns)
