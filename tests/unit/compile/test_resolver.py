"""The incremental resolver equals a rebuild from scratch after any sequence of events, and every
pod whose ruleset-relevant program changed is reported (Hypothesis stateful test)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netpol.compile.resolver import DIRECTIONS, Change, DataFreeGraph, Resolver
from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, Namespace, NetworkPolicy, Peer, Pod, Rule
from netpol.semantics.reference import Endpoint, peer_matches, selects
from netpol.testing import clusters, labels, pods, policies

NAMESPACE_NAMES = ("shop", "data")  # few namespaces, so that selectors and peers overlap often

POD_NAMES = ("a", "b", "c", "d", "e")
POLICY_NAMES = ("p", "q", "r")


def expected_selectors(state: ClusterState, pod: Pod, direction) -> tuple[str, ...]:
    return tuple(sorted(p.key for p in state.policies if p.isolates(direction) and selects(p, pod)))


def expected_peers(state: ClusterState, policy: NetworkPolicy, direction, index: int) -> frozenset[str]:
    rule = policy.rules(direction)[index]
    return frozenset(
        q.key for q in state.active_pods
        if not rule.peers or any(peer_matches(state, policy, peer, Endpoint(ip, q)) for peer in rule.peers
                                 for ip in q.ips)
    )


def expected_selected(state: ClusterState, policy: NetworkPolicy, direction, index: int) -> frozenset[str]:
    rule = policy.rules(direction)[index]
    selectors = [peer for peer in rule.peers if peer.ip_block is None]
    return frozenset(
        q.key for q in state.active_pods
        if not rule.peers or any(peer_matches(state, policy, peer, Endpoint(q.ips[0], q)) for peer in selectors)
    )


def program(state: ClusterState, pod: Pod) -> object:
    """Everything a node's ruleset encodes about `pod`, computed from scratch."""
    if not pod.takes_part:
        return None
    sides = []
    for d in DIRECTIONS:
        rules = []
        for key in expected_selectors(state, pod, d):
            policy = next(p for p in state.policies if p.key == key)
            for i, r in enumerate(policy.rules(d)):
                # ipBlocks compile to address intervals; the pods inside one matter only where
                # egress named ports resolve per destination pod.
                named_egress = d == "egress" and any(isinstance(p.port, str) for p in r.ports)
                admitted = (expected_peers if named_egress else expected_selected)(state, policy, d, i)
                peers = sorted((k, state.pod(k).ips, state.pod(k).ports) for k in admitted)
                rules.append((key, i, r, tuple(peers)))
        sides.append(tuple(rules))
    return (pod.ips, pod.ports, pod.node_name, tuple(sides))


class ResolverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.resolver = Resolver()
        self.pods: dict[str, Pod] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self.before = self.programs()

    @initialize(start=clusters(max_pods=8, max_policies=4, namespace_names=NAMESPACE_NAMES))
    def populate(self, start: ClusterState) -> None:
        """Start from a populated cluster, added object by object."""
        for namespace in start.namespaces:
            self.namespaces[namespace.name] = namespace
            self.check_change(self.resolver.apply("ADDED", namespace))
        for pod in start.pods:
            self.pods[pod.key] = pod
            self.check_change(self.resolver.apply("ADDED", pod))
        for policy in start.policies:
            self.policies[policy.key] = policy
            self.check_change(self.resolver.apply("ADDED", policy))

    def state(self) -> ClusterState:
        return ClusterState.build(self.namespaces.values(), self.pods.values(), (), self.policies.values())

    def programs(self) -> dict[str, object]:
        state = self.state()
        return {p.key: program(state, p) for p in state.pods}

    def check_change(self, change: Change) -> None:
        change = self.resolver.expand(change)
        after = self.programs()
        for key in set(self.before) | set(after):
            if self.before.get(key) != after.get(key) and (self.before.get(key) or after.get(key)):
                assert key in change.pods, f"{key} changed but was not reported"
                node = (self.pods.get(key) or Pod("", "")).node_name
                assert node is None or node in change.nodes
        self.before = after

    @rule(pod=pods(NAMESPACE_NAMES, name="x"), name=st.sampled_from(POD_NAMES))
    def upsert_pod(self, pod: Pod, name: str) -> None:
        pod = dataclasses.replace(pod, name=name)
        event = "MODIFIED" if pod.key in self.pods else "ADDED"
        self.pods[pod.key] = pod
        self.check_change(self.resolver.apply(event, pod))

    @rule(data=st.data(), new_labels=labels())
    def relabel_pod(self, data, new_labels) -> None:
        """Only the labels change: peer sets gain or lose members, addresses stay."""
        if self.pods:
            pod = dataclasses.replace(self.pods[data.draw(st.sampled_from(sorted(self.pods)))], labels=new_labels)
            self.pods[pod.key] = pod
            self.check_change(self.resolver.apply("MODIFIED", pod))

    @rule(data=st.data())
    def copy_labels(self, data) -> None:
        """A pod takes another pod's labels (or a namespace another's): peer sets change."""
        if len(self.pods) >= 2:
            src, dst = data.draw(st.permutations(sorted(self.pods)))[:2]
            pod = dataclasses.replace(self.pods[dst], labels=self.pods[src].labels)
            self.pods[pod.key] = pod
            self.check_change(self.resolver.apply("MODIFIED", pod))
        if len(self.namespaces) >= 2:
            src, dst = data.draw(st.permutations(sorted(self.namespaces)))[:2]
            labels_ = {k: v for k, v in self.namespaces[src].labels.items() if k != "kubernetes.io/metadata.name"}
            namespace = Namespace(dst, type(self.namespaces[src].labels)(labels_))
            self.namespaces[dst] = namespace
            self.check_change(self.resolver.apply("MODIFIED", namespace))

    @rule(data=st.data())
    def delete_pod(self, data) -> None:
        if self.pods:
            key = data.draw(st.sampled_from(sorted(self.pods)))
            pod = self.pods.pop(key)
            self.check_change(self.resolver.apply("DELETED", pod))

    @rule(name=st.sampled_from(NAMESPACE_NAMES), ns_labels=labels())
    def upsert_namespace(self, name: str, ns_labels) -> None:
        namespace = Namespace(name, ns_labels)
        event = "MODIFIED" if name in self.namespaces else "ADDED"
        self.namespaces[name] = namespace
        self.check_change(self.resolver.apply(event, namespace))

    @rule(name=st.sampled_from(NAMESPACE_NAMES))
    def delete_namespace(self, name: str) -> None:
        if name in self.namespaces:
            self.check_change(self.resolver.apply("DELETED", self.namespaces.pop(name)))

    @rule(policy=policies(NAMESPACE_NAMES, name="x"), name=st.sampled_from(POLICY_NAMES))
    def upsert_policy(self, policy: NetworkPolicy, name: str) -> None:
        policy = dataclasses.replace(policy, name=name)
        event = "MODIFIED" if policy.key in self.policies else "ADDED"
        self.policies[policy.key] = policy
        self.check_change(self.resolver.apply(event, policy))

    @rule(data=st.data(), direction=st.sampled_from(DIRECTIONS), name=st.sampled_from(POLICY_NAMES))
    def link_pods(self, data, direction, name: str) -> None:
        """A policy that selects one existing pod and admits another by its labels: dependencies
        for label, namespace and address changes to break."""
        if len(self.pods) < 2:
            return
        target, peer = (self.pods[k] for k in data.draw(st.permutations(sorted(self.pods)))[:2])
        ns = self.namespaces.get(peer.namespace, Namespace(peer.namespace))
        ns_selector = data.draw(st.sampled_from((
            None,
            LabelSelector(Labels({"kubernetes.io/metadata.name": peer.namespace})),
            LabelSelector(Labels({k: v for k, v in ns.labels.items() if k != "kubernetes.io/metadata.name"})),
        )))
        rule_ = Rule((Peer(LabelSelector(peer.labels), ns_selector),))
        ingress, egress = ((rule_,), ()) if direction == "ingress" else ((), (rule_,))
        policy = NetworkPolicy(target.namespace, name, LabelSelector(target.labels), ingress, egress,
                               ("Ingress",) if direction == "ingress" else ("Egress",))
        event = "MODIFIED" if policy.key in self.policies else "ADDED"
        self.policies[policy.key] = policy
        self.check_change(self.resolver.apply(event, policy))

    @rule(data=st.data())
    def delete_policy(self, data) -> None:
        if self.policies:
            key = data.draw(st.sampled_from(sorted(self.policies)))
            self.check_change(self.resolver.apply("DELETED", self.policies.pop(key)))

    @invariant()
    def equals_a_rebuild_from_scratch(self) -> None:
        state = self.state()
        rebuilt = Resolver.from_state(state)
        for resolver in (self.resolver, rebuilt):
            for pod in state.active_pods:
                for d in DIRECTIONS:
                    assert resolver.selecting_policies(pod.key, d) == expected_selectors(state, pod, d)
            for policy in state.policies:
                for d in DIRECTIONS:
                    for i in range(len(policy.rules(d))):
                        assert resolver.rule_peers(policy.key, d, i) == expected_peers(state, policy, d, i)
                        assert resolver.rule_selected_pods(policy.key, d, i) == expected_selected(state, policy, d, i)


ResolverMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestResolverIncremental = ResolverMachine.TestCase


@settings(max_examples=30, deadline=None)
@given(state=clusters(max_pods=10, max_policies=6))
def test_the_graph_carries_no_data(state):
    """Edge kinds follow from their ends: every node and edge shares one empty mapping, which
    building the resolver leaves empty and which refuses an item."""
    graph = Resolver.from_state(state).graph
    assert isinstance(graph, DataFreeGraph)
    mappings = [graph.nodes[n] for n in graph.nodes] + [graph.edges[e] for e in graph.edges]
    assert all(m is mappings[0] for m in mappings) and not mappings[0]
    with pytest.raises(TypeError, match="no data"):
        mappings[0]["kind"] = "selects"
