"""`netpol diff` holds: the cells it reports as changed are exactly the cells where the reference
evaluator's verdict differs between OLD and NEW (pods on both sides), each group names the object
changes that concern it and explains an example cell on both sides; `--fail-on` gates by kind
of change; text, JSON and markdown say the same."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.audit.changes import FieldEdit, field_edits, object_changes
from netpol.audit.diff import Diff, diff_states, union_probes
from netpol.model import ClusterState, Namespace, NetworkPolicy
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import participants
from netpol.semantics.reference import pods_connect
from netpol.testing.strategies import (
    ADDRESS_SLOTS,
    cluster_policies,
    clusters,
    container_ports,
    labels,
    policies,
)
from netpol.testing.strategies import pods as generated_pods
from tests.conftest import WORLD_OBJECTS, WORLD_PODS, cluster, pod_yaml, policy_yaml, run_cli

DENY_INGRESS_A = policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress]}")
DB_ON = "{{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{ports: [{{port: {port}}}]}}]}}"
DB_FROM_CLIENTS = ("{podSelector: {matchLabels: {app: db}}, ingress: [{from: [{namespaceSelector: "
                   "{matchLabels: {team: y}}, podSelector: {matchLabels: {app: client}}}]}]}")
ADMIN_DENY_B_TO_A = """---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard-a}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: x}}}
  ingress:
  - name: not-from-y
    action: Deny
    from: [{namespaces: {matchLabels: {team: y}}}]
"""


def text(*documents: str, objects: str = WORLD_OBJECTS, pods: str = WORLD_PODS) -> str:
    """The clause world (namespaces a team=x and b team=y; a/web, a/db, b/client, b/web) with
    these documents."""
    return objects + pods + "".join(documents)


def diff_of(old: str, new: str, probes: tuple[Probe, ...] | None = None) -> Diff:
    before, after = cluster(old), cluster(new)
    return diff_states(before, after, probes or union_probes(default_probes(before), default_probes(after)))


def cells(diff: Diff) -> set[tuple[str, str, Probe, str]]:
    return {(s, d, p, g.change) for g in diff.groups for s in g.sources for d in g.destinations
            for p in g.probes if s != d}


def lines(diff: Diff) -> list[str]:
    return [g.line for g in diff.groups]


# -- scenarios -----------------------------------------------------------------------------------


def test_a_policy_added_closes_the_cells_into_its_pods():
    diff = diff_of(text(), text(DENY_INGRESS_A), (Probe("TCP", 80),))
    assert lines(diff) == ["a/[db] => a/[web] : TCP 80 newly denied", "a/[web] => a/[db] : TCP 80 newly denied",
                           "b/* => a/* : TCP 80 newly denied"]
    assert diff.cells("denied") == 2 + 4 and diff.cells("allowed") == 0
    assert {c.ref for g in diff.groups for c in g.causes} == {"NetworkPolicy a/deny"}
    [change] = diff.objects
    assert (change.ref, change.change, change.fields) == ("NetworkPolicy a/deny", "added", ())
    example = diff.groups[0].example
    assert example is not None and example.before.allowed and not example.after.allowed
    assert "isolated by a/deny and no rule admits it" in example.after.reason


def test_a_port_edited_opens_one_port_and_closes_the_other():
    old = text(policy_yaml("a", "db", DB_ON.format(port=5432)))
    new = text(policy_yaml("a", "db", DB_ON.format(port=5433)))
    diff = diff_of(old, new)
    assert [p.port for p in diff.probes] == [80, 5432, 5433, 8080, 53]
    assert lines(diff) == ["a/[web], b/* => a/[db] : TCP 5433 newly allowed",
                           "a/[web], b/* => a/[db] : TCP 5432 newly denied"]
    assert diff.cells("allowed") == diff.cells("denied") == 3
    for group in diff.groups:
        [cause] = group.causes
        assert cause.edits == (FieldEdit("spec.ingress[0].ports[0].port", 5432, 5433),)
    opened = diff.groups[0].example
    assert opened is not None and (opened.before.verdict, opened.after.verdict) == ("denied", "allowed")
    assert "admitted by NetworkPolicy a/db spec.ingress[0]" in opened.after.reason
    assert "isolated by a/db and no rule admits it" in opened.before.reason


def test_a_pod_relabelled_into_a_peer_gains_and_out_of_it_loses():
    old = text(policy_yaml("a", "db", DB_FROM_CLIENTS))
    pods = WORLD_PODS.replace("name: client, namespace: b, labels: {app: client}",
                              "name: client, namespace: b, labels: {app: gone}")
    pods = pods.replace("name: web, namespace: b, labels: {app: web}", "name: web, namespace: b, labels: {app: client}")
    assert pods.count("{app: client}") == 1 and "{app: gone}" in pods
    diff = diff_of(old, text(policy_yaml("a", "db", DB_FROM_CLIENTS), pods=pods), (Probe("TCP", 80),))
    assert lines(diff) == ["b/[web] => a/[db] : TCP 80 newly allowed", "b/[client] => a/[db] : TCP 80 newly denied"]
    assert [[c.ref for c in g.causes] for g in diff.groups] == [["Pod b/web"], ["Pod b/client"]]
    assert diff.groups[0].causes[0].edits == (FieldEdit("metadata.labels.app", "web", "client"),)


def test_a_namespace_relabelled_out_of_a_namespace_selector():
    objects = WORLD_OBJECTS.replace("labels: {team: y}", "labels: {team: z}")
    assert objects != WORLD_OBJECTS
    policy = policy_yaml("a", "db", DB_FROM_CLIENTS)
    diff = diff_of(text(policy), text(policy, objects=objects), (Probe("TCP", 80),))
    assert lines(diff) == ["b/[client] => a/[db] : TCP 80 newly denied"]
    [cause] = diff.groups[0].causes
    assert (cause.ref, cause.fields) == ("Namespace b", ("metadata.labels.team",))


def test_a_cluster_policy_admin_deny_added():
    diff = diff_of(text(), text(ADMIN_DENY_B_TO_A), (Probe("TCP", 80),))
    assert lines(diff) == ["b/* => a/* : TCP 80 newly denied"]
    assert diff.cells("denied") == 4
    [cause] = diff.groups[0].causes
    assert (cause.ref, cause.change) == ("ClusterNetworkPolicy guard-a", "added")
    example = diff.groups[0].example
    assert example is not None
    assert "Admin tier: ClusterNetworkPolicy guard-a (priority 10) spec.ingress[0] (not-from-y): Deny" \
        in example.after.reason


def test_an_edit_to_one_rule_is_no_cause_of_changes_on_ports_it_never_names():
    """a/pg and a/metrics both select a/db; each edit touches one rule, on its own port."""
    pg = "{{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: " \
         "{{team: y}}}}}}], ports: [{{port: {port}}}]}}]}}"
    metrics = "{{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{{peers}ports: [{{port: 9090}}]}}]}}"
    old = text(policy_yaml("a", "pg", pg.format(port=5432)), policy_yaml("a", "metrics", metrics.format(peers="")))
    new = text(policy_yaml("a", "pg", pg.format(port=5433)), policy_yaml("a", "metrics", metrics.format(
        peers="from: [{namespaceSelector: {matchLabels: {team: y}}}], ")))
    diff = diff_of(old, new)
    causes = {g.line: [c.ref for c in g.causes] for g in diff.groups}
    assert causes == {"b/* => a/[db] : TCP 5433 newly allowed": ["NetworkPolicy a/pg"],
                      "a/[web] => a/[db] : TCP 9090 newly denied": ["NetworkPolicy a/metrics"],
                      "b/* => a/[db] : TCP 5432 newly denied": ["NetworkPolicy a/pg"]}


def test_an_edit_to_a_rule_with_a_named_port_causes_changes_where_the_name_resolves():
    web = "{{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: " \
          "{{team: {team}}}}}}}], ports: [{{port: http}}]}}]}}"
    diff = diff_of(text(policy_yaml("a", "web", web.format(team="y"))), text(policy_yaml("a", "web", web.format(team="x"))))
    assert lines(diff) == ["a/[db] => a/[web] : TCP 80 newly allowed", "b/* => a/[web] : TCP 80 newly denied"]
    for group in diff.groups:
        assert [c.ref for c in group.causes] == ["NetworkPolicy a/web"]
        assert group.causes[0].fields == ("spec.ingress[0].from[0].namespaceSelector.matchLabels.team",)


def test_a_cell_allowed_over_one_family_of_two_is_allowed_and_explained_by_it():
    dual = (pod_yaml("a", "one", "10.0.0.5,fd00::5", "{app: one}")
            + pod_yaml("a", "two", "10.0.0.6,fd00::6", "{app: two}"))
    v6_only = ("{podSelector: {matchLabels: {app: two}}, ingress: [{from: [{ipBlock: {cidr: 'fd00::/64'}}]}]}")
    diff = diff_of(text(DENY_INGRESS_A, pods=dual), text(DENY_INGRESS_A, policy_yaml("a", "v6", v6_only), pods=dual),
                   (Probe("TCP", 80),))
    assert lines(diff) == ["a/[one] => a/[two] : TCP 80 newly allowed"]
    example = diff.groups[0].example
    assert example is not None and not example.before.allowed and example.after.allowed
    assert "admitted by NetworkPolicy a/v6 spec.ingress[0]" in example.after.reason


def test_pods_on_one_side_are_listed_not_compared():
    extra = WORLD_PODS.split("---")
    fewer = "---".join(p for p in extra if "name: client" not in p)
    diff = diff_of(text(), text(pods=fewer))
    assert diff.unchanged and diff.pods_removed == ("b/client",) and diff.pods_added == ()
    assert diff.pods_compared == 3


def test_identical_inputs_change_nothing():
    same = text(policy_yaml("a", "db", DB_FROM_CLIENTS), ADMIN_DENY_B_TO_A)
    diff = diff_of(same, same)
    assert diff.unchanged and diff.objects == () and not diff.fails("any")


def test_union_probes_cuts_both_sides_ranges_where_either_changes():
    old = (Probe("TCP", 53), Probe("TCP", 7000, 7010), Probe("UDP", 53))
    new = (Probe("TCP", 7000, 7005), Probe("TCP", 8080), Probe("ICMP", None))
    assert union_probes(old, new) == (Probe("ICMP", None), Probe("TCP", 53), Probe("TCP", 7000, 7005),
                                      Probe("TCP", 7006, 7010), Probe("TCP", 8080), Probe("UDP", 53))


def test_field_edits_name_the_leaves_in_manifest_spelling():
    before = {"spec": {"ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}}
    after = {"spec": {"ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}],
                                   "ports": [{"port": 81}]}, {}]}}
    assert field_edits(before, after) == [
        FieldEdit("spec.ingress[0].from[1]", None, {"ipBlock": {"cidr": "10.0.0.0/8"}}),
        FieldEdit("spec.ingress[0].ports[0].port", 80, 81), FieldEdit("spec.ingress[1]", None, {})]


def test_object_changes_in_order_policies_first():
    old = cluster(text(policy_yaml("a", "db", DB_ON.format(port=5432))))
    new = cluster(text(ADMIN_DENY_B_TO_A, objects=WORLD_OBJECTS.replace("{team: y}", "{team: z}")))
    assert [(c.ref, c.change) for c in object_changes(old, new)] == [
        ("ClusterNetworkPolicy guard-a", "added"), ("NetworkPolicy a/db", "removed"), ("Namespace b", "edited")]


# -- the property --------------------------------------------------------------------------------


@st.composite
def edited_clusters(draw: st.DrawFn) -> tuple[ClusterState, ClusterState]:
    """A small cluster (both tiers of cluster policies too) with three to six pods, and the same
    after one to three edits."""
    base = draw(clusters(max_pods=0, max_policies=3, max_cluster_policies=2))
    names = tuple(ns.name for ns in base.namespaces)
    slots = draw(st.lists(st.integers(0, ADDRESS_SLOTS - 1), min_size=3, max_size=6, unique=True))
    old = dataclasses.replace(base, pods=tuple(draw(generated_pods(names, f"pod-{i}", slot)) for i, slot in enumerate(slots)))
    new = old
    for n in range(draw(st.integers(1, 3))):
        new = draw(_edit(new, n))
    return old, new


@st.composite
def _edit(draw: st.DrawFn, state: ClusterState, n: int) -> ClusterState:
    names = tuple(ns.name for ns in state.namespaces)
    members, nps, cnps = list(state.pods), list(state.policies), list(state.cluster_policies)
    namespaces = list(state.namespaces)
    what = draw(st.sampled_from(("add policy", "remove policy", "edit policy", "pod labels", "pod ports",
                                 "namespace labels", "add cluster policy", "remove cluster policy",
                                 "edit cluster policy", "isolate")))
    if what == "isolate":  # a default deny, of one direction or both: changes cells more often than not
        types = draw(st.sampled_from((("Ingress",), ("Egress",), ("Ingress", "Egress"))))
        nps.append(NetworkPolicy(draw(st.sampled_from(names)), f"isolate-{n}", policy_types=types))
    elif what == "add policy" or (what in ("remove policy", "edit policy") and not nps):
        nps.append(draw(policies(names, f"added-{n}")))
    elif what == "remove policy":
        nps.pop(draw(st.integers(0, len(nps) - 1)))
    elif what == "edit policy":
        i = draw(st.integers(0, len(nps) - 1))
        nps[i] = draw(policies((nps[i].namespace,), nps[i].name))
    elif what in ("pod labels", "pod ports") and members:
        i = draw(st.integers(0, len(members) - 1))
        members[i] = dataclasses.replace(members[i], **({"labels": draw(labels())} if what == "pod labels"
                                                  else {"ports": draw(container_ports())}))
    elif what == "namespace labels":
        i = draw(st.integers(0, len(namespaces) - 1))
        namespaces[i] = Namespace(namespaces[i].name, draw(labels()))
    elif what == "add cluster policy" or (what != "remove cluster policy" and not cnps):
        cnps.append(draw(cluster_policies(f"added-{n}")))
    elif what == "remove cluster policy" and cnps:
        cnps.pop(draw(st.integers(0, len(cnps) - 1)))
    elif cnps:
        i = draw(st.integers(0, len(cnps) - 1))
        cnps[i] = dataclasses.replace(draw(cluster_policies(cnps[i].name)), kind=cnps[i].kind)
    return ClusterState.build(namespaces, members, state.nodes, nps, cnps)


@settings(max_examples=300)
@given(edited_clusters())
def test_the_changed_cells_are_exactly_where_the_reference_verdicts_differ(sides):
    old, new = sides
    probes = union_probes(default_probes(old), default_probes(new))
    diff = diff_states(old, new, probes)
    before = {p.key: p for p in participants(old)}
    expected = set()
    for src in participants(new):
        for dst in participants(new):
            if src == dst or src.key not in before or dst.key not in before:
                continue
            for probe in probes:
                was = pods_connect(old, before[src.key], before[dst.key], probe.port, probe.protocol)
                now = pods_connect(new, src, dst, probe.port, probe.protocol)
                if was != now:
                    expected.add((src.key, dst.key, probe, "allowed" if now else "denied"))
    assert cells(diff) == expected
    assert sum(g.cells for g in diff.groups) == len(expected)  # groups are disjoint
    for group in diff.groups:
        assert group.causes, f"{group.line}: no cause among {diff.objects}"
        assert set(group.causes) <= set(diff.objects)
        example = group.example
        assert example is not None
        assert (example.before.allowed, example.after.allowed) == (group.change == "denied",
                                                                   group.change == "allowed")


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def sides(tmp_path: Path) -> dict[str, str]:
    """Manifests: the world (`open`), the world with a/deny (`closed`), the world with an ingress
    policy for a/db on 5432 only (`db-5432`)."""
    files = {"open": text(), "closed": text(DENY_INGRESS_A), "db-5432": text(policy_yaml("a", "db", DB_ON.format(
        port=5432)))}
    paths = {}
    for name, content in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(content)
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize(("old", "new", "fail_on", "code"), [
    ("open", "closed", None, 0), ("open", "closed", "denied", 4), ("open", "closed", "any", 4),
    ("open", "closed", "allowed", 0),
    ("closed", "open", "allowed", 4), ("closed", "open", "denied", 0), ("closed", "open", "any", 4),
    ("open", "open", "any", 0), ("open", "open", "allowed", 0), ("open", "open", "denied", 0),
])
def test_fail_on_gates_by_the_kind_of_change(sides, old, new, fail_on, code):
    argv = ["diff", "-f", sides[old], "--to", sides[new], *(["--fail-on", fail_on] if fail_on else [])]
    got, out, err = run_cli(*argv)
    assert (got, err) == (code, "")
    assert out.startswith("no change" if old == new else "netpol diff: ")


def test_text_output(sides):
    code, out, _ = run_cli("diff", "-f", sides["closed"], "--to", sides["db-5432"], "--port", "5432/TCP")
    assert code == 0
    listed = out.splitlines()
    start = listed.index("b/* => a/* : TCP 5432 newly allowed")
    assert listed[start:start + 8] == [
        "b/* => a/* : TCP 5432 newly allowed",
        "  4 cells",
        "  caused by:",
        "    NetworkPolicy a/db added",
        "    NetworkPolicy a/deny removed",
        "  e.g. b/client -> a/db on 5432/TCP",
        "    before: denied: ingress of a/db: isolated by a/deny and no rule admits it",
        "    after:  allowed: egress of b/client: no policy isolates b/client for egress; ingress of a/db: "
        "admitted by NetworkPolicy a/db spec.ingress[0]",
    ]
    assert out.splitlines()[:3] == [
        "netpol diff: 6 cells newly allowed, 0 newly denied, in 3 groups (4 pods on both sides, 1 probe)", "",
        "a/[db] => a/[web] : TCP 5432 newly allowed"]
    assert out.splitlines()[-3:] == ["objects changed (2):", "  NetworkPolicy a/db added",
                                     "  NetworkPolicy a/deny removed"]
    assert "objects changed (2):" in out


def test_identical_text_says_so(sides):
    code, out, _ = run_cli("diff", "-f", sides["open"], "--to", sides["open"])
    assert (code, out) == (0, "no change: the 4 pods on both sides have the same verdicts on all 4 probes\n")


def test_json_schema(sides):
    code, out, _ = run_cli("diff", "-f", sides["open"], "--to", sides["db-5432"], "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["summary", "changes", "objects"]
    assert doc["summary"] == {"newly_allowed": 0, "newly_denied": 9, "groups": 1, "pods_compared": 4,
                              "probes": 4, "objects_changed": 1, "explained_groups": 1, "pods_added": [],
                              "pods_removed": []}
    change = doc["changes"][0]
    assert list(change) == ["change", "from", "to", "sources", "destinations", "ports", "cells", "causes",
                            "example", "before", "after"]
    assert change["change"] == "denied" and change["to"] == "a/[db]" and change["destinations"] == ["a/db"]
    assert change["from"] == "a/[web], b/*" and change["sources"] == ["a/web", "b/client", "b/web"]
    assert change["ports"] == [{"port": 80, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}]
    assert change["causes"] == [{"kind": "NetworkPolicy", "object": "a/db", "change": "added", "fields": [],
                                 "edits": []}]
    assert set(change["example"]) == {"from", "to", "port", "protocol"}
    assert change["before"]["verdict"] == "allowed" and change["after"]["verdict"] == "denied"
    assert set(change["before"]) == {"verdict", "reason"}
    assert sum(c["cells"] for c in doc["changes"]) == 9
    assert doc["objects"] == change["causes"]


def test_markdown_has_a_table_and_the_reasons(sides):
    code, out, _ = run_cli("diff", "-f", sides["open"], "--to", sides["closed"], "-o", "md", "--port", "80")
    assert code == 0
    assert out.startswith("### netpol diff\n")
    assert "| change | from | to | ports | cells | caused by |" in out
    assert "| newly denied | `b/*` | `a/*` | TCP 80 | 4 | NetworkPolicy `a/deny` added |" in out
    assert "<details><summary>Why" in out and "</details>" in out
    assert "before: **allowed**" in out and "after: **denied**" in out
    _, same, _ = run_cli("diff", "-f", sides["open"], "--to", sides["open"], "-o", "md")
    assert "**No change**" in same and "|" not in same


def test_both_sides_from_stdin_is_a_usage_error():
    code, _, err = run_cli("diff", "-f", "-", "--to", "-")
    assert code == 2 and "stdin" in err


def test_an_invalid_new_side_names_its_file(sides, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy_yaml("a", "x", "{podSelector: {}, policyTypes: [Sideways]}"))
    code, _, err = run_cli("diff", "-f", sides["open"], "--to", str(bad))
    assert code == 1 and "bad.yaml" in err and "spec.policyTypes[0]" in err
