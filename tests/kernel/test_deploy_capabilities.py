"""The DaemonSet's agent container asks for NET_ADMIN alone: the real `netpol agent`, started
with the command, environment and capabilities of the rendered manifest (root with exactly
those in its bounding set, as a container runtime leaves it) inside a node namespace this test
makes, lists from the API server, loads its table, adds its host-gw route, answers /readyz on
the node's address, and repairs a deleted table. The same process with no capability at all
cannot start: the check has teeth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from netpol.deploy.manifests import render_objects
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import REPO, example_objects, wait_until
from tests.kernel.conftest import fresh_netns, nft

NODE, NODE_IP, OTHER_NODE_IP = "node-a", "192.168.50.10", "192.168.50.11"  # the shop example's nodes
pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
netns = pytest.fixture(fresh_netns)


def agent_container() -> dict:
    daemonset, = [o for o in render_objects() if o["kind"] == "DaemonSet"]
    agent, = daemonset["spec"]["template"]["spec"]["containers"]
    return agent


def agent_argv(capabilities: list[str], kubeconfig: Path) -> list[str]:
    """The container's command, its $(VAR)s expanded as the kubelet does, `netpol` as this
    checkout's, under root with only `capabilities`."""
    env = {"NODE_NAME": NODE, "NODE_IP": NODE_IP}
    command = [word.replace("$(NODE_NAME)", env["NODE_NAME"]).replace("$(NODE_IP)", env["NODE_IP"])
               for word in agent_container()["command"]]
    assert command[0] == "netpol"
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    return ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", sys.executable, "-m", "netpol.cli",
            *command[1:], "--kubeconfig", str(kubeconfig)]


def node_namespace(netns: str) -> None:
    for argv in (["link", "set", "lo", "up"], ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["link", "set", "eth0", "up"], ["link", "set", "eth1", "up"],
                 ["addr", "add", f"{NODE_IP}/24", "dev", "eth0"]):
        subprocess.run(["ip", "-n", netns, *argv], check=True)


def readyz(netns: str, port: int) -> str:
    probe = f"import urllib.request; print(urllib.request.urlopen('http://{NODE_IP}:{port}/readyz', timeout=5).read())"
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe], capture_output=True,
                          text=True, check=False).stdout


class Agent:
    def __init__(self, argv: list[str], netns: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr or ()), daemon=True).start()

    def logged(self, msg: str) -> int:
        return sum(1 for line in self.lines if line.startswith("{") and json.loads(line).get("msg") == msg)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def api(netns):
    """The in-process API server, listening inside the node namespace, holding the shop example."""
    node_namespace(netns)
    server = FakeApiServer(bookmark_interval=0.5).start("127.0.0.1", 0, netns=netns)
    try:
        server.apply_all(example_objects())
        yield server
    finally:
        server.stop()


def test_the_manifests_capabilities_are_enough(netns, api, tmp_path):
    capabilities = agent_container()["securityContext"]["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    agent = Agent(agent_argv(capabilities["add"], api.kubeconfig(tmp_path / "kubeconfig")), netns)
    try:
        wait_until(lambda: agent.logged("synced") or agent.proc.poll() is not None, "the first sync")
        assert agent.proc.poll() is None, "".join(agent.lines[-5:])
        assert "table inet netpol" in nft(netns, "list", "tables").stdout
        routes = subprocess.run(["ip", "-n", netns, "route", "show", "proto", "199"], capture_output=True,
                                text=True, check=True).stdout
        assert f"10.244.1.0/24 via {OTHER_NODE_IP}" in routes
        port = agent_container()["ports"][0]["containerPort"]
        assert readyz(netns, port) == "b'ok\\n'\n"
        nft(netns, "delete", "table", "inet", "netpol")  # drift: noticed through nftables' notifications
        wait_until(lambda: "table inet netpol" in nft(netns, "list", "tables").stdout, "the table restored")
    finally:
        agent.stop()


def test_without_net_admin_the_agent_cannot_start(netns, api, tmp_path):
    agent = Agent(agent_argv([], api.kubeconfig(tmp_path / "kubeconfig")), netns)
    try:
        wait_until(lambda: agent.proc.poll() is not None, "the agent's exit")
        assert agent.proc.returncode == 1
        assert any("EPERM" in line for line in agent.lines)
    finally:
        agent.stop()
