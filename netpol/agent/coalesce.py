"""When to sync: bursts of changes coalesced into one transaction, and backoff after a failure.

A pending change is synced once no other change came for `min_interval` (a relist or a rollout
becomes one transaction, not hundreds), but never later than `max_interval` after the first
pending change (a steady trickle cannot postpone enforcement for ever), and never before the
retry time a failed apply set (`retry_initial` doubling up to `retry_cap`: a refused ruleset
is not hammered into the kernel). The clock is passed in: tests and the loop share the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netpol.sources.backoff import Backoff

IDLE_WAIT = 0.5  # how long the loop waits for events when nothing is pending (s)


@dataclass(frozen=True)
class SyncTiming:
    """Coalescing: a sync waits until no event came for `min_interval`, but never delays a
    pending change more than `max_interval`; after a failed apply the next try waits for the
    backoff (`retry_initial` doubling up to `retry_cap`)."""

    min_interval: float = 0.02  # long enough for a burst's events to arrive together (agent_latency)
    max_interval: float = 0.5  # enforcement within half a second even under a constant trickle
    retry_initial: float = 0.2  # a refused ruleset is retried soon, as a full table
    retry_cap: float = 10.0  # … and at least every 10 s while the kernel keeps refusing it


class Coalescer:
    """The pending change (since when, whether its structure changed) and when to sync it."""

    def __init__(self, timing: SyncTiming, clock: Callable[[], float]) -> None:
        self.timing, self.clock = timing, clock
        self.pending_since: float | None = None
        self.structural = True  # the first sync replaces the whole table
        self._last_change = 0.0
        self._retry_at = 0.0
        self._backoff = Backoff(initial=timing.retry_initial, cap=timing.retry_cap)

    @property
    def pending(self) -> bool:
        return self.pending_since is not None

    def note(self, structural: bool) -> None:
        """A change of this node's program: of its structure (chains) or of set elements only."""
        now = self.clock()
        if self.pending_since is None:
            self.pending_since = now
        self._last_change = now
        self.structural = self.structural or structural

    def due_at(self) -> float | None:
        """When the pending change should be synced (None: nothing pending)."""
        if self.pending_since is None:
            return None
        due = min(self._last_change + self.timing.min_interval, self.pending_since + self.timing.max_interval)
        return max(due, self._retry_at)

    def due(self) -> bool:
        due = self.due_at()
        return due is not None and self.clock() >= due

    def wait(self) -> float:
        """How long the loop may wait for events before the next sync is due."""
        due = self.due_at()
        return IDLE_WAIT if due is None else max(0.0, due - self.clock())

    def synced(self) -> None:
        """The kernel holds the current program: nothing pending, no retry."""
        self.pending_since = None
        self.structural = False
        self._retry_at = 0.0
        self._backoff.reset()

    def failed(self) -> float:
        """An apply failed: the change stays pending; returns the delay before the retry."""
        delay = self._backoff.next_delay()
        self._retry_at = self.clock() + delay
        return delay
