"""Cluster policies in the agent (no kernel: the Agent object, its program, and packets traced
through it with `netpol.testing.trace`): a valid one reaches the compiler and leaves with its
deletion; a cluster without their CRDs has everything else enforced, and their policies once a
CRD is installed; an invalid one — `domainNames`, which netpol cannot enforce, a bad name, garbage — is
reported, counted, and denies everything for its subject, in its tier at its priority (each
copy of a conflicting definition for its own subject); and a namespace that fails closed stays
closed whatever an Admin policy's selectors now read into it."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from typing import Any

import pytest

from netpol.agent.loop import Agent
from netpol.agent.stand_ins import FIRST_IN_TIER, closed_namespace_policies
from netpol.compile.ir import NodeProgram
from netpol.sources.events import Delta, conflict_stand_in
from netpol.sources.kube import KubeSource, new_api_client
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.trace import Packet, trace
from tests.conftest import HANG, agent_program, cluster_policy_object, namespace_object, wait_until
from tests.unit.agent.test_intake import FAST, NODE, Recorder, pod, started, world

IPS = {"app/api": "10.244.0.10", "data/db": "10.244.0.20", "data/loader": "10.244.0.21"}
DB = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}}
DOMAINS = [{"action": "Accept", "to": [{"domainNames": ["*.example.com"]}]}]  # valid upstream, refused by netpol


def connects(program: NodeProgram, src: str, dst: str, port: int = 5432) -> bool:
    packet = Packet(ipaddress.ip_address(IPS[src]), ipaddress.ip_address(IPS[dst]), "TCP", port)
    return trace({NODE: program}, packet).allowed


def tier_rules(program: NodeProgram, key: str) -> dict[str, list[tuple[str, str, str]]]:
    """(tier, policy, action) of a pod's cluster-policy rules, per direction."""
    found = pod(program, key)
    return {direction: [(r.tier, r.policy, r.action) for r in (*side.admin, *side.baseline)]
            for direction, side in (("ingress", found.ingress), ("egress", found.egress))}


def test_a_valid_cluster_policy_reaches_the_compiler_and_leaves_with_its_deletion():
    deny = cluster_policy_object("web-to-db", "Admin", 5, subject=DB, ingress=[
        {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"tier": "web"}}}]}])
    agent = started(world())
    assert connects(agent.compiler.program(NODE), "app/api", "data/db")  # type: ignore[union-attr]
    agent.take(Delta("ClusterNetworkPolicy", "ADDED", deny))
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert tier_rules(program, "data/db") == {"ingress": [("Admin", "web-to-db", "Deny")], "egress": []}
    assert not connects(program, "app/api", "data/db") and connects(program, "data/loader", "data/db")
    assert program == agent_program([*world(), deny])
    agent.take(Delta("ClusterNetworkPolicy", "DELETED", deny))
    assert agent.compiler.program(NODE) == agent_program(world())  # type: ignore[union-attr]
    assert agent.metrics.invalid_objects.labels("ClusterNetworkPolicy")._value.get() == 0


def test_without_their_crds_the_rest_is_enforced_and_a_crd_installed_later_is_taken(tmp_path):
    """The agent compiles once every kind has been listed: a CRD not installed counts as listed
    with no objects, so a cluster without them is enforced as ever — and a policy created once
    the CRD is installed is enforced too, without a restart."""
    deny = cluster_policy_object("web-to-db", "Admin", 5, subject=DB, ingress=[
        {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"tier": "web"}}}]}])
    absent = dict.fromkeys(("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"), ())
    with FakeApiServer(bookmark_interval=0.2, crd_versions=absent) as api:
        api.apply_all(world())
        agent, stop = Agent(NODE, Recorder(), FAST), threading.Event()
        source = KubeSource(new_api_client(str(api.kubeconfig(tmp_path / "kubeconfig"))), agent.submit,
                            backoff_initial=0.02, backoff_cap=0.2, absent_recheck_initial=0.02,
                            absent_recheck_cap=0.1).start()
        loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        loop.start()
        try:
            wait_until(lambda: agent.applied is not None, "the first sync, without the CRDs")
            assert agent.applied == agent_program(world())
            api.serve_versions("ClusterNetworkPolicy", ["v1beta1", "v1alpha2"])
            api.apply(deny)
            wait_until(lambda: agent.applied == agent_program([*world(), deny]), "the policy enforced")
        finally:
            stop.set()
            source.stop()
            loop.join(HANG)
    assert not loop.is_alive() and not connects(agent.applied, "app/api", "data/db")


def test_the_v1alpha1_kinds_are_enforced_converted():
    anp = cluster_policy_object("legacy", kind="AdminNetworkPolicy", priority=3, subject=DB,
                                ingress=[{"action": "Allow", "from": [{"namespaces": {}}]}])
    banp = cluster_policy_object("default", kind="BaselineAdminNetworkPolicy", subject=DB,
                                 egress=[{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}])
    agent = started([*world(), anp, banp])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert tier_rules(program, "data/db") == {"ingress": [("Admin", "legacy", "Accept")],
                                              "egress": [("Baseline", "default", "Deny")]}
    assert not connects(program, "data/db", "app/api", 8080) and connects(program, "data/loader", "data/db")


STAND_INS: dict[str, tuple[dict[str, Any], str, str, int, tuple[str, ...]]] = {
    # case: (the invalid object, its stand-in's name (a pattern), tier, priority, the pods it closes)
    "domainNames (Baseline)": (cluster_policy_object("egress-to-domains", "Baseline", 900, subject=DB, egress=DOMAINS),
                               "egress-to-domains", "Baseline", 900, ("data/db",)),
    "invalid name": (cluster_policy_object("Deny_DB", "Admin", 7, subject=DB, ingress=[{"action": "Deny"}]),
                     r"deny-db\.invalid-name-[0-9a-f]{6}", "Admin", 7, ("data/db",)),
    "nothing readable": ({"kind": "ClusterNetworkPolicy", "apiVersion": "policy.networking.k8s.io/v1beta1",
                          "metadata": {"name": "junk"}, "spec": {"tier": "Middle", "priority": "high",
                                                                 "subject": {"pods": 5}}},
                         "junk", "Admin", FIRST_IN_TIER, tuple(IPS)),
    "not even an object": (["junk"], r"policy\.invalid-name-[0-9a-f]{6}", "Admin", FIRST_IN_TIER, tuple(IPS)),
    "AdminNetworkPolicy": (cluster_policy_object("legacy", kind="AdminNetworkPolicy", priority=3, subject=DB,
                                                 egress=DOMAINS), "legacy", "Admin", 3, ("data/db",)),
    "BaselineAdminNetworkPolicy": (cluster_policy_object("default", kind="BaselineAdminNetworkPolicy", subject=DB,
                                                         egress=[{"action": "Pass", "to": [{"networks": []}]}]),
                                   "default", "Baseline", 1000, ("data/db",)),
}


@pytest.mark.parametrize("case", list(STAND_INS))
def test_an_invalid_cluster_policy_denies_everything_for_its_subject_in_its_tier_at_its_priority(case, caplog):
    raw, name, tier, priority, closed = STAND_INS[case]
    kind = raw.get("kind", "ClusterNetworkPolicy") if isinstance(raw, dict) else "ClusterNetworkPolicy"
    with caplog.at_level(logging.WARNING, logger="netpol.agent"):
        agent = started([*world(), raw] if isinstance(raw, dict) else world())
        if not isinstance(raw, dict):
            agent.take(Delta(kind, "ADDED", raw))
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    [stand_in] = [o for o in agent.intake.fed.values() if getattr(o, "kind", None) == kind]
    assert re.fullmatch(name, stand_in.name) and (stand_in.tier, stand_in.priority) == (tier, priority)
    for key in IPS:
        rules = tier_rules(program, key)
        expected = [(tier, stand_in.name, "Deny")] if key in closed else []
        assert rules == {"ingress": expected, "egress": expected}, key
    # nothing in or out of a closed pod (a Baseline stand-in too: no NetworkPolicy isolates data/db)
    assert not any(connects(program, src, dst) for src in IPS for dst in IPS
                   if src != dst and {src, dst} & set(closed))
    assert agent.metrics.invalid_objects.labels(kind)._value.get() == 1
    assert agent.metrics.invalid_now.labels(kind)._value.get() == 1
    assert any(r.getMessage() == "policy fails closed" and r.__dict__["as"] == stand_in.ref for r in caplog.records)
    agent.take(Delta(kind, "DELETED", raw))
    assert agent.compiler.program(NODE) == agent_program(world())  # type: ignore[union-attr]
    assert agent.metrics.invalid_now.labels(kind)._value.get() == 0


def test_each_copy_of_a_cluster_policy_defined_differently_in_two_files_fails_closed_for_its_subject():
    """Neither copy wins: the Accept of one would otherwise open what the other denies."""
    deny = cluster_policy_object("db", "Admin", 5, subject=DB, ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}])
    allow = cluster_policy_object("db", "Admin", 1, subject={"namespaces": {"matchLabels": {"tier": "web"}}},
                                  ingress=[{"action": "Accept", "from": [{"namespaces": {}}]}])
    agent = started([*world(), conflict_stand_in([("a/deny.yaml", deny), ("b/allow.yaml", allow)])])
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    [(_, at_db, _)] = tier_rules(program, "data/db")["egress"]
    [(_, at_api, _)] = tier_rules(program, "app/api")["egress"]
    assert at_db != at_api and all(re.fullmatch(r"db\.conflict-[0-9a-f]{6}", n) for n in (at_db, at_api))
    assert tier_rules(program, "data/loader") == {"ingress": [], "egress": []}
    assert not connects(program, "data/loader", "data/db") and not connects(program, "data/loader", "app/api", 8080)
    assert agent.metrics.invalid_now.labels("ClusterNetworkPolicy")._value.get() == 1
    agent.take(Delta("ClusterNetworkPolicy", "MODIFIED", deny))  # resolved: one file left
    assert agent.compiler.program(NODE) == agent_program([*world(), deny])  # type: ignore[union-attr]


def test_a_namespace_that_fails_closed_is_passed_over_by_the_admin_tier():
    """Its labels unknown, `tier NotIn [data]` matches the closed namespace: an Admin Accept on
    that selector would let its pods out (and in) before the NetworkPolicy tier's deny-all."""
    accept = cluster_policy_object("open-but-data", "Admin", 0, subject={"namespaces": {"matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["data"]}]}},
        ingress=[{"action": "Accept", "from": [{"namespaces": {}}]}],
        egress=[{"action": "Accept", "to": [{"networks": ["0.0.0.0/0"]}]}])
    agent = started([*world(), accept])
    assert connects(agent.compiler.program(NODE), "data/loader", "app/api", 8080)  # type: ignore[union-attr]
    broken = namespace_object("data", tier="data")
    broken["metadata"]["labels"]["bad key!"] = "x"
    agent.take(Delta("Namespace", "MODIFIED", broken))
    program = agent.compiler.program(NODE)  # type: ignore[union-attr]
    assert not any(connects(program, src, dst, port) for src, dst, port in [
        ("data/loader", "app/api", 8080), ("data/db", "app/api", 8080), ("app/api", "data/db", 5432)])
    still_open = [o for o in world() if o["metadata"].get("namespace") != "data" or o["kind"] == "Pod"]
    still_open = [o for o in still_open if o["metadata"]["name"] != "data"]
    deny_all, passing = closed_namespace_policies("data")
    assert program == agent_program([*still_open, accept, deny_all, passing])
    without_the_pass = agent_program([*still_open, accept, deny_all])  # what the pass is for
    assert connects(without_the_pass, "data/loader", "app/api", 8080)
    agent.take(Delta("Namespace", "MODIFIED", namespace_object("data", tier="data")))  # fixed
    assert agent.compiler.program(NODE) == agent_program([*world(), accept])  # type: ignore[union-attr]
