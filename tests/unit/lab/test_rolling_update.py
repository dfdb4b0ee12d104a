"""The demo's rolling update, judged without a kernel: the cells it watches have an end on the
restarted node, both verdicts, TCP, spread over all of them; what counts is every attempt begun from
the SIGTERM to the new agent's first sync, and one denied connection that got through, one
allowed one that did not, a non-zero exit or nothing tried is a failure."""

from __future__ import annotations

import dataclasses

from netpol.lab.demo import WATCHED_ALLOWED, WATCHED_DENIED, RestartResult, on_three_nodes, watched_cells
from netpol.lab.verify import Attempt
from netpol.load.manifests import load_state
from netpol.semantics.probes import default_probes


def test_the_watched_cells_are_spread_over_both_verdicts_on_the_restarted_node(example_path):
    state = on_three_nodes(load_state([example_path]))
    cells = watched_cells(state, default_probes(state), "node-a")
    on_node = {p.key for p in state.pods if p.node_name == "node-a"}
    assert all(c.src in on_node or c.dst in on_node for c in cells)
    assert all(c.family == 4 and c.protocol == "TCP" and c.src != c.dst for c in cells)
    assert sum(not c.expected for c in cells) == WATCHED_DENIED and sum(c.expected for c in cells) == WATCHED_ALLOWED
    assert len({c.src for c in cells}) > 3 and any(c.src not in on_node for c in cells)  # across nodes too


def restart(example_path, outcomes: dict[bool, str], exit_code: int | None = 0) -> RestartResult:
    state = on_three_nodes(load_state([example_path]))
    cells = watched_cells(state, default_probes(state), "node-a")
    attempts = [Attempt(i, at, outcomes[c.expected]) for i, c in enumerate(cells) for at in (-0.5, 0.2, 1.0, 3.0)]
    return RestartResult("node-a", exit_code, exited=0.4, synced=2.0, ready=2.1, cells=cells,
                         attempts=tuple(attempts))


def test_only_attempts_from_the_sigterm_to_the_first_sync_count(example_path):
    held = restart(example_path, {False: "blocked", True: "open"})
    assert held.tried(False) == (2 * WATCHED_DENIED, 0) and held.tried(True) == (2 * WATCHED_ALLOWED,) * 2
    assert held.tried(False, since=held.exited) == (WATCHED_DENIED, 0)  # no agent running or synced
    assert held.problems == []
    lines = held.lines()
    assert lines[1].startswith(f"from SIGTERM to that first sync: {WATCHED_DENIED} denied cells tried "
                               f"{2 * WATCHED_DENIED} times, 0 got through")


def test_a_leak_a_broken_allowed_cell_a_bad_exit_or_nothing_tried_fails(example_path):
    assert restart(example_path, {False: "open", True: "open"}).problems == [
        f"{2 * WATCHED_DENIED} of {2 * WATCHED_DENIED} connections on denied cells got through during the restart"]
    assert restart(example_path, {False: "blocked", True: "blocked"}).problems == [
        f"{2 * WATCHED_ALLOWED} of {2 * WATCHED_ALLOWED} connections on allowed cells failed during the restart"]
    assert restart(example_path, {False: "blocked", True: "open"}, exit_code=137).problems == [
        "the old agent exited with 137 on SIGTERM, not 0"]
    empty = dataclasses.replace(restart(example_path, {False: "blocked", True: "open"}), attempts=())
    assert empty.problems == ["too little was tried during the restart (0 connections on denied cells, "
                              "0 on allowed ones)"]
