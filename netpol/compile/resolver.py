"""The graph-based label resolver: which policies select each pod, which pods each rule admits,
and, after every event, which pods' and nodes' rulesets changed. Incremental.

The graph (networkx) has namespace, pod, policy, rule and peer nodes; an edge's kind follows from
its ends, so edges carry no data (at 10k policies, a dict per edge was 27 MB): `contains`
(namespace → pod), `selects` (policy → pod), `has` (policy → rule), `uses` (rule → peer) and
`admits` (peer → pod). A peer node is one (namespace scope, pod selector) pair, shared by every
rule that spells the same peer, so the pods it admits are linked once however many policies
repeat it. ipBlocks admit addresses: they are bisected over the sorted pod addresses on demand,
not linked. Label indexes per namespace keep selector evaluation from scanning every pod.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from netpol.errors import InputError, Problem
from netpol.labels import Labels, LabelSelector
from netpol.model import (
    ClusterState,
    Direction,
    IPAddress,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    Rule,
)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
CLUSTER_POLICIES_UNSUPPORTED = ("not enforced by `netpol compile`/`verify`/`agent` yet: rulesets that leave "
                                "it out would be wrong without a word, so the input is refused (`netpol "
                                "validate`, `reach` and `explain` evaluate it)")

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
NodeId = tuple[str, ...]


def refuse_cluster_policies(state: ClusterState) -> None:
    """The compiler has no tiers yet (issue 17 brings them): rather than compile rulesets that
    silently leave out every ClusterNetworkPolicy, refuse the state, naming each of them."""
    if state.cluster_policies:
        raise InputError([Problem("", policy.ref, "", CLUSTER_POLICIES_UNSUPPORTED)
                          for policy in state.cluster_policies])


@dataclass(frozen=True)
class Change:
    """What an event changed: pods whose own program may differ (what selects them, their
    addresses and ports), the nodes hosting them, and rules whose admitted pods changed (the
    elements of their sets; `Resolver.expand` turns those into the pods they apply to)."""

    pods: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    rules: frozenset[NodeId] = frozenset()


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
        """Forget `ident`, and the labels no object has any more (pod-template-hash values come
        and go with every rollout: kept, they piled up for ever)."""
        self.all.discard(ident)
        for k, v in labels.items():
            holders = self.by_pair[(k, v)]
            holders.discard(ident)
            if not holders:
                del self.by_pair[(k, v)]
            holders = self.by_key[k]
            holders.discard(ident)
            if not holders:
                del self.by_key[k]

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


def _selector_text(selector: LabelSelector | None) -> str:
    if selector is None:
        return "*"
    requirements = sorted((r.key, r.operator, tuple(sorted(r.values))) for r in selector.match_expressions)
    return repr((sorted(selector.match_labels.items()), requirements))


def _peer_node(policy: NetworkPolicy, peer: Peer) -> NodeId:
    """Same scope and selectors → same node, whichever policy wrote them."""
    scope = f"ns={policy.namespace}" if peer.namespace_selector is None else \
        f"nss={_selector_text(peer.namespace_selector)}"
    return ("peer", scope, _selector_text(peer.pod_selector))


@dataclass(frozen=True)
class _PeerScope:
    """What a peer node admits: pods of `namespace` (or of namespaces matching the selector)
    whose labels match `pod_selector` (None: all)."""

    namespace: str | None
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None


class _NoData(dict[str, object]):
    """The one empty mapping every node and edge of the resolver's graph shares. networkx calls
    its (C) `update` with nothing on every edge added, so that stays; setting an item is refused,
    and tests/unit/compile/test_resolver.py checks that it stays empty."""

    def __setitem__(self, key: str, value: object) -> None:
        raise TypeError("the resolver's graph carries no data on nodes and edges")


_NO_DATA = _NoData()


class DataFreeGraph(nx.DiGraph):  # type: ignore[misc]
    """A DiGraph whose nodes and edges carry no data: they all share one empty mapping instead
    of a dict each (222,688 edges at 10k policies: 14 MB)."""

    def node_attr_dict_factory(self) -> dict[str, object]:
        return _NO_DATA

    def edge_attr_dict_factory(self) -> dict[str, object]:
        return _NO_DATA


@dataclass
class Resolver:
    """Incremental resolver state; feed it events with `apply`, ask it with the query methods."""

    graph: nx.DiGraph = field(default_factory=DataFreeGraph)
    pods: dict[str, Pod] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    _pod_index: dict[str, LabelIndex] = field(default_factory=dict)  # namespace → active pods
    _namespace_index: LabelIndex = field(default_factory=LabelIndex)
    # Rules by the pods they could admit: peers scoped to one namespace, others, and "everyone".
    _peer_scopes: dict[NodeId, _PeerScope] = field(default_factory=dict)
    _local_peers: dict[str, set[NodeId]] = field(default_factory=dict)  # by namespace
    _wide_peers: set[NodeId] = field(default_factory=set)  # namespace selectors
    _wide_by_namespace: dict[str, set[NodeId]] = field(default_factory=dict)  # cache of the above
    _named_block_rule_nodes: set[NodeId] = field(default_factory=set)  # ipBlock + named egress port
    _policies_in: dict[str, set[str]] = field(default_factory=dict)  # namespace → policy keys
    _selected_by: dict[str, set[str]] = field(default_factory=dict)  # pod → policies (its `selects` edges)
    _isolating: dict[Direction, set[str]] = field(  # policies isolating pods for the direction
        default_factory=lambda: {direction: set() for direction in DIRECTIONS})
    _holders: dict[IPAddress, set[str]] = field(default_factory=dict)  # address → active pods with it
    _shared: dict[IPAddress, set[str]] = field(default_factory=dict)  # … those with more than one
    _admit_all_rules: set[NodeId] = field(default_factory=set)
    # Active pods' addresses as sorted (version, integer, pod key): ipBlocks bisect, never scan.
    _addresses: list[tuple[int, int, str]] | None = None

    @classmethod
    def from_state(cls, state: ClusterState, policy_namespaces: Collection[str] | None = None) -> Resolver:
        """The resolver of `state`; with `policy_namespaces`, of only the policies in those
        namespaces (every namespace, node and pod still): a policy selects pods of its own
        namespace only, so its answers for those namespaces' pods are the whole cluster's.
        Raises InputError for a state with cluster policies (`refuse_cluster_policies`)."""
        refuse_cluster_policies(state)
        resolver = cls()
        for namespace in state.namespaces:
            resolver.apply("ADDED", namespace)
        for node in state.nodes:
            resolver.apply("ADDED", node)
        # Pods before policies: each policy then resolves through the label index at once.
        # A first sight is linked straight, without working out what it changed.
        for pod in state.pods:
            if pod.key in resolver.pods:
                resolver.apply("ADDED", pod)
            else:
                resolver.pods[pod.key] = pod
                resolver._link_pod(pod)
        for policy in state.policies:
            if policy_namespaces is not None and policy.namespace not in policy_namespaces:
                continue
            if policy.key in resolver.policies:
                resolver.apply("ADDED", policy)
            else:
                resolver.policies[policy.key] = policy
                resolver._link_policy(policy)
        return resolver

    # -- queries ---------------------------------------------------------------------------

    def selecting_policies(self, pod_key: str, direction: Direction) -> tuple[str, ...]:
        """Policies that select the pod and isolate it for `direction`, sorted."""
        selected = self._selected_by.get(pod_key)
        return tuple(sorted(selected & self._isolating[direction])) if selected else ()

    def policy_targets(self, policy_key: str) -> frozenset[str]:
        return frozenset(dst[1] for _, dst in self.graph.out_edges(("policy", policy_key))
                         if dst[0] == "pod")

    def rule_selected_pods(self, policy_key: str, direction: Direction, index: int) -> frozenset[str]:
        """Active pods a pod/namespace selector of the rule admits (ipBlocks admit addresses)."""
        rule = self.policies[policy_key].rules(direction)[index]
        if not rule.peers:
            return frozenset(k for k, p in self.pods.items() if p.takes_part)
        peers = self.graph.successors(_rule_node(policy_key, direction, index))
        return frozenset(pod[1] for peer in peers for pod in self.graph.successors(peer))

    def rule_peer_groups(self, policy_key: str, direction: Direction, index: int) -> tuple[NodeId, ...]:
        """The shared peer nodes (namespace scope + pod selector) of a rule, sorted."""
        return tuple(sorted(self.graph.successors(_rule_node(policy_key, direction, index))))

    def peer_group_pods(self, group: NodeId) -> frozenset[str]:
        return frozenset(self.group_members(group))

    def group_members(self, group: NodeId) -> Iterator[str]:
        """The pods a peer group admits, unordered, without building a set."""
        return (pod for _, pod in self.graph.successors(group))

    def address_holders(self, ip: IPAddress) -> frozenset[str]:
        """Active pods that have this address (more than one only in a broken cluster)."""
        return frozenset(self._holders.get(ip, ()))

    @property
    def shared_addresses(self) -> dict[IPAddress, set[str]]:
        """Addresses more than one active pod has, with those pods (read only; empty in a sound
        cluster). A peer set holds such an address only if every holder is admitted."""
        return self._shared

    def admits(self, group: NodeId, pod_key: str) -> bool:
        """Does the peer group admit the pod now?"""
        return bool(self.graph.has_edge(group, _pod_node(pod_key)))

    def describe_group(self, group: NodeId) -> str:
        """A peer group in words, e.g. `pods app=db in namespace shop`."""
        scope = self._peer_scopes[group]
        pods = "all pods" if scope.pod_selector is None else f"pods {scope.pod_selector.describe()}"
        if scope.namespace_selector is None:
            return f"{pods} in namespace {scope.namespace}"
        return f"{pods} in namespaces {scope.namespace_selector.describe()}"

    def expand(self, change: Change) -> Change:
        """`change` with the pods its changed rules apply to, and their nodes."""
        return self._change(change.pods | self._targets_of_rules(change.rules), change.nodes)

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

    def _change(self, pods: Iterable[str], extra_nodes: Iterable[str | None] = (),
                rules: Iterable[NodeId] = ()) -> Change:
        pods = frozenset(pods)
        nodes = {self.pods[k].node_name for k in pods if k in self.pods} | set(extra_nodes)
        return Change(pods, frozenset(n for n in nodes if n), frozenset(rules))

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
            # Sets holding an address this pod shares (or shared) hold it only if every holder
            # is admitted: those admitting the other holders are recounted too.
            others = {key for p in (old, new) if p is not None for ip in p.ips
                      for key in self._holders.get(ip, ())} - {pod.key}
            touched |= {rule for key in others for rule in self._rules_admitting(key)}
        else:
            touched = old_rules ^ new_rules
        return self._change({pod.key}, [old.node_name if old else None, pod.node_name], touched)

    def _rules_admitting(self, pod_key: str) -> set[NodeId]:
        """Rules with a selector peer that admits the pod."""
        node = _pod_node(pod_key)
        if node not in self.graph:
            return set()
        return {rule for peer in self.graph.predecessors(node) if peer[0] == "peer"
                for rule in self.graph.predecessors(peer)}

    def _unlink_pod(self, pod: Pod) -> set[NodeId]:
        node = _pod_node(pod.key)
        self._addresses = None
        known = node in self.graph
        peers = [src for src in self.graph.predecessors(node) if src[0] == "peer"] if known else []
        rules = {rule for peer in peers for rule in self.graph.predecessors(peer)}
        if pod.takes_part:
            rules |= self._named_block_rules(pod)
        if known:
            self.graph.remove_node(node)
        self._forget_namespace_node(pod.namespace)
        self._selected_by.pop(pod.key, None)
        if pod.takes_part:
            index = self._pod_index[pod.namespace]
            index.remove(pod.key, pod.labels)
            if not index.all:
                del self._pod_index[pod.namespace]
            for ip in pod.ips:
                holders = self._holders.get(ip, set())
                holders.discard(pod.key)
                if len(holders) < 2:
                    self._shared.pop(ip, None)
                if not holders:
                    self._holders.pop(ip, None)
        del self.pods[pod.key]
        return rules

    def _forget_namespace_node(self, name: str) -> None:
        """A namespace's graph node goes with the namespace and its last pod (names churn)."""
        node = ("namespace", name)
        if name not in self.namespaces and node in self.graph and not self.graph.succ[node]:
            self.graph.remove_node(node)

    def _link_pod(self, pod: Pod) -> set[NodeId]:
        node = _pod_node(pod.key)
        self._addresses = None
        self.graph.add_edge(("namespace", pod.namespace), node)
        if not pod.takes_part:
            return set()
        self._pod_index.setdefault(pod.namespace, LabelIndex()).add(pod.key, pod.labels)
        for ip in pod.ips:
            holders = self._holders.setdefault(ip, set())
            holders.add(pod.key)
            if len(holders) > 1:
                self._shared[ip] = holders
        for key in self._policies_in.get(pod.namespace, ()):
            if self.policies[key].pod_selector.matches(pod.labels):
                self.graph.add_edge(("policy", key), node)
                self._selected_by.setdefault(pod.key, set()).add(key)
        rules: set[NodeId] = set()
        for peer in self._local_peers.get(pod.namespace, set()) | self._wide_peers_of(pod.namespace):
            selector = self._peer_scopes[peer].pod_selector
            if selector is None or selector.matches(pod.labels):
                self.graph.add_edge(peer, node)
                rules.update(self.graph.predecessors(peer))
        return rules | self._named_block_rules(pod)

    def _named_block_rules(self, pod: Pod) -> set[NodeId]:
        """Rules whose named egress ports reach the pod through an ipBlock."""
        found = set()
        for rule_node in self._named_block_rule_nodes:
            rule = self.policies[rule_node[1]].rules(rule_node[2])[int(rule_node[3])]  # type: ignore[arg-type]
            if any(
                    p.ip_block is not None and p.ip_block.contains(ip) for p in rule.peers for ip in pod.ips):
                found.add(rule_node)
        return found

    def _wide_peers_of(self, namespace: str) -> set[NodeId]:
        """Peers with a namespace selector matching `namespace` (cached until namespaces or
        peers change)."""
        if namespace not in self._wide_by_namespace:
            labels = self._namespace_labels(namespace)
            self._wide_by_namespace[namespace] = {
                peer for peer in self._wide_peers
                if self._peer_scopes[peer].namespace_selector.matches(labels)}  # type: ignore[union-attr]
        return self._wide_by_namespace[namespace]

    # namespaces

    def _namespace_event(self, event: EventType, namespace: Namespace) -> Change:
        old = self.namespaces.pop(namespace.name, None)
        self._wide_by_namespace.pop(namespace.name, None)
        if old:
            self._namespace_index.remove(old.name, old.labels)
        if event != "DELETED":
            self.namespaces[namespace.name] = namespace
            self._namespace_index.add(namespace.name, namespace.labels)
        self._forget_namespace_node(namespace.name)
        if event != "DELETED":
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
        return Change(rules=frozenset(touched))

    def _namespace_labels(self, name: str) -> Labels:
        found = self.namespaces.get(name)
        return found.labels if found else Namespace(name).labels

    # policies

    def _policy_event(self, event: EventType, policy: NetworkPolicy) -> Change:
        affected: set[str] = set()
        old = self.policies.pop(policy.key, None)
        if old is not None:
            affected |= self.policy_targets(old.key)
            for key in affected:
                self._selected_by.get(key, set()).discard(old.key)
            for direction in DIRECTIONS:
                for i in range(len(old.rules(direction))):
                    rule_node = _rule_node(old.key, direction, i)
                    peers = list(self.graph.successors(rule_node))
                    self.graph.remove_node(rule_node)
                    self._named_block_rule_nodes.discard(rule_node)
                    self._admit_all_rules.discard(rule_node)
                    for peer in peers:
                        if not any(True for _ in self.graph.predecessors(peer)):
                            self._drop_peer(peer)
            self.graph.remove_node(("policy", old.key))
            self._policies_in[old.namespace].discard(old.key)
            if not self._policies_in[old.namespace]:
                del self._policies_in[old.namespace]
            for isolating in self._isolating.values():
                isolating.discard(old.key)
        if event != "DELETED":
            self.policies[policy.key] = policy
            affected |= self._link_policy(policy)
        return self._change(affected)

    def _link_policy(self, policy: NetworkPolicy) -> set[str]:
        node = ("policy", policy.key)
        self.graph.add_node(node)
        self._policies_in.setdefault(policy.namespace, set()).add(policy.key)
        for direction in DIRECTIONS:
            if policy.isolates(direction):
                self._isolating[direction].add(policy.key)
        index = self._pod_index.get(policy.namespace, LabelIndex())
        targets = index.select(policy.pod_selector)
        self.graph.add_edges_from((node, _pod_node(key)) for key in targets)
        for key in targets:
            self._selected_by.setdefault(key, set()).add(policy.key)
        for direction in DIRECTIONS:
            for i, rule in enumerate(policy.rules(direction)):
                rule_node = _rule_node(policy.key, direction, i)
                self.graph.add_edge(node, rule_node)
                if not rule.peers:
                    self._admit_all_rules.add(rule_node)
                if any(p.ip_block is not None for p in rule.peers) and _named_egress(rule_node, rule):
                    self._named_block_rule_nodes.add(rule_node)
                for peer in rule.peers:
                    if peer.ip_block is None:
                        self.graph.add_edge(rule_node, self._ensure_peer(policy, peer))
        return targets

    def _ensure_peer(self, policy: NetworkPolicy, peer: Peer) -> NodeId:
        """The shared peer node, linked to the pods it admits when first seen."""
        node = _peer_node(policy, peer)
        if node in self._peer_scopes:
            return node
        local = peer.namespace_selector is None
        scope = _PeerScope(policy.namespace if local else None, peer.namespace_selector, peer.pod_selector)
        self._peer_scopes[node] = scope
        if local:
            self._local_peers.setdefault(policy.namespace, set()).add(node)
            namespaces = [policy.namespace]
        else:
            self._wide_peers.add(node)
            selector = peer.namespace_selector
            assert selector is not None  # not local
            matching = self._namespace_scope(selector)  # namespaces known or holding pods
            for ns, cached in self._wide_by_namespace.items():  # keep the cache: add the new peer
                if ns in matching or (ns not in self.namespaces and ns not in self._pod_index
                                      and selector.matches(Namespace(ns).labels)):
                    cached.add(node)
            namespaces = sorted(matching)
        self.graph.add_node(node)
        for ns in namespaces:
            index = self._pod_index.get(ns)
            if index is not None:
                found = index.all if peer.pod_selector is None else index.select(peer.pod_selector)
                self.graph.add_edges_from((node, _pod_node(k)) for k in found)
        return node

    def _drop_peer(self, node: NodeId) -> None:
        scope = self._peer_scopes.pop(node)
        if scope.namespace is not None:
            local = self._local_peers.get(scope.namespace, set())
            local.discard(node)
            if not local:
                self._local_peers.pop(scope.namespace, None)
        if node in self._wide_peers:
            self._wide_peers.discard(node)
            for cached in self._wide_by_namespace.values():
                cached.discard(node)
        self.graph.remove_node(node)

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
