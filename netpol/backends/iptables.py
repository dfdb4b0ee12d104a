"""IR → iptables: an `ipset restore` payload and `iptables-restore` / `ip6tables-restore` payloads
for the filter table, touching only our own chains and sets. Same semantics as the nftables
backend (`netpol.backends.nftables`), from the same IR.

Layout:
* Sets: every peer set of the program per family — pod addresses `hash:ip`, ipBlocks
  `hash:net` (intervals turned into the fewest CIDRs; a /0 as two /1, which hash:net can hold),
  egress named-port destinations `hash:ip,port` (`10.0.0.7,tcp:8443`), and the leak-window
  guard's `node-pods-v4` / `node-pod-cidrs-v4`. Each set is filled under a temporary name and
  `swap`ped in, so no rule ever sees a set half-filled.
* Chains: `NETPOL-FORWARD` (jumped to from FORWARD: `ensure_hook_commands`) accepts conntrack
  replies (and IPv6 neighbour discovery), drops unprogrammed addresses of the node's podCIDRs,
  then jumps by source address to the pod's egress chain (`NP-E-<hash>`: allows RETURN, the
  rest is dropped) and by destination to its ingress chain (`NP-I-<hash>`: allows ACCEPT, the
  rest is dropped). A chain belongs to a side, not a pod: the pods of the node that the same
  policies select share one (the hash is of its content), so a policy's rules are in the
  payload once per distinct side. Chain names fit iptables' 28 characters; every rule carries
  the origin (`NetworkPolicy ns/name spec.ingress[0]`) in `-m comment`.
* Dispatch is one rule per local isolated pod address (iptables has no verdict maps): the
  per-packet cost grows with the pods on the node, never with the number of policies.

Loaded in this order (README; `netpol.dataplane.iptables.apply_iptables` does it): `ipset restore -exist`,
`iptables-restore --noflush`, `ip6tables-restore --noflush`, then the FORWARD hook once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from netpol.backends.common import (
    GUARD_CIDRS,
    GUARD_PODS,
    address_text,
    guarded_families,
    programmed_addresses,
)
from netpol.compile.identity_cache import weak_identity_cache
from netpol.compile.ir import (
    Allow,
    DirectionProgram,
    NodeProgram,
    PeerSet,
    PodProgram,
    PortSet,
    ports_by_protocol,
)
from netpol.model import Direction, IPAddress

FORWARD_CHAIN = "NETPOL-FORWARD"
CHAIN_PREFIX = "NP-"
SET_PREFIXES = ("pods-", "cidrs-", "named-", GUARD_CIDRS, GUARD_PODS)
# Exactly the names we generate (`chain_name`, the compiler's set names, `.new` while swapping):
# an uninstall removes these and nothing that merely shares a prefix.
OUR_CHAIN = re.compile(rf"^(?:{FORWARD_CHAIN}|{CHAIN_PREFIX}[IEC]-[0-9A-F]{{12}})$")
OUR_SET = re.compile(rf"^(?:(?:pods|cidrs|named)-[0-9a-f]{{10}}|{GUARD_CIDRS}|{GUARD_PODS})-v[46](?:\.new)?$")
ND_TYPES = ("router-solicitation", "router-advertisement", "neighbour-solicitation",
            "neighbour-advertisement")
MULTIPORT_MAX = 15  # ports per multiport match (a range counts as two)
FAMILY = {4: "inet", 6: "inet6"}
CLAIMANT = "claimant"  # an ingress side that returns on allow (shared addresses)


@dataclass(frozen=True)
class IptablesBundle:
    """The three payloads of one node, in load order."""

    ipset: str
    iptables: str
    ip6tables: str

    def by_family(self, version: int) -> str:
        return self.iptables if version == 4 else self.ip6tables


KINDS = {"ingress": "I", "egress": "E", CLAIMANT: "C"}


def chain_name(kind: str, side: DirectionProgram) -> str:
    """`NP-I-`, `NP-E-` or `NP-C-` and 12 hex digits of the side's content (the policies isolating
    it and their allows): 17 of iptables' 28 characters. Pods of the node that the same policies
    select share the chain. `NP-C-`: an ingress side as one claimant of an address several pods
    claim (allows RETURN)."""
    return f"{CHAIN_PREFIX}{KINDS[kind]}-{_side_digest(side)}"


@weak_identity_cache()  # pods selected alike share the side object
def _side_digest(side: DirectionProgram) -> str:
    return hashlib.sha256(repr((side.isolated_by, side.allows)).encode()).hexdigest()[:12].upper()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"')[:250] + '"'


def _comment(text: str) -> str:
    return f"-m comment --comment {_quote(text)}"


# ── sets ────────────────────────────────────────────────────────────────────────────────────


def _cidrs(version: int, first: int, last: int) -> list[str]:
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    out = []
    for net in ipaddress.summarize_address_range(cls(first), cls(last)):
        if net.prefixlen == 0:  # hash:net refuses /0: the two halves
            out += [str(half) for half in net.subnets(prefixlen_diff=1)]
        else:
            out.append(str(net))
    return out


def _peer_elements(peer_set: PeerSet, version: int) -> tuple[str, list[str]]:
    intervals = peer_set.v4 if version == 4 else peer_set.v6
    if peer_set.ranges:
        return "hash:net", [c for a, b in intervals for c in _cidrs(version, a, b)]
    return "hash:ip", [address_text(version, a) for a, b in intervals for a in range(a, b + 1)]


def _port_elements(port_set: PortSet, version: int) -> list[str]:
    elements = sorted((e for e in port_set.elements if e[0].version == version),
                      key=lambda e: (int(e[0]), e[1], e[2]))
    return [f"{ip},{proto.lower()}:{port}" for ip, proto, port in elements]


def _set_block(name: str, kind: str, version: int, elements: list[str], comment: str) -> list[str]:
    size = max(65536, 2 * len(elements))
    temp = f"{name}.new"
    header = f"{kind} family {FAMILY[version]} maxelem {size}"
    lines = [f"# {comment}"[:200], f"create {name} {header}", f"create {temp} {header}", f"flush {temp}"]
    lines += [f"add {temp} {element}" for element in elements]
    lines += [f"swap {temp} {name}", f"destroy {temp}"]
    return lines


def declared_sets(program: NodeProgram,
                  with_shared: bool = True) -> Iterator[tuple[str, str, int, list[str], str]]:
    """(name, type, family, elements, comment) of every set the node's rules use (only the
    node's own guard sets without `with_shared`)."""
    for v in guarded_families(program.pod_cidrs):
        cidrs = [c for net in program.pod_cidrs if net.version == v
                 for c in _cidrs(v, int(net.network_address), int(net.broadcast_address))]
        yield f"{GUARD_CIDRS}-v{v}", "hash:net", v, cidrs, f"podCIDRs of node {program.node}"
        yield (f"{GUARD_PODS}-v{v}", "hash:ip", v, list(programmed_addresses(program, v)),
               f"pods netpol has programmed on node {program.node}")
    if not with_shared:
        return
    for peer_set in program.peer_sets:
        for family in peer_set.families:
            kind, elements = _peer_elements(peer_set, family)
            yield f"{peer_set.name}-v{family}", kind, family, elements, peer_set.describes
    for port_set in program.port_sets:
        for family in port_set.families:
            yield (f"{port_set.name}-v{family}", "hash:ip,port", family, _port_elements(port_set, family),
                   port_set.describes)


@weak_identity_cache()  # the same set recurs in many nodes: its text is made once
def _shared_set_text(peer_set: PeerSet | PortSet, version: int) -> str:
    if isinstance(peer_set, PortSet):
        block = _set_block(f"{peer_set.name}-v{version}", "hash:ip,port", version,
                           _port_elements(peer_set, version), peer_set.describes)
    else:
        kind, elements = _peer_elements(peer_set, version)
        block = _set_block(f"{peer_set.name}-v{version}", kind, version, elements, peer_set.describes)
    return "\n".join(block)


def render_ipset(program: NodeProgram) -> str:
    lines = [f"# netpol ipsets for node {program.node}: `ipset restore -exist`, before iptables-restore"]
    sets: list[PeerSet | PortSet] = [*program.peer_sets, *program.port_sets]
    shared = {f"{one.name}-v{v}": (one, v) for one in sets for v in one.families}
    for name, kind, version, elements, comment in declared_sets(program, with_shared=False):
        lines += _set_block(name, kind, version, elements, comment)
    lines += [_shared_set_text(*shared[name]) for name in shared]
    return "\n".join(lines) + "\n"


# ── rules ───────────────────────────────────────────────────────────────────────────────────


def _port_groups(allow: Allow) -> list[tuple[str, list[str] | None]]:
    """Per protocol: multiport chunks of `N` / `N:M`, or None for every port of the protocol."""
    out: list[tuple[str, list[str] | None]] = []
    for protocol, ranges in sorted(ports_by_protocol(allow).items()):
        name = protocol.lower()
        if ranges is None:
            out.append((name, None))
            continue
        chunk: list[str] = []
        weight = 0
        for a, b in sorted(ranges, key=lambda r: r[0]):
            cost = 1 if a == b else 2  # a range counts twice against multiport's 15
            if weight + cost > MULTIPORT_MAX:
                out.append((name, chunk))
                chunk, weight = [], 0
            chunk.append(str(a) if a == b else f"{a}:{b}")
            weight += cost
        out.append((name, chunk))
    return out


def _allow_rules(chain: str, allow: Allow, direction: Direction, version: int, verdict: str) -> list[str]:
    return [f"-A {chain} {body}" for body in _allow_bodies(allow, direction, version, verdict)]


def _allow_bodies(allow: Allow, direction: Direction, version: int, verdict: str) -> tuple[str, ...]:
    """An allow applied to many pods renders the same each time: made once per allow object
    and variant, and kept as long as the allow lives."""
    made = _bodies_of(allow)
    found = made.get((direction, version, verdict))
    if found is None:
        found = made[(direction, version, verdict)] = _build_allow_bodies(allow, direction, version, verdict)
    return found


@weak_identity_cache()
def _bodies_of(allow: Allow) -> dict[tuple[Direction, int, str], tuple[str, ...]]:
    return {}


def _build_allow_bodies(allow: Allow, direction: Direction, version: int, verdict: str) -> tuple[str, ...]:
    way = "src" if direction == "ingress" else "dst"
    comment = _comment(allow.origin)
    peers: list[str]
    if allow.peers is None:
        peers = [""]
    else:
        peers = [f"-m set --match-set {ref.name}-v{version} {way} "
                 for ref in allow.peers if version in ref.families]
    rules = []
    for peer in peers:
        if allow.ports is None:
            rules.append(f"{peer}{comment} -j {verdict}")
            continue
        for protocol, ports in _port_groups(allow):
            multiport = f"-m multiport --dports {','.join(ports)} " if ports is not None else ""
            match = f"-p {protocol} {multiport}"
            rules.append(f"{peer}{match}{comment} -j {verdict}")
    if allow.named is not None and version in allow.named.families:
        named = f"-m set --match-set {allow.named.name}-v{version} dst,dst"
        rules.append(f"{named} {comment} -j {verdict}")
    return tuple(rules)


DIRECTIONS: tuple[Direction, ...] = ("egress", "ingress")


VERDICTS = {"ingress": "ACCEPT", "egress": "RETURN"}  # egress passes on to ingress


def _chain_rules(chain: str, side: DirectionProgram, direction: Direction, version: int,
                 verdict: str) -> list[str]:
    rules = [r for allow in side.allows for r in _allow_rules(chain, allow, direction, version, verdict)]
    why = f"no rule of {', '.join(side.isolated_by)} admits it"
    rules.append(f"-A {chain} {_comment(why)} -j DROP")
    return rules


Chains = dict[str, tuple[DirectionProgram, Direction, str]]  # name → side, direction, verdict on allow


def _chains(program: NodeProgram) -> Chains:
    """Every chain the node's dispatch jumps to, once per distinct side, in pod order: the
    isolated sides (egress first), then the claimant chains of shared addresses."""
    found: Chains = {}
    for pod in program.pods:
        for direction in DIRECTIONS:
            side = pod.side(direction)
            if side.isolated:
                found.setdefault(chain_name(direction, side), (side, direction, VERDICTS[direction]))
    for pods in _ingress_claimants(program).values():
        for pod in pods:
            found.setdefault(chain_name(CLAIMANT, pod.ingress), (pod.ingress, "ingress", "RETURN"))
    return found


def _ingress_claimants(program: NodeProgram) -> dict[IPAddress, list[PodProgram]]:
    """Addresses that several pods isolated for ingress by different policies claim, with those
    pods, one per distinct side (NodeProgram: shared addresses fail closed). Egress needs
    nothing of the kind: an egress chain returns on allow, so jumping into each claimant's in
    turn is already an AND."""
    found: dict[IPAddress, list[PodProgram]] = {}
    for ip, claimants in program.shared_addresses.items():
        distinct = {chain_name("ingress", p.ingress): p for p in claimants if p.ingress.isolated}
        if len(distinct) > 1:
            found[ip] = list(distinct.values())
    return found


def pod_chains(program: NodeProgram) -> list[str]:
    """Every per-side chain the node's rules use (both families)."""
    return sorted(_chains(program))


def dispatch_chains(program: NodeProgram, ip: IPAddress, direction: Direction) -> list[str]:
    """The chains NETPOL-FORWARD sends the address's `direction` traffic through, in order."""
    mask = 32 if ip.version == 4 else 128
    flag = "-s" if direction == "egress" else "-d"
    return [line.rsplit(" -j ", 1)[1] for line in _dispatch(program, ip.version)
            if line.startswith(f"-A {FORWARD_CHAIN} {flag} {ip}/{mask} -j ")]


def _dispatch(program: NodeProgram, version: int) -> list[str]:
    """NETPOL-FORWARD's jumps, per local isolated pod address: the source's egress chain, then
    the destination's ingress chain. An address several isolated pods claim jumps into each
    claimant's egress chain, and through each one's claimant chain before it is accepted."""
    lines = []
    shared = _ingress_claimants(program)
    mask = 32 if version == 4 else 128
    for direction, flag in zip(DIRECTIONS, ("-s", "-d"), strict=True):
        jumped: set[tuple[IPAddress, str]] = set()  # claimants with equal sides count once
        for pod in program.pods:
            side = pod.side(direction)
            if not side.isolated:
                continue
            for ip in pod.ips:
                if ip.version != version:
                    continue
                claimants = shared.get(ip) if direction == "ingress" else None
                if claimants is None:
                    chain = chain_name(direction, side)
                    if (ip, chain) not in jumped:
                        jumped.add((ip, chain))
                        lines.append(f"-A {FORWARD_CHAIN} {flag} {ip}/{mask} -j {chain}")
                elif pod is claimants[0]:
                    lines += [f"-A {FORWARD_CHAIN} -d {ip}/{mask} -j {chain_name(CLAIMANT, claimant.ingress)}"
                              for claimant in claimants]
                    why = _comment(f"every claimant of {ip} admits it")
                    lines.append(f"-A {FORWARD_CHAIN} -d {ip}/{mask} {why} -j ACCEPT")
    return lines


def render_filter(program: NodeProgram, version: int) -> str:
    """The `iptables-restore --noflush` (or ip6tables) payload of one family."""
    chains = pod_chains(program)
    lines = [f"# netpol {'iptables' if version == 4 else 'ip6tables'} rules for node {program.node}: "
             f"`{'iptables' if version == 4 else 'ip6tables'}-restore --noflush` (after ipset restore)",
             "*filter", f":{FORWARD_CHAIN} - [0:0]", *(f":{c} - [0:0]" for c in chains)]
    fwd = FORWARD_CHAIN
    replies = _comment("replies of allowed connections")
    lines.append(f"-A {fwd} -m conntrack --ctstate ESTABLISHED,RELATED {replies} -j ACCEPT")
    if version == 6:
        nd = _comment("IPv6 neighbour discovery")
        lines += [f"-A {fwd} -p ipv6-icmp -m icmp6 --icmpv6-type {t} {nd} -j ACCEPT" for t in ND_TYPES]
    if any(c.version == version for c in program.pod_cidrs):
        for way, word in (("src", "from"), ("dst", "to")):
            why = _comment(f"{word} an address of this node's podCIDRs that is no pod netpol has programmed")
            lines.append(f"-A {fwd} -m set --match-set {GUARD_CIDRS}-v{version} {way} "
                         f"-m set ! --match-set {GUARD_PODS}-v{version} {way} {why} -j DROP")
    lines += _dispatch(program, version)
    for chain, (side, direction, verdict) in _chains(program).items():
        lines += _chain_rules(chain, side, direction, version, verdict)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render(program: NodeProgram) -> IptablesBundle:
    return IptablesBundle(render_ipset(program), render_filter(program, 4), render_filter(program, 6))


def ensure_hook_commands(binary: str) -> tuple[list[str], list[str]]:
    """(check, insert) argument lists for `binary` (iptables, ip6tables, iptables-legacy, …):
    FORWARD jumps to our chain exactly once."""
    return ([binary, "-w", "-C", "FORWARD", "-j", FORWARD_CHAIN],
            [binary, "-w", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN])


def removal_payload(listed: str) -> tuple[str, list[str]]:
    """From `iptables -S` output, the `iptables-restore --noflush` input removing our FORWARD
    jump and all our chains in one commit (nothing else), and those chains; ('', []) if none."""
    lines = listed.splitlines()
    chains = [line.split()[1] for line in lines
              if line.startswith("-N ") and OUR_CHAIN.match(line.split()[1])]
    jump = f"FORWARD -j {FORWARD_CHAIN}"  # as `ensure_hook_commands` inserts it
    jumps = [f"-D {jump}" for line in lines if line == f"-A {jump}"]
    if not chains and not jumps:
        return "", []
    payload = ["*filter", *(f":{c} - [0:0]" for c in chains), *jumps, *(f"-X {c}" for c in chains), "COMMIT"]
    return "\n".join(payload) + "\n", chains


def stale_chain_payload(existing: Iterable[str], program: NodeProgram) -> str:
    """`iptables-restore --noflush` input removing our per-pod chains the program no longer has
    (after the new rules stopped jumping to them): flush, then delete."""
    keep = set(_chains(program))
    stale = sorted(c for c in existing if c.startswith(CHAIN_PREFIX) and c not in keep)
    if not stale:
        return ""
    lines = ["*filter", *(f":{c} - [0:0]" for c in stale), *(f"-X {c}" for c in stale), "COMMIT"]
    return "\n".join(lines) + "\n"
