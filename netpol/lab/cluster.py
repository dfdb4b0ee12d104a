"""The lab: a cluster built for real in Linux network namespaces, for `netpol verify`.

`plan_lab` (pure) decides names, addresses and routes; `open_lab` builds the plan and always
tears it down — processes killed by PID, namespaces deleted — on success, exceptions, Ctrl-C
and SIGTERM. Nothing is created in, loaded into or changed in the root network namespace.

Topology (host-gw, as DESIGN §1 "agent" describes):

    pod ns  eth0 ──veth── vethN ┐                        ┌ n0 ──veth── eth0  node ns 0
    pod ns  eth0 ──veth── vethM ┴ cni0 (node ns)  fabric ns: bridge fab0 ┴ n1 ──veth── eth0  node ns 1

* node ns: bridge `cni0` holding one gateway address per pod subnet (`spec.podCIDRs`, or a /24
  or /64 derived from its pods' IPs), br_netfilter and forwarding on (DESIGN §3 CNI plugin
  sysctls), uplink `eth0` with its fabric addresses (InternalIP, else invented), routes to every
  other node's pod subnets via that node's fabric address.
* pod ns: `eth0` with every pod IP, default routes via its node's gateway(s).

Subnets of different nodes may overlap (Hypothesis clusters interleave their pods' addresses):
then host routes (/32, /128) to the remote pods replace the subnet route, on the node and in
the pods, so every address still leads to the node that owns it. A pod whose IP is the network or
broadcast address of its node's given podCIDR (IPAM never assigns those) is not reachable here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from netpol.compile.ir import NodeProgram
from netpol.errors import LabError, NetpolError, RulesetRejected
from netpol.model import ClusterState, IPAddress, IPNetwork, Pod

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Route = tuple[str, ...]  # arguments after `ip route add`

BRIDGE = "cni0"  # DESIGN §3: the CNI plugin's default bridge; the ruleset filters bridged traffic
FABRIC_BRIDGE = "fab0"
UPLINK = "eth0"  # a node's interface into the fabric, and a pod's interface into its node
NODE_SYSCTLS = (
    "net.bridge.bridge-nf-call-iptables=1",  # bridged pod traffic through the inet forward hook
    "net.bridge.bridge-nf-call-ip6tables=1",
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    # No duplicate address detection on the node's interfaces (created after this is set): a
    # tentative link-local address on the fabric stalls IPv6 between nodes for seconds.
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_dad=0",
)
INVENTED_FABRIC: dict[int, IPNetwork] = {
    4: ipaddress.IPv4Network("192.168.255.0/24"),
    6: ipaddress.IPv6Network("fd00:255::/64"),
}
DERIVED_PREFIX = {4: 24, 6: 64}
HOST_PREFIX = {4: 32, 6: 128}
STOP_TIMEOUT = 30.0  # seconds a SIGKILLed process gets to be reaped: a hang bound, never reached
NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins named namespaces (iproute2's NETNS_RUN_DIR)


# ── the plan (pure) ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class NodePlan:
    name: str
    netns: str
    fabric_port: str  # the node's veth in the fabric namespace
    gateways: tuple[IPInterface, ...]  # on cni0: gateway address / pod subnet
    fabric_addresses: tuple[IPAddress, ...]  # on the uplink, host prefix
    routes: tuple[Route, ...]

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(g.network for g in self.gateways)


@dataclass(frozen=True)
class PodPlan:
    key: str
    node: str
    netns: str
    host_veth: str  # its veth's name in the node namespace
    addresses: tuple[IPInterface, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class LabPlan:
    tag: str
    fabric_netns: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    notes: tuple[str, ...]  # what the lab leaves out, and why


def lab_pods(state: ClusterState) -> tuple[Pod, ...]:
    """The pods the lab builds: active, not hostNetwork, scheduled on a node (DESIGN §2)."""
    return tuple(p for p in state.active_pods if p.node_name)


def _notes(state: ClusterState) -> tuple[str, ...]:
    notes = []
    host = [p.key for p in state.pods if p.host_network]
    if host:
        notes.append(f"{len(host)} hostNetwork pod(s) not built (they share their node's namespace): "
                     + ", ".join(host))
    unscheduled = [p.key for p in state.active_pods if not p.node_name]
    if unscheduled:
        notes.append(f"{len(unscheduled)} pod(s) without spec.nodeName not built: " + ", ".join(unscheduled))
    return tuple(notes)


def derive_subnets(node_cidrs: Iterable[IPNetwork], ips: Iterable[IPAddress],
                   others: Iterable[IPAddress] = ()) -> tuple[IPNetwork, ...]:
    """The node's podCIDRs, plus per family the smallest /24-or-wider (/64 for IPv6) network
    covering the pod IPs (`ips`) no podCIDR covers, with no pod IP (`ips`, `others`) as its
    network or broadcast address."""
    subnets, ips, others = list(node_cidrs), list(ips), list(others)
    for version in (4, 6):
        loose = [ip for ip in ips if ip.version == version and not any(ip in s for s in subnets)]
        if not loose:
            continue
        net = ipaddress.ip_network(f"{loose[0]}/{DERIVED_PREFIX[version]}", strict=False)
        while not all(ip in net for ip in loose) or any(_reserved(ip, net) for ip in [*loose, *others]):
            net = net.supernet()
        subnets.append(net)
    return tuple(subnets)


def _reserved(ip: IPAddress, net: IPNetwork) -> bool:
    """No pod can use a node's subnet's network address (in IPv6 the subnet-router anycast of
    a forwarding node, which answers for it) nor, in IPv4, its broadcast address."""
    return ip == net.network_address or (ip.version == 4 and ip == net.broadcast_address)


def _free_address(net: IPNetwork, taken: set[IPAddress]) -> IPAddress:
    """The first host address of `net` nobody uses (the gateway is `.1` unless a pod has it)."""
    for candidate in net.hosts():
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise LabError(f"no free address left in {net} for a gateway or fabric address")


def _fabric_addresses(state: ClusterState, node: str, taken: set[IPAddress],
                      used: set[IPAddress]) -> tuple[IPAddress, ...]:
    """Per family, the node's first status address (InternalIP or ExternalIP, as listed) not used by
    another node, else one invented from 192.168.255.0/24 or fd00:255::/64."""
    spec = next((n for n in state.nodes if n.name == node), None)
    own = spec.addresses if spec else ()
    chosen = []
    for version in (4, 6):
        address = next((a for a in own if a.version == version and a not in used), None)
        if address is None:
            address = _free_address(INVENTED_FABRIC[version], taken)
        used.add(address)
        taken.add(address)
        chosen.append(address)
    return tuple(chosen)


@dataclass(frozen=True)
class _Node:
    """A node's addresses, before routes are known."""

    name: str
    index: int
    gateways: tuple[IPInterface, ...]
    fabric: tuple[IPAddress, ...]
    pods: tuple[Pod, ...]

    def fabric_of(self, version: int) -> IPAddress:
        return next(a for a in self.fabric if a.version == version)

    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(g.network for g in self.gateways)


def _overlaps(net: IPNetwork, others: Iterable[IPNetwork]) -> bool:
    return any(net.version == o.version and net.overlaps(o) for o in others)


def _node_routes(me: _Node, nodes: Sequence[_Node]) -> tuple[Route, ...]:
    """On-link routes to the other nodes' fabric addresses, then their pod subnets via them;
    a host route for every remote pod a subnet route would not deliver to its own node."""
    others = [n for n in nodes if n is not me]
    routes: list[Route] = []
    for other in others:
        routes += [(f"{a}/{HOST_PREFIX[a.version]}", "dev", UPLINK) for a in other.fabric]
    usable: dict[str, tuple[IPNetwork, ...]] = {}
    for other in others:
        rivals = [s for n in nodes if n is not other for s in n.subnets()]
        usable[other.name] = tuple(s for s in other.subnets() if not _overlaps(s, rivals))
        routes += [(str(s), "via", str(other.fabric_of(s.version))) for s in usable[other.name]]
    for other in others:
        for pod in other.pods:
            routes += [(f"{ip}/{HOST_PREFIX[ip.version]}", "via", str(other.fabric_of(ip.version)))
                       for ip in pod.ips if not any(ip in s for s in usable[other.name])]
    return tuple(routes)


def _gateway_for(node: _Node, ip: IPAddress) -> IPInterface:
    return next(g for g in node.gateways if ip in g.network)


def _pod_plan(pod: Pod, index: int, node: _Node, nodes: Sequence[_Node], tag: str) -> PodPlan:
    """Every pod IP with its subnet's prefix; a default route per family via the gateway; host
    routes via the gateway for remote pods and nodes' fabric addresses (pod → node cells) that
    sit inside this pod's on-link subnet."""
    addresses, routes = [], []
    remote = [ip for n in nodes if n is not node for p in n.pods for ip in p.ips]
    remote += [a for n in nodes for a in n.fabric if a not in remote and a not in pod.ips]
    for ip in pod.ips:
        gateway = _gateway_for(node, ip)
        addresses.append(ipaddress.ip_interface(f"{ip}/{gateway.network.prefixlen}"))
        routes.append(("default", "via", str(gateway.ip)))
        routes += [(f"{r}/{HOST_PREFIX[r.version]}", "via", str(gateway.ip))
                   for r in remote if r in gateway.network]
    return PodPlan(pod.key, node.name, f"np-{tag}-p{index}", f"veth{index}", tuple(addresses), tuple(routes))


def _plan_nodes(state: ClusterState, pods: Sequence[Pod]) -> list[_Node]:
    taken: set[IPAddress] = {ip for p in state.pods for ip in p.ips}
    taken |= {ip for ips in state.node_addresses.values() for ip in ips}
    used_fabric: set[IPAddress] = set()
    specs = {n.name: n for n in state.nodes}
    nodes = []
    for index, name in enumerate(sorted({p.node_name for p in pods if p.node_name})):
        local = tuple(p for p in pods if p.node_name == name)
        cidrs = specs[name].pod_cidrs if name in specs else ()
        everyone = (ip for p in pods for ip in p.ips)
        subnets = derive_subnets(cidrs, (ip for p in local for ip in p.ips), everyone)
        gateways = tuple(ipaddress.ip_interface(f"{_free_address(s, taken)}/{s.prefixlen}") for s in subnets)
        fabric = _fabric_addresses(state, name, taken, used_fabric)
        nodes.append(_Node(name, index, gateways, fabric, local))
    return nodes


def plan_lab(state: ClusterState, tag: str | None = None) -> LabPlan:
    """Names, addresses and routes for every node and pod; namespaces are `np-TAG-…`, unique
    per run so parallel runs never collide."""
    tag = tag or uuid.uuid4().hex[:6]
    pods = lab_pods(state)
    nodes = _plan_nodes(state, pods)
    by_name = {n.name: n for n in nodes}
    node_plans = tuple(
        NodePlan(n.name, f"np-{tag}-n{n.index}", f"n{n.index}", n.gateways, n.fabric, _node_routes(n, nodes))
        for n in nodes
    )
    pod_plans = tuple(_pod_plan(p, i, by_name[p.node_name or ""], nodes, tag) for i, p in enumerate(pods))
    return LabPlan(tag, f"np-{tag}-fab", node_plans, pod_plans, _notes(state))


# ── building it (I/O) ───────────────────────────────────────────────────────────────────────


def _command_text(argv: Sequence[str]) -> str:
    return " ".join(argv)


def run_command(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a binary (argument list, never a shell); LabError with its stderr if it fails."""
    try:
        done = subprocess.run(list(argv), input=stdin, text=True, capture_output=True, check=False)
    except OSError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise LabError(f"`{_command_text(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def check_environment() -> None:
    """verify needs root (network namespaces) and the `ip` and `nft` binaries."""
    if os.geteuid() != 0:
        raise LabError("verify needs root: it builds the cluster in network namespaces")
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"verify needs {' and '.join(missing)} (Debian: apt-get install iproute2 nftables)")


class Lab:
    """A built cluster: pod key → netns, node → netns; runs processes inside namespaces and
    remembers everything to undo."""

    def __init__(self, plan: LabPlan, stack: ExitStack) -> None:
        self.plan = plan
        self._stack = stack
        self.pod_netns = {p.key: p.netns for p in plan.pods}
        self.node_netns = {n.name: n.netns for n in plan.nodes}

    # namespaces and interfaces

    def add_netns(self, name: str) -> None:
        # Ctrl-C/SIGTERM wait until `ip netns add` has finished and its undo is registered: an
        # interrupt that lands inside Popen (before it returns a handle) would otherwise orphan an
        # `ip` that creates the namespace after the teardown looked for it.
        with _INTERRUPTS.held():
            self._stack.callback(_delete_netns, name)
            run_command(["ip", "netns", "add", name])

    def batch(self, netns: str, commands: Iterable[Sequence[str]]) -> None:
        """Several `ip` commands in one process, inside `netns`."""
        lines = "".join(" ".join(c) + "\n" for c in commands)
        if lines:
            run_command(["ip", "-n", netns, "-batch", "-"], stdin=lines)

    def build(self, with_pods: bool = True) -> None:
        self.add_netns(self.plan.fabric_netns)
        self.batch(self.plan.fabric_netns, [("link", "set", "lo", "up"),
                                            ("link", "add", FABRIC_BRIDGE, "type", "bridge"),
                                            ("link", "set", FABRIC_BRIDGE, "up")])
        for node in self.plan.nodes:
            self.build_node(node)
        if with_pods:
            for pod in self.plan.pods:
                self.build_pod(pod, self.node_netns[pod.node])

    def build_node(self, node: NodePlan) -> None:
        self.add_netns(node.netns)
        try:
            run_command(["ip", "netns", "exec", node.netns, "sysctl", "-qw", *NODE_SYSCTLS])
        except LabError as exc:
            raise LabError(f"{exc} (is the br_netfilter module loaded? `modprobe br_netfilter`)") from None
        fabric = self.plan.fabric_netns
        self.batch(fabric, [("link", "add", node.fabric_port, "type", "veth", "peer", "name", UPLINK,
                             "netns", node.netns),
                            ("link", "set", node.fabric_port, "master", FABRIC_BRIDGE, "up")])
        commands: list[Sequence[str]] = [("link", "set", "lo", "up"),
                                          ("link", "add", BRIDGE, "address", _bridge_mac(node.netns),
                                           "type", "bridge"),  # the address pinned: see _bridge_mac
                                          ("link", "set", BRIDGE, "up"), ("link", "set", UPLINK, "up")]
        commands += [_addr_add(str(g), BRIDGE, g.version) for g in node.gateways]
        commands += [_addr_add(f"{a}/{HOST_PREFIX[a.version]}", UPLINK, a.version)
                     for a in node.fabric_addresses]
        commands += [("route", "add", *r) for r in node.routes]
        self.batch(node.netns, commands)

    def build_pod(self, pod: PodPlan, node_netns: str) -> None:
        self.add_netns(pod.netns)
        self.batch(node_netns, [("link", "add", pod.host_veth, "type", "veth", "peer", "name", UPLINK,
                                 "netns", pod.netns),
                                ("link", "set", pod.host_veth, "master", BRIDGE, "up")])
        commands: list[Sequence[str]] = [("link", "set", "lo", "up"), ("link", "set", UPLINK, "up")]
        commands += [_addr_add(str(a), UPLINK, a.version) for a in pod.addresses]
        commands += [("route", "add", *r) for r in pod.routes]
        self.batch(pod.netns, commands)

    # rulesets and processes

    def load_ruleset(self, node: str, text: str) -> None:
        """`nft -f -` inside the node's namespace; RulesetRejected quotes nft's complaint."""
        try:
            run_command(["ip", "netns", "exec", self.node_netns[node], "nft", "-f", "-"], stdin=text)
        except LabError as exc:
            raise RulesetRejected(node, str(exc)) from None

    def load_iptables(self, node: str, program: NodeProgram, variant: str = "nft") -> None:
        """The iptables backend's bundle, loaded as the README says; RulesetRejected if refused."""
        from netpol.backends.iptables import render  # noqa: PLC0415
        from netpol.dataplane.iptables import apply_iptables  # noqa: PLC0415

        netns = self.node_netns[node]
        with _INTERRUPTS.held():  # what it adds lives in the node namespace, which the lab removes
            try:
                apply_iptables(render(program), program, netns, variant)
            except NetpolError as exc:
                raise RulesetRejected(node, str(exc)) from None

    def spawn(self, netns: str | None, argv: Sequence[str],
              stop: Callable[[subprocess.Popen[str]], None] | None = None) -> subprocess.Popen[str]:
        """A process inside `netns`, killed (by PID) when the lab closes — or ended by `stop`
        (podman's, which removes its container first). `netns` None: where we are, for podman,
        which puts its container into a node's namespace itself. Its own session, so a Ctrl-C
        reaches only us and we decide the order of the teardown. Signals wait until its PID is
        known and its end registered."""
        inside = ["ip", "netns", "exec", netns] if netns is not None else []
        with _INTERRUPTS.held():
            proc = subprocess.Popen([*inside, *argv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            self._stack.callback(stop or _stop, proc)
        return proc


def _bridge_mac(seed: str) -> str:
    """A fixed, locally administered MAC for a node's bridge. A bridge whose address was never
    set follows the lowest MAC among its ports; when that port leaves, pods still hold the old
    gateway MAC and their traffic to other nodes stops until it expires."""
    digest = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _addr_add(address: str, dev: str, version: int) -> tuple[str, ...]:
    # nodad: addresses are usable at once (DAD would leave them tentative for a second or more)
    return ("addr", "add", address, "dev", dev, *(("nodad",) if version == 6 else ()))


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    with suppress(subprocess.TimeoutExpired, ValueError, OSError):
        proc.communicate(timeout=STOP_TIMEOUT)


def _delete_netns(name: str) -> None:
    if not (NETNS_DIR / name).exists():
        return  # never created (`ip netns add` failed or was interrupted before it made it)
    done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"netpol: warning: could not delete network namespace {name}: {done.stderr.strip()}",
              file=sys.stderr)


class _Interrupts:
    """Ctrl-C and SIGTERM as exceptions (KeyboardInterrupt, SystemExit(143)) while a lab is
    open, except inside `held()` blocks, where they wait and are raised when the outermost
    block ends. Python-level, not a signal mask: the kernel may hand a process-directed signal
    to any thread that does not block it, but Python runs handlers in the main thread, which
    sees `depth`."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.depth:
            self.pending = self.pending or signum
            return
        _raise_for(signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                _raise_for(signum)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


_INTERRUPTS = _Interrupts()
_HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _interrupts_handled() -> Iterator[None]:
    """Route SIGINT/SIGTERM through `_INTERRUPTS` (main thread only: elsewhere Python cannot
    install handlers, and signals keep their usual behaviour)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _INTERRUPTS.handle) for signum in _HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def open_lab(state: ClusterState | LabPlan, with_pods: bool = True) -> Iterator[Lab]:
    """Build the cluster (a state, or a plan made from one) in network namespaces; yield the
    Lab; always remove every namespace and process it created. Without `with_pods`, only the
    fabric and the nodes: the caller attaches pods (the demo, through the CNI plugin)."""
    check_environment()
    plan = state if isinstance(state, LabPlan) else plan_lab(state)
    stack = ExitStack()
    with _interrupts_handled():
        try:
            lab = Lab(plan, stack)
            lab.build(with_pods)
            yield lab
        finally:
            with _INTERRUPTS.held():  # an interrupt during the teardown is raised after it
                stack.close()
