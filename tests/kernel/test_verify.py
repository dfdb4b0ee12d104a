"""`netpol verify` on real clusters in network namespaces —
the shop example, a dual-stack three-node cluster, pod → node cells (with and without cluster
policies), planted bugs, Hypothesis clusters — and the guarantee that every namespace and
process a run creates is gone afterwards, whatever happens. Cluster policies on generated
clusters, and the tiers' story: tests/kernel/test_cluster_policy_packets.py.

Every test holds `netns_guard` (tests/kernel/conftest.py): one lab at a time, `ip netns list`
unchanged. The plan and the comparison, without a kernel: tests/unit/lab/test_verify.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from netpol.backends.nftables import render
from netpol.cli import EXIT_INVALID_INPUT, EXIT_MISMATCH, EXIT_OK
from netpol.compile.compiler import compile_cluster
from netpol.compile.ir import NodeProgram
from netpol.errors import RulesetRejected
from netpol.lab import cluster as lab_module
from netpol.lab import verify as verify_module
from netpol.lab.cluster import lab_pods
from netpol.lab.verify import (
    Report,
    format_report,
    verify,
)
from netpol.load.manifests import LoadReport, load_state
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.testing import clusters
from tests.conftest import cluster, dual_stack, pod_yaml, run_cli
from tests.kernel.conftest import ip_holding, kill_if_held, still_held, wait_held
from tests.unit.lab.node_scenarios import EXPECTED_ON_NODES, TWO_NODES, cluster_policies_on_nodes


def summary(text: str) -> tuple[int, int]:
    match = re.search(r"^(\d+) cells probed, (\d+) mismatches", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)), int(match.group(2))


# ── real packets ────────────────────────────────────────────────────────────────────────────


@pytest.mark.usefixtures("netns_guard")
def test_shop_example_has_no_mismatch_and_leaves_the_root_namespace_alone(example_path):
    root_before = root_namespace()
    code, out, err = run_cli("verify", "-f", example_path)
    assert code == EXIT_OK, out + err
    # 11 pods, 10 probes, IPv4 only; every pod to both nodes' InternalIPs
    assert summary(out) == (11 * 11 * 10 + 11 * 2 * 10, 0)
    assert "(1210 pod -> pod, 220 pod -> node;" in out
    assert "hostNetwork" in out
    assert root_namespace() == root_before


def root_namespace() -> tuple[str, ...]:
    """What verify must never touch outside its namespaces: links, nft tables, the sysctls it sets."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    sysctls = subprocess.run(["sysctl", "-n", *(s.split("=")[0] for s in lab_module.NODE_SYSCTLS)],
                             capture_output=True, text=True, check=True).stdout
    return tuple(sorted(line.split("@")[0].split(":")[1] for line in links.splitlines())), tables, sysctls


@pytest.mark.usefixtures("netns_guard")
def test_a_server_that_cannot_start_is_a_clear_error(monkeypatch, example_path):
    monkeypatch.setattr(verify_module, "TRAFFIC_SCRIPT", "/nonexistent/lab_traffic.py")
    code, _, err = run_cli("verify", "-f", example_path)
    assert code == EXIT_INVALID_INPUT and "did not start" in err and "/nonexistent" in err


@pytest.mark.usefixtures("netns_guard")
def test_only_one_node(example_path):
    code, out, _ = run_cli("verify", "-f", example_path, "--node", "node-a", "--port", "5432", "--port", "53/UDP")
    state = load_state([example_path])
    on_b = sum(1 for p in state.active_pods if p.node_name == "node-b")
    # pod → node: every pod to node-a, node-a's pods to node-b
    assert code == EXIT_OK and summary(out) == ((11 * 11 - on_b * on_b) * 2 + (11 + 11 - on_b) * 2, 0)


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


@pytest.mark.usefixtures("netns_guard")
def test_a_dropped_rule_is_found_through_the_cli(monkeypatch):
    # The dropped rule's cells are blocked for real, so their second try would wait the whole
    # CONFIRM_TIMEOUT. Shorter is safe here: slowness can only add mismatches, and what this test
    # asserts — a mismatch, and this one among them — holds on any machine.
    monkeypatch.setattr(verify_module, "CONFIRM_TIMEOUT", 2.0)
    monkeypatch.setattr("netpol.backends.nftables.render", drop_rule("NetworkPolicy shop/web-in spec.ingress[0]"))
    monkeypatch.setattr("netpol.cli.load_state_with_report", lambda paths, skip_unknown: (dual_stack(), LoadReport()))
    code, out, _ = run_cli("verify", "-f", "-")
    assert code == EXIT_MISMATCH
    assert "ops/client -> shop/web-2 8081/TCP (IPv6): kernel=blocked semantics=open" in out
    assert summary(out)[1] > 0


@pytest.mark.usefixtures("netns_guard")
def test_a_ruleset_that_accepts_everything_is_found():
    report = verify(dual_stack(), render=accept_everything)
    assert report.mismatches and all(r.kernel_open and not r.cell.expected for r in report.mismatches)
    assert "kernel=open semantics=blocked" in format_report(report)


@pytest.mark.usefixtures("netns_guard")
def test_a_ruleset_nft_refuses_is_exit_3_and_cleaned_up(monkeypatch, example_path):
    monkeypatch.setattr("netpol.backends.nftables.render", lambda program: "table inet netpol { nonsense }\n")
    code, _, err = run_cli("verify", "-f", example_path)
    assert code == EXIT_MISMATCH and "nft refused the compiled ruleset of node node-a" in err
    with pytest.raises(RulesetRejected):
        verify(load_state([example_path]), render=lambda program: "bogus\n")


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


# ── pod → node cells ────────────────────────────────────────────────────────────────────────

NODE_PROBES = [Probe("TCP", 80), Probe("UDP", 53)]


def node_outcomes(report: Report) -> dict[tuple[str, str, int], tuple[bool, bool]]:
    """Pod → node cells: (source pod, node address, port) → (kernel open, semantics open)."""
    return {(r.cell.src, str(r.cell.dst_ip), r.cell.port): (r.kernel_open, r.cell.expected)
            for r in report.results if r.cell.to_node}


def expect(cells: dict[tuple[str, str, int], bool]) -> dict[tuple[str, str, int], tuple[bool, bool]]:
    return {cell: (is_open, is_open) for cell, is_open in cells.items()}


@pytest.mark.usefixtures("netns_guard")
def test_pod_to_node_cells_without_cluster_policies():
    # b/client may leave its pod only for node-a's IPv4 address, on 80/TCP
    state = cluster(TWO_NODES + pod_yaml("a", "web", "10.10.0.10,fd10:a::10", node="node-a")
                    + pod_yaml("b", "client", "10.10.1.20,fd10:b::20", node="node-b") + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: b}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 172.30.0.1/32}}], ports: [{port: 80}]}]
""")
    report = verify(state, NODE_PROBES)
    assert not report.mismatches, format_report(report)
    cells = node_outcomes(report)
    web = {("a/web", node, port): True for node in ("172.30.0.1", "fd30::1", "172.30.0.2", "fd30::2")
           for port in (80, 53)}
    own = {("b/client", node, port): True for node in ("172.30.0.2", "fd30::2") for port in (80, 53)}
    other = {("b/client", "172.30.0.1", 80): True, ("b/client", "172.30.0.1", 53): False,
             ("b/client", "fd30::1", 80): False, ("b/client", "fd30::1", 53): False}
    assert cells == expect(web | own | other)  # its own node: always (no cluster policy)
    assert "(16 pod -> pod, 16 pod -> node;" in format_report(report)


@pytest.mark.usefixtures("netns_guard")
def test_pod_to_node_cells_with_cluster_policies():
    report = verify(cluster_policies_on_nodes(), NODE_PROBES)
    assert not report.mismatches, format_report(report)
    assert node_outcomes(report) == expect(EXPECTED_ON_NODES)  # (the scenario says why, cell by cell)


def without_hook(hook: str):
    """A broken backend: the table's `hook` chain demoted to a regular chain nothing jumps to."""
    def broken(program: NodeProgram) -> str:
        return "".join(line for line in render(program).splitlines(keepends=True)
                       if f"type filter hook {hook} " not in line)
    return broken


@pytest.mark.usefixtures("netns_guard")
def test_a_ruleset_without_its_input_hook_lets_an_own_node_deny_through(monkeypatch):
    # The blocked cells that now open were never slow: a short second try is enough here.
    monkeypatch.setattr(verify_module, "CONFIRM_TIMEOUT", 2.0)
    state = cluster_policies_on_nodes()
    assert "type filter hook input " in render(compile_cluster(state)["node-a"])  # what is planted away
    report = verify(state, NODE_PROBES, render=without_hook("input"))
    wrong = {(r.cell.src, str(r.cell.dst_ip), r.cell.port, r.outcome) for r in report.mismatches}
    # own-node cells only: a pod's traffic to another node is forwarded, never seen by `input`
    assert wrong == {("locked/admin-denied", ip, p, "open") for ip in ("172.30.0.1", "fd30::1") for p in (80, 53)} | {
        ("open/baseline-denied", "172.30.0.2", p, "open") for p in (80, 53)}
    assert "locked/admin-denied -> node node-a (172.30.0.1) 80/TCP (IPv4): kernel=open semantics=blocked" \
        in format_report(report)


# ── cleanup, whatever happens ───────────────────────────────────────────────────────────────


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
    code, _, _ = run_cli("verify", "-f", example_path)
    assert code == 130 and len(spawned) == 24  # 11 pod servers, 2 node servers, 11 probers
    # Killed, not awaited: every source pod has cells the ruleset drops, so no prober can be
    # done before its 60 s, and a server ends only when killed. A process awaited would exit 0.
    assert all(proc.poll() == -signal.SIGKILL for proc in spawned)


HOLD_PHASES = {  # the `ip` arguments (tests/kernel/conftest.py `ip_holding`) that mark each phase
    "building": "-batch -",  # the fabric's first links: the lab is being built
    "loading": "nft -f -",  # the first node's ruleset: the lab is built, verify waits for nft
    "probing": "traffic.py probe",  # the first prober: verify waits for the probers' answers
}


@pytest.mark.usefixtures("netns_guard")
@pytest.mark.parametrize("phase", list(HOLD_PHASES))
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_nothing_behind(example_path, tmp_path, signum, code, phase):
    env, pid_file = ip_holding(tmp_path, HOLD_PHASES[phase])
    proc = subprocess.Popen([sys.executable, "-m", "netpol.cli", "verify", "-f", example_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pid = wait_held(proc, pid_file)
    try:
        proc.send_signal(signum)  # (also when it never got there: verify then still tears down)
        out, err = proc.communicate(timeout=120)  # a hang bound: a saturated machine tears down slowly
        left_running = still_held(pid)
    finally:
        kill_if_held(pid)
    assert pid is not None, f"verify never reached the phase (exit {proc.returncode}): {out}{err}"
    assert proc.returncode == code, out + err
    assert "Traceback" not in err
    assert not left_running, "verify left the held process running"


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
