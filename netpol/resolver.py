"""The graph-based label resolver: which policies select each pod, which pods each rule admits,
and, after every event, which pods' and nodes' rulesets changed. Incremental.

The graph (networkx) has namespace, pod, policy and rule nodes; edges say `contains`
(namespace → pod), `selects` (policy → pod), `has` (policy → rule) and `admits` (rule → pod).
Label indexes per namespace keep selector evaluation from scanning every pod.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, Direction, IPBlock, Namespace, NetworkPolicy, Node, Pod, Rule

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
NodeId = tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """What an event changed: pods whose program may differ, and the nodes hosting them."""

    pods: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()


class LabelIndex:
    """Objects by label: `(key, value) → ids`, `key → ids`; selectors answered by set algebra."""

    def __init__(self) -> None:
        self.all: set[str] = set()
        self.by_pair: dict[tuple[str, str], set[str]] = {}
        self.by_key: dict[str, set[str]] = {}

    def add(self, ident: str, labels: Labels) -> None:
        self.all.add(ident)
        for k, v in labels.items():
            self.by_pair.setdefault((k, v), set()).add(ident)
            self.by_key.setdefault(k, set()).add(ident)

    def remove(self, ident: str, labels: Labels) -> None:
        self.all.discard(ident)
        for k, v in labels.items():
            self.by_pair[(k, v)].discard(ident)
            self.by_key[k].discard(ident)

    def select(self, selector: LabelSelector) -> set[str]:
        found: set[str] | None = None
        for k, v in selector.match_labels.items():
            found = self._narrow(found, self.by_pair.get((k, v), set()))
        for r in selector.match_expressions:
            if r.operator == "In":
                matching = set().union(*(self.by_pair.get((r.key, v), set()) for v in r.values))
            elif r.operator == "NotIn":
                matching = self.all - set().union(*(self.by_pair.get((r.key, v), set()) for v in r.values))
            elif r.operator == "Exists":
                matching = self.by_key.get(r.key, set())
            else:
                matching = self.all - self.by_key.get(r.key, set())
            found = self._narrow(found, matching)
        return set(self.all) if found is None else found

    @staticmethod
    def _narrow(found: set[str] | None, matching: set[str]) -> set[str]:
        return set(matching) if found is None else found & matching


def _pod_node(key: str) -> NodeId:
    return ("pod", key)


def _rule_node(policy: str, direction: Direction, index: int) -> NodeId:
    return ("rule", policy, direction, str(index))


@dataclass
class Resolver:
    """Incremental resolver state; feed it events with `apply`, ask it with the query methods."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    pods: dict[str, Pod] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    _pod_index: dict[str, LabelIndex] = field(default_factory=dict)  # namespace → active pods
    _namespace_index: LabelIndex = field(default_factory=LabelIndex)
    # Rules by the pods they could admit: peers scoped to one namespace, others, and "everyone".
    _local_rules: dict[str, set[NodeId]] = field(default_factory=dict)
    _wide_rules: set[NodeId] = field(default_factory=set)
    _admit_all_rules: set[NodeId] = field(default_factory=set)
    # Active pods' addresses as sorted (version, integer, pod key): ipBlocks bisect, never scan.
    _addresses: list[tuple[int, int, str]] | None = None

    @classmethod
    def from_state(cls, state: ClusterState) -> Resolver:
        resolver = cls()
        # Pods before policies: each policy then resolves through the label index at once.
        objects: list[Namespace | Node | Pod | NetworkPolicy] = [*state.namespaces, *state.nodes]
        objects += [*state.pods, *state.policies]
        for obj in objects:
            resolver.apply("ADDED", obj)
        return resolver

    # -- queries ---------------------------------------------------------------------------

    def selecting_policies(self, pod_key: str, direction: Direction) -> tuple[str, ...]:
        """Policies that select the pod and isolate it for `direction`, sorted."""
        node = _pod_node(pod_key)
        if node not in self.graph:
            return ()
        return tuple(sorted(
            src[1] for src, _, kind in self.graph.in_edges(node, data="kind")
            if kind == "selects" and self.policies[src[1]].isolates(direction)
        ))

    def policy_targets(self, policy_key: str) -> frozenset[str]:
        return frozenset(dst[1] for _, dst in self.graph.out_edges(("policy", policy_key))
                         if dst[0] == "pod")

    def rule_selected_pods(self, policy_key: str, direction: Direction, index: int) -> frozenset[str]:
        """Active pods a pod/namespace selector of the rule admits (ipBlocks admit addresses)."""
        rule = self.policies[policy_key].rules(direction)[index]
        if not rule.peers:
            return frozenset(k for k, p in self.pods.items() if p.takes_part)
        return frozenset(dst[1] for _, dst, via in self.graph.out_edges(
            _rule_node(policy_key, direction, index), data="via") if via == "selector")

    def rule_peers(self, policy_key: str, direction: Direction, index: int) -> frozenset[str]:
        """Active pods the rule's peers admit (selectors, or ipBlocks containing a pod IP)."""
        rule = self.policies[policy_key].rules(direction)[index]
        if not rule.peers:
            return frozenset(k for k, p in self.pods.items() if p.takes_part)
        selected = self.rule_selected_pods(policy_key, direction, index)
        blocks = [self._pods_in_block(p.ip_block) for p in rule.peers if p.ip_block is not None]
        return selected.union(*blocks)

    # -- events ----------------------------------------------------------------------------

    def apply(self, event: EventType, obj: Namespace | Pod | Node | NetworkPolicy) -> Change:
        """Apply one watch event; return what it changed."""
        if isinstance(obj, Pod):
            return self._pod_event(event, obj)
        if isinstance(obj, Namespace):
            return self._namespace_event(event, obj)
        if isinstance(obj, NetworkPolicy):
            return self._policy_event(event, obj)
        if event == "DELETED":
            self.nodes.pop(obj.name, None)
        else:
            self.nodes[obj.name] = obj
        return Change(nodes=frozenset({obj.name}))  # node addresses are in its own ruleset

    def _change(self, pods: Iterable[str], extra_nodes: Iterable[str | None] = ()) -> Change:
        pods = frozenset(pods)
        nodes = {self.pods[k].node_name for k in pods if k in self.pods} | set(extra_nodes)
        return Change(pods, frozenset(n for n in nodes if n))

    # pods

    def _pod_event(self, event: EventType, pod: Pod) -> Change:
        old = self.pods.get(pod.key)
        new = None if event == "DELETED" else pod
        old_rules = self._unlink_pod(old) if old else set()
        new_rules: set[NodeId] = set()
        if new is not None:
            self.pods[new.key] = new
            new_rules = self._link_pod(new)
        if old is None or new is None or _addressing_changed(old, new):
            touched = old_rules | new_rules | self._admit_all_rules
        else:
            touched = old_rules ^ new_rules
        affected = {pod.key} | self._targets_of_rules(touched)
        return self._change(affected, [old.node_name if old else None, pod.node_name])

    def _unlink_pod(self, pod: Pod) -> set[NodeId]:
        node = _pod_node(pod.key)
        self._addresses = None
        rules = {src for src, _ in self.graph.in_edges(node) if src[0] == "rule"}
        if pod.takes_part:
            rules |= self._block_rules(pod)
        if node in self.graph:
            self.graph.remove_node(node)
        if pod.takes_part:
            self._pod_index[pod.namespace].remove(pod.key, pod.labels)
        del self.pods[pod.key]
        return rules

    def _link_pod(self, pod: Pod) -> set[NodeId]:
        node = _pod_node(pod.key)
        self._addresses = None
        self.graph.add_edge(("namespace", pod.namespace), node, kind="contains")
        if not pod.takes_part:
            return set()
        self._pod_index.setdefault(pod.namespace, LabelIndex()).add(pod.key, pod.labels)
        for policy in self.policies.values():
            if policy.namespace == pod.namespace and policy.pod_selector.matches(pod.labels):
                self.graph.add_edge(("policy", policy.key), node, kind="selects")
        rules = set()
        for rule_node in self._local_rules.get(pod.namespace, set()) | self._wide_rules:
            policy = self.policies[rule_node[1]]
            rule = policy.rules(rule_node[2])[int(rule_node[3])]  # type: ignore[arg-type]
            via = self._rule_admits(policy, rule, pod)
            if via == "selector":  # ipBlocks admit addresses: no edge, bisected on demand
                self.graph.add_edge(rule_node, node, kind="admits", via=via)
            if via == "selector" or (via and _named_egress(rule_node, rule)):
                rules.add(rule_node)
        return rules

    def _block_rules(self, pod: Pod) -> set[NodeId]:
        """Rules whose named egress ports reach the pod only through an ipBlock."""
        found = set()
        for rule_node in self._wide_rules:
            policy = self.policies[rule_node[1]]
            rule = policy.rules(rule_node[2])[int(rule_node[3])]  # type: ignore[arg-type]
            if _named_egress(rule_node, rule) and self._rule_admits(policy, rule, pod) == "ipblock":
                found.add(rule_node)
        return found

    def _rule_admits(self, policy: NetworkPolicy, rule: Rule, pod: Pod) -> str | None:
        """"selector" if a pod/namespace selector admits the pod, "ipblock" if only an ipBlock does."""
        ns_labels = self._namespace_labels(pod.namespace)
        via = None
        for peer in rule.peers:
            if peer.ip_block is not None:
                if any(peer.ip_block.contains(ip) for ip in pod.ips):
                    via = "ipblock"
                continue
            if peer.namespace_selector is None:
                in_scope = pod.namespace == policy.namespace
            else:
                in_scope = peer.namespace_selector.matches(ns_labels)
            if in_scope and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels)):
                return "selector"
        return via

    # namespaces

    def _namespace_event(self, event: EventType, namespace: Namespace) -> Change:
        old = self.namespaces.pop(namespace.name, None)
        if old:
            self._namespace_index.remove(old.name, old.labels)
        if event != "DELETED":
            self.namespaces[namespace.name] = namespace
            self._namespace_index.add(namespace.name, namespace.labels)
        self.graph.add_node(("namespace", namespace.name))
        if old is not None and event != "DELETED" and old.labels == namespace.labels:
            return Change()
        # Cross-namespace peers may now admit (or stop admitting) this namespace's pods.
        touched: set[NodeId] = set()
        for key in list(self._pod_index.get(namespace.name, LabelIndex()).all):
            pod = self.pods[key]
            before = self._unlink_pod(pod)
            self.pods[key] = pod
            touched |= before ^ self._link_pod(pod)
        return self._change(self._targets_of_rules(touched))

    def _namespace_labels(self, name: str) -> Labels:
        found = self.namespaces.get(name)
        return found.labels if found else Namespace(name).labels

    # policies

    def _policy_event(self, event: EventType, policy: NetworkPolicy) -> Change:
        affected: set[str] = set()
        old = self.policies.pop(policy.key, None)
        if old is not None:
            affected |= self.policy_targets(old.key)
            for direction in DIRECTIONS:
                for i in range(len(old.rules(direction))):
                    rule_node = _rule_node(old.key, direction, i)
                    self.graph.remove_node(rule_node)
                    self._local_rules.get(old.namespace, set()).discard(rule_node)
                    self._wide_rules.discard(rule_node)
                    self._admit_all_rules.discard(rule_node)
            self.graph.remove_node(("policy", old.key))
        if event != "DELETED":
            self.policies[policy.key] = policy
            affected |= self._link_policy(policy)
        return self._change(affected)

    def _link_policy(self, policy: NetworkPolicy) -> set[str]:
        node = ("policy", policy.key)
        self.graph.add_node(node)
        index = self._pod_index.get(policy.namespace, LabelIndex())
        targets = index.select(policy.pod_selector)
        for key in targets:
            self.graph.add_edge(node, _pod_node(key), kind="selects")
        for direction in DIRECTIONS:
            for i, rule in enumerate(policy.rules(direction)):
                rule_node = _rule_node(policy.key, direction, i)
                self.graph.add_edge(node, rule_node, kind="has")
                self._file_rule(policy, rule, rule_node)
                for key in self._peer_pods(policy, rule):
                    self.graph.add_edge(rule_node, _pod_node(key), kind="admits", via="selector")
        return targets

    def _file_rule(self, policy: NetworkPolicy, rule: Rule, rule_node: NodeId) -> None:
        if not rule.peers:
            self._admit_all_rules.add(rule_node)
        elif all(p.namespace_selector is None and p.ip_block is None for p in rule.peers):
            self._local_rules.setdefault(policy.namespace, set()).add(rule_node)
        else:
            self._wide_rules.add(rule_node)

    def _peer_pods(self, policy: NetworkPolicy, rule: Rule) -> set[str]:
        """Pods the rule's pod/namespace selectors admit (ipBlocks are bisected on demand)."""
        found: set[str] = set()
        for peer in rule.peers:
            if peer.ip_block is not None:
                continue
            if peer.namespace_selector is None:
                namespaces = [policy.namespace]
            else:
                namespaces = sorted(self._namespace_scope(peer.namespace_selector))
            for ns in namespaces:
                index = self._pod_index.get(ns)
                if index is not None:
                    found |= index.all if peer.pod_selector is None else index.select(peer.pod_selector)
        return found

    def _pods_in_block(self, block: IPBlock) -> set[str]:
        """Active pods with an address in `cidr` and outside every `except`."""
        if self._addresses is None:
            self._addresses = sorted((ip.version, int(ip), k) for k, p in self.pods.items()
                                     if p.takes_part for ip in p.ips)
        net, found = block.cidr, self._addresses
        first = bisect_left(found, (net.version, int(net.network_address), ""))
        last = bisect_right(found, (net.version, int(net.broadcast_address), "\U0010ffff"))
        holes = [(int(e.network_address), int(e.broadcast_address)) for e in block.except_
                 if e.version == net.version]
        return {key for _, value, key in found[first:last] if not any(a <= value <= b for a, b in holes)}

    def _namespace_scope(self, selector: LabelSelector) -> set[str]:
        """Namespaces a selector matches, including namespaces known only through their pods."""
        known = self._namespace_index.select(selector)
        implicit = {ns for ns in self._pod_index if ns not in self.namespaces
                    and selector.matches(Namespace(ns).labels)}
        return known | implicit

    # helpers

    def _targets_of_rules(self, rules: Iterable[NodeId]) -> set[str]:
        policies = {r[1] for r in rules}
        return set().union(*(self.policy_targets(p) for p in policies if p in self.policies))


def _named_egress(rule_node: NodeId, rule: Rule) -> bool:
    """Egress named ports resolve per admitted pod, so ipBlock membership shapes the ruleset."""
    return rule_node[2] == "egress" and any(isinstance(p.port, str) for p in rule.ports)


def _addressing_changed(old: Pod, new: Pod | None) -> bool:
    """IPs, container ports or participation changed: peer sets' contents differ, not just members."""
    return new is None or (old.ips, old.ports, old.takes_part) != (new.ips, new.ports, new.takes_part)
