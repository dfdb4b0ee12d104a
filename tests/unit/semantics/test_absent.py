"""Pods outside the matrix are counted by their first reason (finished, hostNetwork, no IP, no
address of the asked family) and told in one sentence per reason."""

from __future__ import annotations

from netpol.semantics.reach import absent_notes, count_absent, participants
from tests.conftest import cluster, pod_yaml


def test_every_pod_outside_the_matrix_is_counted_once_by_its_first_reason():
    state = cluster(
        pod_yaml("a", "web", "10.0.0.1") + pod_yaml("a", "v6", "fd00::1")
        + pod_yaml("a", "proxy", "192.168.0.1", extra=", hostNetwork: true")
        + pod_yaml("a", "done", "10.0.0.9", extra=", hostNetwork: true").replace("Running", "Failed")
        + pod_yaml("a", "pending", ""))
    assert count_absent(state) == {"hostNetwork": 1, "finished": 1, "no IP": 1}
    assert count_absent(state, 6) == {"hostNetwork": 1, "finished": 1, "no IP": 1, "family": 1}
    assert sum(count_absent(state, 4).values()) + len(participants(state, 4)) == len(state.pods)
    assert [note.split(" are ")[0].split(" is ")[0] for note in absent_notes(state, 4)] == [
        "1 finished pod (phase Succeeded or Failed)", "1 hostNetwork pod", "1 pod without an IP address",
        "1 pod without an IPv4 address"]


def test_no_note_when_every_pod_is_in_the_matrix():
    assert absent_notes(cluster(pod_yaml("a", "web", "10.0.0.1"))) == []
