"""The IR: the backend-neutral per-node program, the only contract between the compiler
(`netpol.compile.compiler`) and the backends. For every pod on a node, its ingress and egress
decisions over named, deduplicated address sets and resolved ports; frozen dataclasses, no
behaviour beyond reading them.

Sets are named by what a rule *spells*, never by who matches it today, so that a pod joining or
leaving a peer group changes a set's elements and nothing else (the agent then updates elements
instead of replacing chains, and a 10k-pod cluster's event touches bytes, not megabytes):

- `pods-HASH`: the addresses of the pods a rule's selector peers admit (one element per address;
  an address several active pods have, only if the peers admit every one of them: fail closed);
- `cidrs-HASH`: a rule's ipBlocks, `cidr` minus its `except`s subtracted per peer (PITFALLS 1),
  never as a chain-level return; fixed by the spelling alone;
- `named-HASH`: for egress to a named port, (destination address, protocol, port) of every
  admitted destination pod, each with its own number (PITFALLS 2); named by the rule's peers
  and port names as spelled, whichever policy spells them, so that 100 policies repeating a
  rule share one set (they had 100 identical sets: 1.01M elements, 31 MB at 10k pods).
  Ingress named ports are resolved against the local pod into plain numbers.

- `nodes-HASH`: the `status.addresses` of the Nodes a ClusterNetworkPolicy `nodes` peer's
  selectors match (elements change with Node objects).

ClusterNetworkPolicies (DESIGN §2b) add two ordered tiers to a side (`DirectionProgram.admin`,
`.baseline`): `TierRule`s, the rules of the cluster policies selecting the pod in evaluation
order, each an Allow-shaped match and an action. A side is evaluated Admin → NetworkPolicy →
Baseline → allow; see `DirectionProgram`.

Rules reference a set only for the address families it holds now (`SetRef.families`); a family
appearing or vanishing is a change of structure, anything else is a change of elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from netpol.intervals import Interval
from netpol.model import Action, Direction, IPAddress, IPNetwork, Tier

NamedElement = tuple[IPAddress, str, int]  # destination address, protocol, port
PORT_SET_PREFIX = "named-"  # port sets' names; peer sets are pods-… and cidrs-…


@dataclass(frozen=True)
class PeerSet:
    """Addresses a spelling of peers admits now, per family, as sorted intervals. `ranges`: an
    ipBlock interval set; otherwise single pod addresses."""

    name: str
    v4: tuple[Interval, ...]
    v6: tuple[Interval, ...]
    ranges: bool
    describes: str

    def __hash__(self) -> int:  # the name stands for the spelling: hash it, not the intervals
        return hash(self.name)

    @cached_property
    def families(self) -> tuple[int, ...]:
        return tuple(v for v, held in ((4, self.v4), (6, self.v6)) if held)

    def contains(self, ip: IPAddress) -> bool:
        value = int(ip)
        return any(a <= value <= b for a, b in (self.v4 if ip.version == 4 else self.v6))

    @cached_property
    def ref(self) -> SetRef:
        return SetRef(self.name, self.families)


@dataclass(frozen=True)
class PortSet:
    """Destinations of egress rules' named ports: (address, protocol, port) per admitted pod,
    for every rule spelling those peers and port names (`describes` says which)."""

    name: str
    elements: frozenset[NamedElement]
    describes: str

    def __hash__(self) -> int:
        return hash(self.name)

    @classmethod
    def with_families(cls, name: str, elements: frozenset[NamedElement], describes: str,
                      families: tuple[int, ...]) -> PortSet:
        """A PortSet whose families the caller has worked out (a cluster-wide named port has a
        destination per pod: recounting them on every pod event was most of the event)."""
        made = cls(name, elements, describes)
        made.__dict__["families"] = families  # what the cached_property would have computed
        return made

    @cached_property
    def families(self) -> tuple[int, ...]:
        return tuple(sorted({e[0].version for e in self.elements}))

    @cached_property
    def ref(self) -> SetRef:
        return SetRef(self.name, self.families)


POD_SET_PREFIX = "pods-"  # a set of pods' addresses (never a node's): `pods-DIGEST`


@dataclass(frozen=True)
class SetRef:
    """A rule's reference to a set, and the families it holds (rules exist for those only)."""

    name: str
    families: tuple[int, ...]


@dataclass(frozen=True)
class PortMatch:
    """A protocol and a port range; `first is None` means every port of the protocol."""

    protocol: str
    first: int | None = None
    last: int | None = None

    def matches(self, protocol: str, port: int | None) -> bool:
        if protocol != self.protocol:
            return False
        if self.first is None:
            return True
        return port is not None and self.first <= port <= (self.last or self.first)


@dataclass(frozen=True)
class Allow:
    """One rule of one policy, applied to one pod: a packet matches when its peer is in one of
    `peers` (None: any address) AND its port matches `ports` (None: any protocol and port), OR
    its (destination, protocol, port) is in the `named` set."""

    origin: str
    peers: tuple[SetRef, ...] | None
    ports: tuple[PortMatch, ...] | None
    named: SetRef | None = None
    # Hashed once: allows are cache keys of every rendering step, across all nodes.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.origin, self.peers, self.ports, self.named)))

    def __hash__(self) -> int:
        return self._hash


def ports_by_protocol(allow: Allow) -> dict[str, list[tuple[int, int]] | None]:
    """Per protocol of `allow.ports`: its (first, last) port ranges, each once, in rule order;
    None when the protocol is allowed on every port. Both backends render from this."""
    by_protocol: dict[str, list[tuple[int, int]] | None] = {}
    for m in allow.ports or ():
        if m.first is None:
            by_protocol[m.protocol] = None
        elif (ports := by_protocol.setdefault(m.protocol, [])) is not None:
            value = (m.first, m.last or m.first)
            if value not in ports:
                ports.append(value)
    return by_protocol


@dataclass(frozen=True)
class TierRule:
    """One rule of a ClusterNetworkPolicy, applied to one pod: when `match` matches (peers and
    ports or named-port set, exactly as an Allow's), `action` decides. `Accept` and `Deny` are
    final; `Pass` skips the rest of the tier (Admin: on to the NetworkPolicy tier; Baseline: on
    to the default, allow). A rule that fails closed is a `Deny` matching everything. `policy`:
    the cluster policy's name (chain labels); `match.origin` says tier, policy, priority, rule."""

    tier: Tier
    policy: str
    action: Action
    match: Allow
    # Hashed once: a side's tier rules are a cache key of the backends' printing.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.tier, self.policy, self.action, self.match)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True)
class DirectionProgram:
    """One pod's decision for one direction. Without cluster policies, `isolated_by` (the
    NetworkPolicies isolating the pod that way) and their `allows`: isolated ⇒ allowed iff an
    allow matches. With them, in order: `admin` rules (first match decides, Pass skips the
    tier), then the NetworkPolicy tier (final when isolated), then `baseline` rules, then allow.
    Traffic between the pod and its own node skips the NetworkPolicy tier's rules (allowed if
    isolated there) but not the cluster tiers (`own_node`)."""

    isolated_by: tuple[str, ...] = ()
    allows: tuple[Allow, ...] = ()
    admin: tuple[TierRule, ...] = ()
    baseline: tuple[TierRule, ...] = ()

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)

    @property
    def tiered(self) -> bool:
        """Cluster policies have a say on this side."""
        return bool(self.admin or self.baseline)

    @cached_property
    def node_tiered(self) -> bool:
        """Could a cluster tier rule here match an address of a node (own-node traffic)? A rule
        matching any address, or one with a peer set that is not a pod set (`networks`,
        `nodes`): pod sets never hold a node's address (hostNetwork pods are never peers). A
        side without such a rule lets own-node traffic through (Admin and Baseline rules never
        match it, the NetworkPolicy tier exempts it), so it needs no own-node chain."""
        return any(rule.match.peers is None or any(not ref.name.startswith(POD_SET_PREFIX)
                                                   for ref in rule.match.peers)
                   for rule in (*self.admin, *self.baseline))

    @property
    def enforced(self) -> bool:
        """Something can deny traffic on this side: the backends dispatch it to a chain."""
        return bool(self.isolated_by or self.admin or self.baseline)

    @cached_property  # (the backends name a side's chains by them)
    def cluster_policies(self) -> tuple[str, ...]:
        """Names of the cluster policies with rules here, in evaluation order, each once."""
        return tuple(dict.fromkeys(r.policy for r in (*self.admin, *self.baseline)))


@dataclass(frozen=True)
class PodProgram:
    pod: str
    ips: tuple[IPAddress, ...]
    ingress: DirectionProgram
    egress: DirectionProgram

    def side(self, direction: Direction) -> DirectionProgram:
        return self.ingress if direction == "ingress" else self.egress


@dataclass(frozen=True)
class NodeProgram:
    """`pod_cidrs`: the node's spec.podCIDRs. An address inside them that is not one of `pods`
    is a pod the compiler has not been told about yet (or no pod): its traffic is dropped, so
    a new pod is never reachable, and reaches nothing, before its policies are programmed.

    Shared addresses. The API server may hold two active pods with one address for a while (a
    terminating pod and its replacement; the loader refuses it in manifests, a watch cannot).
    Such an address is every claimant at once, failing closed: the backends send its traffic
    through the side of *each* claimant isolated for that direction, in pod order, and pass it
    only if all of them allow it (a claimant not isolated for the direction allows everything);
    claimants with equal sides count once. `shared_addresses` lists them."""

    node: str
    node_addresses: tuple[IPAddress, ...]
    pods: tuple[PodProgram, ...]
    peer_sets: tuple[PeerSet, ...]
    port_sets: tuple[PortSet, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()

    @cached_property
    def sets(self) -> Mapping[str, PeerSet | PortSet]:
        found: dict[str, PeerSet | PortSet] = {s.name: s for s in self.peer_sets}
        found.update((s.name, s) for s in self.port_sets)
        return found

    @cached_property
    def by_address(self) -> Mapping[IPAddress, tuple[PodProgram, ...]]:
        """Every address of the node's pods, with the pods claiming it, in program order."""
        found: dict[IPAddress, list[PodProgram]] = {}
        for pod in self.pods:
            for ip in pod.ips:
                found.setdefault(ip, []).append(pod)
        return {ip: tuple(claimants) for ip, claimants in found.items()}

    @cached_property
    def shared_addresses(self) -> Mapping[IPAddress, tuple[PodProgram, ...]]:
        """The addresses more than one of the node's pods claim (none in a sound cluster)."""
        return {ip: claimants for ip, claimants in self.by_address.items() if len(claimants) > 1}

    @cached_property
    def pods_memo(self) -> dict[str, Any]:
        """Values a backend works out from `pods` alone (its chain table), kept here so that
        `with_sets` — same pods, newer sets — carries them to the next program."""
        return {}

    @cached_property
    def set_positions(self) -> Mapping[str, int]:
        """Where each set is: peer sets at 0, 1, …; port sets at -1, -2, …"""
        positions = {s.name: i for i, s in enumerate(self.peer_sets)}
        positions.update((s.name, -1 - i) for i, s in enumerate(self.port_sets))
        return positions

    def with_sets(self, newer: Iterable[PeerSet | PortSet]) -> NodeProgram:
        """The same program — same pods, chains, set names — with these sets' newer versions
        (other elements). Sets it does not declare are ignored. Costs what `newer` holds, not
        what the program declares: an event that moves one pod refreshes its peer sets on
        every node, 40 of them at 10k pods, and re-listing 1,356 sets per node took 7 ms of the
        event's 14 ms."""
        positions = self.set_positions
        peer_sets, port_sets = list(self.peer_sets), list(self.port_sets)
        for fresh in newer:
            at = positions.get(fresh.name)
            if at is None:
                continue
            if at >= 0 and isinstance(fresh, PeerSet):
                peer_sets[at] = fresh
            elif at < 0 and isinstance(fresh, PortSet):
                port_sets[-1 - at] = fresh
        made = replace(self, peer_sets=tuple(peer_sets), port_sets=tuple(port_sets))
        made.__dict__["set_positions"] = positions  # same names in the same places
        for same_pods in ("by_address", "shared_addresses", "pods_memo"):  # worked out from `pods` alone
            if same_pods in self.__dict__:
                made.__dict__[same_pods] = self.__dict__[same_pods]
        return made
