"""Hypothesis strategies for valid (and invalid) namespaces, pods, nodes, policies and clusters.

Policies are generated as manifests (dicts) first, so every spelling the API allows appears:
`policyTypes` present or absent, `ingress: []` vs absent vs `[{}]`, each peer kind, ipBlock with
except, numeric and named ports, endPort, all three protocols. `policies()` decodes those.
ClusterNetworkPolicies likewise (`cluster_policy_manifests`): both tiers, a few priorities (so
that ties happen), every action, each peer kind (`namespaces`, `pods` with and without a
namespace selector, `networks` of both families, `nodes`), protocols absent, numbers, ranges and
named ports; `mixed_clusters()` puts them beside NetworkPolicies.
Label keys, values and port names come from small pools so that selectors actually select.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

from netpol.labels import OPERATORS, Labels
from netpol.load.decode import Reader, decode_cluster_policy, decode_network_policy
from netpol.load.encode import encode_namespace, encode_node, encode_pod
from netpol.model import (
    ACTIONS,
    PROTOCOLS,
    TIERS,
    ClusterNetworkPolicy,
    ClusterState,
    ContainerPort,
    IPAddress,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
)

LABEL_KEYS = ("app", "tier", "env", "example.com/team")
LABEL_VALUES = ("web", "db", "a", "b")
NAMESPACE_NAMES = ("default", "shop", "data", "ops")
PORT_NAMES = ("http", "metrics", "dns")
PORT_NUMBERS = (53, 80, 443, 8080, 9090)
NODE_NAMES = ("node-a", "node-b")
NODE_ADDRESSES = {
    "node-a": (ipaddress.ip_address("192.168.0.1"), ipaddress.ip_address("fd01::1")),
    "node-b": (ipaddress.ip_address("192.168.0.2"), ipaddress.ip_address("fd01::2")),
}
# Pod addresses are 10.0.0.0/22 and fd00::/118; these CIDRs cut through them.
V4_CIDRS = ("0.0.0.0/0", "10.0.0.0/16", "10.0.0.0/23", "10.0.1.0/24", "10.0.0.128/25", "10.0.2.0/24",
            "192.168.0.0/24")
V6_CIDRS = ("::/0", "fd00::/64", "fd00::/119", "fd00::100/120", "fd00::80/121", "fd01::/64")
ADDRESS_SLOTS = 1024


def labels(keys: tuple[str, ...] = LABEL_KEYS,
           values: tuple[str, ...] = LABEL_VALUES) -> st.SearchStrategy[Labels]:
    return st.dictionaries(st.sampled_from(keys), st.sampled_from(values), max_size=3).map(Labels)


def label_selector_manifests() -> st.SearchStrategy[dict[str, Any]]:
    """`{matchLabels, matchExpressions}` with every operator; `{}` selects all."""
    def expression(op: str) -> st.SearchStrategy[dict[str, Any]]:
        base: dict[str, Any] = {"key": st.sampled_from(LABEL_KEYS), "operator": st.just(op)}
        if op in ("In", "NotIn"):
            base["values"] = st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2, unique=True)
        return st.fixed_dictionaries(base)

    return st.fixed_dictionaries({}, optional={
        "matchLabels": st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES),
                                       max_size=2),
        "matchExpressions": st.lists(st.sampled_from(OPERATORS).flatmap(expression), max_size=2),
    })


def namespaces(names: tuple[str, ...] = NAMESPACE_NAMES) -> st.SearchStrategy[Namespace]:
    return st.builds(Namespace, st.sampled_from(names), labels())


def container_ports() -> st.SearchStrategy[tuple[ContainerPort, ...]]:
    """Container ports with unique names (the API requires it); some unnamed."""
    port = st.builds(ContainerPort, st.sampled_from(PORT_NUMBERS), st.sampled_from(PROTOCOLS),
                     st.none() | st.sampled_from(PORT_NAMES))
    return st.lists(port, max_size=3, unique_by=lambda p: p.name or object()).map(tuple)


def _address(slot: int, version: int) -> IPAddress:
    if version == 4:
        return ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + slot)
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd00::")) + slot)


@st.composite
def pods(draw: st.DrawFn, namespace_names: tuple[str, ...] = NAMESPACE_NAMES, name: str | None = None,
         slot: int | None = None) -> Pod:
    """A pod: IPv4, IPv6 or dual-stack (address from `slot`), sometimes hostNetwork, without an IP,
    or finished."""
    slot = draw(st.integers(0, ADDRESS_SLOTS - 1)) if slot is None else slot
    families = draw(st.sampled_from(((4,), (4,), (6,), (4, 6), (6, 4))))
    node = draw(st.sampled_from(NODE_NAMES))
    host_network = draw(st.integers(0, 9)) == 0
    if host_network:
        ips: tuple[IPAddress, ...] = tuple(a for a in NODE_ADDRESSES[node] if a.version in families)
    elif draw(st.integers(0, 19)) == 0:
        ips = ()  # not yet scheduled / no IP
    else:
        ips = tuple(_address(slot, f) for f in families)
    phase = draw(st.sampled_from(("Running",) * 8 + ("Pending", "Succeeded", "Failed")))
    return Pod(
        namespace=draw(st.sampled_from(namespace_names)),
        name=name or f"pod-{slot}",
        labels=draw(labels()),
        ips=ips,
        node_name=node,
        host_network=host_network,
        phase=phase if ips else "Pending",
        ports=draw(container_ports()),
    )


def nodes() -> st.SearchStrategy[tuple[Node, ...]]:
    return st.just(tuple(Node(n, Labels({"kubernetes.io/hostname": n}), NODE_ADDRESSES[n])
                         for n in NODE_NAMES))


@st.composite
def ip_block_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """`{cidr, except}` with every except a strict subnet of cidr, of the same family."""
    cidr = ipaddress.ip_network(draw(st.sampled_from(V4_CIDRS + V6_CIDRS)))
    excepts: set[str] = set()
    for _ in range(draw(st.integers(0, 2))):
        top = 32 if cidr.version == 4 else 128
        prefix = draw(st.integers(cidr.prefixlen + 1, min(top, cidr.prefixlen + 10)))
        index = draw(st.integers(0, 2 ** (prefix - cidr.prefixlen) - 1))
        size = 2 ** (top - prefix)
        base = int(cidr.network_address) + index * size
        excepts.add(str(type(cidr)((base, prefix))))
    block: dict[str, Any] = {"cidr": str(cidr)}
    if excepts:
        block["except"] = sorted(excepts)
    return block


def peer_manifests() -> st.SearchStrategy[dict[str, Any]]:
    """Each peer kind: podSelector, namespaceSelector, both, ipBlock."""
    sel = label_selector_manifests()
    return st.one_of(
        st.fixed_dictionaries({"podSelector": sel}),
        st.fixed_dictionaries({"namespaceSelector": sel}),
        st.fixed_dictionaries({"namespaceSelector": sel, "podSelector": sel}),
        st.fixed_dictionaries({"ipBlock": ip_block_manifests()}),
    )


@st.composite
def port_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """Numeric, named, ranged (endPort) or protocol-only ports; protocol sometimes defaulted."""
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["protocol"] = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("number", "name", "range", "none")))
    if kind == "number":
        entry["port"] = draw(st.sampled_from(PORT_NUMBERS))
    elif kind == "name":
        entry["port"] = draw(st.sampled_from(PORT_NAMES))
    elif kind == "range":
        start = draw(st.sampled_from(PORT_NUMBERS))
        entry["port"] = start
        entry["endPort"] = start + draw(st.sampled_from((0, 1, 100, 9000)))
    return entry


def rule_manifests(peers_field: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        peers_field: st.lists(peer_manifests(), max_size=2),
        "ports": st.lists(port_manifests(), max_size=2),
    })


@st.composite
def policy_manifests(draw: st.DrawFn, namespace_names: tuple[str, ...] = NAMESPACE_NAMES,
                     name: str | None = None) -> dict[str, Any]:
    """A valid NetworkPolicy manifest; `ingress`/`egress` absent, `[]`, `[{}]` or rules."""
    spec: dict[str, Any] = {"podSelector": draw(label_selector_manifests())}
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        shape = draw(st.sampled_from(("absent", "empty", "allow-all", "rules", "rules")))
        if shape == "empty":
            spec[direction] = []
        elif shape == "allow-all":
            spec[direction] = [{}]
        elif shape == "rules":
            spec[direction] = draw(st.lists(rule_manifests(peers_field), min_size=1, max_size=2))
    if draw(st.booleans()):
        spec["policyTypes"] = draw(st.sampled_from(([], ["Ingress"], ["Egress"], ["Ingress", "Egress"],
                                                     ["Egress", "Ingress"], ["Ingress", "Ingress"])))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name or draw(st.sampled_from(("p1", "p2", "allow", "deny"))),
                     "namespace": draw(st.sampled_from(namespace_names))},
        "spec": spec,
    }


Decoded = TypeVar("Decoded")


def _decode_generated(decode: Callable[[Reader, dict[str, Any]], Decoded],
                      manifest: dict[str, Any]) -> Decoded:
    reader = Reader("<generated>", manifest["kind"])
    decoded = decode(reader, manifest)
    if reader.problems:  # a bug in the strategy, not in the code under test
        raise AssertionError("\n".join(map(str, reader.problems)))
    return decoded


def decode_policy_manifest(manifest: dict[str, Any]) -> NetworkPolicy:
    return _decode_generated(decode_network_policy, manifest)


def policies(namespace_names: tuple[str, ...] = NAMESPACE_NAMES, name: str | None = None
             ) -> st.SearchStrategy[NetworkPolicy]:
    return policy_manifests(namespace_names, name).map(decode_policy_manifest)


CLUSTER_PRIORITIES = (0, 10, 10, 500, 1000)  # repeated: ties between policies happen


def node_selector_manifests() -> st.SearchStrategy[dict[str, Any]]:
    """Selectors over the nodes' labels: all of them, one by name, all but one."""
    return st.sampled_from([{}, *({"matchLabels": {"kubernetes.io/hostname": n}} for n in NODE_NAMES),
                            *({"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn",
                                                     "values": [n]}]} for n in NODE_NAMES)])


def namespaced_pods_manifests() -> st.SearchStrategy[dict[str, Any]]:
    """`pods: {namespaceSelector, podSelector}`; the namespace selector sometimes absent (= all)."""
    sel = label_selector_manifests()
    return st.fixed_dictionaries({"podSelector": sel}, optional={"namespaceSelector": sel})


def cluster_peer_manifests(direction: str) -> st.SearchStrategy[dict[str, Any]]:
    """Each peer kind of a direction: ingress `namespaces`, `pods`; egress also `networks` (masked
    CIDRs of both families, pod addresses among them) and `nodes`."""
    kinds = [st.fixed_dictionaries({"namespaces": label_selector_manifests()}),
             st.fixed_dictionaries({"pods": namespaced_pods_manifests()})]
    if direction == "egress":
        cidrs = st.lists(st.sampled_from(V4_CIDRS + V6_CIDRS), min_size=1, max_size=2, unique=True)
        kinds += [cidrs.map(_networks_peer), st.fixed_dictionaries({"nodes": node_selector_manifests()})]
    return st.one_of(kinds)


def _networks_peer(cidrs: list[str]) -> dict[str, Any]:
    return {"networks": cidrs}


@st.composite
def cluster_protocol_manifests(draw: st.DrawFn, named: bool = True) -> dict[str, Any]:
    """A `protocols` entry: a number or a range of one protocol, or (`named`) a named port."""
    kind = draw(st.sampled_from(("number", "range", "name") if named else ("number", "range")))
    if kind == "name":
        return {"destinationNamedPort": draw(st.sampled_from(PORT_NAMES))}
    start = draw(st.sampled_from(PORT_NUMBERS))
    port: dict[str, Any] = {"number": start}
    if kind == "range":
        port = {"range": {"start": start, "end": start + draw(st.sampled_from((1, 100, 9000)))}}
    return {draw(st.sampled_from(PROTOCOLS)).lower(): {"destinationPort": port}}


@st.composite
def cluster_rule_manifests(draw: st.DrawFn, direction: str) -> dict[str, Any]:
    peers = draw(st.lists(cluster_peer_manifests(direction), min_size=1, max_size=2))
    rule: dict[str, Any] = {"action": draw(st.sampled_from(ACTIONS)),
                            "from" if direction == "ingress" else "to": peers}
    if draw(st.booleans()):
        rule["name"] = draw(st.sampled_from(("guard", "allow-dns", "deny-all")))
    if draw(st.booleans()):  # named ports are a pod's: not with networks or nodes peers (the CRD's CEL)
        named = not any("networks" in p or "nodes" in p for p in peers)
        rule["protocols"] = draw(st.lists(cluster_protocol_manifests(named), min_size=1, max_size=2))
    return rule


@st.composite
def cluster_policy_manifests(draw: st.DrawFn, name: str | None = None) -> dict[str, Any]:
    """A valid ClusterNetworkPolicy (v1beta1 or v1alpha2); `ingress`/`egress` absent, `[]` or rules."""
    subject = draw(st.one_of(st.fixed_dictionaries({"namespaces": label_selector_manifests()}),
                             st.fixed_dictionaries({"pods": namespaced_pods_manifests()})))
    spec: dict[str, Any] = {"tier": draw(st.sampled_from(TIERS)),
                            "priority": draw(st.sampled_from(CLUSTER_PRIORITIES)), "subject": subject}
    for direction in ("ingress", "egress"):
        shape = draw(st.sampled_from(("absent", "empty", "rules", "rules")))
        if shape == "empty":
            spec[direction] = []
        elif shape == "rules":
            spec[direction] = draw(st.lists(cluster_rule_manifests(direction), min_size=1, max_size=3))
    return {"apiVersion": draw(st.sampled_from(("policy.networking.k8s.io/v1beta1",
                                                "policy.networking.k8s.io/v1alpha2"))),
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name or draw(st.sampled_from(("guard", "baseline", "a", "b")))},
            "spec": spec}


def decode_cluster_policy_manifest(manifest: dict[str, Any]) -> ClusterNetworkPolicy:
    return _decode_generated(decode_cluster_policy, manifest)


def cluster_policies(name: str | None = None) -> st.SearchStrategy[ClusterNetworkPolicy]:
    return cluster_policy_manifests(name).map(decode_cluster_policy_manifest)


@st.composite
def clusters(draw: st.DrawFn, max_pods: int = 8, max_policies: int = 4,
             namespace_names: tuple[str, ...] = NAMESPACE_NAMES,
             max_cluster_policies: int = 0) -> ClusterState:
    """A whole, valid cluster: namespaces, two nodes, pods with unique addresses, policies (and,
    with `max_cluster_policies`, ClusterNetworkPolicies)."""
    ns = draw(st.lists(namespaces(namespace_names), min_size=1, max_size=len(namespace_names),
                       unique_by=lambda n: n.name))
    names = tuple(n.name for n in ns)
    slots = draw(st.lists(st.integers(0, ADDRESS_SLOTS - 1), max_size=max_pods, unique=True))
    pod_list = [draw(pods(names, f"pod-{i}", slot)) for i, slot in enumerate(slots)]
    policy_list = [draw(policies(names, f"policy-{i}")) for i in range(draw(st.integers(0, max_policies)))]
    cluster_list = [draw(cluster_policies(f"cnp-{i}"))
                    for i in range(draw(st.integers(0, max_cluster_policies)))]
    return ClusterState.build(ns, pod_list, draw(nodes()), policy_list, cluster_list)


def mixed_clusters(max_pods: int = 8, max_policies: int = 3, max_cluster_policies: int = 4
                   ) -> st.SearchStrategy[ClusterState]:
    """Clusters with ClusterNetworkPolicies (both tiers) among their NetworkPolicies."""
    return clusters(max_pods, max_policies, max_cluster_policies=max_cluster_policies)


# (a defect to plant, the field path the error must name) for invalid_policy_manifests()
_POLICY_DEFECTS: tuple[tuple[str, Any, str], ...] = (
    ("spec.podSelector.matchExpressions", [{"key": "app", "operator": "Like", "values": ["a"]}],
     "spec.podSelector.matchExpressions[0].operator"),
    ("spec.podSelector.matchExpressions", [{"key": "app", "operator": "In"}],
     "spec.podSelector.matchExpressions[0].values"),
    ("spec.podSelector.matchExpressions", [{"key": "app", "operator": "Exists", "values": ["a"]}],
     "spec.podSelector.matchExpressions[0].values"),
    ("spec.podSelector.matchLabels", {"app": "-bad-"}, "spec.podSelector.matchLabels.app"),
    ("spec.podSelector.matchLabels", {"bad key!": "a"}, "spec.podSelector.matchLabels.bad key!"),
    ("spec.ingress", [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}],
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("spec.ingress", [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}]}],
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("spec.ingress", [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}],
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("spec.ingress", [{"from": [{"ipBlock": {"cidr": "10.0.0.300/16"}}]}],
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ("spec.ingress", [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
     "spec.ingress[0].from[0]"),
    ("spec.ingress", [{"from": [{}]}], "spec.ingress[0].from[0]"),
    ("spec.ingress", [{"ports": [{"port": 0}]}], "spec.ingress[0].ports[0].port"),
    ("spec.ingress", [{"ports": [{"port": 70000}]}], "spec.ingress[0].ports[0].port"),
    ("spec.ingress", [{"ports": [{"port": "not_a_name"}]}], "spec.ingress[0].ports[0].port"),
    ("spec.egress", [{"ports": [{"port": "http", "endPort": 90}]}], "spec.egress[0].ports[0].endPort"),
    ("spec.egress", [{"ports": [{"endPort": 90}]}], "spec.egress[0].ports[0].endPort"),
    ("spec.egress", [{"ports": [{"port": 90, "endPort": 80}]}], "spec.egress[0].ports[0].endPort"),
    ("spec.egress", [{"ports": [{"protocol": "ICMP"}]}], "spec.egress[0].ports[0].protocol"),
    ("spec.egress", [{"to": "everyone"}], "spec.egress[0].to"),
    ("spec.policyTypes", ["Ingress", "Sideways"], "spec.policyTypes[1]"),
    ("spec.policyTypes", ["Ingress", "Egress", "Ingress"], "spec.policyTypes"),
    ("spec.ingress", [{"from": [{"podSelector": None}]}], "spec.ingress[0].from[0]"),
    ("spec.ingres", [{}], "spec.ingres"),
    ("metadata.name", "Not_Valid", "metadata.name"),
    ("metadata.namespace", "UPPER", "metadata.namespace"),
)


_POD_DEFECTS: tuple[tuple[str, Any, str], ...] = (
    ("metadata.name", "Bad_Name", "metadata.name"),
    ("metadata.labels", {"app": "-x-"}, "metadata.labels.app"),
    ("metadata.labels", {"enabled": True}, "metadata.labels.enabled"),
    ("spec.containers", [{"name": "c", "ports": [{"containerPort": 0}]}],
     "spec.containers[0].ports[0].containerPort"),
    ("spec.containers", [{"name": "c", "ports": [{"containerPort": 80, "name": "much-too-long-name"}]}],
     "spec.containers[0].ports[0].name"),
    ("spec.containers", [{"name": "c", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}],
     "spec.containers[0].ports[0].protocol"),
    ("spec.containers", [{"name": "c", "ports": [{"containerPort": 80, "name": "a"},
                                                 {"containerPort": 81, "name": "a"}]}],
     "spec.containers[0].ports[1].name"),
    ("spec.hostNetwork", "yes", "spec.hostNetwork"),
    ("status", {"podIP": "10.0.0.256"}, "status.podIP"),
    ("status", {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}, "status.podIPs"),
    ("status", {"phase": "Sleeping"}, "status.phase"),
)
_NAMESPACE_DEFECTS: tuple[tuple[str, Any, str], ...] = (
    ("metadata.name", "Shop", "metadata.name"),
    ("metadata.labels", {"a/b/c": "x"}, "metadata.labels.a/b/c"),
)
_NODE_DEFECTS: tuple[tuple[str, Any, str], ...] = (
    ("status.addresses", [{"type": "InternalIP", "address": "nope"}], "status.addresses[0].address"),
    ("spec.podCIDRs", ["10.0.0.0/33"], "spec.podCIDRs[0]"),
    ("metadata.name", "-node", "metadata.name"),
)


def _cluster_rules(direction: str, **rule: Any) -> list[dict[str, Any]]:
    """One rule of `direction`: `rule`'s fields over a Deny of every namespace's pods."""
    peers = "from" if direction == "ingress" else "to"
    return [{"action": "Deny", peers: [{"namespaces": {}}], **rule}]


def _egress_protocols(*entries: Any, **rule: Any) -> list[dict[str, Any]]:
    return _cluster_rules("egress", protocols=list(entries), **rule)


_PORT, _NETS, _FROM = "spec.egress[0].protocols[0]", "spec.egress[0].to[0].networks", "spec.ingress[0].from"
# (a defect to plant, the field path the error must name) for invalid_cluster_policy_manifests()
_CLUSTER_POLICY_DEFECTS: tuple[tuple[str, Any, str], ...] = (
    ("metadata.name", "Bad_Name", "metadata.name"),
    ("spec.tier", "Admn", "spec.tier"),
    ("spec.tier", None, "spec.tier"),
    ("spec.priority", 1001, "spec.priority"),
    ("spec.priority", -1, "spec.priority"),
    ("spec.priority", "10", "spec.priority"),
    ("spec.subject", {}, "spec.subject"),
    ("spec.subject", {"namespaces": {}, "pods": {"podSelector": {}}}, "spec.subject"),
    ("spec.subject", {"pods": {"namespaceSelector": {}}}, "spec.subject.pods.podSelector"),
    ("spec.subject", {"namespaces": {"matchExpressions": [{"key": "a", "operator": "Like", "values": []}]}},
     "spec.subject.namespaces.matchExpressions[0].operator"),
    ("spec.subject", {"namespaces": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
     "spec.subject.namespaces.matchExpressions[0].values"),
    ("spec.subject", {"pods": {"podSelector": {"matchLabels": {"app": "-x-"}}}},
     "spec.subject.pods.podSelector.matchLabels.app"),
    ("spec.ingres", [], "spec.ingres"),
    ("spec.ingress", _cluster_rules("ingress", action="Allow"), "spec.ingress[0].action"),
    ("spec.ingress", [{"action": "Deny"}], _FROM),
    ("spec.ingress", _cluster_rules("ingress", **{"from": []}), _FROM),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [{}]}), f"{_FROM}[0]"),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [None]}), f"{_FROM}[0]"),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [{"namespaces": None}]}), f"{_FROM}[0]"),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [{"networks": ["10.0.0.0/8"]}]}),
     f"{_FROM}[0].networks"),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [{"namespaces": {}, "pods": {"podSelector": {}}}]}),
     f"{_FROM}[0]"),
    ("spec.ingress", _cluster_rules("ingress") * 26, "spec.ingress"),
    ("spec.ingress", _cluster_rules("ingress", **{"from": [{"namespaces": {}}] * 26}), _FROM),
    ("spec.ingress", _cluster_rules("ingress", name="x" * 101), "spec.ingress[0].name"),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": ["10.0.0.1/24"]}]), f"{_NETS}[0]"),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": ["fd00::1/64"]}]), f"{_NETS}[0]"),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": ["10.0.0.0/33"]}]), f"{_NETS}[0]"),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": []}]), _NETS),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": [f"10.{i}.0.0/16" for i in range(26)]}]),
     _NETS),
    ("spec.egress", _cluster_rules("egress", to=[{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}]), f"{_NETS}[1]"),
    ("spec.egress", _cluster_rules("egress", to=[{"domainNames": ["example.com"]}]),
     "spec.egress[0].to[0].domainNames"),
    ("spec.egress", _cluster_rules("egress", to=[{"nodes": {"matchLabels": {"bad key!": "a"}}}]),
     "spec.egress[0].to[0].nodes.matchLabels.bad key!"),
    ("spec.egress", _egress_protocols({"destinationNamedPort": "http"}, to=[{"networks": ["10.0.0.0/8"]}]),
     _PORT),
    ("spec.egress", _egress_protocols({"destinationNamedPort": "http"},
                                      to=[{"pods": {"podSelector": {}}}, {"nodes": {}}]), _PORT),
    ("spec.egress", _egress_protocols(), "spec.egress[0].protocols"),
    ("spec.egress", _egress_protocols({"tcp": {}}), f"{_PORT}.tcp.destinationPort"),
    ("spec.egress", _egress_protocols({"tcp": {"destinationPort": {}}}), f"{_PORT}.tcp.destinationPort"),
    ("spec.egress", _egress_protocols({"tcp": {"destinationPort": {"number": 0}}}),
     f"{_PORT}.tcp.destinationPort.number"),
    ("spec.egress", _egress_protocols({"udp": {"destinationPort": {"number": 80, "range": {"start": 1,
                                                                                           "end": 2}}}}),
     f"{_PORT}.udp.destinationPort"),
    ("spec.egress", _egress_protocols({"udp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}),
     f"{_PORT}.udp.destinationPort.range"),
    ("spec.egress", _egress_protocols({"sctp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}),
     f"{_PORT}.sctp.destinationPort.range"),
    ("spec.egress", _egress_protocols({"sctp": {"destinationPort": {"range": {"start": 80}}}}),
     f"{_PORT}.sctp.destinationPort.range.end"),
    ("spec.egress", _egress_protocols({"tcp": {"destinationPort": {"number": 80}},
                                       "udp": {"destinationPort": {"number": 80}}}), _PORT),
    ("spec.egress", _egress_protocols({"icmp": {}}), f"{_PORT}.icmp"),
    ("spec.egress", _egress_protocols({"destinationNamedPort": "Not_A_Name"}),
     f"{_PORT}.destinationNamedPort"),
)


def _plant(manifest: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    *parents, key = field.split(".")
    target = manifest
    for part in parents:
        target = target.setdefault(part, {})
    target[key] = value
    return manifest


@st.composite
def invalid_policy_manifests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid policy with one defect planted, and the field path an error must name."""
    field, value, expected_path = draw(st.sampled_from(_POLICY_DEFECTS))
    return _plant(draw(policy_manifests()), field, value), expected_path


@st.composite
def invalid_cluster_policy_manifests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid ClusterNetworkPolicy with one defect planted (the CRD's schema and CEL rules, the
    selectors' rules, `domainNames`, which netpol refuses), and the field path an error must name."""
    field, value, expected_path = draw(st.sampled_from(_CLUSTER_POLICY_DEFECTS))
    return _plant(draw(cluster_policy_manifests()), field, value), expected_path


@st.composite
def invalid_manifests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid NetworkPolicy, ClusterNetworkPolicy, Pod, Namespace or Node with one defect
    planted, and the field path an error must name."""
    kind = draw(st.sampled_from(("NetworkPolicy", "ClusterNetworkPolicy", "Pod", "Namespace", "Node")))
    if kind == "NetworkPolicy":
        return draw(invalid_policy_manifests())
    if kind == "ClusterNetworkPolicy":
        return draw(invalid_cluster_policy_manifests())
    if kind == "Pod":
        base, defects = encode_pod(draw(pods())), _POD_DEFECTS
    elif kind == "Namespace":
        base, defects = encode_namespace(draw(namespaces())), _NAMESPACE_DEFECTS
    else:
        base, defects = encode_node(draw(nodes())[0]), _NODE_DEFECTS
    field, value, expected_path = draw(st.sampled_from(defects))
    return _plant(base, field, value), expected_path
