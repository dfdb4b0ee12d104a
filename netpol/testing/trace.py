"""Tracing a packet through compiled node programs: the data plane's decision, computed from
the IR alone, for fast differential tests against `netpol.semantics.reference`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netpol.compile.ir import Allow, DirectionProgram, NodeProgram, PeerSet, PodProgram, PortSet, TierRule
from netpol.model import Direction, IPAddress


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection (replies ride on conntrack)."""

    src: IPAddress
    dst: IPAddress
    protocol: str
    port: int | None


@dataclass(frozen=True)
class Trace:
    allowed: bool
    steps: tuple[str, ...]


def _matches(allow: Allow, direction: Direction, packet: Packet,
             sets: Mapping[str, PeerSet | PortSet]) -> bool:
    """An allow (or a tier rule's match): peer and port, or the named-port set."""
    peer = packet.src if direction == "ingress" else packet.dst
    if allow.named is not None and packet.port is not None:
        named = sets[allow.named.name]
        if isinstance(named, PortSet) and (packet.dst, packet.protocol, packet.port) in named.elements:
            return True
    if allow.peers is not None and not any(_holds(sets[ref.name], peer) for ref in allow.peers):
        return False
    return allow.ports is None or any(m.matches(packet.protocol, packet.port) for m in allow.ports)


def _tier(rules: tuple[TierRule, ...], direction: Direction, packet: Packet,
          sets: Mapping[str, PeerSet | PortSet]) -> TierRule | None:
    """The first rule of a tier that matches (it decides, or passes)."""
    return next((r for r in rules if _matches(r.match, direction, packet, sets)), None)


def _side_allows(program: DirectionProgram, direction: Direction, packet: Packet,
                 sets: Mapping[str, PeerSet | PortSet], own_node: bool = False) -> str | None:
    """Why the side allows the packet (the origin of the allow or tier rule that did, 'not
    isolated', …), or None (dropped). `own_node`: the packet is between the pod and its own
    node, exempt in the NetworkPolicy tier only."""
    admin = _tier(program.admin, direction, packet, sets)
    if admin is not None and admin.action != "Pass":
        return admin.match.origin if admin.action == "Accept" else None
    if program.isolated:
        if own_node:
            return "its own node: exempt in the NetworkPolicy tier"
        return next((a.origin for a in program.allows if _matches(a, direction, packet, sets)), None)
    baseline = _tier(program.baseline, direction, packet, sets)
    if baseline is not None:
        return baseline.match.origin if baseline.action != "Deny" else None
    return "not isolated" if not program.tiered else "no tier decided: default allow"


def _holds(peer_set: PeerSet | PortSet, ip: IPAddress) -> bool:
    return isinstance(peer_set, PeerSet) and peer_set.contains(ip)


def _local(programs: Mapping[str, NodeProgram],
           ip: IPAddress) -> tuple[NodeProgram, tuple[PodProgram, ...]] | None:
    """The node programming the address, and its pods claiming it (more than one only when
    pods share an address: then all of them must allow, NodeProgram's shared addresses)."""
    for node in programs.values():
        claimants = node.by_address.get(ip)
        if claimants:
            return node, claimants
    return None


def _unprogrammed(node: NodeProgram, ip: IPAddress) -> bool:
    """The node's leak-window guard: an address in its podCIDRs that none of its pods holds."""
    return any(ip in cidr for cidr in node.pod_cidrs if cidr.version == ip.version) and not any(
        ip in pod.ips for pod in node.pods)


def trace(programs: Mapping[str, NodeProgram], packet: Packet) -> Trace:
    """Egress on the source pod's node, then ingress on the destination pod's node."""
    src, dst = _local(programs, packet.src), _local(programs, packet.dst)
    if src and dst and {p.pod for p in src[1]} & {p.pod for p in dst[1]}:
        return Trace(True, ("a pod talking to itself never leaves its namespace",))
    steps = []
    hops: tuple[tuple[Direction, tuple[NodeProgram, tuple[PodProgram, ...]] | None, IPAddress], ...] = (
        ("egress", src, packet.dst), ("ingress", dst, packet.src))
    path = [end[0] for end in (src, dst) if end is not None]  # the nodes whose forward hook it crosses
    for node in path:
        for ip, way in ((packet.src, "from"), (packet.dst, "to")):
            if _unprogrammed(node, ip):
                steps.append(f"{node.node}: {way} {ip}, in its podCIDRs but not a pod it programmed: dropped")
                return Trace(False, tuple(steps))
    for direction, end, other_ip in hops:
        if end is None:
            steps.append(f"{direction}: not a local pod on any node")
            continue
        node, claimants = end
        own_node = other_ip in node.node_addresses
        if own_node and not any(pod.side(direction).tiered for pod in claimants):
            steps.append(f"{direction}: {claimants[0].pod} and its own node {node.node}: accepted")
            continue
        for pod in claimants:  # every claimant of the address must allow it
            verdict = _side_allows(pod.side(direction), direction, packet, node.sets, own_node)
            steps.append(f"{direction} of {pod.pod} on {node.node}: {verdict or 'dropped'}")
            if verdict is None:
                return Trace(False, tuple(steps))
    return Trace(True, tuple(steps))
