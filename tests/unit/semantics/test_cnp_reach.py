"""The fast map (`netpol.semantics.reach`) with ClusterNetworkPolicies agrees with the reference
semantics cell by cell: on generated clusters mixing both tiers and NetworkPolicies (IPv4, IPv6,
dual-stack), per family, and on every state of the upstream conformance suite. And properties of
the tiers that hold whatever the policies (per family: tests/unit/semantics/test_properties.py): Deny-only Admin policies only take away, Accept-only
ones only add, a Baseline tier without a Deny changes nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.model import ClusterState
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import compute_reach, participants
from netpol.semantics.reference import pods_connect
from netpol.testing import (
    assert_agrees,
    cluster_policy_manifests,
    decode_cluster_policy_manifest,
    mixed_clusters,
)
from tests.unit.semantics.test_cnp_conformance import LAYOUTS, Run, suite_tests

PROBES = (Probe("TCP", 80), Probe("UDP", 53), Probe("SCTP", 9090), Probe("TCP", 8080), Probe("ICMP", None))


def reach_agrees(state: ClusterState, probes: tuple[Probe, ...] | None = None) -> None:
    probes = probes or default_probes(state)
    reach = compute_reach(state, probes)
    row = {p.key: i for i, p in enumerate(reach.pods)}
    col = {p: i for i, p in enumerate(probes)}
    assert_agrees(state, lambda _s, a, b, probe: reach.allowed(col[probe], row[a.key], row[b.key]), probes)


@settings(max_examples=200)
@given(mixed_clusters(max_pods=10, max_policies=3, max_cluster_policies=5))
def test_reach_agrees_with_the_reference_on_mixed_clusters(state):
    reach_agrees(state)


@settings(max_examples=100)
@given(mixed_clusters(max_pods=8, max_policies=2, max_cluster_policies=4))
def test_reach_agrees_on_probes_without_ports_too(state):
    reach_agrees(state, PROBES)


def test_reach_agrees_on_every_state_of_the_upstream_suite():
    for param in suite_tests():
        test, folder = param.values
        for layout in (LAYOUTS[0], LAYOUTS[5]):  # ipv4 colocated, dual-stack (v6 primary) apart
            run = Run(test, folder, layout)
            reach_agrees(run.state())
            for step in test["steps"]:
                if "mutate" in step:
                    run.mutate(*step["mutate"])
                    reach_agrees(run.state())


def test_cluster_policy_ports_are_probed_and_ranges_cut():
    state = Run(next(p.values[0] for p in suite_tests() if p.values[0]["shortName"] == "CNPAdminTierPortRange"),
                "cnp", LAYOUTS[0]).state()
    probes = default_probes(state)
    # web is TCP/80 and dns UDP/53 on every pod: the ranges are cut there; nothing cuts the SCTP one
    assert {Probe("TCP", 80), Probe("TCP", 81, 8080), Probe("UDP", 53), Probe("UDP", 54, 5353),
            Probe("SCTP", 9003, 9005)} <= set(probes)


# -- properties of the tiers --------------------------------------------------------------------------

def matrix(state: ClusterState) -> dict[tuple[Probe, str, str], bool]:
    return {(probe, s.key, d.key): pods_connect(state, s, d, probe.port, probe.protocol)
            for probe in PROBES for s in participants(state) for d in participants(state)}


def with_actions(manifest: dict[str, Any], tier: str, action: str) -> dict[str, Any]:
    spec = {**manifest["spec"], "tier": tier}
    for direction in ("ingress", "egress"):
        if spec.get(direction):
            spec[direction] = [{**rule, "action": action} for rule in spec[direction]]
    return {**manifest, "spec": spec}


def adding(state: ClusterState, manifest: dict[str, Any]) -> ClusterState:
    extra = decode_cluster_policy_manifest({**manifest, "metadata": {"name": "added"}})
    return dataclasses.replace(state, cluster_policies=(*state.cluster_policies, extra))


@given(mixed_clusters(max_pods=6), cluster_policy_manifests())
def test_a_deny_only_admin_policy_only_takes_connections_away(state, manifest):
    before, after = matrix(state), matrix(adding(state, with_actions(manifest, "Admin", "Deny")))
    assert all(before[cell] or not after[cell] for cell in before)


@given(mixed_clusters(max_pods=6), cluster_policy_manifests())
def test_an_accept_only_admin_policy_only_adds_connections(state, manifest):
    before, after = matrix(state), matrix(adding(state, with_actions(manifest, "Admin", "Accept")))
    assert all(after[cell] or not before[cell] for cell in before)


@given(mixed_clusters(max_pods=6), st.lists(cluster_policy_manifests(), max_size=3), st.sampled_from(("Accept", "Pass")))
def test_a_baseline_tier_without_deny_changes_nothing(state, manifests, action):
    admin_only = dataclasses.replace(state, cluster_policies=state.tier_policies("Admin"))
    bigger = admin_only
    for i, manifest in enumerate(manifests):
        policy = decode_cluster_policy_manifest({**with_actions(manifest, "Baseline", action),
                                                 "metadata": {"name": f"b{i}"}})
        bigger = dataclasses.replace(bigger, cluster_policies=(*bigger.cluster_policies, policy))
    assert matrix(bigger) == matrix(admin_only)
