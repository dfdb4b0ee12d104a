"""`netpol demo` end to end: three nodes in network namespaces, pods attached by netpol-cni,
the in-process API server in the fabric, one `netpol agent` process per node, eight scenarios
probed cell by cell with real packets. It must match the semantics everywhere, and leave
nothing behind — also when interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.conftest import lab_namespaces

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
    assert "8 scenarios, every cell matched the semantics" in out
    for title in ("default-deny", "named port `api`", "relabel", "delete db/allow-postgres", "add pod",
                  "remove pod"):
        assert title in out
    assert out.count("enforced on") == 8 and "mismatch" in out
    leak = next(line for line in out.splitlines() if "leak window" in line)
    assert leak.endswith(": 0 got through") and " 0 connections tried" not in leak
    assert lab_namespaces() == before and demo_processes() == []
    assert not list(Path("/tmp").glob("netpol-demo-*"))


def test_ctrl_c_mid_demo_tears_everything_down():
    before = lab_namespaces()
    proc = subprocess.Popen([sys.executable, "-m", "netpol.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not demo_processes():  # the agents are up: the cluster is fully built
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert lab_namespaces() == before and demo_processes() == []
