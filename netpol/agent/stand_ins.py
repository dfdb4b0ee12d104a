"""What an invalid object leaves in force: the policies the agent compiles in its place, each the
most closed its kind can be for what the object would have selected (`netpol.agent.intake`).

* `fail_closed_policy` — a NetworkPolicy: deny-all both ways for its podSelector (else its
  namespace).
* `fail_closed_cluster_policy` — a ClusterNetworkPolicy (or a v1alpha1 AdminNetworkPolicy /
  BaselineAdminNetworkPolicy): a policy of its tier, at its priority, denying everything both
  ways for its subject (else every pod).
* `closed_namespace_policies` — an invalid Namespace: a deny-all NetworkPolicy for its pods, and
  an Admin-tier policy, first of the tier, that passes their traffic on to it.

A stand-in keeps the object's name when that is valid; otherwise, and for each copy of an object
a folder defines differently twice (`conflict`), it gets a made-up valid one that says where it
came from (`<readable>.invalid-name-<6 hex>`, `<name>.conflict-<6 hex>`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from netpol.labels import Labels, LabelSelector
from netpol.load.decode import CLUSTER_SCHEMAS, SUPPORTED_KINDS, decode_document
from netpol.load.validation import check_dns1123_label, check_dns1123_subdomain
from netpol.model import (
    CLUSTER_POLICY_KINDS,
    NAMESPACE_NAME_LABEL,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterRule,
    ClusterSubject,
    NetworkPolicy,
    Tier,
)

CLOSED_NAMESPACE_POLICY = "invalid-namespace.netpol"  # the deny-all of a namespace that fails closed
# Below the API's priorities (0-1000), which only code can build: evaluated before every policy of
# its tier, whatever their names.
FIRST_IN_TIER = -1
EVERY_POD = ClusterSubject(namespaces=LabelSelector())
EVERY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# Everything a valid cluster policy could deny, and no more: ingress peers are pods only (so the
# node's own traffic to its pods, kubelet probes, stays open, as no valid policy could close it),
# egress peers any address (the pod's own node included).
DENY_ALL_INGRESS = (ClusterRule("Deny", (ClusterPeer(namespaces=LabelSelector()),), (),
                                "netpol: invalid policy, deny all"),)
DENY_ALL_EGRESS = (ClusterRule("Deny", (ClusterPeer(networks=EVERY_ADDRESS),), (),
                               "netpol: invalid policy, deny all"),)


def _digest(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=3).hexdigest()


def _readable_name(value: Any) -> str:
    """A DNS-subdomain fragment from whatever the name was ('policy' if nothing is left)."""
    text = re.sub(r"[^a-z0-9.-]+", "-", str(value).lower() if isinstance(value, str) else "")
    text = re.sub(r"\.+", ".", text).strip(".-")[:200].strip(".-")
    return re.sub(r"-*\.-*", ".", text) or "policy"


def _stand_in_name(name: Any, raw_meta: Any, conflict: str) -> str:
    """The object's name if it is a valid DNS subdomain, else one made up from it; a copy of a
    conflicting definition (`conflict`: what tells it from the other copies) gets its own."""
    if not isinstance(name, str) or check_dns1123_subdomain(name):
        name = f"{_readable_name(name)}.invalid-name-{_digest(name if isinstance(name, str) else raw_meta)}"
    if conflict:
        name = f"{_readable_name(name)}.conflict-{_digest(conflict)}"
    return str(name)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def fail_closed_policy(doc: dict[str, Any], conflict: str = "") -> NetworkPolicy | None:
    """For an invalid NetworkPolicy: a policy isolating, in both directions and admitting
    nothing, the pods it would select (its own podSelector if that is valid, else every pod of
    its namespace). None only when its namespace cannot be read."""
    raw_meta = doc.get("metadata") if isinstance(doc, dict) else None
    meta = _mapping(raw_meta)
    namespace = meta.get("namespace")
    namespace = "default" if namespace is None or namespace == "" else namespace
    if not isinstance(namespace, str) or check_dns1123_label(namespace):
        return None
    name = _stand_in_name(meta.get("name"), raw_meta, conflict)
    spec = doc.get("spec")
    selectors: tuple[Any, ...] = ((spec.get("podSelector"),) if isinstance(spec, dict) else ()) + ({},)
    for selector in selectors:
        candidate = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                     "metadata": {"name": name, "namespace": namespace},
                     "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]}}
        objects, problems = decode_document(candidate, "fail-closed")
        if objects and not problems and isinstance(objects[0], NetworkPolicy):
            return objects[0]
    return None


def fail_closed_cluster_policy(doc: Any, conflict: str = "") -> ClusterNetworkPolicy:
    """For an invalid cluster policy: a policy of its kind and tier, at its place in the tier,
    whose one rule per direction denies everything a valid policy could (`DENY_ALL_INGRESS`,
    `DENY_ALL_EGRESS`), for the pods it would select.

    * **Tier**: an AdminNetworkPolicy's is Admin, a BaselineAdminNetworkPolicy's Baseline, a
      ClusterNetworkPolicy's its `spec.tier` — Admin when that cannot be read (or the kind is
      unknown: it is read as a ClusterNetworkPolicy), the tier that decides first.
    * **Priority**: its own when it can be read (a BaselineAdminNetworkPolicy's is always 1000,
      as converted): whatever policies precede it decided before it, valid or not; the stand-in
      denies what reaches it. Else `FIRST_IN_TIER`: before every policy of the tier.
    * **Subject**: its own when that decodes on its own, else `EVERY_POD` (`namespaces: {}`,
      the cluster-scoped "whole namespace").

    Its pods' traffic to their own node is denied too; their node's traffic to them (kubelet
    probes) is not: no valid cluster policy can deny it (ingress peers are pods only), so an
    invalid one is not given more power than a valid one would have had."""
    body = _mapping(doc)
    kind = next((k for k in CLUSTER_POLICY_KINDS if body.get("kind") == k), "ClusterNetworkPolicy")
    spec = _mapping(body.get("spec"))
    tier, priority = _place(kind, spec)
    name = _stand_in_name(_mapping(body.get("metadata")).get("name"), body.get("metadata"), conflict)
    return ClusterNetworkPolicy(name, tier, priority, _subject(kind, spec.get("subject")) or EVERY_POD,
                                DENY_ALL_INGRESS, DENY_ALL_EGRESS, kind)


def _place(kind: str, spec: dict[str, Any]) -> tuple[Tier, int]:
    """(tier, priority) of a stand-in: see `fail_closed_cluster_policy`."""
    schema = CLUSTER_SCHEMAS[kind]
    tier: Tier = schema.tier or ("Baseline" if spec.get("tier") == "Baseline" else "Admin")
    if schema.priority is not None:
        return tier, schema.priority
    spelled = spec.get("priority")
    if isinstance(spelled, int) and not isinstance(spelled, bool) and 0 <= spelled <= 1000:  # the API's range
        return tier, spelled
    return tier, FIRST_IN_TIER


def _subject(kind: str, raw: Any) -> ClusterSubject | None:
    """The original's subject, read by its kind's schema as part of an otherwise minimal valid
    policy; None when it is invalid (or absent)."""
    schema = CLUSTER_SCHEMAS[kind]
    spec: dict[str, Any] = {"subject": raw}
    if schema.tier is None:
        spec["tier"] = "Admin"
    if schema.priority is None:
        spec["priority"] = 0
    candidate = {"kind": kind, "apiVersion": SUPPORTED_KINDS[kind][0], "metadata": {"name": "default"},
                 "spec": spec}
    try:
        objects, problems = decode_document(candidate, "fail-closed")
    except Exception:  # a decoder bug must not stop the node: the subject is unreadable, so every pod
        return None
    found = objects[0] if objects and not problems else None
    return found.subject if isinstance(found, ClusterNetworkPolicy) else None


def closed_namespace_policies(namespace: str) -> tuple[NetworkPolicy, ClusterNetworkPolicy]:
    """For a namespace that fails closed: the deny-all that isolates its pods both ways
    (`<ns>/invalid-namespace.netpol`), and an Admin-tier policy before every other
    (`<ns>.invalid-namespace.netpol`, priority `FIRST_IN_TIER`) that passes every connection of
    its pods on to the NetworkPolicy tier, where that deny-all decides. Without the pass, an
    Admin Accept whose selector misreads the namespace — its labels are unknown now, so
    `env NotIn [prod]` matches it — would admit what the deny-all is there to stop. (Traffic
    with their own node stays allowed, as the NetworkPolicy tier has it.)"""
    deny_all = NetworkPolicy(namespace, CLOSED_NAMESPACE_POLICY, policy_types=("Ingress", "Egress"))
    own = ClusterSubject(namespaces=LabelSelector(Labels({NAMESPACE_NAME_LABEL: namespace})))
    why = "netpol: invalid namespace, on to its deny-all"
    passing = ClusterNetworkPolicy(
        f"{namespace}.{CLOSED_NAMESPACE_POLICY}", "Admin", FIRST_IN_TIER, own,
        (ClusterRule("Pass", (ClusterPeer(namespaces=LabelSelector()),), (), why),),
        (ClusterRule("Pass", (ClusterPeer(networks=EVERY_ADDRESS),), (), why),))
    return deny_all, passing
