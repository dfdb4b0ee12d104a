"""The incremental compiler's updates in the kernel: `render_update` applied on top of the old
ruleset leaves the same table as loading the new one — for a hand-made sequence, and for random
event sequences (tests/incremental_world.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol.backends.nftables import render, render_update
from netpol.compile.incremental import KubeObject
from netpol.compile.resolver import EventType
from netpol.labels import Labels, LabelSelector
from netpol.model import (
    ClusterState,
    ContainerPort,
    IPBlock,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)
from netpol.testing import clusters
from netpol.testing.strategies import NAMESPACE_NAMES
from tests.incremental_world import POD_SLOTS, World, events
from tests.kernel.conftest import fresh_netns, nft_load, nft_table, replay_in_kernel

left_netns = pytest.fixture(fresh_netns)
right_netns = pytest.fixture(fresh_netns)


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
    drawn = data.draw(st.lists(events(names, unique_addresses=True), min_size=1, max_size=8))
    replay_in_kernel(world, _unique_addresses(world, drawn), left_netns, right_netns)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(start=clusters(max_pods=POD_SLOTS, max_policies=3, max_cluster_policies=2), data=st.data())
def test_with_cluster_policies_every_update_in_the_kernel_equals_loading_the_new_table(
        left_netns, right_netns, start, data):
    """ClusterNetworkPolicy events among the others: tiered chains, `goto`, the input/output
    hooks arriving with the first tier rule and going with the last."""
    if len({ip for p in start.pods if p.takes_part for ip in p.ips}) < len(
            [ip for p in start.pods if p.takes_part for ip in p.ips]):
        return
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    world = World(start)
    drawn = data.draw(st.lists(events(names, unique_addresses=True, cluster=True), min_size=1, max_size=8))
    replay_in_kernel(world, _unique_addresses(world, drawn), left_netns, right_netns)


def _unique_addresses(world: World, drawn: list[tuple[EventType, KubeObject]]
                      ) -> Iterator[tuple[EventType, KubeObject]]:
    """The events, but pods arriving on an address another pod has (test_nftables_shared_addresses)."""
    for event, obj in drawn:
        if isinstance(obj, Pod) and obj.key not in world.pods and any(
                p.key != obj.key and set(p.ips) & set(obj.ips) for p in world.pods.values() if p.takes_part):
            continue
        yield event, obj
