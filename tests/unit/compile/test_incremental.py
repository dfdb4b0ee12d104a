"""The incremental compiler: after every event of a random sequence, every node's program prints
exactly what compiling the current objects from scratch prints; the nodes it reports are exactly
those whose ruleset changed, and an update it calls elements-only differs in set elements alone
(tests/incremental_world.py). The same updates applied in the kernel:
tests/kernel/test_incremental_updates.py."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netpol
from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_cluster
from netpol.compile.incremental import IncrementalCompiler
from netpol.errors import OutOfScope
from netpol.labels import Labels, LabelSelector
from netpol.load.manifests import load_state
from netpol.model import (
    ClusterState,
    ContainerPort,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)
from netpol.testing import clusters
from netpol.testing.strategies import NAMESPACE_NAMES
from tests.incremental_world import POD_SLOTS, World, events

EXAMPLES = Path(netpol.__file__).parent / "examples"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=clusters(max_pods=POD_SLOTS, max_policies=3), data=st.data())
def test_incremental_programs_equal_a_compile_from_scratch_after_every_event(start, data):
    world = World(start)
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    for event, obj in data.draw(st.lists(events(names), min_size=1, max_size=12)):
        world.send(event, obj)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=clusters(max_pods=POD_SLOTS, max_policies=3, max_cluster_policies=2), data=st.data())
def test_with_cluster_policies_incremental_programs_equal_a_compile_from_scratch(start, data):
    """ClusterNetworkPolicy events among the others (subjects and peers moving with pods,
    namespaces' labels and Node objects)."""
    world = World(start)
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    for event, obj in data.draw(st.lists(events(names, cluster=True), min_size=1, max_size=12)):
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
    with pytest.raises(OutOfScope, match="outside this compiler's scope"):
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
