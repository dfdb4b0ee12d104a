"""The incremental compiler: after every event of a random sequence, every node's program prints
exactly what compiling the current objects from scratch prints; the nodes it reports are exactly
those whose ruleset changed, and an update it calls elements-only differs in set elements alone.
In the kernel: the element update of `render_update`, applied on top of the old ruleset, leaves
the same table as loading the new one."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
from pathlib import Path

import pytest
from conftest import fresh_netns, nft_load, nft_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netpol
from netpol.backends.nftables import render, render_update
from netpol.compile.incremental import IncrementalCompiler, KubeObject, Update
from netpol.compile.ir import compile_cluster
from netpol.compile.resolver import EventType
from netpol.labels import Labels, LabelSelector
from netpol.load.manifests import load_state
from netpol.model import (
    ClusterState,
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)
from netpol.testing import clusters, labels, pods, policies
from netpol.testing.strategies import NAMESPACE_NAMES

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                  reason="needs root and nft")
left_netns = pytest.fixture(fresh_netns)
right_netns = pytest.fixture(fresh_netns)

EXAMPLES = Path(netpol.__file__).parent / "examples"
POD_SLOTS = 8
SCOPED_NODE = "node-a"
POLICY_NAMES = tuple(f"policy-{i}" for i in range(4))


class World:
    """The objects as the API server would hold them, next to the compiler fed their events."""

    def __init__(self, start: ClusterState) -> None:
        self.namespaces = {n.name: n for n in start.namespaces}
        self.pods = {p.key: p for p in start.pods}
        self.nodes = {n.name: n for n in start.nodes}
        self.policies = {p.key: p for p in start.policies}
        self.compiler = IncrementalCompiler(start)
        self.agent = IncrementalCompiler(start, nodes={SCOPED_NODE})  # what one node's agent keeps

    def state(self) -> ClusterState:
        return ClusterState.build(self.namespaces.values(), self.pods.values(), self.nodes.values(),
                                  self.policies.values())

    def send(self, event: EventType, obj: KubeObject) -> Update:
        store: dict = {Pod: self.pods, Namespace: self.namespaces, Node: self.nodes,
                       NetworkPolicy: self.policies}[type(obj)]
        key = obj.key if isinstance(obj, Pod | NetworkPolicy) else obj.name
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
           unique_addresses: bool = False) -> tuple[EventType, KubeObject]:
    """A watch event; with `unique_addresses`, a pod slot always lives in the same namespace, so
    no two pods share an address (a kernel refuses a dispatch map with a key twice)."""
    kind = draw(st.sampled_from(("pod", "pod", "pod", "relabel", "policy", "namespace", "delete-pod",
                                 "delete-policy", "node")))
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
    return draw(st.sampled_from(("ADDED", "DELETED"))), Node(name, Labels(), (address,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=clusters(max_pods=POD_SLOTS, max_policies=3), data=st.data())
def test_incremental_programs_equal_a_compile_from_scratch_after_every_event(start, data):
    world = World(start)
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    for event, obj in data.draw(st.lists(events(names), min_size=1, max_size=12)):
        world.send(event, obj)


def test_a_pod_joining_a_peer_group_elsewhere_is_an_element_update():
    """The same-labelled pod added on node-b changes node-a's peer set, not its chains."""
    web = LabelSelector(Labels({"app": "web"}))
    policy = NetworkPolicy("shop", "allow-web", LabelSelector(Labels({"app": "db"})),
                           ingress=(Rule((Peer(web),), (PolicyPort("TCP", 5432),)),), policy_types=("Ingress",))
    db = Pod("shop", "db", Labels({"app": "db"}), (ipaddress.ip_address("10.0.0.2"),), "node-a")
    web1 = Pod("shop", "web-1", Labels({"app": "web"}), (ipaddress.ip_address("10.0.0.3"),), "node-a")
    world = World(ClusterState.build(pods=(db, web1), policies=(policy,)))
    old = world.compiler.program("node-a")
    web2 = Pod("shop", "web-2", Labels({"app": "web"}), (ipaddress.ip_address("10.0.1.3"),), "node-b",
               ports=(ContainerPort(80, "TCP", "http"),))
    world.send("ADDED", web2)
    update = world.compiler.apply("MODIFIED", web2)  # the same object again: nothing changes
    assert update.programs == {}
    new = world.compiler.program("node-a")
    delta = render_update(old, new)
    assert delta.splitlines()[1:] == [next(line for line in delta.splitlines() if "add element" in line)]
    assert "10.0.1.3" in delta


@needs_kernel
def test_updates_leave_the_kernel_where_the_new_ruleset_would(left_netns, right_netns):
    monitoring = LabelSelector(Labels({"team": "obs"}))
    policy = NetworkPolicy("shop", "allow", LabelSelector(Labels({"app": "db"})),
                           ingress=(Rule((Peer(monitoring, LabelSelector()),), (PolicyPort("TCP", 9187),)),),
                           egress=(Rule((Peer(monitoring, LabelSelector()),), (PolicyPort("TCP", "metrics"),)),),
                           policy_types=("Ingress", "Egress"))
    db = Pod("shop", "db", Labels({"app": "db"}), (ipaddress.ip_address("10.0.0.2"),
                                                    ipaddress.ip_address("fd00::2")), "node-a")
    watchers = [Pod("obs", f"m-{i}", Labels({"team": "obs"}), (ipaddress.ip_address(f"10.0.1.{i}"),
                                                                ipaddress.ip_address(f"fd00::1:{i}")), "node-b",
                    ports=(ContainerPort(9100 + i, "TCP", "metrics"),)) for i in range(1, 4)]
    start = ClusterState.build(pods=(db, *watchers), policies=(policy,))
    world = World(start)
    extra = NetworkPolicy("shop", "from-office", LabelSelector(Labels({"app": "db"})),
                          ingress=(Rule((Peer(ip_block=IPBlock(ipaddress.ip_network("10.9.0.0/16"))),)),),
                          policy_types=("Ingress",))
    steps: list[tuple[EventType, KubeObject]] = [
        ("ADDED", Pod("obs", "m-9", Labels({"team": "obs"}), (ipaddress.ip_address("10.0.1.9"),
                                                               ipaddress.ip_address("fd00::1:9")), "node-b",
                      ports=(ContainerPort(9109, "TCP", "metrics"),))),
        ("DELETED", start.pod("obs/m-1")),
        ("MODIFIED", dataclasses.replace(start.pod("obs/m-2"), labels=Labels({"team": "other"}))),
        ("ADDED", extra),  # structure: a new ipBlock set and db's chains change
        ("DELETED", extra),  # … and back: the set is dropped
        ("MODIFIED", dataclasses.replace(db, labels=Labels({"app": "other"}))),  # db's chains go
        ("MODIFIED", db),  # and come back
    ]
    left, right = left_netns, right_netns
    current = world.compiler.program("node-a")
    nft_load(left, render(current))
    for event, obj in steps:
        world.send(event, obj)
        new = world.compiler.program("node-a")
        delta = render_update(current, new)
        assert delta.startswith("# netpol update") and "table inet netpol {" not in delta, delta
        nft_load(left, delta)
        nft_load(right, render(new))
        assert nft_table(left) == nft_table(right)
        current = new


@needs_kernel
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(start=clusters(max_pods=POD_SLOTS, max_policies=3), data=st.data())
def test_every_update_applied_in_the_kernel_equals_loading_the_newnft_table(left_netns, right_netns, start, data):
    """Structural updates too: pods arriving, leaving, relabelled; policies added and removed."""
    if len({ip for p in start.pods if p.takes_part for ip in p.ips}) < len(
            [ip for p in start.pods if p.takes_part for ip in p.ips]):
        return  # clusters() gives unique slots; hostNetwork pods share their node's address
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    world = World(start)
    current = world.compiler.program("node-a")
    nft_load(left_netns, render(current))
    for event, obj in data.draw(st.lists(events(names, unique_addresses=True), min_size=1, max_size=8)):
        if isinstance(obj, Pod) and obj.key not in world.pods and any(
                p.key != obj.key and set(p.ips) & set(obj.ips) for p in world.pods.values() if p.takes_part):
            continue
        update = world.send(event, obj)
        if "node-a" not in update.programs:
            continue
        new = world.compiler.program("node-a")
        nft_load(left_netns, render_update(current, new) or "")
        nft_load(right_netns, render(new))
        assert nft_table(left_netns) == nft_table(right_netns), render_update(current, new)
        current = new


def test_a_scoped_compiler_refuses_other_nodes_and_compiles_only_its_pods():
    state = load_state([str(EXAMPLES / "shop")])
    nodes = sorted({p.node_name for p in state.pods if p.node_name})
    scoped = IncrementalCompiler(state, nodes={nodes[0]})
    assert scoped.node_names() == [nodes[0]]
    assert render(scoped.program(nodes[0])) == render(compile_cluster(state)[nodes[0]])
    elsewhere = next(p for p in state.pods if p.node_name == nodes[1] and p.takes_part)
    relabeled = dataclasses.replace(elsewhere, labels=elsewhere.labels.with_label("x", "y"))
    scoped.apply("MODIFIED", relabeled)
    for policy in state.policies:  # every policy changed: what it selects here is recompiled
        scoped.apply("MODIFIED", policy)
    assert {p.node_name for p in state.pods if p.key in scoped._pods} == {nodes[0]}
    now = ClusterState.build(state.namespaces, [relabeled if p.key == relabeled.key else p for p in state.pods],
                             state.nodes, state.policies)
    assert render(scoped.program(nodes[0])) == render(compile_cluster(now)[nodes[0]])
    with pytest.raises(ValueError, match="outside this compiler's scope"):
        scoped.program(nodes[1])


def test_two_pods_with_one_address_stay_exact():
    """A broken cluster may give two pods one address (or reuse a finished pod's): deleting one
    must not take the address out of sets the other is still in."""
    shared = ipaddress.ip_address("10.0.0.3")
    admit_all = NetworkPolicy("a", "p", LabelSelector(), ingress=(Rule((Peer(LabelSelector(), LabelSelector()),)),),
                              policy_types=("Ingress",))
    first = Pod("a", "x", Labels(), (shared,), "node-a")
    second = Pod("b", "x", Labels(), (shared,), "node-b")
    target = Pod("a", "t", Labels(), (ipaddress.ip_address("10.0.0.9"),), "node-a")
    world = World(ClusterState.build(pods=(first, second, target), policies=(admit_all,)))
    world.send("DELETED", first)  # World.send compares every node with a compile from scratch
    finished = dataclasses.replace(second, phase="Succeeded")
    world.send("MODIFIED", finished)
    world.send("ADDED", Pod("c", "y", Labels(), (shared,), "node-b"))  # the address reused
    world.send("DELETED", finished)
