"""IR → iptables: an `ipset restore` payload and `iptables-restore` / `ip6tables-restore` payloads
for the filter table, touching only our own chains and sets. Same semantics as the nftables
backend (`netpol.backends.nftables`), from the same IR.

Layout:
* Sets: every peer set of the program per family — pod and node addresses `hash:ip`, ipBlocks
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
* Dispatch is one rule per local enforced pod address (isolated, or with tier rules: iptables
  has no verdict maps): the per-packet cost grows with the pods on the node, never with the
  number of policies, cluster-wide ones included.

ClusterNetworkPolicy tiers (DESIGN §2b), as in the nftables backend. A side with tier rules is
still one chain, named by a digest of all its content (tiers included): the Admin rules in order
(Accept: the side's allow verdict, Deny: DROP), then the NetworkPolicy tier when it isolates the
side (its allows, then DROP), else the Baseline rules (Accept and Pass allow, Deny drops), then
allow. When an Admin rule is a Pass, the part after the Admin tier is a chain of its own
(`NP-IA-…`, `NP-EA-…`: kind + `A`) that Pass rules, and the end of the Admin rules, enter with
`-g` (goto: its RETURN goes back to the dispatching chain). Traffic between a local pod and its
own node is delivered locally, never forwarded: when the node's programs have tier rules,
`NETPOL-INPUT` (from INPUT: by source, a pod's traffic to its node) and `NETPOL-OUTPUT` (from
OUTPUT: by destination, the node's traffic to a pod) send it to the side's own-node chain
(`NP-NE-…`, `NP-NI-…`), whose NetworkPolicy tier allows (the exemption) while the cluster tiers
still decide. These chains RETURN what they allow, never ACCEPT, so the node's own INPUT and
OUTPUT rules still apply after ours (as the nftables backend's input/output hooks leave them to
the node's other base chains); an address several pods claim is then jumped through each
claimant's own-node chain in turn, an AND. Without tier rules there are neither chains nor
hooks, and the payloads are exactly what they were before cluster policies.

Chain kinds (`KINDS`): `I` ingress (allows ACCEPT), `E` egress (RETURN), `C` ingress as one
claimant of a shared address (RETURN), `NI`/`NE` own-node ingress/egress (RETURN); each with an
`A` for its after-Admin part. `OUR_CHAIN` matches exactly those, and our three hook chains.

Loaded in this order (README; `netpol.dataplane.iptables.apply_iptables` does it): `ipset restore -exist`,
`iptables-restore --noflush`, `ip6tables-restore --noflush`, then the FORWARD hook once (and, with
tier rules, the INPUT and OUTPUT hooks).
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
    TierRule,
    ports_by_protocol,
)
from netpol.model import Direction, IPAddress

FORWARD_CHAIN = "NETPOL-FORWARD"
INPUT_CHAIN = "NETPOL-INPUT"  # a local pod's traffic to its own node (tier rules only)
OUTPUT_CHAIN = "NETPOL-OUTPUT"  # the node's traffic to a local pod (tier rules only)
HOOKS = {"FORWARD": FORWARD_CHAIN, "INPUT": INPUT_CHAIN, "OUTPUT": OUTPUT_CHAIN}  # built-in chain → ours
CHAIN_PREFIX = "NP-"
SET_PREFIXES = ("pods-", "cidrs-", "named-", "nodes-", GUARD_CIDRS, GUARD_PODS)
CLAIMANT = "claimant"  # an ingress side that returns on allow (shared addresses)
OWN = {"ingress": "own-ingress", "egress": "own-egress"}  # a side with its own node (local hooks)
KINDS = {"ingress": "I", "egress": "E", CLAIMANT: "C", OWN["ingress"]: "NI", OWN["egress"]: "NE"}
AFTER_ADMIN = "A"  # after the kind: the part of a tiered side after its Admin rules
# Exactly the names we generate (`chain_name`, the compiler's set names, `.new` while swapping):
# an uninstall removes these and nothing that merely shares a prefix.
OUR_CHAIN = re.compile(rf"^(?:{'|'.join(HOOKS.values())}|"
                       rf"{CHAIN_PREFIX}(?:{'|'.join(KINDS.values())}){AFTER_ADMIN}?-[0-9A-F]{{12}})$")
OUR_SET = re.compile(rf"^(?:(?:pods|cidrs|named|nodes)-[0-9a-f]{{10}}|{GUARD_CIDRS}|{GUARD_PODS})"
                     rf"-v[46](?:\.new)?$")
ND_TYPES = ("router-solicitation", "router-advertisement", "neighbour-solicitation",
            "neighbour-advertisement")
MULTIPORT_MAX = 15  # ports per multiport match (a range counts as two)
FAMILY = {4: "inet", 6: "inet6"}


@dataclass(frozen=True)
class IptablesBundle:
    """The three payloads of one node, in load order."""

    ipset: str
    iptables: str
    ip6tables: str

    def by_family(self, version: int) -> str:
        return self.iptables if version == 4 else self.ip6tables


def chain_name(kind: str, side: DirectionProgram, after_admin: bool = False) -> str:
    """`NP-` + the kind (`KINDS`; `A` appended for the after-Admin part) + 12 hex digits of the
    side's content (the policies isolating it and their allows, and its tier rules if any): at
    most 19 of iptables' 28 characters. Pods of the node that the same policies select share
    the chain. `NP-C-`: an ingress side as one claimant of an address several pods claim (allows
    RETURN); `NP-NI-`/`NP-NE-`: a tiered side with its own node."""
    return f"{CHAIN_PREFIX}{KINDS[kind]}{AFTER_ADMIN if after_admin else ''}-{_side_digest(side)}"


@weak_identity_cache()  # pods selected alike share the side object
def _side_digest(side: DirectionProgram) -> str:
    content: tuple[object, ...] = (side.isolated_by, side.allows)
    if side.tiered:  # a tiered side never shares a name with one without tiers
        content = (*content, side.admin, side.baseline)
    return hashlib.sha256(repr(content).encode()).hexdigest()[:12].upper()


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


def _allow_rules(chain: str, allow: Allow, direction: Direction, version: int, target: str) -> list[str]:
    """Rules of `chain` that end in `target` (`-j ACCEPT`, `-g NP-EA-…`) when `allow` matches."""
    return [f"-A {chain} {body}" for body in _allow_bodies(allow, direction, version, target)]


def _allow_bodies(allow: Allow, direction: Direction, version: int, target: str) -> tuple[str, ...]:
    """An allow applied to many pods renders the same each time: made once per allow object
    and variant, and kept as long as the allow lives."""
    made = _bodies_of(allow)
    found = made.get((direction, version, target))
    if found is None:
        found = made[(direction, version, target)] = _build_allow_bodies(allow, direction, version, target)
    return found


@weak_identity_cache()
def _bodies_of(allow: Allow) -> dict[tuple[Direction, int, str], tuple[str, ...]]:
    return {}


def _build_allow_bodies(allow: Allow, direction: Direction, version: int, target: str) -> tuple[str, ...]:
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
            rules.append(f"{peer}{comment} {target}")
            continue
        for protocol, ports in _port_groups(allow):
            multiport = f"-m multiport --dports {','.join(ports)} " if ports is not None else ""
            match = f"-p {protocol} {multiport}"
            rules.append(f"{peer}{match}{comment} {target}")
    if allow.named is not None and version in allow.named.families:
        named = f"-m set --match-set {allow.named.name}-v{version} dst,dst"
        rules.append(f"{named} {comment} {target}")
    return tuple(rules)


DIRECTIONS: tuple[Direction, ...] = ("egress", "ingress")


VERDICTS = {"ingress": "ACCEPT", "egress": "RETURN"}  # egress passes on to ingress
# Per kind: the direction of the side it renders, its target on allow, and whether the side's
# NetworkPolicy tier is the own-node exemption (allows everything) in it.
VARIANTS: dict[str, tuple[Direction, str, bool]] = {
    "ingress": ("ingress", VERDICTS["ingress"], False),
    "egress": ("egress", VERDICTS["egress"], False),
    CLAIMANT: ("ingress", "RETURN", False),
    OWN["ingress"]: ("ingress", "RETURN", True),
    OWN["egress"]: ("egress", "RETURN", True),
}


def _chain_rules(chain: str, kind: str, side: DirectionProgram, after_admin: bool, version: int) -> list[str]:
    """The rules of one chain: a side in one variant (`kind`), or its after-Admin part."""
    direction, allowed, _ = VARIANTS[kind]
    if not side.tiered:
        return _policy_rules(chain, side, direction, version, allowed)
    allow = f"-j {allowed}"
    if after_admin:
        return _after_admin(chain, kind, side, version)
    if not _passes(side):
        return [*_tier_rules(chain, side.admin, direction, version, (allow, allow)),
                *_after_admin(chain, kind, side, version)]
    onward = f"-g {chain_name(kind, side, after_admin=True)}"
    return [*_tier_rules(chain, side.admin, direction, version, (allow, onward)),
            f"-A {chain} {_comment('no Admin tier rule decided')} {onward}"]


def _policy_rules(chain: str, side: DirectionProgram, direction: Direction, version: int,
                  verdict: str) -> list[str]:
    """The NetworkPolicy tier of an isolated side: its allows, then DROP."""
    target = f"-j {verdict}"
    rules = [r for allow in side.allows for r in _allow_rules(chain, allow, direction, version, target)]
    why = f"no rule of {', '.join(side.isolated_by)} admits it"
    rules.append(f"-A {chain} {_comment(why)} -j DROP")
    return rules


def _after_admin(chain: str, kind: str, side: DirectionProgram, version: int) -> list[str]:
    """A tiered side after its Admin rules: the NetworkPolicy tier when it isolates the side
    (final; with its own node, the exemption), else the Baseline rules, then allow."""
    direction, allowed, own = VARIANTS[kind]
    if side.isolated and own:
        return [f"-A {chain} {_comment('its own node: exempt in the NetworkPolicy tier')} -j {allowed}"]
    if side.isolated:
        return _policy_rules(chain, side, direction, version, allowed)
    allow = f"-j {allowed}"
    return [*_tier_rules(chain, side.baseline, direction, version, (allow, allow)),
            f"-A {chain} {_comment('no tier decided: default allow')} {allow}"]


def _tier_rules(chain: str, rules: tuple[TierRule, ...], direction: Direction, version: int,
                targets: tuple[str, str]) -> list[str]:
    """A tier's rules in order: Accept gives `targets[0]`, Deny drops, Pass gives `targets[1]`."""
    allow, passed = targets
    return [line for rule in rules for line in _allow_rules(
        chain, rule.match, direction, version,
        allow if rule.action == "Accept" else "-j DROP" if rule.action == "Deny" else passed)]


def _passes(side: DirectionProgram) -> bool:
    """Has the side an Admin Pass rule (then its after-Admin part is a chain of its own)?"""
    return any(rule.action == "Pass" for rule in side.admin)


Chains = dict[str, tuple[str, DirectionProgram, bool]]  # name → kind, side, after-Admin part


def _add_side(found: Chains, kind: str, side: DirectionProgram) -> None:
    found.setdefault(chain_name(kind, side), (kind, side, False))
    if side.tiered and _passes(side):
        found.setdefault(chain_name(kind, side, after_admin=True), (kind, side, True))


def _chains(program: NodeProgram) -> Chains:
    """Every chain the node's dispatch jumps to, once per distinct side, in pod order: the
    enforced sides (egress first), the claimant chains of shared addresses, then the own-node
    chains of tiered sides; each side's after-Admin part right after it."""
    found: Chains = {}
    for pod in program.pods:
        for direction in DIRECTIONS:
            side = pod.side(direction)
            if side.enforced:
                _add_side(found, direction, side)
    for pods in _ingress_claimants(program).values():
        for pod in pods:
            _add_side(found, CLAIMANT, pod.ingress)
    for pod in program.pods:
        for direction in DIRECTIONS:
            side = pod.side(direction)
            if side.tiered:
                _add_side(found, OWN[direction], side)
    return found


def _ingress_claimants(program: NodeProgram) -> dict[IPAddress, list[PodProgram]]:
    """Addresses that several pods with different enforced ingress sides claim, with those pods,
    one per distinct side (NodeProgram: shared addresses fail closed). Egress needs nothing of
    the kind: an egress chain returns on allow, so jumping into each claimant's in turn is
    already an AND (and so do the own-node chains, both ways)."""
    found: dict[IPAddress, list[PodProgram]] = {}
    for ip, claimants in program.shared_addresses.items():
        distinct = {chain_name("ingress", p.ingress): p for p in claimants if p.ingress.enforced}
        if len(distinct) > 1:
            found[ip] = list(distinct.values())
    return found


def tiered(program: NodeProgram) -> bool:
    """Do the node's programs have cluster-policy tier rules (then the payloads have the
    NETPOL-INPUT and NETPOL-OUTPUT chains, and `hooks` names INPUT and OUTPUT)? One look at
    each pod's two sides: nothing beside printing its chains."""
    return any(pod.ingress.tiered or pod.egress.tiered for pod in program.pods)


def hooks(program: NodeProgram) -> tuple[str, ...]:
    """The built-in chains that jump to ours for this program: FORWARD, and with tier rules
    INPUT and OUTPUT (`HOOKS` names our chain for each)."""
    return ("FORWARD", "INPUT", "OUTPUT") if tiered(program) else ("FORWARD",)


def pod_chains(program: NodeProgram) -> list[str]:
    """Every per-side chain the node's rules use (both families)."""
    return sorted(_chains(program))


def dispatch_chains(program: NodeProgram, ip: IPAddress, direction: Direction,
                    hook: str = "FORWARD") -> list[str]:
    """The chains our `hook` chain sends the address's `direction` traffic through, in order
    (INPUT: a pod's egress to its own node; OUTPUT: its ingress from it)."""
    mask = 32 if ip.version == 4 else 128
    flag = "-s" if direction == "egress" else "-d"
    lines = _dispatch(program, ip.version) if hook == "FORWARD" else \
        _own_dispatch(program, ip.version, "egress" if hook == "INPUT" else "ingress")
    return [line.rsplit(" -j ", 1)[1] for line in lines
            if line.startswith(f"-A {HOOKS[hook]} {flag} {ip}/{mask} -j ")]


def _dispatch(program: NodeProgram, version: int) -> list[str]:
    """NETPOL-FORWARD's jumps, per local enforced pod address: the source's egress chain, then
    the destination's ingress chain. An address several enforced pods claim jumps into each
    claimant's egress chain, and through each one's claimant chain before it is accepted."""
    lines = []
    shared = _ingress_claimants(program)
    mask = 32 if version == 4 else 128
    for direction, flag in zip(DIRECTIONS, ("-s", "-d"), strict=True):
        jumped: set[tuple[IPAddress, str]] = set()  # claimants with equal sides count once
        for pod in program.pods:
            side = pod.side(direction)
            if not side.enforced:
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


def _own_dispatch(program: NodeProgram, version: int, direction: Direction) -> list[str]:
    """NETPOL-INPUT's jumps (egress: by source, a local pod's traffic to its node) or
    NETPOL-OUTPUT's (ingress: by destination), per address of a local pod whose side has tier
    rules, to the side's own-node chain; every claimant's in turn (they return on allow)."""
    chain_of, flag = (INPUT_CHAIN, "-s") if direction == "egress" else (OUTPUT_CHAIN, "-d")
    mask = 32 if version == 4 else 128
    lines = []
    jumped: set[tuple[IPAddress, str]] = set()
    for pod in program.pods:
        side = pod.side(direction)
        if not side.tiered:
            continue  # its own node is exempt in the NetworkPolicy tier, the only one it has
        chain = chain_name(OWN[direction], side)
        for ip in pod.ips:
            if ip.version == version and (ip, chain) not in jumped:
                jumped.add((ip, chain))
                lines.append(f"-A {chain_of} {flag} {ip}/{mask} -j {chain}")
    return lines


def _passed_first(chain: str, version: int, verdict: str) -> list[str]:
    """What a hook chain lets through before any policy: conntrack replies, IPv6 ND."""
    replies = _comment("replies of allowed connections")
    lines = [f"-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED {replies} -j {verdict}"]
    if version == 6:
        nd = _comment("IPv6 neighbour discovery")
        lines += [f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} {nd} -j {verdict}" for t in ND_TYPES]
    return lines


def render_filter(program: NodeProgram, version: int) -> str:
    """The `iptables-restore --noflush` (or ip6tables) payload of one family."""
    chains = pod_chains(program)
    lines = [f"# netpol {'iptables' if version == 4 else 'ip6tables'} rules for node {program.node}: "
             f"`{'iptables' if version == 4 else 'ip6tables'}-restore --noflush` (after ipset restore)",
             "*filter", *(f":{HOOKS[hook]} - [0:0]" for hook in hooks(program)),
             *(f":{c} - [0:0]" for c in chains)]
    fwd = FORWARD_CHAIN
    lines += _passed_first(fwd, version, "ACCEPT")
    if any(c.version == version for c in program.pod_cidrs):
        for way, word in (("src", "from"), ("dst", "to")):
            why = _comment(f"{word} an address of this node's podCIDRs that is no pod netpol has programmed")
            lines.append(f"-A {fwd} -m set --match-set {GUARD_CIDRS}-v{version} {way} "
                         f"-m set ! --match-set {GUARD_PODS}-v{version} {way} {why} -j DROP")
    lines += _dispatch(program, version)
    if tiered(program):  # RETURN, not ACCEPT: the node's own INPUT/OUTPUT rules still apply
        for direction, chain in zip(DIRECTIONS, (INPUT_CHAIN, OUTPUT_CHAIN), strict=True):
            lines += [*_passed_first(chain, version, "RETURN"), *_own_dispatch(program, version, direction)]
    for chain, (kind, side, after_admin) in _chains(program).items():
        lines += _chain_rules(chain, kind, side, after_admin, version)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render(program: NodeProgram) -> IptablesBundle:
    return IptablesBundle(render_ipset(program), render_filter(program, 4), render_filter(program, 6))


def ensure_hook_commands(binary: str, hook: str = "FORWARD") -> tuple[list[str], list[str]]:
    """(check, insert) argument lists for `binary` (iptables, ip6tables, iptables-legacy, …): the
    built-in chain `hook` (FORWARD, INPUT, OUTPUT: `hooks`) jumps to our chain exactly once,
    first."""
    return ([binary, "-w", "-C", hook, "-j", HOOKS[hook]],
            [binary, "-w", "-I", hook, "1", "-j", HOOKS[hook]])


def _hook_jumps(lines: list[str], chains: Iterable[str]) -> list[str]:
    """`-D` lines for the listed jumps into `chains` (our hook chains) from their built-in
    chains, exactly as `ensure_hook_commands` inserts them."""
    jumps = {f"-A {hook} -j {ours}": f"-D {hook} -j {ours}" for hook, ours in HOOKS.items() if ours in chains}
    return [jumps[line] for line in lines if line in jumps]


def _removal(chains: list[str], jumps: list[str]) -> str:
    """Flush `chains` (so none refers to another), delete `jumps`, then the chains: one commit."""
    payload = ["*filter", *(f":{c} - [0:0]" for c in chains), *jumps, *(f"-X {c}" for c in chains), "COMMIT"]
    return "\n".join(payload) + "\n"


def removal_payload(listed: str) -> tuple[str, list[str]]:
    """From `iptables -S` output, the `iptables-restore --noflush` input removing our hook jumps
    (FORWARD, INPUT, OUTPUT) and all our chains in one commit (nothing else), and those chains;
    ('', []) if none."""
    lines = listed.splitlines()
    chains = [line.split()[1] for line in lines
              if line.startswith("-N ") and OUR_CHAIN.match(line.split()[1])]
    jumps = _hook_jumps(lines, HOOKS.values())
    if not chains and not jumps:
        return "", []
    return _removal(chains, jumps), chains


def stale_chain_payload(listed: str, program: NodeProgram) -> str:
    """From `iptables -S` output after the program's payload was loaded, the `iptables-restore
    --noflush` input removing our chains the program no longer has (the new rules no longer jump
    to them): per-side chains, and NETPOL-INPUT/OUTPUT with their hook jumps once the program has
    no tier rules. Flush, then delete; '' when nothing is stale."""
    lines = listed.splitlines()
    keep = {*_chains(program), *(HOOKS[hook] for hook in hooks(program))}
    stale = sorted(name for line in lines if line.startswith("-N ")
                   and OUR_CHAIN.match(name := line.split()[1]) and name not in keep)
    if not stale:
        return ""
    return _removal(stale, _hook_jumps(lines, stale))
