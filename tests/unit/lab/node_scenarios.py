"""Pod → node cells of `netpol verify`, one scenario shared by the plan's unit tests
(tests/unit/lab/test_verify.py) and the real packets' (tests/kernel/test_verify.py): two
dual-stack nodes, an Admin `nodes` Deny, a Baseline `networks` Deny of the nodes' IPv4 network,
and a pod a NetworkPolicy isolates for egress — with what the semantics say of each cell, written
out by hand."""

from __future__ import annotations

from netpol.model import ClusterState
from tests.conftest import cluster, pod_yaml

TWO_NODES = """
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}
spec: {podCIDRs: [10.10.0.0/24, "fd10:a::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.1}, {type: InternalIP, address: "fd30::1"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {kubernetes.io/hostname: node-b}}
spec: {podCIDRs: [10.10.1.0/24, "fd10:b::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.2}, {type: InternalIP, address: "fd30::2"}]}
"""
CLUSTER_POLICIES_ON_NODES = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-node-b, namespace: isolated}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 172.30.0.2/32}}], ports: [{port: 80}]}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: deny-node-a}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: locked}}}
  egress: [{action: Deny, to: [{nodes: {matchLabels: {kubernetes.io/hostname: node-a}}}]}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: deny-node-network}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {}}
  egress: [{action: Deny, to: [{networks: [172.30.0.0/24]}]}]
"""
PORTS = (80, 53)  # probed as 80/TCP and 53/UDP


def cluster_policies_on_nodes() -> ClusterState:
    return cluster(TWO_NODES + pod_yaml("locked", "admin-denied", "10.10.0.10,fd10:a::10", node="node-a")
                   + pod_yaml("isolated", "np-isolated", "10.10.0.20", node="node-a")
                   + pod_yaml("open", "baseline-denied", "10.10.1.30,fd10:b::30", node="node-b")
                   + CLUSTER_POLICIES_ON_NODES)


def _all(src: str, addresses: tuple[str, ...], is_open: bool) -> dict[tuple[str, str, int], bool]:
    return {(src, address, port): is_open for address in addresses for port in PORTS}


# (source pod, node address, port) → open, per the semantics
EXPECTED_ON_NODES: dict[tuple[str, str, int], bool] = {
    # an Admin `nodes` Deny drops a pod's traffic to its own node; IPv4 to node-b: the Baseline
    # `networks` Deny (no NetworkPolicy isolates the pod); IPv6 to node-b: no tier decides
    **_all("locked/admin-denied", ("172.30.0.1", "fd30::1", "172.30.0.2"), False),
    **_all("locked/admin-denied", ("fd30::2",), True),
    # isolated by a NetworkPolicy and no Admin rule: that tier is final, the Baseline Deny of the
    # node network never reached: its own node exempt (open), node-b as the ipBlock says
    **_all("isolated/np-isolated", ("172.30.0.1",), True),
    ("isolated/np-isolated", "172.30.0.2", 80): True, ("isolated/np-isolated", "172.30.0.2", 53): False,
    # no NetworkPolicy: the Baseline `networks` Deny decides, its own node too (IPv6 is not in it)
    **_all("open/baseline-denied", ("172.30.0.1", "172.30.0.2"), False),
    **_all("open/baseline-denied", ("fd30::1", "fd30::2"), True),
}
