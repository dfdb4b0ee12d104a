"""The cyclic collector's schedules: off for batch runs, paced for the agent."""

from __future__ import annotations

import gc
import weakref

from netpol.gc import PacedCollector, without_cyclic_gc


def test_without_cyclic_gc_restores_the_previous_state():
    assert gc.isenabled()
    with without_cyclic_gc():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_paced_collector_collects_when_idle_and_due_and_gives_the_schedule_back():
    now = [100.0]
    generations: list[int] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            generations.append(info["generation"])

    collector = PacedCollector(young_every=1.0, full_every=10.0, thaw_every=10**6, young_limit=10**9,
                               clock=lambda: now[0])
    gc.callbacks.append(record)
    try:
        collector.start()
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        generations.clear()
        collector.collect_if_due()  # nothing due yet
        now[0] += 2
        collector.collect_if_due(idle=False)  # due, but a sync is pending: later
        assert generations == []
        collector.collect_if_due()
        assert generations == [1]
        now[0] += 20
        collector.collect_if_due()  # the full collection, then everything is frozen again
        assert generations == [1, 2]
        collector.young_limit = 100
        garbage = [[i] for i in range(1000)]  # noqa: F841 - net allocations, however busy
        collector.collect_if_due(idle=False)
        assert generations == [1, 2, 1]
        collector.young_limit = 10**9
        now[0] += 30
        collector.collect_if_due(idle=False)  # a full collection waits for an idle moment …
        assert generations == [1, 2, 1]
        now[0] += 20
        collector.collect_if_due(idle=False)  # … but not for ever (4 × full_every)
        assert generations == [1, 2, 1, 2]
    finally:
        gc.callbacks.remove(record)
        collector.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    collector.start()  # a sync that finishes during shutdown: the schedule stays CPython's
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_cycles_among_frozen_objects_are_reclaimed_by_the_thaw():
    now = [0.0]
    collector = PacedCollector(full_every=10.0, thaw_every=30.0, clock=lambda: now[0])

    class Node:
        other: object

    try:
        collector.start()
        a, b = Node(), Node()
        a.other, b.other = b, a
        now[0] += 11
        collector.collect_if_due()  # a full collection: the live cycle is frozen with the rest
        gone = weakref.ref(a)
        del a, b  # garbage now, but frozen: only a thaw reclaims it
        now[0] += 11
        collector.collect_if_due()  # a full collection, no thaw yet (22 s since the start)
        assert gone() is not None
        now[0] += 11
        collector.collect_if_due()  # the thaw
        assert gone() is None
    finally:
        collector.stop()
