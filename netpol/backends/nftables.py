"""IR → one `table inet netpol`, as an `nft -f` script or as libnftables JSON, replaced atomically
in one transaction.

Layout (DESIGN §3): conntrack replies first; dispatch by pod address through verdict maps
(`egress-v4`, `ingress-v6`, …) into one chain per distinct program side — the pods of a node
that the same policies select (with the same ports, where ingress names one) share it, and it
is named by its content (`ingress-HASH8-ns/policy/policy…`); rules match named peer sets
(`flags interval`) and ports. Per-packet work is one map lookup plus the rules of the policies
selecting that one pod, whatever the number of policies in the cluster; the ruleset grows with
the distinct sides and sets, not with pods × rules (benchmarks/amplification.py).

An address several of the node's pods claim (NodeProgram: shared addresses) is dispatched to a
chain that passes a packet only if every claimant's side allows it (`_shared_dispatch`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from netpol.backends.common import (
    GUARD_CIDRS,
    GUARD_PODS,
    address_text,
    address_texts,
    guarded_families,
    programmed_addresses,
)
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
    add_chain_commands,
    add_set_command,
    chain_lines,
    document,
    element_command,
    map_element_command,
    map_text,
    object_command,
    rules_text,
    script,
    script_head,
    set_text,
)
from netpol.compile.identity_cache import weak_identity_cache
from netpol.compile.ir import (
    Allow,
    DirectionProgram,
    NamedElement,
    NodeProgram,
    PeerSet,
    PodProgram,
    PortSet,
    ports_by_protocol,
)
from netpol.intervals import Interval, merge_intervals
from netpol.model import Direction, IPAddress, IPNetwork

TABLE = "netpol"
FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
DISPATCH_ORDER: tuple[Direction, ...] = ("egress", "ingress")  # the source's egress, then ingress
# ICMPv6 neighbour discovery must pass for isolated pods or IPv6 breaks (PITFALLS 20).
ND_TYPES = ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit", "nd-router-advert")
VERDICTS = {"egress": Verdict("return"), "ingress": Verdict("accept")}  # egress passes on to ingress
OUR_TABLE = Table("inet", TABLE, "")  # what single commands (`add element …`) name


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8].upper()


CHAIN_NAME_MAX = 200  # of nft's 255 characters; the hash keeps cut names unique


@dataclass(frozen=True)
class _Printed:
    """A chain, and its lines inside the table block (printed once: the name needs the text)."""

    chain: Chain
    lines: tuple[str, ...]


def _named_chain(kind: str, label: str, rules: tuple[Rule, ...], comment: str) -> _Printed:
    """A chain named by what it holds, `KIND-HASH8-LABEL`: the hash is of its comment and rules,
    so one name always means one content (an update adds and drops chains by name, never
    rewrites one in place), and programs that hold equal content share one chain."""
    text = rules_text(rules)
    digest = _hash(comment + "\n" + text)
    chain = Chain(f"{kind}-{digest}-{label}"[:CHAIN_NAME_MAX], rules, comment)
    return _Printed(chain, tuple(chain_lines(chain, text)))


def _side_label(isolated_by: tuple[str, ...]) -> str:
    """`ns/policy-a/policy-b`: the policies isolating a side (one namespace: a policy selects
    pods of its own) — the characters nft takes in a name unquoted."""
    namespace = isolated_by[0].partition("/")[0]
    return namespace + "".join("/" + key.partition("/")[2] for key in isolated_by)


def _side_chain(side: DirectionProgram, direction: Direction) -> Chain:
    """The chain of one program side — shared by every pod of the node with an equal side, so
    a policy's rules are in the ruleset once per distinct side, not once per pod (5,000 rules
    over 250 pods: 157 MB when every pod had its own chain)."""
    return _printed_side(side, direction).chain


@weak_identity_cache()  # pods selected alike share the side object
def _printed_side(side: DirectionProgram, direction: Direction) -> _Printed:
    rules = _side_rules(side.isolated_by, side.allows, direction)
    comment = f"{direction} of the pods isolated by {', '.join(side.isolated_by)}"
    return _named_chain(direction, _side_label(side.isolated_by), rules, comment)


@weak_identity_cache()
def _claimant_chain(side: DirectionProgram) -> Chain:
    """An ingress side's rules with `return` for `accept`: one claimant's say on an address
    several pods claim (`_shared_dispatch`). Egress sides return on allow already."""
    rules = _side_rules(side.isolated_by, side.allows, "ingress", VERDICTS["egress"])
    comment = f"ingress of the pods isolated by {', '.join(side.isolated_by)}, as one claimant of an address"
    return _named_chain("ingress", _side_label(side.isolated_by) + "/claimant", rules, comment).chain


def _text(ip: IPAddress) -> str:
    return address_text(ip.version, int(ip))


def _interval_elements(version: int, intervals: tuple[tuple[int, int], ...]) -> tuple[Element, ...]:
    return tuple(address_text(version, a) if a == b else (address_text(version, a), address_text(version, b))
                 for a, b in intervals)


def _named_elements_text(elements: Iterable[NamedElement], version: int) -> list[Element]:
    """`addr . proto . port` elements of one family, in address order."""
    return [(_text(ip), proto.lower(), port)
            for ip, proto, port in sorted((e for e in elements if e[0].version == version),
                                          key=lambda e: (int(e[0]), e[1], e[2]))]


@weak_identity_cache()  # the same set object recurs in every node that uses it
def _declared(peer_set: PeerSet | PortSet) -> tuple[tuple[int, NamedSet], ...]:
    """The set's nft sets, one per family it holds (`NAME-v4`, `NAME-v6`), with that family."""
    if isinstance(peer_set, PortSet):
        return tuple((v, NamedSet(f"{peer_set.name}-v{v}", (FAMILIES[v][1], "inet_proto", "inet_service"),
                                  tuple(_named_elements_text(peer_set.elements, v)),
                                  comment=peer_set.describes))
                     for v in peer_set.families)
    return tuple((v, NamedSet(f"{peer_set.name}-v{v}", (FAMILIES[v][1],),
                              _interval_elements(v, peer_set.v4 if v == 4 else peer_set.v6),
                              interval=peer_set.ranges, comment=peer_set.describes))
                 for v in peer_set.families)


def _port_values(allow: Allow) -> dict[str, list[Element] | None]:
    """Per protocol: the port elements (`N` or `(first, last)`), or None for every port."""
    return {protocol: None if ranges is None else [a if a == b else (a, b) for a, b in ranges]
            for protocol, ranges in ports_by_protocol(allow).items()}


def _first_port(value: Element) -> Any:
    return value[0] if isinstance(value, tuple) else value


def _allow_rules(allow: Allow, direction: Direction, verdict: Verdict) -> tuple[Rule, ...]:
    """Rules (per family, peer set and protocol) that give `verdict` when `allow` matches; a
    family a set holds no address of gets no rule. Made once per allow object (pods selected
    alike share theirs) and kept as long as it lives."""
    made = _rules_of(allow)
    found = made.get((direction, verdict))
    if found is None:
        found = made[(direction, verdict)] = _build_allow_rules(allow, direction, verdict)
    return found


@weak_identity_cache()
def _rules_of(allow: Allow) -> dict[tuple[Direction, Verdict], tuple[Rule, ...]]:
    """The rules made of one allow so far, by direction and verdict."""
    return {}


def _build_allow_rules(allow: Allow, direction: Direction, verdict: Verdict) -> tuple[Rule, ...]:
    rules = []
    peer_field = "saddr" if direction == "ingress" else "daddr"
    for version, (proto_kw, _) in FAMILIES.items():
        peers: list[Statement]
        if allow.peers is None:
            peers = [InValues(Meta("nfproto"), (f"ipv{version}",), braced=False)]
        else:
            peers = [InNamedSet(Payload(proto_kw, peer_field), f"{ref.name}-v{version}")
                     for ref in allow.peers if version in ref.families]
        for peer in peers:
            if allow.ports is None:
                rules.append(Rule((peer, verdict), allow.origin))
                continue
            for protocol, ports in sorted(_port_values(allow).items()):
                match: list[Statement] = [peer, InValues(Meta("l4proto"), (protocol.lower(),), braced=False)]
                if ports is not None:
                    match.append(InValues(Payload("th", "dport"), tuple(sorted(ports, key=_first_port))))
                rules.append(Rule((*match, verdict), allow.origin))
        if allow.named is not None and version in allow.named.families:
            key = Concat((Payload(proto_kw, "daddr"), Meta("l4proto"), Payload("th", "dport")))
            rules.append(Rule((InNamedSet(key, f"{allow.named.name}-v{version}"), verdict), allow.origin))
    return tuple(rules)


def _side_chains(pod: PodProgram) -> Iterator[tuple[Direction, Chain]]:
    """The chains of the pod's isolated sides, egress first."""
    for direction in DISPATCH_ORDER:
        side = pod.side(direction)
        if side.isolated_by:
            yield direction, _side_chain(side, direction)


def _side_rules(isolated_by: tuple[str, ...], allows: tuple[Allow, ...], direction: Direction,
                verdict: Verdict | None = None) -> tuple[Rule, ...]:
    allowed = verdict or VERDICTS[direction]
    rules = [rule for allow in allows for rule in _allow_rules(allow, direction, allowed)]
    rules.append(Rule((Verdict("drop"),), f"no rule of {', '.join(isolated_by)} admits it"))
    return tuple(rules)


Dispatch = dict[Direction, tuple[Chain, tuple[Chain, ...]]]  # the chain jumped to, chains it needs


def _address_dispatch(ip: IPAddress, claimants: Sequence[PodProgram]) -> Dispatch:
    """Per direction: the chain an address's map element jumps to, and the chains that one
    jumps to beyond the pods' side chains. One claimant, or claimants with one distinct
    isolated side: that side's chain. Several: `_shared_dispatch` (fail closed)."""
    found: Dispatch = {}
    for direction in DISPATCH_ORDER:
        sides: dict[str, tuple[DirectionProgram, list[str]]] = {}
        chain = None
        for pod in claimants:
            side = pod.side(direction)
            if side.isolated_by:
                chain = _side_chain(side, direction)
                sides.setdefault(chain.name, (side, []))[1].append(pod.pod)
        if chain is not None:
            found[direction] = (chain, ()) if len(sides) == 1 else \
                _shared_dispatch(ip, direction, list(sides.values()))
    return found


def _shared_dispatch(ip: IPAddress, direction: Direction,
                     sides: list[tuple[DirectionProgram, list[str]]]) -> tuple[Chain, tuple[Chain, ...]]:
    """The chain of an address several pods claim with different sides: it passes a packet
    only if every claimant's side allows it (NodeProgram: shared addresses fail closed). An
    egress side returns on allow and drops otherwise, so jumping into each in turn is an AND;
    an ingress side accepts, so each is jumped through its `_claimant_chain` (return on
    allow), and the packet accepted after the last."""
    needed = tuple(_claimant_chain(side) for side, _ in sides) if direction == "ingress" else ()
    targets = needed or tuple(_side_chain(side, direction) for side, _ in sides)
    rules = [Rule((Verdict("jump", target.name),), f"{direction} of {', '.join(pods)}")
             for target, (_, pods) in zip(targets, sides, strict=True)]
    if direction == "ingress":
        rules.append(Rule((Verdict("accept"),), "every claimant's policies admit it"))
    text = _text(ip)
    claimed = ", ".join(pod for _, pods in sides for pod in pods)
    comment = f"{direction} of {text}, claimed by {claimed}: all must allow it"
    return _named_chain(direction, "shared/" + text.replace(":", "."), tuple(rules), comment).chain, needed


def _table_chains(program: NodeProgram) -> dict[str, Chain]:
    """Every chain of the node's table but `forward`, by name, each after the chains it jumps
    to: the pods' side chains in pod order, then those of shared addresses."""
    chains: dict[str, Chain] = {}
    seen: dict[Direction, set[int]] = {direction: set() for direction in DISPATCH_ORDER}
    for pod in program.pods:  # in pod order, egress first, as `pods_text` prints them
        for direction in DISPATCH_ORDER:
            side = pod.side(direction)
            if side.isolated_by and id(side) not in seen[direction]:  # pods selected alike share sides
                seen[direction].add(id(side))
                chain = _side_chain(side, direction)
                chains.setdefault(chain.name, chain)
    for ip, claimants in program.shared_addresses.items():
        for target, needed in _address_dispatch(ip, claimants).values():
            for chain in (*needed, target):
                chains.setdefault(chain.name, chain)
    return chains


ChainUses = dict[str, tuple[Chain, int]]  # chain name → the chain, and how many pod sides use it


CHAIN_USES = "nftables.chain_uses"  # in NodeProgram.pods_memo: an update's new program is the
# next update's old one, or the same pods with newer sets


def _chain_uses(program: NodeProgram) -> ChainUses:
    """The chains of the node's table (`_table_chains`), with their users counted."""
    uses: ChainUses | None = program.pods_memo.get(CHAIN_USES)
    if uses is None:
        uses = {name: (chain, 0) for name, chain in _table_chains(program).items()}
        for pod in program.pods:
            for _, chain in _side_chains(pod):
                uses[chain.name] = (chain, uses[chain.name][1] + 1)
        program.pods_memo[CHAIN_USES] = uses
    return uses


def _next_chain_uses(old: NodeProgram, new: NodeProgram, leaving: list[PodProgram],
                     arriving: list[PodProgram]) -> ChainUses:
    """`_chain_uses(new)`, from old's and the pods that changed: an event touches a few pods of
    the node, and recounting all of them was most of an update (250 pods, 3.5 ms)."""
    if old.shared_addresses or new.shared_addresses:  # rare: counted from scratch
        return _chain_uses(new)
    uses = dict(_chain_uses(old))
    for pods, step in ((leaving, -1), (arriving, 1)):
        for pod in pods:
            for _, chain in _side_chains(pod):
                count = uses.get(chain.name, (chain, 0))[1] + step
                if count:
                    uses[chain.name] = (chain, count)
                else:
                    del uses[chain.name]
    new.pods_memo[CHAIN_USES] = uses
    return uses


def _dispatch_targets(program: NodeProgram, ip: IPAddress) -> dict[str, str]:
    """Map name → the chain the address's element jumps to, in `program`."""
    return {f"{direction}-v{ip.version}": chain.name
            for direction, (chain, _) in _address_dispatch(ip, program.by_address.get(ip, ())).items()}


def dispatch_chain(program: NodeProgram, ip: IPAddress, direction: Direction) -> str | None:
    """The chain the address's `direction` map element jumps to (None: not isolated that way)."""
    return _dispatch_targets(program, ip).get(f"{direction}-v{ip.version}")


def _dispatch_maps(program: NodeProgram) -> list[VerdictMap]:
    entries: dict[str, list[tuple[str, Verdict]]] = {
        f"{direction}-v{version}": [] for direction in DISPATCH_ORDER for version in FAMILIES}
    shared = program.shared_addresses
    for pod in program.pods:
        for ip in pod.ips:
            if ip in shared and shared[ip][0] is not pod:
                continue  # the address's element comes with its first claimant
            for direction, (chain, _) in _address_dispatch(ip, shared.get(ip, (pod,))).items():
                entries[f"{direction}-v{ip.version}"].append((_text(ip), Verdict("jump", chain.name)))
    return [VerdictMap(f"{direction}-v{version}", addr_type, tuple(entries[f"{direction}-v{version}"]))
            for direction in DISPATCH_ORDER for version, (_, addr_type) in FAMILIES.items()]


@functools.lru_cache(maxsize=16)
def _forward(guarded: tuple[int, ...]) -> Chain:
    """The forward hook. For each family in `guarded` (the node has podCIDRs of it), before any
    policy: traffic from or to an address in the node's podCIDRs that is not a pod the program
    knows is dropped — a pod the agent has not programmed yet is neither reachable nor reaching."""
    guards = [Rule((InNamedSet(Payload(FAMILIES[v][0], field), f"{GUARD_CIDRS}-v{v}"),
                    InNamedSet(Payload(FAMILIES[v][0], field), f"{GUARD_PODS}-v{v}", negate=True),
                    Verdict("drop")),
                   f"{way} an address of this node's podCIDRs that is no pod netpol has programmed")
              for v in guarded for field, way in (("saddr", "from"), ("daddr", "to"))]
    return Chain("forward", (
        Rule((InFlags(Ct("state"), ("established", "related")), Verdict("accept")),
             "replies of allowed connections"),
        Rule((InValues(Payload("icmpv6", "type"), ND_TYPES), Verdict("accept")), "IPv6 neighbour discovery"),
        *guards,
        *(Rule((VerdictMapLookup(Payload(proto_kw, field), f"{direction}-v{version}"),))
          for direction, field in (("egress", "saddr"), ("ingress", "daddr"))
          for version, (proto_kw, _) in FAMILIES.items()),
    ), "pod traffic: routed, and bridged through br_netfilter",
        BaseHook("filter", "forward", "filter", "accept"))


def _guard_sets(node: str, pod_cidrs: Sequence[IPNetwork],
                programmed: Callable[[int], tuple[str, ...]]) -> Iterator[NamedSet]:
    for v in guarded_families(pod_cidrs):
        cidrs = merge_intervals((int(c.network_address), int(c.broadcast_address))
                                for c in pod_cidrs if c.version == v)
        yield NamedSet(f"{GUARD_CIDRS}-v{v}", (FAMILIES[v][1],), _interval_elements(v, tuple(cidrs)),
                       interval=True, comment=f"podCIDRs of node {node}")
        yield NamedSet(f"{GUARD_PODS}-v{v}", (FAMILIES[v][1],), programmed(v),
                       comment=f"pods netpol has programmed on node {node}")


def _table_comment(node: str) -> str:
    return f"netpol: Kubernetes NetworkPolicy for node {node}"


def _script_header(node: str) -> str:
    return f"netpol ruleset for node {node}: `nft -f` replaces table inet {TABLE} atomically"


def build_table(program: NodeProgram) -> Table:
    """The node's table: sets, dispatch maps, the forward hook and one chain per distinct
    isolated program side (and, for addresses several pods claim, the chains that AND them)."""
    guard_sets = _guard_sets(program.node, program.pod_cidrs, lambda v: programmed_addresses(program, v))
    return Table("inet", TABLE, _table_comment(program.node),
                 sets=(*guard_sets,
                       *(s for ps in (*program.peer_sets, *program.port_sets) for _, s in _declared(ps))),
                 maps=tuple(_dispatch_maps(program)),
                 chains=(_forward(guarded_families(program.pod_cidrs)), *_table_chains(program).values()))


@dataclass(frozen=True)
class PodsText:
    """Some pods' share of their node's `nft -f` script, printed: what `script_text` joins.
    Printing it needs only the pods' programs, so a node's pods can be printed in parts,
    wherever their programs were compiled (netpol.pipeline.sharded), then joined in pod order.
    Parts must not share a side chain: parts of different namespaces never do (a side is
    isolated by policies of its pod's namespace)."""

    addresses: tuple[tuple[int, int], ...]  # (version, integer) of each pod: the node-pods guard set
    map_elements: dict[str, str]  # map name → its `ADDRESS : jump CHAIN` elements, joined by ", "
    chains: tuple[str, ...]  # the pods' side chains, line by line (rule blocks shared, not copied)


def pods_text(pods: Iterable[PodProgram]) -> PodsText:
    """The pods' dispatch-map elements and side chains (each distinct side once), printed
    straight: an all-nodes compile prints every pod once. For pods with distinct addresses
    only: `render` takes the object route when a node's pods share one."""
    elements: dict[str, list[str]] = {}
    lines: list[str] = []
    addresses: list[tuple[int, int]] = []
    printed: set[str] = set()
    for pod in pods:
        for direction in DISPATCH_ORDER:
            side = pod.ingress if direction == "ingress" else pod.egress
            if not side.isolated_by:
                continue
            name, block = _side_lines(side, direction)
            for ip in pod.ips:
                elements.setdefault(f"{direction}-v{ip.version}", []).append(f"{_text(ip)} : jump {name}")
            if name not in printed:
                printed.add(name)
                lines += block
        addresses += ((ip.version, int(ip)) for ip in pod.ips)
    return PodsText(tuple(addresses), {name: ", ".join(found) for name, found in elements.items()},
                    tuple(lines))


def _side_lines(side: DirectionProgram, direction: Direction) -> tuple[str, tuple[str, ...]]:
    """The side chain's name, and the chain printed inside the table block."""
    printed = _printed_side(side, direction)
    return printed.chain.name, printed.lines


@weak_identity_cache()  # every node that uses the set prints it
def set_lines(peer_set: PeerSet | PortSet) -> tuple[str, ...]:
    """The set's declarations inside the table block, one per family it holds."""
    return tuple(set_text(named) for _, named in _declared(peer_set))


def script_text(node: str, pod_cidrs: Sequence[IPNetwork], parts: Sequence[PodsText],
                sets: Iterable[str]) -> str:
    """The node's complete `nft -f` script from its pods' printed parts (in pod order) and its
    sets' declarations (`set_lines`, in the program's set order): exactly `script(build_table(…))`."""
    table = Table("inet", TABLE, _table_comment(node))

    def programmed(version: int) -> tuple[str, ...]:
        return address_texts((a for part in parts for a in part.addresses), version)

    lines = [
        *script_head(table, _script_header(node)),
        *(set_text(s) for s in _guard_sets(node, pod_cidrs, programmed)),
        *sets,
        *(map_text(name, addr_type, [e for part in parts if (e := part.map_elements.get(name, ""))])
          for direction in DISPATCH_ORDER for version, (_, addr_type) in FAMILIES.items()
          for name in (f"{direction}-v{version}",)),
        *chain_lines(_forward(guarded_families(pod_cidrs))),
        *(line for part in parts for line in part.chains),
        "}",
    ]
    return "\n".join(lines) + "\n"


def render(program: NodeProgram) -> str:
    """The complete ruleset of one node, as an `nft -f` script that replaces the previous one."""
    if program.shared_addresses:  # rare (a broken cluster): printed from the object model
        return script(build_table(program), _script_header(program.node))
    sets: list[PeerSet | PortSet] = [*program.peer_sets, *program.port_sets]
    return script_text(program.node, program.pod_cidrs, [pods_text(program.pods)],
                       (line for ps in sets for line in set_lines(ps)))


def render_json(program: NodeProgram) -> dict[str, Any]:
    """The same ruleset as libnftables JSON (`nft -j -f`), one transaction."""
    return document(build_table(program))


def _element_changes(before: PeerSet | PortSet, after: PeerSet | PortSet,
                     families: Iterable[int]) -> Iterator[tuple[str, str, list[Element]]]:
    """(verb, nft set, elements) that turn `before`'s declared sets of `families` into `after`'s,
    computed on the IR's values so that only the elements that changed get printed."""
    for v in families:
        if isinstance(before, PortSet) and isinstance(after, PortSet):
            for verb, named in (("delete", before.elements - after.elements),
                                ("add", after.elements - before.elements)):
                if listed := _named_elements_text(named, v):
                    yield verb, f"{after.name}-v{v}", listed
        elif isinstance(before, PeerSet) and isinstance(after, PeerSet):
            was, now = (before.v4, after.v4) if v == 4 else (before.v6, after.v6)
            for verb, changed in zip(("delete", "add"), sorted_changes(was, now), strict=True):
                if changed:
                    yield verb, f"{after.name}-v{v}", list(_interval_elements(v, tuple(changed)))


_SKIP_BLOCK = 256


def sorted_changes(was: Sequence[Interval], now: Sequence[Interval]) -> tuple[list[Interval], list[Interval]]:
    """(only in `was`, only in `now`) of two sorted sequences of distinct elements: a merge that
    skips equal runs a block at a time (one slice comparison in C; the incremental compiler's
    sets share their elements, so that is pointer identity), and steps element by element only
    through the blocks that differ. One pod joining a 100,000-address set costs some 400 block
    comparisons, where building two hash sets to diff them took 30 ms."""
    removed: list[Interval] = []
    added: list[Interval] = []
    i = j = 0
    while i < len(was) and j < len(now):
        if was[i:i + _SKIP_BLOCK] == now[j:j + _SKIP_BLOCK]:
            i += _SKIP_BLOCK
            j += _SKIP_BLOCK
            continue
        a, b = was[i], now[j]
        if a == b:
            i += 1
            j += 1
        elif a < b:
            removed.append(a)
            i += 1
        else:
            added.append(b)
            j += 1
    removed.extend(was[i:])
    added.extend(now[j:])
    return removed, added


@weak_identity_cache(weak_args=2)  # one event's changed set is in many nodes' updates
def _element_commands(before: PeerSet | PortSet, after: PeerSet | PortSet,
                      families: tuple[int, ...]) -> list[str]:
    return [element_command(verb, OUR_TABLE, set_name, elements)
            for verb, set_name, elements in _element_changes(before, after, families)]


def _dispatch_changes(old: NodeProgram, new: NodeProgram, leaving: list[PodProgram],
                      arriving: list[PodProgram]) -> list[str]:
    """The chain and map-element commands of `render_update`, for pods whose programs changed
    (their old versions `leaving`, their new ones `arriving`). Chains are named by content, so
    a name in both tables is the same chain: only names in one of them are added or dropped.
    Map elements change for the changed pods' addresses only (with the other claimants of an
    address)."""
    table = OUR_TABLE
    old_chains, new_chains = _chain_uses(old), _next_chain_uses(old, new, leaving, arriving)
    lines = [line for name, (chain, _) in new_chains.items() if name not in old_chains
             for line in add_chain_commands(table, chain)]
    changed = [*leaving, *arriving]
    moved: dict[str, tuple[list[tuple[str, Verdict]], list[tuple[str, Verdict]]]] = {}
    for ip in dict.fromkeys(ip for pod in changed for ip in pod.ips):
        was, now = _dispatch_targets(old, ip), _dispatch_targets(new, ip)
        for map_name in was.keys() | now.keys():
            if was.get(map_name) != now.get(map_name):
                going, coming = moved.setdefault(map_name, ([], []))
                if map_name in was:
                    going.append((_text(ip), Verdict("jump", was[map_name])))
                if map_name in now:
                    coming.append((_text(ip), Verdict("jump", now[map_name])))
    for verb, at in (("delete", 0), ("add", 1)):
        lines += [map_element_command(verb, table, map_name, elements[at])
                  for map_name, elements in sorted(moved.items()) if elements[at]]
    dropped = [name for name in old_chains if name not in new_chains]
    lines += [object_command("flush", "chain", table, name) for name in dropped]  # then no jump
    lines += [object_command("delete", "chain", table, name) for name in dropped]  # refers to them
    return lines


def render_update(old: NodeProgram, new: NodeProgram) -> str:
    """An `nft -f` script that takes a kernel holding `render(old)` to exactly `render(new)` in
    one transaction, touching only what differs: sets added, removed or with other elements
    (`add`/`delete element`), the dispatch-map elements of the addresses of pods whose programs
    changed, and the chains no pod uses any more or that no pod used before. Empty when
    nothing differs.

    Order within the transaction: new sets; element changes; new chains; map elements moved
    to their new chains; chains nothing jumps to any more flushed, then dropped; finally sets
    nothing uses. When the node's podCIDRs changed, the forward hook itself differs: the update
    is then the whole new table (still one transaction)."""
    if old.pod_cidrs != new.pod_cidrs:
        return render(new)
    table = OUR_TABLE
    old_sets: list[PeerSet | PortSet] = [*old.peer_sets, *old.port_sets]
    new_sets: list[PeerSet | PortSet] = [*new.peer_sets, *new.port_sets]
    if len(old_sets) == len(new_sets) and all(  # usual: the same sets, most the same objects
            a is b or a.name == b.name for a, b in zip(old_sets, new_sets, strict=True)):
        pairs: list[tuple[PeerSet | PortSet | None, PeerSet | PortSet]] = [
            *zip(old_sets, new_sets, strict=True)]
        was: dict[str, PeerSet | PortSet] = {}
    else:
        was = {ps.name: ps for ps in old_sets}
        pairs = [(was.pop(ps.name, None), ps) for ps in new_sets]
    lines: list[str] = []
    unused: list[str] = []  # nft sets to delete once no chain refers to them
    for before, after in pairs:
        if before is after or before == after:
            continue
        old_families = before.families if before is not None else ()
        if before is None or old_families != after.families:
            lines += [add_set_command(table, ns) for v, ns in _declared(after) if v not in old_families]
        if before is not None:
            if old_families != after.families:
                unused += [ns.name for v, ns in _declared(before) if v not in after.families]
            common = tuple(v for v in after.families if v in old_families)
            lines += _element_commands(before, after, common)
    unused += [ns.name for ps in was.values() for _, ns in _declared(ps)]  # sets no longer declared
    if old.pods is new.pods:
        leaving: list[PodProgram] = []
        arriving: list[PodProgram] = []
    else:
        old_pods = {pod.pod: pod for pod in old.pods}
        new_pods = {pod.pod: pod for pod in new.pods}
        leaving = [pod for key, pod in old_pods.items() if (n := new_pods.get(key)) is not pod and n != pod]
        arriving = [pod for key, pod in new_pods.items() if (o := old_pods.get(key)) is not pod and o != pod]
    if leaving or arriving:
        for v in guarded_families(new.pod_cidrs):
            held, now = set(programmed_addresses(old, v)), set(programmed_addresses(new, v))
            for verb, changed in (("delete", [a for a in held if a not in now]),
                                  ("add", [a for a in now if a not in held])):
                if changed:
                    lines.append(element_command(verb, table, f"{GUARD_PODS}-v{v}", sorted(changed)))
        lines += _dispatch_changes(old, new, leaving, arriving)
    lines += [object_command("delete", "set", table, name) for name in unused]
    if not lines:
        return ""
    header = (f"# netpol update for node {new.node}: {len(arriving)} pod programs in, {len(leaving)} out, "
              f"one transaction")
    return "\n".join([header, *lines]) + "\n"
