"""IR → an `nft -f` script: one `table inet netpol`, replaced atomically in one transaction.

Layout (DESIGN §3): conntrack replies first; dispatch by pod address through verdict maps
(`egress-v4`, `ingress-v6`, …) into one chain per pod and direction; rules match named peer
sets (`flags interval`) and ports. Per-packet work is one map lookup plus the rules of the
policies selecting that one pod, whatever the number of policies in the cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from netpol.ir import Allow, NodeProgram, PeerSet, PodProgram
from netpol.model import Direction

TABLE = "netpol"
FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
# ICMPv6 neighbour discovery must pass for isolated pods or IPv6 breaks (PITFALLS 20).
DISPATCH_ORDER: tuple[Direction, ...] = ("egress", "ingress")  # the source's egress, then ingress
ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"


def quote(text: str) -> str:
    """A comment as an nft string; names and labels are never pasted unquoted."""
    return '"' + text.replace("\\", "").replace('"', "'")[:120] + '"'


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8].upper()


def chain_name(direction: Direction, pod: str) -> str:
    """Stable and readable: `ingress-HASH8-ns/pod` (the hash keeps long names unique)."""
    return f"{direction}-{_hash(pod)}-{pod}"[:200]


def _address(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _intervals(version: int, intervals: Iterable[tuple[int, int]]) -> str:
    return ", ".join(_address(version, a) if a == b else f"{_address(version, a)}-{_address(version, b)}"
                     for a, b in intervals)


def _declare(kind: str, name: str, spec: str, elements: Iterable[str]) -> str:
    """`set`/`map` NAME { SPEC elements = { … }; } — nft refuses an empty element list."""
    listed = ", ".join(elements)
    return f"\t{kind} {name} {{ {spec}" + (f" elements = {{ {listed} }};" if listed else "") + " }"


def _peer_sets(peer_sets: Iterable[PeerSet]) -> list[str]:
    lines = []
    for ps in peer_sets:
        for version, intervals in ((4, ps.v4), (6, ps.v6)):
            spec = f"type {FAMILIES[version][1]}; flags interval;"
            lines.append(_declare("set", f"{ps.name}-v{version}", spec, [_intervals(version, intervals)]
                                  if intervals else []))
    return lines


def _named_set_name(allow: Allow) -> str:
    return f"named-{_hash(allow.origin + repr(sorted(map(str, allow.named))))}"


def _named_sets(programs: Iterable[PodProgram]) -> list[str]:
    lines, seen = [], set()
    for pod in programs:
        for allow in pod.egress.allows:
            if not allow.named or (name := _named_set_name(allow)) in seen:
                continue
            seen.add(name)
            for version, (_, addr_type) in FAMILIES.items():
                elements = sorted((e for e in allow.named if e[0].version == version),
                                  key=lambda e: (int(e[0]), e[1], e[2]))
                spec = f"type {addr_type} . inet_proto . inet_service; comment {quote(allow.origin)};"
                lines.append(_declare("set", f"{name}-v{version}", spec,
                                      (f"{ip} . {proto.lower()} . {port}" for ip, proto, port in elements)))
    return lines


def _allow_rules(allow: Allow, direction: Direction, verdict: str) -> list[str]:
    """nft rules (one per family and protocol) that give `verdict` when `allow` matches."""
    rules = []
    for version, (proto_kw, _) in FAMILIES.items():
        peer_field = "saddr" if direction == "ingress" else "daddr"
        if allow.peers is not None and not (allow.peers.v4 if version == 4 else allow.peers.v6):
            continue  # this rule admits no address of this family
        peer = f"{proto_kw} {peer_field} @{allow.peers.name}-v{version} " if allow.peers else \
            f"meta nfproto ipv{version} "
        comment = f" comment {quote(allow.origin)}"
        if allow.ports is None:
            rules.append(f"{peer}{verdict}{comment}")
            continue
        by_protocol: dict[str, list[str]] = {}
        for m in allow.ports:
            ports = by_protocol.setdefault(m.protocol, [])
            if m.first is None:
                ports.append("*")
            else:
                ports.append(str(m.first) if m.first == m.last else f"{m.first}-{m.last}")
        for protocol, ports in sorted(by_protocol.items()):
            match = f"meta l4proto {protocol.lower()}"
            if "*" not in ports:
                match += f" th dport {{ {', '.join(sorted(set(ports)))} }}"
            rules.append(f"{peer}{match} {verdict}{comment}")
        if allow.named and any(e[0].version == version for e in allow.named):
            named = f"@{_named_set_name(allow)}-v{version}"
            rules.append(f"{peer}{proto_kw} daddr . meta l4proto . th dport {named} {verdict}{comment}")
    return rules


def _pod_chains(pod: PodProgram) -> list[str]:
    lines = []
    for direction in DISPATCH_ORDER:
        side = pod.side(direction)
        if not side.isolated:
            continue
        verdict = "return" if direction == "egress" else "accept"  # egress passes on to ingress
        why = f"{pod.pod} {direction}, isolated by " + ", ".join(side.isolated_by)
        lines.append(f"\tchain {chain_name(direction, pod.pod)} {{")
        lines.append(f"\t\tcomment {quote(why)}")
        for allow in side.allows:
            lines += [f"\t\t{rule}" for rule in _allow_rules(allow, direction, verdict)]
        lines.append(f"\t\tdrop comment {quote('no rule of ' + ', '.join(side.isolated_by) + ' admits it')}")
        lines.append("\t}")
    return lines


def _dispatch_maps(programs: Iterable[PodProgram]) -> list[str]:
    lines = []
    programs = list(programs)
    for direction in DISPATCH_ORDER:
        for version, (_, addr_type) in FAMILIES.items():
            elements = (f"{ip} : jump {chain_name(direction, pod.pod)}"
                        for pod in programs if pod.side(direction).isolated
                        for ip in pod.ips if ip.version == version)
            lines.append(_declare("map", f"{direction}-v{version}", f"type {addr_type} : verdict;", elements))
    return lines


def render(program: NodeProgram) -> str:
    """The complete ruleset of one node, as an `nft -f` script that replaces the previous one."""
    lines = [
        f"# netpol ruleset for node {program.node}: `nft -f` replaces table inet {TABLE} atomically",
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"\tcomment {quote('netpol: Kubernetes NetworkPolicy for node ' + program.node)}",
        *_peer_sets(program.peer_sets),
        *_named_sets(program.pods),
        *_dispatch_maps(program.pods),
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct state established,related accept comment \"replies of allowed connections\"",
        f"\t\ticmpv6 type {{ {ND_TYPES} }} accept comment \"IPv6 neighbour discovery\"",
        "\t\tip saddr vmap @egress-v4",
        "\t\tip6 saddr vmap @egress-v6",
        "\t\tip daddr vmap @ingress-v4",
        "\t\tip6 daddr vmap @ingress-v6",
        "\t}",
        *(line for pod in program.pods for line in _pod_chains(pod)),
        "}",
    ]
    return "\n".join(lines) + "\n"
