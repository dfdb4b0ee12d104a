"""The iptables backend in the kernel: loaded twice without change, foreign chains and sets
untouched, stale ones of ours removed, a refused payload keeping the last good rules, and
`verify --backend iptables` matching the semantics — and the nftables backend — cell for cell on
the example and on generated multi-node clusters. The payloads alone: tests/unit/backends."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

from netpol.backends.iptables import IptablesBundle, dispatch_chains, render
from netpol.compile.compiler import compile_cluster
from netpol.dataplane.iptables import apply_iptables
from netpol.lab.cluster import lab_pods
from netpol.lab.verify import format_report, verify
from netpol.load.manifests import load_state
from netpol.semantics.probes import default_probes, parse_probe
from netpol.testing import clusters
from tests.conftest import cluster
from tests.kernel.conftest import fresh_netns

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ipset") is None
                                  or shutil.which("iptables-restore") is None,
                                  reason="needs root, ipset and iptables (make test installs them)")
netns = pytest.fixture(fresh_netns)


# ── the payloads (pure) ─────────────────────────────────────────────────────────────────────


# ── the kernel ──────────────────────────────────────────────────────────────────────────────


def _ipt(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, check=True).stdout


def test_loading_twice_changes_nothing_and_foreign_objects_survive(example_path, netns):
    _ipt(netns, "iptables", "-N", "SOMEONE-ELSE")
    _ipt(netns, "iptables", "-A", "FORWARD", "-j", "SOMEONE-ELSE")
    _ipt(netns, "ipset", "create", "someone-else", "hash:ip")
    program = compile_cluster(load_state([example_path]))["node-a"]

    def state():  # sets swapped in get a new hash seed (initval): not a change of content
        sets = re.sub(r" initval 0x[0-9a-f]+", "", _ipt(netns, "ipset", "save"))
        return _ipt(netns, "iptables", "-S"), _ipt(netns, "ip6tables", "-S"), sorted(sets.splitlines())

    apply_iptables(render(program), program, netns)
    first = state()
    apply_iptables(render(program), program, netns)
    assert state() == first
    rules = first[0]
    assert rules.count("-A FORWARD -j NETPOL-FORWARD") == 1 and "-A FORWARD -j SOMEONE-ELSE" in rules
    assert any("someone-else" in line for line in first[2])


def test_a_pod_and_a_policy_that_leave_take_their_chains_and_sets_along(example_path, netns):
    state = load_state([example_path])
    program = compile_cluster(state)["node-a"]
    apply_iptables(render(program), program, netns)
    before = _ipt(netns, "iptables", "-S")
    postgres = dispatch_chains(program, ipaddress.ip_address("10.244.0.30"), "ingress")
    assert len(postgres) == 1 and f"-N {postgres[0]}" in before
    smaller = cluster("""
        apiVersion: v1
        kind: Pod
        metadata: {name: lone, namespace: default}
        spec: {nodeName: node-a, containers: [{name: c}]}
        status: {podIP: 10.244.0.9}
        """)
    program2 = compile_cluster(smaller)["node-a"]
    apply_iptables(render(program2), program2, netns)
    after = _ipt(netns, "iptables", "-S")
    assert postgres[0] not in after and "-N NP-" not in after
    assert [s for s in _ipt(netns, "ipset", "list", "-n").split() if s.startswith(("pods-", "cidrs-"))] == []


@pytest.mark.usefixtures("netns_guard")
def test_both_backends_match_the_semantics_cell_for_cell_on_the_example(example_path):
    state = load_state([example_path])
    backends = ["nftables", "iptables"] + (["iptables-legacy"] if shutil.which("iptables-legacy-restore") else [])
    reports = {backend: verify(state, backend=backend) for backend in backends}
    for report in reports.values():
        assert not report.mismatches, format_report(report)
    outcomes = {b: [(str(r.cell), r.outcome) for r in report.results] for b, report in reports.items()}
    assert all(outcome == outcomes["nftables"] for outcome in outcomes.values())


@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("backend", ["iptables", "iptables-legacy"])
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(state=clusters(max_pods=10).filter(lambda state: len({p.node_name for p in lab_pods(state)}) == 2))
def test_generated_multi_node_clusters_agree_with_the_semantics_through_iptables(backend, state):
    if backend == "iptables-legacy" and shutil.which("iptables-legacy-restore") is None:
        pytest.skip("no iptables-legacy")
    probes = list(dict.fromkeys([*default_probes(state), parse_probe("80/TCP"), parse_probe("53/UDP")]))
    report = verify(state, probes, backend=backend)
    assert not report.mismatches, format_report(report)


def test_a_refused_payload_keeps_the_last_good_rules(example_path, netns):
    from netpol.errors import ApplyError

    program = compile_cluster(load_state([example_path]))["node-a"]
    good = render(program)
    apply_iptables(good, program, netns)
    before = (_ipt(netns, "iptables", "-S"), _ipt(netns, "ip6tables", "-S"))
    broken = IptablesBundle(good.ipset, good.iptables.replace("-j DROP", "-j NO-SUCH-TARGET", 1), good.ip6tables)
    with pytest.raises(ApplyError, match="NO-SUCH-TARGET|iptables-restore"):
        apply_iptables(broken, program, netns)
    assert (_ipt(netns, "iptables", "-S"), _ipt(netns, "ip6tables", "-S")) == before
