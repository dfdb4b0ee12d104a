"""The container runtime's side of CNI on a lab node, done as libcni does it for containerd and
CRI-O: the network is the first configuration in the node's conf dir in name order (`.conf`,
`.conflist`, `.json`); its plugins run from the node's bin dir (CNI_PATH), inside the node's
network namespace, each given the list's `name` and `cniVersion`, the previous plugin's result
as `prevResult`, and `runtimeConfig` only for the capabilities it declares `true` (what the
runtime offers and the plugin does not declare is dropped, as libcni drops it); DEL runs them in
reverse, with the ADD's result as prevResult. CNI_ARGS are the ones containerd sends.

The one deviation, state directories: plugins keep state on their node (netpol-cni its records
in /var/lib/cni/netpol-cni, host-local its reservations in /var/lib/cni/networks). Lab nodes share
the machine, whose /var/lib/cni is not the lab's to write, so the configuration handed to a
plugin moves its state directory under the node's root (`<root>/var/lib/cni/…`); the file on the
node stays as install-cni wrote it. A plugin whose state directory is not known here is refused
rather than let write to the machine's. The runtime's own cache of results is kept in memory
(libcni writes /var/lib/cni/results).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from netpol.errors import LabError

BIN_DIR = "/opt/cni/bin"  # containerd's and CRI-O's defaults, as the node sees them
CONF_DIR = "/etc/cni/net.d"
CONF_SUFFIXES = (".conf", ".conflist", ".json")  # libcni's ConfFiles
# Where each plugin keeps state, and its default there (the key is the plugin's own section's,
# or its `ipam` section's for an IPAM plugin): plugin/netpol_cni/config.py DEFAULT_DATA_DIR, and
# containernetworking/plugins' host-local defaultDataDir.
STATE_DIRS = {"netpol-cni": ("dataDir", "/var/lib/cni/netpol-cni"),
              "host-local": ("dataDir", "/var/lib/cni/networks")}
CALL_TIMEOUT = 60.0  # s one plugin call may take: a hang bound (an ADD takes ~15 ms)


@dataclass(frozen=True)
class Sandbox:
    """A pod's network sandbox as the runtime names it to the plugins."""

    namespace: str
    name: str
    netns: str  # path: /run/netns/NAME
    ifname: str = "eth0"

    @property
    def container_id(self) -> str:
        """The sandbox's ID (64 hex digits, like containerd's), stable for the pod."""
        return hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()

    @property
    def cni_args(self) -> str:
        uid = hashlib.sha256(f"uid:{self.namespace}/{self.name}".encode()).hexdigest()
        return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={self.container_id};K8S_POD_UID={uid[:8]}-{uid[8:12]}-"
                f"{uid[12:16]}-{uid[16:20]}-{uid[20:32]}")


def relocate_state(plugin: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """`plugin`'s configuration with every state directory (its own, its IPAM plugin's) under
    `root` (see the module); LabError for a plugin whose state directory is not known here."""
    conf = copy.deepcopy(dict(plugin))
    for section in (conf, conf.get("ipam")):
        if not isinstance(section, dict):
            continue
        kind = section.get("type")
        if kind not in STATE_DIRS:
            raise LabError(f"the lab's runtime does not know where CNI plugin {kind!r} keeps its state "
                           "(it would write to the machine's /var/lib/cni)")
        key, default = STATE_DIRS[kind]
        node_path = PurePosixPath(section.get(key) or default)
        section[key] = str(root / node_path.relative_to(node_path.anchor))
    return conf


def plugin_config(network: Mapping[str, Any], plugin: Mapping[str, Any], root: Path,
                  offered: Mapping[str, Any], prev_result: Any = None) -> dict[str, Any]:
    """What one plugin of `network` reads on stdin (see the module)."""
    conf = relocate_state(plugin, root)
    conf["name"], conf["cniVersion"] = network["name"], network["cniVersion"]
    declared = plugin.get("capabilities") or {}
    runtime = {key: value for key, value in offered.items() if declared.get(key) is True}
    if runtime:
        conf["runtimeConfig"] = runtime
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return conf


@dataclass
class NodeRuntime:
    """CNI as one node's container runtime calls it: `root` stands for the node's `/` (where
    install-cni wrote the plugins and the conflist), `netns` is the node's network namespace."""

    node: str
    root: Path
    netns: str
    results: dict[str, Any] = field(default_factory=dict)  # container ID → the ADD's result

    def here(self, node_path: str) -> Path:
        return self.root / PurePosixPath(node_path).relative_to("/")

    def network(self) -> dict[str, Any]:
        """The node's network: its first configuration file, a single plugin's made a list."""
        conf_dir = self.here(CONF_DIR)
        files = sorted(p for p in conf_dir.glob("*") if p.suffix in CONF_SUFFIXES)
        if not files:
            raise LabError(f"{self.node}: no CNI configuration in {CONF_DIR} ({conf_dir})")
        try:
            conf = json.loads(files[0].read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.node}: {CONF_DIR}/{files[0].name}: {exc}") from None
        if not isinstance(conf, dict):
            raise LabError(f"{self.node}: {CONF_DIR}/{files[0].name}: not a JSON object")
        if "plugins" not in conf:
            conf = {"cniVersion": conf.get("cniVersion"), "name": conf.get("name"), "plugins": [conf]}
        return {"cniVersion": conf.get("cniVersion"), "name": conf.get("name"),
                "plugins": list(conf["plugins"])}

    def validate(self) -> None:
        """Every plugin of the network speaks its cniVersion (VERSION, as libcni's
        ValidateNetworkList asks when a runtime loads a network); LabError naming the plugin."""
        network = self.network()
        for plugin in network["plugins"]:
            answer = self.call("VERSION", None, {"cniVersion": network["cniVersion"]}, plugin["type"])
            if network["cniVersion"] not in (answer or {}).get("supportedVersions", ()):
                raise LabError(f"{self.node}: CNI plugin {plugin['type']} does not speak cniVersion "
                               f"{network['cniVersion']} (it answered {answer})")

    def add(self, sandbox: Sandbox, offered: Mapping[str, Any] | None = None) -> dict[str, Any]:
        network = self.network()
        result = None
        for plugin in network["plugins"]:
            conf = plugin_config(network, plugin, self.root, offered or {}, result)
            result = self.call("ADD", sandbox, conf, plugin["type"])
        if not isinstance(result, dict):
            raise LabError(f"{self.node}: ADD of {sandbox.namespace}/{sandbox.name} gave no result")
        self.results[sandbox.container_id] = result
        return result

    def delete(self, sandbox: Sandbox) -> None:
        network = self.network()
        cached = self.results.pop(sandbox.container_id, None)
        for plugin in reversed(network["plugins"]):
            self.call("DEL", sandbox, plugin_config(network, plugin, self.root, {}, cached), plugin["type"])

    def call(self, command: str, sandbox: Sandbox | None, conf: dict[str, Any], kind: str) -> Any:
        """One plugin, found in CNI_PATH, run in the node's namespace: its result (None if empty).
        Without a sandbox: VERSION."""
        bin_dir = self.here(BIN_DIR)
        executable = bin_dir / kind
        if not os.access(executable, os.X_OK):
            raise LabError(f"{self.node}: no CNI plugin {kind!r} in {BIN_DIR} ({bin_dir})")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
               "CNI_PATH": str(bin_dir)}
        if sandbox is not None:
            env |= {"CNI_CONTAINERID": sandbox.container_id, "CNI_NETNS": sandbox.netns,
                    "CNI_IFNAME": sandbox.ifname, "CNI_ARGS": sandbox.cni_args}
        what = f"{kind} {command}" + (f" for {sandbox.namespace}/{sandbox.name}" if sandbox else "")
        try:
            done = subprocess.run(["ip", "netns", "exec", self.netns, str(executable)],
                                  input=json.dumps(conf), env=env, capture_output=True, text=True,
                                  check=False, timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.node}: {what} did not finish within {CALL_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise LabError(f"{self.node}: {what} failed: {done.stdout.strip()} {done.stderr.strip()}")
        try:
            return json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            raise LabError(f"{self.node}: {what} printed no JSON: {done.stdout.strip()[:200]}") from None
