"""What runs netpol on the demo's nodes, two ways behind one interface (`NodeSoftware`): the API
server the agents watch, an agent per node, the CNI plugin the pods are attached by.

* `CheckoutNodes` (`netpol demo`): this checkout. `netpol agent` processes inside the node
  namespaces with a kubeconfig, the API server over plain HTTP; netpol-cni installed into the
  run's directory and called with the demo's own configuration, which pins every pod's address
  (`runtimeConfig.ips`) to the one in the example's manifests.
* `ImageNodes` (`netpol demo --image REF`): the built image, as the install bundle says. The API
  server serves HTTPS with a CA made in the run and enforces the bundle's ClusterRole; on each
  node the DaemonSet's pod runs in podman (`netpol.lab.daemonset`): install-cni, then the agent,
  with the node's service-account files; pods are attached by the plugin install-cni put on the
  node, with the conflist it wrote, called as a container runtime calls it
  (`netpol.lab.cni_runtime`). That conflist declares no `ips` capability, and a runtime hands a
  plugin only what it declares, so host-local chooses the pods' addresses, and the pods are
  published with them, as a kubelet reports what CNI gave it; the semantics are computed from
  what the API holds, so every check stands as it is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from netpol.errors import LabError
from netpol.lab import daemonset
from netpol.lab.cluster import Lab
from netpol.lab.cni_runtime import NodeRuntime, Sandbox
from netpol.model import IPAddress, Pod
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.pki import make_serving_certificate

API_ADDRESS = ipaddress.ip_address("192.168.254.1")  # the API server, on the fabric bridge
API_PORT = 6443
BOOKMARK_INTERVAL = 5.0  # s between the API server's BOOKMARKs
REFERENCE_PLUGINS = Path("/usr/lib/cni")
AGENT_TIMING = ("--min-interval", "0.005", "--max-interval", "0.1")  # the checkout's agents: quick syncs


class NodeSoftware(Protocol):
    """How netpol runs on the demo's nodes (see the module)."""

    api: FakeApiServer
    pinned: bool  # pods get the manifests' addresses (else the IPAM plugin's)

    def describe(self, pods: int) -> str:
        """The demo's first line: what runs where."""

    def notes(self) -> list[str]:
        """What setting the nodes up said (printed under the first line)."""

    def start_agent(self, node: str) -> subprocess.Popen[str]:
        """The node's agent, started: its process, the agent's JSON log on its stderr."""

    def cni(self, command: str, pod: Pod, netns: str) -> dict[str, Any] | None:
        """CNI ADD or DEL of `pod`, whose sandbox is network namespace `netns`: the result."""

    def audit(self) -> list[str]:
        """What went wrong beyond the scenarios (each line a failure of the demo)."""

    def summary(self) -> list[str]:
        """What to say at the end when `audit` found nothing."""


def assigned_addresses(result: dict[str, Any] | None) -> tuple[IPAddress, ...]:
    """The pod's addresses in a CNI result."""
    return tuple(ipaddress.ip_address(ip["address"].split("/")[0]) for ip in (result or {}).get("ips") or ())


# ── this checkout ─────────────────────────────────────────────────────────────────────────────


@dataclasses.dataclass
class CheckoutNodes:
    lab: Lab
    api: FakeApiServer
    work: Path
    kubeconfig: Path
    pinned: bool = True

    def describe(self, pods: int) -> str:
        return (f"{len(self.lab.node_netns)} nodes, {pods} pods attached by netpol-cni, one agent per node "
                f"(inside its namespace), API server at {self.api.url}")

    def notes(self) -> list[str]:
        return []

    def audit(self) -> list[str]:
        return []

    def summary(self) -> list[str]:
        return []

    def start_agent(self, node: str) -> subprocess.Popen[str]:
        return self.lab.spawn(self.lab.node_netns[node], [
            sys.executable, "-m", "netpol.cli", "agent", "--node", node, "--kubeconfig", str(self.kubeconfig),
            "--listen", "127.0.0.1:9909", *AGENT_TIMING])

    def cni_config(self, pod: Pod) -> dict[str, Any]:
        plan = next(n for n in self.lab.plan.nodes if n.name == pod.node_name)
        gateway = next(g for g in plan.gateways if g.version == 4)
        return {"cniVersion": "1.0.0", "name": "demo", "type": "netpol-cni", "bridge": "cni0",
                "isGateway": True, "isDefaultGateway": True, "dataDir": str(self.work / "cni-state"),
                "runtimeConfig": {"ips": [f"{ip}/{gateway.network.prefixlen}" for ip in pod.ips]},
                "ipam": {"type": "host-local", "dataDir": str(self.work / "ipam" / plan.name),
                         "ranges": [[{"subnet": str(gateway.network), "gateway": str(gateway.ip)}]]}}

    def cni(self, command: str, pod: Pod, netns: str) -> dict[str, Any] | None:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": pod.key.replace("/", "_"), "CNI_NETNS": f"/run/netns/{netns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(self.work / "bin")}
        node_netns = self.lab.node_netns[pod.node_name or ""]
        done = subprocess.run(["ip", "netns", "exec", node_netns, str(self.work / "bin" / "netpol-cni")],
                              input=json.dumps(self.cni_config(pod)), env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise LabError(f"netpol-cni {command} for {pod.key} failed: "
                           f"{done.stdout.strip()} {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else None


def _install_plugins(work: Path) -> None:
    """netpol-cni as a node gets it: its installer, run as a process (the plugin shares no code
    with netpol; it is installed beside it, as the `netpol_cni` package of this distribution)."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    installer = [sys.executable, "-m", "netpol_cni.install", str(work / "bin"), "--lib", str(work / "lib"),
                 "--python", python]
    done = subprocess.run(installer, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"installing netpol-cni failed: {done.stderr.strip() or done.returncode}")
    host_local = REFERENCE_PLUGINS / "host-local"
    if not host_local.exists():
        raise LabError("the demo needs host-local (Debian: apt-get install containernetworking-plugins)")
    (work / "bin" / "host-local").symlink_to(host_local)


def checkout_nodes(lab: Lab, work: Path, stack: ExitStack) -> CheckoutNodes:
    api = FakeApiServer(bookmark_interval=BOOKMARK_INTERVAL).start(str(API_ADDRESS), API_PORT,
                                                                 netns=lab.plan.fabric_netns)
    stack.callback(api.stop)
    _install_plugins(work)
    return CheckoutNodes(lab, api, work, api.kubeconfig(work / "kubeconfig"))


# ── the image, as its DaemonSet says ──────────────────────────────────────────────────────────


@dataclasses.dataclass
class ImageNodes:
    image: str
    lab: Lab
    api: FakeApiServer
    runner: daemonset.DaemonSetRunner
    hosts: dict[str, daemonset.NodeHost]
    runtimes: dict[str, NodeRuntime]
    pods: dict[str, daemonset.PodRun] = dataclasses.field(default_factory=dict)
    pinned: bool = False

    def describe(self, pods: int) -> str:
        return (f"{len(self.hosts)} nodes, the DaemonSet of `netpol manifests --image {self.image}` on each "
                f"(podman: install-cni, then the agent), {pods} pods attached by the installed netpol-cni, "
                f"API server at {self.api.url} (TLS, the bundle's ClusterRole enforced)")

    def start_agent(self, node: str) -> subprocess.Popen[str]:
        """The node's pod: install-cni, then the agent; the network it installed is validated
        as a runtime loading it would (a failing plugin is most likely an image older than this
        checkout's netpol-cni)."""
        run = self.pods[node] = self.runner.start(self.hosts[node])
        try:
            self.runtimes[node].validate()
        except LabError as exc:
            raise LabError(f"{exc} (is {self.image} older than this checkout? make image)") from None
        return run.process

    def notes(self) -> list[str]:
        """What each node's init containers printed, the node named."""
        return [f"{node}: {line}" for node, run in self.pods.items() for line in run.installed]

    def audit(self) -> list[str]:
        """Every request the API server refused: outside the bundle's ClusterRole, or unauthenticated."""
        return ([f"RBAC refused {refused}" for refused in self.api.forbidden_requests()]
                + [f"unauthenticated: {request}" for request in self.api.unauthorized_requests()])

    def summary(self) -> list[str]:
        return [f"API server: {len(self.api.requests)} requests from install-cni and the agents, as "
                f"{self.runner.bundle.user}, all within the bundle's ClusterRole (0 refused)"]

    def cni(self, command: str, pod: Pod, netns: str) -> dict[str, Any] | None:
        runtime = self.runtimes[pod.node_name or ""]
        sandbox = Sandbox(pod.namespace, pod.name, f"/run/netns/{netns}")
        if command == "ADD":
            return runtime.add(sandbox)
        runtime.delete(sandbox)
        return None

    def stop_agent(self, node: str) -> tuple[int | None, float]:
        """SIGTERM to the node's agent container, as a rolling update deletes its pod: the exit
        code and the seconds it took."""
        return self.runner.stop(self.pods[node])

    def wait_ready(self, node: str) -> float:
        return self.runner.wait_ready(self.pods[node])


def image_nodes(lab: Lab, image: str, work: Path, stack: ExitStack) -> ImageNodes:
    """The API server for the image's pods, and what runs them (nothing started yet)."""
    if shutil.which("podman") is None:
        raise LabError("the demo needs podman to run the image (Debian: apt-get install podman runc)")
    bundle = daemonset.rendered_bundle(image)
    certificate = make_serving_certificate(work / "pki", [str(API_ADDRESS)])
    api = FakeApiServer(bookmark_interval=BOOKMARK_INTERVAL, tls=certificate, user=bundle.user,
                        rbac=bundle.cluster_role_rules()).start(str(API_ADDRESS), API_PORT,
                                                                 netns=lab.plan.fabric_netns)
    stack.callback(api.stop)
    hosts = {n.name: daemonset.NodeHost(n.name, str(next(a for a in n.fabric_addresses if a.version == 4)),
                                        n.netns, work / n.name / "root") for n in lab.plan.nodes}
    runner = daemonset.DaemonSetRunner(lab, bundle, work, str(API_ADDRESS), API_PORT, api.service_account)
    runtimes = {name: NodeRuntime(name, host.root, host.netns) for name, host in hosts.items()}
    return ImageNodes(image, lab, api, runner, hosts, runtimes)
