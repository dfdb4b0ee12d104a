"""ClusterNetworkPolicy tiers through the iptables backend, with real packets: generated clusters
mixing cluster policies and NetworkPolicies (IPv4, IPv6, dual-stack, two nodes) built as a lab
of network namespaces, every pod-to-pod cell and every cell between a pod and a node's address
(its own node's, through INPUT and OUTPUT; another node's, forwarded) compared with
`netpol.semantics.reference`; a pod and its own node under an Admin `nodes` Deny, a `networks`
Deny, a Pass and a NetworkPolicy alone, in both iptables flavours; and the INPUT and OUTPUT
hooks installed once, removed when the last tier rule goes, and on uninstall. Everything lives
in namespaces the tests create and always delete; traffic goes only between them. The payloads
alone: tests/unit/backends/test_iptables_tiers.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings

from netpol.backends.iptables import render
from netpol.compile.compiler import compile_cluster
from netpol.dataplane.iptables import apply_iptables, remove_iptables
from netpol.lab.cluster import Lab, lab_pods, open_lab
from netpol.lab.verify import TRAFFIC_SCRIPT, plan_cells, probe_and_confirm, start_servers
from netpol.load.manifests import load_text
from netpol.model import ClusterState, IPAddress
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.semantics.reference import allowed, endpoint
from netpol.testing import mixed_clusters
from tests.kernel.conftest import fresh_netns
from tests.unit.backends.test_iptables_tiers import KUBELET, OWN_NODE

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ipset") is None
                                or shutil.which("iptables-restore") is None,
                                reason="needs root, ipset and iptables (make test installs them)")
netns = pytest.fixture(fresh_netns)
FLAVOURS = ["nft", "legacy"]

OPEN_TIMEOUT = 30.0  # a connection expected to open: a hang bound (it takes microseconds)
BLOCKED_TIMEOUT = 0.5  # a connection expected to be dropped: slowness cannot make it open
# Connects from a bound source address, all at once (one thread each); prints {id: outcome}.
PROBER = """
import json, socket, sys, threading
out = {}
def one(i, src, dst, port, protocol, timeout):
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect((dst, port))
        if protocol == "UDP":
            s.send(b"netpol"); s.recv(64)
        out[i] = "open"
    except TimeoutError:
        out[i] = "blocked"
    except ConnectionRefusedError:
        out[i] = "refused"
    except OSError as exc:
        out[i] = f"error: {exc}"
    finally:
        s.close()
threads = [threading.Thread(target=one, args=t) for t in json.load(sys.stdin)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class NodeCell:
    """A connection with a node's address at one end: from `netns` (a pod's or a node's)."""

    netns: str
    src: IPAddress
    dst: IPAddress
    port: int
    protocol: str
    expected: bool
    what: str

    def __str__(self) -> str:
        return f"{self.what} {self.src} -> {self.dst} {self.port}/{self.protocol}"


def node_cells(lab: Lab, state: ClusterState, probes: Sequence[Probe]) -> list[NodeCell]:
    """Every lab pod to and from every lab node's address of its family (its own node: local
    delivery; another: forwarded), on every probe, with the semantics' verdict."""
    cells = []
    for pod in lab_pods(state):
        for node in lab.plan.nodes:
            own = "own node" if node.name == pod.node_name else "other node"
            for pod_ip in pod.ips:
                for node_ip in (a for a in node.fabric_addresses if a.version == pod_ip.version):
                    for probe in probes:
                        assert probe.port is not None
                        for src_ns, src, dst, way in ((lab.pod_netns[pod.key], pod_ip, node_ip, "to"),
                                                      (lab.node_netns[node.name], node_ip, pod_ip, "from")):
                            verdict = allowed(state, endpoint(state, src), endpoint(state, dst), probe.port,
                                              probe.protocol)
                            cells.append(NodeCell(src_ns, src, dst, probe.port, probe.protocol, verdict.allowed,
                                                  f"{pod.key} {way} {own} {node.name}:"))
    return cells


def serve_on_nodes(lab: Lab, probes: Sequence[Probe]) -> None:
    """A server on every lab node's addresses, on every probed port; returns once all are bound."""
    ports = {proto: ",".join(sorted({str(p.port) for p in probes if p.protocol == proto})) for proto in ("TCP", "UDP")}
    servers = [lab.spawn(lab.node_netns[node.name],
                         [sys.executable, TRAFFIC_SCRIPT, "serve", f"--ips={','.join(map(str, node.fabric_addresses))}",
                          f"--tcp={ports['TCP']}", f"--udp={ports['UDP']}"]) for node in lab.plan.nodes]
    for server in servers:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"


def probe_node_cells(lab: Lab, cells: Sequence[NodeCell]) -> list[str]:
    """Every cell, one prober per source namespace; the mismatches. A cell expected to open gets
    OPEN_TIMEOUT, one expected to be dropped BLOCKED_TIMEOUT (so a slow machine cannot fail it)."""
    by_netns: dict[str, list[tuple[str, str, str, int, str, float]]] = {}
    for i, cell in enumerate(cells):
        by_netns.setdefault(cell.netns, []).append(
            (str(i), str(cell.src), str(cell.dst), cell.port, cell.protocol,
             OPEN_TIMEOUT if cell.expected else BLOCKED_TIMEOUT))
    outcomes: dict[str, str] = {}
    probers = {netns: lab.spawn(netns, [sys.executable, "-c", PROBER]) for netns in by_netns}
    for netns, proc in probers.items():
        out, err = proc.communicate(json.dumps(by_netns[netns]), timeout=OPEN_TIMEOUT * 2)
        assert proc.returncode == 0, err
        outcomes.update(json.loads(out))
    return [f"{cell}: kernel={outcomes[str(i)]} semantics={'open' if cell.expected else 'blocked'}"
            for i, cell in enumerate(cells) if (outcomes[str(i)] == "open") != cell.expected]


def check_in_lab(state: ClusterState, probes: Sequence[Probe], variant: str = "nft") -> list[str]:
    """The cluster built as a lab, every node's iptables bundle loaded; the mismatches among the
    pod-to-pod cells (as `netpol verify --backend iptables` probes them) and the node cells."""
    usable = [p for p in probes if p.protocol in ("TCP", "UDP") and p.port is not None]
    programs = compile_cluster(state)
    cells = plan_cells(state, usable)
    with open_lab(state) as lab:
        for node in lab.node_netns:
            lab.load_iptables(node, programs[node], variant)
        start_servers(lab, state, usable)
        serve_on_nodes(lab, usable)
        results = probe_and_confirm(lab, cells)
        mismatches = [str(r) for r in results if r.mismatch]
        return mismatches + probe_node_cells(lab, node_cells(lab, state, usable))


def _two_nodes_and_cluster_policies(state: ClusterState) -> bool:
    return bool(state.cluster_policies) and len({p.node_name for p in lab_pods(state)}) == 2


@pytest.mark.usefixtures("netns_guard")
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(state=mixed_clusters(max_pods=8).filter(_two_nodes_and_cluster_policies))
def test_generated_clusters_with_cluster_policies_agree_with_the_semantics_through_iptables(state):
    probes = list(dict.fromkeys([*default_probes(state), parse_probe("80/TCP"), parse_probe("53/UDP")]))
    mismatches = check_in_lab(state, probes)
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("variant", FLAVOURS)
def test_a_pod_and_its_own_node_the_cluster_tiers_decide_and_the_network_policy_tier_exempts(variant):
    if shutil.which(f"iptables-{variant}-restore") is None:
        pytest.skip(f"no iptables-{variant}")
    state = load_text(OWN_NODE)
    probes = [Probe("TCP", KUBELET), Probe("UDP", 53)]
    mismatches = check_in_lab(state, probes, variant)
    assert not mismatches, "\n".join(mismatches)
    # Which of those cells the semantics deny, and why: the unit test of OWN_NODE spells it out.


# ── the hooks: installed once, removed with the last tier rule, and on uninstall ───────────


def _ns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True).stdout


def _listing(netns: str, variant: str) -> tuple[str, str]:
    return (_ns(netns, f"iptables-{variant}", "-w", "-S"), _ns(netns, f"ip6tables-{variant}", "-w", "-S"))


@pytest.mark.parametrize("variant", FLAVOURS)
def test_the_input_and_output_hooks_come_and_go_with_the_tier_rules_and_with_uninstall(netns, variant):
    if shutil.which(f"iptables-{variant}-restore") is None:
        pytest.skip(f"no iptables-{variant}")
    for base in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            _ns(netns, f"{base}-{variant}", "-w", "-N", f"SOMEONE-{hook}")
            _ns(netns, f"{base}-{variant}", "-w", "-A", hook, "-j", f"SOMEONE-{hook}")
    state = load_text(OWN_NODE)
    tiered = compile_cluster(state)["node-a"]
    apply_iptables(render(tiered), tiered, netns, variant)
    first = _listing(netns, variant)
    apply_iptables(render(tiered), tiered, netns, variant)
    assert _listing(netns, variant) == first  # loading twice changes nothing
    for listed in first:
        for hook, ours in (("FORWARD", "NETPOL-FORWARD"), ("INPUT", "NETPOL-INPUT"), ("OUTPUT", "NETPOL-OUTPUT")):
            assert listed.count(f"-A {hook} -j {ours}") == 1
            assert listed.index(f"-A {hook} -j ") == listed.index(f"-A {hook} -j {ours}")  # first
        assert re.search(r"^-N NP-NEA?-[0-9A-F]{12}$", listed, re.M)
    assert "nodes-" in _ns(netns, "ipset", "list", "-n")

    without = ClusterState.build(state.namespaces, state.pods, state.nodes, state.policies)
    untiered = compile_cluster(without)["node-a"]
    apply_iptables(render(untiered), untiered, netns, variant)
    for listed in _listing(netns, variant):
        assert "NETPOL-INPUT" not in listed and "NETPOL-OUTPUT" not in listed and "-N NP-N" not in listed
        assert "-A FORWARD -j NETPOL-FORWARD" in listed
        assert "-A INPUT -j SOMEONE-INPUT" in listed and "-A OUTPUT -j SOMEONE-OUTPUT" in listed
    assert "nodes-" not in _ns(netns, "ipset", "list", "-n")

    apply_iptables(render(tiered), tiered, netns, variant)
    removed = remove_iptables(netns)
    assert removed
    for listed in _listing(netns, variant):
        assert "NETPOL" not in listed and "-N NP-" not in listed
        assert "-A INPUT -j SOMEONE-INPUT" in listed and "-A OUTPUT -j SOMEONE-OUTPUT" in listed
    assert not [name for name in _ns(netns, "ipset", "list", "-n").split() if name.startswith(("nodes-", "pods-"))]
