"""When the agent syncs (netpol.agent.coalesce), on a clock the test moves: a burst becomes one
sync once it is quiet for min_interval, a steady trickle is synced max_interval after its first
change, and after a failure nothing is tried before the backoff's delay."""

from __future__ import annotations

from netpol.agent.coalesce import IDLE_WAIT, Coalescer, SyncTiming

TIMING = SyncTiming(min_interval=0.02, max_interval=0.5, retry_initial=0.2, retry_cap=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_pending_waits_idle_and_is_never_due():
    coalescer = Coalescer(TIMING, Clock())
    assert not coalescer.pending and not coalescer.due() and coalescer.wait() == IDLE_WAIT


def test_a_burst_is_synced_once_quiet_for_min_interval():
    clock = Clock()
    coalescer = Coalescer(TIMING, clock)
    for _ in range(5):
        coalescer.note(structural=False)
        clock.now += 0.01  # closer together than min_interval
    assert not coalescer.due()
    clock.now += 0.011
    assert coalescer.due()


def test_a_steady_trickle_is_synced_max_interval_after_its_first_change():
    clock = Clock()
    coalescer = Coalescer(TIMING, clock)
    first = clock.now
    while clock.now - first < TIMING.max_interval - 0.01:
        coalescer.note(structural=False)
        clock.now += 0.015
        assert not coalescer.due() or clock.now - first >= TIMING.max_interval
    clock.now = first + TIMING.max_interval
    coalescer.note(structural=False)
    assert coalescer.due()


def test_structure_is_remembered_until_synced_and_the_first_sync_is_structural():
    coalescer = Coalescer(TIMING, Clock())
    assert coalescer.structural  # the first sync replaces the whole table
    coalescer.synced()
    coalescer.note(structural=False)
    assert not coalescer.structural
    coalescer.note(structural=True)
    coalescer.note(structural=False)
    assert coalescer.structural


def test_after_a_failure_the_retry_waits_for_the_backoff_and_a_success_resets_it():
    clock = Clock()
    coalescer = Coalescer(TIMING, clock)
    coalescer.note(structural=True)
    clock.now += TIMING.min_interval
    assert coalescer.due()
    delay = coalescer.failed()
    assert TIMING.retry_initial / 2 <= delay <= TIMING.retry_initial
    assert coalescer.pending and not coalescer.due()
    assert abs(coalescer.wait() - delay) < 1e-9
    clock.now += delay
    assert coalescer.due()
    assert coalescer.failed() > TIMING.retry_initial / 2 * 2 - 1e-9  # doubled: at least half of 0.4
    coalescer.synced()
    assert not coalescer.pending
    coalescer.note(structural=False)
    clock.now += TIMING.min_interval
    assert coalescer.due()  # no retry time left over
