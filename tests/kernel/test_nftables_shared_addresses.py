"""Two active pods with one address on one node (a terminating pod and its replacement, as the
API server may hold them for a while): the agent's compiler still renders rulesets the kernel
loads — whole and as updates — so one such pair never stops the enforcement of anything else,
and the address fails closed: a connection to or from it passes only what every claimant's
policies allow. Real packets, in namespaces this test creates and always deletes."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_cluster
from netpol.compile.incremental import IncrementalCompiler, KubeObject
from netpol.compile.resolver import EventType
from netpol.dataplane.iptables import apply_iptables
from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, NetworkPolicy, Peer, Pod, PolicyPort, Rule
from netpol.testing import clusters
from netpol.testing.strategies import NAMESPACE_NAMES, pods, policies
from tests.incremental_world import POLICY_NAMES, World
from tests.kernel.conftest import fresh_netns, nft, nft_load, nft_table, replay_in_kernel
from tests.kernel.test_nftables_packets import connects, load, node_with_pods

pytestmark = pytest.mark.usefixtures("netns_guard")  # a lab: not alongside test_verify's

left_netns = pytest.fixture(fresh_netns)
right_netns = pytest.fixture(fresh_netns)

SHARED = ipaddress.ip_address("10.244.0.20")
CLIENT = Pod("shop", "client", Labels({"app": "client"}), (ipaddress.ip_address("10.244.0.10"),), "node-a")
OLD = Pod("db", "db-old", Labels({"app": "db", "version": "old"}), (SHARED,), "node-a")
NEW = Pod("db", "db-new", Labels({"app": "db", "version": "new"}), (SHARED,), "node-a")


def _ingress(name: str, version: str, ports: tuple[int, ...]) -> NetworkPolicy:
    """The `version` db pods admit the client on `ports`, and may reach the client on any port."""
    client = Peer(LabelSelector(Labels({"app": "client"})), LabelSelector())
    return NetworkPolicy("db", name, LabelSelector(Labels({"version": version})),
                         ingress=(Rule((client,), tuple(PolicyPort("TCP", p) for p in ports)),),
                         egress=(Rule((client,)),), policy_types=("Ingress", "Egress"))


OLD_POLICY = _ingress("old-in", "old", (8080,))
NEW_POLICY = _ingress("new-in", "new", (8080, 9090))
DENY_ALL = NetworkPolicy("shop", "deny-all", LabelSelector(), policy_types=("Ingress", "Egress"))


def test_a_replacement_with_its_predecessors_address_loads_and_a_later_deny_all_is_enforced(
        left_netns, right_netns):
    start = ClusterState.build(pods=(CLIENT, OLD), policies=(OLD_POLICY, NEW_POLICY))
    compiler = IncrementalCompiler(start, nodes={"node-a"})
    programs = [compiler.program("node-a")]
    nft_load(left_netns, render(programs[0]))
    for event, obj in (("ADDED", NEW), ("ADDED", DENY_ALL)):
        compiler.apply(event, obj)  # type: ignore[arg-type]
        programs.append(compiler.program("node-a"))
        whole = nft(right_netns, "-f", "-", stdin=render(programs[-1]))
        assert whole.returncode == 0, whole.stderr  # the whole ruleset loads …
        delta = nft(left_netns, "-f", "-", stdin=render_update(programs[-2], programs[-1]))
        assert delta.returncode == 0, delta.stderr  # … and so does the update
        assert nft_table(left_netns) == nft_table(right_netns)
    # The client reaches the shared address only where both db pods' ingress admit it (8080,
    # not 9090: only db-new admits that), until the deny-all isolates the client.
    lab = ClusterState.build(pods=(CLIENT, NEW))  # one namespace stands for both claimants
    with node_with_pods(lab, "node-a", ruleset=render(programs[1])) as namespaces:
        client = namespaces[CLIENT.key]
        assert connects(client, SHARED, 8080, expected=True)
        assert not connects(client, SHARED, 9090, expected=False)
        load(namespaces[""], render_update(programs[1], programs[2]))
        assert not connects(client, SHARED, 8080, expected=False)


@st.composite
def twin_events(draw: st.DrawFn, names: tuple[str, ...]) -> tuple[EventType, KubeObject]:
    """Mostly pods on node-a from a few address slots, under two names per slot in one of two
    namespaces, so that one address often has two claimants; and policies that isolate them."""
    names = names[:2]
    if draw(st.integers(0, 2)) == 0:
        policy = draw(policies(names, draw(st.sampled_from(POLICY_NAMES))))
        if draw(st.booleans()):  # selecting every pod of its namespace
            policy = dataclasses.replace(policy, pod_selector=LabelSelector())
        return draw(st.sampled_from(("ADDED", "ADDED", "DELETED"))), policy
    slot = draw(st.integers(0, 2))
    pod = draw(pods(names, f"pod-{slot}-{draw(st.sampled_from('ab'))}", slot))
    pod = dataclasses.replace(pod, node_name="node-a", host_network=False)
    return draw(st.sampled_from(("ADDED", "ADDED", "ADDED", "DELETED"))), pod


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(start=clusters(max_pods=4, max_policies=4), data=st.data())
def test_updates_with_shared_addresses_leave_the_kernel_where_the_new_ruleset_would(
        left_netns, right_netns, start, data):
    """Random events in which pods take the same address slots, so addresses become shared and
    stop being shared: every ruleset loads, and every update applied in the kernel equals
    loading the new table (World also compares each program with a compile from scratch)."""
    names = tuple(n.name for n in start.namespaces) or NAMESPACE_NAMES
    replay_in_kernel(World(start), data.draw(st.lists(twin_events(names), min_size=1, max_size=12)),
                     left_netns, right_netns)


@pytest.mark.skipif(shutil.which("ipset") is None or shutil.which("iptables-restore") is None,
                    reason="needs ipset and iptables (make test installs them)")
def test_the_iptables_backend_sends_a_shared_address_through_every_claimant_too():
    state = ClusterState.build(pods=(CLIENT, OLD, NEW), policies=(OLD_POLICY, NEW_POLICY))
    program = compile_cluster(state)["node-a"]
    lab = ClusterState.build(pods=(CLIENT, NEW))
    with node_with_pods(lab, "node-a", ruleset="") as namespaces:
        apply_iptables(render_iptables(program), program, namespaces[""])
        assert connects(namespaces[CLIENT.key], SHARED, 8080, expected=True)
        assert not connects(namespaces[CLIENT.key], SHARED, 9090, expected=False)
