"""The typed, immutable cluster model: Namespace, Pod, Node, NetworkPolicy,
ClusterNetworkPolicy and ClusterState.

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
Tier = Literal["Admin", "Baseline"]
TIERS: tuple[Tier, ...] = ("Admin", "Baseline")  # evaluated in this order, NetworkPolicy between them
Action = Literal["Accept", "Deny", "Pass"]
ACTIONS: tuple[Action, ...] = ("Accept", "Deny", "Pass")
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

    def declares_port(self, name: str, port: int | None, protocol: str) -> bool:
        """A container port of this pod has this name, number and protocol (a
        ClusterNetworkPolicy's `destinationNamedPort`: name, number and protocol all count)."""
        return any(p.name == name and p.port == port and p.protocol == protocol for p in self.ports)


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


# -- ClusterNetworkPolicy (policy.networking.k8s.io v1beta1; v1alpha2 identical) ------------------


@dataclass(frozen=True)
class NamespacedPods:
    """`pods: {namespaceSelector, podSelector}` of a subject or peer: pods matching `pod_selector`
    in namespaces matching `namespace_selector` (absent or `{}`: every namespace)."""

    namespace_selector: LabelSelector = LabelSelector()
    pod_selector: LabelSelector = LabelSelector()


@dataclass(frozen=True)
class ClusterSubject:
    """`spec.subject`: exactly one of `namespaces` (every pod of the matching namespaces) and
    `pods`. hostNetwork pods are never subjects."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None


@dataclass(frozen=True)
class ClusterPeer:
    """One `from`/`to` entry: exactly one field is set. `networks` (egress) matches any address
    in the CIDRs, pod IPs too; `nodes` (egress, experimental) matches the `status.addresses` of
    the matching Nodes. A peer with no field set is one whose field we do not recognise: it
    fails closed (`ClusterRule.fails_closed`); decoding refuses such a peer, so only code that
    builds the model itself can make one."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None
    networks: tuple[IPNetwork, ...] = ()
    nodes: LabelSelector | None = None

    @property
    def recognised(self) -> bool:
        return (self.namespaces is not None or self.pods is not None or bool(self.networks)
                or self.nodes is not None)


@dataclass(frozen=True)
class DestinationPorts:
    """A `protocols` entry `tcp|udp|sctp: {destinationPort: …}`: ports `first`..`last` of
    `protocol` (inclusive; `first == last` for `number`, `first < last` for `range`)."""

    protocol: Protocol
    first: int
    last: int


@dataclass(frozen=True)
class DestinationNamedPort:
    """A `protocols` entry `destinationNamedPort` (experimental): the destination pod's container
    port of that name, by its number *and* its protocol."""

    name: str


ClusterProtocol = DestinationPorts | DestinationNamedPort


@dataclass(frozen=True)
class ClusterRule:
    """One `ingress[i]`/`egress[i]` entry; empty `protocols` means all traffic, ICMP too."""

    action: Action
    peers: tuple[ClusterPeer, ...]
    protocols: tuple[ClusterProtocol, ...] = ()
    name: str = ""

    @property
    def fails_closed(self) -> bool:
        """A peer with no field we recognise, in a Deny or Pass rule: the whole rule denies all
        (upstream's "fail closed": an Accept rule treats such a peer as matching nothing, a
        Deny or Pass rule becomes 'Deny all')."""
        return self.action != "Accept" and any(not p.recognised for p in self.peers)


CLUSTER_POLICY_KINDS = ("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy")


@dataclass(frozen=True)
class ClusterNetworkPolicy:
    """A cluster-scoped policy of the Admin or Baseline tier. `kind` is the kind it was read as:
    a v1alpha1 AdminNetworkPolicy or BaselineAdminNetworkPolicy is converted into this model
    (`netpol.load.decode`), and keeps its name as such.

    Evaluation order within a tier (`order_key`): ascending `priority`, then `name`, then `kind`.
    The API leaves the order of equal priorities undefined; netpol fixes it by name, as
    kube-network-policies does, and `netpol validate` warns about every such tie."""

    name: str
    tier: Tier
    priority: int
    subject: ClusterSubject
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()
    kind: str = "ClusterNetworkPolicy"

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def key(self) -> str:
        """What the compiler and the agent know it by: its ref (an AdminNetworkPolicy and a
        ClusterNetworkPolicy may share a name; a NetworkPolicy's `ns/name` has no space)."""
        return self.ref

    @property
    def order_key(self) -> tuple[int, int, str, str]:
        """Where it is evaluated: its tier, then priority, then name (then kind)."""
        return TIERS.index(self.tier), self.priority, self.name, self.kind

    def rules(self, direction: Direction) -> tuple[ClusterRule, ...]:
        return self.ingress if direction == "ingress" else self.egress


@dataclass(frozen=True)
class ClusterState:
    """Everything the semantics need, sorted by name so equal inputs give equal states; cluster
    policies in their order of evaluation (`ClusterNetworkPolicy.order_key`)."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    cluster_policies: tuple[ClusterNetworkPolicy, ...] = ()
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
        object.__setattr__(self, "cluster_policies",
                           tuple(sorted(self.cluster_policies, key=lambda p: p.order_key)))
        self._namespace_index.update((n.name, n) for n in self.namespaces)

    @classmethod
    def build(
        cls,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        nodes: Iterable[Node] = (),
        policies: Iterable[NetworkPolicy] = (),
        cluster_policies: Iterable[ClusterNetworkPolicy] = (),
    ) -> ClusterState:
        """A state in which every namespace a pod or policy lives in exists."""
        by_name: dict[str, Namespace] = {n.name: n for n in namespaces}
        pods, policies = tuple(pods), tuple(policies)
        for ns in {p.namespace for p in pods} | {p.namespace for p in policies}:
            by_name.setdefault(ns, Namespace(ns))
        return cls(tuple(by_name.values()), pods, tuple(nodes), policies, tuple(cluster_policies))

    def tier_policies(self, tier: Tier) -> tuple[ClusterNetworkPolicy, ...]:
        """The cluster policies of `tier`, in their order of evaluation."""
        return tuple(p for p in self.cluster_policies if p.tier == tier)

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
