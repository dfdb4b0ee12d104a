"""`netpol verify` without a kernel: the lab plan (subnets, routes), the cells (pod → pod, and
pod → node: only to addresses the lab puts on a node) and how they are compared and reported, and
the errors it gives before building anything. The lab itself, with real packets, is
tests/kernel/test_verify.py."""

from __future__ import annotations

import ipaddress
import textwrap

from netpol.cli import EXIT_INVALID_INPUT, EXIT_USAGE
from netpol.lab import cluster as lab_module
from netpol.lab.cluster import derive_subnets, plan_lab
from netpol.lab.verify import (
    Cell,
    CellResult,
    Report,
    compare,
    format_report,
    late_note,
    plan_cells,
    plan_node_targets,
    split_probes,
    unprobed_node_note,
)
from netpol.load.manifests import load_state
from netpol.model import ClusterState
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reference import Endpoint, allowed, endpoint
from tests.conftest import cluster, dual_stack, pod_yaml, run_cli
from tests.unit.lab.node_scenarios import EXPECTED_ON_NODES, cluster_policies_on_nodes

ip = ipaddress.ip_address


def test_shop_plan_routes_pod_cidrs_via_internal_ips(example_path):
    plan = plan_lab(load_state([example_path]), "abcdef")
    a, b = plan.nodes
    assert (a.netns, b.netns, plan.fabric_netns) == ("np-abcdef-n0", "np-abcdef-n1", "np-abcdef-fab")
    assert [str(g) for g in a.gateways] == ["10.244.0.1/24"]
    assert ("10.244.1.0/24", "via", "192.168.50.11") in a.routes
    assert ipaddress.ip_address("192.168.50.10") in a.fabric_addresses
    assert len(plan.pods) == 11 and all(p.netns.startswith("np-abcdef-p") for p in plan.pods)
    assert any("hostNetwork" in note for note in plan.notes)
    names = [p.host_veth for p in plan.pods] + [n.fabric_port for n in plan.nodes]
    assert all(len(name) <= 15 for name in names)


def test_overlapping_derived_subnets_fall_back_to_host_routes():
    # Pods of both nodes interleave in one /24, as Hypothesis clusters do: no podCIDRs.
    text = (pod_yaml("a", "p1", "10.0.0.1", node="n1") + pod_yaml("a", "p2", "10.0.0.2", node="n2")
            + pod_yaml("a", "p3", "10.0.0.3,fd00::3", node="n1"))
    plan = plan_lab(cluster(text), "000000")
    n1, n2 = plan.nodes
    assert n1.subnets == tuple(map(ipaddress.ip_network, ("10.0.0.0/24", "fd00::/64")))
    assert n2.subnets == (ipaddress.ip_network("10.0.0.0/24"),)
    gateways = {g.ip for n in plan.nodes for g in n.gateways}
    assert len(gateways) == 3 and not gateways & {ipaddress.ip_address(f"10.0.0.{i}") for i in (1, 2, 3)}
    assert not any(r[0] == "10.0.0.0/24" for r in n1.routes)  # would clash with its own cni0 subnet
    assert ("10.0.0.2/32", "via", str(n2.fabric_addresses[0])) in n1.routes
    p1 = next(p for p in plan.pods if p.key == "a/p1")
    assert ("10.0.0.2/32", "via", str(n1.gateways[0].ip)) in p1.routes  # not on p1's link
    assert {f.version for f in n1.fabric_addresses} == {4, 6}  # invented: 192.168.255.x, fd00:255::x


def test_derive_subnets_widens_until_every_pod_fits():
    ips = [ipaddress.ip_address(a) for a in ("10.0.0.5", "10.0.3.7", "fd00::1")]
    assert derive_subnets((), ips) == (ipaddress.ip_network("10.0.0.0/22"), ipaddress.ip_network("fd00::/64"))
    cidr = ipaddress.ip_network("10.0.0.0/24")
    assert derive_subnets((cidr,), ips[:1]) == (cidr,)


def test_derived_subnets_never_make_a_pod_ip_a_network_or_broadcast_address():
    # 10.0.3.255 would be the /22's broadcast address; fd00:: (another node's pod) the /64's
    # subnet-router anycast, which a forwarding node answers itself.
    ips = [ipaddress.ip_address(a) for a in ("10.0.0.35", "10.0.3.255", "fd00::23")]
    assert derive_subnets((), ips, [ipaddress.ip_address("fd00::")]) == (
        ipaddress.ip_network("10.0.0.0/21"), ipaddress.ip_network("fc00::/7"))


def test_cells_compare_and_report():
    state = dual_stack()
    probes = default_probes(state)
    usable, notes = split_probes((*probes, Probe("SCTP", 9000), Probe("ICMP", None)))
    assert usable == probes and "9000/SCTP" in notes[0] and "ICMP" in notes[0]
    cells = plan_cells(state, usable)
    assert {c.family for c in cells} == {4, 6}

    def expected(src: str, dst: str, port: int) -> list[tuple[int, bool]]:
        return [(c.family, c.expected) for c in cells if (c.src, c.dst, c.port) == (src, dst, port)]

    assert expected("shop/web-1", "shop/db", 5432) == [(4, True), (6, True)]
    assert expected("ops/client", "shop/db", 5432) == [(4, False), (6, False)]  # the excepts
    assert expected("ops/client", "shop/web-2", 8081) == [(6, True)]  # named port, IPv6 only
    on_a = {"shop/web-1", "ops/dns"}
    assert all({c.src, c.dst} & on_a for c in plan_cells(state, usable, "node-a"))
    results = compare(cells[:2], {0: "open", 1: "blocked"})
    report = Report(results, ("a note",), 3, 6, len(usable), 1.25)
    text = format_report(report)
    assert text.startswith("note: a note\n") and text.endswith(
        f"2 cells probed, {len(report.mismatches)} mismatches (2 pod -> pod, 0 pod -> node; 3 nodes, 6 pods, "
        "4 probes, 1.2 s)\n")
    wrong = CellResult(Cell("a/x", "b/y", *map(ipaddress.ip_address, ("10.0.0.1", "10.0.0.2")), 80, "TCP",
                            False), "open")
    assert str(wrong) == "a/x -> b/y 80/TCP (IPv4): kernel=open semantics=blocked" and wrong.mismatch


def test_unknown_node_is_a_usage_error_before_anything_is_built(example_path):
    code, _, err = run_cli("verify", "-f", example_path, "--node", "node-z")
    assert code == EXIT_USAGE and "node-z" in err and "node-a" in err


def test_without_root_verify_says_so(example_path, monkeypatch):
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)
    code, _, err = run_cli("verify", "-f", example_path)
    assert code == EXIT_INVALID_INPUT and "needs root" in err


def test_a_cell_that_answers_only_on_its_second_try_is_a_note_not_a_mismatch():
    cell = Cell("a/x", "b/y", *map(ipaddress.ip_address, ("10.0.0.1", "10.0.0.2")), 80, "TCP", True)
    late, still_blocked = CellResult(cell, "open", retried=True), CellResult(cell, "blocked", retried=True)
    assert late_note([late, CellResult(cell, "open")]) == (
        "1 cell(s) answered only on the second try (a busy machine, not a mismatch)",)
    assert late_note([still_blocked, CellResult(cell, "open")]) == ()  # a mismatch is reported as one
    assert still_blocked.mismatch and not late.mismatch


# ── pod → node cells ────────────────────────────────────────────────────────────────────────


def node_cells(state: ClusterState, probes: tuple[Probe, ...], only_node: str | None = None) -> list[Cell]:
    targets = plan_node_targets(state, plan_lab(state, "000000"))
    return [c for c in plan_cells(state, probes, only_node, targets) if c.to_node]


def test_node_targets_are_the_addresses_the_lab_puts_on_a_node_that_the_state_knows():
    state = dual_stack()
    plan = plan_lab(state, "000000")
    targets = plan_node_targets(state, plan)
    # node-b's IPv6 and node-c's fabric addresses are invented: not the nodes' in the state, never probed
    assert targets == {"node-a": (ip("172.30.0.1"), ip("fd30::1")), "node-b": (ip("172.30.0.2"),), "node-c": ()}
    for node in plan.nodes:  # nothing beyond what the lab creates on the node's namespace
        assert set(targets[node.name]) <= set(node.fabric_addresses)
    assert unprobed_node_note(state, targets) == ()


def test_addresses_the_lab_does_not_create_are_never_probed_and_are_named():
    nodes = """
    apiVersion: v1
    kind: Node
    metadata: {name: node-a}
    status: {addresses: [{type: InternalIP, address: 172.30.0.1}, {type: ExternalIP, address: 203.0.113.1},
                         {type: Hostname, address: node-a}]}
    ---
    apiVersion: v1
    kind: Node
    metadata: {name: node-empty}
    status: {addresses: [{type: InternalIP, address: 172.30.0.9}]}
    ---
    """
    # a hostNetwork pod with an address that is not the node's status address; a pod that has
    # node-b's address (nobody's alone: a cell to it would not be a node's)
    state = cluster(textwrap.dedent(nodes) + pod_yaml("a", "p", "10.0.0.1", node="node-a")
                    + pod_yaml("a", "q", "10.0.1.1", node="node-b")
                    + pod_yaml("a", "host", "198.51.100.7", node="node-a", extra=", hostNetwork: true"))
    targets = plan_node_targets(state, plan_lab(state, "000000"))
    assert targets == {"node-a": (ip("172.30.0.1"),), "node-b": ()}
    note, = unprobed_node_note(state, targets)
    assert note.startswith("3 node address(es) not probed") and note.endswith(
        "node-a 198.51.100.7, node-a 203.0.113.1, node-empty 172.30.0.9")
    cells = node_cells(state, (Probe("TCP", 80),))
    assert {(c.src, c.dst, str(c.dst_ip)) for c in cells} == {("a/p", "node-a", "172.30.0.1"),
                                                              ("a/q", "node-a", "172.30.0.1")}


def test_a_node_address_a_pod_also_has_is_not_a_node_target():
    text = """
    apiVersion: v1
    kind: Node
    metadata: {name: node-a}
    status: {addresses: [{type: InternalIP, address: 10.0.0.9}]}
    """
    state = cluster(textwrap.dedent(text) + pod_yaml("a", "p", "10.0.0.1", node="node-a")
                    + pod_yaml("a", "q", "10.0.0.9", node="node-b"))
    assert plan_node_targets(state, plan_lab(state, "000000"))["node-a"] == ()


def test_pod_to_node_cells_own_node_and_the_others_same_family_with_the_semantics_verdict():
    state = dual_stack()
    probes = (Probe("TCP", 8080), Probe("UDP", 53))
    cells = node_cells(state, probes)
    for c in cells:
        pod = state.pod(c.src)
        assert pod is not None and c.src_ip in pod.ips and c.src_ip.version == c.dst_ip.version
        assert c.expected == allowed(state, Endpoint(c.src_ip, pod), endpoint(state, c.dst_ip), c.port,
                                     c.protocol).allowed
    pods = {p.key: p for p in state.active_pods}
    # every (pod IP, node address) pair of one family, for every probe
    assert len(cells) == len(probes) * sum(1 for p in pods.values() for s in p.ips
                                           for d in ("172.30.0.1", "fd30::1", "172.30.0.2") if s.version == ip(d).version)

    def verdicts(src: str) -> set[tuple[str, str, int, bool]]:
        return {(c.dst, str(c.dst_ip), c.port, c.expected) for c in cells if c.src == src}

    # ops/client (node-b) is egress-isolated, no rule admits a node: its own node only (exempt)
    assert verdicts("ops/client") == {("node-b", "172.30.0.2", 8080, True), ("node-b", "172.30.0.2", 53, True),
                                      ("node-a", "172.30.0.1", 8080, False), ("node-a", "172.30.0.1", 53, False),
                                      ("node-a", "fd30::1", 8080, False), ("node-a", "fd30::1", 53, False)}
    assert verdicts("shop/web-2") == {("node-a", "fd30::1", 8080, True), ("node-a", "fd30::1", 53, True)}
    own = next(c for c in cells if c.src == "ops/client" and c.dst == "node-b" and c.protocol == "TCP")
    assert str(own) == "ops/client -> node node-b (172.30.0.2) 8080/TCP (IPv4)" and own.to_node
    # --node: a pod → node cell belongs to the source pod's node and to the target node
    on_b = node_cells(state, probes, "node-b")
    assert {(c.src, c.dst) for c in on_b} == {
        (c.src, c.dst) for c in cells if c.dst == "node-b" or pods[c.src].node_name == "node-b"}
    assert ("shop/web-1", "node-a") not in {(c.src, c.dst) for c in on_b}
    assert ("ops/client", "node-a") in {(c.src, c.dst) for c in on_b}
    on_c = node_cells(state, probes, "node-c")  # node-c has no address to probe: its pods' cells only
    assert on_c and all(pods[c.src].node_name == "node-c" for c in on_c)


def test_pod_to_node_cells_with_cluster_policies_follow_the_tiers():
    cells = node_cells(cluster_policies_on_nodes(), (Probe("TCP", 80), Probe("UDP", 53)))
    assert {(c.src, str(c.dst_ip), c.port): c.expected for c in cells} == EXPECTED_ON_NODES


def test_a_node_address_on_a_pods_link_is_routed_through_its_gateway():
    # node-b's InternalIP sits inside node-a's podCIDR: on-link for node-a's pod, which must
    # still send it to its gateway (the cni0 bridge answers no ARP for it)
    text = """
    apiVersion: v1
    kind: Node
    metadata: {name: node-a}
    spec: {podCIDRs: [10.0.0.0/16]}
    status: {addresses: [{type: InternalIP, address: 10.0.200.1}]}
    ---
    apiVersion: v1
    kind: Node
    metadata: {name: node-b}
    spec: {podCIDRs: [10.1.0.0/24]}
    status: {addresses: [{type: InternalIP, address: 10.0.200.2}]}
    """
    plan = plan_lab(cluster(textwrap.dedent(text) + pod_yaml("a", "p", "10.0.0.5", node="node-a")
                            + pod_yaml("a", "q", "10.1.0.5", node="node-b")), "000000")
    p, q = plan.pods
    gateway = str(plan.nodes[0].gateways[0].ip)
    assert ("10.0.200.2/32", "via", gateway) in p.routes and ("10.0.200.1/32", "via", gateway) in p.routes
    assert not any(r[0].startswith("10.0.200.") for r in q.routes)  # not on q's link: its default route
