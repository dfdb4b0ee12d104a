"""The sync loop without a kernel: events in any order fold into the program of the final
objects, and nothing is compiled (or written) before every kind has been listed."""

from __future__ import annotations

import logging

from netpol.agent.coalesce import SyncTiming
from netpol.agent.loop import Agent
from netpol.sources.events import KIND_NAMES, Delta, Snapshot
from tests.conftest import agent_program, example_objects, namespace_object, pod_object

NODE = "node-a"
FAST = SyncTiming(min_interval=0.01, max_interval=0.2, retry_initial=0.05, retry_cap=0.2)


def test_events_out_of_order_end_in_the_state_of_the_final_objects():
    """No kernel: kinds listed in any order, a pod MODIFIED before it was ever ADDED, a DELETED
    for an object never seen, pods arriving before their namespace (which then relabels what
    selects them): the agent's program equals a compile of the final objects."""

    class Recorder:
        def apply(self, ruleset, force=False):
            return None

    agent = Agent(NODE, Recorder(), FAST)
    objects = example_objects()
    by_kind = {kind: [o for o in objects if o["kind"] == kind] for kind in KIND_NAMES}
    for kind in KIND_NAMES[1:]:  # (the example has no cluster policies: they are listed empty)
        agent.take(Snapshot(kind, tuple(by_kind[kind]), "1"))
    assert agent.compiler is None  # not every kind listed yet: nothing compiled, nothing written
    agent.take(Snapshot("Namespace", tuple(o for o in by_kind["Namespace"] if o["metadata"]["name"] != "frontend"),
                        "1"))
    late = pod_object("late", "10.244.0.77", namespace="staging", ports=(8080,), app="web")
    agent.take(Delta("Pod", "MODIFIED", late))  # never ADDED, in a namespace nobody listed yet
    agent.take(Delta("Pod", "DELETED", pod_object("ghost", "10.244.0.78", namespace="frontend", ports=(8080,))))
    agent.take(Delta("NetworkPolicy", "DELETED", {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                                                  "metadata": {"name": "ghost", "namespace": "db"}}))
    agent.take(Delta("Namespace", "ADDED", next(o for o in by_kind["Namespace"]
                                                  if o["metadata"]["name"] == "frontend")))
    staging = namespace_object("staging", tier="frontend")
    agent.take(Delta("Namespace", "ADDED", staging))
    final = [*objects, late, staging]
    assert agent.compiler is not None
    assert agent.compiler.program(NODE) == agent_program(final)


def test_each_sync_says_how_far_every_kind_was_taken():
    """The "synced" record carries, per kind, the resourceVersion of the last event taken (a
    list's, then each watch event's): what lets a writer tell which sync enforces its change."""

    class Recorder:
        def apply(self, ruleset, force=False):
            return None

    class Kept(logging.Handler):  # on the logger itself: whatever propagation says elsewhere
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    agent = Agent(NODE, Recorder(), FAST)
    for kind in KIND_NAMES:
        agent.take(Snapshot(kind, (), "7"))
    pod = pod_object("web", "10.244.0.5", namespace="shop", ports=(8080,), app="web")
    pod["metadata"]["resourceVersion"] = "9"
    agent.take(Delta("Pod", "ADDED", pod))
    logger, kept = logging.getLogger("netpol.agent"), Kept()
    level = logger.level
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:
        assert agent.sync()
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
    [record] = [r for r in kept.records if r.getMessage() == "synced"]
    assert record.resource_versions == {**dict.fromkeys(KIND_NAMES, "7"), "Pod": "9"}
