"""Memoizing on the identity of IR objects, for as long as they live.

The renderers cache per set object: one cluster's nodes print the same sets again and again.
`functools.lru_cache` keys a set by its hash and equality — its name, then a comparison of up to
100,000 addresses with every other version of that set in the cache — and keeps every version
alive: in a long-running agent, each event's new version of a big set stayed in memory until
thousands of others pushed it out. Here the key is the objects themselves, by identity, held
weakly: an entry goes when one of its objects goes.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")


def weak_identity_cache(weak_args: int = 1) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Cache a function on the identity of its first `weak_args` positional arguments (held by
    weak reference) and the value of the others (hashable)."""

    def decorate(function: Callable[..., Result]) -> Callable[..., Result]:
        entries: dict[tuple[Any, ...], tuple[tuple[weakref.ref[Any], ...], Result]] = {}

        @functools.wraps(function)
        def cached(*args: Any) -> Result:
            if weak_args == 1 and len(args) == 1:  # the common case, kept short: it is hot
                key: tuple[Any, ...] = (id(args[0]),)
                hit = entries.get(key)
                if hit is not None and hit[0][0]() is args[0]:
                    return hit[1]
            else:
                key = (*map(id, args[:weak_args]), *args[weak_args:])
                hit = entries.get(key)
                if hit is not None and all(ref() is obj for ref, obj in zip(hit[0], args, strict=False)):
                    return hit[1]
            objects = args[:weak_args]
            value = function(*args)

            def forget(_: weakref.ref[Any]) -> None:
                entry = entries.get(key)
                if entry is not None and entry[0] is refs:  # not a newer entry under a reused id
                    del entries[key]

            refs = tuple(weakref.ref(obj, forget) for obj in objects)
            entries[key] = (refs, value)
            return value

        cached.cache_len = entries.__len__  # type: ignore[attr-defined]
        return cached

    return decorate
