"""The typed, immutable cluster model: Namespace, Pod, Node, NetworkPolicy and ClusterState.

Objects are built by `netpol.load.decode` (which validates) and compared by value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from netpol.labels import Labels, LabelSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Protocol = Literal["TCP", "UDP", "SCTP"]
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
Direction = Literal["ingress", "egress"]
PolicyType = Literal["Ingress", "Egress"]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
INACTIVE_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = Labels()

    def __post_init__(self) -> None:
        # The API server always sets this label (KEP-2161); manifests may omit it.
        if self.labels.get(NAMESPACE_NAME_LABEL) != self.name:
            object.__setattr__(self, "labels", self.labels.with_label(NAMESPACE_NAME_LABEL, self.name))

    @property
    def ref(self) -> str:
        return f"Namespace {self.name}"


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: Protocol = "TCP"
    name: str | None = None
    _hash: int = field(init=False, repr=False, compare=False)  # pods' ports key compiler caches

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.port, self.protocol, self.name)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = Labels()
    ips: tuple[IPAddress, ...] = ()
    node_name: str | None = None
    host_network: bool = False
    phase: str = "Running"
    ports: tuple[ContainerPort, ...] = ()
    # `namespace/name`: a plain attribute, read in every hot loop (not part of equality)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    @property
    def ref(self) -> str:
        return f"Pod {self.key}"

    @property
    def takes_part(self) -> bool:
        """Subject to and selectable by policies (DESIGN §2: hostNetwork, no IP, finished: no)."""
        return not self.host_network and bool(self.ips) and self.phase not in INACTIVE_PHASES

    @cached_property
    def address_values(self) -> tuple[tuple[int, int], ...]:
        """(version, integer) of each of `ips`: what sets are made of, computed once."""
        return tuple((ip.version, int(ip)) for ip in self.ips)

    def ip_of_family(self, version: int) -> IPAddress | None:
        return next((ip for ip in self.ips if ip.version == version), None)

    def resolve_port(self, name: str, protocol: str) -> int | None:
        """The number a named port means on this pod for `protocol`, if any."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True)
class Node:
    name: str
    labels: Labels = Labels()
    addresses: tuple[IPAddress, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()

    @property
    def ref(self) -> str:
        return f"Node {self.name}"


@dataclass(frozen=True)
class IPBlock:
    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        return ip in self.cidr and not any(ip in e for e in self.except_)


@dataclass(frozen=True)
class Peer:
    """One `from`/`to` entry. Exactly as written: absent selectors stay None."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: Protocol = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One `ingress[i]`/`egress[i]` entry; empty `peers`/`ports` mean all."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = LabelSelector()
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    # Effective policy types, defaults applied (DESIGN §2): Ingress, plus Egress iff egress rules.
    policy_types: tuple[PolicyType, ...] = ("Ingress",)
    key: str = field(init=False, repr=False, compare=False)  # `namespace/name`, as for Pod

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    @property
    def ref(self) -> str:
        return f"NetworkPolicy {self.key}"

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def isolates(self, direction: Direction) -> bool:
        return ("Ingress" if direction == "ingress" else "Egress") in self.policy_types


def default_policy_types(has_egress_rules: bool) -> tuple[PolicyType, ...]:
    return ("Ingress", "Egress") if has_egress_rules else ("Ingress",)


@dataclass(frozen=True)
class ClusterState:
    """Everything the semantics need, sorted by name so equal inputs give equal states."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    _namespace_index: dict[str, Namespace] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", tuple(sorted(self.namespaces, key=lambda n: n.name)))
        object.__setattr__(self, "pods", tuple(sorted(self.pods, key=lambda p: (p.namespace, p.name))))
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=lambda n: n.name)))
        object.__setattr__(
            self, "policies", tuple(sorted(self.policies, key=lambda p: (p.namespace, p.name)))
        )
        self._namespace_index.update((n.name, n) for n in self.namespaces)

    @classmethod
    def build(
        cls,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        nodes: Iterable[Node] = (),
        policies: Iterable[NetworkPolicy] = (),
    ) -> ClusterState:
        """A state in which every namespace a pod or policy lives in exists."""
        by_name: dict[str, Namespace] = {n.name: n for n in namespaces}
        pods, policies = tuple(pods), tuple(policies)
        for ns in {p.namespace for p in pods} | {p.namespace for p in policies}:
            by_name.setdefault(ns, Namespace(ns))
        return cls(tuple(by_name.values()), pods, tuple(nodes), policies)

    def namespace(self, name: str) -> Namespace:
        return self._namespace_index.get(name) or Namespace(name)

    @property
    def active_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.takes_part)

    def pod(self, key: str) -> Pod | None:
        ns, _, name = key.partition("/")
        return next((p for p in self.pods if p.namespace == ns and p.name == name), None)

    @cached_property
    def node_addresses(self) -> Mapping[str, frozenset[IPAddress]]:
        """Each node's own addresses: its status addresses and its hostNetwork pods' IPs."""
        found: dict[str, set[IPAddress]] = {n.name: set(n.addresses) for n in self.nodes}
        for p in self.pods:
            if p.host_network and p.node_name:
                found.setdefault(p.node_name, set()).update(p.ips)
        return {name: frozenset(ips) for name, ips in found.items()}
