"""IR → one `table inet netpol`, as an `nft -f` script or as libnftables JSON, replaced atomically
in one transaction.

Layout (DESIGN §3): conntrack replies first; dispatch by pod address through verdict maps
(`egress-v4`, `ingress-v6`, …) into one chain per pod and direction; rules match named peer
sets (`flags interval`) and ports. Per-packet work is one map lookup plus the rules of the
policies selecting that one pod, whatever the number of policies in the cluster.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from netpol.backends.nft_document import (
    BaseHook,
    Chain,
    Concat,
    Ct,
    Element,
    InFlags,
    InNamedSet,
    InValues,
    Meta,
    NamedSet,
    Payload,
    Rule,
    Statement,
    Table,
    Verdict,
    VerdictMap,
    VerdictMapLookup,
    document,
    script,
)
from netpol.ir import Allow, NamedElement, NodeProgram, PodProgram
from netpol.model import Direction

TABLE = "netpol"
FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
DISPATCH_ORDER: tuple[Direction, ...] = ("egress", "ingress")  # the source's egress, then ingress
# ICMPv6 neighbour discovery must pass for isolated pods or IPv6 breaks (PITFALLS 20).
ND_TYPES = ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit", "nd-router-advert")
VERDICTS = {"egress": Verdict("return"), "ingress": Verdict("accept")}  # egress passes on to ingress


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8].upper()


def chain_name(direction: Direction, pod: str) -> str:
    """Stable and readable: `ingress-HASH8-ns/pod` (the hash keeps long names unique)."""
    return f"{direction}-{_hash(pod)}-{pod}"[:200]


def _address(version: int, value: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))


@functools.lru_cache(maxsize=65536)  # the same peer sets recur in every node's ruleset
def _interval_elements(version: int, intervals: tuple[tuple[int, int], ...]) -> tuple[Element, ...]:
    return tuple(_address(version, a) if a == b else (_address(version, a), _address(version, b))
                 for a, b in intervals)


def _summary(origins: list[str]) -> str:
    more = f" (+{len(origins) - 1} more)" if len(origins) > 1 else ""
    return f"peers of {origins[0]}{more}"


def _peer_sets(program: NodeProgram) -> list[NamedSet]:
    origins: dict[str, list[str]] = {}
    for pod in program.pods:
        for direction in DISPATCH_ORDER:
            for allow in pod.side(direction).allows:
                if allow.peers is not None and allow.origin not in origins.setdefault(allow.peers.name, []):
                    origins[allow.peers.name].append(allow.origin)
    sets = []
    for ps in program.peer_sets:
        comment = _summary(sorted(origins[ps.name])) if origins.get(ps.name) else None
        for version, intervals in ((4, ps.v4), (6, ps.v6)):
            sets.append(NamedSet(f"{ps.name}-v{version}", (FAMILIES[version][1],),
                                 _interval_elements(version, intervals), interval=True, comment=comment))
    return sets


def _named_set_name(allow: Allow) -> str:
    return _named_digest(allow.origin, allow.named)


@functools.lru_cache(maxsize=65536)  # the same rule's elements recur for every pod it selects
def _named_digest(origin: str, named: frozenset[NamedElement]) -> str:
    content = sorted((ip.version, int(ip), protocol, port) for ip, protocol, port in named)
    return f"named-{_hash(origin + repr(content))}"


def _named_sets(programs: Iterable[PodProgram]) -> list[NamedSet]:
    sets: dict[str, NamedSet] = {}
    for pod in programs:
        for allow in pod.egress.allows:
            if not allow.named or (name := _named_set_name(allow)) + "-v4" in sets:
                continue
            for version, (_, addr_type) in FAMILIES.items():
                elements = sorted((e for e in allow.named if e[0].version == version),
                                  key=lambda e: (int(e[0]), e[1], e[2]))
                sets[f"{name}-v{version}"] = NamedSet(
                    f"{name}-v{version}", (addr_type, "inet_proto", "inet_service"),
                    tuple((str(ip), proto.lower(), port) for ip, proto, port in elements),
                    comment=allow.origin)
    return list(sets.values())


def _port_values(allow: Allow) -> dict[str, list[Element] | None]:
    """Per protocol: the port elements, or None for every port of the protocol."""
    by_protocol: dict[str, list[Element] | None] = {}
    for m in allow.ports or ():
        if m.first is None:
            by_protocol[m.protocol] = None
        elif (ports := by_protocol.setdefault(m.protocol, [])) is not None:
            value: Element = m.first if m.first == m.last else (m.first, m.last or m.first)
            if value not in ports:
                ports.append(value)
    return by_protocol


def _first_port(value: Element) -> Any:
    return value[0] if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=65536)  # a rule applied to many pods renders the same each time
def _allow_rules(allow: Allow, direction: Direction) -> tuple[Rule, ...]:
    """Rules (one per family and protocol) that give the direction's verdict when `allow` matches."""
    rules = []
    verdict = VERDICTS[direction]
    for version, (proto_kw, _) in FAMILIES.items():
        if allow.peers is not None and not (allow.peers.v4 if version == 4 else allow.peers.v6):
            continue  # this rule admits no address of this family
        peer_field = "saddr" if direction == "ingress" else "daddr"
        peer: Statement = InNamedSet(Payload(proto_kw, peer_field), f"{allow.peers.name}-v{version}") \
            if allow.peers else InValues(Meta("nfproto"), (f"ipv{version}",), braced=False)
        if allow.ports is None:
            rules.append(Rule((peer, verdict), allow.origin))
            continue
        for protocol, ports in sorted(_port_values(allow).items()):
            match: list[Statement] = [peer, InValues(Meta("l4proto"), (protocol.lower(),), braced=False)]
            if ports is not None:
                match.append(InValues(Payload("th", "dport"), tuple(sorted(ports, key=_first_port))))
            rules.append(Rule((*match, verdict), allow.origin))
        if any(e[0].version == version for e in allow.named):
            key = Concat((Payload(proto_kw, "daddr"), Meta("l4proto"), Payload("th", "dport")))
            rules.append(Rule((peer, InNamedSet(key, f"{_named_set_name(allow)}-v{version}"), verdict),
                              allow.origin))
    return tuple(rules)


def _pod_chains(pod: PodProgram) -> list[Chain]:
    chains = []
    for direction in DISPATCH_ORDER:
        side = pod.side(direction)
        if not side.isolated:
            continue
        policies = ", ".join(side.isolated_by)
        rules = [rule for allow in side.allows for rule in _allow_rules(allow, direction)]
        rules.append(Rule((Verdict("drop"),), f"no rule of {policies} admits it"))
        chains.append(Chain(chain_name(direction, pod.pod), tuple(rules),
                            f"{pod.pod} {direction}, isolated by {policies}"))
    return chains


def _dispatch_maps(programs: list[PodProgram]) -> list[VerdictMap]:
    return [VerdictMap(f"{direction}-v{version}", addr_type,
                       tuple((str(ip), Verdict("jump", chain_name(direction, pod.pod)))
                             for pod in programs if pod.side(direction).isolated
                             for ip in pod.ips if ip.version == version))
            for direction in DISPATCH_ORDER for version, (_, addr_type) in FAMILIES.items()]


FORWARD = Chain("forward", (
    Rule((InFlags(Ct("state"), ("established", "related")), Verdict("accept")),
         "replies of allowed connections"),
    Rule((InValues(Payload("icmpv6", "type"), ND_TYPES), Verdict("accept")), "IPv6 neighbour discovery"),
    *(Rule((VerdictMapLookup(Payload(proto_kw, field), f"{direction}-v{version}"),))
      for direction, field in (("egress", "saddr"), ("ingress", "daddr"))
      for version, (proto_kw, _) in FAMILIES.items()),
), "pod traffic: routed, and bridged through br_netfilter", BaseHook("filter", "forward", "filter", "accept"))


def build_table(program: NodeProgram) -> Table:
    """The node's table: sets, dispatch maps, the forward hook and one chain per isolated pod side."""
    pods = list(program.pods)
    return Table("inet", TABLE, f"netpol: Kubernetes NetworkPolicy for node {program.node}",
                 sets=(*_peer_sets(program), *_named_sets(pods)),
                 maps=tuple(_dispatch_maps(pods)),
                 chains=(FORWARD, *(chain for pod in pods for chain in _pod_chains(pod))))


def render(program: NodeProgram) -> str:
    """The complete ruleset of one node, as an `nft -f` script that replaces the previous one."""
    header = f"netpol ruleset for node {program.node}: `nft -f` replaces table inet {TABLE} atomically"
    return script(build_table(program), header)


def render_json(program: NodeProgram) -> dict[str, Any]:
    """The same ruleset as libnftables JSON (`nft -j -f`), one transaction."""
    return document(build_table(program))
