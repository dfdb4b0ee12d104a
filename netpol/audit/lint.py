"""`netpol lint`: what in the policies is dead, redundant or risky, as findings a person or a CI
gate can act on.

A finding has a stable id (a readable slug, one per check: `CHECKS` lists them, and an id never
changes meaning once released), a severity, the object (`NetworkPolicy ns/name`,
`ClusterNetworkPolicy name`, `Namespace name`), the field path inside it
(`spec.ingress[0].from[1]`), a message, and the other objects involved (`related`). Where the
object was written (file, line) is added afterwards, by `netpol.audit.locate`, for the findings
only. Severities: `error`, traffic nearly every workload needs is blocked; `warning`, something is
written that does nothing, does nothing more than other policies already do, or means something
other than it seems to; `info`, a practice worth knowing about.

Checks that ask which pods something selects need pods: when the input has none (manifests
without `kubectl get pods -A -o yaml`), they are skipped and a note says so.

Measured (`benchmarks/kube_burner.py --pods 1000 --policies 250`, 206 default probes, 2-core VM):
every check but redundancy 0.05 s, redundancy 0.3 s (its module docstring has the larger shapes),
`netpol lint` end to end 0.9 s, `locate` (composing the 3 MB file again) about half of that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from netpol.audit.redundancy import SearchCounts, find_redundant
from netpol.audit.selection import PodSelection, iter_bits
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterProtocol,
    ClusterState,
    DestinationNamedPort,
    DestinationPorts,
    Direction,
    IPBlock,
    IPNetwork,
    NetworkPolicy,
    Node,
    Pod,
    Rule,
)
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reference import priority_ties

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")  # most severe first
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
SHOWN = 5  # pods or nodes named in a message, at most
DNS_PORT = 53


@dataclass(frozen=True)
class Check:
    """One kind of finding: its id, severity, one line saying what it finds, and why it matters."""

    id: str
    severity: Severity
    summary: str
    why: str


CHECKS: dict[str, Check] = {c.id: c for c in (
    Check("egress-blocks-dns", "error", "Pods isolated for egress cannot reach DNS (53/UDP)",
          "A pod isolated for egress with no rule admitting 53/UDP to any destination cannot resolve "
          "names (services, external hosts). Add an egress rule to kube-dns (namespace kube-system, "
          "k8s-app: kube-dns) on 53/UDP and 53/TCP."),
    Check("egress-blocks-dns-tcp", "warning", "Pods isolated for egress reach DNS over UDP but not TCP",
          "DNS answers too large for UDP are truncated and asked again over TCP: without 53/TCP those "
          "lookups fail. Admit 53/TCP next to 53/UDP."),
    Check("policy-selects-nothing", "warning", "A policy selects no pod",
          "No pod of the input matches the policy's podSelector (a ClusterNetworkPolicy's subject): it "
          "does nothing, often because of a label typo."),
    Check("peer-selects-nothing", "warning", "A rule's peer matches no pod",
          "A podSelector/namespaceSelector peer (a cluster policy's pods/namespaces/nodes peer) that "
          "matches nothing admits nothing: often a label typo, or a namespace without the label."),
    Check("named-port-unresolved", "warning", "A named port resolves on no pod",
          "A named port matches only pods with a container port of that name and protocol: in ingress "
          "the pods the policy selects, in egress the destinations. None has it, so the entry "
          "matches nothing."),
    Check("policy-type-missing", "warning", "Rules of a direction the policy does not isolate are ignored",
          "spec.policyTypes is given and leaves out a direction the policy has rules for: Kubernetes "
          "ignores those rules."),
    Check("policy-redundant", "warning", "Removing the policy changes no verdict",
          "Every connection between the input's pods, on every default probe, gets the same verdict "
          "without this policy: other policies isolate its pods and admit what it admits."),
    Check("rule-redundant", "warning", "Removing the rule changes no verdict",
          "Every connection between the input's pods, on every default probe, gets the same verdict "
          "without this rule: other rules admit what it admits."),
    Check("ipblock-covers-cluster", "warning", "An ipBlock covers pod or node addresses",
          "ipBlock is meant for addresses outside the cluster: a pod's address changes when it is "
          "recreated, and selectors say which pods are meant. Select pods with podSelector/"
          "namespaceSelector, or put the cluster's ranges in `except`."),
    Check("cluster-priority-tie", "warning", "Cluster policies share a tier and a priority",
          "The API leaves the order of policies with equal priorities undefined; implementations may "
          "differ. netpol evaluates them by name."),
    Check("namespace-without-default-deny", "info", "A namespace has no default-deny ingress policy",
          "Without a policy selecting all pods of the namespace for ingress with no rules, pods no "
          "other policy selects (new ones too) accept connections from anywhere."),
)}


@dataclass(frozen=True)
class Finding:
    """One finding; `file` and `line` are where the object (the field, when found) was written,
    None for objects not read from a file (stdin, a live cluster, a namespace no object defines)."""

    id: str
    severity: Severity
    object: str
    path: str
    message: str
    related: tuple[str, ...] = ()
    file: str | None = None
    line: int | None = None

    def sort_key(self) -> tuple[Any, ...]:
        """By file (objects without one last), line, id, then object and path."""
        return (self.file is None, self.file or "", self.line or 0, self.id, self.object, self.path,
                self.message)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: `file`/`line` only when known."""
        found: dict[str, Any] = {"id": self.id, "severity": self.severity, "object": self.object,
                                 "path": self.path, "message": self.message, "related": list(self.related)}
        if self.file is not None:
            found["file"] = self.file
        if self.line is not None:
            found["line"] = self.line
        return found


def at_least(findings: Iterable[Finding], severity: Severity) -> list[Finding]:
    """The findings at `severity` or more severe (`--fail-on`)."""
    rank = SEVERITIES.index(severity)
    return [f for f in findings if SEVERITIES.index(f.severity) <= rank]


@dataclass(frozen=True)
class LintReport:
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()


@dataclass
class _Context:
    """What the checks share: the state, its pods indexed, the default probes."""

    state: ClusterState
    sel: PodSelection
    probes: tuple[Probe, ...]
    targets: dict[str, int] = field(default_factory=dict)
    _declaring: dict[tuple[str, str | None], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.targets = {p.key: self.sel.policy_targets(p) for p in self.state.policies}

    def declaring(self, name: str, protocol: str | None) -> int:
        """Pods with a container port `name` (of `protocol`; None: any protocol)."""
        found = self._declaring.get((name, protocol))
        if found is None:
            found = 0
            for i, pod in enumerate(self.sel.pods):
                if any(p.name == name and (protocol is None or p.protocol == protocol) for p in pod.ports):
                    found |= 1 << i
            self._declaring[(name, protocol)] = found
        return found

    def finding(self, check: str, obj: str, path: str, message: str, related: Iterable[str] = ()) -> Finding:
        return Finding(check, CHECKS[check].severity, obj, path, message, tuple(related))


def _few(names: Sequence[str]) -> str:
    """`a, b, c` or `a, b, c, d, e and 7 more`."""
    if len(names) <= SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN])} and {len(names) - SHOWN} more"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _peers_field(direction: Direction) -> str:
    return "from" if direction == "ingress" else "to"


def _rules(policy: NetworkPolicy) -> Iterator[tuple[Direction, int, Rule]]:
    """The rules Kubernetes applies: those of the directions the policy isolates."""
    for direction in DIRECTIONS:
        if policy.isolates(direction):
            for index, rule in enumerate(policy.rules(direction)):
                yield direction, index, rule


# -- a policy or a peer that selects nothing -------------------------------------------------------


def check_selects_nothing(ctx: _Context) -> Iterator[Finding]:
    for policy in ctx.state.policies:
        if not ctx.targets[policy.key]:
            where = (f"no pod of namespace {policy.namespace} matches podSelector "
                     f"{policy.pod_selector.describe()}" if ctx.sel.in_namespace(policy.namespace)
                     else f"namespace {policy.namespace} has no pods in the input")
            yield ctx.finding("policy-selects-nothing", policy.ref, "spec.podSelector",
                              f"selects no pod: {where}")
    for cluster_policy in ctx.state.cluster_policies:
        if not ctx.sel.cluster_subject(cluster_policy):
            yield ctx.finding("policy-selects-nothing", cluster_policy.ref, "spec.subject",
                              "its subject matches no pod of the input")


def _why_nothing(ctx: _Context, policy: NetworkPolicy, namespace_selector: Any, pod_selector: Any) -> str:
    """Why a selector peer matches nothing, in the terms it is written in."""
    pods = "" if pod_selector is None else f" matches podSelector {pod_selector.describe()}"
    if namespace_selector is None:
        return f"no pod of namespace {policy.namespace}{pods}"
    namespaces = ctx.sel.matching_namespaces(namespace_selector)
    if not namespaces:
        return f"no namespace matches namespaceSelector {namespace_selector.describe()}"
    if not pods:
        return f"the namespaces namespaceSelector matches ({_few(namespaces)}) have no pods in the input"
    return f"no pod of the namespaces namespaceSelector matches ({_few(namespaces)}){pods}"


def check_peers(ctx: _Context) -> Iterator[Finding]:
    for policy in ctx.state.policies:
        for direction, index, rule in _rules(policy):
            for j, peer in enumerate(rule.peers):
                if peer.ip_block is None and not ctx.sel.peer(policy, peer):
                    why = _why_nothing(ctx, policy, peer.namespace_selector, peer.pod_selector)
                    yield ctx.finding("peer-selects-nothing", policy.ref,
                                      f"spec.{direction}[{index}].{_peers_field(direction)}[{j}]",
                                      f"matches no pod: {why}")
    for cluster_policy in ctx.state.cluster_policies:
        for direction in DIRECTIONS:
            for index, cluster_rule in enumerate(cluster_policy.rules(direction)):
                for j, cluster_peer in enumerate(cluster_rule.peers):
                    path = f"spec.{direction}[{index}].{_peers_field(direction)}[{j}]"
                    if cluster_peer.nodes is not None:
                        if ctx.state.nodes and not any(cluster_peer.nodes.matches(n.labels)
                                                       for n in ctx.state.nodes):
                            yield ctx.finding("peer-selects-nothing", cluster_policy.ref, path,
                                              f"matches no node: no Node of the input matches "
                                              f"{cluster_peer.nodes.describe()}")
                    elif not cluster_peer.networks and not ctx.sel.cluster_peer(cluster_peer):
                        yield ctx.finding("peer-selects-nothing", cluster_policy.ref, path,
                                          "matches no pod of the input")


# -- named ports -----------------------------------------------------------------------------------


def check_named_ports(ctx: _Context) -> Iterator[Finding]:
    for policy in ctx.state.policies:
        targets = ctx.targets[policy.key]
        if not targets:
            continue  # said already: the policy selects nothing
        for direction, index, rule in _rules(policy):
            for k, entry in enumerate(rule.ports):
                if not isinstance(entry.port, str):
                    continue
                where = targets if direction == "ingress" else ctx.sel.all
                if not ctx.declaring(entry.port, entry.protocol) & where:
                    whose = "no pod this policy selects" if direction == "ingress" else "no pod of the input"
                    yield ctx.finding("named-port-unresolved", policy.ref,
                                      f"spec.{direction}[{index}].ports[{k}]",
                                      f"{whose} has a container port named {entry.port!r} "
                                      f"({entry.protocol}): this entry matches nothing")
    for cluster_policy in ctx.state.cluster_policies:
        subject = ctx.sel.cluster_subject(cluster_policy)
        field_name = "protocols" if cluster_policy.kind == "ClusterNetworkPolicy" else "ports"
        for direction in DIRECTIONS:
            for index, cluster_rule in enumerate(cluster_policy.rules(direction)):
                for k, protocol in enumerate(cluster_rule.protocols):
                    if not isinstance(protocol, DestinationNamedPort):
                        continue
                    where = subject if direction == "ingress" else ctx.sel.all
                    if not ctx.declaring(protocol.name, None) & where:
                        whose = "no pod of its subject" if direction == "ingress" else "no pod of the input"
                        yield ctx.finding("named-port-unresolved", cluster_policy.ref,
                                          f"spec.{direction}[{index}].{field_name}[{k}]",
                                          f"{whose} has a container port named {protocol.name!r}: "
                                          "this entry matches nothing")


def check_policy_types(ctx: _Context) -> Iterator[Finding]:
    for policy in ctx.state.policies:
        for direction in DIRECTIONS:
            if policy.rules(direction) and not policy.isolates(direction):
                kind = direction.capitalize()
                yield ctx.finding("policy-type-missing", policy.ref, "spec.policyTypes",
                                  f"spec.{direction} has {_plural(len(policy.rules(direction)), 'rule')} but "
                                  f"spec.policyTypes [{', '.join(policy.policy_types)}] leaves out {kind}: "
                                  f"Kubernetes ignores them (add {kind} to policyTypes, or delete the rules)")


# -- DNS -------------------------------------------------------------------------------------------


def _admits_port(ctx: _Context, rule: Rule, protocol: str, port: int) -> bool:
    """Some entry of the rule's ports admits `port`/`protocol` (a named port: where some pod gives
    the name that number)."""
    if not rule.ports:
        return True
    for entry in rule.ports:
        if entry.protocol != protocol:
            continue
        if entry.port is None:
            return True
        if isinstance(entry.port, int) and entry.port <= port <= (entry.end_port or entry.port):
            return True
        if isinstance(entry.port, str) and any(ctx.sel.pods[i].resolve_port(entry.port, protocol) == port
                                               for i in iter_bits(ctx.declaring(entry.port, protocol))):
            return True
    return False


def _admits_dns(ctx: _Context, policy: NetworkPolicy, protocol: str) -> bool:
    """An egress rule admits DNS over `protocol` to anything: an ipBlock, every peer, or a pod."""
    return any(_admits_port(ctx, rule, protocol, DNS_PORT) and _reaches_something(ctx, policy, rule)
               for rule in policy.egress)


def _reaches_something(ctx: _Context, policy: NetworkPolicy, rule: Rule) -> bool:
    return not rule.peers or any(p.ip_block is not None or ctx.sel.peer(policy, p) for p in rule.peers)


def _cluster_admits(protocols: tuple[ClusterProtocol, ...], protocol: str, port: int) -> bool:
    return not protocols or any(isinstance(e, DestinationNamedPort) or (
        isinstance(e, DestinationPorts) and e.protocol == protocol and e.first <= port <= e.last)
        for e in protocols)


def _admin_accepts_dns(ctx: _Context, protocol: str) -> int:
    """Pods an Admin-tier Accept rule lets out on DNS (before the NetworkPolicy tier decides)."""
    bits = 0
    for cluster_policy in ctx.state.tier_policies("Admin"):
        if any(r.action == "Accept" and _cluster_admits(r.protocols, protocol, DNS_PORT)
               for r in cluster_policy.egress):
            bits |= ctx.sel.cluster_subject(cluster_policy)
    return bits


def check_dns(ctx: _Context) -> Iterator[Finding]:
    """Pods the NetworkPolicy tier isolates for egress, grouped by the policies isolating them."""
    isolating: dict[int, list[NetworkPolicy]] = {}
    for policy in ctx.state.policies:
        if policy.isolates("egress"):
            for pod in iter_bits(ctx.targets[policy.key]):
                isolating.setdefault(pod, []).append(policy)
    admits = {(p.key, proto): _admits_dns(ctx, p, proto) for p in ctx.state.policies if p.isolates("egress")
              for proto in ("UDP", "TCP")}
    admin = {proto: _admin_accepts_dns(ctx, proto) for proto in ("UDP", "TCP")}
    groups: dict[tuple[tuple[str, ...], str], list[int]] = {}
    for pod, policies in isolating.items():
        open_ = {proto for proto in ("UDP", "TCP")
                 if admin[proto] >> pod & 1 or any(admits[(p.key, proto)] for p in policies)}
        if "UDP" not in open_:
            missing = "53/UDP" if "TCP" in open_ else "53/UDP and 53/TCP"
        elif "TCP" not in open_:
            missing = "53/TCP"
        else:
            continue
        groups.setdefault((tuple(sorted(p.key for p in policies)), missing), []).append(pod)
    by_key = {p.key: p for p in ctx.state.policies}
    for (keys, missing), pods in sorted(groups.items()):
        first = by_key[keys[0]]
        names = [ctx.sel.pods[i].key for i in sorted(pods)]
        who = ", ".join(f"NetworkPolicy {k}" for k in keys)
        related = [f"NetworkPolicy {k}" for k in keys[1:]]
        related += [ctx.sel.pods[i].ref for i in sorted(pods)[:SHOWN]]
        path = "spec.egress" if first.egress else "spec.policyTypes"
        if missing == "53/TCP":
            yield ctx.finding("egress-blocks-dns-tcp", first.ref, path,
                              f"{_plural(len(names), 'pod')} isolated for egress ({_few(names)}) reach DNS "
                              f"over 53/UDP but no egress rule of {who} admits 53/TCP: answers too large for "
                              "UDP fail", related)
        else:
            yield ctx.finding("egress-blocks-dns", first.ref, path,
                              f"{_plural(len(names), 'pod')} isolated for egress ({_few(names)}) and no "
                              f"egress rule of {who} admits DNS ({missing}) to any destination: their name "
                              "lookups fail; admit 53/UDP and 53/TCP to kube-dns (kube-system, "
                              "k8s-app: kube-dns)",
                              related)


# -- ipBlocks over the cluster's own addresses -----------------------------------------------------


def _covered(ctx: _Context, networks: tuple[IPNetwork, ...], excepted: tuple[IPNetwork, ...]
             ) -> tuple[list[Pod], list[Node], list[Node]]:
    """Pods with an address inside, nodes with an address inside, nodes whose podCIDR overlaps."""
    pods = ctx.sel.pods_of(ctx.sel.in_networks(networks, excepted))
    block = [IPBlock(n, tuple(e for e in excepted if e.version == n.version)) for n in networks]
    addressed = [n for n in ctx.state.nodes if any(b.contains(a) for b in block for a in n.addresses
                                                   if a.version == b.cidr.version)]
    ranged = [n for n in ctx.state.nodes if any(
        c.version == b.cidr.version and c.overlaps(b.cidr)
        and not any(e.version == c.version and c.subnet_of(e) for e in b.except_)  # type: ignore[arg-type]
        for b in block for c in n.pod_cidrs)]
    return pods, addressed, ranged


def _coverage(ctx: _Context, what: str, networks: tuple[IPNetwork, ...], excepted: tuple[IPNetwork, ...]
              ) -> tuple[str, list[str]] | None:
    """The message and related objects when the block covers some of the cluster's addresses."""
    if any(n.prefixlen == 0 for n in networks):
        return None  # 0.0.0.0/0, ::/0: "anywhere", meant as such
    pods, addressed, ranged = _covered(ctx, networks, excepted)
    if not (pods or addressed or ranged):
        return None
    parts = []
    for what_of, names, noun in (("the addresses of", [p.key for p in pods], "pod"),
                                 ("the addresses of", [n.name for n in addressed], "node"),
                                 ("the pod ranges (podCIDR) of", [n.name for n in ranged], "node")):
        if names:
            parts.append(f"{what_of} {_plural(len(names), noun)} ({_few(names)})")
    related = [p.ref for p in pods[:SHOWN]] + [n.ref for n in (addressed + ranged)[:SHOWN]]
    return (f"{what} covers {'; '.join(parts)}: ipBlock is meant for addresses outside the cluster; "
            "select pods with podSelector/namespaceSelector, or add these ranges to except"), related


def check_ip_blocks(ctx: _Context) -> Iterator[Finding]:
    for policy in ctx.state.policies:
        for direction, index, rule in _rules(policy):
            for j, peer in enumerate(rule.peers):
                if peer.ip_block is None:
                    continue
                block = peer.ip_block
                shown = f"ipBlock {block.cidr}" + (f" except {', '.join(map(str, block.except_))}"
                                                   if block.except_ else "")
                found = _coverage(ctx, shown, (block.cidr,), block.except_)
                if found is not None:
                    path = f"spec.{direction}[{index}].{_peers_field(direction)}[{j}].ipBlock"
                    yield ctx.finding("ipblock-covers-cluster", policy.ref, path, *found)
    for cluster_policy in ctx.state.cluster_policies:
        for index, cluster_rule in enumerate(cluster_policy.egress):
            for j, cluster_peer in enumerate(cluster_rule.peers):
                for k, network in enumerate(cluster_peer.networks):
                    found = _coverage(ctx, f"network {network}", (network,), ())
                    if found is not None:
                        yield ctx.finding("ipblock-covers-cluster", cluster_policy.ref,
                                          f"spec.egress[{index}].to[{j}].networks[{k}]", *found)


# -- cluster policies, namespaces ------------------------------------------------------------------


def check_priority_ties(ctx: _Context) -> Iterator[Finding]:
    """One finding per policy of each tie (each is where someone reads it), with the sentence of
    `priority_ties` (the same `netpol validate` warns with)."""
    sentences = priority_ties(ctx.state)
    groups: dict[tuple[str, int], list[ClusterNetworkPolicy]] = {}
    for policy in ctx.state.cluster_policies:
        groups.setdefault((policy.tier, policy.priority), []).append(policy)
    for (tier, priority), policies in groups.items():
        if len(policies) < 2:
            continue
        sentence = next(s for s in sentences if s.startswith(f"{tier} tier, priority {priority}:"))
        for policy in policies:
            yield ctx.finding("cluster-priority-tie", policy.ref, "spec.priority", sentence,
                              [p.ref for p in policies if p is not policy])


def is_namespace_default_deny(policy: NetworkPolicy) -> bool:
    """Selects every pod of its namespace for ingress and admits nothing."""
    return policy.pod_selector.is_empty and policy.isolates("ingress") and not policy.ingress


def check_default_deny(ctx: _Context) -> Iterator[Finding]:
    guarded = {p.namespace for p in ctx.state.policies if is_namespace_default_deny(p)}
    isolated = 0
    for policy in ctx.state.policies:
        if policy.isolates("ingress"):
            isolated |= ctx.targets[policy.key]
    for namespace in ctx.state.namespaces:
        if namespace.name in guarded:
            continue
        pods = ctx.sel.in_namespace(namespace.name)
        open_now = (pods & ~isolated).bit_count()
        now = f" (now {open_now} of its {_plural(pods.bit_count(), 'pod')})" if pods else ""
        yield ctx.finding("namespace-without-default-deny", namespace.ref, "",
                          "no NetworkPolicy selects all its pods (podSelector: {}) for ingress without "
                          "rules: pods no policy selects, new ones too, accept connections from anywhere"
                          + now)


# -- redundancy ------------------------------------------------------------------------------------


def check_redundancy(ctx: _Context, counts: SearchCounts | None) -> Iterator[Finding]:
    """Not reported again: what another finding already says does nothing (a policy selecting
    nothing, a rule whose peers or named ports match nothing; ignored rules are never judged)."""
    skip_policies = frozenset(key for key, targets in ctx.targets.items() if not targets)
    skip_rules = frozenset(_dead_rules(ctx))
    cells = f"no verdict between the input's pods on any of the {_plural(len(ctx.probes), 'probe')}"
    for item in find_redundant(ctx.state, ctx.probes, ctx.sel, skip_policies=skip_policies,
                               skip_rules=skip_rules, counts=counts):
        if item.direction is None:
            yield ctx.finding("policy-redundant", item.policy.ref, "",
                              f"removing this policy changes {cells}: other policies isolate its pods, and "
                              "what it admits they admit too or the other side denies", item.related)
        else:
            yield ctx.finding("rule-redundant", item.policy.ref, item.path,
                              f"removing this rule changes {cells}: what it admits other rules admit too or "
                              "the other side denies", item.related)


def _dead_rules(ctx: _Context) -> Iterator[tuple[str, Direction, int]]:
    """Rules that admit nothing whatever else is written: every peer matches no pod (and none is
    an ipBlock), or every port is a name no destination has."""
    for policy in ctx.state.policies:
        for direction, index, rule in _rules(policy):
            no_peer = bool(rule.peers) and not _reaches_something(ctx, policy, rule)
            where = ctx.targets[policy.key] if direction == "ingress" else ctx.sel.all
            no_port = bool(rule.ports) and all(
                isinstance(e.port, str) and not ctx.declaring(e.port, e.protocol) & where for e in rule.ports)
            if no_peer or no_port:
                yield policy.key, direction, index


# -- the whole lint --------------------------------------------------------------------------------

PodCheck = Callable[[_Context], Iterator[Finding]]
NEED_PODS: tuple[PodCheck, ...] = (check_selects_nothing, check_peers, check_named_ports, check_dns)
ALWAYS: tuple[PodCheck, ...] = (check_policy_types, check_ip_blocks, check_priority_ties, check_default_deny)


def lint(state: ClusterState, probes: Sequence[Probe] | None = None, redundancy: bool = True,
         counts: SearchCounts | None = None) -> LintReport:
    """Every finding about `state` (without file or line: see `netpol.audit.locate`), sorted by
    id, object and path; and notes on what was not checked. `probes`: the cells redundancy is
    judged on (default: `default_probes`)."""
    ctx = _Context(state, PodSelection(state), tuple(probes) if probes is not None else default_probes(state))
    findings: list[Finding] = []
    notes: list[str] = []
    for check in ALWAYS:
        findings += check(ctx)
    if ctx.sel.pods:
        for check in NEED_PODS:
            findings += check(ctx)
        if redundancy:
            findings += check_redundancy(ctx, counts)
    else:
        notes.append("the input has no pods: the checks of what policies select (policy-selects-nothing, "
                     "peer-selects-nothing, named-port-unresolved, egress-blocks-dns, *-redundant) need "
                     "them; add the running pods (`kubectl get pods -A -o yaml`)")
    return LintReport(tuple(sorted(findings, key=Finding.sort_key)), tuple(notes))


# -- text and JSON ---------------------------------------------------------------------------------


def render_text(findings: Sequence[Finding]) -> str:
    """One finding per line: `file:line: severity id object path: message` (no `file:line: ` for
    an object not read from a file)."""
    lines = []
    for f in findings:
        where = f"{f.file}:{f.line}: " if f.file and f.line else f"{f.file}: " if f.file else ""
        lines.append(f"{where}{f.severity} {f.id} {f.object}{' ' + f.path if f.path else ''}: {f.message}\n")
    return "".join(lines)


def render_json(findings: Sequence[Finding]) -> str:
    """A list of findings: `id`, `severity`, `object`, `path`, `message`, `related`, and `file`,
    `line` when known."""
    return json.dumps([f.as_dict() for f in findings], indent=2) + "\n"


def summary(findings: Sequence[Finding]) -> str:
    """`3 findings (1 error, 2 warnings)`."""
    counts = [(s, sum(f.severity == s for f in findings)) for s in SEVERITIES]
    shown = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts if n)
    return f"{_plural(len(findings), 'finding')}{f' ({shown})' if shown else ''}"
