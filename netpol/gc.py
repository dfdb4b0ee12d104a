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
    collections take 100–500 ms in the middle of an event's compile. `start()` collects,
    freezes what exists and turns automatic collection off; `collect_if_due(idle)` is called by
    the sync loop, `idle` when nothing waits to be synced:

    - the young generations every `young_every` s when idle, and at once, idle or not, when
      `young_limit` net allocations piled up;
    - everything unfrozen every `full_every` s when idle (at the latest after 4 × that, idle or
      not), whose survivors are then frozen too;
    - every `thaw_every` s, the same after unfreezing everything: cycles that formed among
      frozen objects are not reclaimed otherwise (the only collection that walks the whole
      state: 0.3 s at 10k pods).

    `stop()` gives the process back CPython's schedule, for good."""

    young_every: float = 1.0
    full_every: float = 300.0
    thaw_every: float = 3600.0
    young_limit: int = 1_000_000
    clock: Callable[[], float] = time.monotonic
    started: bool = False
    stopped: bool = False
    _young_at: float = 0.0
    _full_at: float = 0.0
    _thaw_at: float = 0.0

    def start(self) -> None:
        if self.started or self.stopped:  # (a sync finishing during shutdown)
            return
        settle_long_lived()
        gc.disable()
        self.started = True
        self._young_at = self._full_at = self._thaw_at = self.clock()

    def collect_if_due(self, idle: bool = True) -> None:
        if not self.started:
            return
        now = self.clock()
        since_full = now - self._full_at
        if since_full >= self.full_every and (idle or since_full >= 4 * self.full_every):
            if now - self._thaw_at >= self.thaw_every:
                gc.unfreeze()
                self._thaw_at = now
            settle_long_lived()
            self._full_at = self._young_at = now
        elif (idle and now - self._young_at >= self.young_every) or gc.get_count()[0] > self.young_limit:
            gc.collect(1)
            self._young_at = now

    def stop(self) -> None:
        self.stopped = True
        if self.started:
            gc.unfreeze()
            gc.enable()
            self.started = False
