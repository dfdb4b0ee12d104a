"""`netpol explain`: resolving the two endpoints and telling, in words, why a verdict is what it is:
per side, the tier that decided (§2b) with the policy, priority and rule, or "no tier decided:
default allow", and for the NetworkPolicy tier the policies that isolate and the rules that
(do not) admit."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from netpol.errors import UsageError
from netpol.model import ClusterState, Pod
from netpol.semantics.probes import Probe
from netpol.semantics.reference import (
    ClusterRuleRef,
    Endpoint,
    SideVerdict,
    Verdict,
    allowed,
    endpoint,
    pod_verdicts,
)


def resolve_endpoint(state: ClusterState, text: str) -> Pod | Endpoint:
    """`NS/POD` (a pod) or an IP address (a pod's, a node's or an outside one)."""
    if "/" in text:
        pod = state.pod(text)
        if pod is None:
            raise UsageError(f"{text}: no such pod in the input")
        if not pod.takes_part:
            why = ("uses hostNetwork (give its node's IP instead)" if pod.host_network
                   else "has no IP or has finished")
            raise UsageError(f"{text}: pod {why}; it takes no part in NetworkPolicy")
        return pod
    try:
        return endpoint(state, ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"{text}: expected NAMESPACE/POD or an IP address") from None


def _endpoints(end: Pod | Endpoint) -> list[Endpoint]:
    return [Endpoint(ip, end) for ip in end.ips] if isinstance(end, Pod) else [end]


def explain(state: ClusterState, src: Pod | Endpoint, dst: Pod | Endpoint, probe: Probe) -> list[Verdict]:
    """One verdict per address family the endpoints share."""
    if isinstance(src, Pod) and isinstance(dst, Pod):
        verdicts = pod_verdicts(state, src, dst, probe.port, probe.protocol)
    else:
        verdicts = [allowed(state, s, d, probe.port, probe.protocol)
                    for s in _endpoints(src) for d in _endpoints(dst) if s.ip.version == d.ip.version]
    if not verdicts:
        raise UsageError("the two endpoints have no address family in common")
    return verdicts


def _tier_lines(side: SideVerdict) -> list[str]:
    """Which tier decided (§2b) and the cluster-policy rules on the way: Pass rules, the deciding rule."""
    lines = [f"    passed on by {rule}" for rule in side.tier_rules if rule.action == "Pass"]
    decided = side.decided_by
    if decided is not None:
        lines.append(f"    decided by the {decided}")
    elif side.tier == "NetworkPolicy":
        lines.append("    decided by the NetworkPolicy tier:")
    elif side.tier == "default":
        lines.append(f"    {side.reason}")
    return lines


def _side_lines(side: SideVerdict, subject: Endpoint) -> list[str]:
    title = "egress of the source" if side.direction == "egress" else "ingress of the destination"
    mark = "allows" if side.allowed else "DENIES"
    lines = [f"  {title} {subject}: {mark}", *_tier_lines(side)]
    if side.tier in ("Admin", "Baseline", "default"):
        return lines  # a cluster policy decided, or no tier did: said above
    if side.isolated_by:
        lines.append(f"    isolated by: {', '.join('NetworkPolicy ' + p for p in side.isolated_by)}")
    if side.admitted_by:
        lines += [f"    admitted by: {r}" for r in side.admitted_by]
    elif side.isolated_by:
        lines.append("    no rule of those policies matches both the peer and the port:")
        for c in side.checks:
            lines.append(f"      {c.rule}: peer {'matches' if c.peer_matches else 'does not match'}, "
                         f"port {'matches' if c.port_matches else 'does not match'}")
            if not c.port_matches and c.unresolved_ports:
                lines.append(f"        (named port {', '.join(c.unresolved_ports)} is not a container port "
                             "of the destination)")
        if not side.checks:
            lines.append(f"      (the policies have no {side.direction} rules: they deny all)")
    else:
        lines.append(f"    {side.reason}")
    return lines


def render_text(verdicts: list[Verdict]) -> str:
    lines: list[str] = []
    for v in verdicts:
        c = v.connection
        lines.append(f"{c}: {'ALLOWED' if v.allowed else 'DENIED'}")
        for end, other in ((c.src, c.dst), (c.dst, c.src)):
            if end.node and other.pod and end.node != other.pod.node_name:
                lines.append(f"  note: {end.ip} is node {end.node}; only a pod's own node "
                             f"({other.pod.node_name}) is exempt from policy, so only ipBlocks can admit it")
        if v.egress.reason == v.reason and v.allowed and not v.egress.isolated_by:
            lines.append(f"  {v.reason}")
        else:
            lines += _side_lines(v.egress, c.src)
            lines += _side_lines(v.ingress, c.dst)
        lines.append("")
    return "\n".join(lines)


def _side_json(side: SideVerdict) -> dict[str, Any]:
    decided = side.decided_by
    return {"allowed": side.allowed, "reason": side.reason, "isolated_by": list(side.isolated_by),
            "admitted_by": [str(r) for r in side.admitted_by],
            "rules": [{"rule": str(c.rule), "peer_matches": c.peer_matches, "port_matches": c.port_matches}
                      for c in side.checks],
            "tier": side.tier or None,
            "decided_by": None if decided is None else _rule_json(decided),
            "passed_by": [_rule_json(r) for r in side.tier_rules if r.action == "Pass"]}


def _rule_json(rule: ClusterRuleRef) -> dict[str, Any]:
    return {"policy": rule.policy, "tier": rule.tier, "priority": rule.priority,
            "rule": f"spec.{rule.direction}[{rule.index}]", "name": rule.name, "action": rule.action,
            "fails_closed": rule.fails_closed}


def render_json(verdicts: list[Verdict]) -> str:
    out = [{
        "source": str(v.connection.src), "destination": str(v.connection.dst),
        "port": v.connection.port, "protocol": v.connection.protocol,
        "allowed": v.allowed, "reason": v.reason,
        "egress": _side_json(v.egress), "ingress": _side_json(v.ingress),
    } for v in verdicts]
    return json.dumps(out, indent=1) + "\n"
