"""Which NetworkPolicies, and which of their rules, are redundant: removing one changes no
verdict. Computed, not guessed: with the reach map (`netpol.semantics.reach.compute_reach`, the
default probes) and the reference evaluator, with and without it.

What counts as a verdict: every (source pod, destination pod, probe) of the input. The map has no
cells for addresses outside the pods (ipBlocks, nodes, the internet), so a rule that admits such
addresses (an `ipBlock` peer, or no `from`/`to` at all) is never called redundant, and neither is a
policy that is the only one isolating some pod (removing it opens that pod to the outside). A
policy with an empty podSelector and no rules in a direction it isolates is a namespace's default
deny: it guards pods that do not exist yet, and is never called redundant either. NetworkPolicies
only: a ClusterNetworkPolicy is a guardrail against tomorrow's NetworkPolicies, redundant or not
today (cluster policies still take part in every verdict). Whole policies are judged first, then
the rules of the others, each with the ones found before it removed: every reported item can be
removed together and no verdict changes (tests/unit/audit/test_lint.py checks that, and the
verdicts with addresses outside the pods, on random clusters).

How it stays fast. Removing an item never changes which pods are isolated (see above), so it can
only turn allowed cells into denied ones, and only the cells between the pods its policy selects
and the pods its peers match, on the probes its ports name (its reach). The whole map is computed
once; then, per item, cheapest first: (1) no cell of its reach is allowed: redundant; (2) a few
allowed cells of its reach, asked of the reference evaluator without the item, and one is denied:
needed; (3) else the map of the cells its policy decides is computed with and without the item,
over the pods of its allowed cells only and the policies deciding them (a cell needs its
destination's ingress and its source's egress only), and compared on the item's reach. Measured on
`benchmarks/kube_burner.py` clusters (2-core VM, `netpol lint` end to end, and `netpol reach -o
groups` on the same file): 1,000 pods / 250 policies 0.9 s (reach 0.6 s; 305 items judged: 207
needed by a witness, 18 policy maps of at most 25 pods); with 20 ClusterNetworkPolicies 2.8 s
(2.5 s); 2,500 / 1,000 4.1 s (2.5 s); 5,000 / 2,000 19 s (11 s). The first version, which mapped
every item over all the pods of its reach, took 259 s at 5,000 / 2,000.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from netpol.audit.selection import PodSelection, iter_bits
from netpol.labels import Labels, LabelSelector
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterState,
    Direction,
    NetworkPolicy,
    Pod,
    Rule,
)
from netpol.semantics.probes import Probe
from netpol.semantics.reach import ReachMap, compute_reach
from netpol.semantics.reference import pods_connect

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
WITNESS_TRIES = 4  # allowed cells asked of the reference evaluator before a map is computed
Policies = tuple[NetworkPolicy, ...]
Side = tuple[Direction, int, int]  # a direction, the pods whose side it is, the peers: see `changes`


@dataclass(frozen=True)
class Redundant:
    """A policy (`direction` None) or one of its rules, whose removal changes no verdict; `related`:
    the other policies that isolate the same pods in the same direction (what still admits)."""

    policy: NetworkPolicy
    direction: Direction | None = None
    index: int = -1
    related: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "" if self.direction is None else f"spec.{self.direction}[{self.index}]"


@dataclass
class SearchCounts:
    """How the search decided, for benchmarks and tests: items judged, proved needed by a
    witness, and maps computed."""

    judged: int = 0
    witnessed: int = 0
    maps: int = 0
    pods_mapped: list[int] = field(default_factory=list)


OTHER_VALUE = "~other"  # not a label value: no selector can name it


def _pod_selectors(state: ClusterState) -> Iterator[LabelSelector]:
    """Every selector of the state that is matched against pod labels."""
    for policy in state.policies:
        yield policy.pod_selector
        for rule in (*policy.ingress, *policy.egress):
            yield from (peer.pod_selector for peer in rule.peers if peer.pod_selector is not None)
    for cluster_policy in state.cluster_policies:
        rules = (*cluster_policy.ingress, *cluster_policy.egress)
        pods = [cluster_policy.subject.pods] + [peer.pods for rule in rules for peer in rule.peers]
        yield from (p.pod_selector for p in pods if p is not None)


def project_labels(state: ClusterState) -> Callable[[Pod], Pod]:
    """A pod with only the labels some selector looks at: a key no selector names is dropped, a
    value no selector names becomes OTHER_VALUE. Every selector matches the pod as before, and
    pods that differ only in labels nobody selects on (kube-burner's per-pod `num`, a
    `pod-template-hash`) fall into one class of the reach map: fewer classes, faster maps."""
    values: dict[str, set[str]] = {}
    for selector in _pod_selectors(state):
        for key, value in selector.match_labels.items():
            values.setdefault(key, set()).add(value)
        for requirement in selector.match_expressions:
            values.setdefault(requirement.key, set()).update(requirement.values)

    def project(pod: Pod) -> Pod:
        labels = Labels({k: v if v in values[k] else OTHER_VALUE
                         for k, v in pod.labels.items() if k in values})
        return pod if labels == pod.labels else replace(pod, labels=labels)

    return project


def is_default_deny(policy: NetworkPolicy) -> bool:
    """Every pod of its namespace, and no rule in some direction it isolates."""
    return policy.pod_selector.is_empty and any(
        policy.isolates(d) and not policy.rules(d) for d in DIRECTIONS)


def reaches_outside(rule: Rule) -> bool:
    """The rule admits addresses that are no pod's: an ipBlock peer, or every peer."""
    return not rule.peers or any(peer.ip_block is not None for peer in rule.peers)


@dataclass(frozen=True)
class _Item:
    """What removing one item (a policy, or one of its rules) touches: per rule it takes away,
    the pods whose side the rule decides and its peers (`Side`); the probes its ports name."""

    key: str
    sides: tuple[Side, ...]
    probes: frozenset[int]


@dataclass(frozen=True)
class _PolicyMap:
    """The map of the cells one policy's rules decide, every item of it still there: computed
    once per policy and compared with the map without each of its items in turn."""

    sides: tuple[Side, ...]
    probes: tuple[int, ...]  # indexes into the search's probes
    pods: tuple[Pod, ...]
    reach: ReachMap
    position: dict[int, int]  # selection index → index in `reach.pods`


class _Search:
    """The state as redundant items are taken out of it, and the questions about one item."""

    def __init__(self, state: ClusterState, probes: Sequence[Probe], selection: PodSelection,
                 counts: SearchCounts) -> None:
        self.state, self.probes, self.sel, self.counts = state, tuple(probes), selection, counts
        self.originals = {p.key: p for p in state.policies}
        self.current = dict(self.originals)
        self.removed_rules: dict[str, set[tuple[Direction, int]]] = {}
        self.targets = {p.key: selection.policy_targets(p) for p in state.policies}
        self.subjects = {c.key: selection.cluster_subject(c) for c in state.cluster_policies}
        self.isolating: dict[Direction, list[int]] = {d: [0] * len(selection.pods) for d in DIRECTIONS}
        for policy in state.policies:
            for direction in DIRECTIONS:
                if policy.isolates(direction):
                    for i in iter_bits(self.targets[policy.key]):
                        self.isolating[direction][i] += 1
        self.mapped = sum(1 << i for i, pod in enumerate(selection.pods) if pod.takes_part)
        project = project_labels(state)
        self.projected = [project(pod) for pod in selection.pods]
        self.named: dict[tuple[str, str], set[int]] = {}
        for selected in selection.pods:
            for port in selected.ports:
                if port.name is not None:
                    self.named.setdefault((port.name, port.protocol), set()).add(port.port)
        # The whole map, once: removing rules only ever turns allowed cells into denied ones (no
        # item judged changes which pods are isolated), so the allowed cells it shows in an
        # item's reach are the only ones to look at; and every removal keeps it as it is.
        self.full = compute_reach(state, self.probes)
        in_full = {pod.key: i for i, pod in enumerate(self.full.pods)}
        self.in_full = [in_full.get(pod.key, -1) for pod in selection.pods]
        self._maps: dict[str, _PolicyMap] = {}
        self._reach_memo: dict[frozenset[int], list[int]] = {}
        self._rule_probes: dict[Rule, frozenset[int]] = {}
        self._entries: dict[tuple[str, int | str | None, int | None], frozenset[int]] = {}
        self._by_protocol: dict[str, tuple[list[int], list[int]]] = {}  # protocol → (first ports, probes)
        for i, probe in sorted(enumerate(self.probes), key=lambda item: (item[1].port or 0)):
            if probe.port is not None:
                starts, indexes = self._by_protocol.setdefault(probe.protocol, ([], []))
                starts.append(probe.port)
                indexes.append(i)

    # -- the state as it stands ---------------------------------------------------------------

    def now(self) -> Policies:
        return tuple(self.current.values())

    def _without_rule(self, key: str, direction: Direction, index: int) -> NetworkPolicy:
        removed = self.removed_rules.get(key, set()) | {(direction, index)}
        original = self.originals[key]
        kept = {d: tuple(r for i, r in enumerate(original.rules(d)) if (d, i) not in removed)
                for d in DIRECTIONS}
        return replace(original, ingress=kept["ingress"], egress=kept["egress"])

    def take_out_policy(self, key: str) -> None:
        policy = self.current.pop(key)
        for direction in DIRECTIONS:
            if policy.isolates(direction):
                for i in iter_bits(self.targets[key]):
                    self.isolating[direction][i] -= 1

    def take_out_rule(self, key: str, direction: Direction, index: int) -> None:
        self.current[key] = self._without_rule(key, direction, index)
        self.removed_rules.setdefault(key, set()).add((direction, index))

    # -- what an item touches -------------------------------------------------------------------

    def rule_probes(self, rule: Rule) -> frozenset[int]:
        """Indexes of the probes a rule's ports name (no ports: all); a named port, at every
        number some pod gives it."""
        found = self._rule_probes.get(rule)
        if found is None:
            found = frozenset(range(len(self.probes))) if not rule.ports else frozenset().union(
                *(self._entry_probes(e.protocol, e.port, e.end_port) for e in rule.ports))
            self._rule_probes[rule] = found
        return found

    def _entry_probes(self, protocol: str, port: int | str | None, end_port: int | None) -> frozenset[int]:
        """The probes one `ports` entry names (probes stand for disjoint port ranges, so the
        ones holding a number are found by bisection)."""
        key = (protocol, port, end_port)
        found = self._entries.get(key)
        if found is None:
            starts, indexes = self._by_protocol.get(protocol, ([], []))
            if port is None:
                found = frozenset(indexes)
            elif isinstance(port, int):
                first, last = port, end_port or port
                lo = max(bisect.bisect_right(starts, first) - 1, 0)
                found = frozenset(i for i in indexes[lo:bisect.bisect_right(starts, last)]
                                  if (self.probes[i].last or 0) >= first)
            else:
                holding = (self._probe_holding(protocol, n) for n in self.named.get((port, protocol), ()))
                found = frozenset(i for i in holding if i is not None)
            self._entries[key] = found
        return found

    def _probe_holding(self, protocol: str, number: int) -> int | None:
        starts, indexes = self._by_protocol.get(protocol, ([], []))
        at = bisect.bisect_right(starts, number) - 1
        if at < 0 or number > (self.probes[indexes[at]].last or 0):
            return None
        return indexes[at]

    def item(self, key: str, rules: Iterable[tuple[Direction, Rule]]) -> _Item:
        """The item that takes `rules` of policy `key` away."""
        policy = self.originals[key]
        sides: list[Side] = []
        probes: set[int] = set()
        for direction, rule in rules:
            sides.append((direction, self.targets[key], self.sel.rule_peers(policy, rule)))
            probes |= self.rule_probes(rule)
        return _Item(key, tuple(sides), frozenset(probes))

    def judged_rules(self, key: str) -> list[tuple[Direction, Rule]]:
        """The rules of a policy that can be judged: those of directions it isolates that admit
        pods only."""
        policy = self.originals[key]
        return [(d, r) for d in DIRECTIONS if policy.isolates(d)
                for r in policy.rules(d) if not reaches_outside(r)]

    def isolated_by_others(self, key: str, direction: Direction) -> bool:
        return all(self.isolating[direction][i] >= 2 for i in iter_bits(self.targets[key]))

    def related(self, policy: NetworkPolicy, directions: Sequence[Direction]) -> tuple[str, ...]:
        """The other policies (as they stand) isolating some of its pods in one of `directions`."""
        mine = self.targets[policy.key]
        return tuple(p.ref for k, p in sorted(self.current.items()) if k != policy.key
                     and mine & self.targets[k] and any(p.isolates(d) for d in directions))

    # -- the verdict on one item ----------------------------------------------------------------

    def changes(self, item: _Item, without: Policies) -> bool:
        """Removing the item (`without`: the policies then) changes some cell: between the pods
        of a side and the side's peers, on the item's probes (no other cell can change). Three
        steps, cheapest first: no such cell is allowed now (then none can change); a cell that
        is, asked of the reference evaluator without the item, is denied (a witness); the map
        of the item's policy, with and without the item, differs there."""
        self.counts.judged += 1
        cells = list(itertools.islice(self._allowed_cells(item), max(1, WITNESS_TRIES)))
        if not cells:
            return False
        if self._witness(item, without, cells[:WITNESS_TRIES]):
            self.counts.witnessed += 1
            return True
        return self._map_changes(item, without)

    def _ends(self, side: Side) -> tuple[int, int]:
        """A side's sources and destinations (pods with a cell)."""
        direction, targets, peers = side
        src, dst = (peers, targets) if direction == "ingress" else (targets, peers)
        return src & self.mapped, dst & self.mapped

    def _reaching(self, probes: frozenset[int]) -> list[int]:
        """Per class of the whole map, the classes it reaches on some of `probes` (kept per set
        of probes: many items name the same ports)."""
        found = self._reach_memo.get(probes)
        if found is None:
            found = [0] * len(self.full.classes)
            for k in probes:
                for c, row in enumerate(self.full.allowed_classes[k]):
                    found[c] |= row
            self._reach_memo[probes] = found
        return found

    def _allowed_cells(self, item: _Item) -> Iterator[tuple[Pod, Pod, int]]:
        """The cells of the item's reach that the whole map allows, as (source, destination, probe)."""
        full, reaching = self.full, self._reaching(item.probes)
        for side in item.sides:
            src, dst = self._ends(side)
            by_class: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
            for members, bits in zip(by_class, (src, dst), strict=True):
                for i in iter_bits(bits):
                    members.setdefault(full.pod_class[self.in_full[i]], []).append(self.in_full[i])
            dst_classes = sum(1 << c for c in by_class[1])
            for c, sources in by_class[0].items():
                for e in iter_bits(reaching[c] & dst_classes):
                    pair = next(((s, d) for s in sources for d in by_class[1][e] if s != d), None)
                    if pair is None:
                        continue
                    k = next(k for k in sorted(item.probes) if full.allowed_classes[k][c] >> e & 1)
                    yield full.pods[pair[0]], full.pods[pair[1]], k

    def _restricted(self, policies: Policies, sides: Sequence[Side],
                    pods: tuple[Pod, ...] = ()) -> ClusterState:
        """A state of `pods` and only what of `policies` decides the cells of `sides` (`_deciding`)."""
        state = self.state
        return ClusterState(state.namespaces, pods, state.nodes, self._deciding(policies, sides),
                            self._cluster_deciding(sides))

    def _witness(self, item: _Item, without: Policies, cells: list[tuple[Pod, Pod, int]]) -> bool:
        """One of `cells` is denied without the item (asked of the reference evaluator, over the
        policies deciding those cells only)."""
        after = self._restricted(without, item.sides)
        for src, dst, k in cells:
            probe = self.probes[k]
            if not pods_connect(after, src, dst, probe.port, probe.protocol):
                return True
        return False

    def _policy_map(self, key: str) -> _PolicyMap:
        """The map of every judged rule of policy `key`, as the state stands (computed once:
        removals found redundant change no cell of it), over the pods of its allowed cells only
        (the others' cells are denied and stay so)."""
        found = self._maps.get(key)
        if found is None:
            policy_item = self.item(key, self.judged_rules(key))
            probes = tuple(sorted(policy_item.probes))
            bits = 0
            for side in policy_item.sides:
                src, dst = self._live(side, probes)
                bits |= src | dst
            pods = tuple(self.projected[i] for i in iter_bits(bits))
            reach = compute_reach(self._restricted(self.now(), policy_item.sides, pods),
                                  [self.probes[k] for k in probes])
            at = {pod.key: n for n, pod in enumerate(reach.pods)}
            position = {i: at[self.sel.pods[i].key] for i in iter_bits(bits)}
            found = _PolicyMap(policy_item.sides, probes, pods, reach, position)
            self._maps[key] = found
            self.counts.maps += 1
            self.counts.pods_mapped.append(len(pods))
        return found

    def _live(self, side: Side, probes: Sequence[int]) -> tuple[int, int]:
        """The sources and destinations of a side that the whole map lets connect on some of
        `probes`: removing rules only denies what was allowed, so no cell of the others changes."""
        src, dst = self._ends(side)
        full = self.full
        destinations = 0
        for i in iter_bits(dst):
            destinations |= 1 << full.pod_class[self.in_full[i]]
        reaching = self._reaching(frozenset(probes))
        live_src = reached = 0
        for i in iter_bits(src):
            found = reaching[full.pod_class[self.in_full[i]]] & destinations
            if found:
                live_src |= 1 << i
                reached |= found
        live_dst = sum(1 << i for i in iter_bits(dst) if reached >> full.pod_class[self.in_full[i]] & 1)
        return live_src, live_dst

    def _map_changes(self, item: _Item, without: Policies) -> bool:
        """The map of the item's policy against the same map without the item, over the item's
        cells. Pods fall into the same classes in both: a pod's class is its namespace, labels,
        ports and the address blocks (ipBlocks) it is in, and no item judged has an ipBlock, so
        removing one removes no block. (Were they grouped differently, the maps would be said to
        differ: nothing is reported redundant on a guess.)"""
        before = self._policy_map(item.key)
        after = compute_reach(self._restricted(without, before.sides, before.pods),
                              [self.probes[k] for k in before.probes])
        self.counts.maps += 1
        a, b = before.reach, after
        if a.pod_class != b.pod_class:
            return True
        sizes = Counter(a.pod_class)
        rows = [n for n, k in enumerate(before.probes) if k in item.probes]
        for side in item.sides:
            src, dst = self._ends(side)
            sources = {a.pod_class[before.position[i]] for i in iter_bits(src) if i in before.position}
            destinations = 0
            for i in iter_bits(dst):
                if i in before.position:  # else all its cells were denied, and stay so
                    destinations |= 1 << a.pod_class[before.position[i]]
            for n in rows:
                rows_a, rows_b = a.allowed_classes[n], b.allowed_classes[n]
                for c in sources:
                    diff = (rows_a[c] ^ rows_b[c]) & destinations
                    if sizes[c] == 1:
                        diff &= ~(1 << c)  # a one-pod class: its diagonal is the pod reaching itself
                    if diff:
                        return True
        return False

    def _cluster_deciding(self, sides: Sequence[Side]) -> tuple[ClusterNetworkPolicy, ...]:
        """The cluster policies deciding the cells of `sides`, cut to the directions that do."""
        needed: dict[str, set[Direction]] = {}
        for direction, targets, peers in sides:
            other: Direction = "egress" if direction == "ingress" else "ingress"
            for policy in self.state.cluster_policies:
                subject = self.subjects[policy.key]
                if subject & targets and policy.rules(direction):
                    needed.setdefault(policy.key, set()).add(direction)
                if subject & peers & self.mapped and policy.rules(other):
                    needed.setdefault(policy.key, set()).add(other)
        return tuple(replace(p, ingress=p.ingress if "ingress" in needed[p.key] else (),
                             egress=p.egress if "egress" in needed[p.key] else ())
                     for p in self.state.cluster_policies if p.key in needed)

    def _deciding(self, policies: Policies, sides: Sequence[Side]) -> Policies:
        """The `policies` deciding the cells of `sides`: a cell's verdict needs its
        destination's ingress and its source's egress only, so per policy only the directions
        in which it decides some of them (the ingress of those selecting a side's pods, the egress
        of those selecting its peers, for an ingress side). The other cells of a map over these
        policies lose some, alike with and without an item: only the item's cells are compared."""
        needed: dict[str, set[Direction]] = {}
        for direction, targets, peers in sides:
            other: Direction = "egress" if direction == "ingress" else "ingress"
            for policy in policies:
                selected = self.targets[policy.key]
                if selected & targets and policy.isolates(direction):
                    needed.setdefault(policy.key, set()).add(direction)
                if selected & peers & self.mapped and policy.isolates(other):
                    needed.setdefault(policy.key, set()).add(other)
        return tuple(_only(p, needed[p.key]) for p in policies if p.key in needed)

    # -- the two passes -------------------------------------------------------------------------

    def policy_is_redundant(self, key: str) -> bool:
        policy = self.originals[key]
        directions = [d for d in DIRECTIONS if policy.isolates(d)]
        if is_default_deny(policy) or not self.targets[key]:
            return False
        rules = [(d, r) for d in directions for r in policy.rules(d)]
        if any(reaches_outside(r) for _, r in rules):
            return False
        if not all(self.isolated_by_others(key, d) for d in directions):
            return False  # the only policy isolating some pod: removing it opens that pod to the outside
        without = tuple(p for k, p in self.current.items() if k != key)
        return not self.changes(self.item(key, rules), without)

    def rule_is_redundant(self, key: str, direction: Direction, index: int) -> bool:
        rule = self.originals[key].rules(direction)[index]
        if reaches_outside(rule):
            return False
        without = tuple(self._without_rule(key, direction, index) if k == key else p
                        for k, p in self.current.items())
        return not self.changes(self.item(key, [(direction, rule)]), without)


def _only(policy: NetworkPolicy, directions: set[Direction]) -> NetworkPolicy:
    """The policy with only its rules and isolation of `directions`."""
    if len(directions) == len(DIRECTIONS):
        return policy
    (direction,) = directions
    return replace(policy, ingress=policy.ingress if direction == "ingress" else (),
                   egress=policy.egress if direction == "egress" else (),
                   policy_types=("Ingress",) if direction == "ingress" else ("Egress",))


def find_redundant(state: ClusterState, probes: Sequence[Probe], selection: PodSelection, *,
                   skip_policies: frozenset[str] = frozenset(),
                   skip_rules: frozenset[tuple[str, Direction, int]] = frozenset(),
                   counts: SearchCounts | None = None) -> list[Redundant]:
    """The redundant policies, then the redundant rules of the others, each judged with the ones
    before it removed. `skip_*`: items already reported as doing nothing (they select no pod,
    their rules match nothing), not reported twice. `counts`: how the items were decided."""
    search = _Search(state, probes, selection, SearchCounts() if counts is None else counts)
    found: list[Redundant] = []
    for key in sorted(search.originals):
        if key not in skip_policies and search.policy_is_redundant(key):
            policy = search.originals[key]
            directions = [d for d in DIRECTIONS if policy.isolates(d)]
            search.take_out_policy(key)
            found.append(Redundant(policy, related=search.related(policy, directions)))
    for key in sorted(search.current):
        policy = search.originals[key]
        for direction in DIRECTIONS:
            if not policy.isolates(direction):
                continue
            for index in range(len(policy.rules(direction))):
                if (key, direction, index) in skip_rules:
                    continue
                if not search.rule_is_redundant(key, direction, index):
                    continue
                search.take_out_rule(key, direction, index)
                found.append(Redundant(policy, direction, index, search.related(policy, [direction])
                                       + ((policy.ref,) if search.current[key].rules(direction) else ())))
    return found
