"""The benchmarks run from a clean clone, at a size small enough for CI: every stage finishes,
the incremental compiler's rulesets equal a compile from scratch, the kernel loads the largest
ruleset, the data plane moves real connections under every configuration, the CNI latency
benchmark times both plugins, the amplification inputs load, and the soak's program still equals
a compile from scratch after its churn. No timing is asserted: the numbers are for the README, not for pass/fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ROOT = REPO
needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                  reason="needs root and nft")


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@needs_kernel
def test_compile_scale_runs_every_stage(tmp_path):
    out = tmp_path / "results.json"
    run(["benchmarks/compile_scale.py", "--sizes", "300/30/3", "--events", "40", "--out", str(out)], 600)
    rows = {row["stage"]: row for row in json.loads(out.read_text())["rows"] if "size" in row}
    for stage in ("load-json", "load-yaml", "compile-node", "compile-all", "compile-all-1-job",
                  "compile-all-memory", "events", "agent-events", "kernel-load"):
        assert rows[stage]["status"] == "ok", (stage, rows[stage])
    assert rows["compile-all"]["rulesets"] == 3 and rows["compile-all"]["largest"]["rules"] > 0
    assert rows["compile-all-1-job"]["processes"] == 1 and rows["compile-all-1-job"]["rulesets"] == 3
    assert rows["compile-all"]["processes"] >= 1 and rows["compile-all-memory"]["peak_pss_mb"] > 0
    events = rows["events"]
    assert events["events"]["count"] == 40
    assert events["check"]["checked_nodes"] and events["check"]["differing_nodes"] == []
    agent = rows["agent-events"]  # one node's compiler, as its agent runs it
    assert agent["events"]["count"] == 40 and agent["events"]["nodes_mean"] <= 1
    assert agent["check"]["checked_nodes"] == [agent["agent_node"]] and agent["check"]["differing_nodes"] == []
    assert rows["kernel-load"]["replace"]["status"] == "ok"


def test_compile_scale_measures_cluster_policies(tmp_path):
    """`--cluster-policies`: every node's ruleset with and without them in the same run (their
    ratio), cluster-policy events on one node's agent, and the pod and policy events again with
    them; every incremental compiler still equals a compile from scratch. No timing asserted."""
    out = tmp_path / "results.json"
    run(["benchmarks/compile_scale.py", "--sizes", "300/30/3", "--cluster-policies", "20", "--cnp-only",
         "--no-kernel", "--events", "20", "--cnp-events", "30", "--cnp-rounds", "2", "--out", str(out)], 600)
    rows = [row for row in json.loads(out.read_text())["rows"] if "size" in row]
    by_stage = {row["stage"]: row for row in rows}
    pairs = [row for row in rows if row["stage"] == "compile-all-pair"]
    assert sorted(row["cluster_policies"] for row in pairs) == [0, 0, 20, 20]
    assert all(row["status"] == "ok" and row["rulesets"] == 3 for row in pairs)
    ratio = by_stage["cnp-compile-ratio"]
    assert ratio["status"] == "ok" and ratio["ratio"] > 0 and isinstance(ratio["met"], bool)
    assert ratio["largest_with"]["rules"] > ratio["largest_without"]["rules"]  # the tiers are there
    cnp = by_stage["cnp-events"]
    assert cnp["status"] == "ok" and cnp["cluster_policies"] == 20 and cnp["events"]["count"] == 30
    assert set(cnp["events"]["by_kind"]) <= {"add-cnp", "modify-cnp", "delete-cnp"} and cnp["events"]["changed_node"]
    assert isinstance(cnp["met"], bool) and cnp["check"]["differing_nodes"] == []
    for stage in ("events", "agent-events", "events-cnp", "agent-events-cnp"):
        row = by_stage[stage]
        assert row["status"] == "ok" and row["events"]["count"] == 20, (stage, row)
        assert row["check"]["checked_nodes"] and row["check"]["differing_nodes"] == [], (stage, row)
    assert not {"load-json", "compile-all", "kernel-load"} & set(by_stage)  # --cnp-only


@needs_kernel
def test_dataplane_measures_every_configuration(tmp_path):
    out = tmp_path / "dataplane.json"
    run(["benchmarks/dataplane.py", "--seconds", "0.5", "--rounds", "1", "--policies", "0,100", "--udp",
         "--iptables", "--quiet-wait", "0", "--json", str(out)], 600)
    result = json.loads(out.read_text())
    text = json.dumps(result)
    for name in ("none", "0 policies", "100 policies", "iptables 0 policies", "iptables 100 policies"):
        assert name in text
    rates = [v for v in _numbers(result, "rate")]
    assert rates and all(rate > 0 for rate in rates)
    assert result["netns_left_behind"] == []  # its own; other tests' namespaces come and go meanwhile


@needs_kernel
@pytest.mark.skipif(not Path("/usr/lib/cni/bridge").exists(), reason="needs containernetworking-plugins")
def test_cni_latency_times_both_plugins(tmp_path):
    out = tmp_path / "cni.json"
    done = run(["benchmarks/cni_latency.py", "--ops", "3", "--rounds", "2", "--json", str(out)], 300)
    rows = {(row["plugin"], row["op"]): row for row in json.loads(out.read_text())}
    assert set(rows) == {(p, op) for p in ("netpol-cni", "bridge") for op in ("ADD", "CHECK", "DEL")} | {
        ("floor", "interpreter"), ("floor", "host-local ADD")}
    assert all(row["n"] == 6 and row["median_ms"] > 0 for row in rows.values())
    assert "ours ÷ ref" in done.stderr and "floor of a CPython ADD" in done.stderr
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                          check=True).stdout.split() if n.startswith("np-bench-cni-")]


@needs_kernel
def test_agent_latency_times_changes_in_both_modes(tmp_path):
    out = tmp_path / "agent.json"
    run(["benchmarks/agent_latency.py", "--pods", "300", "--events", "10", "--gap", "0.1", "--json", str(out)], 600)
    results = json.loads(out.read_text())
    assert [r["mode"] for r in results] == ["incremental", "replace-on-structure"]
    for result in results:
        assert result["events"] == 10 and result["change_to_enforced_ms"]["p50"] > 0
        assert set(result["by_kind"]) == {"add-pod", "delete-pod", "add-policy", "delete-policy", "remote-peer"}
    assert "full" not in results[0]["modes"] and results[0]["modes"].get("chains")  # no whole table
    assert results[1]["modes"].get("full")  # the baseline replaces the table on structural changes


@needs_kernel
@pytest.mark.skipif(shutil.which("ipset") is None, reason="needs ipset")
def test_iptables_scale_renders_and_loads_both_backends(tmp_path):
    out = tmp_path / "ipt.json"
    run(["benchmarks/iptables_scale.py", "--sizes", "300", "--json", str(out)], 600)
    [row] = json.loads(out.read_text())
    assert row["pods"] == 300 and row["nodes"] == 2
    for backend in ("nftables", "iptables"):
        assert row[backend]["bytes_all"] > 0 and row[backend]["load_largest_s"] > 0


def _numbers(value: object, key: str) -> list[float]:
    """Every number stored under `key`, anywhere in the result."""
    if isinstance(value, dict):
        found = [float(v) for k, v in value.items() if k == key and isinstance(v, int | float)]
        return found + [n for v in value.values() for n in _numbers(v, key)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v, key)]
    return []


@needs_kernel
def test_amplification_loads_every_input_next_to_the_baseline(tmp_path):
    """CI size; the baseline is the code before shared sets and side chains (issue 14)."""
    out = tmp_path / "amplification.json"
    baseline = ["--baseline", AMPLIFICATION_BASELINE] if _has_revision(AMPLIFICATION_BASELINE) else []
    run(["benchmarks/amplification.py", "--scale", "0.02", *baseline, "--json", str(out)], 600)
    rows = json.loads(out.read_text())["rows"]
    current = {r["input"]: r for r in rows if r["code"] == "current"}
    assert set(current) == {"identical-named-port-policies", "one-policy-5000-rules",
                            "select-all-named-port-policies"}
    for row in rows:
        assert row["status"] == "ok" and row["load"]["status"] == "ok", row
    assert current["one-policy-5000-rules"]["chains"] == 1  # one chain for the pods selected alike
    assert current["identical-named-port-policies"]["sets"] == 2  # its pods set, one named-port set
    for row in rows:
        if row["code"] == "baseline":
            assert row["bytes"] > current[row["input"]]["bytes"]


def test_soak_keeps_the_program_equal_to_a_compile_from_scratch(tmp_path):
    """A few thousand changes (no memory assertion at this size: the numbers are for the README)."""
    out = tmp_path / "soak.json"
    run(["benchmarks/soak.py", "--pods", "300", "--changes", "3000", "--samples", "1000", "--check",
         "--json", str(out)], 600)
    result = json.loads(out.read_text())
    assert result["changes"] >= 3000 and len(result["samples"]) == 4
    assert result["equals_a_compile_from_scratch"] and result["kernel_path_equals"]


AMPLIFICATION_BASELINE = "be3578c"


def _has_revision(ref: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{ref}^{{commit}}"],
                          capture_output=True, check=False).returncode == 0
