"""ClusterNetworkPolicy tiers with real packets: `verify` (every node's ruleset loaded, every
cell — pod → pod and pod → node — probed and compared with `netpol.semantics.reference`) on
Hypothesis clusters mixing cluster policies and NetworkPolicies, in IPv4, IPv6 and dual-stack
layouts, for each backend; and the tiers' story (an Admin Deny over a NetworkPolicy allow, an
Admin Pass to the NetworkPolicy tier, a Baseline default-deny a NetworkPolicy opens), cell by
cell. Every test holds `netns_guard` (tests/kernel/conftest.py): one lab at a time, `ip netns
list` unchanged. Pod → node cells without generated clusters: tests/kernel/test_verify.py."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol.lab.cluster import lab_pods
from netpol.lab.verify import Report, format_report, verify
from netpol.model import ClusterState, IPAddress, Pod
from netpol.semantics.probes import default_probes, parse_probe
from netpol.testing import mixed_clusters
from netpol.testing.strategies import NODE_ADDRESSES
from tests.conftest import cluster

# ── generated clusters ──────────────────────────────────────────────────────────────────────

LAYOUTS = {"IPv4": (4,), "IPv6": (6,), "dual-stack": (4, 6)}
POD_BASE = {4: int(ipaddress.IPv4Address("10.0.0.0")), 6: int(ipaddress.IPv6Address("fd00::"))}  # strategies
BACKENDS = [
    "nftables",
    # iptables: its backend renders the tiers (side.admin, side.baseline) and the own-node chains.
    "iptables",
]


def _slot(ip: IPAddress) -> int:
    return int(ip) - POD_BASE[ip.version]


def _pod_in(pod: Pod, families: tuple[int, ...]) -> Pod:
    """The pod with an address of each of `families` (its first family first, if it keeps it):
    from its address slot as the strategies number them, or, hostNetwork, its node's."""
    if not pod.ips:
        return pod
    order = sorted(families, key=lambda f: f != pod.ips[0].version)
    if pod.host_network:
        own = NODE_ADDRESSES[pod.node_name or ""]
        ips = tuple(a for f in order for a in own if a.version == f)
    else:
        slot = _slot(pod.ips[0])
        ips = tuple(ipaddress.ip_address(POD_BASE[f] + slot) for f in order)
    return dataclasses.replace(pod, ips=ips)


def in_layout(state: ClusterState, layout: str) -> ClusterState:
    """The same cluster with every pod in the layout's families, and the nodes' addresses of
    those families only: an IPv6 cluster has no IPv4 at all, a dual-stack one only dual pods."""
    families = LAYOUTS[layout]
    nodes = [dataclasses.replace(n, addresses=tuple(a for a in n.addresses if a.version in families))
             for n in state.nodes]
    return ClusterState.build(state.namespaces, [_pod_in(p, families) for p in state.pods], nodes,
                              state.policies, state.cluster_policies)


def _on_two_nodes(state: ClusterState) -> bool:
    return len({p.node_name for p in lab_pods(state)}) == 2


def layout_clusters(layout: str) -> st.SearchStrategy[ClusterState]:
    """Mixed clusters (cluster policies of both tiers among NetworkPolicies) in `layout`, with at
    least one cluster policy and pods on both nodes."""
    return (mixed_clusters(max_pods=10, max_cluster_policies=6).filter(lambda s: bool(s.cluster_policies))
            .map(lambda s: in_layout(s, layout)).filter(_on_two_nodes))


@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_mixed_clusters_agree_with_the_semantics_on_real_packets(backend, layout, data):
    if backend == "iptables" and shutil.which("iptables-restore") is None:
        pytest.skip("no iptables-restore")
    state = data.draw(layout_clusters(layout), label="state")
    assert all({ip.version for ip in p.ips} == set(LAYOUTS[layout]) for p in lab_pods(state))
    # A TCP and a UDP port always, so a cluster that names only SCTP still has cells to probe.
    probes = list(dict.fromkeys([*default_probes(state), parse_probe("80/TCP"), parse_probe("53/UDP")]))
    report = verify(state, probes, backend=backend)
    assert not report.mismatches, format_report(report)
    assert report.nodes == 2 and any(r.cell.to_node for r in report.results)  # both nodes' addresses
    assert {r.cell.family for r in report.results} == set(LAYOUTS[layout])


# ── the story: Admin Deny, Admin Pass, Baseline default-deny ───────────────────────────────

STORY = """
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}
spec: {podCIDRs: [10.20.0.0/24]}
status: {addresses: [{type: InternalIP, address: 172.31.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {kubernetes.io/hostname: node-b}}
spec: {podCIDRs: [10.20.1.0/24]}
status: {addresses: [{type: InternalIP, address: 172.31.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: postgres, namespace: db, labels: {app: postgres}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {phase: Running, podIPs: [{ip: 10.20.0.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.20.0.20}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {nodeName: node-b, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.20.1.30}]}
---
apiVersion: v1
kind: Pod
metadata: {name: scanner, namespace: ops, labels: {app: scanner}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.20.1.40}]}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus, namespace: monitoring, labels: {app: prometheus}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.20.0.50}]}
---
# db's own policy: postgres takes 5432 from shop and from ops, nothing else
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-clients, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}
    ports: [{port: 5432}]
---
# shop's own policy: web takes 80 from anyone
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-public, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
---
# Admin Deny over a namespace's NetworkPolicy allow: ops never reaches db
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: quarantine-ops}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: db}}}
  ingress:
  - name: no-ops
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: ops}}}]
---
# Admin Pass: shop's traffic to db is db's NetworkPolicies' to decide (it skips the Accept
# below); everyone else is accepted into db, whatever db's NetworkPolicies say
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: db-guard}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: db}}}
  ingress:
  - name: shop-by-networkpolicy
    action: Pass
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}]
  - name: everyone-else
    action: Accept
    from: [{namespaces: {}}]
---
# Baseline default-deny: a pod no NetworkPolicy isolates takes nothing from pods
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 1000
  subject: {namespaces: {}}
  ingress: [{name: deny-all, action: Deny, from: [{namespaces: {}}]}]
"""
STORY_PROBES = [parse_probe("80/TCP"), parse_probe("5432/TCP"), parse_probe("53/UDP")]
PODS = ("db/postgres", "shop/web", "shop/api", "ops/scanner", "monitoring/prometheus")


def story_expected() -> dict[tuple[str, str, str], bool]:
    """Every pod → pod cell of the story, from the story itself (not from the semantics)."""
    opened = {
        # Admin Pass → db/postgres-clients admits shop on 5432 only
        ("shop/web", "db/postgres", "5432/TCP"), ("shop/api", "db/postgres", "5432/TCP"),
        # Admin Accept (after the Pass): monitoring on any port, though the NetworkPolicy isolates postgres
        *(("monitoring/prometheus", "db/postgres", p) for p in ("80/TCP", "5432/TCP", "53/UDP")),
        # shop/web-public opens web's 80 to everyone: the Baseline default-deny is never reached
        *((src, "shop/web", "80/TCP") for src in PODS),
    }
    # ops/scanner → db/postgres 5432: the Admin Deny wins over db/postgres-clients' allow.
    # shop/api, ops/scanner, monitoring/prometheus: no NetworkPolicy isolates them, the Baseline
    # default-deny closes them. A pod reaches itself whatever the policies.
    return {(src, dst, p.span): (src, dst, p.span) in opened or src == dst
            for src in PODS for dst in PODS for p in STORY_PROBES}


@pytest.mark.usefixtures("netns_guard")
def test_the_tiers_story_cell_by_cell():
    report: Report = verify(cluster(STORY), STORY_PROBES)
    assert not report.mismatches, format_report(report)
    pod_cells = {(r.cell.src, r.cell.dst, f"{r.cell.port}/{r.cell.protocol}"): r.kernel_open
                 for r in report.results if not r.cell.to_node}
    assert pod_cells == story_expected()
    # no egress rule anywhere: every pod reaches both nodes (its own one too)
    to_nodes = [r for r in report.results if r.cell.to_node]
    assert len(to_nodes) == len(PODS) * 2 * len(STORY_PROBES) and all(r.kernel_open for r in to_nodes)
