"""A live cluster as the batch commands' input (`--kubeconfig FILE [--context NAME]`, `--context
NAME`, `--in-cluster`), against the in-process API server.

Property: every command answers from a live cluster exactly what it answers from the same objects
as files — byte for byte, stdout and stderr — (`reach`, `explain`, `validate`, `compile` by both
of its routes, `diff`'s OLD side); exactly one kind of input is taken (else a usage error, exit 2);
a cluster that cannot be read is one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from netpol.cli import main
from netpol.deploy.rbac import audit_role_rules
from netpol.sources.in_cluster import DIR_VARIABLE
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.pki import make_serving_certificate
from tests.conftest import EXAMPLE, example_objects, namespace_object, pod_object, policy_object, run_cli
from tests.unit.sources.test_snapshot import two_contexts

GUARDS = EXAMPLE.parent / "guards.yaml"
FILES = ("-f", str(EXAMPLE), "-f", str(GUARDS))


def guard_objects() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(GUARDS.read_text()) if doc]


@pytest.fixture
def api():
    with FakeApiServer() as server:
        server.apply_all(example_objects() + guard_objects())
        yield server


@pytest.fixture
def kubeconfig(api, tmp_path) -> str:
    return str(api.kubeconfig(tmp_path / "kubeconfig"))


@pytest.mark.parametrize("command", [
    ("reach",), ("reach", "-o", "json", "--port", "8443/TCP"), ("reach", "-o", "groups"),
    ("explain", "--from", "monitoring/prometheus-0", "--to", "frontend/web-1", "--port", "8080/TCP"),
    ("validate",),
])
def test_a_command_answers_from_the_cluster_what_it_answers_from_the_same_files(kubeconfig, command):
    from_files = run_cli(*command, *FILES)
    from_cluster = run_cli(*command, "--kubeconfig", kubeconfig)
    assert from_files[0] == 0
    assert from_cluster == from_files


@pytest.mark.parametrize("route", [(), ("--jobs", "1"), ("--jobs", "2")])
def test_compile_all_nodes_from_the_cluster_writes_the_same_files_by_either_route(kubeconfig, tmp_path, route):
    assert run_cli("compile", *FILES, "--all-nodes", "--out-dir", str(tmp_path / "files"), *route)[0] == 0
    code, _, err = run_cli("compile", "--kubeconfig", kubeconfig, "--all-nodes", "--out-dir",
                           str(tmp_path / "cluster"), *route)
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "files").iterdir())
    assert written and sorted(p.name for p in (tmp_path / "cluster").iterdir()) == written
    for name in written:
        assert (tmp_path / "cluster" / name).read_text() == (tmp_path / "files" / name).read_text()


@pytest.mark.parametrize("form", [("--node", "node-a"), ("--node", "node-b", "--format", "json")])
def test_compile_one_node_from_the_cluster_prints_the_same_ruleset(kubeconfig, form):
    from_cluster = run_cli("compile", "--kubeconfig", kubeconfig, *form)
    assert from_cluster[0] == 0 and from_cluster == run_cli("compile", *FILES, *form)


def test_compile_an_iptables_bundle_from_the_cluster(kubeconfig, tmp_path):
    for name, source in (("files", FILES), ("cluster", ("--kubeconfig", kubeconfig))):
        code, _, err = run_cli("compile", *source, "--node", "node-a", "--backend", "iptables",
                               "-o", str(tmp_path / name))
        assert code == 0, err
    for path in (tmp_path / "files").iterdir():
        assert (tmp_path / "cluster" / path.name).read_text() == path.read_text()


def test_diff_from_the_live_cluster_to_proposed_manifests(kubeconfig, tmp_path):
    proposed = tmp_path / "proposed.yaml"
    opened = policy_object("allow-all-in", "backend", ingress=[{}])
    proposed.write_text(yaml.safe_dump(opened))
    from_files = run_cli("diff", *FILES, "--to", str(EXAMPLE), str(GUARDS), str(proposed), "-o", "md")
    from_cluster = run_cli("diff", "--kubeconfig", kubeconfig, "--to", str(EXAMPLE), str(GUARDS), str(proposed),
                           "-o", "md")
    assert from_files[1].strip()  # something did change
    assert from_cluster == from_files


def test_lint_reads_the_cluster(kubeconfig):
    from_files, from_cluster = run_cli("lint", *FILES, "-o", "json"), run_cli("lint", "--kubeconfig", kubeconfig,
                                                                               "-o", "json")
    assert from_cluster[0] == from_files[0]
    assert len(json.loads(from_cluster[1])) == len(json.loads(from_files[1]))


def test_a_cluster_bigger_than_a_page_is_read_in_pages(api, kubeconfig):
    api.apply_all([pod_object(f"p{i}", f"10.8.{i // 250}.{i % 250}", "bulk") for i in range(1100)])
    code, out, _ = run_cli("validate", "--kubeconfig", kubeconfig)
    assert code == 0 and "1113 pods" in out
    pods = [parse_qs(urlsplit(r.removeprefix("GET ")).query) for r in api.requests
            if urlsplit(r.removeprefix("GET ")).path == "/api/v1/pods"]
    assert [q["limit"] for q in pods] == [["500"]] * 3 and ["continue" in q for q in pods] == [False, True, True]


def test_kinds_not_served_are_a_note_on_stderr(api, kubeconfig):
    api.serve_versions("ClusterNetworkPolicy", [])
    code, out, err = run_cli("validate", "--kubeconfig", kubeconfig)
    assert code == 0 and "0 cluster network policies" in out
    assert ("netpol: note: cluster fake: read as none, not served (their CRDs are not installed): "
            "ClusterNetworkPolicy (policy.networking.k8s.io v1beta1, v1alpha2)\n") in err


def test_an_invalid_object_is_named_by_its_cluster_and_resource(api, kubeconfig):
    api.apply(pod_object("twin", "10.244.0.10", "frontend"))  # web-1's address
    code, _, err = run_cli("reach", "--kubeconfig", kubeconfig)
    assert code == 1
    assert err == ("netpol: invalid input (1 problem):\n  cluster fake: pods: Pod frontend/web-1: "
                   "status.podIPs: 10.244.0.10 is also the address of Pod frontend/twin\n")


def test_the_context_picks_the_cluster(api, tmp_path):
    with FakeApiServer() as other:
        small = [namespace_object("shop"), pod_object("a", "10.0.0.1"), pod_object("b", "10.0.0.2"),
                 policy_object("deny")]
        other.apply_all(small)
        kubeconfig = two_contexts(api, other, tmp_path / "kubeconfig")
        (tmp_path / "small.yaml").write_text(yaml.safe_dump_all(small))
        second = run_cli("reach", "--kubeconfig", kubeconfig, "--context", "second", "-o", "json")
        first = run_cli("reach", "--kubeconfig", kubeconfig, "-o", "json")
    assert second == run_cli("reach", "-f", str(tmp_path / "small.yaml"), "-o", "json")
    assert first == run_cli("reach", *FILES, "-o", "json")


def test_context_alone_reads_the_kubeconfig_variable(kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    assert run_cli("reach", "--context", "fake", "-o", "json") == run_cli("reach", *FILES, "-o", "json")


def test_in_cluster_reads_with_the_pods_service_account(tmp_path, tmp_path_factory, monkeypatch):
    certs = make_serving_certificate(tmp_path_factory.mktemp("pki"))
    with FakeApiServer(tls=certs, rbac=audit_role_rules()) as api:
        api.apply_all(example_objects() + guard_objects())
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", api.host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        monkeypatch.setenv(DIR_VARIABLE, str(api.service_account(tmp_path / "serviceaccount")))
        from_cluster = run_cli("reach", "--in-cluster", "-o", "json")
        assert api.forbidden_requests() == []
    assert from_cluster[0] == 0 and from_cluster == run_cli("reach", *FILES, "-o", "json")


@pytest.mark.parametrize(("argv", "message"), [
    (("reach",), "netpol: no input: give -f PATH... (manifests), or read a live cluster with --kubeconfig "
                 "FILE [--context NAME], --context NAME or --in-cluster\n"),
    (("reach", "-f", str(EXAMPLE), "--context", "fake"),
     "netpol: --context picks a kubeconfig context: it goes with --kubeconfig (or alone), not with -f\n"),
    (("reach", "--in-cluster", "--context", "fake"),
     "netpol: --context picks a kubeconfig context: it goes with --kubeconfig (or alone), not with --in-cluster\n"),
])
def test_exactly_one_kind_of_input(argv, message):
    assert run_cli(*argv) == (2, "", message)


def test_files_and_a_cluster_together_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["reach", "-f", str(EXAMPLE), "--kubeconfig", "k"])
    assert exited.value.code == 2
    assert "argument --kubeconfig: not allowed with argument -f/--filename" in capsys.readouterr().err


def test_a_server_that_does_not_answer_is_one_line_and_exit_1(api, kubeconfig):
    url = api.url
    api.stop()
    assert run_cli("reach", "--kubeconfig", kubeconfig) == (
        1, "", f"netpol: reach: cluster fake: cannot reach the API server at {url}: connection refused\n")


def test_a_missing_permission_is_one_line_naming_the_resource(tmp_path):
    rules = [rule for rule in audit_role_rules() if "" not in rule["apiGroups"]]
    with FakeApiServer(rbac=rules) as api:
        code, out, err = run_cli("explain", "--kubeconfig", str(api.kubeconfig(tmp_path / "k")),
                                 "--from", "a/b", "--to", "c/d", "--port", "80")
    assert (code, out) == (1, "")
    assert err.startswith('netpol: explain: cluster fake: cannot list namespaces: 403 Forbidden: ')
    assert err.endswith('(the role needs list on resource "namespaces" in API group "")\n')
    assert err.count("\n") == 1


def test_an_unknown_context_is_one_line_and_exit_1(kubeconfig):
    assert run_cli("compile", "--kubeconfig", kubeconfig, "--context", "prod", "--node", "node-a") == (
        1, "", f"netpol: compile: kubeconfig {kubeconfig}: no context 'prod' (it has fake)\n")

