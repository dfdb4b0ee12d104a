"""Expectations hold exactly when every cell they cover has their verdict in the reference
semantics (a pod and itself left out), for every selector and port form; one that covers no cell
is violated, never vacuously true; a bad file is refused with the file, the expectation and the
field named; `netpol check` and `netpol reach --expect` exit 0 when all hold and 4 otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.audit import expect as expect_module
from netpol.audit.expect import Outcome, check_expectations, parse_expectations
from netpol.errors import InputError
from netpol.model import ClusterState
from netpol.semantics.probes import default_probes
from netpol.semantics.reach import participants
from netpol.semantics.reference import pods_connect
from netpol.testing.strategies import NAMESPACE_NAMES, clusters, label_selector_manifests
from tests.conftest import EXAMPLE, WORLD_OBJECTS, WORLD_PODS, cluster, pod_yaml, policy_yaml, run_cli

# a/db admits only b/client, on 5432; a/web2 is a/web's twin (one class of two pods).
DB_FROM_CLIENT = policy_yaml("a", "db", "{podSelector: {matchLabels: {app: db}}, ingress: [{from: "
                             "[{namespaceSelector: {matchLabels: {team: y}}, podSelector: {matchLabels: "
                             "{app: client}}}], ports: [{port: 5432}]}]}")
DENY_A = policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress]}")
TWIN = pod_yaml("a", "web2", "10.0.0.3", "{app: web}", "[{name: http, containerPort: 80}]")
HOST = pod_yaml("a", "host", "192.168.0.1", "{app: host}", extra=", hostNetwork: true")
MANIFESTS = WORLD_OBJECTS + WORLD_PODS + TWIN + HOST + DB_FROM_CLIENT


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return cluster(MANIFESTS)


def check_one(state: ClusterState, expectation: dict[str, Any]) -> Outcome:
    [outcome] = check_expectations(state, parse_expectations(json.dumps([expectation]), "expect.json"))
    return outcome


CLIENT = {"namespaceSelector": {"matchLabels": {"team": "y"}}, "podSelector": {"matchLabels": {"app": "client"}}}
DB = {"namespace": "a", "podSelector": {"matchLabels": {"app": "db"}}}
WEB_OR_CLIENT = {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "client"]}]}}


@pytest.mark.parametrize(("source", "destination", "port", "allowed", "holds"), [
    ("b/client", "a/db", "5432/TCP", True, True),  # NS/POD
    ("b/web", "a/db", "5432/TCP", True, False),
    ("b/*", "a/db", "5432/TCP", True, False),  # NS/*: b/web is denied
    ("b/*", "a/db", "80/TCP", False, True),
    ("*/web", "a/db", "5432/TCP", False, True),  # */POD: a/web and b/web
    ("*/*", "a/db", "5432/TCP", False, False),  # */*: b/client is allowed
    ("a/*", "b/*", None, True, True),  # b is not isolated, a not for egress
    ("*/*", "*/*", None, True, False),
    (CLIENT, DB, "5432/TCP", True, True),  # namespaceSelector + podSelector; namespace + podSelector
    ({"namespace": "a"}, DB, "5432/TCP", False, True),
    ({"namespaceSelector": {"matchLabels": {"team": "y"}}}, DB, "5432/TCP", False, False),
    (WEB_OR_CLIENT, "a/db", "5432/TCP", False, False),  # matchExpressions, no namespace: everywhere
    ({}, "a/db", "5432/TCP", True, False),  # {}: every pod
])
def test_each_selector_form_holds_or_is_violated(state, source, destination, port, allowed, holds):
    expectation = {"from": source, "to": destination, "allowed": allowed}
    if port is not None:
        expectation["port"] = port
    outcome = check_one(state, expectation)
    assert outcome.holds is holds
    assert outcome.problem is None
    assert (outcome.violations == 0) is holds
    assert brute_force(state, outcome) == (outcome.cells, outcome.violations)


def brute_force(state: ClusterState, outcome: Outcome) -> tuple[int, int]:
    """(cells, violations) cell by cell with the reference evaluator."""
    e = outcome.expectation
    pods = participants(state)
    cells = [(s, d, p) for p in outcome.probes for s in pods for d in pods
             if s != d and e.source.matches(state, s) and e.destination.matches(state, d)]
    wrong = [c for c in cells if pods_connect(state, c[0], c[1], c[2].port, c[2].protocol) != e.allowed]
    return len(cells), len(wrong)


@pytest.mark.parametrize(("port", "allowed", "holds", "probes"), [
    ("5432/TCP", True, True, ["5432/TCP"]),
    (5432, True, True, ["5432/TCP"]),  # a number: TCP
    ("5432/tcp", True, True, ["5432/TCP"]),
    (["80/TCP", 5432], False, False, ["80/TCP", "5432/TCP"]),  # 5432 is allowed
    (["80/TCP", "53/UDP"], False, True, ["80/TCP", "53/UDP"]),
    ("ICMP", False, True, ["ICMP"]),  # a rule with ports never admits ICMP
    (None, False, False, None),  # absent: every default probe, 5432 among them
])
def test_port_forms(state, port, allowed, holds, probes):
    expectation = {"from": "b/client", "to": "a/db", "allowed": allowed}
    if port is not None:
        expectation["port"] = port
    outcome = check_one(state, expectation)
    assert outcome.holds is holds
    expected = probes if probes is not None else [p.span for p in default_probes(state)]
    assert [p.span for p in outcome.probes] == expected
    assert outcome.cells == len(expected)
    assert brute_force(state, outcome) == (outcome.cells, outcome.violations)


def test_a_pod_and_itself_are_not_a_cell_even_in_a_class_of_two():
    state = cluster(MANIFESTS + DENY_A)  # a/web and a/web2: one class, denied to each other
    denied = check_one(state, {"from": "a/*", "to": "a/*", "allowed": False})
    assert denied.holds and denied.cells == 3 * 3 * len(denied.probes) - 3 * len(denied.probes)
    allowed = check_one(state, {"from": "a/*", "to": "a/*", "allowed": True})
    assert not allowed.holds and allowed.violations == allowed.cells == denied.cells
    twins = check_one(state, {"from": "a/web", "to": "a/web2", "port": 80, "allowed": False})
    assert twins.holds and twins.cells == 1


def test_a_violation_shows_counterexamples_and_why(state):
    outcome = check_one(state, {"name": "db is open to all", "from": "*/*", "to": "a/db", "port": "5432/TCP",
                                "allowed": True})
    assert (outcome.cells, outcome.violations) == (4, 3)  # a/web, a/web2, b/web are refused
    assert {(c.source, c.destination, c.allowed) for c in outcome.counterexamples} == {
        ("a/web", "a/db", False), ("a/web2", "a/db", False), ("b/web", "a/db", False)}
    first = outcome.counterexamples[0]
    assert outcome.explanation.startswith(f"{first.source} (")
    assert "DENIED" in outcome.explanation and "NetworkPolicy a/db" in outcome.explanation


@pytest.mark.parametrize(("source", "destination", "problem"), [
    ("a/nope", "a/db", "`from` a/nope matches no pod"),
    ("a/db", "zz/*", "`to` zz/* matches no pod"),
    ({"namespaceSelector": {"matchLabels": {"team": "nobody"}}}, "a/db", "`from` every pod in namespaces team=nobody matches no pod"),
    ("a/host", "a/db", "a/host is a hostNetwork pod, not in the map"),
    ("a/db", "a/db", "leave no pair of two different pods"),
])
def test_an_expectation_that_covers_no_cell_is_violated(state, source, destination, problem):
    for allowed in (True, False):
        outcome = check_one(state, {"from": source, "to": destination, "allowed": allowed})
        assert not outcome.holds and outcome.cells == 0
        assert outcome.problem is not None and problem in outcome.problem


BAD = [
    ("- {from: Web/*, to: a/db, allowed: true}", "expect.yaml: expectations[0].from: 'Web': a lowercase RFC 1123 label"),
    ("- {from: a/Web_1, to: a/db, allowed: true}", "expect.yaml: expectations[0].from: 'Web_1': a lowercase RFC 1123 subdomain"),
    ("- {from: a/b/c, to: a/db, allowed: true}", "expect.yaml: expectations[0].from: 'a/b/c': expected NS/POD"),
    ("- {from: a, to: a/db, allowed: true}", "expect.yaml: expectations[0].from: 'a': expected NS/POD"),
    ("- {from: [a/web], to: a/db, allowed: true}", "expect.yaml: expectations[0].from: must be NS/POD, NS/*, */* or a mapping"),
    ("- {from: a/web, allowed: true}", "expect.yaml: expectations[0].to: Required value"),
    ("- {from: a/web, to: a/db}", "expect.yaml: expectations[0].allowed: Required value"),
    ("- {from: a/web, to: a/db, allowed: sometimes}", "expect.yaml: expectations[0].allowed: must be a boolean, got string"),
    ("- {from: a/web, to: a/db, alowed: true}", "expect.yaml: expectations[0].alowed: unknown field"),
    ("- {from: {podSelector: {matchLabels: {app: 'a b'}}}, to: a/db, allowed: true}",
     "expect.yaml: expectations[0].from.podSelector.matchLabels.app: 'a b': a valid label"),
    ("- {from: a/web, to: {namespaceSelector: {matchExpressions: [{key: x, operator: Has}]}}, allowed: true}",
     "expect.yaml: expectations[0].to.namespaceSelector.matchExpressions[0].operator: 'Has'"),
    ("- {from: {namespace: a, namespaceSelector: {}}, to: a/db, allowed: true}",
     "expect.yaml: expectations[0].from.namespaceSelector: give `namespace` or `namespaceSelector`, not both"),
    ("- {from: {namespace: A}, to: a/db, allowed: true}", "expect.yaml: expectations[0].from.namespace: 'A'"),
    ("- {from: {podselector: {}}, to: a/db, allowed: true}", "expect.yaml: expectations[0].from.podselector: unknown field"),
    ("- {from: a/web, to: a/db, port: 0, allowed: true}", "expect.yaml: expectations[0].port: '0': port must be between 1 and 65535"),
    ("- {from: a/web, to: a/db, port: [80, 80/XTP], allowed: true}", "expect.yaml: expectations[0].port[1]: '80/XTP': protocol must be"),
    ("- {from: a/web, to: a/db, port: [80, true], allowed: true}", "expect.yaml: expectations[0].port[1]: must be PORT/PROTOCOL"),
    ("- {from: a/web, to: a/db, port: [], allowed: true}", "expect.yaml: expectations[0].port: names no port"),
    ("- {from: a/web, to: a/db, port: 80/TCP, allowed: true}\n- {from: a/web, to: a/db, name: [x], allowed: true}",
     "expect.yaml: expectations[1].name: must be a string"),
    ("- just text", "expect.yaml: expectations[0]: must be a mapping"),
    ("{from: a/web, to: a/db, allowed: true}", "expect.yaml: from: unknown field; expected one of expectations"),
    ("expectations: []", "expect.yaml: expectations: holds no expectation"),
    ("expectations: {from: a/web}", "expect.yaml: expectations: must be a list"),
    ("hello", "expect.yaml: must be a list of expectations"),
    ("", "expect.yaml: expected one document holding a list of expectations, found nothing"),
    ("- {from: a/web}\n---\n- {from: a/db}", "expect.yaml: expected one document holding a list of expectations, found 2 documents"),
    ("- {from: a/web, to: [}", "expect.yaml: invalid YAML: line 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_file_names_the_file_the_expectation_and_the_field(text, message):
    with pytest.raises(InputError) as caught:
        parse_expectations(text, "expect.yaml")
    assert any(str(p).startswith(message) for p in caught.value.problems), caught.value.problems


def test_every_problem_of_the_file_is_reported():
    text = "- {from: Web/*, to: a/db, allowed: true}\n- {from: a/web, to: a/db, allowed: 3}\n"
    with pytest.raises(InputError) as caught:
        parse_expectations(text, "expect.yaml")
    assert [p.path for p in caught.value.problems] == ["expectations[0].from", "expectations[1].allowed"]


def test_json_and_yaml_1_1_read_as_manifests_are():
    [e] = parse_expectations('[{"from": "a/*", "to": "b/*", "allowed": true}]', "e.json")
    assert (e.source.namespace, e.destination.namespace, e.allowed) == ("a", "b", True)
    [e] = parse_expectations('{"expectations": [{"from": "a/*", "to": "b/*", "allowed": false}]}', "e.json")
    assert e.allowed is False
    [e] = parse_expectations("- {from: a/*, to: b/*, allowed: yes, port: 53/UDP}", "e.yaml")  # YAML 1.1
    assert e.allowed is True and [p.span for p in e.probes or ()] == ["53/UDP"]


# -- the whole chain against the reference, on generated clusters -------------------------------

def selector_forms() -> st.SearchStrategy[Any]:
    names = st.sampled_from(NAMESPACE_NAMES)
    pods = st.sampled_from(["pod-0", "pod-1", "pod-2"])
    return st.one_of(  # wide forms first: most generated pods and selectors would match nothing
        st.sampled_from(["*/*", *(f"{ns}/*" for ns in NAMESPACE_NAMES)]),
        st.tuples(st.one_of(names, st.just("*")), pods).map("/".join),
        st.fixed_dictionaries({}, optional={"namespace": names, "podSelector": label_selector_manifests()}),
        st.fixed_dictionaries({}, optional={"namespaceSelector": label_selector_manifests(),
                                            "podSelector": label_selector_manifests()}),
    )


@settings(max_examples=150)
@given(clusters(max_pods=6, max_policies=3), st.lists(
    st.fixed_dictionaries({"from": selector_forms(), "to": selector_forms(), "allowed": st.booleans()},
                          optional={"port": st.sampled_from(["80/TCP", 53, "53/UDP", ["443", "9090/TCP"]])}),
    min_size=1, max_size=3))
def test_counts_agree_with_the_reference_on_generated_clusters(state, expectations):
    outcomes = check_expectations(state, parse_expectations(json.dumps(expectations), "e.json"))
    for outcome in outcomes:
        cells, violations = brute_force(state, outcome)
        assert (outcome.cells, outcome.violations) == (cells, violations)
        assert outcome.holds is (cells > 0 and violations == 0)
        assert (outcome.problem is None) is (cells > 0)
        assert len(outcome.counterexamples) == min(violations, 3)


# -- the command line ---------------------------------------------------------------------------

HOLDING = "- {from: b/client, to: a/db, port: 5432/TCP, allowed: true}\n- {from: a/*, to: a/db, allowed: false}\n"
VIOLATED = HOLDING + "- {name: web reaches db, from: a/web, to: a/db, port: 5432, allowed: true}\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {"cluster": tmp_path / "cluster.yaml", "holding": tmp_path / "holding.yaml",
             "violated": tmp_path / "violated.yaml", "bad": tmp_path / "bad.yaml"}
    paths["cluster"].write_text(MANIFESTS)
    paths["holding"].write_text(HOLDING)
    paths["violated"].write_text(VIOLATED)
    paths["bad"].write_text("- {from: a/web, to: a/db, allowed: maybe}\n")
    return {name: str(path) for name, path in paths.items()}


def test_check_exits_0_when_all_hold_and_4_when_one_is_violated(files):
    code, out, _ = run_cli("check", "-f", files["cluster"], "--expect", files["holding"])
    assert code == 0
    assert out.splitlines()[-1] == "2 expectations: 2 hold, 0 violated"
    code, out, _ = run_cli("check", "-f", files["cluster"], "--expect", files["violated"])
    assert code == 4
    assert "FAIL expectations[2] 'web reaches db': a/web -> a/db on 5432/TCP: allowed" in out
    assert "a/web -> a/db on 5432/TCP: denied" in out and "why (netpol explain):" in out
    assert out.splitlines()[-1] == "3 expectations: 2 hold, 1 violated"


def test_check_json(files):
    code, out, _ = run_cli("check", "-f", files["cluster"], "--expect", files["violated"], "-o", "json")
    assert code == 4
    doc = json.loads(out)
    assert (doc["held"], doc["violated"]) == (2, 1)
    failed = doc["expectations"][2]
    assert failed["holds"] is False and failed["name"] == "web reaches db" and failed["ports"] == ["5432/TCP"]
    assert failed["counterexamples"] == [{"source": "a/web", "destination": "a/db", "port": 5432,
                                          "protocol": "TCP", "allowed": False}]
    assert "DENIED" in failed["explanation"]


def test_a_bad_file_exits_1_naming_the_field(files):
    code, out, err = run_cli("check", "-f", files["cluster"], "--expect", files["bad"])
    assert code == 1 and out == ""
    assert f"{files['bad']}: expectations[0].allowed: must be a boolean, got string" in err
    code, _, err = run_cli("check", "-f", files["cluster"], "--expect", files["bad"] + ".missing")
    assert code == 1 and "cannot read" in err


def test_reach_expect_prints_the_map_as_usual_and_gates(files):
    _, plain, _ = run_cli("reach", "-f", files["cluster"], "-o", "json")
    code, out, err = run_cli("reach", "-f", files["cluster"], "-o", "json", "--expect", files["violated"])
    assert code == 4 and out == plain  # stdout stays the map's contract
    assert "FAIL expectations[2]" in err and "3 expectations: 2 hold, 1 violated" in err
    code, out, err = run_cli("reach", "-f", files["cluster"], "-o", "json", "--expect", files["holding"])
    assert code == 0 and out == plain and "2 expectations: 2 hold, 0 violated" in err


def test_the_documented_example_reads_and_checks():
    doc = expect_module.__doc__ or ""
    block = doc.split("that list:\n\n", 1)[1].split("\n\n", 1)[0]
    example = "\n".join(line.removeprefix("    ") for line in block.splitlines())
    shop = cluster((EXAMPLE / "namespaces.yaml").read_text() + (EXAMPLE / "pods.yaml").read_text())
    first, second = check_expectations(shop, parse_expectations(example, "doc"))
    assert first.expectation.name == "web reaches the database" and first.cells == 2 * 2
    assert second.problem == "`from` every pod in namespaces team=ads matches no pod"
