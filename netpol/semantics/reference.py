"""The reference evaluator of DESIGN §2: is a connection allowed, and why.

Spec-literal and slow on purpose: it scans every policy for every question. Everything faster
(reach, the IR, the rulesets) is tested against it. Each clause quotes DESIGN §2.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol.model import ClusterState, Direction, IPAddress, NetworkPolicy, Peer, Pod, PolicyPort


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: an address, and the pod it belongs to if any."""

    ip: IPAddress
    pod: Pod | None = None
    node: str | None = None  # the node this address belongs to, if it is a node's

    def __str__(self) -> str:
        if self.pod:
            return f"{self.pod.key} ({self.ip})"
        return f"{self.ip} (node {self.node})" if self.node else str(self.ip)


@dataclass(frozen=True)
class Connection:
    """The question: may `src` open a connection to `dst` on (`protocol`, `port`)?

    `port` is None for protocols without ports (ICMP and others).
    """

    src: Endpoint
    dst: Endpoint
    port: int | None
    protocol: str

    def __str__(self) -> str:
        service = f"{self.port}/{self.protocol}" if self.port is not None else self.protocol
        return f"{self.src} -> {self.dst} on {service}"


@dataclass(frozen=True)
class RuleRef:
    """`NetworkPolicy ns/name spec.ingress[i]`: the rule that admitted a connection."""

    policy: str
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"NetworkPolicy {self.policy} spec.{self.direction}[{self.index}]"


@dataclass(frozen=True)
class RuleCheck:
    """How one rule of an isolating policy fared: did its peers match, did its ports?"""

    rule: RuleRef
    peer_matches: bool
    port_matches: bool
    unresolved_ports: tuple[str, ...] = ()  # named ports of the rule the destination lacks


@dataclass(frozen=True)
class SideVerdict:
    """What one side's policies (source egress or destination ingress) say."""

    direction: Direction
    allowed: bool
    reason: str
    isolated_by: tuple[str, ...] = ()
    checks: tuple[RuleCheck, ...] = ()

    @property
    def admitted_by(self) -> tuple[RuleRef, ...]:
        return tuple(c.rule for c in self.checks if c.peer_matches and c.port_matches)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    connection: Connection
    egress: SideVerdict
    ingress: SideVerdict
    reason: str


def selects(policy: NetworkPolicy, pod: Pod) -> bool:
    """§2: hostNetwork pods are not selected; a policy selects pods of its own namespace only."""
    return pod.takes_part and pod.namespace == policy.namespace and policy.pod_selector.matches(pod.labels)


def peer_matches(state: ClusterState, policy: NetworkPolicy, peer: Peer, other: Endpoint) -> bool:
    """§2 Peers: podSelector only = the policy's namespace; namespaceSelector only = all pods of
    matching namespaces; both = their intersection; ipBlock = cidr minus every except, pod IPs too."""
    if peer.ip_block is not None:
        return peer.ip_block.contains(other.ip)
    pod = other.pod
    if pod is None or not pod.takes_part:
        return False  # selectors match pods only, and never hostNetwork ones
    if peer.namespace_selector is None:
        in_namespace = pod.namespace == policy.namespace
    else:
        in_namespace = peer.namespace_selector.matches(state.namespace(pod.namespace).labels)
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
    return in_namespace and pod_ok


def port_matches(entry: PolicyPort, dst: Endpoint, port: int | None, protocol: str) -> bool:
    """§2 Ports: `protocol` defaults to TCP; a name resolves against the destination pod's container
    ports with the same protocol (no resolution: no match); `endPort` makes an inclusive range."""
    if entry.protocol != protocol:
        return False
    if entry.port is None:
        return True
    if port is None:
        return False
    if isinstance(entry.port, str):
        return dst.pod is not None and dst.pod.resolve_port(entry.port, protocol) == port
    return entry.port <= port <= (entry.end_port or entry.port)


def check_rule(state: ClusterState, policy: NetworkPolicy, index: int, direction: Direction,
               conn: Connection) -> RuleCheck:
    """§2: absent/empty from/to = everything; absent/empty ports = every port and protocol."""
    rule = policy.rules(direction)[index]
    peer = conn.src if direction == "ingress" else conn.dst
    peer_ok = not rule.peers or any(peer_matches(state, policy, p, peer) for p in rule.peers)
    port_ok = not rule.ports or any(port_matches(p, conn.dst, conn.port, conn.protocol) for p in rule.ports)
    unresolved = tuple(
        f"{p.port}/{p.protocol}" for p in rule.ports
        if isinstance(p.port, str) and p.protocol == conn.protocol
        and (conn.dst.pod is None or conn.dst.pod.resolve_port(p.port, p.protocol) is None)
    )
    return RuleCheck(RuleRef(policy.key, direction, index), peer_ok, port_ok, unresolved)


def judge_side(state: ClusterState, direction: Direction, conn: Connection) -> SideVerdict:
    """§2: a pod is isolated for a direction iff a policy in its namespace selects it with that
    policy type; then allowed iff some rule of some selecting policy matches peer and port."""
    pod = (conn.src if direction == "egress" else conn.dst).pod
    if pod is None or not pod.takes_part:
        return SideVerdict(direction, True, "not a pod that policies select")
    isolating = [p for p in state.policies if p.isolates(direction) and selects(p, pod)]
    if not isolating:
        return SideVerdict(direction, True, f"no policy isolates {pod.key} for {direction}")
    checks = tuple(
        check_rule(state, p, i, direction, conn) for p in isolating for i in range(len(p.rules(direction)))
    )
    names = tuple(p.key for p in isolating)
    admitted = [str(c.rule) for c in checks if c.peer_matches and c.port_matches]
    if admitted:
        return SideVerdict(direction, True, f"admitted by {', '.join(admitted)}", names, checks)
    return SideVerdict(direction, False, f"isolated by {', '.join(names)} and no rule admits it",
                       names, checks)


def _node_of(state: ClusterState, pod: Pod | None) -> frozenset[IPAddress]:
    if pod is None or pod.node_name is None:
        return frozenset()
    return state.node_addresses.get(pod.node_name, frozenset())


def endpoint(state: ClusterState, ip: IPAddress) -> Endpoint:
    """The endpoint for an address: the active, non-hostNetwork pod that owns it, if any."""
    owner = next((p for p in state.pods if p.takes_part and ip in p.ips), None)
    node = next((name for name, ips in state.node_addresses.items() if ip in ips), None)
    return Endpoint(ip, owner, None if owner else node)


def allowed(state: ClusterState, src: Endpoint, dst: Endpoint, port: int | None, protocol: str) -> Verdict:
    """§2: S→D is allowed iff S's egress allows it and D's ingress allows it."""
    conn = Connection(src, dst, port, protocol)
    exempt = None
    if src.pod is not None and src.pod == dst.pod:
        exempt = "a pod can always reach itself"
    elif src.ip in _node_of(state, dst.pod) or dst.ip in _node_of(state, src.pod):
        exempt = "traffic between a pod and its own node is always allowed"
    if exempt:
        side_e = SideVerdict("egress", True, exempt)
        side_i = SideVerdict("ingress", True, exempt)
        return Verdict(True, conn, side_e, side_i, exempt)
    egress = judge_side(state, "egress", conn)
    ingress = judge_side(state, "ingress", conn)
    ok = egress.allowed and ingress.allowed
    if ok:
        reason = "allowed: egress and ingress both allow it"
    else:
        denied = [s.direction for s in (egress, ingress) if not s.allowed]
        reason = f"denied by {' and '.join(denied)}"
    return Verdict(ok, conn, egress, ingress, reason)


def pod_verdicts(state: ClusterState, src: Pod, dst: Pod, port: int | None, protocol: str) -> list[Verdict]:
    """One verdict per address family the two pods share (dual-stack: every pod IP counts)."""
    if src == dst and src.ips:
        return [allowed(state, Endpoint(src.ips[0], src), Endpoint(dst.ips[0], dst), port, protocol)]
    return [
        allowed(state, Endpoint(s, src), Endpoint(d, dst), port, protocol)
        for s in src.ips for d in dst.ips if s.version == d.version
    ]


def pods_connect(state: ClusterState, src: Pod, dst: Pod, port: int | None, protocol: str) -> bool:
    """A reach-matrix cell: S can connect to D over at least one shared address family."""
    return any(v.allowed for v in pod_verdicts(state, src, dst, port, protocol))
