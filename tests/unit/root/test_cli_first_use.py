"""First use, as a new user meets it: whatever the input holds that no answer shows (skipped kinds,
other tools' files, pods outside the matrix) is said on stderr with counts and the reason, and
stdout keeps its contract."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, pod_yaml, run_cli

WORKLOADS = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: api}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: worker}
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny}
    spec: {podSelector: {}}
    """)
SKIPPED = ("netpol: note: skipped 3 Deployment, 1 StatefulSet: netpol needs Pods with status.podIP and "
           "does not make them from workload templates; try `kubectl get pods -A -o yaml`")
FOREIGN = ("not a Kubernetes object (no kind/apiVersion); pass the manifest files themselves to -f, "
           "or add --skip-unknown to skip such files")
HOST_NETWORK_NOTE = ("netpol: note: 2 hostNetwork pods are not in the matrix: hostNetwork pods share their "
                     "node's address; traffic between a pod and its own node is allowed unless a "
                     "ClusterNetworkPolicy denies it")


def write(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder)


def test_reach_on_workloads_only_says_which_kinds_were_skipped(tmp_path):
    code, out, err = run_cli("reach", "-f", write(tmp_path, "app.yaml", WORKLOADS), "-o", "json")
    assert code == 0 and json.loads(out) == {"probes": [{"port": 80, "protocol": "TCP", "matrix": {}}]}
    assert err.splitlines() == ["netpol: no pods with an IP address in the input", SKIPPED]


def test_validate_lists_skipped_kinds_and_explain_names_them_for_an_unknown_pod(tmp_path):
    folder = write(tmp_path, "app.yaml", WORKLOADS)
    code, out, err = run_cli("validate", "-f", folder)
    assert code == 0 and out == "ok: 1 namespaces, 0 pods, 0 nodes, 1 network policies, 0 cluster network policies\n"
    assert err.splitlines() == [SKIPPED]
    code, out, err = run_cli("explain", "-f", folder, "--from", "default/web", "--to", "10.0.0.1", "--port", "80")
    assert code == 2 and out == ""
    assert err.splitlines() == [SKIPPED, "netpol: default/web: no such pod in the input"]


def test_with_pods_skipped_kinds_are_listed_by_validate_only(tmp_path):
    folder = write(tmp_path, "app.yaml", WORKLOADS + pod_yaml("default", "web-1", "10.0.0.1"))
    assert run_cli("validate", "-f", folder)[2].splitlines() == [
        "netpol: note: skipped 3 Deployment, 1 StatefulSet (kinds netpol does not use)"]
    assert run_cli("reach", "-f", folder)[2] == ""
    assert run_cli("reach", "-f", folder, "--family", "6")[2].splitlines() == [  # pods, none of IPv6
        "netpol: no pods with an IPv6 address in the input",
        "netpol: note: 1 pod without an IPv6 address is not in the matrix (--family 6)"]


def test_pods_outside_the_matrix_are_counted_on_stderr_with_the_reason(example_path):
    code, out, err = run_cli("reach", "-f", example_path, "--port", "80", "-o", "json")
    assert code == 0 and len(json.loads(out)["probes"][0]["matrix"]) == 11
    assert err.splitlines() == [HOST_NETWORK_NOTE]
    code, _, err = run_cli("reach", "-f", example_path, "--port", "80", "--family", "6")
    assert err.splitlines() == ["netpol: no pods with an IPv6 address in the input", HOST_NETWORK_NOTE,
                                "netpol: note: 11 pods without an IPv6 address are not in the matrix (--family 6)"]
    assert run_cli("validate", "-f", example_path)[2].splitlines() == [HOST_NETWORK_NOTE]


def test_finished_and_ipless_pods_are_counted_on_stderr(tmp_path):
    finished = pod_yaml("a", "job-1", "10.0.0.2").replace("phase: Running", "phase: Succeeded")
    failed = pod_yaml("a", "job-2", "10.0.0.3").replace("phase: Running", "phase: Failed")
    folder = write(tmp_path, "pods.yaml", pod_yaml("a", "web", "10.0.0.1") + finished + failed
                   + pod_yaml("a", "pending", ""))
    code, out, err = run_cli("reach", "-f", folder, "-o", "json")
    assert code == 0 and list(json.loads(out)["probes"][0]["matrix"]) == ["a/web"]
    assert err.splitlines() == [
        "netpol: note: 2 finished pods (phase Succeeded or Failed) are not in the matrix: finished pods "
        "no longer run, so no policy applies to them",
        "netpol: note: 1 pod without an IP address is not in the matrix: pods without status.podIP have "
        "no address (not running yet, or manifests rather than running pods: `kubectl get pods -A -o yaml` "
        "gives them with their addresses)",
    ]


@pytest.mark.parametrize(("name", "text"), [
    ("expected.json", '[1, 2, "x"]'),  # a JSON list of non-objects
    ("expected.json", '{"cells": {"a/web": true}}'),  # a JSON object without kind/apiVersion
    ("values.yaml", "replicas: 3\nimage: nginx\n"),  # a YAML document without kind
    ("expected.json", '[{"a": 1}, {"b": 2}]'),  # a JSON list of mappings without kind
])
def test_a_file_that_is_no_kubernetes_object_is_named_with_the_fix(tmp_path, name, text):
    write(tmp_path, "pod.yaml", pod_yaml("a", "web", "10.0.0.1"))
    folder = write(tmp_path, name, text)
    for command in ("reach", "validate", "compile"):
        code, out, err = run_cli(command, "-f", folder, *(("--all-nodes", "--out-dir", str(tmp_path / "out"))
                                                          if command == "compile" else ()))
        assert code == 1 and out == ""
        assert err.splitlines() == ["netpol: invalid input (1 problem):", f"  {tmp_path / name}: {FOREIGN}"]


def test_skip_unknown_skips_such_files_and_names_them(tmp_path):
    write(tmp_path, "pod.yaml", pod_yaml("a", "web", "10.0.0.1") + pod_yaml("a", "db", "10.0.0.2"))
    folder = write(tmp_path, "expected.json", '{"cells": {"a/web": true}}')
    note = f"netpol: note: skipped 1 file that is not a Kubernetes object (--skip-unknown): {tmp_path}/expected.json"
    code, out, err = run_cli("reach", "-f", folder, "--skip-unknown", "-o", "json")
    assert code == 0 and list(json.loads(out)["probes"][0]["matrix"]) == ["a/db", "a/web"]
    assert err.splitlines() == [note]
    assert run_cli("validate", "-f", folder, "--skip-unknown")[2].splitlines() == [note]
    code, out, err = run_cli("explain", "-f", folder, "--skip-unknown", "--from", "a/web", "--to", "a/db",
                             "--port", "80")
    assert code == 0 and "ALLOWED" in out and err.splitlines() == [note]
    assert run_cli("reach", "-f", str(tmp_path / "expected.json"), "--skip-unknown")[0] == 0  # named, too
    code, out, err = run_cli("compile", "-f", folder, "--node", "node-a", "--skip-unknown")
    assert code == 0 and out.startswith("#") and "table inet netpol" in out and err.splitlines() == [note]
    for jobs in ("1", "2"):  # the serial route and the sharded one (which parses on its own)
        code, _, err = run_cli("compile", "-f", folder, "--all-nodes", "--out-dir", str(tmp_path / jobs),
                               "--jobs", jobs, "--skip-unknown")
        assert code == 0 and err.splitlines()[0] == note
        assert [p.name for p in (tmp_path / jobs).iterdir()] == ["node-a.nft"]


def test_skip_unknown_never_skips_a_broken_object(tmp_path):
    folder = write(tmp_path, "mixed.yaml", pod_yaml("a", "web", "10.0.0.1") + "---\nreplicas: 3\n")
    code, _, err = run_cli("reach", "-f", folder, "--skip-unknown")
    assert code == 1 and "mixed.yaml (document 2): kind: Required value" in err
    write(tmp_path, "mixed.yaml", "- apiVersion: v1\n  kind: Pod\n  metadata: {name: web}\n")
    code, _, err = run_cli("reach", "-f", folder, "--skip-unknown")
    assert code == 1 and "mixed.yaml: expected a Kubernetes object (a mapping), got list" in err


def test_reach_json_gives_icmp_probes_a_null_port_as_the_readme_says(example_path):
    code, out, _ = run_cli("reach", "-f", example_path, "--port", "ICMP", "--port", "ICMPv6", "-o", "json")
    assert code == 0
    probes = json.loads(out)["probes"]
    assert [(p["port"], p["protocol"]) for p in probes] == [(None, "ICMP"), (None, "ICMPv6")]
    assert all(list(p) == ["port", "protocol", "matrix"] for p in probes)
    assert '"port": null' in out
    contract = (REPO / "README.md").read_text()
    assert 'protocol without ports (`--port ICMP`, `ICMPv6`) has `"port": null`' in contract


def test_reach_table_name_column_is_as_wide_as_the_longest_name(tmp_path):
    folder = write(tmp_path, "pods.yaml", pod_yaml("a", "web", "10.0.0.1") + pod_yaml("a", "database-0", "10.0.0.2")
                   + pod_yaml("kube-system", "proxy", "10.0.0.3", extra=", hostNetwork: true"))
    _, out, _ = run_cli("reach", "-f", folder, "--port", "80", "-o", "table")
    assert out == "\n".join([
        "80/TCP   (rows: source, columns: destination; . allowed, X denied)",
        "                 1 2",
        "1  a/database-0  . .",  # the hostNetwork pod's longer name is not in the matrix: no room for it
        "2  a/web         . .",
        "",
    ])
