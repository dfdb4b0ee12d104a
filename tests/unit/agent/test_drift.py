"""Drift, without a kernel: when others change our table (as netpol.dataplane.nft_monitor
reports it) the loop restores the program it last applied, as a whole table, at once — then,
should the drift keep coming back, spaced out instead of in a tight loop; a failed restore is
retried and makes the agent unready. Routes someone removed are re-added at the next check;
`ip` failing is counted, never fatal. /healthz and /readyz tell a dead thread."""

from __future__ import annotations

import urllib.error
import urllib.request

from netpol.agent.coalesce import SyncTiming
from netpol.agent.http import serve
from netpol.agent.loop import REPAIR_PACE, Agent
from netpol.backends.nftables import render
from netpol.dataplane.nft_monitor import TableChanges
from netpol.errors import ApplyError, NftMessage, RouteError
from netpol.sources.events import KIND_NAMES, Snapshot
from tests.conftest import HANG, example_objects

NODE = "node-a"
FAST = SyncTiming(min_interval=0.0, max_interval=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Records what is applied; refuses the next `fail` applies."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, bool]] = []
        self.fail = 0

    def apply(self, ruleset: str, force: bool = False) -> None:
        if self.fail:
            self.fail -= 1
            raise ApplyError("commit", [NftMessage("Could not process rule: injected")])
        self.applied.append((ruleset, force))


class Feed:
    def __init__(self) -> None:
        self.pending = TableChanges()

    def report(self, *changes: str, lost: bool = False) -> None:
        self.pending = TableChanges(changes, ("nft (thread 42)",), lost)

    def take(self) -> TableChanges:
        found, self.pending = self.pending, TableChanges()
        return found


class Routes:
    def __init__(self) -> None:
        self.answers: list[list[str] | Exception] = []

    def sync(self, desired: object) -> list[str]:
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return answer


def synced_agent(**fields: object) -> tuple[Agent, Loader, Feed, Clock]:
    loader, feed, clock = Loader(), Feed(), Clock()
    agent = Agent(NODE, loader, FAST, clock=clock, watch=feed, **fields)  # type: ignore[arg-type]
    objects = example_objects()
    for kind in KIND_NAMES:
        agent.take(Snapshot(kind, tuple(o for o in objects if o["kind"] == kind), "1"))
    assert agent.sync()
    return agent, loader, feed, clock


def test_a_change_made_from_outside_restores_the_program_last_applied_as_a_whole_table():
    agent, loader, feed, _clock = synced_agent()
    feed.report("rule added to chain forward (×1)")
    agent.look_for_drift()
    assert agent.repair_due() and agent.repair()
    assert loader.applied[-1] == (render(agent.applied), True)  # type: ignore[arg-type]  # forced: same text as before
    assert agent.metrics.repairs.labels("table")._value.get() == 1 and agent.ready


def test_drift_before_the_first_sync_is_left_to_it_and_a_full_sync_counts_as_the_repair():
    loader, feed = Loader(), Feed()
    agent = Agent(NODE, loader, FAST, clock=Clock(), watch=feed)
    feed.report("table deleted netpol (×1)")
    agent.look_for_drift()
    assert not agent.repair_due()  # nothing applied yet: the first sync replaces the table anyway
    agent, loader, feed, _clock = synced_agent()
    feed.report(lost=True)  # notifications lost: anything may have changed
    agent.look_for_drift()
    agent._needs_full = True  # a full sync comes first (after a failed apply, say)
    agent.coalescer.note(True)
    assert agent.sync() and not agent.repair_due()
    assert agent.metrics.repairs.labels("table")._value.get() == 1


def test_drift_that_keeps_coming_back_is_repaired_spaced_out_within_the_pace():
    agent, _loader, feed, clock = synced_agent()
    delays = []
    for _ in range(6):
        feed.report("element added to set node-pods-v4 (×1)")
        agent.look_for_drift()
        due = agent._repair_at
        assert due is not None
        delays.append(due - clock.now)
        clock.now = due
        assert agent.repair()
    assert delays[0] == 0  # the first one at once
    assert all(0 < d <= REPAIR_PACE[1] for d in delays[1:]) and max(delays) > REPAIR_PACE[0]
    clock.now += 3600  # quiet for long: the next one at once again
    feed.report("rule added to chain forward (×1)")
    agent.look_for_drift()
    assert agent._repair_at == clock.now


def test_a_failed_repair_makes_the_agent_unready_and_is_tried_again():
    agent, loader, feed, clock = synced_agent()
    feed.report("table deleted netpol (×1)")
    agent.look_for_drift()
    loader.fail = 1
    assert not agent.repair() and not agent.ready and "cannot restore the table" in agent.last_error
    assert not agent.repair_due()
    clock.now += REPAIR_PACE[1]
    assert agent.repair_due() and agent.repair() and agent.ready


def test_removed_routes_are_re_added_at_the_next_check_and_ip_failing_is_not_fatal():
    routes = Routes()
    agent, _loader, _feed, clock = synced_agent(routes=routes, verify_interval=5.0)
    routes.answers = [[], RouteError("cannot run `ip`: No such file or directory"), ["replace 10.244.1.0/24 via x"]]
    agent.keep_routes()  # the first time (Nodes listed): not a repair
    agent.keep_routes()  # not due yet: nothing asked
    assert len(routes.answers) == 2
    clock.now += 5.0
    agent.keep_routes()
    assert agent.metrics.route_errors._value.get() == 1
    clock.now += 5.0
    agent.keep_routes()
    assert agent.metrics.repairs.labels("routes")._value.get() == 1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HANG) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_and_readyz_name_the_thread_that_died():
    agent, *_ = synced_agent()
    died = [""]
    http = serve(agent, "127.0.0.1", 0, lambda: died[0])
    url = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        assert _get(url + "/healthz") == (200, "ok\n") and _get(url + "/readyz")[0] == 200
        died[0] = "dir-source: AttributeError: 'str' object has no attribute 'get'"
        code, body = _get(url + "/healthz")
        assert code == 503 and "dir-source: AttributeError" in body
        assert _get(url + "/readyz")[0] == 503
    finally:
        http.shutdown()
