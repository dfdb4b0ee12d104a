"""The graph-based label resolver: which policies select each pod, which pods each rule admits,
and, after every event, which pods' and nodes' rulesets changed. Incremental.

The graph (networkx) has namespace, pod, policy, rule and peer nodes; an edge's kind follows from
its ends, so edges carry no data (at 10k policies, a dict per edge was 27 MB): `contains`
(namespace → pod), `selects` (policy → pod), `has` (policy → rule), `uses` (rule → peer) and
`admits` (peer → pod). A peer node is one (namespace scope, pod selector) pair, shared by every
rule that spells the same peer, so the pods it admits are linked once however many policies
repeat it. ipBlocks admit addresses: they are bisected over the sorted pod addresses on demand,
not linked. Label indexes per namespace keep selector evaluation from scanning every pod.

ClusterNetworkPolicies (keyed by `ref`, e.g. `ClusterNetworkPolicy name`) are `cpolicy` nodes with
rule nodes like a NetworkPolicy's; their `namespaces` and `pods` peers are the same shared peer
nodes (a namespace selector and a pod selector), so a pod joining them touches their rules the
same way. Their subjects are worked out per pod (a hundred cluster policies at most, in
practice): on a pod event, a namespace's label change, and the policy's own event.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

from netpol.labels import Labels, LabelSelector
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterPeer,
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

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
NodeId = tuple[str, ...]

_POD_KEY = operator.itemgetter(1)  # of a pod node, ("pod", key)


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


def _peer_node(namespace: str, peer: Peer) -> NodeId:
    """Same scope and selectors → same node, whichever policy wrote them."""
    scope = f"ns={namespace}" if peer.namespace_selector is None else \
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

    def link_pods(self, node: NodeId, pods: Iterable[str]) -> None:
        """Edges from `node` (in the graph) to these pods' nodes: `add_edges_from`, for pod
        nodes the graph has (an active pod's always is), a dict entry at each end. The resolver
        links 300,000 such edges at 10k policies; networkx's general path (a dict per edge made
        and updated with nothing, endpoints checked) cost a microsecond or two each."""
        succ, pred = self._succ[node], self._pred
        for key in pods:
            pod = ("pod", key)
            into = pred.get(pod)
            if into is None:  # not a node yet: the general path adds it
                self.add_edge(node, pod)
            else:
                succ[pod] = into[node] = _NO_DATA


@dataclass
class Resolver:
    """Incremental resolver state; feed it events with `apply`, ask it with the query methods."""

    graph: DataFreeGraph = field(default_factory=DataFreeGraph)
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
    cluster_policies: dict[str, ClusterNetworkPolicy] = field(default_factory=dict)  # by key
    _cluster_selected_by: dict[str, set[str]] = field(default_factory=dict)  # pod → cluster policies
    _cluster_subjects: dict[str, set[str]] = field(default_factory=dict)  # cluster policy → pods
    _node_peer_rules: set[NodeId] = field(default_factory=set)  # cluster rules with `nodes` peers
    # With `from_state(…, policy_namespaces)`: cluster policies' subjects only in those namespaces.
    _subject_scope: frozenset[str] | None = None
    # cluster_selecting's answers by the policies selecting a pod (pods of a namespace share them)
    _cluster_order: dict[tuple[frozenset[str], Direction], tuple[str, ...]] = field(default_factory=dict)
    # Active pods' addresses as sorted (version, integer, pod key): ipBlocks bisect, never scan.
    _addresses: list[tuple[int, int, str]] | None = None

    @classmethod
    def from_state(cls, state: ClusterState, policy_namespaces: Collection[str] | None = None) -> Resolver:
        """The resolver of `state`; with `policy_namespaces`, of only the policies in those
        namespaces (every namespace, node and pod still): a policy selects pods of its own
        namespace only, so its answers for those namespaces' pods are the whole cluster's
        (cluster policies are always all there, their subjects only in those namespaces: a
        shard compiles no other pod, and every pod still counts as a peer)."""
        resolver = cls()
        if policy_namespaces is not None:
            resolver._subject_scope = frozenset(policy_namespaces)
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
        for cluster_policy in state.cluster_policies:
            if cluster_policy.key in resolver.cluster_policies:
                resolver.apply("ADDED", cluster_policy)
            else:
                resolver.cluster_policies[cluster_policy.key] = cluster_policy
                resolver._link_cluster_policy(cluster_policy)
        return resolver

    # -- queries ---------------------------------------------------------------------------

    def selecting_policies(self, pod_key: str, direction: Direction) -> tuple[str, ...]:
        """Policies that select the pod and isolate it for `direction`, sorted."""
        selected = self._selected_by.get(pod_key)
        return tuple(sorted(selected & self._isolating[direction])) if selected else ()

    def policy_targets(self, policy_key: str) -> frozenset[str]:
        """The pods a NetworkPolicy selects, or a cluster policy's subjects (by key)."""
        if policy_key in self.cluster_policies:
            return frozenset(self._cluster_subjects.get(policy_key, ()))
        return frozenset(dst[1] for _, dst in self.graph.out_edges(("policy", policy_key))
                         if dst[0] == "pod")

    def cluster_selecting(self, pod_key: str, direction: Direction) -> tuple[str, ...]:
        """Keys of the cluster policies with `direction` rules that select the pod, in
        evaluation order (Admin tier first; `ClusterNetworkPolicy.order_key`)."""
        selected = self._cluster_selected_by.get(pod_key)
        if not selected:
            return ()
        key = (frozenset(selected), direction)
        found = self._cluster_order.get(key)
        if found is None:
            policies = sorted((self.cluster_policies[k] for k in selected), key=lambda p: p.order_key)
            found = self._cluster_order[key] = tuple(p.key for p in policies if p.rules(direction))
        return found

    def nodes_matching(self, selector: LabelSelector) -> tuple[Node, ...]:
        """The Node objects a `nodes` peer's selector matches, by name."""
        return tuple(n for _, n in sorted(self.nodes.items()) if selector.matches(n.labels))

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
        return map(_POD_KEY, self.graph._succ[group])  # (`successors`, without its checks; at C speed)

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

    def apply(self, event: EventType,
              obj: Namespace | Pod | Node | NetworkPolicy | ClusterNetworkPolicy) -> Change:
        """Apply one watch event; return what it changed."""
        if isinstance(obj, Pod):
            return self._pod_event(event, obj)
        if isinstance(obj, Namespace):
            return self._namespace_event(event, obj)
        if isinstance(obj, NetworkPolicy):
            return self._policy_event(event, obj)
        if isinstance(obj, ClusterNetworkPolicy):
            return self._cluster_policy_event(event, obj)
        old = self.nodes.pop(obj.name, None)
        if event != "DELETED":
            self.nodes[obj.name] = obj
        # Node addresses are in its own ruleset; `nodes` peers' sets hold matching nodes' ones.
        moved = old is None or event == "DELETED" or \
            (old.labels, old.addresses) != (obj.labels, obj.addresses)
        return Change(nodes=frozenset({obj.name}), rules=frozenset(self._node_peer_rules if moved else ()))

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
        for key in self._cluster_selected_by.pop(pod.key, ()):
            self._cluster_subjects[key].discard(pod.key)
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
        if self.cluster_policies and (self._subject_scope is None or pod.namespace in self._subject_scope):
            namespace_labels = self._namespace_labels(pod.namespace)
            for key, cluster_policy in self.cluster_policies.items():
                if _subject_matches(cluster_policy, namespace_labels, pod):
                    self._cluster_selected_by.setdefault(pod.key, set()).add(key)
                    self._cluster_subjects[key].add(pod.key)
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
        # Cross-namespace peers may now admit (or stop admitting) this namespace's pods, and
        # cluster policies' subjects take them in or let them go.
        touched: set[NodeId] = set()
        subjects_moved: set[str] = set()
        for key in list(self._pod_index.get(namespace.name, LabelIndex()).all):
            pod = self.pods[key]
            was_subject_of = self._cluster_selected_by.get(key, set()).copy()
            before = self._unlink_pod(pod)
            self.pods[key] = pod
            touched |= before ^ self._link_pod(pod)
            if self._cluster_selected_by.get(key, set()) != was_subject_of:
                subjects_moved.add(key)
        return self._change(subjects_moved, rules=touched)

    def _namespace_labels(self, name: str) -> Labels:
        found = self.namespaces.get(name)
        return found.labels if found else Namespace(name).labels

    # policies

    def _policy_event(self, event: EventType, policy: NetworkPolicy) -> Change:
        affected: set[str] = set()
        old = self.policies.pop(policy.key, None)
        if old is not None:
            affected |= self.policy_targets(old.key)
            old_key = old.key  # (a property: once)
            for key in affected:
                self._selected_by.get(key, set()).discard(old_key)
            orphans = self._unlink_rules(old.key, old)
            self.graph.remove_node(("policy", old.key))
            self._policies_in[old.namespace].discard(old.key)
            if not self._policies_in[old.namespace]:
                del self._policies_in[old.namespace]
            for isolating in self._isolating.values():
                isolating.discard(old.key)
        if event != "DELETED":
            self.policies[policy.key] = policy
            affected |= self._link_policy(policy)
        self._drop_orphans(orphans if old is not None else [])
        return self._change(affected)

    # cluster policies

    def _cluster_policy_event(self, event: EventType, policy: ClusterNetworkPolicy) -> Change:
        """A cluster policy added, changed or deleted: its subjects before and after change."""
        affected: set[str] = set()
        self._cluster_order.clear()  # its priority or its rules may change the order
        old = self.cluster_policies.pop(policy.key, None)
        if old is not None:
            affected |= self._cluster_subjects.pop(old.key, set())
            old_key = old.key  # (a property: once)
            for key in affected:
                self._cluster_selected_by.get(key, set()).discard(old_key)
            orphans = self._unlink_rules(old.key, old)
            self.graph.remove_node(("cpolicy", old.key))
        if event != "DELETED":
            self.cluster_policies[policy.key] = policy
            affected |= self._link_cluster_policy(policy)
        self._drop_orphans(orphans if old is not None else [])
        return self._change(affected)

    def _link_cluster_policy(self, policy: ClusterNetworkPolicy) -> set[str]:
        node = ("cpolicy", policy.key)
        self.graph.add_node(node)
        subjects: set[str] = set()
        self._cluster_subjects[policy.key] = subjects
        subject = policy.subject
        namespaces = subject.namespaces if subject.pods is None else subject.pods.namespace_selector
        scope = self._namespace_scope(namespaces) if namespaces is not None else set()
        if self._subject_scope is not None:
            scope &= self._subject_scope
        for namespace in scope:
            index = self._pod_index.get(namespace)  # active pods only
            if index is not None:
                subjects |= index.all if subject.pods is None else index.select(subject.pods.pod_selector)
        selected_by, policy_key = self._cluster_selected_by, policy.key  # (a property: once)
        for key in subjects:
            selected_by.setdefault(key, set()).add(policy_key)
        for direction in DIRECTIONS:
            for i, rule in enumerate(policy.rules(direction)):
                rule_node = _rule_node(policy.key, direction, i)
                self.graph.add_edge(node, rule_node)
                if any(p.nodes is not None for p in rule.peers):
                    self._node_peer_rules.add(rule_node)
                for cluster_peer in rule.peers:
                    peer = _as_peer(cluster_peer)
                    if peer is not None:
                        self.graph.add_edge(rule_node, self._ensure_peer("", peer))
        return set(subjects)

    def _unlink_rules(self, key: str, policy: NetworkPolicy | ClusterNetworkPolicy) -> list[NodeId]:
        """Drop a policy's rule nodes; return the peer nodes they used, for `_drop_orphans` once
        the policy's new version is linked (a changed policy mostly spells the same peers:
        dropping them first had the new version link their pods again, thousands for a cluster
        policy's namespace selector)."""
        used: list[NodeId] = []
        for direction in DIRECTIONS:
            for i in range(len(policy.rules(direction))):
                rule_node = _rule_node(key, direction, i)
                used += self.graph.successors(rule_node)
                self.graph.remove_node(rule_node)
                self._named_block_rule_nodes.discard(rule_node)
                self._admit_all_rules.discard(rule_node)
                self._node_peer_rules.discard(rule_node)
        return used

    def _drop_orphans(self, peers: Iterable[NodeId]) -> None:
        """Drop those of the peer nodes that no rule uses."""
        for peer in peers:
            if peer in self._peer_scopes and not any(True for _ in self.graph.predecessors(peer)):
                self._drop_peer(peer)

    def _link_policy(self, policy: NetworkPolicy) -> set[str]:
        node = ("policy", policy.key)
        self.graph.add_node(node)
        self._policies_in.setdefault(policy.namespace, set()).add(policy.key)
        for direction in DIRECTIONS:
            if policy.isolates(direction):
                self._isolating[direction].add(policy.key)
        index = self._pod_index.get(policy.namespace, LabelIndex())
        targets = index.select(policy.pod_selector)
        self.graph.link_pods(node, targets)
        selected_by, policy_key = self._selected_by, policy.key  # (a property: once)
        for key in targets:
            selected_by.setdefault(key, set()).add(policy_key)
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
                        self.graph.add_edge(rule_node, self._ensure_peer(policy.namespace, peer))
        return targets

    def _ensure_peer(self, namespace: str, peer: Peer) -> NodeId:
        """The shared peer node, linked to the pods it admits when first seen (`namespace`: the
        policy's, the scope of a peer without a namespace selector)."""
        node = _peer_node(namespace, peer)
        if node in self._peer_scopes:
            return node
        local = peer.namespace_selector is None
        scope = _PeerScope(namespace if local else None, peer.namespace_selector, peer.pod_selector)
        self._peer_scopes[node] = scope
        if local:
            self._local_peers.setdefault(namespace, set()).add(node)
            namespaces = [namespace]
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
                self.graph.link_pods(node, found)
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
        return set().union(*(self.policy_targets(p) for p in policies
                             if p in self.policies or p in self.cluster_policies))


def _subject_matches(policy: ClusterNetworkPolicy, namespace_labels: Labels, pod: Pod) -> bool:
    """§2b subject, for a pod that takes part: `namespaces` = every pod of the matching
    namespaces; `pods` = pods matching the pod selector in namespaces matching the other."""
    subject = policy.subject
    if subject.namespaces is not None:
        return subject.namespaces.matches(namespace_labels)
    return (subject.pods is not None and subject.pods.namespace_selector.matches(namespace_labels)
            and subject.pods.pod_selector.matches(pod.labels))


def _as_peer(peer: ClusterPeer) -> Peer | None:
    """A cluster policy's `namespaces`/`pods` peer as the shared peer node it is (an empty pod
    selector spelled as none, so `namespaces: X` and `pods: {namespaceSelector: X}` share one);
    None for `networks`/`nodes` peers (addresses, not pods)."""
    if peer.namespaces is not None:
        return Peer(None, peer.namespaces)
    if peer.pods is not None:
        selector = peer.pods.pod_selector
        empty = not selector.match_labels and not selector.match_expressions
        return Peer(None if empty else selector, peer.pods.namespace_selector)
    return None


def _named_egress(rule_node: NodeId, rule: Rule) -> bool:
    """Egress named ports resolve per admitted pod, so ipBlock membership shapes the ruleset."""
    return rule_node[2] == "egress" and any(isinstance(p.port, str) for p in rule.ports)


def _addressing_changed(old: Pod, new: Pod | None) -> bool:
    """IPs, container ports or participation changed: peer sets' contents differ, not just members."""
    return new is None or (old.ips, old.ports, old.takes_part) != (new.ips, new.ports, new.takes_part)
