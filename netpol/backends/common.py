"""What both backends share, so that neither imports the other: the names of the leak-window
guard's sets, and the text of pod addresses in the order both print them.

The guard (DESIGN §3, README "The nftables ruleset"): for each address family the node has
podCIDRs of, traffic from or to an address inside them that is no pod the ruleset programs is
dropped before any policy — `GUARD_CIDRS-vN` holds the podCIDRs, `GUARD_PODS-vN` the programmed
pods' addresses.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

from netpol.compile.ir import NodeProgram
from netpol.model import IPNetwork

GUARD_CIDRS, GUARD_PODS = "node-pod-cidrs", "node-pods"


@functools.lru_cache(maxsize=1 << 18)  # pod addresses recur in many sets, versions and nodes
def address_text(version: int, value: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))


def address_texts(addresses: Iterable[tuple[int, int]], version: int) -> tuple[str, ...]:
    """The distinct addresses of one family among (version, value) pairs, in address order."""
    found = {value for v, value in addresses if v == version}
    return tuple(address_text(version, a) for a in sorted(found))


def programmed_addresses(program: NodeProgram, version: int) -> tuple[str, ...]:
    """Addresses of the node's programmed pods, of one family, in address order."""
    return address_texts(((ip.version, int(ip)) for pod in program.pods for ip in pod.ips), version)


def guarded_families(pod_cidrs: Iterable[IPNetwork]) -> tuple[int, ...]:
    """The address families the node has podCIDRs of: those the guard covers."""
    return tuple(sorted({cidr.version for cidr in pod_cidrs}))
