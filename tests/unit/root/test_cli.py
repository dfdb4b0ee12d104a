"""The CLI contracts of DESIGN §3: reach formats (json exactly), explain, exit codes."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given, settings

from netpol.cli import main
from netpol.load.manifests import load_state
from netpol.semantics.formats import iter_groups
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.semantics.reach import compute_reach
from netpol.testing import assert_matrix_agrees, clusters
from tests.conftest import run_cli


def test_reach_json_has_exactly_the_contract_shape(example_path):
    code, out, _ = run_cli("reach", "-f", example_path, "--port", "8443/TCP", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["probes"]
    [probe] = doc["probes"]
    assert list(probe) == ["port", "protocol", "matrix"]
    assert (probe["port"], probe["protocol"]) == (8443, "TCP")
    keys = list(probe["matrix"])
    assert len(keys) == 11 and "kube-system/kube-proxy-node-a" not in keys  # hostNetwork: not in it
    assert all(list(row) == keys for row in probe["matrix"].values())
    assert probe["matrix"]["frontend/web-1"]["backend/api-2"] is True
    assert probe["matrix"]["backend/api-2"]["frontend/web-1"] is False
    assert_matrix_agrees(load_state([example_path]), doc)


def test_reach_without_port_probes_every_named_port(example_path):
    _, out, _ = run_cli("reach", "-f", example_path, "-o", "json")
    doc = json.loads(out)
    ports = [(p["port"], p["protocol"]) for p in doc["probes"]]
    assert ports == [(53, "TCP"), (3000, "TCP"), (5432, "TCP"), (7000, "TCP"), (8080, "TCP"),
                     (8443, "TCP"), (9090, "TCP"), (9153, "TCP"), (9187, "TCP"), (53, "UDP")]
    # db/allow-postgres admits 7000-7010 (endPort): one probe stands for the range, and says so
    assert [p.get("end_port") for p in doc["probes"] if p["port"] == 7000] == [7010]
    assert sum("end_port" in p for p in doc["probes"]) == 1
    assert_matrix_agrees(load_state([example_path]), doc)


def test_reach_csv_table_html_and_groups(example_path):
    _, out, _ = run_cli("reach", "-f", example_path, "--port", "5432/TCP", "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 11 * 11
    assert {"port": "5432", "protocol": "TCP", "source": "backend/api-1", "destination": "db/postgres-0",
            "allowed": "true"} in rows
    _, out, _ = run_cli("reach", "-f", example_path, "--port", "5432/TCP", "-o", "table")
    assert "backend/api-1" in out and " X " in out
    _, out, _ = run_cli("reach", "-f", example_path, "-o", "html")
    assert out.startswith("<!DOCTYPE html>") and "<style>" in out
    assert "http://" not in out and "https://" not in out and "<script" not in out  # self-contained
    assert out.count("<table>") == 10
    _, out, _ = run_cli("reach", "-f", example_path, "-o", "groups")
    assert "frontend/* => backend/[api-1, api-2] : TCP 8443" in out.splitlines()
    assert "db/* => db/* : TCP 5432,7000-7010" in out.splitlines()


@settings(max_examples=100)
@given(clusters(max_pods=10, max_policies=5))
def test_groups_cover_exactly_the_allowed_cells(state):
    probes = default_probes(state)
    reach = compute_reach(state, probes)
    listed = set()
    for srcs, dsts, allowed in iter_groups(reach):
        for s in srcs:
            for d in dsts:
                for pi in range(len(probes)):
                    assert ((s, d, pi) in listed) is False
                    if pi in allowed:
                        listed.add((s, d, pi))
                    elif s != d:
                        assert not reach.allowed(pi, s, d)
    n = len(reach.pods)
    for pi in range(len(probes)):
        for s in range(n):
            for d in range(n):
                if s != d:
                    assert reach.allowed(pi, s, d) == ((s, d, pi) in listed)


def test_explain_names_the_rules(example_path):
    code, out, _ = run_cli("explain", "-f", example_path, "--from", "monitoring/prometheus-0",
                       "--to", "db/postgres-1", "--port", "9187/TCP")
    assert code == 0
    assert "ALLOWED" in out and "admitted by: NetworkPolicy db/allow-metrics spec.ingress[0]" in out
    code, out, _ = run_cli("explain", "-f", example_path, "--from", "frontend/web-1", "--to", "db/postgres-0",
                       "--port", "5432", "-o", "json")
    [verdict] = json.loads(out)
    assert verdict["allowed"] is False
    assert verdict["egress"]["isolated_by"] == ["frontend/allow-dns", "frontend/allow-web", "frontend/default-deny"]
    assert {"rule": "NetworkPolicy db/allow-postgres spec.ingress[0]", "peer_matches": False,
            "port_matches": True} in verdict["ingress"]["rules"]


def test_explain_accepts_ip_addresses(example_path):
    code, out, _ = run_cli("explain", "-f", example_path, "--from", "192.168.100.7", "--to", "10.244.1.40",
                       "--port", "3000/TCP")
    assert code == 0 and "DENIED" in out  # guest Wi-Fi is in the except
    code, out, _ = run_cli("explain", "-f", example_path, "--from", "192.168.7.7", "--to", "10.244.1.40",
                       "--port", "3000/TCP")
    assert "ALLOWED" in out and "monitoring/allow-grafana spec.ingress[0]" in out


def test_exit_codes(example_path, tmp_path):
    assert run_cli("explain", "-f", example_path, "--from", "nope/x", "--to", "db/postgres-0", "--port", "1")[0] == 2
    code, _, err = run_cli("explain", "-f", example_path, "--from", "kube-system/kube-proxy-node-a",
                       "--to", "db/postgres-0", "--port", "1")
    assert code == 2 and "hostNetwork" in err
    (tmp_path / "bad.yaml").write_text("kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\n")
    code, _, err = run_cli("reach", "-f", str(tmp_path / "bad.yaml"))
    assert code == 1 and "NetworkPolicy default/<unnamed>: metadata.name: Required value" in err
    try:
        main(["reach"])
    except SystemExit as exc:
        assert exc.code == 2


def test_probe_parsing():
    assert parse_probe("80") == Probe("TCP", 80)
    assert parse_probe("53/udp") == Probe("UDP", 53)
    assert parse_probe("ICMP") == Probe("ICMP", None)
    for bad in ("0/TCP", "80/HTTP", "abc", "80/ICMP", "65536"):
        try:
            parse_probe(bad)
        except Exception as exc:
            assert "--port" in str(exc)
        else:
            raise AssertionError(bad)


def test_explain_says_why_a_node_or_a_named_port_does_not_count(example_path):
    _, out, _ = run_cli("explain", "-f", example_path, "--from", "192.168.50.11", "--to", "db/postgres-0",
                    "--port", "5432/TCP")
    assert "192.168.50.11 is node node-b; only a pod's own node (node-a) is exempt" in out
    _, out, _ = run_cli("explain", "-f", example_path, "--from", "monitoring/prometheus-0", "--to", "backend/worker-1",
                    "--port", "9090/TCP")
    assert "named port metrics/TCP is not a container port of the destination" in out


def test_compile_writes_the_script_or_its_json_form(example_path, tmp_path):
    from netpol.backends.nftables import render, render_json
    from netpol.compile.compiler import compile_cluster

    programs = compile_cluster(load_state([example_path]))
    code, out, _ = run_cli("compile", "-f", example_path, "--node", "node-b")
    assert code == 0 and out == render(programs["node-b"])
    code, out, _ = run_cli("compile", "-f", example_path, "--node", "node-b", "--format", "json")
    assert code == 0 and json.loads(out) == render_json(programs["node-b"])
    code, _, err = run_cli("compile", "-f", example_path, "--all-nodes", "--out-dir", str(tmp_path), "--format", "json")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["node-a.json", "node-b.json"]
    code, _, err = run_cli("compile", "-f", example_path, "--node", "node-z")
    assert code == 2 and "node-z" in err and "node-a, node-b" in err


def test_the_choices_of_lazily_imported_commands_are_their_modules_own():
    from netpol import cli
    from netpol.audit.diff import FAIL_ON
    from netpol.audit.diff_formats import RENDERERS
    from netpol.audit.lint import SEVERITIES
    from netpol.lab.verify import IPTABLES_VARIANTS

    assert cli.DIFF_FAIL_ON == FAIL_ON and cli.LINT_SEVERITIES == SEVERITIES
    assert tuple(sorted(RENDERERS)) == cli.DIFF_OUTPUTS and tuple(IPTABLES_VARIANTS) == cli.IPTABLES_BACKENDS


def test_starting_the_command_line_loads_neither_the_compiler_nor_the_lab_nor_the_audits():
    """`netpol reach` on a small cluster costs mostly its start; the heavy stages load when a
    command that needs them runs (run_compile, run_verify, run_diff, run_lint)."""
    import subprocess
    import sys

    probe = ("import sys, netpol.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'networkx' "
             "or m.startswith(('netpol.compile', 'netpol.backends', 'netpol.lab.', 'netpol.pipeline', "
             "'netpol.audit.lint', 'netpol.audit.diff', 'netpol.dataplane', 'netpol.agent'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
