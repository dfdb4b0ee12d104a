"""The backend-neutral per-node program (IR): for every pod on a node, its ingress and egress
decisions over named, deduplicated peer sets and resolved ports.

Peer sets hold address intervals per family: pod IPs the rule's selectors admit, and ipBlock
`cidr` minus its `except`s, subtracted per peer (PITFALLS 1), never as a chain-level return.
Named ports are resolved per destination pod (PITFALLS 2): on ingress against the local pod, on
egress into (address, protocol, port) elements of every admitted destination pod.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from netpol.intervals import Interval, merge_intervals
from netpol.model import ClusterState, Direction, IPAddress, IPBlock, NetworkPolicy, Pod, Rule
from netpol.resolver import DIRECTIONS, NodeId, Resolver


@dataclass(frozen=True)
class PeerSet:
    """Addresses a rule admits, per family, as merged intervals; named by content."""

    name: str
    v4: tuple[Interval, ...]
    v6: tuple[Interval, ...]

    def __hash__(self) -> int:  # the name is a digest of the content: hash it, not the intervals
        return hash(self.name)

    def contains(self, ip: IPAddress) -> bool:
        value = int(ip)
        return any(a <= value <= b for a, b in (self.v4 if ip.version == 4 else self.v6))


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


NamedElement = tuple[IPAddress, str, int]  # destination address, protocol, port


@dataclass(frozen=True)
class Allow:
    """One rule of one policy, applied to one pod: peers (None: any address) AND ports
    (None: any protocol and port; else numeric matches OR a named (dst, proto, port) element)."""

    origin: str
    peers: PeerSet | None
    ports: tuple[PortMatch, ...] | None
    named: frozenset[NamedElement] = frozenset()


@dataclass(frozen=True)
class DirectionProgram:
    isolated_by: tuple[str, ...] = ()
    allows: tuple[Allow, ...] = ()

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)


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
    node: str
    node_addresses: tuple[IPAddress, ...]
    pods: tuple[PodProgram, ...]
    peer_sets: tuple[PeerSet, ...]


def block_intervals(block: IPBlock) -> list[Interval]:
    """`cidr` minus every `except`, as intervals."""
    remaining = [block.cidr]
    for hole in block.except_:
        nxt: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for net in remaining:
            if hole.version == net.version and hole.subnet_of(net):  # type: ignore[arg-type]
                nxt += list(net.address_exclude(hole))  # type: ignore[arg-type]
            else:
                nxt.append(net)
        remaining = nxt
    return [(int(n.network_address), int(n.broadcast_address)) for n in remaining]


def _peer_set(intervals4: list[Interval], intervals6: list[Interval]) -> PeerSet:
    v4, v6 = tuple(merge_intervals(intervals4)), tuple(merge_intervals(intervals6))
    digest = hashlib.sha256(repr((v4, v6)).encode()).hexdigest()[:8]
    return PeerSet(f"peers-{digest}", v4, v6)


class _Compiler:
    def __init__(self, state: ClusterState, resolver: Resolver) -> None:
        self.state, self.resolver = state, resolver
        self.sets: dict[str, PeerSet] = {}
        # A rule's peers and named-port elements do not depend on the pod it applies to.
        self._peers: dict[tuple[str, Direction, int], PeerSet | None] = {}
        self._named: dict[tuple[str, int, str, str], frozenset[NamedElement]] = {}
        self._by_composition: dict[tuple[tuple[NodeId, ...], tuple[IPBlock, ...]], PeerSet] = {}
        self._groups: dict[NodeId, dict[int, list[Interval]]] = {}

    def rule_peers(self, policy: NetworkPolicy, direction: Direction, index: int) -> PeerSet | None:
        key = (policy.key, direction, index)
        if key not in self._peers:
            self._peers[key] = self._resolve_peers(policy, direction, index)
        return self._peers[key]

    def _resolve_peers(self, policy: NetworkPolicy, direction: Direction, index: int) -> PeerSet | None:
        rule = policy.rules(direction)[index]
        if not rule.peers:
            return None  # §2: absent/empty from/to = everything, outside addresses included
        groups = self.resolver.rule_peer_groups(policy.key, direction, index)
        blocks = tuple(p.ip_block for p in rule.peers if p.ip_block is not None)
        composition = (groups, blocks)  # rules spelling the same peers share one set
        if composition not in self._by_composition:
            found: dict[int, list[Interval]] = {4: [], 6: []}
            for group in groups:
                for version, intervals in self._group_intervals(group).items():
                    found[version] += intervals
            for block in blocks:  # ipBlocks admit addresses, not pods
                found[block.cidr.version] += block_intervals(block)
            peer_set = _peer_set(found[4], found[6])
            self._by_composition[composition] = self.sets.setdefault(peer_set.name, peer_set)
        return self._by_composition[composition]

    def _group_intervals(self, group: NodeId) -> dict[int, list[Interval]]:
        """The merged addresses of one shared peer group's pods."""
        if group not in self._groups:
            found: dict[int, list[Interval]] = {4: [], 6: []}
            for key in self.resolver.peer_group_pods(group):
                for ip in self.resolver.pods[key].ips:
                    found[ip.version].append((int(ip), int(ip)))
            self._groups[group] = {v: merge_intervals(found[v]) for v in found}
        return self._groups[group]

    def allow(self, policy: NetworkPolicy, direction: Direction, index: int, pod: Pod) -> Allow:
        rule = policy.rules(direction)[index]
        origin = f"NetworkPolicy {policy.key} spec.{direction}[{index}]"
        peers = self.rule_peers(policy, direction, index)
        if not rule.ports:
            return Allow(origin, peers, None)
        numeric: list[PortMatch] = []
        named: set[NamedElement] = set()
        for entry in rule.ports:
            if not isinstance(entry.port, str):
                numeric.append(PortMatch(entry.protocol, entry.port, entry.end_port or entry.port))
            elif direction == "ingress":  # the destination is this pod
                number = pod.resolve_port(entry.port, entry.protocol)
                if number is not None:
                    numeric.append(PortMatch(entry.protocol, number, number))
            else:  # every admitted destination pod, each with its own number
                key = (policy.key, index, entry.port, entry.protocol)
                if key not in self._named:
                    self._named[key] = self._named_elements(policy, index, rule, entry.port, entry.protocol)
                named |= self._named[key]
        return Allow(origin, peers, tuple(numeric), frozenset(named))

    def _named_elements(self, policy: NetworkPolicy, index: int, rule: Rule, name: str,
                        protocol: str) -> frozenset[NamedElement]:
        if rule.peers:
            keys = self.resolver.rule_peers(policy.key, "egress", index)
        else:
            keys = frozenset(k for k, p in self.resolver.pods.items() if p.takes_part)
        elements = set()
        for key in keys:
            dst = self.resolver.pods[key]
            number = dst.resolve_port(name, protocol)
            if number is not None:
                elements |= {(ip, protocol, number) for ip in dst.ips}
        return frozenset(elements)

    def pod_program(self, pod: Pod) -> PodProgram:
        sides = []
        for direction in DIRECTIONS:
            keys = self.resolver.selecting_policies(pod.key, direction)
            policies = [self.resolver.policies[k] for k in keys]
            allows = tuple(self.allow(p, direction, i, pod)
                           for p in policies for i in range(len(p.rules(direction))))
            sides.append(DirectionProgram(tuple(p.key for p in policies), allows))
        return PodProgram(pod.key, pod.ips, sides[0], sides[1])


def _used_peer_sets(programs: tuple[PodProgram, ...]) -> tuple[PeerSet, ...]:
    used = {allow.peers.name: allow.peers for pod in programs for side in (pod.ingress, pod.egress)
            for allow in side.allows if allow.peers is not None}
    return tuple(sorted(used.values(), key=lambda s: s.name))


class NodeCompiler:
    """Compiles nodes of one cluster state, sharing rule peers and pods-by-node across nodes."""

    def __init__(self, state: ClusterState, resolver: Resolver | None = None) -> None:
        self.state = state
        self._compiler = _Compiler(state, resolver or Resolver.from_state(state))
        self._by_node: dict[str, list[Pod]] = {}
        for pod in state.active_pods:
            if pod.node_name:
                self._by_node.setdefault(pod.node_name, []).append(pod)

    def compile(self, node: str) -> NodeProgram:
        """The program of every active pod on `node`."""
        programs = tuple(self._compiler.pod_program(p) for p in self._by_node.get(node, []))
        own = self.state.node_addresses.get(node, frozenset())
        addresses = tuple(sorted(own, key=lambda ip: (ip.version, int(ip))))
        return NodeProgram(node, addresses, programs, _used_peer_sets(programs))


def compile_node(state: ClusterState, node: str, resolver: Resolver | None = None) -> NodeProgram:
    """The program of every active pod on `node`."""
    return NodeCompiler(state, resolver).compile(node)


def node_names(state: ClusterState) -> list[str]:
    """Nodes named by Node objects or by pods' `spec.nodeName`, sorted."""
    return sorted({n.name for n in state.nodes} | {p.node_name for p in state.pods if p.node_name})


def compile_cluster(state: ClusterState) -> dict[str, NodeProgram]:
    """Every node's program."""
    compiler = NodeCompiler(state)
    return {name: compiler.compile(name) for name in node_names(state)}
