"""The reachability map, fast: computed on equivalence classes of pods with label indexes.

Pods that share namespace, labels, container ports and ipBlock memberships behave identically
under every policy, so we evaluate classes, not pods, and sets of classes are Python ints used
as bitsets. Rules are indexed by the ports they name, so a probe costs what names its port.
`tests/unit/semantics/test_properties.py` checks every cell against `netpol.semantics.reference`.
Which pods are rows and columns (`participants`), and why the others are not (`absent_notes`),
are decided here too.

ClusterNetworkPolicies (§2b) keep the classes: their subjects and peers are selectors too, their
`networks` and `nodes` peers ipBlock-like memberships in the class key, and a probe's tiers are
worked out per group of classes that the same rules apply to (`_FamilyEngine._tier_verdicts`).
A state without them takes the NetworkPolicy-only path unchanged.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from netpol.labels import Labels, LabelSelector
from netpol.model import (
    INACTIVE_PHASES,
    TIERS,
    Action,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterProtocol,
    ClusterState,
    ContainerPort,
    DestinationNamedPort,
    Direction,
    IPBlock,
    NamespacedPods,
    NetworkPolicy,
    Pod,
    Rule,
    Tier,
)
from netpol.semantics.probes import Probe

FAMILIES = (4, 6)
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")


def iter_bits(bits: int) -> Iterator[int]:
    """Indexes of the set bits of `bits`, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


@dataclass(frozen=True)
class PodClass:
    namespace: str
    labels: Labels
    ports: tuple[ContainerPort, ...]
    blocks: tuple[frozenset[int] | None, ...]  # per family: ipBlock ids containing the address

    def resolve_port(self, name: str, protocol: str) -> int | None:
        return next((p.port for p in self.ports if p.name == name and p.protocol == protocol), None)


@dataclass(frozen=True)
class ReachMap:
    """Rows and columns are `pods`; `allowed_classes[probe][src class]` is a bitset of dst classes."""

    pods: tuple[Pod, ...]
    probes: tuple[Probe, ...]
    pod_class: tuple[int, ...]
    classes: tuple[PodClass, ...]
    allowed_classes: tuple[tuple[int, ...], ...]

    def allowed(self, probe: int, src: int, dst: int) -> bool:
        if src == dst:
            return True  # a pod can always reach itself
        return bool(self.allowed_classes[probe][self.pod_class[src]] >> self.pod_class[dst] & 1)

    def class_members(self) -> list[list[int]]:
        members: list[list[int]] = [[] for _ in self.classes]
        for pod, cls in enumerate(self.pod_class):
            members[cls].append(pod)
        return members


class _BlockIndex:
    """Distinct ipBlocks of one family; which blocks contain an address, by interval lookup."""

    def __init__(self, blocks: Sequence[IPBlock]) -> None:
        self.blocks = list(blocks)
        cuts: set[int] = set()
        for b in self.blocks:
            for net in (b.cidr, *b.except_):
                cuts.update((int(net.network_address), int(net.broadcast_address) + 1))
        self.cuts = sorted(cuts)
        self._memo: dict[int, frozenset[int]] = {}

    def containing(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> frozenset[int]:
        interval = bisect.bisect_right(self.cuts, int(ip))
        found = self._memo.get(interval)
        if found is None:  # every address of an elementary interval is in the same blocks
            found = frozenset(i for i, b in enumerate(self.blocks) if b.contains(ip))
            self._memo[interval] = found
        return found


def _distinct_blocks(state: ClusterState) -> dict[int, list[IPBlock]]:
    """Every ipBlock, every `networks` CIDR and every address a `nodes` peer can mean (as a
    block of one address), per family: which of them hold a pod's address is part of its class."""
    seen: dict[IPBlock, None] = {}
    for policy in state.policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers:
                if peer.ip_block is not None:
                    seen.setdefault(peer.ip_block)
    for cluster_policy in state.cluster_policies:
        for cluster_peer in (p for r in (*cluster_policy.ingress, *cluster_policy.egress) for p in r.peers):
            seen.update(dict.fromkeys(_cluster_peer_blocks(state, cluster_peer)))
    return {f: [b for b in seen if b.cidr.version == f] for f in FAMILIES}


def _cluster_peer_blocks(state: ClusterState, peer: ClusterPeer) -> list[IPBlock]:
    """The blocks a `networks` or `nodes` peer matches: its CIDRs; the matching Nodes' addresses."""
    if peer.nodes is not None:
        return [IPBlock(ipaddress.ip_network(ip)) for node in state.nodes if peer.nodes.matches(node.labels)
                for ip in node.addresses]
    return [IPBlock(network) for network in peer.networks]


class _ClassIndex:
    """Classes of pods, with label/namespace indexes turning selectors into bitsets."""

    def __init__(self, state: ClusterState, pods: Sequence[Pod], families: tuple[int, ...]) -> None:
        self.state = state
        blocks = _distinct_blocks(state)
        self.block_ids = {f: {b: i for i, b in enumerate(blocks[f])} for f in FAMILIES}
        indexes = {f: _BlockIndex(blocks[f]) for f in FAMILIES}
        keys: dict[PodClass, int] = {}
        self.pod_class: list[int] = []
        for pod in pods:
            sig = tuple(
                indexes[f].containing(ip) if (ip := pod.ip_of_family(f)) and f in families else None
                for f in FAMILIES
            )
            key = PodClass(pod.namespace, pod.labels, tuple(sorted(set(pod.ports), key=repr)), sig)
            self.pod_class.append(keys.setdefault(key, len(keys)))
        self.classes = list(keys)
        self.all = (1 << len(self.classes)) - 1
        self.by_label: dict[tuple[str, str], int] = {}
        self.by_key: dict[str, int] = {}
        self.by_namespace: dict[str, int] = {}
        self.family_mask = dict.fromkeys(FAMILIES, 0)
        for i, cls in enumerate(self.classes):
            bit = 1 << i
            self.by_namespace[cls.namespace] = self.by_namespace.get(cls.namespace, 0) | bit
            for k, val in cls.labels.items():
                self.by_label[(k, val)] = self.by_label.get((k, val), 0) | bit
                self.by_key[k] = self.by_key.get(k, 0) | bit
            for f, members in zip(FAMILIES, cls.blocks, strict=True):
                if members is not None:
                    self.family_mask[f] |= bit
        self._selector_memo: dict[LabelSelector, int] = {}
        self._namespace_memo: dict[LabelSelector, int] = {}

    def select(self, selector: LabelSelector) -> int:
        """Classes whose labels match `selector`, via the label index."""
        found = self._selector_memo.get(selector)
        if found is not None:
            return found
        bits = self.all
        for k, val in selector.match_labels.items():
            bits &= self.by_label.get((k, val), 0)
        for r in selector.match_expressions:
            any_value = 0
            for val in r.values:
                any_value |= self.by_label.get((r.key, val), 0)
            has_key = self.by_key.get(r.key, 0)
            bits &= {"In": any_value, "NotIn": self.all & ~any_value,
                     "Exists": has_key, "DoesNotExist": self.all & ~has_key}[r.operator]
        self._selector_memo[selector] = bits
        return bits

    def select_namespaces(self, selector: LabelSelector) -> int:
        found = self._namespace_memo.get(selector)
        if found is None:
            found = 0
            for name, bits in self.by_namespace.items():
                if selector.matches(self.state.namespace(name).labels):
                    found |= bits
            self._namespace_memo[selector] = found
        return found

    def policy_targets(self, policy: NetworkPolicy) -> int:
        return self.by_namespace.get(policy.namespace, 0) & self.select(policy.pod_selector)

    def select_pods(self, pods: NamespacedPods) -> int:
        """A `pods` subject or peer: its namespace selector honoured, then its pod selector."""
        return self.select_namespaces(pods.namespace_selector) & self.select(pods.pod_selector)

    def cluster_targets(self, policy: ClusterNetworkPolicy) -> int:
        """§2b subject, as a bitset of classes."""
        subject = policy.subject
        if subject.namespaces is not None:
            return self.select_namespaces(subject.namespaces)
        return self.select_pods(subject.pods) if subject.pods is not None else 0

    def cluster_peers(self, peer: ClusterPeer, family: int) -> int:
        """§2b peers, as a bitset of classes reachable over `family` (none for a peer we do not
        recognise: see `ClusterRule.fails_closed`)."""
        if peer.namespaces is not None:
            return self.select_namespaces(peer.namespaces) & self.family_mask[family]
        if peer.pods is not None:
            return self.select_pods(peer.pods) & self.family_mask[family]
        bits = 0
        for block in _cluster_peer_blocks(self.state, peer):
            block_id = self.block_ids[family].get(block)
            if block_id is not None:
                bits |= self._block_members(family, block_id)
        return bits

    def declaring(self) -> dict[tuple[str, str, int], int]:
        """(name, protocol, number) → the classes with such a container port (a CNP's
        `destinationNamedPort` matches any of a pod's ports of that name, by number and protocol)."""
        found: dict[tuple[str, str, int], int] = {}
        for i, cls in enumerate(self.classes):
            for p in cls.ports:
                if p.name is not None:
                    found[(p.name, p.protocol, p.port)] = found.get((p.name, p.protocol, p.port), 0) | 1 << i
        return found

    def rule_peers(self, policy: NetworkPolicy, rule: Rule, family: int) -> int:
        """§2 Peers, as a bitset of classes reachable over `family`."""
        mask = self.family_mask[family]
        if not rule.peers:
            return mask
        bits = 0
        for peer in rule.peers:
            if peer.ip_block is not None:
                block_id = self.block_ids[family].get(peer.ip_block)
                if block_id is not None:
                    bits |= self._block_members(family, block_id)
                continue
            if peer.namespace_selector is None:
                scope = self.by_namespace.get(policy.namespace, 0)
            else:
                scope = self.select_namespaces(peer.namespace_selector)
            pods = self.all if peer.pod_selector is None else self.select(peer.pod_selector)
            bits |= scope & pods & mask
        return bits

    def _block_members(self, family: int, block_id: int) -> int:
        slot = FAMILIES.index(family)
        bits = 0
        for i, cls in enumerate(self.classes):
            sig = cls.blocks[slot]
            if sig is not None and block_id in sig:
                bits |= 1 << i
        return bits


_Entry = tuple[str, int | str | None, int | None]  # (protocol, port or name or None, end_port)
_Contribution = tuple[int, int]  # (classes it applies to, classes it adds): one rule at one probe


@dataclass(frozen=True)
class _TargetedRule:
    """One rule of an isolating policy, over one family: the classes it applies to (`targets`)
    and the classes it admits (`peers`: sources for ingress, destinations for egress)."""

    targets: int
    peers: int
    entries: tuple[_Entry, ...]  # empty: every port of every protocol

    def admits_whole(self, protocol: str) -> bool:
        """Every port of `protocol` (no `ports`, or an entry with a protocol and no port)."""
        return not self.entries or any(proto == protocol and port is None for proto, port, _ in self.entries)


@dataclass
class _Base:
    """A protocol's verdicts from the rules that admit its every port: what each probe of that
    protocol starts from before the rules naming its port add to it."""

    admitted: list[int]  # dst class → src classes its ingress admits (isolated classes only)
    egress: list[int]  # src class → dst classes its egress allows (isolated classes only)
    reachable: list[int]  # src class → dst classes whose ingress admits it
    result: tuple[int, ...]  # src class → dst classes it may connect to


@dataclass
class _ProbeRules:
    """The rules that name one probe's port, as contributions (to which classes, which peers)."""

    ingress: list[_Contribution] = field(default_factory=list)
    egress: list[_Contribution] = field(default_factory=list)

    def of(self, direction: Direction) -> list[_Contribution]:
        return self.ingress if direction == "ingress" else self.egress

    def signature(self) -> tuple[frozenset[_Contribution], frozenset[_Contribution]]:
        """Equal for two probes whose verdicts (over one protocol) are therefore equal."""
        return frozenset(self.ingress), frozenset(self.egress)


@dataclass(frozen=True)
class _TierRule:
    """One rule of a ClusterNetworkPolicy, over one family: the classes it is about (`targets`:
    its policy's subjects), the classes it matches (`peers`), what it does, its protocols."""

    targets: int
    peers: int
    action: Action
    protocols: tuple[ClusterProtocol, ...]  # empty: all traffic

    def at(self, probe: Probe, direction: Direction, declaring: dict[tuple[str, str, int], int]
           ) -> tuple[int, int, Action] | None:
        """(targets, peers, action) of the rule for `probe`, None where its protocols miss it. A
        named port matches where the destination declares it: in ingress the targets, in
        egress the peers."""
        if not self.protocols:
            return self.targets, self.peers, self.action
        if probe.port is None:
            return None
        where = 0
        for entry in self.protocols:
            if isinstance(entry, DestinationNamedPort):
                where |= declaring.get((entry.name, probe.protocol, probe.port), 0)
            elif entry.protocol == probe.protocol and entry.first <= probe.port <= entry.last:
                return self.targets, self.peers, self.action
        if not where:
            return None
        if direction == "ingress":
            return self.targets & where, self.peers, self.action
        return self.targets, self.peers & where, self.action


_TierKey = tuple[Tier, Direction]
TIER_KEYS: tuple[_TierKey, ...] = tuple((t, d) for t in TIERS for d in DIRECTIONS)
_Matching = tuple[tuple[int, int, Action], ...]  # (targets, peers, action) of the rules matching a probe
_AtProbe = tuple[_Matching, ...]  # per TIER_KEYS


class _ProbeIndex:
    """The probes with a port, sorted per protocol: which of them lie in a range, by bisection."""

    def __init__(self, probes: Sequence[Probe]) -> None:
        by_protocol: dict[str, list[tuple[int, int]]] = {}
        for i, probe in enumerate(probes):
            if probe.port is not None:
                by_protocol.setdefault(probe.protocol, []).append((probe.port, i))
        self.ports: dict[str, list[int]] = {}
        self.probe_ids: dict[str, list[int]] = {}
        for protocol, listed in by_protocol.items():
            listed.sort()
            self.ports[protocol] = [port for port, _ in listed]
            self.probe_ids[protocol] = [i for _, i in listed]

    def within(self, protocol: str, first: int, last: int) -> list[int]:
        """Indexes of the probes of `protocol` whose port is in first..last."""
        ports = self.ports.get(protocol)
        if ports is None:
            return []
        low, high = bisect.bisect_left(ports, first), bisect.bisect_right(ports, last)
        return self.probe_ids[protocol][low:high]


class _FamilyEngine:
    """Per family: the isolating policies' rules, compiled to bitsets, and indexed by port.

    A probe's verdicts are its protocol's base (rules admitting every port: computed once per
    protocol) plus the rules that name its port, found by bisecting the sorted probes (numeric
    ports and ranges) or by where each named port resolves. A probe pays for the rules that name
    it, not for every rule: when each probe re-evaluated every rule of every class (and scanned
    every class's ports for each named port), `netpol reach` without --port was quadratic in
    distinct ports or worse: 5,000 ports 45.6 s, 10,000 ports 310 s; now 0.6 s and 0.8 s, about
    the time of one --port (benchmarks/reach_ports.py). Probes whose rules contribute the same
    are evaluated once (a container port that no rule names: its protocol's base).
    """

    def __init__(self, index: _ClassIndex, family: int) -> None:
        self.index, self.family = index, family
        self.mask = index.family_mask[family]
        self.isolated: dict[Direction, int] = {"ingress": 0, "egress": 0}
        self.rules: dict[Direction, list[_TargetedRule]] = {"ingress": [], "egress": []}
        for policy in index.state.policies:
            targets = index.policy_targets(policy) & self.mask
            if not targets:
                continue
            for direction in DIRECTIONS:
                if not policy.isolates(direction):
                    continue
                self.isolated[direction] |= targets
                self.rules[direction] += [
                    _TargetedRule(targets, index.rule_peers(policy, rule, family),
                                  tuple((e.protocol, e.port, e.end_port) for e in rule.ports))
                    for rule in policy.rules(direction)
                ]
        self._bases: dict[str, _Base] = {}
        self.tier_rules: dict[_TierKey, list[_TierRule]] = {key: [] for key in TIER_KEYS}
        for cluster_policy in index.state.cluster_policies:  # in their order of evaluation
            self._add_tier_rules(cluster_policy)
        self.declaring = index.declaring() if index.state.cluster_policies else {}

    def _add_tier_rules(self, policy: ClusterNetworkPolicy) -> None:
        targets = self.index.cluster_targets(policy) & self.mask
        if not targets:
            return
        for direction in DIRECTIONS:
            for rule in policy.rules(direction):
                if rule.fails_closed:  # a peer we do not recognise: the rule denies all
                    tier_rule = _TierRule(targets, self.mask, "Deny", ())
                else:
                    peers = 0
                    for peer in rule.peers:
                        peers |= self.index.cluster_peers(peer, self.family)
                    tier_rule = _TierRule(targets, peers, rule.action, rule.protocols)
                self.tier_rules[(policy.tier, direction)].append(tier_rule)

    def allowed_rows(self, probes: Sequence[Probe]) -> list[tuple[int, ...]]:
        """Per probe: src class → bitset of dst classes, over this family."""
        named = self._rules_naming(probes)
        rows: list[tuple[int, ...]] = []
        memo: dict[tuple[object, ...], tuple[int, ...]] = {}
        cluster = any(self.tier_rules.values())
        for probe, rules in zip(probes, named, strict=True):
            tiers = self._tiers_at(probe) if cluster else ()
            key = (probe.protocol, *rules.signature(), tiers)
            row = memo.get(key)
            if row is None:
                base = self._base(probe.protocol)
                row = self._evaluate_tiers(base, rules, tiers) if cluster else self._evaluate(base, rules)
                memo[key] = row
            rows.append(row)
        return rows

    def _tiers_at(self, probe: Probe) -> _AtProbe:
        """Per tier and direction, the cluster-policy rules that match `probe`, in order."""
        return tuple(tuple(at for rule in self.tier_rules[key]
                           if (at := rule.at(probe, key[1], self.declaring)) is not None)
                     for key in TIER_KEYS)

    # -- which rules name which probe ------------------------------------------------------------

    def _rules_naming(self, probes: Sequence[Probe]) -> list[_ProbeRules]:
        """Per probe, the contributions of the rules that name its port: O(rules + matches)."""
        found = [_ProbeRules() for _ in probes]
        where = _ProbeIndex(probes)
        resolved = self._named_ports()
        for direction in DIRECTIONS:
            for rule in self.rules[direction]:
                for protocol, port, end in rule.entries:
                    if isinstance(port, int):  # a port or a range (endPort)
                        for i in where.within(protocol, port, end or port):
                            found[i].of(direction).append((rule.targets, rule.peers))
                    elif isinstance(port, str):  # a name: at each number it resolves to
                        for number, classes in resolved.get((port, protocol), {}).items():
                            contribution = self._named_contribution(direction, rule, classes)
                            for i in where.within(protocol, number, number):
                                found[i].of(direction).append(contribution)
        return found

    def _named_ports(self) -> dict[tuple[str, str], dict[int, int]]:
        """(name, protocol) → number → the classes of this family where the name means it."""
        resolved: dict[tuple[str, str], dict[int, int]] = {}
        for cls in iter_bits(self.mask):
            seen: set[tuple[str, str]] = set()
            for p in self.index.classes[cls].ports:  # the first port of a name counts (resolve_port)
                if p.name is not None and (p.name, p.protocol) not in seen:
                    seen.add((p.name, p.protocol))
                    numbers = resolved.setdefault((p.name, p.protocol), {})
                    numbers[p.port] = numbers.get(p.port, 0) | 1 << cls
        return resolved

    @staticmethod
    def _named_contribution(direction: Direction, rule: _TargetedRule, classes: int) -> _Contribution:
        """A named port in ingress admits its peers into the targets where it resolves; in
        egress, it lets its targets reach the peers where it resolves (DESIGN §2, per dst pod)."""
        if direction == "ingress":
            return rule.targets & classes, rule.peers
        return rule.targets, rule.peers & classes

    # -- verdicts ---------------------------------------------------------------------------------

    def _base(self, protocol: str) -> _Base:
        """The verdicts for `protocol` from the rules that admit its every port, once per protocol."""
        base = self._bases.get(protocol)
        if base is None:
            n = len(self.index.classes)
            admitted, egress, reachable = [0] * n, [0] * n, [0] * n
            tables = {"ingress": admitted, "egress": egress}
            for direction in DIRECTIONS:
                for rule in self.rules[direction]:
                    if rule.admits_whole(protocol):
                        for cls in iter_bits(rule.targets):
                            tables[direction][cls] |= rule.peers
            for d in iter_bits(self.isolated["ingress"]):
                for s in iter_bits(admitted[d]):
                    reachable[s] |= 1 << d
            base = _Base(admitted, egress, reachable, (0,) * n)
            base.result = self._verdicts(base, iter_bits(self.mask), {}, {})
            self._bases[protocol] = base
        return base

    @staticmethod
    def _added(contributions: list[_Contribution]) -> dict[int, int]:
        """Class → the peers the rules naming a probe's port add to it (for ingress: sources its
        ingress now also admits; for egress: destinations its egress now also allows)."""
        added: dict[int, int] = {}
        for targets, peers in contributions:
            for cls in iter_bits(targets):
                added[cls] = added.get(cls, 0) | peers
        return added

    def _evaluate(self, base: _Base, rules: _ProbeRules) -> tuple[int, ...]:
        """src class → dst classes for a probe whose port `rules` name: `base`, with the classes
        those rules add recomputed."""
        extra_admitted = self._added(rules.ingress)  # dst class → sources its ingress now also admits
        extra_reachable: dict[int, int] = {}  # src class → destinations that now admit it
        for d, peers in extra_admitted.items():
            for s in iter_bits(peers & ~base.admitted[d]):
                extra_reachable[s] = extra_reachable.get(s, 0) | 1 << d
        extra_egress = self._added(rules.egress)  # src class → destinations its egress now also allows
        return self._verdicts(base, {*extra_reachable, *extra_egress}, extra_reachable, extra_egress)

    def _verdicts(self, base: _Base, sources: Iterable[int], extra_reachable: dict[int, int],
                  extra_egress: dict[int, int]) -> tuple[int, ...]:
        """`base.result` with the rows of `sources` recomputed: a connection needs the source's
        egress and the destination's ingress (DESIGN §2)."""
        result = list(base.result)
        open_dsts = self.mask & ~self.isolated["ingress"]
        for s in sources:
            if self.isolated["egress"] >> s & 1:
                egress = base.egress[s] | extra_egress.get(s, 0)
            else:
                egress = self.mask
            result[s] = egress & (open_dsts | base.reachable[s] | extra_reachable.get(s, 0))
        return tuple(result)


    # -- with ClusterNetworkPolicies (§2b) -------------------------------------------------------

    def _evaluate_tiers(self, base: _Base, rules: _ProbeRules, tiers: _AtProbe) -> tuple[int, ...]:
        """src class → dst classes for one probe through the tiers: per side, Admin, then the
        NetworkPolicy verdict for the classes it isolates (final), else Baseline, else allow; a
        connection needs the source's egress and the destination's ingress."""
        extra_egress, extra_admitted = self._added(rules.egress), self._added(rules.ingress)
        at = dict(zip(TIER_KEYS, tiers, strict=True))
        egress = self._side(at, "egress", lambda s: base.egress[s] | extra_egress.get(s, 0))
        ingress = self._side(at, "ingress", lambda d: base.admitted[d] | extra_admitted.get(d, 0))
        return self._join(egress, ingress)

    def _side(self, at: dict[_TierKey, _Matching], direction: Direction,
              policy_allows: Callable[[int], int]) -> list[int]:
        """Per subject class, the peer classes its `direction` side allows."""
        n, mask = len(self.index.classes), self.mask
        verdicts = {tier: self._tier_verdicts(at[(tier, direction)], n) for tier in TIERS}
        (admin_accepts, admin_denies), (_, baseline_denies) = verdicts["Admin"], verdicts["Baseline"]
        isolated = self.isolated[direction]
        allows = [0] * n
        for c in iter_bits(mask):
            undecided = mask & ~(admin_accepts[c] | admin_denies[c])
            if isolated >> c & 1:  # the NetworkPolicy tier is final for a class it isolates
                allows[c] = admin_accepts[c] | (undecided & policy_allows(c))
            else:  # Baseline: only its Deny changes the default
                allows[c] = mask & ~admin_denies[c] & ~(undecided & baseline_denies[c])
        return allows

    def _tier_verdicts(self, rules: _Matching, n: int) -> tuple[list[int], list[int]]:
        """Per subject class, the peer classes one tier accepts and denies (first matching rule:
        Accept and Deny decide, Pass moves on). Classes the same rules apply to are worked out
        once: the classes are split by each rule's targets, in order."""
        groups: list[tuple[int, tuple[int, ...]]] = [(self.mask, ())]  # (classes, rules that apply)
        for i, (targets, _, _) in enumerate(rules):
            split = []
            for classes, applying in groups:
                if inside := classes & targets:
                    split.append((inside, (*applying, i)))
                if outside := classes & ~targets:
                    split.append((outside, applying))
            groups = split
        accepts, denies = [0] * n, [0] * n
        for classes, applying in groups:
            undecided, accepted, denied = self.mask, 0, 0
            for i in applying:
                _, peers, action = rules[i]
                matched, undecided = peers & undecided, undecided & ~peers
                if action == "Accept":
                    accepted |= matched
                elif action == "Deny":
                    denied |= matched
            for c in iter_bits(classes):
                accepts[c], denies[c] = accepted, denied
        return accepts, denies

    def _join(self, egress: list[int], ingress: list[int]) -> tuple[int, ...]:
        """src → dst classes with both sides' consent. Ingress is per destination; each is turned
        round by whichever is fewer: the sources it admits or the ones it refuses."""
        n, mask = len(self.index.classes), self.mask
        free, admitted_by, refused_by = 0, [0] * n, [0] * n
        for d in iter_bits(mask):
            admits = ingress[d] & mask
            refuses = mask & ~admits
            if not refuses:
                free |= 1 << d
            elif admits.bit_count() <= refuses.bit_count():
                for s in iter_bits(admits):
                    admitted_by[s] |= 1 << d
            else:
                free |= 1 << d
                for s in iter_bits(refuses):
                    refused_by[s] |= 1 << d
        result = [0] * n
        for s in iter_bits(mask):
            result[s] = egress[s] & mask & ((free & ~refused_by[s]) | admitted_by[s])
        return tuple(result)


def participants(state: ClusterState, family: int | None = None) -> tuple[Pod, ...]:
    """The matrix's rows and columns: active, non-hostNetwork pods (with an address of `family`)."""
    return tuple(p for p in state.active_pods if family is None or p.ip_of_family(family))


def _union(per_family: list[list[tuple[int, ...]]], probes: int, classes: int) -> list[tuple[int, ...]]:
    """Per probe, src class → dst classes over any family: a cell is allowed over either."""
    if not per_family:  # no pod has an address of the families asked for
        return [(0,) * classes] * probes
    if len(per_family) == 1:
        return per_family[0]
    v4_rows, v6_rows = per_family
    return [tuple(a | b for a, b in zip(v4, v6, strict=True))
            for v4, v6 in zip(v4_rows, v6_rows, strict=True)]


def compute_reach(state: ClusterState, probes: Sequence[Probe], family: int | None = None) -> ReachMap:
    """For every probe, which pods can connect to which (over any shared family, or `family`)."""
    pods = participants(state, family)
    families = (family,) if family else FAMILIES
    index = _ClassIndex(state, pods, families)
    engines = [_FamilyEngine(index, f) for f in families if index.family_mask[f]]
    per_probe = _union([engine.allowed_rows(probes) for engine in engines], len(probes), len(index.classes))
    return ReachMap(pods, tuple(probes), tuple(index.pod_class), tuple(index.classes), tuple(per_probe))


# -- who is not in the matrix, and why (said on stderr: a pod that drops out silently, such as a
# hostNetwork pod, a pod without an IP or a finished one, looks like a bug) ---------------------

# Why, per reason, and in this order: a finished hostNetwork pod counts as finished, once.
ABSENCE_REASONS = {
    "finished": ("finished pod (phase Succeeded or Failed)",
                 "finished pods no longer run, so no policy applies to them"),
    "hostNetwork": ("hostNetwork pod",
                    "hostNetwork pods share their node's address; traffic between a pod and its own "
                    "node is allowed unless a ClusterNetworkPolicy denies it"),
    "no IP": ("pod without an IP address",
              "pods without status.podIP have no address (not running yet, or manifests rather than "
              "running pods: `kubectl get pods -A -o yaml` gives them with their addresses)"),
}


def absence_reason(pod: Pod, family: int | None = None) -> str | None:
    """Why `pod` is not in the matrix (a key of ABSENCE_REASONS, or "family"); None when it is
    (`participants`): DESIGN §2 leaves hostNetwork pods, pods without an IP and finished pods out."""
    if pod.phase in INACTIVE_PHASES:
        return "finished"
    if pod.host_network:
        return "hostNetwork"
    if not pod.ips:
        return "no IP"
    if family is not None and pod.ip_of_family(family) is None:
        return "family"
    return None


def count_absent(state: ClusterState, family: int | None = None) -> Counter[str]:
    """How many pods each reason keeps out of the matrix."""
    return Counter(reason for pod in state.pods if (reason := absence_reason(pod, family)) is not None)


def _pods(count: int, noun: str) -> str:
    """`1 hostNetwork pod is`, `2 hostNetwork pods are`: the first "pod" of `noun` is the one
    to pluralise."""
    plural = noun.replace("pod", "pods", 1) if count != 1 else noun
    return f"{count} {plural} {'is' if count == 1 else 'are'}"


def absent_notes(state: ClusterState, family: int | None = None) -> list[str]:
    """One sentence per reason that keeps pods out of the matrix: how many, and why."""
    counts = count_absent(state, family)
    notes = [f"{_pods(counts[reason], noun)} not in the matrix: {why}"
             for reason, (noun, why) in ABSENCE_REASONS.items() if counts[reason]]
    if counts["family"]:
        notes.append(f"{_pods(counts['family'], f'pod without an IPv{family} address')} not in the "
                     f"matrix (--family {family})")
    return notes
