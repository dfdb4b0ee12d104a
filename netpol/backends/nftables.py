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

ClusterNetworkPolicy tiers (DESIGN §2b). A side with tier rules is a chain that `jump`s to the
chain of its Admin rules (one per distinct set of them, shared by every side the same cluster
policies select: Accept allows, Deny drops, Pass and no match `return`), then the NetworkPolicy
tier: when NetworkPolicies isolate the side, a `goto` to their chain (their allows, then drop: the
chain a pod without cluster policies has, printed once however many cluster policies split its
pods), else the Baseline rules (Accept and Pass allow, Deny drops), then allow. An egress Accept
cannot `return` (on to the NetworkPolicy tier): it `goto`s `egress-accepted`, the forward hook's
ingress maps, so the destination's ingress still decides. The claimant variants (an address
several pods share) keep their Admin rules inline, a Pass `goto`ing the rest (`…/after-admin`).
Still one map lookup, then only the rules of the policies selecting that pod (and one `jump`).
Traffic between a pod and its own node is delivered locally (input/output hooks), never
forwarded: when the node's programs have tier rules that could match a node's address
(`DirectionProgram.node_tiered`: rules with `networks` or `nodes` peers, or failing closed),
`input` and `output` chains dispatch it (`own-egress-v4` by source, `own-ingress-v4` by
destination) to such a side's own-node variant, whose NetworkPolicy tier allows (the exemption:
shared by cluster policies alone, whichever NetworkPolicies isolate the side) while the cluster
tiers still decide. Other sides have no own-node element:
no tier rule of theirs matches a node, so the exemption or the default allows it. Without such rules
the table has neither hook, exactly as before.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
    quote,
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
    TierRule,
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
DROP = Verdict("drop")
_NAME_UNSAFE = re.compile(r"[^a-z0-9.-]")  # cluster policy names in chain labels (DNS subdomains)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8].upper()


CHAIN_NAME_MAX = 200  # of nft's 255 characters; the hash keeps cut names unique


class _Printed:
    """A chain, and its lines inside the table block, joined (printed once: the name needs the
    text; joined once, not in every node's script). The chain object itself (its rules: what
    updates add and the JSON form holds) is made when first asked for: printing every node's
    table needs its name and text only. (A plain class: made once per printed chain.)"""

    def __init__(self, name: str, text: str, comment: str,
                 rules: tuple[Rule, ...] | Callable[[], tuple[Rule, ...]]) -> None:
        self.name, self.text, self.comment, self.rules = name, text, comment, rules

    @functools.cached_property
    def chain(self) -> Chain:
        return Chain(self.name, self.rules if isinstance(self.rules, tuple) else self.rules(), self.comment)

    @classmethod
    def of(cls, chain: Chain, text: str) -> _Printed:
        made = cls(chain.name, text, chain.comment or "", chain.rules)
        made.__dict__["chain"] = chain  # its cached_property
        return made


def _named_chain(kind: str, label: str, rules: tuple[Rule, ...], comment: str) -> _Printed:
    """A chain named by what it holds, `KIND-HASH8-LABEL`: the hash is of its comment and rules,
    so one name always means one content (an update adds and drops chains by name, never
    rewrites one in place), and programs that hold equal content share one chain."""
    text = rules_text(rules)
    digest = _hash(comment + "\n" + text)
    chain = Chain(f"{kind}-{digest}-{label}"[:CHAIN_NAME_MAX], rules, comment)
    return _Printed.of(chain, "\n".join(chain_lines(chain, text)))


def _side_label(isolated_by: tuple[str, ...]) -> str:
    """`ns/policy-a/policy-b`: the policies isolating a side (one namespace: a policy selects
    pods of its own) — the characters nft takes in a name unquoted."""
    namespace = isolated_by[0].partition("/")[0]
    return namespace + "".join("/" + key.partition("/")[2] for key in isolated_by)


Variant = Literal["forward", "claimant", "own", "own-claimant"]
# Per variant: where it is used (label suffix), and its verdict on allow (None: the direction's)
VARIANTS: dict[str, tuple[str, Verdict | None]] = {
    "forward": ("", None),
    "claimant": ("/claimant", Verdict("return")),  # one claimant's say on a shared address
    "own": ("/own-node", Verdict("accept")),  # traffic with the pod's own node (input/output hooks)
    "own-claimant": ("/own-node/claimant", Verdict("return")),
}


def _side_group(side: DirectionProgram, direction: Direction, variant: Variant) -> tuple[_Printed, ...]:
    """The chains of one side in one variant, those it jumps to first, the one to jump to last.
    A side without tier rules is one chain, exactly as before cluster policies existed. The
    dispatched variants are kept with the side's `_side_dispatch`, the others on their own."""
    if variant in {"forward", "own"}:
        found = _side_dispatch(side, direction)[variant == "own"]
        if found is not None:
            return found[2]
    return _kept_side_group(side, direction, variant)


def _side_groups_kept() -> int:
    """How many sides' groups are kept (`_side_group.cache_len`): with their dispatch, or alone."""
    return int(_side_dispatch.cache_len() + _kept_side_group.cache_len())  # type: ignore[attr-defined]


_side_group.cache_len = _side_groups_kept  # type: ignore[attr-defined]


@weak_identity_cache()  # pods selected alike share the side object
def _kept_side_group(side: DirectionProgram, direction: Direction, variant: Variant) -> tuple[_Printed, ...]:
    return _made_side_group(side, direction, variant)


def _made_side_group(side: DirectionProgram, direction: Direction, variant: Variant) -> tuple[_Printed, ...]:
    """`_side_group`, made."""
    allowed = VARIANTS[variant][1] or VERDICTS[direction]
    if not side.tiered:
        return (_isolated_chain(side.isolated_by, side.allows, direction, variant),)
    return _tiered_group(side, direction, variant, allowed)


@functools.lru_cache(maxsize=1 << 10)  # about one node's sides (in a batch compile, each is new)
def _isolated_chain(isolated_by: tuple[str, ...], allows: tuple[Allow, ...], direction: Direction,
                    variant: Variant) -> _Printed:
    """The chain of a side NetworkPolicies isolate, without tier rules: their allows, then
    drop. A tiered side they isolate ends in a `goto` to it (`_tiered_group`): pods selected
    by other cluster policies but the same NetworkPolicies share it, and the chain of a pod no
    cluster policy selects."""
    suffix, verdict = VARIANTS[variant]
    rules = _side_rules(isolated_by, allows, direction, verdict or VERDICTS[direction])
    comment = f"{direction} of the pods isolated by {', '.join(isolated_by)}"
    if variant == "claimant":
        comment += ", as one claimant of an address"
    return _named_chain(direction, _side_label(isolated_by) + suffix, rules, comment)


def _tiered_group(side: DirectionProgram, direction: Direction, variant: Variant,
                  allowed: Verdict) -> tuple[_Printed, ...]:
    """Admin rules, then the NetworkPolicy tier (its own-node exemption in the `own` variants),
    else the Baseline rules, then allow (see the module). Printed from blocks kept per content
    (`_tier_block`, `_baseline_block`, `_admin_chain`): sides differ in their NetworkPolicies or
    in their cluster policies, rarely in both, and a cluster-policy event makes new sides of
    every pod it selects (the node's whole table, for a policy of every namespace). A side that
    NetworkPolicies isolate ends in a `goto` to their chain (`_isolated_chain`, shared by
    every side they isolate): its `return`/`accept` is the side's, as if inline. In the own-node
    variants, which NetworkPolicies isolate it does not matter (they exempt the node): such
    sides share their chains by cluster policies alone (`_own_exempt_group`)."""
    if side.isolated and variant.startswith("own"):
        return _own_exempt_group(side.admin, side.cluster_policies, direction, variant, allowed)
    tiers = _tiers_named(side.cluster_policies, direction, variant)
    isolated = _isolated_named(side.isolated_by) if side.isolated else ("", "")
    label, comment = tiers[0] + isolated[0] + tiers[1], tiers[2] + isolated[1] + tiers[3]
    return _tier_chains(side, direction, variant, allowed, label=label, comment=comment)


@functools.lru_cache(maxsize=1 << 10)
def _own_exempt_group(admin: tuple[TierRule, ...], cluster_policies: tuple[str, ...], direction: Direction,
                      variant: Variant, allowed: Verdict) -> tuple[_Printed, ...]:
    """The own-node variant of a side NetworkPolicies isolate: its Admin rules, then allow."""
    tiers = _tiers_named(cluster_policies, direction, variant)
    label = tiers[0] + "/isolated" + tiers[1]
    comment = tiers[2] + ", isolated by NetworkPolicies (their own node exempt)" + tiers[3]
    side = DirectionProgram(_EXEMPT, (), admin)
    return _tier_chains(side, direction, variant, allowed, label=label, comment=comment)


_EXEMPT = ("NetworkPolicies",)  # `_own_exempt_group`'s side: isolated, whoever by


def _tier_chains(side: DirectionProgram, direction: Direction, variant: Variant, allowed: Verdict,
                 *, label: str, comment: str) -> tuple[_Printed, ...]:
    """`_tiered_group`'s chains, named `label`: the Admin tier — a `jump` to its own chain
    (`_admin_chain`) in the variants a hook's map jumps to, else inline — then a `goto` to the
    NetworkPolicy chain, the own-node exemption, or the Baseline rules and allow."""
    own = variant.startswith("own")
    policies = _isolated_chain(side.isolated_by, side.allows, direction, variant) \
        if side.isolated and not own else None
    needed = (policies,) if policies is not None else ()
    after = _goto_block(policies.name) if policies is not None else \
        _exempt_block(allowed) if side.isolated else _baseline_block(side.baseline, direction, allowed)
    if side.admin and variant in SHARED_ADMIN_VARIANTS:
        admin_group, jump, jump_text = _admin_chain(side.admin, direction, variant)
        head = _named_chain_text(direction, label, lambda: (jump, *after[0]), comment, jump_text, after[1])
        return (*admin_group, *needed, head)
    admin = _tier_block(side.admin, direction, allowed)
    admin_rules, admin_text, passing = admin
    if policies is not None:
        return policies, _admin_then(direction, label, comment, admin, Verdict("goto", policies.name))
    if not passing:
        return (_named_chain_text(direction, label, lambda: (*admin_rules, *after[0]), comment,
                                  admin_text, after[1]),)
    tail = _named_chain_text(direction, label + "/after-admin", after[0], comment + ": after the Admin tier",
                             after[1])
    return tail, _admin_then(direction, label, comment, admin, Verdict("goto", tail.name))


SHARED_ADMIN_VARIANTS = ("forward", "own")  # a claimant's side returns on allow: its Admin rules inline


@functools.lru_cache(maxsize=1 << 10)
def _admin_chain(rules: tuple[TierRule, ...], direction: Direction,
                 variant: Variant) -> tuple[tuple[_Printed, ...], Rule, str]:
    """The chain of a side's Admin rules in order, entered by `jump`: Accept allows, Deny
    drops, Pass and no match `return` (on to the rest of the side: the NetworkPolicy tier).
    An egress Accept cannot `return` (that would go on to the NetworkPolicy tier too): it is a
    `goto` to EGRESS_ACCEPTED, the destination's ingress dispatch. With the chains it needs,
    the rule that jumps to it, and that rule's text."""
    accepted = Verdict("goto", EGRESS_ACCEPTED) if (direction, variant) == ("egress", "forward") \
        else VARIANTS[variant][1] or VERDICTS[direction]
    made = tuple(_tier_rules(rules, direction, accepted, Verdict("return")))
    names = tuple(dict.fromkeys(rule.policy for rule in rules))
    own = variant.startswith("own")
    label = f"cnp/{'/'.join(_NAME_UNSAFE.sub('-', name) for name in names)}/admin{VARIANTS[variant][0]}"
    policies = ", ".join(names)
    chain = _named_chain(direction, label, made, f"{direction}: the Admin tier of {policies}"
                         + (" (with their own node)" if own else ""))
    accepts = accepted.kind == "goto" and any(rule.action == "Accept" for rule in rules)
    needed = (_egress_accepted(),) if accepts else ()
    jump = Rule((Verdict("jump", chain.name),), f"Admin tier: ClusterNetworkPolicy {policies}")
    return (*needed, chain), jump, rules_text((jump,))


EGRESS_ACCEPTED = "egress-accepted"


@functools.lru_cache(maxsize=1)
def _egress_accepted() -> _Printed:
    """Where an Admin egress Accept goes: the source's egress is decided, the destination's
    ingress still decides (the forward hook's ingress maps, then its policy: accept)."""
    rules = (*(Rule((VerdictMapLookup(Payload(proto_kw, "daddr"), f"ingress-v{version}"),))
               for version, (proto_kw, _) in FAMILIES.items()),
             Rule((Verdict("accept"),), "no ingress policy isolates the destination"))
    chain = Chain(EGRESS_ACCEPTED, rules,
                  "egress allowed by an Admin tier Accept: on to the destination's ingress")
    return _Printed.of(chain, "\n".join(chain_lines(chain)))


@functools.lru_cache(maxsize=1 << 12)
def _goto_block(name: str) -> Block:
    """The last rule of a side whose Admin tier did not decide: on to the NetworkPolicy tier."""
    made = (Rule((Verdict("goto", name),), _NO_ADMIN_DECIDED),)
    return made, rules_text(made)


def _admin_then(direction: Direction, label: str, comment: str, admin: AdminBlock,
                onward: Verdict) -> _Printed:
    """The Admin rules (`_tier_block`), their Pass rules and the last rule (no Admin rule
    decided) going `onward` (a `goto` to the rest of the side)."""
    admin_rules, admin_text, passing = admin
    going = onward.text()

    def head() -> tuple[Rule, ...]:
        rules = list(admin_rules)
        for at in passing:
            rules[at] = Rule((*rules[at].statements[:-1], onward), rules[at].comment)
        return (*rules, Rule((onward,), _NO_ADMIN_DECIDED))

    passed = admin_text.replace(_PASS_MARK_TEXT, f" {going}") if passing else admin_text
    return _named_chain_text(direction, label, head, comment, passed,
                             _LAST_TEXT.replace(PASS_MARK.text(), going, 1))


Block = tuple[tuple[Rule, ...], str]  # rules, and their `rules_text`
AdminBlock = tuple[tuple[Rule, ...], str, tuple[int, ...]]  # and the positions of Pass rules
PASS_MARK = Verdict("goto", "\x00pass\x00")  # where a Pass rule's `goto` goes, until it is known
_PASS_MARK_TEXT = f" {PASS_MARK.text()}"  # no name or comment holds a NUL
_NO_ADMIN_DECIDED = "no Admin tier rule decided"  # the last rule of an Admin tier with Pass rules
_LAST_TEXT = f"\t\t{Rule((PASS_MARK,), _NO_ADMIN_DECIDED).text}"


def _named_chain_text(kind: str, label: str, rules: tuple[Rule, ...] | Callable[[], tuple[Rule, ...]],
                      comment: str, *texts: str) -> _Printed:
    """`_named_chain`, given `rules_text(rules)` in consecutive parts (a part may be empty: a
    block that prints no rule), and the rules or what makes them (`_Printed`)."""
    parts = [text for text in texts if text]
    hashed = "\n".join([comment, *parts]) if parts else comment + "\n"  # comment + "\n" + rules_text
    name = f"{kind}-{_hash(hashed)}-{label}"[:CHAIN_NAME_MAX]
    lines = [f"\tchain {name} {{", f"\t\tcomment {quote(comment)}", *parts, "\t}"]  # chain_lines
    return _Printed(name, "\n".join(lines), comment, rules)


@functools.lru_cache(maxsize=1 << 10)
def _tier_block(rules: tuple[TierRule, ...], direction: Direction, allowed: Verdict) -> AdminBlock:
    """A tier's rules (`_tier_rules`) and their text, kept per content (pods whose cluster
    policies are alike have equal tiers, whatever their NetworkPolicies); Pass rules go to
    PASS_MARK, at the positions listed last (none: the tier has no Pass rule)."""
    passes = any(r.action == "Pass" for r in rules)
    made = tuple(_tier_rules(rules, direction, allowed, PASS_MARK if passes else allowed))
    passing = tuple(i for i, rule in enumerate(made) if rule.statements[-1] == PASS_MARK) if passes else ()
    return made, rules_text(made), passing


@functools.lru_cache(maxsize=1 << 10)
def _baseline_block(rules: tuple[TierRule, ...], direction: Direction, allowed: Verdict) -> Block:
    """The Baseline tier of a side no NetworkPolicy isolates, then the default: allow."""
    made = (*_tier_rules(rules, direction, allowed, allowed),
            Rule((allowed,), "no tier decided: default allow"))
    return made, rules_text(made)


@functools.lru_cache(maxsize=8)
def _exempt_block(allowed: Verdict) -> Block:
    made = (Rule((allowed,), "their own node: exempt in the NetworkPolicy tier"),)
    return made, rules_text(made)


@functools.lru_cache(maxsize=1 << 10)
def _tiers_named(cluster_policies: tuple[str, ...], direction: Direction,
                 variant: Variant) -> tuple[str, ...]:
    """A tiered side's chain label is `cnp/NAME/NAME` (the cluster policies with rules on the
    side, in characters nft takes in a name unquoted), then `/ns/policy…` if NetworkPolicies
    isolate it (`_isolated_named`), then the variant's suffix; its comment is built alike.
    Here: the label's start and end, the comment's start and end."""
    names = "/".join(_NAME_UNSAFE.sub("-", name) for name in cluster_policies)
    own = " (with their own node)" if variant.startswith("own") else ""
    claimant = ", as one claimant of an address" if "claimant" in variant else ""
    return (f"cnp/{names}", VARIANTS[variant][0],
            f"{direction} of the pods subject to {', '.join(cluster_policies)}", own + claimant)


@functools.lru_cache(maxsize=1 << 12)
def _isolated_named(isolated_by: tuple[str, ...]) -> tuple[str, str]:
    """The middle of a tiered side's label and comment when NetworkPolicies isolate it."""
    return f"/{_side_label(isolated_by)}", f", isolated by {', '.join(isolated_by)}"


def _tier_rules(rules: tuple[TierRule, ...], direction: Direction, allowed: Verdict,
                passed: Verdict) -> list[Rule]:
    """A tier's rules in order: Accept gives `allowed`, Deny drops, Pass gives `passed`."""
    return [rule for tier_rule in rules for rule in _allow_rules(
        tier_rule.match, direction,
        allowed if tier_rule.action == "Accept" else DROP if tier_rule.action == "Deny" else passed)]


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


def _side_chains(pod: PodProgram) -> Iterator[Chain]:
    """The chains of the pod's enforced sides, egress first: each side's forward group, then
    its own-node group when it has tier rules; each group's chains before the one that jumps
    to them."""
    for direction in DISPATCH_ORDER:
        for found in _side_dispatch(pod.side(direction), direction):
            if found is not None:
                for printed in found[2]:
                    yield printed.chain


def _side_rules(isolated_by: tuple[str, ...], allows: tuple[Allow, ...], direction: Direction,
                verdict: Verdict | None = None) -> tuple[Rule, ...]:
    allowed = verdict or VERDICTS[direction]
    rules = [rule for allow in allows for rule in _allow_rules(allow, direction, allowed)]
    rules.append(Rule((Verdict("drop"),), f"no rule of {', '.join(isolated_by)} admits it"))
    return tuple(rules)


Dispatch = dict[str, tuple[Chain, tuple[Chain, ...]]]  # map kind → the chain jumped to, chains it needs
# The dispatch maps: kind (the map is `KIND-v4`/`-v6`), the side's direction, the variant jumped to
DISPATCHES: tuple[tuple[str, Direction, Variant], ...] = (
    ("egress", "egress", "forward"), ("ingress", "ingress", "forward"),
    ("own-egress", "egress", "own"), ("own-ingress", "ingress", "own"))
CLAIMANT_VARIANT: dict[Variant, Variant] = {"forward": "claimant", "own": "own-claimant"}


def _dispatched(side: DirectionProgram, variant: Variant) -> bool:
    """Does the side get a map element: forward, when anything can deny on it; own-node,
    when a cluster tier rule could match a node's address (`node_tiered`; else the tiers
    never match and the exemption allows everything)."""
    return side.enforced if variant == "forward" else side.node_tiered


def _address_dispatch(ip: IPAddress, claimants: Sequence[PodProgram]) -> Dispatch:
    """Per map kind: the chain an address's map element jumps to, and the chains that one
    jumps to beyond the pods' side chains. One claimant, or claimants with one distinct
    side: that side's chain. Several: `_shared_dispatch` (fail closed)."""
    found: Dispatch = {}
    for kind, direction, variant in DISPATCHES:
        sides: dict[str, tuple[DirectionProgram, list[str]]] = {}
        chain = None
        for pod in claimants:
            side = pod.side(direction)
            if _dispatched(side, variant):
                chain = _side_group(side, direction, variant)[-1].chain
                sides.setdefault(chain.name, (side, []))[1].append(pod.pod)
        if chain is not None:
            found[kind] = (chain, ()) if len(sides) == 1 else \
                _shared_dispatch(ip, kind, direction, variant, list(sides.values()))
    return found


def _shared_dispatch(ip: IPAddress, kind: str, direction: Direction, variant: Variant,
                     sides: list[tuple[DirectionProgram, list[str]]]) -> tuple[Chain, tuple[Chain, ...]]:
    """The chain of an address several pods claim with different sides: it passes a packet
    only if every claimant's side allows it (NodeProgram: shared addresses fail closed). A
    forward egress side returns on allow and drops otherwise, so jumping into each in turn is
    an AND; the others accept, so each is jumped through its claimant variant (return on
    allow), and the packet accepted after the last."""
    final = kind != "egress"
    # An egress side with Admin rules allows through EGRESS_ACCEPTED (`_admin_chain`), never
    # back here: it is jumped through its claimant variant too, whose Admin rules return.
    groups = [_side_group(side, direction, CLAIMANT_VARIANT[variant]) if final or side.admin
              else _side_group(side, direction, variant) for side, _ in sides]
    needed = tuple(printed.chain for group in groups for printed in group)
    targets = [group[-1].chain for group in groups]
    rules = [Rule((Verdict("jump", target.name),), f"{direction} of {', '.join(pods)}")
             for target, (_, pods) in zip(targets, sides, strict=True)]
    if final:
        rules.append(Rule((Verdict("accept"),), "every claimant's policies admit it"))
    text = _text(ip)
    claimed = ", ".join(pod for _, pods in sides for pod in pods)
    own = " (with its own node)" if variant == "own" else ""
    comment = f"{direction} of {text}{own}, claimed by {claimed}: all must allow it"
    label = ("own-node/" if variant == "own" else "") + "shared/" + text.replace(":", ".")
    return _named_chain(direction, label, tuple(rules), comment).chain, needed


def _table_chains(program: NodeProgram) -> dict[str, Chain]:
    """Every chain of the node's table but the hooks, by name, each after the chains it jumps
    to: the pods' side chains in pod order, then those of shared addresses."""
    chains: dict[str, Chain] = {}
    seen: set[tuple[str, int]] = set()
    for pod in program.pods:  # in pod order and map order, as `pods_text` prints them
        for kind, direction, variant in DISPATCHES:
            side = pod.side(direction)
            if _dispatched(side, variant) and (kind, id(side)) not in seen:  # pods selected alike share sides
                seen.add((kind, id(side)))
                for printed in _side_group(side, direction, variant):
                    chains.setdefault(printed.name, printed.chain)
    for ip, claimants in program.shared_addresses.items():
        for target, needed in _address_dispatch(ip, claimants).values():
            for chain in (*needed, target):
                chains.setdefault(chain.name, chain)
    return chains


def tiered(program: NodeProgram) -> bool:
    """Do the node's programs have cluster-policy tier rules that could match a node's
    address (`node_tiered`: then the table has the input/output hooks and the own-node maps)?"""
    found = program.pods_memo.get(TIERED)
    if found is None:
        found = any(pod.ingress.node_tiered or pod.egress.node_tiered for pod in program.pods)
        program.pods_memo[TIERED] = found
    return bool(found)


TIERED = "nftables.tiered"  # in NodeProgram.pods_memo


def _map_kinds(has_tiers: bool) -> tuple[str, ...]:
    return tuple(kind for kind, _, variant in DISPATCHES if variant == "forward" or has_tiers)


ChainUses = dict[str, tuple[Chain, int]]  # chain name → the chain, and how many pod sides use it


CHAIN_USES = "nftables.chain_uses"  # in NodeProgram.pods_memo: an update's new program is the
# next update's old one, or the same pods with newer sets


def _chain_uses(program: NodeProgram) -> ChainUses:
    """The chains of the node's table (`_table_chains`), with their users counted."""
    uses: ChainUses | None = program.pods_memo.get(CHAIN_USES)
    if uses is None:
        uses = {name: (chain, 0) for name, chain in _table_chains(program).items()}
        for pod in program.pods:
            for chain in _side_chains(pod):
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
            for chain in _side_chains(pod):
                count = uses.get(chain.name, (chain, 0))[1] + step
                if count:
                    uses[chain.name] = (chain, count)
                else:
                    del uses[chain.name]
    new.pods_memo[CHAIN_USES] = uses
    return uses


def _dispatch_targets(program: NodeProgram, ip: IPAddress) -> dict[str, str]:
    """Map name → the chain the address's element jumps to, in `program`."""
    claimants = program.by_address.get(ip, ())
    if len(claimants) == 1:  # the usual: that pod's sides (`_address_dispatch` of one claimant)
        pod = claimants[0]
        found = (*_side_dispatch(pod.egress, "egress"), *_side_dispatch(pod.ingress, "ingress"))
        return {f"{entry[0]}-v{ip.version}": entry[1] for entry in found if entry is not None}
    return {f"{kind}-v{ip.version}": chain.name
            for kind, (chain, _) in _address_dispatch(ip, claimants).items()}


def dispatch_chain(program: NodeProgram, ip: IPAddress, direction: Direction) -> str | None:
    """The chain the address's `direction` map element jumps to (None: not isolated that way)."""
    return _dispatch_targets(program, ip).get(f"{direction}-v{ip.version}")


def _dispatch_maps(program: NodeProgram) -> list[VerdictMap]:
    kinds = _map_kinds(tiered(program))
    entries: dict[str, list[tuple[str, Verdict]]] = {
        f"{kind}-v{version}": [] for kind in kinds for version in FAMILIES}
    shared = program.shared_addresses
    for pod in program.pods:
        for ip in pod.ips:
            if ip in shared and shared[ip][0] is not pod:
                continue  # the address's element comes with its first claimant
            for kind, (chain, _) in _address_dispatch(ip, shared.get(ip, (pod,))).items():
                entries[f"{kind}-v{ip.version}"].append((_text(ip), Verdict("jump", chain.name)))
    return [VerdictMap(f"{kind}-v{version}", addr_type, tuple(entries[f"{kind}-v{version}"]))
            for kind in kinds for version, (_, addr_type) in FAMILIES.items()]


@functools.lru_cache(maxsize=4)
def _local_hook(hook: str) -> Chain:
    """`input` (a local pod's traffic to its node: dispatched by source to the own-node
    variant of its egress side) or `output` (the node's traffic to a local pod: by
    destination, its ingress side). Only in tables with tier rules."""
    kind, field = ("own-egress", "saddr") if hook == "input" else ("own-ingress", "daddr")
    return Chain(hook, (
        Rule((InFlags(Ct("state"), ("established", "related")), Verdict("accept")),
             "replies of allowed connections"),
        Rule((InValues(Payload("icmpv6", "type"), ND_TYPES), Verdict("accept")), "IPv6 neighbour discovery"),
        *(Rule((VerdictMapLookup(Payload(proto_kw, field), f"{kind}-v{version}"),))
          for version, (proto_kw, _) in FAMILIES.items()),
    ), f"traffic between this node and its own pods: cluster policy tiers ({hook})",
        BaseHook("filter", hook, "filter", "accept"))


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
    hooks = (_local_hook("input"), _local_hook("output")) if tiered(program) else ()
    return Table("inet", TABLE, _table_comment(program.node),
                 sets=(*guard_sets,
                       *(s for ps in (*program.peer_sets, *program.port_sets) for _, s in _declared(ps))),
                 maps=tuple(_dispatch_maps(program)),
                 chains=(_forward(guarded_families(program.pod_cidrs)), *hooks,
                         *_table_chains(program).values()))


@dataclass(frozen=True)
class PodsText:
    """Some pods' share of their node's `nft -f` script, printed: what `script_text` joins.
    Printing it needs only the pods' programs, so a node's pods can be printed in parts,
    wherever their programs were compiled (netpol.pipeline.sharded), then joined in pod order;
    a chain two parts both print (a side of cluster policies alone spans namespaces) is
    joined once, by name."""

    addresses: tuple[tuple[int, int], ...]  # (version, integer) of each pod: the node-pods guard set
    map_elements: dict[str, str]  # map name → its `ADDRESS : jump CHAIN` elements, joined by ", "
    chains: tuple[tuple[str, str], ...]  # the pods' side chains: name, lines joined (shared, not copied)
    tiered: bool = False  # some side has an own-node element (`tiered`)


Dispatched = tuple[str, str, tuple[_Printed, ...]]  # map kind, the chain jumped to, its group


@weak_identity_cache()  # pods selected alike share the side object
def _side_dispatch(side: DirectionProgram,
                   direction: Direction) -> tuple[Dispatched | None, Dispatched | None]:
    """What a side's pods put in the forward and the own-node dispatch maps (`DISPATCHES`;
    None: no element), and the chains those jump through, printed."""
    found: list[Dispatched | None] = []
    for kind, way, variant in DISPATCHES:
        if way == direction:
            if _dispatched(side, variant):
                group = _made_side_group(side, direction, variant)
                found.append((kind, group[-1].name, group))
            else:
                found.append(None)
    return found[0], found[1]


def pods_text(pods: Iterable[PodProgram]) -> PodsText:
    """The pods' dispatch-map elements and side chains (each distinct chain once), printed
    straight: an all-nodes compile prints every pod once. For pods with distinct addresses
    only: `render` takes the object route when a node's pods share one."""
    elements: dict[str, list[str]] = {}
    chains: list[tuple[str, str]] = []
    addresses: list[tuple[int, int]] = []
    printed: set[str] = set()
    has_tiers = False
    for pod in pods:
        egress, ingress = _side_dispatch(pod.egress, "egress"), _side_dispatch(pod.ingress, "ingress")
        ips = [(ip.version, _text(ip)) for ip in pod.ips]
        for found in (egress[0], ingress[0], egress[1], ingress[1]):  # in DISPATCHES order
            if found is None:
                continue
            kind, name, group = found
            for version, text in ips:
                elements.setdefault(f"{kind}-v{version}", []).append(f"{text} : jump {name}")
            for part in group:
                if part.name not in printed:
                    printed.add(part.name)
                    chains.append((part.name, part.text))
        has_tiers = has_tiers or egress[1] is not None or ingress[1] is not None  # own-node: tiered
        addresses += ((ip.version, int(ip)) for ip in pod.ips)
    return PodsText(tuple(addresses), {name: ", ".join(found) for name, found in elements.items()},
                    tuple(chains), has_tiers)


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

    has_tiers = any(part.tiered for part in parts)
    chains: dict[str, str] = {}
    for part in parts:
        for name, chain in part.chains:
            chains.setdefault(name, chain)
    lines = [
        *script_head(table, _script_header(node)),
        *(set_text(s) for s in _guard_sets(node, pod_cidrs, programmed)),
        *sets,
        *(map_text(name, addr_type, [e for part in parts if (e := part.map_elements.get(name, ""))])
          for kind in _map_kinds(has_tiers) for version, (_, addr_type) in FAMILIES.items()
          for name in (f"{kind}-v{version}",)),
        *chain_lines(_forward(guarded_families(pod_cidrs))),
        *(line for hook in (("input", "output") if has_tiers else ())
          for line in chain_lines(_local_hook(hook))),
        *chains.values(),
        "}",
        "",  # the last newline: joined, not appended (a copy of megabytes)
    ]
    return "\n".join(lines)


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
    n, m = len(was), len(now)
    while i < n and j < m:
        if was[i:i + _SKIP_BLOCK] == now[j:j + _SKIP_BLOCK]:
            i += _SKIP_BLOCK
            j += _SKIP_BLOCK
            continue
        while i < n and j < m and was[i] == now[j]:  # to the difference, without a block per step
            i += 1
            j += 1
        if i == n or j == m:
            break
        a, b = was[i], now[j]
        if a < b:
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
    is then the whole new table (still one transaction), as it is when the first tier rule
    arrives or the last one goes (the input/output hooks come and go with them)."""
    if old.pod_cidrs != new.pod_cidrs or tiered(old) != tiered(new):
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
