"""The reachability map, fast: computed on equivalence classes of pods with label indexes.

Pods that share namespace, labels, container ports and ipBlock memberships behave identically
under every policy, so we evaluate classes, not pods, and sets of classes are Python ints used
as bitsets. `tests/unit/semantics/test_properties.py` checks every cell against `netpol.semantics.reference`.
Which pods are rows and columns (`participants`), and why the others are not (`absent_notes`),
are decided here too.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from netpol.labels import Labels, LabelSelector
from netpol.model import INACTIVE_PHASES, ClusterState, ContainerPort, IPBlock, NetworkPolicy, Pod, Rule
from netpol.semantics.probes import Probe

FAMILIES = (4, 6)


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
    seen: dict[IPBlock, None] = {}
    for policy in state.policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers:
                if peer.ip_block is not None:
                    seen.setdefault(peer.ip_block)
    return {f: [b for b in seen if b.cidr.version == f] for f in FAMILIES}


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


@dataclass(frozen=True)
class _CompiledRule:
    peers: int
    all_ports: bool
    entries: tuple[tuple[str, int | str | None, int | None], ...]  # (protocol, port, end_port)

    def numeric_match(self, probe: Probe) -> bool:
        if self.all_ports:
            return True
        for protocol, port, end in self.entries:
            if protocol != probe.protocol or isinstance(port, str):
                continue
            if port is None or (probe.port is not None and port <= probe.port <= (end or port)):
                return True
        return False

    def named(self, probe: Probe) -> tuple[str, ...]:
        return tuple(p for proto, p, _ in self.entries if proto == probe.protocol and isinstance(p, str))


class _FamilyEngine:
    """Per family: each class's isolating policies' rules, compiled to bitsets."""

    def __init__(self, index: _ClassIndex, family: int) -> None:
        self.index, self.family = index, family
        self.mask = index.family_mask[family]
        n = len(index.classes)
        self.ingress: list[list[_CompiledRule] | None] = [None] * n
        self.egress: list[list[_CompiledRule] | None] = [None] * n
        memo: dict[tuple[int, str, int], _CompiledRule] = {}
        for p_id, policy in enumerate(index.state.policies):
            targets = index.policy_targets(policy) & self.mask
            if not targets:
                continue
            for direction, table in (("ingress", self.ingress), ("egress", self.egress)):
                if not policy.isolates(direction):  # type: ignore[arg-type]
                    continue
                rules = [
                    memo.setdefault((p_id, direction, r_id), self._compile(policy, rule))
                    for r_id, rule in enumerate(policy.rules(direction))  # type: ignore[arg-type]
                ]
                for cls in iter_bits(targets):
                    slot = table[cls]
                    if slot is None:
                        table[cls] = slot = []
                    slot.extend(rules)

    def _compile(self, policy: NetworkPolicy, rule: Rule) -> _CompiledRule:
        entries = tuple((e.protocol, e.port, e.end_port) for e in rule.ports)
        return _CompiledRule(self.index.rule_peers(policy, rule, self.family), not rule.ports, entries)

    def allowed(self, probe: Probe) -> dict[int, int]:
        """src class → bitset of dst classes, over this family, for `probe`."""
        classes = self.index.classes
        named_dsts: dict[str, int] = {}

        def resolves(name: str) -> int:
            found = named_dsts.get(name)
            if found is None:
                found = 0
                for i in iter_bits(self.mask):
                    if classes[i].resolve_port(name, probe.protocol) == probe.port:
                        found |= 1 << i
                named_dsts[name] = found
            return found

        open_dsts = 0
        ingress_groups: dict[int, int] = {}
        for d in iter_bits(self.mask):
            rules = self.ingress[d]
            if rules is None:
                open_dsts |= 1 << d
                continue
            admitted = 0
            for r in rules:
                if r.numeric_match(probe) or any(
                    classes[d].resolve_port(n, probe.protocol) == probe.port for n in r.named(probe)
                ):
                    admitted |= r.peers
            ingress_groups[admitted] = ingress_groups.get(admitted, 0) | 1 << d
        reachable_dst: dict[int, int] = {}  # src → dsts whose ingress admits src
        for admitted, dsts in ingress_groups.items():
            for s in iter_bits(admitted & self.mask):
                reachable_dst[s] = reachable_dst.get(s, 0) | dsts
        result: dict[int, int] = {}
        for s in iter_bits(self.mask):
            rules = self.egress[s]
            if rules is None:
                egress = self.mask
            else:
                egress = 0
                for r in rules:
                    if r.numeric_match(probe):
                        egress |= r.peers
                    else:
                        for name in r.named(probe):
                            egress |= r.peers & resolves(name)
            result[s] = egress & (open_dsts | reachable_dst.get(s, 0))
        return result


def participants(state: ClusterState, family: int | None = None) -> tuple[Pod, ...]:
    """The matrix's rows and columns: active, non-hostNetwork pods (with an address of `family`)."""
    return tuple(p for p in state.active_pods if family is None or p.ip_of_family(family))


def compute_reach(state: ClusterState, probes: Sequence[Probe], family: int | None = None) -> ReachMap:
    """For every probe, which pods can connect to which (over any shared family, or `family`)."""
    pods = participants(state, family)
    families = (family,) if family else FAMILIES
    index = _ClassIndex(state, pods, families)
    engines = [_FamilyEngine(index, f) for f in families if index.family_mask[f]]
    per_probe = []
    for probe in probes:
        row = [0] * len(index.classes)
        for engine in engines:
            for s, dsts in engine.allowed(probe).items():
                row[s] |= dsts
        per_probe.append(tuple(row))
    return ReachMap(pods, tuple(probes), tuple(index.pod_class), tuple(index.classes), tuple(per_probe))


# -- who is not in the matrix, and why (said on stderr: a pod that drops out silently, such as a
# hostNetwork pod, a pod without an IP or a finished one, looks like a bug) ---------------------

# Why, per reason, and in this order: a finished hostNetwork pod counts as finished, once.
ABSENCE_REASONS = {
    "finished": ("finished pod (phase Succeeded or Failed)",
                 "finished pods no longer run, so no policy applies to them"),
    "hostNetwork": ("hostNetwork pod",
                    "hostNetwork pods share their node's address; traffic between a pod and its own "
                    "node is always allowed"),
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
