"""Random watch-event sequences for the incremental compiler, and the world that checks it after
each event: every node's program prints what a compile from scratch prints, the nodes it reports
are those whose ruleset changed, and the agent's one-node compiler agrees on its node. Used by
tests/unit/compile (programs) and tests/kernel (the same updates loaded into nftables)."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import strategies as st

from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_cluster
from netpol.compile.incremental import IncrementalCompiler, KubeObject, Update
from netpol.compile.resolver import EventType
from netpol.labels import Labels
from netpol.model import ClusterNetworkPolicy, ClusterState, Namespace, NetworkPolicy, Node, Pod
from netpol.testing.strategies import cluster_policies, labels, pods, policies

POD_SLOTS = 8
SCOPED_NODE = "node-a"
POLICY_NAMES = tuple(f"policy-{i}" for i in range(4))
CLUSTER_POLICY_NAMES = tuple(f"cnp-{i}" for i in range(3))


class World:
    """The objects as the API server would hold them, next to the compiler fed their events."""

    def __init__(self, start: ClusterState) -> None:
        self.namespaces = {n.name: n for n in start.namespaces}
        self.pods = {p.key: p for p in start.pods}
        self.nodes = {n.name: n for n in start.nodes}
        self.policies = {p.key: p for p in start.policies}
        self.cluster_policies = {p.key: p for p in start.cluster_policies}
        self.compiler = IncrementalCompiler(start)
        self.agent = IncrementalCompiler(start, nodes={SCOPED_NODE})  # what one node's agent keeps

    def state(self) -> ClusterState:
        return ClusterState.build(self.namespaces.values(), self.pods.values(), self.nodes.values(),
                                  self.policies.values(), self.cluster_policies.values())

    def send(self, event: EventType, obj: KubeObject) -> Update:
        store: dict = {Pod: self.pods, Namespace: self.namespaces, Node: self.nodes,
                       NetworkPolicy: self.policies, ClusterNetworkPolicy: self.cluster_policies}[type(obj)]
        key = obj.key if isinstance(obj, Pod | NetworkPolicy | ClusterNetworkPolicy) else obj.name
        if event == "DELETED":
            store.pop(key, None)
        else:
            event = "MODIFIED" if key in store else "ADDED"
            store[key] = obj
        before = {n: render(p) for n, p in self.compiler.programs().items()}
        old_programs = self.compiler.programs()
        update = self.compiler.apply(event, obj)
        expected = {n: render(p) for n, p in compile_cluster(self.state()).items()}
        after = self.compiler.programs()
        assert {n: render(p) for n, p in after.items()} == expected, f"{event} {obj}"
        for node, text in expected.items():
            if before.get(node) != text:
                assert node in update.programs, f"{node} changed but was not reported"
        for node in update.elements_only:
            delta = render_update(old_programs[node], after[node])
            assert delta.startswith("# netpol update") and "chain" not in delta, delta
        self._check_scoped(event, obj, before, expected)
        return update

    def _check_scoped(self, event: EventType, obj: KubeObject, before: dict[str, str],
                      expected: dict[str, str]) -> None:
        """The agent's one-node compiler agrees with the whole cluster's on its node."""
        old = self.agent.program(SCOPED_NODE) if SCOPED_NODE in self.agent.node_names() else None
        update = self.agent.apply(event, obj)
        assert set(update.programs) <= {SCOPED_NODE}
        assert self.agent.node_names() == [n for n in expected if n == SCOPED_NODE]
        if SCOPED_NODE not in expected:
            return
        assert render(self.agent.program(SCOPED_NODE)) == expected[SCOPED_NODE], f"{event} {obj}"
        if before.get(SCOPED_NODE) != expected[SCOPED_NODE]:
            assert SCOPED_NODE in update.programs, f"{SCOPED_NODE} changed but was not reported"
        if SCOPED_NODE in update.elements_only and old is not None:
            delta = render_update(old, self.agent.program(SCOPED_NODE))
            assert delta.startswith("# netpol update") and "chain" not in delta, delta


@st.composite
def events(draw: st.DrawFn, world_namespaces: tuple[str, ...],
           unique_addresses: bool = False, cluster: bool = False) -> tuple[EventType, KubeObject]:
    """A watch event; with `unique_addresses`, a pod slot always lives in the same namespace, so
    no two pods share an address (a kernel refuses a dispatch map with a key twice); with
    `cluster`, ClusterNetworkPolicy events too."""
    kinds = ["pod", "pod", "pod", "relabel", "policy", "namespace", "delete-pod", "delete-policy", "node"]
    if cluster:
        kinds += ["cluster-policy", "cluster-policy", "delete-cluster-policy"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("cluster-policy", "delete-cluster-policy"):
        policy = draw(cluster_policies(draw(st.sampled_from(CLUSTER_POLICY_NAMES))))
        return ("DELETED" if kind == "delete-cluster-policy" else "ADDED"), policy
    if kind in ("pod", "relabel", "delete-pod"):
        slot = draw(st.integers(0, POD_SLOTS - 1))
        where = (world_namespaces[slot % len(world_namespaces)],) if unique_addresses else world_namespaces
        pod = draw(pods(where, f"pod-{slot}", slot))
        if kind == "relabel":
            pod = dataclasses.replace(pod, labels=draw(labels()))
        return ("DELETED" if kind == "delete-pod" else "ADDED"), pod
    if kind in ("policy", "delete-policy"):
        policy = draw(policies(world_namespaces, draw(st.sampled_from(POLICY_NAMES))))
        return ("DELETED" if kind == "delete-policy" else "ADDED"), policy
    if kind == "namespace":
        return "ADDED", Namespace(draw(st.sampled_from(world_namespaces)), draw(labels()))
    name = draw(st.sampled_from(("node-a", "node-b")))
    address = ipaddress.ip_address(draw(st.sampled_from(("192.168.1.10", "192.168.1.11", "fd01::10"))))
    node_labels = draw(st.sampled_from((Labels(), Labels({"kubernetes.io/hostname": name}))))
    return draw(st.sampled_from(("ADDED", "DELETED"))), Node(name, node_labels, (address,))
