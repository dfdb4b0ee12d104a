"""`netpol demo` end to end: three nodes in network namespaces, pods attached by netpol-cni,
the in-process API server in the fabric, one `netpol agent` process per node, nine scenarios
probed cell by cell with real packets, one of them a pod forging another's address. It must match
the semantics everywhere, let no forged packet through, and leave nothing behind — also when
interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from typing import IO

import pytest

from netpol.lab.cluster import lab_pods, run_command
from netpol.lab.demo import SPOOF_PACKETS, SPOOFING, live_cluster, on_three_nodes
from netpol.load.manifests import load_state
from tests.conftest import EXAMPLE, HANG
from tests.kernel.conftest import ip_holding, kill_if_held, lab_namespaces, still_held, wait_held

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None
                                 or not Path("/usr/lib/cni/host-local").exists(),
                                 reason="needs root, nft and containernetworking-plugins"),
              pytest.mark.usefixtures("netns_guard")]


def demo_processes() -> list[str]:
    listed = subprocess.run(["pgrep", "-af", "netpol.cli agent"], capture_output=True, text=True, check=False)
    return [line for line in listed.stdout.splitlines() if "--kubeconfig" in line and "netpol-demo-" in line]


def test_the_demo_converges_on_every_scenario_and_cleans_up():
    before = lab_namespaces()
    done = subprocess.run([sys.executable, "-m", "netpol.cli", "demo"], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "13 scenarios, every cell matched the semantics" in out
    for title in ("default-deny", "named port `api`", "spoofing: frontend/web-1 forges", "relabel",
                  "delete db/allow-postgres", "add pod", "remove pod", "[10/13] Admin tier: frontend-guard",
                  "[11/13] Admin tier: delegate-prometheus", "[12/13] Baseline tier: monitoring-default-deny",
                  "[13/13] NetworkPolicy monitoring/prometheus-scrape"):
        assert title in out
    assert out.count("enforced on") == 13 and "mismatch" in out
    guarded = out[out.index("[10/13]"):]
    assert "enforced on no node" not in guarded  # each guardrail changed some node's ruleset
    assert "[5/13] spoofing" in out  # after the policies that let only the api pods reach postgres
    forged = next(line.strip() for line in out.splitlines() if "forged backend/api-1's address" in line)
    assert forged == ("spoofing: frontend/web-1 forged backend/api-1's address (10.244.0.20) → "
                      "db/postgres-0:5432: 20 sent, 0 arrived")
    honest = next(line.strip() for line in out.splitlines() if line.strip().startswith("honest "))
    assert honest == ("honest backend/api-1 → db/postgres-0:5432: 20 sent, 20 arrived; "
                      "frontend/web-1 from its own address: 20 sent, 0 arrived")
    assert "SPOOFING FAILED" not in out
    leak = next(line for line in out.splitlines() if "leak window" in line)
    assert leak.endswith(": 0 got through") and " 0 connections tried" not in leak
    assert lab_namespaces() == before and demo_processes() == []
    assert not list(Path("/tmp").glob("netpol-demo-*"))


class Lines:
    """Every line a pipe delivers, read on a thread of its own until EOF (so that neither of a
    child's pipes can fill up and stall it while the test waits for something else)."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(pipe), daemon=True)
        self.thread.start()

    def text(self) -> str:
        """Everything, once the pipe's writers have all closed it (a hang bound only)."""
        self.thread.join(HANG)
        return "".join(self.lines)


def first_added_pod_netns_suffix() -> str:
    """Scenario 8 (`add pod`) makes the first pod namespace after the lab's own: `-pN` with N
    the number of pods the lab was built with."""
    return f"-p{len(lab_pods(on_three_nodes(load_state([str(EXAMPLE)]))))}"


def test_ctrl_c_mid_demo_tears_everything_down(tmp_path):
    before = lab_namespaces()
    # Held: the `ip -n np-…-pN -batch -` that brings up the new pod's loopback in scenario 8.
    env, pid_file = ip_holding(tmp_path, f"{first_added_pod_netns_suffix()} -batch -")
    proc = subprocess.Popen([sys.executable, "-m", "netpol.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(env, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    pid = wait_held(proc, pid_file)
    try:
        proc.send_signal(signal.SIGINT)  # (also when it never got there: the demo then still tears down)
        proc.wait(2 * HANG)  # a hang bound: a saturated 2-core machine can be slow to tear down
        left_running = still_held(pid)
    finally:
        kill_if_held(pid)
    assert pid is not None, out.text() + err.text()
    assert "[7/13]" in out.text() and "[8/13]" not in out.text()  # mid-demo: inside scenario 8
    assert proc.returncode == 130, out.text() + err.text()
    assert "Traceback" not in err.text()
    assert not left_running, "the demo left the held process running"
    assert lab_namespaces() == before and demo_processes() == []
    assert not list(Path("/tmp").glob("netpol-demo-*"))


def test_the_spoofing_scenario_fails_without_netpol_cnis_anti_spoofing():
    """What the spoofing scenario measures is the plugin's anti-spoofing, not the policies: with
    `table bridge netpol_cni` gone from the node, the agent's ruleset lets the forged SYNs through
    (they carry an allowed pod's address), and the scenario counts them and fails."""
    example = load_state([str(EXAMPLE)])
    with live_cluster(example, StringIO()) as demo:
        demo.apply_policies(example.policies)
        demo.wait_enforced(demo.take_targets(), time.monotonic())
        demo.state = demo.current_state()
        demo.spoof(SPOOFING)
        assert demo.spoofing is not None and demo.spoofing.held, demo.spoofing
        assert demo.spoofing.arrived == {"forged": 0, "own": 0, "honest": SPOOF_PACKETS}
        victim_node = next(p.node_name for p in demo.state.pods if p.key == SPOOFING.victim)
        run_command(["ip", "netns", "exec", demo.lab.node_netns[victim_node or ""],
                     "nft", "delete", "table", "bridge", "netpol_cni"])
        demo.spoof(SPOOFING)
        assert demo.spoofing is not None and not demo.spoofing.held
        assert demo.spoofing.arrived == {"forged": SPOOF_PACKETS, "own": 0, "honest": SPOOF_PACKETS}
        assert demo.spoofing.problems == [f"{SPOOF_PACKETS} forged SYN(s) arrived"]
    assert not list(Path("/tmp").glob("netpol-demo-*"))
