"""Probes: the (port, protocol) pairs a reachability map asks about.

Without explicit probes we ask about every port a policy (a NetworkPolicy or a cluster policy)
or a container port names. A range (`endPort`, a cluster policy's `range`) is cut into
elementary intervals at every other named port, and each interval is probed once, by its first
port: every port of an interval is treated alike by every rule.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass

from netpol.errors import UsageError
from netpol.intervals import merge_intervals
from netpol.model import PROTOCOLS, ClusterState, DestinationPorts

PORTLESS_PROTOCOLS = ("ICMP", "ICMPv6")
_PROBE = re.compile(r"([0-9]+)|(?:([0-9]+)/)?([A-Za-z][A-Za-z0-9]*)")  # whole text only: fullmatch
FALLBACK_PORT = 80


@dataclass(frozen=True, order=True)
class Probe:
    """`port`/`protocol`, standing for every port up to `last` (None for ICMP and others)."""

    protocol: str
    port: int | None
    last: int | None = None

    def __post_init__(self) -> None:
        if self.last is None and self.port is not None:
            object.__setattr__(self, "last", self.port)

    def __str__(self) -> str:
        if self.port is None:
            return self.protocol
        return f"{self.port}/{self.protocol}"

    @property
    def span(self) -> str:
        """The ports this probe stands for, e.g. `7000-7010/TCP`."""
        if self.port is None:
            return self.protocol
        if self.last != self.port:
            return f"{self.port}-{self.last}/{self.protocol}"
        return str(self)


def parse_probe(text: str) -> Probe:
    """`80/TCP`, `80` (TCP), `53/udp`, `ICMP`; raises UsageError otherwise."""
    match = _PROBE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"--port {text!r}: expected PORT/PROTOCOL, e.g. 80/TCP or 53/UDP")
    port: int | None
    if match.group(1):
        port, protocol = int(match.group(1)), "TCP"
    else:
        port = int(match.group(2)) if match.group(2) else None
        protocol = match.group(3).upper()
        if protocol == "ICMPV6":
            protocol = "ICMPv6"
    if protocol in PORTLESS_PROTOCOLS:
        if port is not None:
            raise UsageError(f"--port {text!r}: {protocol} has no ports")
        return Probe(protocol, None)
    if protocol not in PROTOCOLS:
        raise UsageError(f"--port {text!r}: protocol must be TCP, UDP, SCTP or ICMP")
    if port is None or not 1 <= port <= 65535:
        raise UsageError(f"--port {text!r}: port must be between 1 and 65535")
    return Probe(protocol, port)


def named_ranges(state: ClusterState) -> dict[str, list[tuple[int, int]]]:
    """Per protocol, the port ranges policies (cluster policies too) and container ports name."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for pod in state.pods:
        for cp in pod.ports:
            ranges.setdefault(cp.protocol, []).append((cp.port, cp.port))
    for policy in state.policies:
        for rule in (*policy.ingress, *policy.egress):
            for entry in rule.ports:
                if isinstance(entry.port, int):
                    ranges.setdefault(entry.protocol, []).append((entry.port, entry.end_port or entry.port))
    for cluster_policy in state.cluster_policies:
        for cluster_rule in (*cluster_policy.ingress, *cluster_policy.egress):
            for port in cluster_rule.protocols:
                if isinstance(port, DestinationPorts):
                    ranges.setdefault(port.protocol, []).append((port.first, port.last))
    return ranges


def default_probes(state: ClusterState) -> tuple[Probe, ...]:
    """One probe per elementary interval of the named ports, per protocol; 80/TCP if none."""
    probes: list[Probe] = []
    for protocol, ranges in sorted(named_ranges(state).items()):
        cuts = sorted({a for a, _ in ranges} | {b + 1 for _, b in ranges})
        union = merge_intervals(ranges)
        starts = [a for a, _ in union]
        for start, stop in itertools.pairwise(cuts):
            i = bisect.bisect_right(starts, start) - 1
            if i >= 0 and start <= union[i][1]:
                probes.append(Probe(protocol, start, stop - 1))
    return tuple(sorted(probes)) or (Probe("TCP", FALLBACK_PORT),)
