"""`netpol diff`: what a change to a cluster opens and closes — every cell (source pod,
destination pod, probe) whose verdict differs between OLD and NEW, grouped as `reach -o groups`
groups cells, each group with the object changes that caused it and, for one example cell,
the reference evaluator's reason on both sides.

Cells are compared on the pods that take part on both sides (matched by `namespace/name`);
pods on one side only are listed as added or removed, not as cells: a cell needs a verdict
before and after to have changed, and a new pod's reach is `netpol reach` of NEW (a pod being
deployed is not a change of policy; counting its cells would drown the one rule that opened
something in every pod a release adds). A pod always reaches itself, so those cells never
change and are not counted.

How, at scale: both sides are mapped with `netpol.semantics.reach.compute_reach` (pods in
equivalence classes, bitsets). Pods that share a class on both sides share a *joint class*;
each side's rows are carried into joint classes once per distinct row, and a probe's changes are
`new & ~old` (opened) and `old & ~new` (closed) per joint class. Grouping is `iter_groups` on
those change maps. The reference evaluator runs only for one example cell of each of the first
`EXPLAINED_GROUPS` groups, on each side. Measured: two versions of a 1,000-pod / 250-policy
kube-burner cluster (10 policies removed), 206 probes — see the README for the number.

Causes: `netpol.audit.changes` lists every object added, removed or edited. A group is caused
by the changes that concern one of its cells: a NetworkPolicy that selects (in either version,
in that version's state) a source pod and isolates it for egress, or a destination pod and
isolates it for ingress — an edit confined to `spec.ingress` concerns ingress only; the same
for a cluster policy whose subject holds the pod and that has rules in that direction; the
source or destination pod itself (labels, addresses, ports); their namespaces (labels); a Node
whose addresses are theirs.

`Diff` is the result; `netpol.audit.diff_formats` renders it as text, JSON and markdown (the
JSON schema is documented there).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from netpol.audit.changes import ObjectChange, object_changes
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterRule,
    ClusterState,
    DestinationNamedPort,
    Direction,
    NetworkPolicy,
    Pod,
    Rule,
)
from netpol.semantics.formats import describe_pods, describe_probes, iter_groups
from netpol.semantics.probes import Probe
from netpol.semantics.reach import ReachMap, compute_reach, iter_bits
from netpol.semantics.reference import Verdict, cluster_selects, pod_verdicts, selects

EXPLAINED_GROUPS = 100  # groups whose example cell the reference evaluator explains (≈ 1 ms each)
CellChange = Literal["allowed", "denied"]
FAIL_ON = ("allowed", "denied", "any")
_RULE_PATH = re.compile(r"spec\.(ingress|egress)\[(\d+)\]")


@dataclass(frozen=True)
class Outcome:
    """One side's verdict for an example cell, and why (the reference evaluator's reasons)."""

    allowed: bool
    reason: str

    @property
    def verdict(self) -> str:
        return "allowed" if self.allowed else "denied"


@dataclass(frozen=True)
class Example:
    """A cell of a group, explained before and after."""

    source: str
    destination: str
    probe: Probe
    before: Outcome
    after: Outcome


@dataclass(frozen=True)
class ChangeGroup:
    """Every source × every destination (but a pod and itself) × every probe changed alike:
    newly `allowed` or newly `denied`. `source_text`/`destination_text`/`ports_text` are the
    `reach -o groups` spellings (`frontend/*`, `db/[postgres-0]`, `TCP 5432`)."""

    change: CellChange
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    probes: tuple[Probe, ...]
    source_text: str
    destination_text: str
    ports_text: str
    cells: int
    causes: tuple[ObjectChange, ...]
    example: Example | None  # None past the first EXPLAINED_GROUPS groups

    @property
    def line(self) -> str:
        """`frontend/* => db/[postgres-0] : TCP 5432 newly allowed`."""
        return f"{self.source_text} => {self.destination_text} : {self.ports_text} newly {self.change}"


@dataclass(frozen=True)
class Diff:
    """The cells that changed, grouped, and everything that changed around them."""

    probes: tuple[Probe, ...]
    pods_compared: int
    groups: tuple[ChangeGroup, ...]
    objects: tuple[ObjectChange, ...]  # every object change, whether it changed a cell or not
    pods_added: tuple[str, ...]  # take part in NEW only
    pods_removed: tuple[str, ...]  # take part in OLD only

    def cells(self, change: CellChange) -> int:
        return sum(g.cells for g in self.groups if g.change == change)

    @property
    def unchanged(self) -> bool:
        return not self.groups

    @property
    def explained(self) -> int:
        return sum(g.example is not None for g in self.groups)

    def fails(self, fail_on: str | None) -> bool:
        """`--fail-on`: a cell became allowed (`allowed`), denied (`denied`), either (`any`)."""
        if fail_on is None:
            return False
        return any(fail_on in ("any", g.change) for g in self.groups)

    def causing(self) -> set[ObjectChange]:
        return {cause for g in self.groups for cause in g.causes}


def union_probes(*sides: Iterable[Probe]) -> tuple[Probe, ...]:
    """Probes that are elementary on every side: each side's probes (`default_probes`) cut where
    any side's intervals start or end, so that each probe's ports behave alike on both sides.
    A port no probe of a side covers is one that nothing on that side names: those behave alike."""
    spans: dict[str, list[tuple[int, int]]] = {}
    portless: set[Probe] = set()
    for probe in itertools.chain(*sides):
        if probe.port is None or probe.last is None:
            portless.add(probe)
        else:
            spans.setdefault(probe.protocol, []).append((probe.port, probe.last))
    probes: list[Probe] = list(portless)
    for protocol, ranges in spans.items():
        cuts = sorted({a for a, _ in ranges} | {b + 1 for _, b in ranges})
        for start, stop in itertools.pairwise(cuts):
            if any(a <= start <= b for a, b in ranges):
                probes.append(Probe(protocol, start, stop - 1))
    return tuple(sorted(probes, key=lambda p: (p.protocol, p.port or 0)))


# -- the cells -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Joint:
    """The pods on both sides, and their joint classes: (OLD class, NEW class) pairs."""

    old: tuple[Pod, ...]  # the common pods as OLD has them
    new: tuple[Pod, ...]  # … and as NEW has them, in the same order
    pod_class: tuple[int, ...]  # common pod → joint class
    classes: tuple[tuple[int, int], ...]  # joint class → (OLD class, NEW class)


def _join(old: ReachMap, new: ReachMap) -> _Joint:
    at_old = {pod.key: i for i, pod in enumerate(old.pods)}
    pairs: dict[tuple[int, int], int] = {}
    old_pods, new_pods, pod_class = [], [], []
    for n, pod in enumerate(new.pods):
        o = at_old.get(pod.key)
        if o is None:
            continue
        old_pods.append(old.pods[o])
        new_pods.append(pod)
        pod_class.append(pairs.setdefault((old.pod_class[o], new.pod_class[n]), len(pairs)))
    return _Joint(tuple(old_pods), tuple(new_pods), tuple(pod_class), tuple(pairs))


class _Carrier:
    """Turns one side's rows (bitsets of that side's classes) into bitsets of joint classes,
    once per distinct row; a dense row through its complement (fewer bits to visit)."""

    def __init__(self, joint_of_class: list[int], side_classes: int, joint_classes: int) -> None:
        self.joint_of_class = joint_of_class
        self.side_all = (1 << side_classes) - 1
        self.joint_all = (1 << joint_classes) - 1
        self.memo: dict[int, int] = {}

    def carry(self, row: int) -> int:
        found = self.memo.get(row)
        if found is None:
            if row.bit_count() * 2 > self.side_all.bit_count():
                found = self.joint_all & ~self._sparse(self.side_all & ~row)
            else:
                found = self._sparse(row)
            self.memo[row] = found
        return found

    def _sparse(self, row: int) -> int:
        bits = 0
        for c in iter_bits(row):
            bits |= self.joint_of_class[c]
        return bits


def _carriers(joint: _Joint, old: ReachMap, new: ReachMap) -> tuple[_Carrier, _Carrier]:
    of_old, of_new = [0] * len(old.classes), [0] * len(new.classes)
    for j, (o, n) in enumerate(joint.classes):
        of_old[o] |= 1 << j
        of_new[n] |= 1 << j
    size = len(joint.classes)
    return _Carrier(of_old, len(old.classes), size), _Carrier(of_new, len(new.classes), size)


def _change_rows(joint: _Joint, old: ReachMap, new: ReachMap
                 ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per probe, joint class → joint classes it newly reaches (opened) and no longer reaches
    (closed). A joint class of one pod has no cell with itself: its own bit is cleared. Each
    probe starts from the previous one's rows and redoes only the joint classes whose row
    differs on a side (most probes of a large cluster name one deployment's port)."""
    carry_old, carry_new = _carriers(joint, old, new)
    size = len(joint.classes)
    members = Counter(joint.pod_class)
    own = [1 << j if members[j] == 1 else 0 for j in range(size)]
    of_old: list[list[int]] = [[] for _ in old.classes]
    of_new: list[list[int]] = [[] for _ in new.classes]
    for j, (o, n) in enumerate(joint.classes):
        of_old[o].append(j)
        of_new[n].append(j)
    up, down = [0] * size, [0] * size
    opened: list[tuple[int, ...]] = []
    closed: list[tuple[int, ...]] = []
    previous: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    for old_rows, new_rows in zip(old.allowed_classes, new.allowed_classes, strict=True):
        redo: Iterable[int] = range(size)
        if previous is not None:
            redo = {j for c in _differing(old_rows, previous[0]) for j in of_old[c]}
            redo.update(j for c in _differing(new_rows, previous[1]) for j in of_new[c])
        for j in redo:
            o, n = joint.classes[j]
            before = carry_old.carry(old_rows[o]) & ~own[j]
            after = carry_new.carry(new_rows[n]) & ~own[j]
            up[j], down[j] = after & ~before, before & ~after
        if opened and not redo:
            opened.append(opened[-1])
            closed.append(closed[-1])
        else:
            opened.append(tuple(up))
            closed.append(tuple(down))
        previous = (old_rows, new_rows)
    return opened, closed


def _differing(rows: tuple[int, ...], previous: tuple[int, ...]) -> list[int]:
    """The classes whose row differs from the previous probe's (rows of alike probes are
    often the very same objects)."""
    if rows is previous:
        return []
    return [c for c, (a, b) in enumerate(zip(rows, previous, strict=True)) if a is not b and a != b]


# -- what caused them ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Concern:
    """The common pods (as bitsets of their indexes) a change concerns as a source, as a
    destination; for a policy edit confined to some rules, those rules (both versions): it
    concerns only the probes one of them names."""

    change: ObjectChange
    sources: int
    destinations: int
    rules: tuple[Rule | ClusterRule, ...] | None = None

    def concerns(self, sources: int, destinations: int, probes: Sequence[Probe]) -> bool:
        if not (self.sources & sources or self.destinations & destinations):
            return False
        return self.rules is None or any(_names(rule, probe) for rule in self.rules for probe in probes)


def _names(rule: Rule | ClusterRule, probe: Probe) -> bool:
    """The rule may match a connection on the probe's port (a named port: wherever it resolves).
    A rule that names no port of the probe's is skipped alike before and after an edit to it:
    the edit cannot change that probe's cells (NetworkPolicy rules add up; a cluster policy's
    first matching rule decides, and this one matches neither before nor after)."""
    if isinstance(rule, Rule):
        return not rule.ports or any(
            entry.protocol == probe.protocol and probe.port is not None
            and (entry.port is None or isinstance(entry.port, str)
                 or entry.port <= probe.port <= (entry.end_port or entry.port))
            for entry in rule.ports)
    return rule.fails_closed or not rule.protocols or any(
        isinstance(entry, DestinationNamedPort)
        or (entry.protocol == probe.protocol and probe.port is not None
            and entry.first <= probe.port <= entry.last)
        for entry in rule.protocols)


def _touched_rules(change: ObjectChange) -> tuple[tuple[Direction, int], ...] | None:
    """The rules a policy edit is confined to (`spec.ingress[1]…`); None if it touches more."""
    if change.change != "edited":
        return None
    touched: set[tuple[Direction, int]] = set()
    for path in change.fields:
        match = _RULE_PATH.match(path)
        if match is None:
            return None
        touched.add(("ingress" if match.group(1) == "ingress" else "egress", int(match.group(2))))
    return tuple(sorted(touched))


class _Attribution:
    """Which object changes concern which common pods (see the module docstring)."""

    def __init__(self, old: ClusterState, new: ClusterState, joint: _Joint,
                 changes: Sequence[ObjectChange]) -> None:
        self.states = ((old, joint.old), (new, joint.new))
        self.at = {pod.key: i for i, pod in enumerate(joint.new)}
        self.by_namespace: dict[str, list[int]] = {}
        for i, pod in enumerate(joint.new):
            self.by_namespace.setdefault(pod.namespace, []).append(i)
        self.concerns = [c for c in (self._concern(change) for change in changes)
                         if c.sources or c.destinations]

    def causes(self, sources: int, destinations: int, probes: Sequence[Probe]) -> tuple[ObjectChange, ...]:
        return tuple(c.change for c in self.concerns if c.concerns(sources, destinations, probes))

    def _concern(self, change: ObjectChange) -> _Concern:
        if change.kind == "NetworkPolicy":
            return self._policy_concern(change)
        if change.is_policy:
            return self._cluster_policy_concern(change)
        bits = 0
        if change.kind == "Pod":
            bits = 1 << self.at[change.name] if change.name in self.at else 0
        elif change.kind == "Namespace":
            for i in self.by_namespace.get(change.name, ()):
                bits |= 1 << i
        elif change.kind == "Node":
            bits = self._node_pods(change.name)
        return _Concern(change, bits, bits)

    def _policy_concern(self, change: ObjectChange) -> _Concern:
        sources = destinations = 0
        namespace, _, name = change.name.partition("/")
        versions = []
        for state, pods in self.states:
            policy = next((p for p in state.policies if p.namespace == namespace and p.name == name), None)
            if policy is None:
                continue
            versions.append(policy)
            for i in self.by_namespace.get(namespace, ()):
                if selects(policy, pods[i]):
                    sources |= self._bit(policy, "egress", change.directions, i)
                    destinations |= self._bit(policy, "ingress", change.directions, i)
        return _Concern(change, sources, destinations, _rules_of(versions, _touched_rules(change)))

    def _cluster_policy_concern(self, change: ObjectChange) -> _Concern:
        sources = destinations = 0
        versions = []
        for state, pods in self.states:
            policy = next((p for p in state.cluster_policies
                           if p.kind == change.kind and p.name == change.name), None)
            if policy is None:
                continue
            versions.append(policy)
            for i, pod in enumerate(pods):
                if cluster_selects(state, policy, pod):
                    sources |= self._bit(policy, "egress", change.directions, i)
                    destinations |= self._bit(policy, "ingress", change.directions, i)
        return _Concern(change, sources, destinations, _rules_of(versions, _touched_rules(change)))

    @staticmethod
    def _bit(policy: NetworkPolicy | ClusterNetworkPolicy, direction: Direction,
             directions: frozenset[Direction], i: int) -> int:
        """Pod i's bit if the policy has a say in `direction` for it and the change concerns it."""
        if direction not in directions:
            return 0
        if isinstance(policy, NetworkPolicy):
            return 1 << i if policy.isolates(direction) else 0
        return 1 << i if policy.rules(direction) else 0

    def _node_pods(self, name: str) -> int:
        """The common pods one of whose addresses is (in either state) an address of Node `name`."""
        addresses = {ip for state, _ in self.states for node in state.nodes if node.name == name
                     for ip in node.addresses}
        bits = 0
        for _, pods in self.states:
            for i, pod in enumerate(pods):
                if addresses.intersection(pod.ips):
                    bits |= 1 << i
        return bits


def _rules_of(versions: Sequence[NetworkPolicy | ClusterNetworkPolicy],
              touched: tuple[tuple[Direction, int], ...] | None) -> tuple[Rule | ClusterRule, ...] | None:
    """The touched rules of every version that has them (an added rule: the new one only)."""
    if touched is None:
        return None
    rules: list[Rule | ClusterRule] = []
    for policy in versions:
        for direction, index in touched:
            written = policy.rules(direction)
            if index < len(written):
                rules.append(written[index])
    return tuple(rules)


# -- why, for one example cell per group -------------------------------------------------------


class _Explainer:
    """The reference evaluator on an example cell of a group, on both sides."""

    def __init__(self, old: ClusterState, new: ClusterState, joint: _Joint, family: int | None) -> None:
        self.old, self.new, self.joint, self.family = old, new, joint, family
        self.at = {pod.key: i for i, pod in enumerate(joint.new)}

    def example(self, group: ChangeGroup) -> Example:
        """The group's first cell that is not a pod and itself, on its first probe."""
        src, dst = next((s, d) for s in group.sources for d in group.destinations if s != d)
        s, d, probe = self.at[src], self.at[dst], group.probes[0]
        joint = self.joint
        return Example(src, dst, probe, self._outcome(self.old, joint.old[s], joint.old[d], probe),
                       self._outcome(self.new, joint.new[s], joint.new[d], probe))

    def _outcome(self, state: ClusterState, src: Pod, dst: Pod, probe: Probe) -> Outcome:
        """The cell's verdict (allowed over any shared family, or `family`) and the reference
        evaluator's reason: for an allowed cell, both sides; for a denied one, the side(s) that deny."""
        verdicts = [v for v in pod_verdicts(state, src, dst, probe.port, probe.protocol)
                    if self.family is None or v.connection.src.ip.version == self.family]
        if not verdicts:
            return Outcome(False, f"{src.key} and {dst.key} have no address family in common")
        chosen = next((v for v in verdicts if v.allowed), verdicts[0])
        return Outcome(chosen.allowed, _reason(chosen))


def _reason(verdict: Verdict) -> str:
    if verdict.egress.reason == verdict.ingress.reason:  # an exemption: one reason for both
        return verdict.egress.reason
    sides = ((verdict.egress, "egress of", verdict.connection.src),
             (verdict.ingress, "ingress of", verdict.connection.dst))
    return "; ".join(f"{title} {end.pod.key if end.pod else end}: {side.reason}"
                     for side, title, end in sides if verdict.allowed or not side.allowed)


# -- putting it together -----------------------------------------------------------------------


def _change_map(joint: _Joint, new: ReachMap, rows: list[tuple[int, ...]]) -> ReachMap:
    """The changes of one kind as a map over the common pods and their joint classes, for
    `iter_groups` and the `describe_*` spellings."""
    classes = tuple(new.classes[n] for _, n in joint.classes)
    return ReachMap(joint.new, new.probes, joint.pod_class, classes, tuple(rows))


def _groups(change: CellChange, reach: ReachMap, attribution: _Attribution) -> list[ChangeGroup]:
    sizes: dict[str, int] = {}
    for pod in reach.pods:
        sizes[pod.namespace] = sizes.get(pod.namespace, 0) + 1
    found = []
    for sources, destinations, probe_ids in iter_groups(reach):
        cells = (len(sources) * len(destinations) - len(set(sources) & set(destinations))) * len(probe_ids)
        if not cells:
            continue
        probes = tuple(reach.probes[p] for p in probe_ids)
        found.append(ChangeGroup(
            change, tuple(reach.pods[i].key for i in sorted(sources)),
            tuple(reach.pods[i].key for i in sorted(destinations)), probes,
            describe_pods(reach, sources, sizes), describe_pods(reach, destinations, sizes),
            _describe_ports(reach, probe_ids), cells,
            attribution.causes(_bits(sources), _bits(destinations), probes), None))
    return found


def _describe_ports(reach: ReachMap, probe_ids: tuple[int, ...]) -> str:
    """As `reach -o groups` says them; the one probe asked about by its name, not "all probed ports"."""
    if len(reach.probes) == 1:
        probe = reach.probes[0]
        return probe.span if probe.port is None else f"{probe.protocol} {probe.span.split('/')[0]}"
    return describe_probes(reach, probe_ids)


def _bits(indexes: Iterable[int]) -> int:
    bits = 0
    for i in indexes:
        bits |= 1 << i
    return bits


def diff_states(old: ClusterState, new: ClusterState, probes: Sequence[Probe], family: int | None = None,
                explained: int = EXPLAINED_GROUPS) -> Diff:
    """Every cell whose verdict differs between `old` and `new` on `probes` (over any shared
    address family, or `family`), grouped, with causes; the first `explained` groups (text
    order: newly allowed first) with an example cell explained on both sides."""
    old_map, new_map = compute_reach(old, probes, family), compute_reach(new, probes, family)
    joint = _join(old_map, new_map)
    changes = object_changes(old, new)
    attribution = _Attribution(old, new, joint, changes)
    opened, closed = _change_rows(joint, old_map, new_map)
    found = [*_groups("allowed", _change_map(joint, new_map, opened), attribution),
             *_groups("denied", _change_map(joint, new_map, closed), attribution)]
    found.sort(key=lambda group: (group.change != "allowed", group.line))
    explainer = _Explainer(old, new, joint, family)
    groups = tuple(dataclasses.replace(group, example=explainer.example(group)) if n < explained else group
                   for n, group in enumerate(found))
    common = {pod.key for pod in joint.new}
    return Diff(tuple(probes), len(joint.new), groups, changes,
                tuple(p.key for p in new_map.pods if p.key not in common),
                tuple(p.key for p in old_map.pods if p.key not in common))
