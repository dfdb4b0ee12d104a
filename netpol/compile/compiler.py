"""The compiler: a cluster's objects (through the resolver) → each node's `NodeProgram` (the IR).

`ProgramCompiler` builds pod programs and the sets they reference, cached per rule and per
spelling, so that 10,000 policies repeating a selector share one set, and pods selected alike
share one program side; its `forget_*`/`refresh_members` drop what an event made stale (the
incremental compiler calls them). `assemble` is the one place a `NodeProgram` is put together,
for the batch path (`NodeCompiler`, `compile_cluster`) and the incremental one alike.

ClusterNetworkPolicies compile the same way: each rule, for a pod it selects, becomes a
`TierRule` over the same shared sets (`namespaces`/`pods` peers: `pods-…` sets of the resolver's
peer groups; `networks`: `cidrs-…`, shared with ipBlocks spelled alike; `nodes`: `nodes-…`),
cached per policy and direction (per declared ports where an ingress rule names a port). A
Deny rule's pod set holds an address several pods share if any of them is a peer (fail closed
for a deny), every other set only if all of them are.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from bisect import bisect_left
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from netpol.compile.identity_cache import weak_identity_cache
from netpol.compile.ir import (
    POD_SET_PREFIX,
    PORT_SET_PREFIX,
    Allow,
    DirectionProgram,
    NamedElement,
    NodeProgram,
    PeerSet,
    PodProgram,
    PortMatch,
    PortSet,
    TierRule,
)
from netpol.compile.resolver import DIRECTIONS, NodeId, Resolver
from netpol.errors import UsageError
from netpol.intervals import Interval, merge_intervals
from netpol.labels import LabelSelector
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterState,
    ContainerPort,
    DestinationNamedPort,
    DestinationPorts,
    Direction,
    IPAddress,
    IPBlock,
    IPNetwork,
    NetworkPolicy,
    Pod,
    Rule,
)

RuleKey = tuple[str, Direction, int]  # policy key, direction, index
PerPortsKey = tuple[str, Direction, tuple[ContainerPort, ...]]  # policy, direction, a pod's ports
# policies, cluster policies, direction, and the pod's ports where a policy's ingress names a
# port (else None)
SideKey = tuple[tuple[str, ...], tuple[str, ...], Direction, tuple[ContainerPort, ...] | None]
# cluster policies, direction, the pod's ports where one names an ingress port, isolated
TiersKey = tuple[tuple[str, ...], Direction, tuple[ContainerPort, ...] | None, bool]
Tiers = tuple[tuple[TierRule, ...], tuple[TierRule, ...]]  # Admin rules, Baseline rules
NODE_SET_PREFIX = "nodes-"
ANY_HOLDER: NodeId = ("any holder",)  # marks the spelling of a Deny rule's pod set

_ADDRESS_VALUES = operator.attrgetter("address_values")  # of a Pod


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _origin(policy_key: str, direction: Direction, index: int) -> str:
    """What every rule, set and comment derived from `spec.DIRECTION[INDEX]` names as its source."""
    return f"NetworkPolicy {policy_key} spec.{direction}[{index}]"


def _cluster_origin(policy: ClusterNetworkPolicy, direction: Direction, index: int) -> str:
    """`Admin tier: ClusterNetworkPolicy name (priority 5) spec.ingress[0]: Deny` (the rule's
    free-text `name` stays out of rulesets: explain shows it)."""
    rule = policy.rules(direction)[index]
    action = "Deny (fails closed: a peer netpol does not recognise)" if rule.fails_closed else rule.action
    where = f"{policy.ref} (priority {policy.priority}) spec.{direction}[{index}]"
    return f"{policy.tier} tier: {where}: {action}"


def _selector_spelling(selector: LabelSelector) -> str:
    requirements = sorted((r.key, r.operator, tuple(sorted(r.values))) for r in selector.match_expressions)
    return repr((sorted(selector.match_labels.items()), requirements))


def _named_ports(rule: Rule) -> list[tuple[str, str]]:
    """(name, protocol) of the rule's named ports."""
    return [(e.port, e.protocol) for e in rule.ports if isinstance(e.port, str)]


def sorted_addresses(ips: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    """IPv4 first, then IPv6, each in numeric order (a node's own addresses, as programs list them)."""
    return tuple(sorted(ips, key=lambda ip: (ip.version, int(ip))))


def block_intervals(block: IPBlock) -> list[Interval]:
    """`cidr` minus every `except`, as intervals."""
    return list(_block_intervals(block))


@functools.lru_cache(maxsize=1 << 14)
def _block_intervals(block: IPBlock) -> tuple[Interval, ...]:
    """Integer arithmetic, so overlapping or nested `except`s subtract exactly what they cover."""
    first, last = int(block.cidr.network_address), int(block.cidr.broadcast_address)
    holes = sorted((int(h.network_address), int(h.broadcast_address))
                   for h in block.except_ if h.version == block.cidr.version)
    found, start = [], first
    for a, b in holes:
        if b < start or a > last:
            continue
        if a > start:
            found.append((start, a - 1))
        start = max(start, b + 1)
    if start <= last:
        found.append((start, last))
    return tuple(found)


@functools.lru_cache(maxsize=1 << 14)  # policies repeat the same ipBlocks
def _block_text(block: IPBlock) -> str:
    holes = f" except {', '.join(str(e) for e in block.except_)}" if block.except_ else ""
    return f"{block.cidr}{holes}"


@dataclass
class ProgramCompiler:
    """Pod programs and the sets they reference, cached per rule and per spelling; `forget_*`
    drops what an event made stale (the incremental compiler calls them)."""

    resolver: Resolver
    peer_sets: dict[str, PeerSet] = field(default_factory=dict)
    port_sets: dict[str, PortSet] = field(default_factory=dict)
    _rule_peers: dict[RuleKey, tuple[str, ...] | None] = field(default_factory=dict)
    _spellings: dict[tuple[NodeId, ...], str] = field(default_factory=dict)  # groups → set name
    _groups_of: dict[str, tuple[NodeId, ...]] = field(default_factory=dict)  # set name → groups
    _rule_allows: dict[tuple[str, Direction], tuple[Allow, ...]] = field(default_factory=dict)
    _users: dict[str, set[RuleKey]] = field(default_factory=dict)  # set name → rules spelling it
    _keys_of: dict[str, set[RuleKey]] = field(default_factory=dict)  # policy → its rules spelled
    _rule_port_sets: dict[RuleKey, str] = field(default_factory=dict)  # egress rule → its port set
    _port_users: dict[str, set[RuleKey]] = field(default_factory=dict)  # port set → rules spelling it
    _port_keys_of: dict[str, set[RuleKey]] = field(default_factory=dict)  # policy → its rules above
    _per_ports_allows: dict[PerPortsKey, tuple[Allow, ...]] = field(default_factory=dict)
    _per_ports_of: dict[str, set[PerPortsKey]] = field(default_factory=dict)  # policy → its keys above
    _sides: dict[SideKey, DirectionProgram] = field(default_factory=dict)
    _sides_of: dict[str, set[SideKey]] = field(default_factory=dict)  # policy → sides it is in
    _tier_rules: dict[tuple[str, Direction], tuple[TierRule, ...]] = field(default_factory=dict)
    _per_ports_tiers: dict[PerPortsKey, tuple[TierRule, ...]] = field(default_factory=dict)
    _any_holder: set[str] = field(default_factory=set)  # pod sets of Deny rules (see the module)
    _node_selectors: dict[str, tuple[LabelSelector, ...]] = field(default_factory=dict)  # nodes-… sets
    _tier_sides: dict[TiersKey, Tiers] = field(default_factory=dict)  # a side's Admin and Baseline rules
    _tier_sides_of: dict[str, set[TiersKey]] = field(default_factory=dict)  # cluster policy → keys above

    # -- sets ------------------------------------------------------------------------------

    def rule_peer_sets(self, policy: NetworkPolicy, direction: Direction,
                       index: int) -> tuple[str, ...] | None:
        """Names of the sets a rule's peers are in (None: no peers, every address)."""
        key = (policy.key, direction, index)
        if key not in self._rule_peers:
            self._keys_of.setdefault(policy.key, set()).add(key)
            names = self._rule_peers[key] = self._spell_peers(policy, direction, index)
            for name in names or ():
                self._users.setdefault(name, set()).add(key)
        return self._rule_peers[key]

    def _spell_peers(self, policy: NetworkPolicy, direction: Direction, index: int) -> tuple[str, ...] | None:
        rule = policy.rules(direction)[index]
        if not rule.peers:
            return None  # §2: absent/empty from/to = everything, outside addresses included
        names = []
        groups = self.resolver.rule_peer_groups(policy.key, direction, index)
        if groups:
            names.append(self._group_set(groups))
        blocks = [p.ip_block for p in rule.peers if p.ip_block is not None]
        if blocks:
            names.append(self._block_set(blocks))
        return tuple(names)

    def _group_set(self, groups: tuple[NodeId, ...], any_holder: bool = False) -> str:
        """The name of the pod set of these peer groups (made if new): each address of the pods
        they admit; one several pods share only if every one is admitted, or — `any_holder`,
        a Deny rule's set — if any is."""
        spelling = (ANY_HOLDER, *groups) if any_holder else groups
        if spelling not in self._spellings:
            name = f"{POD_SET_PREFIX}{_digest(repr(spelling))}"
            self._spellings[spelling], self._groups_of[name] = name, groups
            if any_holder:
                self._any_holder.add(name)
        name = self._spellings[spelling]
        if name not in self.peer_sets:
            self.peer_sets[name] = self._pod_set(name)
        return name

    def _block_set(self, blocks: Sequence[IPBlock]) -> str:
        """The name of the interval set of these ipBlocks (or `networks`), made if new."""
        spelled = "; ".join(sorted({_block_text(b) for b in blocks}))
        name = f"cidrs-{_digest(spelled)}"
        if name not in self.peer_sets:
            found: dict[int, list[Interval]] = {4: [], 6: []}
            for block in blocks:
                found[block.cidr.version] += block_intervals(block)
            self.peer_sets[name] = PeerSet(name, tuple(merge_intervals(found[4])),
                                           tuple(merge_intervals(found[6])), True, f"ipBlock {spelled}")
        return name

    def _node_set_name(self, selectors: Sequence[LabelSelector]) -> str:
        """The name of the set of addresses of the Nodes these `nodes` selectors match."""
        name = f"{NODE_SET_PREFIX}{_digest(repr(sorted(_selector_spelling(s) for s in selectors)))}"
        if name not in self.peer_sets:
            self._node_selectors[name] = tuple(selectors)
            self.peer_sets[name] = self._node_set(name)
        return name

    def _node_set(self, name: str) -> PeerSet:
        selectors = self._node_selectors[name]
        found: dict[int, set[int]] = {4: set(), 6: set()}
        for node in self.resolver.nodes.values():
            if any(s.matches(node.labels) for s in selectors):
                for ip in node.addresses:
                    found[ip.version].add(int(ip))
        v4, v6 = (tuple((a, a) for a in sorted(found[v])) for v in (4, 6))
        described = "; ".join(f"nodes {s.describe()}" for s in selectors)
        return PeerSet(name, v4, v6, False, f"addresses of {described}")

    def cluster_rule_peer_sets(self, policy: ClusterNetworkPolicy, direction: Direction,
                               index: int) -> tuple[str, ...]:
        """Names of the sets a cluster policy rule's peers are in."""
        key = (policy.key, direction, index)
        if key not in self._rule_peers:
            self._keys_of.setdefault(policy.key, set()).add(key)
            names = self._rule_peers[key] = self._spell_cluster_peers(policy, direction, index)
            for name in names:
                self._users.setdefault(name, set()).add(key)
        return self._rule_peers[key] or ()

    def _spell_cluster_peers(self, policy: ClusterNetworkPolicy, direction: Direction,
                             index: int) -> tuple[str, ...]:
        rule = policy.rules(direction)[index]
        names = []
        groups = self.resolver.rule_peer_groups(policy.key, direction, index)
        if groups:
            names.append(self._group_set(groups, any_holder=rule.action == "Deny"))
        networks = [IPBlock(n) for p in rule.peers for n in p.networks]
        if networks:
            names.append(self._block_set(networks))
        selectors = [p.nodes for p in rule.peers if p.nodes is not None]
        if selectors:
            names.append(self._node_set_name(selectors))
        return tuple(names)

    def _pod_set(self, name: str) -> PeerSet:
        """The current addresses of the pods in a set's peer groups; an address several pods
        have, only if the groups admit every one of them (shared addresses fail closed)."""
        groups = self._groups_of[name]
        pods = self.resolver.pods
        pairs: set[tuple[int, int]] = set()  # (version, integer): a cluster policy's are 10,000
        for group in groups:  # (at C speed: a cluster policy's groups admit thousands of pods)
            pairs.update(chain.from_iterable(map(_ADDRESS_VALUES, map(pods.__getitem__,
                                                                    self.resolver.group_members(group)))))
        found: dict[int, set[int]] = {4: {a for v, a in pairs if v == 4}, 6: {a for v, a in pairs if v == 6}}
        for ip, holders in self.resolver.shared_addresses.items() if name not in self._any_holder else ():
            if int(ip) in found[ip.version] and not all(
                    any(self.resolver.admits(g, key) for g in groups) for key in holders):
                found[ip.version].discard(int(ip))
        v4, v6 = (tuple(zip(values, values, strict=True)) for values in (sorted(found[4]), sorted(found[6])))
        return PeerSet(name, v4, v6, False, "; ".join(self.resolver.describe_group(g) for g in groups))

    def _port_set(self, policy: NetworkPolicy, index: int) -> PortSet | None:
        """The named-port destinations of egress rule `index`, or None when it names no port.
        Named by the rule's peers and port names as spelled (as peer sets are): every rule
        spelling them, in whichever policy, shares the set."""
        names = _named_ports(policy.egress[index])
        if not names:
            return None
        key: RuleKey = (policy.key, "egress", index)
        name, describes = self._rule_port_sets.get(key), None
        if name is None:
            name, describes = self._spell_port_set(policy, index, names)
            self._rule_port_sets[key] = name
            self._port_users.setdefault(name, set()).add(key)
            self._port_keys_of.setdefault(policy.key, set()).add(key)
        if name not in self.port_sets:
            describes = describes or self._spell_port_set(policy, index, names)[1]
            self.port_sets[name] = PortSet(name, self._named_elements(policy, index, names), describes)
        return self.port_sets[name]

    def _cluster_port_set(self, policy: ClusterNetworkPolicy, index: int) -> PortSet | None:
        """The destinations of a cluster policy egress rule's `destinationNamedPort`s: (address,
        protocol, number) of every container port so named, of every pod its peers admit (named
        ports go with `namespaces`/`pods` peers only). None when it names no port."""
        protocols = policy.egress[index].protocols
        port_names = sorted({e.name for e in protocols if isinstance(e, DestinationNamedPort)})
        if not port_names:
            return None
        key: RuleKey = (policy.key, "egress", index)
        groups = self.resolver.rule_peer_groups(policy.key, "egress", index)
        name = self._rule_port_sets.get(key)
        if name is None:
            name = f"{PORT_SET_PREFIX}{_digest(repr(('cluster', groups, port_names)))}"
            self._rule_port_sets[key] = name
            self._port_users.setdefault(name, set()).add(key)
            self._port_keys_of.setdefault(policy.key, set()).add(key)
        if name not in self.port_sets:
            wanted = set(port_names)
            pods = self.resolver.pods
            elements = {(ip, port.protocol, port.port)
                        for group in groups for member in self.resolver.group_members(group)
                        for port in pods[member].ports if port.name in wanted for ip in pods[member].ips}
            peers = "; ".join(self.resolver.describe_group(g) for g in groups)
            self.port_sets[name] = PortSet(name, frozenset(elements),
                                           f"named ports {', '.join(port_names)} (any protocol) of {peers}")
        return self.port_sets[name]

    def _spell_port_set(self, policy: NetworkPolicy, index: int,
                        names: list[tuple[str, str]]) -> tuple[str, str]:
        """The port set's name and description from the rule's spelling: its peer groups
        (namespace scope + pod selector), its ipBlocks and its port names."""
        rule = policy.egress[index]
        groups = self.resolver.rule_peer_groups(policy.key, "egress", index)
        blocks = sorted({_block_text(p.ip_block) for p in rule.peers if p.ip_block is not None})
        ports = sorted(set(names))
        peers = [self.resolver.describe_group(g) for g in groups] + [f"ipBlock {b}" for b in blocks]
        spelled = ", ".join(f"{port}/{protocol}" for port, protocol in ports)
        describes = f"named ports {spelled} of {'; '.join(peers) or 'every pod'}"
        return f"{PORT_SET_PREFIX}{_digest(repr((groups, blocks, ports)))}", describes

    def _named_elements(self, policy: NetworkPolicy, index: int,
                        names: list[tuple[str, str]]) -> frozenset[NamedElement]:
        rule = policy.egress[index]
        if rule.peers:
            selected = self.resolver.rule_selected_pods(policy.key, "egress", index)
            blocks = [p.ip_block for p in rule.peers if p.ip_block is not None]
            keys = self.resolver.rule_peers(policy.key, "egress", index)
        else:
            selected = keys = frozenset(k for k, p in self.resolver.pods.items() if p.takes_part)
            blocks = []
        elements: set[NamedElement] = set()
        for key in keys:
            elements |= _destinations(self.resolver.pods[key], key in selected, blocks, names)
        for ip, holders in self.resolver.shared_addresses.items():  # every holder must agree
            held = {e for e in elements if e[0] == ip}
            for key in holders:
                held &= _destinations(self.resolver.pods[key], key in selected, blocks, names)
            elements -= {e for e in elements if e[0] == ip} - held
        return frozenset(elements)

    def _moved_named_elements(self, policy: NetworkPolicy, index: int, current: PortSet,
                              old: Pod | None, new: Pod | None) -> PortSet:
        """`current` after one pod changed: its old addresses out, what it admits now in."""
        rule = policy.egress[index]
        names = _named_ports(rule)
        elements = set(current.elements)  # copying keeps the hashes: only the pod's own get hashed
        removed: set[NamedElement] = set()
        added: set[NamedElement] = set()
        if old is not None and old.takes_part:  # (a finished pod's address may be reused already)
            removed = _destinations(old, True, [], names)
            elements.difference_update(removed)
        if new is not None and new.takes_part:
            groups = self.resolver.rule_peer_groups(policy.key, "egress", index)
            selected = not rule.peers or any(self.resolver.admits(g, new.key) for g in groups)
            blocks = [p.ip_block for p in rule.peers if p.ip_block is not None]
            added = _destinations(new, selected, blocks, names)
            elements |= added
        families = set(current.families) | {e[0].version for e in added}
        for version in {e[0].version for e in removed} & families:  # gone unless another remains
            if not any(e[0].version == version for e in elements):
                families.discard(version)
        return PortSet.with_families(current.name, frozenset(elements), current.describes,
                                     tuple(sorted(families)))

    def _moved_pod_set(self, current: PeerSet, old: Pod | None, new: Pod | None) -> PeerSet:
        """`current` after one pod changed: its old addresses out, its new ones in if a group
        admits it now (pod addresses are unique among the pods that take part)."""
        found = {4: current.v4, 6: current.v6}  # sorted: bisect, then splice (a copy in C)
        for ip in old.ips if old is not None and old.takes_part else ():  # finished pods' IPs get reused
            held, value = found[ip.version], (int(ip), int(ip))
            if (at := bisect_left(held, value)) < len(held) and held[at] == value:
                found[ip.version] = held[:at] + held[at + 1:]
        groups = self._groups_of[current.name]
        if new is not None and new.takes_part and any(self.resolver.admits(g, new.key) for g in groups):
            for ip in new.ips:
                held, value = found[ip.version], (int(ip), int(ip))
                if (at := bisect_left(held, value)) == len(held) or held[at] != value:
                    found[ip.version] = (*held[:at], value, *held[at:])
        return PeerSet(current.name, found[4], found[6], False, current.describes)

    # -- programs --------------------------------------------------------------------------

    def _allows(self, policy: NetworkPolicy, direction: Direction, pod: Pod) -> tuple[Allow, ...]:
        cached = self._rule_allows.get((policy.key, direction))
        if cached is not None:
            return cached
        # Ingress named ports resolve against the pod: pods declaring the same ports share.
        per_ports = self._per_ports_allows.get((policy.key, direction, pod.ports))
        if per_ports is not None:
            return per_ports
        allows, per_pod = [], False
        for index, rule in enumerate(policy.rules(direction)):
            origin = _origin(policy.key, direction, index)
            names = self.rule_peer_sets(policy, direction, index)
            peers = None if names is None else tuple(self.peer_sets[n].ref for n in names)
            if not rule.ports:
                allows.append(Allow(origin, peers, None))
                continue
            numeric: list[PortMatch] = []
            for entry in rule.ports:
                if not isinstance(entry.port, str):
                    numeric.append(PortMatch(entry.protocol, entry.port, entry.end_port or entry.port))
                elif direction == "ingress":  # the destination is this pod: its own number
                    per_pod = True
                    number = pod.resolve_port(entry.port, entry.protocol)
                    if number is not None:
                        numeric.append(PortMatch(entry.protocol, number, number))
            port_set = self._port_set(policy, index) if direction == "egress" else None
            allows.append(Allow(origin, peers, tuple(numeric), port_set.ref if port_set else None))
        if per_pod:
            self._per_ports_allows[(policy.key, direction, pod.ports)] = tuple(allows)
            self._per_ports_of.setdefault(policy.key, set()).add((policy.key, direction, pod.ports))
        else:
            self._rule_allows[(policy.key, direction)] = tuple(allows)
        return tuple(allows)

    def _cluster_rules(self, policy: ClusterNetworkPolicy, direction: Direction,
                       pod: Pod) -> tuple[TierRule, ...]:
        """The policy's `direction` rules as TierRules for `pod` (shared by every pod, or by
        pods declaring the same ports where an ingress rule names a port)."""
        cached = self._tier_rules.get((policy.key, direction))
        if cached is None:
            cached = self._per_ports_tiers.get((policy.key, direction, pod.ports))
        if cached is not None:
            return cached
        rules, per_pod = [], False
        for index, rule in enumerate(policy.rules(direction)):
            origin = _cluster_origin(policy, direction, index)
            if rule.fails_closed:
                rules.append(TierRule(policy.tier, policy.name, "Deny", Allow(origin, None, None)))
                continue
            names = self.cluster_rule_peer_sets(policy, direction, index)
            peers = tuple(self.peer_sets[n].ref for n in names)
            ports: tuple[PortMatch, ...] | None = None
            named = None
            if rule.protocols:
                numeric = [PortMatch(e.protocol, e.first, e.last)
                           for e in rule.protocols if isinstance(e, DestinationPorts)]
                port_names = {e.name for e in rule.protocols if isinstance(e, DestinationNamedPort)}
                if port_names and direction == "ingress":  # the destination is this pod
                    per_pod = True
                    numeric += [PortMatch(p.protocol, p.port, p.port)
                                for p in pod.ports if p.name in port_names]
                elif port_names and (port_set := self._cluster_port_set(policy, index)) is not None:
                    named = port_set.ref
                ports = tuple(numeric)
            rules.append(TierRule(policy.tier, policy.name, rule.action, Allow(origin, peers, ports, named)))
        if per_pod:
            self._per_ports_tiers[(policy.key, direction, pod.ports)] = tuple(rules)
            self._per_ports_of.setdefault(policy.key, set()).add((policy.key, direction, pod.ports))
        else:
            self._tier_rules[(policy.key, direction)] = tuple(rules)
        return tuple(rules)

    def pod_program(self, pod: Pod) -> PodProgram:
        sides = []
        for direction in DIRECTIONS:
            keys = self.resolver.selecting_policies(pod.key, direction)
            tiers = self.resolver.cluster_selecting(pod.key, direction)
            # Pods selected alike share one side (and alike declared ports, where a policy's
            # ingress names a port).
            side = self._sides.get((keys, tiers, direction, None)) or \
                self._sides.get((keys, tiers, direction, pod.ports))
            if side is None:
                side = self._side(pod, direction, keys, tiers)
                per_pod = not all((k, direction) in self._rule_allows for k in keys) or \
                    not all((k, direction) in self._tier_rules for k in tiers)
                cache_key: SideKey = (keys, tiers, direction, pod.ports if per_pod else None)
                self._sides[cache_key] = side
                for key in (*keys, *tiers):
                    self._sides_of.setdefault(key, set()).add(cache_key)
            sides.append(side)
        return PodProgram(pod.key, pod.ips, sides[0], sides[1])

    def _side(self, pod: Pod, direction: Direction, keys: tuple[str, ...],
              tiers: tuple[str, ...]) -> DirectionProgram:
        allows = tuple(a for k in keys for a in self._allows(self.resolver.policies[k], direction, pod))
        if not tiers:
            return DirectionProgram(keys, allows)
        admin, baseline = self._tiers(pod, direction, tiers, bool(keys))
        return DirectionProgram(keys, allows, admin, baseline)

    def _tiers(self, pod: Pod, direction: Direction, tiers: tuple[str, ...], isolated: bool) -> Tiers:
        """The Admin and Baseline rules of these cluster policies for `pod`, one tuple per
        alike pods (the backends print a tier once per tuple): pods of other NetworkPolicies
        but the same cluster policies share them."""
        found = self._tier_sides.get((tiers, direction, None, isolated)) or \
            self._tier_sides.get((tiers, direction, pod.ports, isolated))
        if found is None:
            cluster_policies = self.resolver.cluster_policies
            rules = [r for k in tiers for r in self._cluster_rules(cluster_policies[k], direction, pod)]
            # A side a NetworkPolicy isolates never reaches the Baseline tier: its rules are left out.
            baseline = () if isolated else tuple(r for r in rules if r.tier == "Baseline")
            found = (tuple(r for r in rules if r.tier == "Admin"), baseline)
            per_pod = not all((k, direction) in self._tier_rules for k in tiers)
            key: TiersKey = (tiers, direction, pod.ports if per_pod else None, isolated)
            self._tier_sides[key] = found
            for policy in tiers:
                self._tier_sides_of.setdefault(policy, set()).add(key)
        return found

    # -- forgetting what an event made stale ------------------------------------------------

    def forget_policy(self, policy_key: str) -> None:
        """A policy changed or went: its rules' spellings and allows are recomputed on demand."""
        self._forget_allows({policy_key})
        for key in self._keys_of.pop(policy_key, set()):
            for name in self._rule_peers.pop(key) or ():
                users = self._users[name]
                users.discard(key)
                if not users:  # nobody spells it any more: its members would go stale
                    del self._users[name], self.peer_sets[name]
                    groups = self._groups_of.pop(name, None)  # (ipBlock and node sets have none)
                    if groups is not None:
                        del self._spellings[(ANY_HOLDER, *groups) if name in self._any_holder else groups]
                        self._any_holder.discard(name)
                    self._node_selectors.pop(name, None)
        for key in self._port_keys_of.pop(policy_key, set()):
            name = self._rule_port_sets.pop(key)
            users = self._port_users[name]
            users.discard(key)
            if not users:  # nobody spells it any more
                del self._port_users[name]
                self.port_sets.pop(name, None)

    def refresh_members(self, rules: Iterable[NodeId],
                        moved: tuple[Pod | None, Pod | None] | None = None) -> set[str]:
        """Recompute the sets of rules whose admitted pods changed; when one pod event caused it
        (`moved`: the pod before and after), by taking that pod out and back in rather than by
        listing every member. Returns the policies whose allows went stale because a set gained
        its first or lost its last address of a family (a change of structure)."""
        changed: set[str] = set()
        flipped: set[str] = set()
        stale: set[str] = set()
        if moved is not None and any(self.resolver.address_holders(ip) - {pod.key}
                                     for pod in moved if pod is not None for ip in pod.ips):
            moved = None  # another pod has one of its addresses: recount the members instead
        for rule_node in rules:
            key = rule_node[1]
            policy = self.resolver.policies.get(key)
            cluster = self.resolver.cluster_policies.get(key)
            if policy is None and cluster is None:
                continue
            direction: Direction = "ingress" if rule_node[2] == "ingress" else "egress"
            index = int(rule_node[3])
            names = list(self._rule_peers.get((key, direction, index)) or ())
            for name in names:
                if name in changed or not name.startswith((POD_SET_PREFIX, NODE_SET_PREFIX)):
                    continue
                old = self.peer_sets[name]
                if name.startswith(NODE_SET_PREFIX):
                    fresh = self._node_set(name)
                else:
                    fresh = self._moved_pod_set(old, *moved) if moved else self._pod_set(name)
                if fresh != old:
                    self.peer_sets[name] = fresh
                    changed.add(name)
                    if fresh.families != old.families:
                        flipped.add(name)
            named = self._rule_port_sets.get((key, direction, index))
            if named is not None:
                if named in self.port_sets and named not in changed:
                    old_ports = self.port_sets.pop(named)
                    if cluster is not None:
                        fresh_ports = self._cluster_port_set(cluster, index)
                    else:
                        assert policy is not None
                        if moved:
                            self.port_sets[named] = self._moved_named_elements(
                                policy, index, old_ports, *moved)
                        fresh_ports = self._port_set(policy, index)
                    if fresh_ports != old_ports:
                        changed.add(named)
                        if fresh_ports is None or fresh_ports.families != old_ports.families:
                            flipped.add(named)
                names.append(named)
            if flipped and flipped.intersection(names):
                stale.add(key)
        self._forget_allows(stale)
        return stale

    def _forget_allows(self, policy_keys: set[str]) -> None:
        for key in policy_keys:
            for direction in DIRECTIONS:
                self._rule_allows.pop((key, direction), None)
                self._tier_rules.pop((key, direction), None)
            for cached in self._per_ports_of.pop(key, set()):
                self._per_ports_allows.pop(cached, None)
                self._per_ports_tiers.pop(cached, None)
            for side in self._sides_of.pop(key, set()):
                self._sides.pop(side, None)
            for tiers in self._tier_sides_of.pop(key, set()):
                self._tier_sides.pop(tiers, None)


def _destinations(pod: Pod, selected: bool, blocks: list[IPBlock],
                  names: Sequence[tuple[str, str]]) -> set[NamedElement]:
    """(address, protocol, number) of `pod` for the named ports: every address when a selector
    admits it, else those inside the rule's ipBlocks."""
    ips = pod.ips if selected else [ip for ip in pod.ips if any(b.contains(ip) for b in blocks)]
    found: set[NamedElement] = set()
    for port_name, protocol in names:
        number = pod.resolve_port(port_name, protocol)
        if number is not None:
            found.update((ip, protocol, number) for ip in ips)
    return found


def used_sets(programs: Iterable[PodProgram]) -> tuple[list[str], list[str]]:
    """Names of the peer sets and port sets the programs reference, sorted."""
    peers: set[str] = set()
    ports: set[str] = set()
    seen: set[int] = set()
    for pod in programs:
        for side in (pod.ingress, pod.egress):
            if id(side) not in seen:  # pods selected alike share their side objects
                seen.add(id(side))
                side_peers, side_ports = _side_sets(side)
                peers |= side_peers
                ports |= side_ports
    return sorted(peers), sorted(ports)


def program_sets(program: PodProgram) -> frozenset[str]:
    """Names of the sets (peer and port) one pod program references, unordered."""
    ingress, egress = _side_sets(program.ingress), _side_sets(program.egress)
    return ingress[0] | ingress[1] | egress[0] | egress[1]


@weak_identity_cache()
def _side_sets(side: DirectionProgram) -> tuple[frozenset[str], frozenset[str]]:
    """The peer-set and port-set names one side's allows and tier rules reference."""
    matches = (*side.allows, *(r.match for r in side.admin), *(r.match for r in side.baseline))
    peers = {ref.name for allow in matches for ref in allow.peers or ()}
    ports = {allow.named.name for allow in matches if allow.named is not None}
    return frozenset(peers), frozenset(ports)


def node_addresses(state: ClusterState, node: str) -> tuple[IPAddress, ...]:
    return sorted_addresses(state.node_addresses.get(node, frozenset()))


class NodeCompiler:
    """Compiles nodes of one cluster state, sharing rule sets and pods-by-node across nodes."""

    def __init__(self, state: ClusterState, resolver: Resolver | None = None,
                 namespaces: Collection[str] | None = None) -> None:
        """With `namespaces`, programs hold only those namespaces' pods, and `resolver` may be
        one of only their policies (`Resolver.from_state(state, namespaces)`)."""
        self.state = state
        self._compiler = ProgramCompiler(resolver or Resolver.from_state(state, namespaces))
        self._by_node: dict[str, list[Pod]] = {}
        for pod in state.active_pods:
            if pod.node_name and (namespaces is None or pod.namespace in namespaces):
                self._by_node.setdefault(pod.node_name, []).append(pod)

    def compile(self, node: str) -> NodeProgram:
        """The program of every active pod on `node`."""
        programs = tuple(self._compiler.pod_program(p) for p in self._by_node.get(node, []))
        return assemble(node, node_addresses(self.state, node), programs, self._compiler,
                        node_pod_cidrs(self.state, node))


def assemble(node: str, addresses: tuple[IPAddress, ...], programs: tuple[PodProgram, ...],
             compiler: ProgramCompiler, pod_cidrs: tuple[IPNetwork, ...] = (), *,
             declared: Iterable[str] | None = None) -> NodeProgram:
    """The one assembler of a `NodeProgram`: the node's pod programs, and the compiler's current
    version of every set they reference, peer sets and port sets each sorted by name.
    `declared`: the names of those sets, when the caller keeps count of them (the incremental
    compiler does, per node); else they are worked out from the programs."""
    if declared is None:
        peer_names, port_names = used_sets(programs)
    else:
        names = sorted(declared)
        peer_names = [n for n in names if not n.startswith(PORT_SET_PREFIX)]
        port_names = [n for n in names if n.startswith(PORT_SET_PREFIX)]
    return NodeProgram(node, addresses, programs, tuple(compiler.peer_sets[n] for n in peer_names),
                       tuple(compiler.port_sets[n] for n in port_names), pod_cidrs)


def node_pod_cidrs(state: ClusterState, node: str) -> tuple[IPNetwork, ...]:
    found = next((n for n in state.nodes if n.name == node), None)
    return found.pod_cidrs if found is not None else ()


def compile_node(state: ClusterState, node: str, resolver: Resolver | None = None) -> NodeProgram:
    """The program of every active pod on `node`."""
    return NodeCompiler(state, resolver).compile(node)


def node_names(state: ClusterState) -> list[str]:
    """Nodes named by Node objects or by pods' `spec.nodeName`, sorted."""
    return sorted({n.name for n in state.nodes} | {p.node_name for p in state.pods if p.node_name})


def require_node(names: Collection[str], node: str) -> None:
    """A UsageError naming the nodes there are, unless `node` (a `--node` argument) is one."""
    if node not in names:
        raise UsageError(f"--node {node}: no such node in the input (nodes: {', '.join(names) or 'none'})")


def compile_cluster(state: ClusterState) -> dict[str, NodeProgram]:
    """Every node's program."""
    compiler = NodeCompiler(state)
    return {name: compiler.compile(name) for name in node_names(state)}
