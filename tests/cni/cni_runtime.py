"""A container runtime's side of CNI, for tests: network namespaces as pods, a node namespace
the plugins run in, plugin execution the way libcni does it (stdin config with name and
cniVersion injected, CNI_* environment, prevResult threaded through a conflist's plugins, DEL
in reverse order), and real TCP probes between the namespaces.

Everything lives in namespaces this module creates (`netpol-test-cni-*`) and a temporary
directory; `CniNode.close()` deletes them all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netpol_cni.install import install

HERE = Path(__file__).resolve().parent
REFERENCE_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
REFERENCE_PLUGINS = ("host-local", "bridge", "tuning", "bandwidth", "firewall", "portmap", "loopback")
PREFIX = "netpol-test-cni"
PLUGIN_TIMEOUT = 60.0  # seconds a plugin call may take: a hang bound, calls take milliseconds
CONNECT_TIMEOUT = 30.0  # seconds a TCP connect expected to succeed gets: a hang bound, it takes microseconds


def have_reference_plugins() -> bool:
    return all((REFERENCE_DIR / p).exists() for p in ("host-local", "bridge"))


@dataclass
class CniCall:
    code: int
    stdout: str
    stderr: str

    @property
    def result(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclass
class CniNode:
    """A node namespace, a CNI_PATH with our plugin installed lean beside the reference ones,
    and pods (namespaces) made on demand."""

    root: Path
    netns: str = field(default_factory=lambda: f"{PREFIX}-node-{uuid.uuid4().hex[:8]}")
    pods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bin_dir = self.root / "bin"
        self.state_dir = self.root / "state"
        self.ipam_dir = self.root / "ipam"
        install(self.bin_dir, self.root / "lib", sys.executable)
        for name in REFERENCE_PLUGINS:
            if (REFERENCE_DIR / name).exists():
                (self.bin_dir / name).symlink_to(REFERENCE_DIR / name)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.ip("link", "set", "lo", "up")

    def close(self) -> None:
        for pod in self.pods:
            subprocess.run(["ip", "netns", "delete", pod], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # namespaces

    def pod(self) -> str:
        """A new pod namespace; its path (what a runtime passes as CNI_NETNS)."""
        name = f"{PREFIX}-pod-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.pods.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return f"/run/netns/{name}"

    def ip(self, *args: str, netns: str | None = None) -> str:
        name = (netns or self.netns).removeprefix("/run/netns/")
        return subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True, text=True).stdout

    def links(self, netns: str | None = None) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link for link in json.loads(self.ip("-j", "-d", "link", "show", netns=netns))}

    def addresses(self, ifname: str, netns: str | None = None) -> set[str]:
        out = json.loads(self.ip("-j", "addr", "show", "dev", ifname, netns=netns))
        return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a["scope"] == "global"}

    def exec(self, netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", netns.removeprefix("/run/netns/"), *argv],
                              capture_output=True, text=True, check=check)

    def sysctl(self, name: str, netns: str | None = None) -> str:
        return self.exec(netns or self.netns, "cat", "/proc/sys/" + name.replace(".", "/")).stdout.strip()

    # configs and calls

    def conf(self, subnet: str = "10.88.0.0/24", version: str = "1.1.0", **fields: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": version, "name": "testnet", "type": "netpol-cni",
                                "bridge": "cni0", "isGateway": True, "dataDir": str(self.state_dir),
                                "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                                         "ranges": [[{"subnet": s}] for s in subnet.split(",")]}}
        conf.update(fields)
        return conf

    def call(self, command: str, conf: dict[str, Any] | str, container_id: str = "ctr", netns: str = "",
             ifname: str = "eth0", plugin: str = "netpol-cni", env: dict[str, str] | None = None) -> CniCall:
        """Exec a plugin inside the node namespace, as a runtime on that node would."""
        running = self.start(command, conf, container_id, netns, ifname, plugin, env)
        try:
            stdout, stderr = running.communicate(timeout=PLUGIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            running.kill()
            running.communicate()
            raise
        return CniCall(running.returncode, stdout, stderr)

    def start(self, command: str, conf: dict[str, Any] | str, container_id: str = "ctr", netns: str = "",
              ifname: str = "eth0", plugin: str = "netpol-cni",
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`call`, without waiting: the running plugin (`ip netns exec` execs it, so its PID is
        the plugin's), its stdin already written and closed."""
        environment = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                       "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                       "CNI_IFNAME": ifname, "CNI_PATH": str(self.bin_dir)}
        environment.update(env or {})
        stdin = (conf if isinstance(conf, str) else json.dumps(conf)).encode()
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, stdin)  # a config is far below a pipe's 64 KiB: this never waits
        finally:
            os.close(write_end)
        try:
            return subprocess.Popen(["ip", "netns", "exec", self.netns, str(self.bin_dir / plugin)],
                                    stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=environment, text=True)
        finally:
            os.close(read_end)

    def install_ipam(self, name: str, mode: str) -> None:
        """A test IPAM plugin (tests/cni/fake_ipam.py, `mode` held or sticky) as `name` on CNI_PATH."""
        path = self.bin_dir / name
        path.write_text(f"#!{sys.executable} -I\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
                        f"import fake_ipam\nfake_ipam.main({mode!r})\n")
        path.chmod(0o755)

    def reservations(self, network: str = "testnet") -> dict[str, tuple[str, str]]:
        """host-local's reservations on this node: address → (container ID, ifname)."""
        directory = self.ipam_dir / network
        if not directory.exists():
            return {}
        out = {}
        for path in directory.iterdir():
            if path.name[0].isdigit() or ":" in path.name:
                container_id, ifname = path.read_text().split()
                out[path.name] = (container_id, ifname)
        return out

    def records(self, network: str = "testnet") -> list[str]:
        """The plugin's attachment records (`containerID@ifname`) for `network`."""
        directory = self.state_dir / network
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) \
            if directory.exists() else []

    def add(self, netns: str, container_id: str = "ctr", **kw: Any) -> dict[str, Any]:
        conf = kw.pop("conf", None) or self.conf()
        call = self.call("ADD", conf, container_id, netns, **kw)
        assert call.code == 0, call
        result = call.result
        assert isinstance(result, dict)
        return result

    # conflists, as libcni runs them

    def run_list(self, command: str, conflist: dict[str, Any], container_id: str, netns: str,
                 prev_result: dict[str, Any] | None = None, ifname: str = "eth0") -> dict[str, Any] | None:
        """ADD through every plugin in order, each getting the previous result; CHECK with the
        final result; DEL in reverse order with the final result. Fails on the first error."""
        plugins = list(reversed(conflist["plugins"])) if command == "DEL" else conflist["plugins"]
        result = prev_result
        for plugin in plugins:
            conf = dict(plugin, name=conflist["name"], cniVersion=conflist["cniVersion"])
            if result is not None:
                conf["prevResult"] = result
            call = self.call(command, conf, container_id, netns, ifname, plugin=plugin["type"])
            assert call.code == 0, f"{plugin['type']} {command}: {call}"
            if command == "ADD":
                result = call.result
        return result

    # real packets

    def tcp_reaches(self, src_netns: str, dst_netns: str, ip: str, port: int = 8080,
                    via: tuple[str, int] | None = None) -> bool:
        """A TCP connection from a process in `src_netns` to a listener on ip:port in
        `dst_netns` (namespace names or /run/netns paths), dialled at `via` if given (a
        port-mapped address). Every caller expects it to connect, so nothing here decides by
        time: the listener waits until it is killed, the client's CONNECT_TIMEOUT only bounds a
        hang. (A caller expecting "blocked" would need a short timeout of its own: slowness
        cannot make a connection succeed, only fail.)"""
        src, dst = (n.removeprefix("/run/netns/") for n in (src_netns, dst_netns))
        family = "AF_INET6" if ":" in ip else "AF_INET"
        server = subprocess.Popen(
            ["ip", "netns", "exec", dst, sys.executable, "-c",
             "import socket, sys\n"
             f"s = socket.socket(socket.{family}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(({ip!r}, {port})); s.listen(); print('ready', flush=True)\n"
             "s.accept()[0].close()\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready", server.stderr.read() if server.stderr else ""
            target = via or (ip, port)
            client = self.exec(src, sys.executable, "-c",
                               f"import socket; socket.create_connection({target!r}, timeout={CONNECT_TIMEOUT}).close()",
                               check=False)
            return client.returncode == 0
        finally:
            server.kill()
            server.wait()
