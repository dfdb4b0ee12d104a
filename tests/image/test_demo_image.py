"""`netpol demo --image`: the built image on the lab's three nodes, run as the rendered DaemonSet
says (install-cni, then the agent, in podman, with the node's service-account files, against an
HTTPS API server that enforces the bundle's ClusterRole), pods attached by the plugin install-cni
put on each node. Every cell of every scenario matches the semantics, a rolling update of one
agent opens no window (denied cells stay denied, allowed ones open, from the SIGTERM to the new
agent's first sync), the API server refuses nothing, and nothing outlives the run: no namespace,
no container, no file — and nothing is written to the machine's own CNI directories. Ctrl-C with
the agents' containers running removes them too."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netpol.lab.podman import PODMAN
from tests.conftest import HANG, wait_until
from tests.kernel.conftest import ip_holding, kill_if_held, lab_namespaces, netns_guard, still_held, wait_held
from tests.kernel.test_demo import Lines

__all__ = ["netns_guard"]  # the fixture, imported for usefixtures below
pytestmark = pytest.mark.usefixtures("netns_guard")

DEMO_TIMEOUT = 600.0  # s: a hang bound (the run takes ~25 s)
LAB_CONTAINER = re.compile(r"^np-[0-9a-f]{6}-")  # netpol.lab.daemonset names them np-TAG-<node>-<pod>-<container>
# What the demo would write on the machine if a path were not mapped into its per-node roots
# (other tests' cnitool writes /var/lib/cni/results, so only these are compared).
MACHINE_PATHS = ("/opt/cni", "/etc/cni/net.d/10-netpol.conflist", "/var/lib/cni/netpol-cni",
                 "/var/lib/cni/networks/netpol")
RESTART = re.compile(r"from SIGTERM to that first sync: (\d+) denied cells tried (\d+) times, (\d+) got through "
                     r"\((\d+) tries, (\d+) through, with no agent running or synced\); (\d+) allowed cells tried "
                     r"(\d+) times, (\d+) got through")


def lab_containers() -> list[str]:
    listed = subprocess.run([*PODMAN, "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True,
                            check=True).stdout.split()
    return sorted(name for name in listed if LAB_CONTAINER.match(name))


def machine_paths() -> dict[str, list[tuple[str, int]]]:
    """Each path that exists, with everything below it and its mtime."""
    found = {}
    for path in map(Path, MACHINE_PATHS):
        if path.exists():
            found[str(path)] = sorted((str(p), p.stat().st_mtime_ns) for p in [path, *path.rglob("*")])
    return found


def test_the_image_runs_as_its_daemonset_says_and_a_rolling_update_opens_no_window(image):
    before = (lab_containers(), machine_paths())
    done = subprocess.run([sys.executable, "-m", "netpol.cli", "demo", "--image", image], capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT, check=False)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    assert f"the DaemonSet of `netpol manifests --image {image}` on each" in out.splitlines()[0]
    for node, cidr in (("node-a", "10.244.0.0/24"), ("node-b", "10.244.1.0/24"), ("node-c", "10.244.2.0/24")):
        assert f"{node}: install-cni: /etc/cni/net.d/10-netpol.conflist: written ({cidr})" in out
        assert f"{node}: install-cni: /opt/cni/bin/netpol-cni: installed" in out
    assert "14 scenarios, every cell matched the semantics" in out and out.count("enforced on") == 14
    assert "20 sent, 0 arrived" in out and "SPOOFING FAILED" not in out  # the installed plugin's anti-spoofing
    assert ": 0 got through" in next(line for line in out.splitlines() if "leak window" in line)
    assert "[14/14] rolling update of node-a's agent" in out and "ROLLING UPDATE FAILED" not in out
    assert re.search(r"old agent exited 0 [\d.]+ s after SIGTERM", out)
    restart = RESTART.search(out)
    assert restart is not None, out[-3000:]
    cells, denied, leaked, gap, gap_leaked, allowed_cells, allowed, opened = map(int, restart.groups())
    assert (leaked, gap_leaked) == (0, 0) and opened == allowed
    assert denied >= 2 * cells and gap >= cells and allowed >= 2 * allowed_cells  # probed throughout, not once
    assert "new pod: install-cni: /etc/cni/net.d/10-netpol.conflist: unchanged (10.244.0.0/24)" in out
    assert re.search(r"API server: \d+ requests from install-cni and the agents, as "
                     r"system:serviceaccount:netpol:netpol, all within the bundle's ClusterRole \(0 refused\)", out)
    assert (lab_containers(), machine_paths()) == before
    assert not list(Path("/tmp").glob("netpol-demo-*"))


def test_ctrl_c_with_the_agents_containers_running_removes_them(image, tmp_path):
    before = (lab_namespaces(), lab_containers())
    # Held: bringing up the first pod sandbox's loopback, once every node's agent container runs.
    env, pid_file = ip_holding(tmp_path, "-p0 -batch -")
    proc = subprocess.Popen([sys.executable, "-m", "netpol.cli", "demo", "--image", image], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(env, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    pid = wait_held(proc, pid_file)
    try:
        def running() -> list[str]:
            return [name for name in lab_containers() if name not in before[1]]
        wait_until(lambda: len(running()) == 3, "every node's agent container created")
        agents = running()
        modes = [subprocess.run([*PODMAN, "inspect", "--format", "{{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}} "
                                 "{{.HostConfig.UTSMode}}", name], capture_output=True, text=True,
                                check=False).stdout.split() for name in agents]
        made = set(lab_namespaces()) - set(before[0])
        proc.send_signal(signal.SIGINT)
        proc.wait(2 * HANG)
        left_running = still_held(pid)
    finally:
        kill_if_held(pid)
    assert pid is not None, out.text() + err.text()
    assert all(name.endswith("-agent") for name in agents), agents
    for network, pid_mode, uts_mode in modes:  # the node's namespace, made by this run; nothing of the host's
        assert network.startswith("ns:/run/netns/") and network.removeprefix("ns:/run/netns/") in made
        assert (pid_mode, uts_mode) == ("private", "private")
    assert proc.returncode == 130, out.text() + err.text()
    assert "Traceback" not in err.text() and not left_running
    assert (lab_namespaces(), lab_containers()) == before
    assert not list(Path("/tmp").glob("netpol-demo-*"))
