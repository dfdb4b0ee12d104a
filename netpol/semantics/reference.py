"""The reference evaluator of DESIGN §2 and §2b: is a connection allowed, and why.

Spec-literal and slow on purpose: it scans every policy for every question. Everything faster
(reach, the IR, the rulesets) is tested against it. Each clause quotes DESIGN §2.

Per side (the source's egress, the destination's ingress), for a pod that takes part: the Admin
tier (ClusterNetworkPolicies by priority, then name; rules in written order; the first that
matches decides: Accept and Deny are final, Pass goes on), then the NetworkPolicy tier (final
for a pod it isolates in that direction: isolated and not admitted is denied, never passed on),
then the Baseline tier (Pass: on to the default), then the default: allow. Traffic between a
pod and its own node is exempt in the NetworkPolicy tier only: an Admin verdict comes first,
and a Baseline one applies when no NetworkPolicy isolates the pod (node → pod traffic, such as
kubelet probes, is never matched by a cluster policy: ingress peers are pods only).
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol.labels import LabelSelector
from netpol.model import (
    TIERS,
    Action,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterProtocol,
    ClusterRule,
    ClusterState,
    DestinationNamedPort,
    Direction,
    IPAddress,
    NamespacedPods,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    Tier,
)


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
class ClusterRuleRef:
    """The first rule of a tier that matched a connection: which policy, priority, rule, action."""

    policy: str  # its ref: `ClusterNetworkPolicy name` (or the v1alpha1 kind it was read as)
    tier: Tier
    priority: int
    direction: Direction
    index: int
    name: str
    action: Action
    fails_closed: bool = False  # a peer with no field we recognise made this rule deny all

    def __str__(self) -> str:
        named = f" ({self.name})" if self.name else ""
        closed = " (fails closed: a peer with no field netpol recognises)" if self.fails_closed else ""
        return (f"{self.tier} tier: {self.policy} (priority {self.priority}) "
                f"spec.{self.direction}[{self.index}]{named}: {self.action}{closed}")


@dataclass(frozen=True)
class SideVerdict:
    """What one side's policies (source egress or destination ingress) say. `tier` is the tier
    that decided: "Admin", "NetworkPolicy", "Baseline", or "default" when none did (allow); ""
    for an exemption, a side without a pod, and in a state without cluster policies (there are
    no tiers to name). `tier_rules`: the first matching cluster-policy rule of each tier
    consulted, in order (Pass rules, then the one that decided, if a cluster policy did)."""

    direction: Direction
    allowed: bool
    reason: str
    isolated_by: tuple[str, ...] = ()
    checks: tuple[RuleCheck, ...] = ()
    tier: str = ""
    tier_rules: tuple[ClusterRuleRef, ...] = ()

    @property
    def admitted_by(self) -> tuple[RuleRef, ...]:
        return tuple(c.rule for c in self.checks if c.peer_matches and c.port_matches)

    @property
    def decided_by(self) -> ClusterRuleRef | None:
        """The cluster-policy rule that decided this side, if one did (Accept or Deny)."""
        last = self.tier_rules[-1] if self.tier_rules else None
        return last if last is not None and last.action != "Pass" else None


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
    """§2b: the Admin tier, the NetworkPolicy tier, the Baseline tier, the default (allow)."""
    pod = (conn.src if direction == "egress" else conn.dst).pod
    if pod is None or not pod.takes_part:
        return SideVerdict(direction, True, "not a pod that policies select")
    passed: list[ClusterRuleRef] = []
    admin = judge_tier(state, "Admin", direction, conn, pod)
    if admin is not None:
        passed.append(admin)
        if admin.action != "Pass":
            return _tier_verdict(direction, admin, tuple(passed))
    isolating = [p for p in state.policies if p.isolates(direction) and selects(p, pod)]
    if isolating:
        return _policy_tier(state, direction, conn, isolating, tuple(passed))
    baseline = judge_tier(state, "Baseline", direction, conn, pod)
    if baseline is not None:
        passed.append(baseline)
        if baseline.action != "Pass":
            return _tier_verdict(direction, baseline, tuple(passed))
    if not state.cluster_policies:
        return SideVerdict(direction, True, f"no policy isolates {pod.key} for {direction}")
    reason = f"no tier decided: default allow (no NetworkPolicy isolates {pod.key} for {direction})"
    return SideVerdict(direction, True, reason, tier="default", tier_rules=tuple(passed))


def _tier_verdict(direction: Direction, rule: ClusterRuleRef,
                  passed: tuple[ClusterRuleRef, ...]) -> SideVerdict:
    allowed_ = rule.action == "Accept"
    return SideVerdict(direction, allowed_, f"{'accepted' if allowed_ else 'denied'} by {rule}",
                       tier=rule.tier, tier_rules=passed)


def _policy_tier(state: ClusterState, direction: Direction, conn: Connection, isolating: list[NetworkPolicy],
                 passed: tuple[ClusterRuleRef, ...]) -> SideVerdict:
    """§2: isolated ⇒ allowed iff some rule of some selecting policy matches peer and port; final
    either way (an isolated pod that no rule admits is denied here, not passed to Baseline). Its
    own node is exempt here, in this tier only."""
    names = tuple(p.key for p in isolating)
    tier = "NetworkPolicy" if state.cluster_policies else ""  # without cluster policies, no tiers to name
    if own_node_traffic(state, conn):
        return SideVerdict(direction, True, OWN_NODE_EXEMPT, names, (), tier, passed)
    checks = tuple(
        check_rule(state, p, i, direction, conn) for p in isolating for i in range(len(p.rules(direction)))
    )
    admitted = [str(c.rule) for c in checks if c.peer_matches and c.port_matches]
    if admitted:
        return SideVerdict(direction, True, f"admitted by {', '.join(admitted)}", names, checks, tier, passed)
    return SideVerdict(direction, False, f"isolated by {', '.join(names)} and no rule admits it",
                       names, checks, tier, passed)


# -- ClusterNetworkPolicy (§2b) ---------------------------------------------------------------------

def _namespaced_pods_match(state: ClusterState, pods: NamespacedPods, pod: Pod) -> bool:
    return (pods.namespace_selector.matches(state.namespace(pod.namespace).labels)
            and pods.pod_selector.matches(pod.labels))


def cluster_selects(state: ClusterState, policy: ClusterNetworkPolicy, pod: Pod) -> bool:
    """§2b subject: `namespaces` = every pod of the matching namespaces; `pods` = pods matching
    the pod selector in namespaces matching the namespace selector. Never a hostNetwork pod."""
    if not pod.takes_part:
        return False
    subject = policy.subject
    if subject.namespaces is not None:
        return subject.namespaces.matches(state.namespace(pod.namespace).labels)
    return subject.pods is not None and _namespaced_pods_match(state, subject.pods, pod)


def _node_selected(state: ClusterState, selector: LabelSelector, ip: IPAddress) -> bool:
    """`nodes`: the address is one of a matching Node's `status.addresses` (never "the node the
    subject runs on")."""
    return any(ip in node.addresses and selector.matches(node.labels) for node in state.nodes)


def cluster_peer_matches(state: ClusterState, peer: ClusterPeer, other: Endpoint) -> bool:
    """§2b peers: `namespaces`/`pods` match pods that take part (never hostNetwork ones),
    `networks` any address in the CIDRs (pod IPs too), `nodes` the matching Nodes' addresses. A
    peer with no field we recognise matches nothing here (see `ClusterRule.fails_closed`)."""
    if peer.networks:
        return any(other.ip in network for network in peer.networks)
    if peer.nodes is not None:
        return _node_selected(state, peer.nodes, other.ip)
    pod = other.pod
    if pod is None or not pod.takes_part:
        return False
    if peer.namespaces is not None:
        return peer.namespaces.matches(state.namespace(pod.namespace).labels)
    return peer.pods is not None and _namespaced_pods_match(state, peer.pods, pod)


def protocol_matches(entry: ClusterProtocol, dst: Endpoint, port: int | None, protocol: str) -> bool:
    """§2b protocols: a port range of the same protocol, or a named port: a container port of the
    destination pod with that name, *and* the connection's number and protocol."""
    if isinstance(entry, DestinationNamedPort):
        return dst.pod is not None and port is not None and dst.pod.declares_port(entry.name, port, protocol)
    return entry.protocol == protocol and port is not None and entry.first <= port <= entry.last


def cluster_rule_matches(state: ClusterState, rule: ClusterRule, direction: Direction,
                         conn: Connection) -> bool:
    """Peers and protocols both (absent `protocols`: all traffic). A rule that fails closed matches
    everything (it denies all)."""
    if rule.fails_closed:
        return True
    peer = conn.src if direction == "ingress" else conn.dst
    if rule.protocols and not any(protocol_matches(e, conn.dst, conn.port, conn.protocol)
                                  for e in rule.protocols):
        return False
    return any(cluster_peer_matches(state, p, peer) for p in rule.peers)


def judge_tier(state: ClusterState, tier: Tier, direction: Direction, conn: Connection,
               pod: Pod) -> ClusterRuleRef | None:
    """The first rule, in evaluation order, of the tier's policies selecting `pod` that matches
    the connection; None when none does (a policy without rules in `direction` has no say)."""
    for policy in state.tier_policies(tier):
        rules = policy.rules(direction)
        if not rules or not cluster_selects(state, policy, pod):
            continue
        for index, rule in enumerate(rules):
            if cluster_rule_matches(state, rule, direction, conn):
                action: Action = "Deny" if rule.fails_closed else rule.action
                return ClusterRuleRef(policy.ref, tier, policy.priority, direction, index, rule.name, action,
                                      rule.fails_closed)
    return None


def priority_ties(state: ClusterState) -> list[str]:
    """One sentence per group of cluster policies that share a tier and a priority: the API leaves
    their order undefined; netpol evaluates them by name (`ClusterNetworkPolicy.order_key`)."""
    groups: dict[tuple[Tier, int], list[ClusterNetworkPolicy]] = {}
    for policy in state.cluster_policies:
        groups.setdefault((policy.tier, policy.priority), []).append(policy)
    sentences = []
    for (tier, priority), policies in sorted(groups.items(), key=lambda g: (TIERS.index(g[0][0]), g[0][1])):
        if len(policies) < 2:
            continue
        shared = sum(1 for pod in state.active_pods
                     if sum(cluster_selects(state, p, pod) for p in policies) > 1)
        sentences.append(
            f"{tier} tier, priority {priority}: {', '.join(p.ref for p in policies)} share a priority; "
            f"the API leaves their order undefined, netpol evaluates them by name in this order "
            f"({shared} pod{'s' if shared != 1 else ''} of the input {'are' if shared != 1 else 'is'} "
            f"subject to more than one of them)")
    return sentences


def _node_of(state: ClusterState, pod: Pod | None) -> frozenset[IPAddress]:
    if pod is None or pod.node_name is None:
        return frozenset()
    return state.node_addresses.get(pod.node_name, frozenset())


def endpoint(state: ClusterState, ip: IPAddress) -> Endpoint:
    """The endpoint for an address: the active, non-hostNetwork pod that owns it, if any."""
    owner = next((p for p in state.pods if p.takes_part and ip in p.ips), None)
    node = next((name for name, ips in state.node_addresses.items() if ip in ips), None)
    return Endpoint(ip, owner, None if owner else node)


OWN_NODE_EXEMPT = "traffic between a pod and its own node is always allowed"


def own_node_traffic(state: ClusterState, conn: Connection) -> bool:
    """§2: traffic between a pod and its own node (kubelet probes): exempt from NetworkPolicy."""
    return conn.src.ip in _node_of(state, conn.dst.pod) or conn.dst.ip in _node_of(state, conn.src.pod)


def allowed(state: ClusterState, src: Endpoint, dst: Endpoint, port: int | None, protocol: str) -> Verdict:
    """§2: S→D is allowed iff S's egress allows it and D's ingress allows it."""
    conn = Connection(src, dst, port, protocol)
    exempt = None
    if src.pod is not None and src.pod == dst.pod:
        exempt = "a pod can always reach itself"
    elif not state.cluster_policies and own_node_traffic(state, conn):
        exempt = OWN_NODE_EXEMPT  # with cluster policies, judged per side: NetworkPolicy tier only
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
