"""The renderers' cache: by identity, and only as long as the objects live (a long-running
agent must not keep every version of its sets)."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from netpol.compile.identity_cache import weak_identity_cache


@dataclass(frozen=True)
class Box:
    items: tuple[int, ...]

    def __hash__(self) -> int:  # like the IR's sets: hashed by a name, equal by content
        return 1


def test_hits_by_identity_and_forgets_what_is_gone():
    calls = []

    @weak_identity_cache(weak_args=2)
    def pair(a: Box, b: Box, tag: str) -> tuple[int, ...]:
        calls.append(tag)
        return a.items + b.items

    first, second = Box((1,)), Box((2,))
    assert pair(first, second, "x") == (1, 2) and pair(first, second, "x") == (1, 2)
    assert calls == ["x"]  # the second call was a hit
    twin = Box((1,))  # equal to `first`, but another object: computed afresh
    assert pair(twin, second, "x") == (1, 2) and calls == ["x", "x"]
    pair(first, second, "y")
    assert calls == ["x", "x", "y"] and pair.cache_len() == 3
    del first, twin
    gc.collect()
    assert pair.cache_len() == 0  # every entry named a Box that is gone
    assert pair(Box((5,)), second, "x") == (5, 2)  # a new object at a reused address is not a hit
