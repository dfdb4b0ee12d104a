"""Inclusive integer intervals (port ranges, address ranges) and merging them."""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]  # first and last, inclusive


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, with overlapping and adjacent intervals joined."""
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
