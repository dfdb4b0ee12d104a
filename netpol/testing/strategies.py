"""Hypothesis strategies for valid (and invalid) namespaces, pods, nodes, policies and clusters.

Policies are generated as manifests (dicts) first, so every spelling the API allows appears:
`policyTypes` present or absent, `ingress: []` vs absent vs `[{}]`, each peer kind, ipBlock with
except, numeric and named ports, endPort, all three protocols. `policies()` decodes those.
Label keys, values and port names come from small pools so that selectors actually select.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import strategies as st

from netpol.labels import OPERATORS, Labels
from netpol.load.decode import Reader, decode_network_policy
from netpol.load.encode import encode_namespace, encode_node, encode_pod
from netpol.model import (
    PROTOCOLS,
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


def decode_policy_manifest(manifest: dict[str, Any]) -> NetworkPolicy:
    reader = Reader("<generated>", "NetworkPolicy")
    policy = decode_network_policy(reader, manifest)
    if reader.problems:  # a bug in the strategy, not in the code under test
        raise AssertionError("\n".join(map(str, reader.problems)))
    return policy


def policies(namespace_names: tuple[str, ...] = NAMESPACE_NAMES, name: str | None = None
             ) -> st.SearchStrategy[NetworkPolicy]:
    return policy_manifests(namespace_names, name).map(decode_policy_manifest)


@st.composite
def clusters(draw: st.DrawFn, max_pods: int = 8, max_policies: int = 4,
             namespace_names: tuple[str, ...] = NAMESPACE_NAMES) -> ClusterState:
    """A whole, valid cluster: namespaces, two nodes, pods with unique addresses, policies."""
    ns = draw(st.lists(namespaces(namespace_names), min_size=1, max_size=len(namespace_names),
                       unique_by=lambda n: n.name))
    names = tuple(n.name for n in ns)
    slots = draw(st.lists(st.integers(0, ADDRESS_SLOTS - 1), max_size=max_pods, unique=True))
    pod_list = [draw(pods(names, f"pod-{i}", slot)) for i, slot in enumerate(slots)]
    policy_list = [draw(policies(names, f"policy-{i}")) for i in range(draw(st.integers(0, max_policies)))]
    return ClusterState.build(ns, pod_list, draw(nodes()), policy_list)


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
def invalid_manifests(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid NetworkPolicy, Pod, Namespace or Node with one defect planted, and the field path
    an error must name."""
    kind = draw(st.sampled_from(("NetworkPolicy", "Pod", "Namespace", "Node")))
    if kind == "NetworkPolicy":
        return draw(invalid_policy_manifests())
    if kind == "Pod":
        base, defects = encode_pod(draw(pods())), _POD_DEFECTS
    elif kind == "Namespace":
        base, defects = encode_namespace(draw(namespaces())), _NAMESPACE_DEFECTS
    else:
        base, defects = encode_node(draw(nodes())[0]), _NODE_DEFECTS
    field, value, expected_path = draw(st.sampled_from(defects))
    return _plant(base, field, value), expected_path
