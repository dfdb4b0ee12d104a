"""Differential tests: tracing packets through the compiled IR of every node, and through the
libnftables JSON the backend emits, gives the verdict of `netpol.semantics.reference`, on generated clusters
(IPv4, IPv6, dual-stack) and packets — 400 clusters × 12 packets per tracer, and 400 clusters that
mix ClusterNetworkPolicies (both tiers, Pass, nodes/networks peers, named ports) with
NetworkPolicies × 16 packets, node addresses among the ends (own-node traffic)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.backends.nftables import render_json
from netpol.compile.compiler import block_intervals, compile_cluster
from netpol.load.manifests import load_state, load_text
from netpol.model import ClusterState, IPBlock
from netpol.semantics.reference import allowed, endpoint
from netpol.testing import clusters, mixed_clusters
from netpol.testing.nft_trace import NodeRuleset, trace_json
from netpol.testing.trace import Packet, trace

OUTSIDE = tuple(ipaddress.ip_address(a) for a in ("203.0.113.9", "10.0.1.200", "2001:db8::7", "fd00::3ff"))
PROBES = (("TCP", 80), ("TCP", 8080), ("UDP", 53), ("SCTP", 9090), ("TCP", 443), ("ICMP", None))
Tracer = Callable[[Packet], tuple[bool, object]]


def ir_tracer(state: ClusterState) -> Tracer:
    programs = compile_cluster(state)

    def run(packet: Packet) -> tuple[bool, object]:
        result = trace(programs, packet)
        return result.allowed, result.steps
    return run


def json_tracer(state: ClusterState) -> Tracer:
    """The backend's own output, not just the IR."""
    rulesets = {name: NodeRuleset.from_document(render_json(program), frozenset(program.node_addresses))
                for name, program in compile_cluster(state).items()}
    locations = {ip: p.node_name for p in state.active_pods for ip in p.ips if p.node_name}
    return lambda packet: trace_json(rulesets, packet, locations)


TRACERS = pytest.mark.parametrize("make_tracer", [ir_tracer, json_tracer], ids=["ir", "json"])


def addresses(state: ClusterState) -> list:
    found = {ip for p in state.pods for ip in p.ips}
    found |= {ip for ips in state.node_addresses.values() for ip in ips}
    return sorted(found | set(OUTSIDE), key=lambda ip: (ip.version, int(ip)))


def check(state: ClusterState, tracer: Tracer, src, dst, protocol: str, port: int | None) -> None:
    expected = allowed(state, endpoint(state, src), endpoint(state, dst), port, protocol)
    got, steps = tracer(Packet(src, dst, protocol, port))
    assert got == expected.allowed, (src, dst, protocol, port, steps, expected.reason)


@TRACERS
@settings(max_examples=400)
@given(state=clusters(max_pods=8, max_policies=5), data=st.data())
def test_traces_equal_the_semantics(make_tracer, state, data):
    tracer = make_tracer(state)
    pool = addresses(state)
    for _ in range(12):
        src = data.draw(st.sampled_from(pool))
        dst = data.draw(st.sampled_from([ip for ip in pool if ip.version == src.version and ip != src] or [src]))
        check(state, tracer, src, dst, *data.draw(st.sampled_from(PROBES)))


@TRACERS
@settings(max_examples=400, deadline=None)
@given(state=mixed_clusters(), data=st.data())
def test_traces_with_cluster_policies_equal_the_semantics(make_tracer, state, data):
    tracer = make_tracer(state)
    pool = addresses(state)
    for _ in range(16):
        src = data.draw(st.sampled_from(pool))
        dst = data.draw(st.sampled_from([ip for ip in pool if ip.version == src.version and ip != src] or [src]))
        check(state, tracer, src, dst, *data.draw(st.sampled_from(PROBES)))


@TRACERS
def test_the_bundled_example_traces_like_the_semantics(make_tracer, example_path):
    state = load_state([example_path])
    tracer = make_tracer(state)
    for src in addresses(state):
        for dst in addresses(state):
            if src.version == dst.version and src != dst:
                for protocol, port in (*PROBES, ("TCP", 8443), ("TCP", 9187), ("TCP", 7005)):
                    check(state, tracer, src, dst, protocol, port)


def test_except_is_subtracted_per_block():
    block = IPBlock(ipaddress.ip_network("10.0.0.0/16"), (ipaddress.ip_network("10.0.1.0/24"),))
    intervals = block_intervals(block)
    inside = [int(ipaddress.ip_address(a)) for a in ("10.0.0.1", "10.0.2.1", "10.0.255.255")]
    outside = [int(ipaddress.ip_address(a)) for a in ("10.0.1.0", "10.0.1.255", "10.1.0.0")]
    assert all(any(a <= v <= b for a, b in intervals) for v in inside)
    assert not any(any(a <= v <= b for a, b in intervals) for v in outside)


def test_pods_without_the_named_port_do_not_lend_their_program_to_pods_with_it():
    """Pods selected alike share program sides, except where ingress names a port: a pod that
    declares no ports (compiled first) must not hand its empty allow to one that declares it."""
    state = load_text("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-only, namespace: default}
spec:
  podSelector: {}
  ingress: [{ports: [{port: http}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: a-plain, namespace: default}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b-web, namespace: default}
spec: {nodeName: node-a, containers: [{name: c, ports: [{name: http, containerPort: 53}]}]}
status: {phase: Running, podIP: 10.0.0.3}
""")
    programs = compile_cluster(state)
    src, dst = ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.0.0.3")
    assert trace(programs, Packet(src, dst, "TCP", 53)).allowed
    assert not trace(programs, Packet(dst, src, "TCP", 53)).allowed
