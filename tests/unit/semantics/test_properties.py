"""Hypothesis properties of the reference semantics and the model (DESIGN §2)."""

from __future__ import annotations

import dataclasses
import json

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.labels import Labels, LabelSelector
from netpol.load.encode import encode_network_policy, encode_state
from netpol.load.manifests import load_text
from netpol.model import ClusterState, NetworkPolicy, Rule
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import compute_reach, participants
from netpol.semantics.reference import Endpoint, allowed, pods_connect
from netpol.testing import assert_agrees, clusters, decode_policy_manifest, policy_manifests

PROBES = (Probe("TCP", 80), Probe("UDP", 53), Probe("SCTP", 9090), Probe("TCP", 8080))


def matrix(state: ClusterState, probes=PROBES) -> dict:
    return {
        (probe, s.key, d.key): pods_connect(state, s, d, probe.port, probe.protocol)
        for probe in probes for s in participants(state) for d in participants(state)
    }


def shares_family(a, b) -> bool:
    return bool({ip.version for ip in a.ips} & {ip.version for ip in b.ips})


@given(clusters(max_policies=0))
def test_no_policies_allow_everything(state):
    for (_, src, dst), ok in matrix(state).items():
        assert ok == shares_family(state.pod(src), state.pod(dst)) or src == dst


@given(clusters(), st.sampled_from(PROBES))
def test_a_policy_that_selects_nothing_changes_nothing(state, probe):
    nothing = NetworkPolicy(state.namespaces[0].name, "selects-nothing",
                            LabelSelector(Labels({"no-such-label": "x"})), (), (Rule(),), ("Ingress", "Egress"))
    bigger = ClusterState.build(state.namespaces, state.pods, state.nodes, (*state.policies, nothing))
    assert matrix(bigger, (probe,)) == matrix(state, (probe,))


@given(clusters())
def test_policy_order_is_irrelevant(state):
    reordered = dataclasses.replace(state)
    object.__setattr__(reordered, "policies", tuple(reversed(state.policies)))  # bypass the sorting
    assert matrix(reordered) == matrix(state)


@given(clusters(), st.data())
def test_ingress_allow_all_rule_opens_an_isolated_pod_to_everyone(state, data):
    pods = participants(state)
    if not pods:
        return
    target = data.draw(st.sampled_from(pods))
    opener = NetworkPolicy(target.namespace, "open-up", LabelSelector(target.labels), (Rule(),), (), ("Ingress",))
    opened = ClusterState.build(state.namespaces, state.pods, state.nodes, (*state.policies, opener))
    for src in pods:
        for probe in PROBES:
            for s_ip in src.ips:
                for d_ip in target.ips:
                    if s_ip.version != d_ip.version:
                        continue
                    before = allowed(state, Endpoint(s_ip, src), Endpoint(d_ip, target), probe.port, probe.protocol)
                    after = allowed(opened, Endpoint(s_ip, src), Endpoint(d_ip, target), probe.port, probe.protocol)
                    assert after.ingress.allowed
                    assert after.allowed == before.egress.allowed


@given(clusters(), st.sampled_from(PROBES))
def test_a_connection_needs_both_egress_and_ingress(state, probe):
    for src in participants(state):
        for dst in participants(state):
            for s_ip in src.ips:
                for d_ip in dst.ips:
                    if s_ip.version == d_ip.version:
                        v = allowed(state, Endpoint(s_ip, src), Endpoint(d_ip, dst), probe.port, probe.protocol)
                        exempt = src == dst
                        assert v.allowed == (v.egress.allowed and v.ingress.allowed) or exempt


@given(clusters())
def test_loopback_is_always_allowed(state):
    for pod in participants(state):
        for probe in PROBES:
            assert pods_connect(state, pod, pod, probe.port, probe.protocol)


@given(clusters())
def test_load_of_dump_is_identity(state):
    as_yaml = yaml.safe_dump(encode_state(state))
    assert load_text(as_yaml) == state
    assert load_text(json.dumps(encode_state(state))) == state


@given(policy_manifests())
def test_policy_manifest_round_trips_through_the_model(manifest):
    policy = decode_policy_manifest(manifest)
    assert decode_policy_manifest(encode_network_policy(policy)) == policy


@settings(max_examples=150)
@given(clusters(max_pods=10, max_policies=5))
def test_reach_engine_agrees_with_semantics(state):
    probes = default_probes(state)
    reach = compute_reach(state, probes)
    row = {p.key: i for i, p in enumerate(reach.pods)}
    col = {p: i for i, p in enumerate(probes)}
    assert_agrees(state, lambda _s, a, b, probe: reach.allowed(col[probe], row[a.key], row[b.key]), probes)


@given(clusters(max_cluster_policies=3), st.sampled_from((4, 6)))
def test_reach_for_one_family_agrees_with_semantics_for_that_family(state, family):
    """With ClusterNetworkPolicies too (both tiers, `networks` of either family)."""
    probes = PROBES[:2]
    reach = compute_reach(state, probes, family)
    for pi, probe in enumerate(probes):
        for s, src in enumerate(reach.pods):
            for d, dst in enumerate(reach.pods):
                s_ip, d_ip = src.ip_of_family(family), dst.ip_of_family(family)
                expected = src == dst or allowed(state, Endpoint(s_ip, src), Endpoint(d_ip, dst),
                                                 probe.port, probe.protocol).allowed
                assert reach.allowed(pi, s, d) == expected
