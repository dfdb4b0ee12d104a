"""`netpol verify`: the lab plan (pure, no root), then real clusters in network namespaces —
the shop example, a dual-stack three-node cluster, planted bugs, Hypothesis clusters — and the
guarantee that every namespace and process a run creates is gone afterwards, whatever happens.

Kernel tests hold `netns_guard` (conftest): one lab at a time, `ip netns list` unchanged."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import cluster, lab_namespaces, pod_yaml
from hypothesis import HealthCheck, given, settings

from netpol.backends.nftables import render
from netpol.cli import EXIT_INVALID_INPUT, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, main
from netpol.compile.ir import NodeProgram
from netpol.errors import RulesetRejected
from netpol.lab import cluster as lab_module
from netpol.lab import verify as verify_module
from netpol.lab.cluster import derive_subnets, lab_pods, plan_lab
from netpol.lab.verify import (
    Cell,
    CellResult,
    Report,
    compare,
    format_report,
    plan_cells,
    split_probes,
    verify,
)
from netpol.load.manifests import load_state
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.testing import clusters

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                  reason="needs root and nft (make test installs nftables)")

NODES = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.10.0.0/24, podCIDRs: [10.10.0.0/24, "fd10:a::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.1}, {type: InternalIP, address: "fd30::1"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.10.1.0/24, podCIDRs: [10.10.1.0/24, "fd10:b::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.2}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
"""
# node-c has no Node object: its subnets are derived from its pods, its fabric addresses invented.
PODS = "".join([
    pod_yaml("shop", "web-1", "10.10.0.10,fd10:a::10", "{app: web}",
             "[{name: http, containerPort: 8080}]", node="node-a"),
    pod_yaml("shop", "web-2", "fd10:b::10", "{app: web}", "[{name: http, containerPort: 8081}]", node="node-b"),
    pod_yaml("shop", "db", "10.10.2.20,fd10:c::20", "{app: db}", "[{name: pg, containerPort: 5432}]",
             node="node-c"),
    pod_yaml("ops", "client", "10.10.1.30,fd10:b::30", "{app: client}", node="node-b"),
    pod_yaml("ops", "prober", "10.10.2.40", "{app: monitor}", node="node-c"),
    pod_yaml("ops", "dns", "10.10.0.53,fd10:a::53", "{app: dns}",
             "[{name: dns, containerPort: 53, protocol: UDP}]", node="node-a"),
])
POLICIES = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 10.10.0.0/16, except: [10.10.1.0/24]}},
           {ipBlock: {cidr: "fd10::/16", except: ["fd10:b::/64"]}}]
    ports: [{port: pg}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: ops}
spec:
  podSelector: {matchLabels: {app: client}}
  egress:
  - to: [{namespaceSelector: {}, podSelector: {}}]
    ports: [{port: 53, protocol: UDP}]
  - to: [{namespaceSelector: {matchLabels: {team: shop}}}]
    ports: [{port: http}, {port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: ops}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-in, namespace: ops}
spec:
  podSelector: {matchLabels: {app: dns}}
  ingress: [{ports: [{port: dns, protocol: UDP}]}]
"""


def dual_stack():
    return cluster(NODES + PODS + POLICIES)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def summary(text: str) -> tuple[int, int]:
    match = re.search(r"^(\d+) cells probed, (\d+) mismatches", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)), int(match.group(2))


# ── the plan and the comparison: pure, no root needed ───────────────────────────────────────


def test_shop_plan_routes_pod_cidrs_via_internal_ips(example_path):
    plan = plan_lab(load_state([example_path]), "abcdef")
    a, b = plan.nodes
    assert (a.netns, b.netns, plan.fabric_netns) == ("np-abcdef-n0", "np-abcdef-n1", "np-abcdef-fab")
    assert [str(g) for g in a.gateways] == ["10.244.0.1/24"]
    assert ("10.244.1.0/24", "via", "192.168.50.11") in a.routes
    assert ipaddress.ip_address("192.168.50.10") in a.fabric_addresses
    assert len(plan.pods) == 11 and all(p.netns.startswith("np-abcdef-p") for p in plan.pods)
    assert any("hostNetwork" in note for note in plan.notes)
    names = [p.host_veth for p in plan.pods] + [n.fabric_port for n in plan.nodes]
    assert all(len(name) <= 15 for name in names)


def test_overlapping_derived_subnets_fall_back_to_host_routes():
    # Pods of both nodes interleave in one /24, as Hypothesis clusters do: no podCIDRs.
    text = (pod_yaml("a", "p1", "10.0.0.1", node="n1") + pod_yaml("a", "p2", "10.0.0.2", node="n2")
            + pod_yaml("a", "p3", "10.0.0.3,fd00::3", node="n1"))
    plan = plan_lab(cluster(text), "000000")
    n1, n2 = plan.nodes
    assert n1.subnets == tuple(map(ipaddress.ip_network, ("10.0.0.0/24", "fd00::/64")))
    assert n2.subnets == (ipaddress.ip_network("10.0.0.0/24"),)
    gateways = {g.ip for n in plan.nodes for g in n.gateways}
    assert len(gateways) == 3 and not gateways & {ipaddress.ip_address(f"10.0.0.{i}") for i in (1, 2, 3)}
    assert not any(r[0] == "10.0.0.0/24" for r in n1.routes)  # would clash with its own cni0 subnet
    assert ("10.0.0.2/32", "via", str(n2.fabric_addresses[0])) in n1.routes
    p1 = next(p for p in plan.pods if p.key == "a/p1")
    assert ("10.0.0.2/32", "via", str(n1.gateways[0].ip)) in p1.routes  # not on p1's link
    assert {f.version for f in n1.fabric_addresses} == {4, 6}  # invented: 192.168.255.x, fd00:255::x


def test_derive_subnets_widens_until_every_pod_fits():
    ips = [ipaddress.ip_address(a) for a in ("10.0.0.5", "10.0.3.7", "fd00::1")]
    assert derive_subnets((), ips) == (ipaddress.ip_network("10.0.0.0/22"), ipaddress.ip_network("fd00::/64"))
    cidr = ipaddress.ip_network("10.0.0.0/24")
    assert derive_subnets((cidr,), ips[:1]) == (cidr,)


def test_derived_subnets_never_make_a_pod_ip_a_network_or_broadcast_address():
    # 10.0.3.255 would be the /22's broadcast address; fd00:: (another node's pod) the /64's
    # subnet-router anycast, which a forwarding node answers itself.
    ips = [ipaddress.ip_address(a) for a in ("10.0.0.35", "10.0.3.255", "fd00::23")]
    assert derive_subnets((), ips, [ipaddress.ip_address("fd00::")]) == (
        ipaddress.ip_network("10.0.0.0/21"), ipaddress.ip_network("fc00::/7"))


def test_cells_compare_and_report():
    state = dual_stack()
    probes = default_probes(state)
    usable, notes = split_probes((*probes, Probe("SCTP", 9000), Probe("ICMP", None)))
    assert usable == probes and "9000/SCTP" in notes[0] and "ICMP" in notes[0]
    cells = plan_cells(state, usable)
    assert {c.family for c in cells} == {4, 6}

    def expected(src: str, dst: str, port: int) -> list[tuple[int, bool]]:
        return [(c.family, c.expected) for c in cells if (c.src, c.dst, c.port) == (src, dst, port)]

    assert expected("shop/web-1", "shop/db", 5432) == [(4, True), (6, True)]
    assert expected("ops/client", "shop/db", 5432) == [(4, False), (6, False)]  # the excepts
    assert expected("ops/client", "shop/web-2", 8081) == [(6, True)]  # named port, IPv6 only
    on_a = {"shop/web-1", "ops/dns"}
    assert all({c.src, c.dst} & on_a for c in plan_cells(state, usable, "node-a"))
    results = compare(cells[:2], {0: "open", 1: "blocked"})
    report = Report(results, ("a note",), 3, 6, len(usable), 1.25)
    text = format_report(report)
    assert text.startswith("note: a note\n") and text.endswith(f"2 cells probed, {len(report.mismatches)} "
                                                               "mismatches (3 nodes, 6 pods, 4 probes, 1.2 s)\n")
    wrong = CellResult(Cell("a/x", "b/y", *map(ipaddress.ip_address, ("10.0.0.1", "10.0.0.2")), 80, "TCP",
                            False), "open")
    assert str(wrong) == "a/x -> b/y 80/TCP (IPv4): kernel=open semantics=blocked" and wrong.mismatch


def test_unknown_node_is_a_usage_error_before_anything_is_built(example_path):
    code, _, err = run("verify", "-f", example_path, "--node", "node-z")
    assert code == EXIT_USAGE and "node-z" in err and "node-a" in err


def test_without_root_verify_says_so(example_path, monkeypatch):
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)
    code, _, err = run("verify", "-f", example_path)
    assert code == EXIT_INVALID_INPUT and "needs root" in err


# ── real packets ────────────────────────────────────────────────────────────────────────────


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_shop_example_has_no_mismatch_and_leaves_the_root_namespace_alone(example_path):
    root_before = root_namespace()
    started = time.monotonic()
    code, out, err = run("verify", "-f", example_path)
    assert code == EXIT_OK, out + err
    assert summary(out) == (11 * 11 * 10, 0)  # 11 pods, 10 probes, IPv4 only
    assert "hostNetwork" in out
    assert time.monotonic() - started < 30
    assert root_namespace() == root_before


def root_namespace() -> tuple[str, ...]:
    """What verify must never touch outside its namespaces: links, nft tables, the sysctls it sets."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    sysctls = subprocess.run(["sysctl", "-n", *(s.split("=")[0] for s in lab_module.NODE_SYSCTLS)],
                             capture_output=True, text=True, check=True).stdout
    return tuple(sorted(line.split("@")[0].split(":")[1] for line in links.splitlines())), tables, sysctls


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_a_server_that_cannot_start_is_a_clear_error(monkeypatch, example_path):
    monkeypatch.setattr(verify_module, "TRAFFIC_SCRIPT", "/nonexistent/lab_traffic.py")
    code, _, err = run("verify", "-f", example_path)
    assert code == EXIT_INVALID_INPUT and "did not start" in err and "/nonexistent" in err


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_only_one_node(example_path):
    code, out, _ = run("verify", "-f", example_path, "--node", "node-a", "--port", "5432", "--port", "53/UDP")
    state = load_state([example_path])
    on_b = sum(1 for p in state.active_pods if p.node_name == "node-b")
    assert code == EXIT_OK and summary(out) == ((11 * 11 - on_b * on_b) * 2, 0)


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_dual_stack_three_nodes_agree_with_the_semantics():
    report = verify(dual_stack())
    assert not report.mismatches, format_report(report)
    assert (report.nodes, report.pods) == (3, 6)
    seen = {(r.cell.family, r.cell.protocol, r.kernel_open) for r in report.results}
    assert seen == {(f, p, o) for f in (4, 6) for p in ("TCP", "UDP") for o in (True, False)}
    cross = [r for r in report.results if r.kernel_open and r.cell.src != r.cell.dst
             and r.cell.family == 6 and r.cell.dst == "shop/web-2"]
    assert cross  # IPv6 across nodes, through an invented fabric address, to a named port


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_pods_on_subnet_edges_and_interleaved_nodes():
    # No podCIDRs, both nodes' pods in one range, addresses at the edges of the derived subnets.
    state = cluster(pod_yaml("a", "zero", "10.0.0.0,fd00::0", node="node-a")
                    + pod_yaml("a", "edge", "10.0.3.255,fd00::3ff", node="node-a")
                    + pod_yaml("a", "other", "10.0.0.35,fd00::23", node="node-b")
                    + pod_yaml("a", "v6", "fd00::1", node="node-b"))
    report = verify(state, [Probe("TCP", 80), Probe("UDP", 53)])
    assert not report.mismatches, format_report(report)
    assert all(r.kernel_open for r in report.results) and len(report.results) == 50


def drop_rule(origin: str):
    """A broken backend: the ruleset without the accept rules of `origin`."""
    def broken(program: NodeProgram) -> str:
        return "".join(line for line in render(program).splitlines(keepends=True)
                       if not ("accept" in line and f'"{origin}"' in line))
    return broken


def accept_everything(program: NodeProgram) -> str:
    return "table inet netpol {}\ndelete table inet netpol\ntable inet netpol {}\n"


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_a_dropped_rule_is_found_through_the_cli(monkeypatch):
    monkeypatch.setattr("netpol.cli.render_nftables", drop_rule("NetworkPolicy shop/web-in spec.ingress[0]"))
    monkeypatch.setattr("netpol.cli.load_state", lambda paths: dual_stack())
    code, out, _ = run("verify", "-f", "-")
    assert code == EXIT_MISMATCH
    assert "ops/client -> shop/web-2 8081/TCP (IPv6): kernel=blocked semantics=open" in out
    assert summary(out)[1] > 0


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_a_ruleset_that_accepts_everything_is_found():
    report = verify(dual_stack(), render=accept_everything)
    assert report.mismatches and all(r.kernel_open and not r.cell.expected for r in report.mismatches)
    assert "kernel=open semantics=blocked" in format_report(report)


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_a_ruleset_nft_refuses_is_exit_3_and_cleaned_up(monkeypatch, example_path):
    monkeypatch.setattr("netpol.cli.render_nftables", lambda program: "table inet netpol { nonsense }\n")
    code, _, err = run("verify", "-f", example_path)
    assert code == EXIT_MISMATCH and "nft refused the compiled ruleset of node node-a" in err
    with pytest.raises(RulesetRejected):
        verify(load_state([example_path]), render=lambda program: "bogus\n")


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(clusters(max_pods=10).filter(lambda state: len({p.node_name for p in lab_pods(state)}) == 2))
def test_generated_multi_node_clusters_agree_with_the_semantics(state):
    # A TCP and a UDP port always, so a cluster that names only SCTP still has cells to probe.
    probes = list(dict.fromkeys([*default_probes(state), parse_probe("80/TCP"), parse_probe("53/UDP")]))
    report = verify(state, probes)
    assert not report.mismatches, format_report(report)
    assert report.nodes == 2 and report.results


# ── cleanup, whatever happens ───────────────────────────────────────────────────────────────


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("failure", [RuntimeError("injected"), KeyboardInterrupt()])
def test_a_failure_mid_build_leaves_nothing_behind(monkeypatch, failure):
    real = lab_module.Lab.build_pod
    built = []

    def flaky(self, pod, node_netns):
        if len(built) == 2:
            raise failure
        built.append(pod.key)
        real(self, pod, node_netns)

    monkeypatch.setattr(lab_module.Lab, "build_pod", flaky)
    with pytest.raises(type(failure)):
        verify(dual_stack())
    assert len(built) == 2


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_ctrl_c_while_probing_stops_every_process_at_once(monkeypatch, example_path):
    spawned = []
    real_spawn, real_collect = lab_module.Lab.spawn, verify_module._collect

    def spawn(self, netns, argv):
        spawned.append(real_spawn(self, netns, argv))
        return spawned[-1]

    def collect(proc, netns, targets, timeout):
        if netns.endswith("-p0"):
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the main thread waits
        return real_collect(proc, netns, targets, 60.0)  # slow probers: killed, not awaited

    monkeypatch.setattr(lab_module.Lab, "spawn", spawn)
    monkeypatch.setattr(verify_module, "_collect", collect)
    started = time.monotonic()
    code, _, _ = run("verify", "-f", example_path)
    assert code == 130 and len(spawned) == 22  # 11 servers, 11 probers
    assert all(proc.poll() is not None for proc in spawned)
    assert time.monotonic() - started < 15


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["building", "probing"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_nothing_behind(example_path, signum, code, delay):
    before = set(lab_namespaces())
    proc = subprocess.Popen([sys.executable, "-m", "netpol.cli", "verify", "-f", example_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not set(lab_namespaces()) - before:
        assert proc.poll() is None and time.monotonic() < deadline, "the lab never appeared"
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)  # a saturated 2-core machine can be slow to tear down
    assert proc.returncode == code, out + err
    assert "Traceback" not in err


@pytest.mark.kernel
@needs_kernel
@pytest.mark.usefixtures("netns_guard")
def test_a_signal_while_a_namespace_is_created_waits_until_its_undo_is_registered(example_path,
                                                                                   monkeypatch):
    """The race behind a leaked namespace under load: SIGTERM landing inside Popen, before
    `subprocess.run` has a handle, orphaned an `ip netns add` that finished after the teardown
    had looked. The signal must now arrive only once `ip netns add` has returned."""
    real_run = lab_module.run_command
    created: list[str] = []

    def signal_then_run(argv, stdin=None):
        if list(argv[:3]) == ["ip", "netns", "add"] and not created:
            os.kill(os.getpid(), signal.SIGTERM)  # pending at once; raised as soon as Python may
            out = real_run(argv, stdin)
            created.append(argv[3])
            return out
        return real_run(argv, stdin)

    monkeypatch.setattr(lab_module, "run_command", signal_then_run)
    with pytest.raises(SystemExit) as stopped, lab_module.open_lab(load_state([example_path])):
        pass
    assert stopped.value.code == 143
    assert created and not (lab_module.NETNS_DIR / created[0]).exists()
