"""Batch runs without the cyclic garbage collector.

Loading and compiling a cluster builds millions of small objects that form no reference cycles
(frozen dataclasses, tuples, strings). CPython's cyclic collector still walks them again and
again as they pile up: at 10k pods / 10k policies it is half of a full compile (7.0 s → 3.7 s
without it, same peak memory). Short-lived commands run without it; reference counting still
frees everything that is not in a cycle. A long-lived process (the agent) instead moves what it
built out of the collector's sight with `gc.freeze()` and collects the rest on its own schedule
(`PacedCollector`), off the path from an event to its ruleset.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Run the block with the cyclic collector off; restore its previous state afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settle_long_lived() -> None:
    """After building a long-lived state: collect once, then freeze everything that exists, so
    later collections only look at objects created afterwards."""
    gc.collect()
    gc.freeze()


@dataclass
class PacedCollector:
    """The cyclic collector on a long-lived process's own schedule.

    CPython collects the youngest generation every 700 net allocations, wherever the program
    happens to be. In the agent, the young objects after an event include the new tuples of
    the sets it changed — 100,000 addresses each at 100k pods — and walking them made single
    collections take 100–500 ms in the middle of an event's compile
    (`compile_scale.py --targets`, one agent at 100k pods: p99 353 ms with CPython's schedule).
    `start()` collects, freezes what exists and turns automatic collection off;
    `collect_if_due()` is called by the sync loop when nothing waits to be synced: the young
    generations every `young_every` s (or at once when `young_limit` net allocations piled
    up, however busy it is), everything unfrozen every `full_every` s, whose survivors are then
    frozen too. `stop()` gives the process back CPython's schedule."""

    young_every: float = 1.0
    full_every: float = 300.0
    young_limit: int = 1_000_000
    clock: Callable[[], float] = time.monotonic
    started: bool = False
    _young_at: float = 0.0
    _full_at: float = 0.0

    def start(self) -> None:
        settle_long_lived()
        gc.disable()
        self.started = True
        self._young_at = self._full_at = self.clock()

    def collect_if_due(self, idle: bool = True) -> None:
        if not self.started:
            return
        now = self.clock()
        if idle and now - self._full_at >= self.full_every:
            settle_long_lived()
            self._full_at = self._young_at = now
        elif (idle and now - self._young_at >= self.young_every) or gc.get_count()[0] > self.young_limit:
            gc.collect(1)
            self._young_at = now

    def stop(self) -> None:
        if self.started:
            gc.unfreeze()
            gc.enable()
            self.started = False
