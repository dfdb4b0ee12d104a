"""The iptables backend: the same semantics as nftables from the same IR, as ipset + iptables-
restore payloads. Pure checks of the payloads, then the kernel: loaded twice without change,
foreign chains and sets untouched, stale ones of ours removed, and `verify --backend iptables`
matching the semantics — and the nftables backend — cell for cell on the example and on
generated multi-node clusters."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess

import pytest
from conftest import cluster, fresh_netns
from hypothesis import HealthCheck, given, settings

from netpol.backends.iptables import IptablesBundle, _cidrs, _port_groups, chain_name, render
from netpol.cli import main
from netpol.compile.ir import Allow, PortMatch, compile_cluster
from netpol.dataplane.iptables import apply_iptables
from netpol.lab.cluster import lab_pods
from netpol.lab.verify import format_report, verify
from netpol.load.manifests import load_state
from netpol.semantics.probes import default_probes, parse_probe
from netpol.testing import clusters

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ipset") is None
                                  or shutil.which("iptables-restore") is None,
                                  reason="needs root, ipset and iptables (make test installs them)")
netns = pytest.fixture(fresh_netns)


# ── the payloads (pure) ─────────────────────────────────────────────────────────────────────


def test_chain_names_fit_iptables_and_differ_per_pod_and_direction():
    names = {chain_name(d, f"namespace-{i}/a-very-long-pod-name-{'x' * 200}") for i in range(50)
             for d in ("ingress", "egress")}
    assert len(names) == 100 and all(len(n) <= 28 for n in names)


def test_everything_becomes_two_halves_because_hash_net_refuses_a_zero_prefix():
    assert _cidrs(4, 0, 2**32 - 1) == ["0.0.0.0/1", "128.0.0.0/1"]
    assert _cidrs(6, 0, 2**128 - 1) == ["::/1", "8000::/1"]
    low, high = int(ipaddress.ip_address("0.0.0.0")), int(ipaddress.ip_address("9.255.255.255"))
    assert _cidrs(4, low, high) == ["0.0.0.0/5", "8.0.0.0/7"]


def test_ports_are_split_into_multiport_matches_of_at_most_fifteen():
    ports = (*(PortMatch("TCP", p) for p in range(1000, 1020)), PortMatch("TCP", 2000, 2100), PortMatch("UDP"))
    groups = _port_groups(Allow("origin", None, ports))
    tcp = [chunk for proto, chunk in groups if proto == "tcp"]
    assert ("udp", None) in groups
    assert all(sum(2 if ":" in p else 1 for p in chunk) <= 15 for chunk in tcp if chunk is not None)
    assert sorted(p for chunk in tcp if chunk for p in chunk) == sorted([*map(str, range(1000, 1020)), "2000:2100"])


def test_compile_writes_the_three_files(example_path, tmp_path):
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--node", "node-a",
                 "-o", str(tmp_path / "a")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["ip6tables.restore", "ipset.restore", "iptables.restore"]
    text = (tmp_path / "a" / "iptables.restore").read_text()
    assert text.startswith("# netpol iptables rules") and "*filter" in text and text.rstrip().endswith("COMMIT")
    assert '-m comment --comment "NetworkPolicy db/allow-postgres spec.ingress[0]"' in text
    sets = (tmp_path / "a" / "ipset.restore").read_text().splitlines()
    # PITFALLS 14: never flush-then-add a live set; fill a temporary one and swap it in
    live = [line.split()[1] for line in sets if line.startswith("swap ")]
    assert live and all(f"swap {name}.new {name}" in sets for name in [n.removesuffix(".new") for n in live])
    assert not any(line.startswith(("flush ", "add ")) and ".new" not in line.split()[1] for line in sets)
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--all-nodes",
                 "--out-dir", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["node-a", "node-b"]
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--node", "node-a"]) == 2  # no -o


# ── the kernel ──────────────────────────────────────────────────────────────────────────────


def _ipt(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, check=True).stdout


@needs_kernel
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


@needs_kernel
def test_a_pod_and_a_policy_that_leave_take_their_chains_and_sets_along(example_path, netns):
    state = load_state([example_path])
    program = compile_cluster(state)["node-a"]
    apply_iptables(render(program), program, netns)
    before = _ipt(netns, "iptables", "-S")
    assert chain_name("ingress", "db/postgres-0") in before
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
    assert chain_name("ingress", "db/postgres-0") not in after and "-N NP-" not in after
    assert [s for s in _ipt(netns, "ipset", "list", "-n").split() if s.startswith(("pods-", "cidrs-"))] == []


@needs_kernel
@pytest.mark.kernel
@pytest.mark.usefixtures("netns_guard")
def test_both_backends_match_the_semantics_cell_for_cell_on_the_example(example_path):
    state = load_state([example_path])
    backends = ["nftables", "iptables"] + (["iptables-legacy"] if shutil.which("iptables-legacy-restore") else [])
    reports = {backend: verify(state, backend=backend) for backend in backends}
    for report in reports.values():
        assert not report.mismatches, format_report(report)
    outcomes = {b: [(str(r.cell), r.outcome) for r in report.results] for b, report in reports.items()}
    assert all(outcome == outcomes["nftables"] for outcome in outcomes.values())


@needs_kernel
@pytest.mark.kernel
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


def test_the_bundle_names_its_payloads_by_family():
    bundle = IptablesBundle("sets", "v4", "v6")
    assert (bundle.by_family(4), bundle.by_family(6)) == ("v4", "v6")


@needs_kernel
def test_a_refused_payload_keeps_the_last_good_rules(example_path, netns):
    from netpol.dataplane.nft import ApplyError

    program = compile_cluster(load_state([example_path]))["node-a"]
    good = render(program)
    apply_iptables(good, program, netns)
    before = (_ipt(netns, "iptables", "-S"), _ipt(netns, "ip6tables", "-S"))
    broken = IptablesBundle(good.ipset, good.iptables.replace("-j DROP", "-j NO-SUCH-TARGET", 1), good.ip6tables)
    with pytest.raises(ApplyError, match="NO-SUCH-TARGET|iptables-restore"):
        apply_iptables(broken, program, netns)
    assert (_ipt(netns, "iptables", "-S"), _ipt(netns, "ip6tables", "-S")) == before
