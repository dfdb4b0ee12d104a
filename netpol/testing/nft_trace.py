"""Tracing a packet through the emitted libnftables JSON of every node, the way the kernel walks
it: the forward hook of the source pod's node, then the forward hook of the destination pod's node
(once when both are the same node); traffic to or from a node's own address is delivered locally
and never crosses that node's forward hook, only its input (to the node) or output (from it)
hook, when the table has them (cluster policy tiers).

It interprets exactly the subset of nftables the backend emits (payload/meta/ct matches against
named or anonymous sets, concatenations, verdict maps, accept/drop/return/jump/goto) and raises on
anything else, so a backend change that it cannot follow fails the differential tests loudly
instead of passing them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netpol.errors import UnsupportedExpression
from netpol.model import IPAddress
from netpol.testing.trace import Packet

JSON = dict[str, Any]
L4 = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "ICMP": "icmp"}


@dataclass(frozen=True)
class NodeRuleset:
    """One node's JSON document, indexed: sets and maps by name, chains' rules in order."""

    addresses: frozenset[IPAddress]
    sets: Mapping[str, list[Any]]
    maps: Mapping[str, list[Any]]
    chains: Mapping[str, list[JSON]]

    @classmethod
    def from_document(cls, document: JSON, addresses: frozenset[IPAddress]) -> NodeRuleset:
        sets: dict[str, list[Any]] = {}
        maps: dict[str, list[Any]] = {}
        chains: dict[str, list[JSON]] = {}
        for command in document["nftables"]:
            obj = command.get("add", {})
            if "set" in obj:
                sets[obj["set"]["name"]] = obj["set"].get("elem", [])
            elif "map" in obj:
                maps[obj["map"]["name"]] = obj["map"].get("elem", [])
            elif "chain" in obj:
                chains.setdefault(obj["chain"]["name"], [])
            elif "rule" in obj:
                chains.setdefault(obj["rule"]["chain"], []).append(obj["rule"])
        return cls(addresses, sets, maps, chains)


def _value(expr: Any, packet: Packet) -> Any:
    """An expression's value for this packet (None: the packet has no such field)."""
    if "payload" in expr:
        protocol, field = expr["payload"]["protocol"], expr["payload"]["field"]
        if protocol in ("ip", "ip6"):
            if packet.src.version != (4 if protocol == "ip" else 6):
                return None
            return packet.src if field == "saddr" else packet.dst
        if protocol == "th" and field == "dport":
            return packet.port if packet.protocol in ("TCP", "UDP", "SCTP") else None
        if protocol == "icmpv6" and field == "type":
            return None  # probes are connections, never neighbour discovery
    elif "meta" in expr:
        key = expr["meta"]["key"]
        if key == "nfproto":
            return f"ipv{packet.src.version}"
        if key == "l4proto":
            icmpv6 = packet.protocol == "ICMP" and packet.src.version == 6
            return "ipv6-icmp" if icmpv6 else L4[packet.protocol]
    elif "ct" in expr and expr["ct"]["key"] == "state":
        return {"new"}  # the first packet of a connection
    elif "concat" in expr:
        parts = [_value(part, packet) for part in expr["concat"]]
        return None if None in parts else tuple(parts)
    raise UnsupportedExpression(repr(expr))


def _same(element: Any, value: Any) -> bool:
    if isinstance(value, tuple):
        return isinstance(element, dict) and "concat" in element and \
            all(_same(e, v) for e, v in zip(element["concat"], value, strict=True))
    if isinstance(element, dict) and "range" in element:
        low, high = element["range"]
        return bool(_ordered(low, value) <= _ordered(value, value) <= _ordered(high, value))
    return bool(_ordered(element, value) == _ordered(value, value))


def _ordered(element: Any, like: Any) -> Any:
    """Elements as comparable values: addresses as integers, the rest as themselves."""
    if isinstance(like, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return int(ipaddress.ip_address(element)) if isinstance(element, str) else int(element)
    return element


def _matches(match: JSON, packet: Packet, ruleset: NodeRuleset) -> bool:
    value = _value(match["left"], packet)
    right = match["right"]
    if value is None:
        return False
    if match["op"] == "in":  # ct state flags
        return bool(value & set(right))
    if isinstance(right, str) and right.startswith("@"):
        member = any(_same(e, value) for e in ruleset.sets[right[1:]])
        return not member if match["op"] == "!=" else member
    if isinstance(right, dict) and "set" in right:
        return any(_same(e, value) for e in right["set"])
    return bool(_same(right, value))


def _run_chain(name: str, packet: Packet, ruleset: NodeRuleset, steps: list[str]) -> str | None:
    """'accept' or 'drop'; None when the chain returns or ends (a base chain's policy: accept)."""
    for rule in ruleset.chains[name]:
        for statement in rule["expr"]:
            if "match" in statement:
                if not _matches(statement["match"], packet, ruleset):
                    break
                continue
            if "vmap" in statement:
                key = _value(statement["vmap"]["key"], packet)
                elements = ruleset.maps[statement["vmap"]["data"][1:]]
                target = next((v for k, v in elements if key is not None and _same(k, key)), None)
                if target is None:
                    break
                statement = target  # noqa: PLW2901 - the map's verdict stands in for the lookup
            if "jump" in statement:
                steps.append(f"jump {statement['jump']['target']}")
                outcome = _run_chain(statement["jump"]["target"], packet, ruleset, steps)
                if outcome is not None:
                    return outcome
                break  # returned: on with the next rule
            if "goto" in statement:  # no way back: the target's return is this chain's
                steps.append(f"goto {statement['goto']['target']}")
                return _run_chain(statement["goto"]["target"], packet, ruleset, steps)
            kind = next((k for k in ("accept", "drop", "return") if k in statement), None)
            if kind is None:
                raise UnsupportedExpression(repr(statement))
            steps.append(f"{kind}: {rule.get('comment', '')}")
            return None if kind == "return" else kind
    return None


def trace_json(rulesets: Mapping[str, NodeRuleset], packet: Packet, locations: Mapping[IPAddress, str]) \
        -> tuple[bool, list[str]]:
    """The kernel's verdict for a connection's first packet; `locations`: pod address → node."""
    steps: list[str] = []
    path = [locations.get(packet.src), locations.get(packet.dst)]
    for node in dict.fromkeys(n for n in path if n is not None):
        ruleset = rulesets[node]
        if packet.src in ruleset.addresses or packet.dst in ruleset.addresses:
            hook = "input" if packet.dst in ruleset.addresses else "output"
            if hook not in ruleset.chains:
                steps.append(f"{node}: local delivery, no forward hook")
                continue
            steps.append(f"{node}: local delivery, {hook}")
            if _run_chain(hook, packet, ruleset, steps) == "drop":
                return False, steps
            continue
        steps.append(f"{node}: forward")
        outcome = _run_chain("forward", packet, ruleset, steps)
        if outcome == "drop":
            return False, steps
    return True, steps
