"""`netpol install-cni`: what the DaemonSet's init container does on every node — netpol-cni
(its `-IS` launcher and byte-compiled package), `host-local`, and the node's conflist, written
into the host's CNI directories from the Node's `spec.podCIDRs` (one host-local range per
address family, in the Node's order, so pods get the cluster's primary family first).

Order: the host's python3 is checked, the Node read, the binaries installed, the conflist
written last — a runtime that sees the configuration finds its plugins. Every file is written
under a temporary name in its own directory and renamed into place, and left alone when it
already holds what we would write: running it again changes nothing.

netpol-cni runs on the host (the container runtime executes CNI plugins there), so its launcher
names the host's `/usr/bin/python3` (≥ 3.11, standard library only). The host's root is not
ours to run: the interpreter is found by following its symlinks inside the mounted `/usr`, and
its version read from the name they end at (`python3.11`); a host without it is refused before
anything is written. Its `nft` and `modprobe`, which netpol-cni also runs, are looked for too.
The package itself is installed by `python -m netpol_cni.install --root` (netpol and the
plugin share no code).

`host-local` is copied from the image only where the node has none (or has ours from an earlier
install): a node's own, from its packages, is left as it is. LIB/netpol-install.json records
what we wrote (host-local's digest, the conflist's path) for `netpol cleanup`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from netpol.errors import DeployError, InputError, Problem
from netpol.load.decode import decode_document
from netpol.model import Node

CONFLIST = "10-netpol.conflist"  # runtimes take the first configuration in name order
NETWORK = "netpol"
RECORD = "netpol-install.json"
HOST_PYTHON = "/usr/bin/python3"
MIN_PYTHON = (3, 11)
IMAGE_HOST_LOCAL = "/usr/lib/cni/host-local"  # Debian's containernetworking-plugins, in the image
PYTHON_NAME = re.compile(r"^python(\d+)\.(\d+)$")
POLL = 2.0  # s between reads of a Node still waiting for its podCIDRs
SYMLINK_HOPS = 40  # as Linux's MAXSYMLINKS


@dataclass(frozen=True)
class CniLayout:
    """Where netpol-cni's files go, as the node sees them; `host_root` is where the node's `/`
    is mounted in this process (`/` when run on the node itself)."""

    host_root: Path = Path("/")
    bin_dir: str = "/opt/cni/bin"
    conf_dir: str = "/etc/cni/net.d"
    lib_dir: str = ""  # default: BIN_DIR/../lib/netpol-cni, as netpol_cni.install puts it

    @property
    def lib(self) -> str:
        return self.lib_dir or str(PurePosixPath(self.bin_dir).parent / "lib" / "netpol-cni")

    def here(self, node_path: str) -> Path:
        """A node path, as this process reaches it."""
        return self.host_root / PurePosixPath(node_path).relative_to("/")


@dataclass
class Outcome:
    """What a node-side command did, one line per file or object, for the log."""

    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth a look, not a failure
    failed: list[str] = field(default_factory=list)  # steps that could not be done, and why


# ── the conflist (pure) ───────────────────────────────────────────────────────────────────────


def node_pod_cidrs(doc: dict[str, Any], source: str) -> Node:
    """The Node decoded as everywhere else, with at most one podCIDR per family and at least
    one; InputError naming the Node and the field otherwise."""
    objects, problems = decode_document(doc, source)
    node = next((o for o in objects if isinstance(o, Node)), None)
    if problems or node is None:
        raise InputError(problems or [Problem(source, "", "kind", "expected a Node")])
    if not node.pod_cidrs:
        raise InputError([Problem(source, node.ref, "spec.podCIDRs", (
            "no pod CIDR is allocated to this node; netpol-cni takes the pods' addresses from it "
            "(run kube-controller-manager with --allocate-node-cidrs and --cluster-cidr, or set "
            "spec.podCIDRs)"))])
    seen: dict[int, str] = {}
    for i, cidr in enumerate(node.pod_cidrs):
        if cidr.version in seen:
            raise InputError([Problem(source, node.ref, f"spec.podCIDRs[{i}]", (
                f"{cidr} is a second IPv{cidr.version} range after {seen[cidr.version]}: "
                "one per address family"))])
        seen[cidr.version] = str(cidr)
    return node


def render_conflist(node: Node, bridge: str = "cni0") -> dict[str, Any]:
    """The node's network configuration (README "Installing it on a node"): netpol-cni on
    `bridge`, gateway and default route per family, host-local with one range per podCIDR.
    No portmap: the image ships host-local alone (hostPort needs the node's own portmap)."""
    return {
        "cniVersion": "1.0.0",  # keeps host-local 1.1.x (it speaks up to 1.0.0) in the chain
        "name": NETWORK,
        "plugins": [{
            "type": "netpol-cni", "bridge": bridge, "isGateway": True, "isDefaultGateway": True,
            "capabilities": {"mac": True},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": str(cidr)}] for cidr in node.pod_cidrs]},
        }],
    }


def conflist_text(conflist: dict[str, Any]) -> str:
    return json.dumps(conflist, indent=2) + "\n"


def is_our_conflist(text: str) -> bool:
    """A configuration netpol wrote: our network's name, netpol-cni first."""
    try:
        conf = json.loads(text)
        return bool(conf.get("name") == NETWORK and conf["plugins"][0]["type"] == "netpol-cni")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


# ── the host ──────────────────────────────────────────────────────────────────────────────────


def resolve_on_host(root: Path, node_path: str) -> Path:
    """`node_path` as the node resolves it, reached under `root`: every symlink followed, an
    absolute target taken from the node's `/`, never from ours."""
    parts = list(PurePosixPath(node_path).parts[1:])
    done, hops = PurePosixPath("/"), 0
    while parts:
        part = parts.pop(0)
        if part in (".", ""):
            continue
        if part == "..":
            done = done.parent
            continue
        here = root / (done / part).relative_to("/")
        if not here.is_symlink():
            done = done / part
            continue
        hops += 1
        if hops > SYMLINK_HOPS:
            raise DeployError(f"{node_path} on the node: too many levels of symbolic links")
        target = PurePosixPath(os.readlink(here))
        parts = [*(target.parts[1:] if target.is_absolute() else target.parts), *parts]
        if target.is_absolute():
            done = PurePosixPath("/")
    return root / done.relative_to("/")


def check_host_python(layout: CniLayout, python: str = HOST_PYTHON) -> str:
    """The node's interpreter as `python3.11` (or its path when the name does not say); raises
    DeployError, saying what to install, when the node has none or one older than 3.11."""
    found = resolve_on_host(layout.host_root, python)
    where = f" (looked at {layout.here(python)})" if layout.host_root != Path("/") else ""
    if not found.is_file() or not os.access(found, os.X_OK):
        raise DeployError(
            f"the node has no {python}{where}: netpol-cni runs on the node (the container runtime "
            f"executes CNI plugins there) under the node's Python ≥ 3.11, standard library only; "
            f"install it on every node (Debian/Ubuntu: apt-get install python3-minimal) or pass "
            f"--python with the node's interpreter")
    version = PYTHON_NAME.match(found.name)
    if version and (int(version[1]), int(version[2])) < MIN_PYTHON:
        raise DeployError(f"the node's {python} is Python {version[1]}.{version[2]}{where}: netpol-cni "
                          f"needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later")
    return found.name if version else python


# What netpol-cni runs on the node besides python3 (netpol_cni.antispoof, netpol_cni.node), and
# what for. Only /usr is mounted in the init container: /sbin of a node without merged /usr is
# not seen, so a missing one is a note, not a refusal.
HOST_TOOLS = (("nft", "creates its anti-spoofing table at the first ADD", "nftables"),
              ("modprobe", "loads br_netfilter when it is neither loaded nor built in", "kmod"))


def host_tool_notes(layout: CniLayout) -> list[str]:
    notes = []
    for tool, why, package in HOST_TOOLS:
        found = [resolve_on_host(layout.host_root, f"/usr/{d}/{tool}") for d in ("sbin", "bin")]
        if not any(path.is_file() and os.access(path, os.X_OK) for path in found):
            notes.append(f"the node has no /usr/sbin/{tool} or /usr/bin/{tool}: netpol-cni {why} "
                         f"(install {package} on the node)")
    return notes


def write_atomically(target: Path, data: bytes, mode: int = 0o644) -> bool:
    """`target` holds `data`, appearing whole or not at all; False when it already did."""
    try:
        if target.read_bytes() == data and target.stat().st_mode & 0o7777 == mode:
            return False
    except OSError:
        pass
    temp = target.parent / f".{target.name}.netpol-{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(data)
        temp.chmod(mode)
        temp.replace(target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise DeployError(f"{target}: {exc.strerror or exc}") from None
    return True


def digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_record(layout: CniLayout) -> dict[str, Any]:
    """What an earlier install wrote ({} when none, or unreadable: then nothing counts as ours)."""
    try:
        record = json.loads(layout.here(layout.lib).joinpath(RECORD).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(layout: CniLayout, record: dict[str, Any]) -> None:
    lib = layout.here(layout.lib)
    lib.mkdir(parents=True, exist_ok=True)
    write_atomically(lib / RECORD, json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")


# ── the steps ─────────────────────────────────────────────────────────────────────────────────


def install_host_local(layout: CniLayout, source: Path, record: dict[str, Any], out: Outcome) -> None:
    """Copy `source` as BIN/host-local unless the node has its own (see the module)."""
    target = layout.here(layout.bin_dir) / "host-local"
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise DeployError(f"{source} (host-local, from the image): {exc.strerror or exc}") from None
    present = digest(target)
    if present is not None and present != record.get("host_local"):
        out.notes.append(f"{layout.bin_dir}/host-local: the node's own, left as it is")
        return
    record["host_local"] = hashlib.sha256(data).hexdigest()
    _write_record(layout, record)  # before the file: a crash in between still leaves it ours
    changed = write_atomically(target, data, 0o755)
    out.done.append(f"{layout.bin_dir}/host-local: {'installed' if changed else 'unchanged'}")


def install_plugin(layout: CniLayout, python: str, found: str, out: Outcome) -> None:
    """netpol-cni's own installer, in a process of its own (netpol does not import the plugin)."""
    argv = [sys.executable, "-m", "netpol_cni.install", layout.bin_dir, "--lib", layout.lib,
            "--python", python, "--root", str(layout.host_root)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise DeployError(f"installing netpol-cni into {layout.here(layout.bin_dir)}: {said[0]}")
    which = f"{python}, {found}" if found != python else python
    out.done.append(f"{layout.bin_dir}/netpol-cni: installed (runs under the node's {which})")


def write_conflist(layout: CniLayout, node: Node, bridge: str, record: dict[str, Any], out: Outcome) -> None:
    conf_dir = layout.here(layout.conf_dir)
    conf_dir.mkdir(parents=True, exist_ok=True)
    record["conflist"] = f"{layout.conf_dir}/{CONFLIST}"
    _write_record(layout, record)
    changed = write_atomically(conf_dir / CONFLIST, conflist_text(render_conflist(node, bridge)).encode())
    cidrs = ", ".join(str(c) for c in node.pod_cidrs)
    out.done.append(f"{layout.conf_dir}/{CONFLIST}: {'written' if changed else 'unchanged'} ({cidrs})")
    first = min((p.name for p in conf_dir.iterdir() if p.suffix in (".conf", ".conflist", ".json")),
                default=CONFLIST)
    if first != CONFLIST:
        out.notes.append(f"{layout.conf_dir}/{first} sorts before {CONFLIST}: the container runtime "
                         f"uses it, not netpol-cni; remove the other network add-on's configuration")


def install_cni(layout: CniLayout, read_node: Callable[[], dict[str, Any]], *, source: str,
                python: str = HOST_PYTHON, host_local: Path = Path(IMAGE_HOST_LOCAL),
                bridge: str = "cni0", wait: float = 0.0) -> Outcome:
    """The whole install (see the module); `read_node` returns the Node as the API serves it.
    A Node without podCIDRs is read again every POLL s for up to `wait` s (a new node gets its
    range from the controller manager shortly after it registers)."""
    out = Outcome()
    found = check_host_python(layout, python)
    out.notes += host_tool_notes(layout)
    deadline = time.monotonic() + wait
    while True:
        try:
            node = node_pod_cidrs(read_node(), source)
            break
        except InputError:
            if time.monotonic() + POLL > deadline:
                raise
            time.sleep(POLL)
    record = read_record(layout)
    install_host_local(layout, host_local, record, out)
    install_plugin(layout, python, found, out)
    write_conflist(layout, node, bridge, record, out)
    return out


def read_node_from_api(name: str, kubeconfig: str | None) -> Callable[[], dict[str, Any]]:
    """A reader of Node `name` (a list with a field selector: the ClusterRole grants list on
    nodes for the agent anyway). DeployError when the API server cannot be asked or has none."""
    from kubernetes import client  # noqa: PLC0415 - the install's only use of the client

    from netpol.sources.kube import new_api_client  # noqa: PLC0415

    def read() -> dict[str, Any]:
        try:
            api = client.CoreV1Api(new_api_client(kubeconfig))
            answer = api.list_node(field_selector=f"metadata.name={name}", _preload_content=False,
                                   _request_timeout=30)
            items = json.loads(answer.data).get("items") or []
        except Exception as exc:  # the client's ConfigException, ApiException, urllib3's, OSError
            status = getattr(exc, "status", None)
            said = (f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status
                    else f"{type(exc).__name__}: {exc}")
            raise DeployError(f"Node {name}: cannot read it from the API server ({said})") from None
        node = next((i for i in items
                     if isinstance(i, dict) and (i.get("metadata") or {}).get("name") == name), None)
        if node is None:
            raise DeployError(f"Node {name}: not found (is --node this pod's spec.nodeName?)")
        return dict(node, kind="Node", apiVersion="v1")  # list items come without them
    return read
