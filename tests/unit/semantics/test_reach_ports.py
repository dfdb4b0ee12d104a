"""`netpol reach` without --port does work linear in the distinct ports, not quadratic (issue 14).

Without --port, every port a policy or a container port names is a probe. Each probe used to
re-evaluate every rule of every class (and scan each class's ports for every named port), so
1,000 ports took 22 s and 5,000 over 300 s. The cost is measured here without a clock: the
number of lines of `netpol.semantics` executed (sys.settrace), which is deterministic. Doubling
the ports must at most (about) double it; before the fix it grew about fourfold.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netpol.semantics
from netpol.labels import Labels, LabelSelector
from netpol.model import (
    PROTOCOLS,
    ClusterState,
    ContainerPort,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import compute_reach
from netpol.testing import assert_agrees, clusters
from netpol.testing.strategies import PORT_NUMBERS

SEMANTICS = str(Path(netpol.semantics.__file__).parent)
APPS = ("web", "api", "db", "cache")
FIRST_PORT = 2000
# Doubling the ports doubles linear work (1.85x-1.96x here: fixed costs); quadratic work, 4x.
LINEAR_GROWTH = 2.2


def executed_lines(work: Callable[[], object]) -> int:
    """How many lines of netpol.semantics `work` executes."""
    count = 0

    def in_frame(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        nonlocal count
        if event == "line":
            count += 1
        return in_frame

    def on_call(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        return in_frame if frame.f_code.co_filename.startswith(SEMANTICS) else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        work()
    finally:
        sys.settrace(previous)
    return count


def app_selector(app: str) -> LabelSelector:
    return LabelSelector(Labels({"app": app}))


def many_ports(ports: int, policies_name_them: bool) -> ClusterState:
    """Two pods per app, the apps declaring `ports` distinct container ports between them (every
    fourth one named). With `policies_name_them`, also `ports` policies, each naming a port of
    its own (a number, a range or a container port's name): ingress into web from db or cache,
    egress from api to db or cache, in turn. Without, one policy isolates every pod and admits
    web on three named ports: the probes are the container ports, and all but three are alike."""
    per_app = ports // len(APPS)
    declared = {app: tuple(ContainerPort(FIRST_PORT + a * per_app + k, "TCP", port_name(a, k) if k % 4 == 0 else None)
                           for k in range(per_app)) for a, app in enumerate(APPS)}
    pods = [Pod("shop", f"{app}-{i}", Labels({"app": app}), (ipaddress.ip_address(f"10.0.{a}.{i + 2}"),),
                "node-a", ports=declared[app])
            for a, app in enumerate(APPS) for i in range(2)]
    if policies_name_them:
        policies = [numbered_policy(i, FIRST_PORT + len(APPS) * per_app + 3 * i, per_app) for i in range(ports)]
    else:
        named = Rule((Peer(app_selector("web")),), tuple(PolicyPort("TCP", port_name(a, 0)) for a in range(1, 4)))
        policies = [NetworkPolicy("shop", "in-from-web", LabelSelector(), (named,), (), ("Ingress",))]
    return ClusterState.build((Namespace("shop"),), tuple(pods), (), tuple(policies))


def port_name(app: int, k: int) -> str:
    return f"p{app}-{k}"


def numbered_policy(i: int, own: int, per_app: int) -> NetworkPolicy:
    """Policy `i`, naming port `own` (beyond every container port), `own`..`own + 2` or a named
    container port of the destination."""
    peer_app = 2 + i // 2 % 2  # db or cache: isolated in neither direction
    destination = 0 if i % 2 == 0 else peer_app  # a named port resolves on the destination
    kind = i % 3
    if kind == 0:
        port = PolicyPort("TCP", own)
    elif kind == 1:
        port = PolicyPort("TCP", own, own + 2)
    else:
        port = PolicyPort("TCP", port_name(destination, 4 * (i % max(1, per_app // 4))))
    rule = Rule((Peer(app_selector(APPS[peer_app])),), (port,))
    if i % 2 == 0:
        return NetworkPolicy("shop", f"in-{i}", app_selector("web"), (rule,), (), ("Ingress",))
    return NetworkPolicy("shop", f"out-{i}", app_selector("api"), (), (rule,), ("Egress",))


def reach_without_port(state: ClusterState) -> Callable[[], object]:
    return lambda: compute_reach(state, default_probes(state))


@pytest.mark.parametrize("policies_name_them", [True, False], ids=["a-port-per-policy", "container-ports"])
def test_reach_work_grows_linearly_with_distinct_ports(policies_name_them):
    small, large = many_ports(120, policies_name_them), many_ports(240, policies_name_them)
    assert len(default_probes(large)) >= 2 * len(default_probes(small)) - 2
    work_small = executed_lines(reach_without_port(small))
    work_large = executed_lines(reach_without_port(large))
    assert work_large <= LINEAR_GROWTH * work_small, (
        f"twice the ports, {work_large / work_small:.2f}x the work ({work_small} -> {work_large} lines)")


def test_the_many_ports_cluster_has_what_the_test_needs():
    """About 2 probes per port policy, and the policies' ports open connections no other port does."""
    state = many_ports(120, True)
    probes = default_probes(state)
    assert len(probes) == len(set(probes)) >= 200
    reach = compute_reach(state, probes)
    distinct_matrices = {reach.allowed_classes[i] for i in range(len(probes))}
    assert len(distinct_matrices) >= 4  # closed; db, cache -> web; api -> db; api -> cache


ANY_PROBE = st.one_of(
    st.builds(Probe, st.sampled_from(PROTOCOLS), st.sampled_from(PORT_NUMBERS) | st.integers(1, 65535)),
    st.sampled_from((Probe("ICMP", None), Probe("ICMPv6", None))))


@settings(max_examples=150)
@given(clusters(max_pods=8, max_policies=5), st.lists(ANY_PROBE, max_size=6))
def test_explicit_probes_agree_with_semantics_at_any_port(state, extra):
    """Probes at ports nothing names, inside ranges, at named ports' numbers, next to the default
    ones: every cell as the reference semantics says (rules are now found per port)."""
    probes = list(dict.fromkeys([*extra, *default_probes(state)]))
    reach = compute_reach(state, probes)
    row = {p.key: i for i, p in enumerate(reach.pods)}
    col = {p: i for i, p in enumerate(probes)}
    assert_agrees(state, lambda _s, a, b, probe: reach.allowed(col[probe], row[a.key], row[b.key]), probes)
