"""What the agent makes of objects it cannot take as they are (no kernel: the Agent object and
its program). Nothing an object holds raises out of the loop; an invalid object is reported
and counted; and nothing invalid opens a path: a policy with an unusable name still isolates
what it selects, a namespace with an invalid label isolates its pods both ways (its own
policies set aside), and an object defined differently in two files fails closed for what
every copy selects. Each holds for the API source as for a folder: both feed the same intake."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from netpol.agent.coalesce import SyncTiming
from netpol.agent.loop import Agent
from netpol.compile.ir import NodeProgram, PodProgram
from netpol.sources.events import KIND_NAMES, Delta, Snapshot, conflict_stand_in
from tests.conftest import agent_program, namespace_object, pod_object, policy_object

NODE = "node-a"
FAST = SyncTiming(min_interval=0.01, max_interval=0.2, retry_initial=0.05, retry_cap=0.2)
MALFORMED: dict[str, tuple[str, Any]] = {
    "policy, metadata not a mapping": ("NetworkPolicy", {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                                                         "metadata": "oops", "spec": {"podSelector": {}}}),
    "policy, metadata a list": ("NetworkPolicy", {"kind": "NetworkPolicy", "metadata": ["oops"]}),
    "policy, name not a string": ("NetworkPolicy", {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                                                    "metadata": {"name": 7, "namespace": "data"}}),
    "policy, spec a string": ("NetworkPolicy", {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                                                "metadata": {"name": "p", "namespace": "data"}, "spec": "x"}),
    "pod, metadata not a mapping": ("Pod", {"kind": "Pod", "apiVersion": "v1", "metadata": "oops"}),
    "pod, name missing": ("Pod", {"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "data"}}),
    "pod, labels a list": ("Pod", {**pod_object("x", "10.244.0.99", "data"),
                                   "metadata": {"name": "x", "namespace": "data", "labels": ["a"]}}),
    "pod, kind missing": ("Pod", {"apiVersion": "v1", "metadata": {"name": "y", "namespace": "data"}}),
    "pod, kind a list": ("Pod", {"kind": ["Pod"], "metadata": {"name": "y", "namespace": "data"}}),
    "pod, not an object": ("Pod", ["not", "an", "object"]),
    "namespace, name not a string": ("Namespace", {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": 3}}),
    "namespace, metadata not a mapping": ("Namespace", {"kind": "Namespace", "apiVersion": "v1", "metadata": 3}),
    "node, status a list": ("Node", {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-z"},
                                     "status": ["x"]}),
    "cluster policy, metadata not a mapping": ("ClusterNetworkPolicy", {
        "kind": "ClusterNetworkPolicy", "apiVersion": "policy.networking.k8s.io/v1beta1", "metadata": "oops"}),
    "cluster policy, spec a list": ("ClusterNetworkPolicy", {
        "kind": "ClusterNetworkPolicy", "apiVersion": "policy.networking.k8s.io/v1alpha2", "metadata": {"name": "p"},
        "spec": ["x"]}),
    "admin policy, not an object": ("AdminNetworkPolicy", ["not", "an", "object"]),
}


class Recorder:
    def apply(self, ruleset: str, force: bool = False) -> None:
        return None


def world() -> list[dict[str, Any]]:
    """Namespaces app (tier web) and data (tier data), a pod in each on node-a, and a policy on
    app/api admitting every namespace but tier=data — the issue's `NotIn` case."""
    return [
        namespace_object("app", tier="web"), namespace_object("data", tier="data"),
        pod_object("api", "10.244.0.10", "app", ports=(8080,), app="api"),
        pod_object("db", "10.244.0.20", "data", ports=(5432,), app="db"),
        pod_object("loader", "10.244.0.21", "data", app="loader"),
        policy_object("api-in", "app", podSelector={"matchLabels": {"app": "api"}},
                      ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
                          {"key": "tier", "operator": "NotIn", "values": ["data"]}]}}]}]),
        policy_object("loader-out", "data", podSelector={"matchLabels": {"app": "loader"}},
                      policyTypes=["Egress"], egress=[{}]),
    ]


def started(objects: list[dict[str, Any]]) -> Agent:
    agent = Agent(NODE, Recorder(), FAST)
    for kind in KIND_NAMES:
        agent.take(Snapshot(kind, tuple(o for o in objects if o.get("kind") == kind), "1"))
    assert agent.compiler is not None
    return agent


def pod(program: NodeProgram, key: str) -> PodProgram:
    return next(p for p in program.pods if p.pod == key)


def isolated_admitting_nothing(program: NodeProgram, key: str) -> list[str]:
    """The policies isolating the pod both ways, asserting that nothing is admitted."""
    found = pod(program, key)
    assert found.ingress.isolated and found.egress.isolated, key
    assert not found.ingress.allows and not found.egress.allows, key
    return sorted(set(found.ingress.isolated_by) | set(found.egress.isolated_by))


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_object_is_reported_counted_and_the_loop_goes_on(case, caplog):
    """`metadata: oops` used to raise AttributeError in the event path and end the loop."""
    kind, raw = MALFORMED[case]
    agent = started(world())
    with caplog.at_level(logging.WARNING, logger="netpol.agent"):
        agent.take(Delta(kind, "ADDED", raw))
        agent.take(Snapshot(kind, (raw,), "2"))  # a relist (or the next folder read) holding it
    assert agent.metrics.invalid_objects.labels(kind)._value.get() >= 1
    assert any(r.getMessage() == "invalid object" for r in caplog.records)
    assert agent.sync()
    later = [*world(), pod_object("late", "10.244.0.30", "app", app="api")]
    agent.take(Delta("Pod", "ADDED", later[-1]))  # a later change is still applied
    assert agent.sync() and any(p.pod == "app/late" for p in agent.applied.pods)  # type: ignore[union-attr]
    agent.take(Delta(kind, "DELETED", raw))
    assert agent.metrics.invalid_now.labels(kind)._value.get() == 0


def test_a_deny_all_whose_name_is_invalid_still_isolates_what_it_selects():
    """A deny-all named `Deny_All` used to be dropped, leaving its pods open."""
    deny = policy_object("Deny_All", "data", policyTypes=["Ingress", "Egress"])
    agent = started([*world(), deny])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    for key in ("data/db", "data/loader"):
        by = pod(program, key).ingress.isolated_by
        assert any(re.fullmatch(r"data/deny-all\.invalid-name-[0-9a-f]{6}", p) for p in by), by
    assert not pod(program, "data/db").ingress.allows
    unnamed = policy_object("x", "data")
    unnamed["metadata"] = {"name": 7, "namespace": "data"}  # not even a string: fails closed too
    agent = started([*world(), unnamed])
    assert any(re.fullmatch(r"data/policy\.invalid-name-[0-9a-f]{6}", p)
               for p in pod(agent.compiler.program(NODE), "data/db").ingress.isolated_by)  # type: ignore[union-attr]


def test_a_policy_without_a_namespace_fails_closed_in_default_as_kubectl_would_place_it():
    lost = policy_object("Bad_Name", "")
    del lost["metadata"]["namespace"]
    agent = started([*world(), namespace_object("default"), pod_object("d", "10.244.0.40", "default"), lost])
    assert pod(agent.compiler.program(NODE), "default/d").ingress.isolated  # type: ignore[union-attr]


def test_a_namespace_with_an_invalid_label_isolates_its_pods_and_sets_its_policies_aside():
    """`tier NotIn [data]` used to admit the data pods once their namespace (one bad label) was
    dropped; and a deny-all alone would not do: data's own allow-all egress would still let
    them out. So the namespace's pods admit nothing either way until it is valid again."""
    objects = world()
    agent = started(objects)
    before = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert pod(before, "data/loader").egress.allows  # its own policy lets it out
    broken = namespace_object("data", tier="data")
    broken["metadata"]["labels"]["bad key!"] = "x"
    agent.take(Delta("Namespace", "MODIFIED", broken))
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    for key in ("data/db", "data/loader"):
        assert isolated_admitting_nothing(program, key) == ["data/invalid-namespace.netpol"]
    assert agent.metrics.invalid_now.labels("Namespace")._value.get() == 1
    agent.take(Delta("Namespace", "MODIFIED", namespace_object("data", tier="data")))  # fixed
    assert agent.compiler.program(NODE) == agent_program(objects)  # type: ignore[union-attr]
    assert agent.metrics.invalid_now.labels("Namespace")._value.get() == 0


def test_a_namespace_invalid_from_the_first_list_fails_closed_too():
    broken = namespace_object("data", tier="data")
    broken["metadata"]["labels"]["tier"] = "not valid!"
    agent = started([o for o in world() if o["metadata"]["name"] != "data"] + [broken])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert isolated_admitting_nothing(program, "data/db") == ["data/invalid-namespace.netpol"]


def test_an_object_defined_differently_in_two_files_fails_closed_for_every_copy():
    """When one policy was defined in two files, the later file won silently (an allow-all beat
    a deny-all); now each copy becomes a deny-all for what it selects, and the other objects
    of the namespace are untouched."""
    deny = policy_object("web", "data", podSelector={"matchLabels": {"app": "db"}}, policyTypes=["Ingress", "Egress"])
    allow = policy_object("web", "data", podSelector={}, ingress=[{}])
    agent = started([*world(), conflict_stand_in([("a/deny.yaml", deny), ("b/allow.yaml", allow)])])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    stand_ins = isolated_admitting_nothing(program, "data/db")
    assert len(stand_ins) == 2 and all(re.fullmatch(r"data/web\.conflict-[0-9a-f]{6}", p) for p in stand_ins)
    loader = pod(program, "data/loader")  # selected by the allow-all copy only: isolated in, its egress still its own
    assert loader.ingress.isolated and not loader.ingress.allows and loader.egress.allows
    assert agent.metrics.invalid_now.labels("NetworkPolicy")._value.get() == 1
    agent.take(Delta("NetworkPolicy", "MODIFIED", deny))  # the conflict resolved (one file left)
    assert agent.compiler.program(NODE) == agent_program([*world(), deny])  # type: ignore[union-attr]


def test_a_namespace_defined_differently_in_two_files_is_closed():
    copies = [("a.yaml", namespace_object("data", tier="data")), ("b.yaml", namespace_object("data", tier="web"))]
    agent = started([o for o in world() if o["metadata"]["name"] != "data"] + [conflict_stand_in(copies)])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert isolated_admitting_nothing(program, "data/loader") == ["data/invalid-namespace.netpol"]
