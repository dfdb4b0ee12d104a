"""Kubernetes JSON/YAML dicts → validated model objects, collecting every problem found.

`decode_document` returns the objects it could build and the problems of the ones it could
not; an object with any problem is not returned (callers fail closed on it).

ClusterNetworkPolicy (`policy.networking.k8s.io` v1beta1 and v1alpha2, one schema) is read as
its CRD validates it, experimental channel (`nodes` peers, `destinationNamedPort`), schema and
CEL rules alike, and the v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy are converted
into it (`ClusterSchema`, `decode_cluster_policy`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from netpol.errors import Problem
from netpol.labels import OPERATORS, Labels, LabelSelector, Operator, Requirement
from netpol.load import validation as v
from netpol.load.decode_fast import fast_namespace, fast_pod, fast_policy
from netpol.model import (
    CLUSTER_POLICY_KINDS,
    POD_PHASES,
    PROTOCOLS,
    TIERS,
    Action,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterProtocol,
    ClusterRule,
    ClusterSubject,
    ContainerPort,
    DestinationNamedPort,
    DestinationPorts,
    Direction,
    IPAddress,
    IPBlock,
    IPNetwork,
    Namespace,
    NamespacedPods,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    PolicyType,
    Protocol,
    Rule,
    Tier,
    default_policy_types,
)

KubeObject = Namespace | Pod | Node | NetworkPolicy | ClusterNetworkPolicy
T = TypeVar("T")

CLUSTER_POLICY_GROUP = "policy.networking.k8s.io"
# apiVersions each kind may have, the preferred first; kinds not listed are skipped (audit input
# holds everything).
SUPPORTED_KINDS: dict[str, tuple[str, ...]] = {
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "Node": ("v1",),
    "NetworkPolicy": ("networking.k8s.io/v1",),
    "ClusterNetworkPolicy": (f"{CLUSTER_POLICY_GROUP}/v1beta1", f"{CLUSTER_POLICY_GROUP}/v1alpha2"),
    "AdminNetworkPolicy": (f"{CLUSTER_POLICY_GROUP}/v1alpha1",),
    "BaselineAdminNetworkPolicy": (f"{CLUSTER_POLICY_GROUP}/v1alpha1",),
}
CLUSTER_SCOPED = frozenset({"Namespace", "Node", *CLUSTER_POLICY_KINDS})


def type_name(value: object) -> str:
    """The JSON name of a parsed value's type, for messages ("got list", "got number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _shown(text: str) -> str:
    """`text` as a message shows it: JSON-quoted when it holds a character that is not printable
    (a newline, a tab, a control character), which would break the line or vanish ("web\\n")."""
    return text if text.isprintable() else json.dumps(text)


@dataclass
class Reader:
    """Reads one object's fields, recording a Problem (with the field path) for each bad one."""

    source: str
    obj: str
    problems: list[Problem] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, self.obj, path, message))

    def typed(self, value: Any, path: str, kind: type[T], what: str) -> T | None:
        if value is None:
            return None
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.error(path, f"must be {what}, got {type_name(value)}")
        return None

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
        found = self.typed(value, path, dict, "a mapping") or {}
        for key in found:
            if allowed and key not in allowed:
                self.error(f"{path}.{key}" if path else str(key),
                           f"unknown field; expected one of {', '.join(allowed)}")
        return found

    def items(self, value: Any, path: str) -> Iterator[tuple[str, Any]]:
        for i, item in enumerate(self.typed(value, path, list, "a list") or []):
            yield f"{path}[{i}]", item

    def string(self, value: Any, path: str) -> str | None:
        return self.typed(value, path, str, "a string")

    def integer(self, value: Any, path: str) -> int | None:
        return self.typed(value, path, int, "an integer")

    def boolean(self, value: Any, path: str) -> bool | None:
        return self.typed(value, path, bool, "a boolean")

    def checked(self, value: str | None, path: str, check: Callable[[str], str | None]) -> str | None:
        if value is None:
            return None
        problem = check(value)
        if problem:
            self.error(path, problem)
            return None
        return value

    def required(self, value: T | None, path: str) -> T | None:
        if value is None and not any(p.path == path for p in self.problems):  # not twice
            self.error(path, "Required value")
        return value

    def labels(self, value: Any, path: str) -> Labels:
        found: dict[str, str] = {}
        for key, val in self.mapping(value, path).items():
            if not isinstance(key, str):
                self.error(path, f"label key {key!r} must be a string, got {type_name(key)}")
                continue
            key_path = f"{path}.{_shown(key)}"
            key_ok = self.checked(key, key_path, v.check_label_key)
            text = self.typed(val, key_path, str, "a string") if val is not None else None
            if val is None:
                self.error(key_path, "must be a string, got null")
            value_ok = self.checked(text, key_path, v.check_label_value)
            if key_ok is not None and value_ok is not None:
                found[key] = value_ok
        return Labels(found)

    def selector(self, value: Any, path: str) -> LabelSelector:
        spec = self.mapping(value, path, ("matchLabels", "matchExpressions"))
        requirements = [
            r
            for p, item in self.items(spec.get("matchExpressions"), f"{path}.matchExpressions")
            if (r := self.requirement(item, p)) is not None
        ]
        return LabelSelector(self.labels(spec.get("matchLabels"), f"{path}.matchLabels"),
                             tuple(requirements))

    def requirement(self, value: Any, path: str) -> Requirement | None:
        spec = self.mapping(value, path, ("key", "operator", "values"))
        before = len(self.problems)
        key = self.checked(self.required(self.string(spec.get("key"), f"{path}.key"), f"{path}.key"),
                           f"{path}.key", v.check_label_key)
        operator = self.required(self.string(spec.get("operator"), f"{path}.operator"),
                                 f"{path}.operator")
        if operator is not None and operator not in OPERATORS:
            self.error(f"{path}.operator", f"{operator!r}: not a valid selector operator; "
                       f"supported values: {', '.join(OPERATORS)}")
        values = [
            val
            for p, item in self.items(spec.get("values"), f"{path}.values")  # null: "", as Go stores it
            if (val := self.checked(self.string("" if item is None else item, p), p, v.check_label_value))
            is not None
        ]
        if operator in ("In", "NotIn") and not spec.get("values"):
            self.error(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if operator in ("Exists", "DoesNotExist") and spec.get("values"):
            self.error(f"{path}.values",
                       "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        if len(self.problems) > before or key is None or operator is None:
            return None
        return Requirement(key, cast(Operator, operator), tuple(values))

    def protocol(self, value: Any, path: str) -> Protocol:
        text = self.string(value, path)
        if text is None:
            return "TCP"  # the API default
        if text not in PROTOCOLS:
            self.error(path, f"{text!r}: supported values: {', '.join(PROTOCOLS)}")
            return "TCP"
        return text


def _ip(reader: Reader, value: Any, path: str) -> IPAddress | None:
    text = reader.string(value, path)
    if text is None:
        return None
    parsed = v.parse_ip(text)
    if isinstance(parsed, str):
        reader.error(path, parsed)
        return None
    return parsed


def _cidr(reader: Reader, value: Any, path: str) -> IPNetwork | None:
    text = reader.string(value, path)
    if text is None:
        return None
    parsed = v.parse_cidr(text)
    if isinstance(parsed, str):
        reader.error(path, parsed)
        return None
    return parsed


def _metadata(reader: Reader, doc: dict[str, Any], namespaced: bool,
              name_check: Callable[[str], str | None]) -> tuple[str, str, Labels]:
    meta = reader.mapping(doc.get("metadata"), "metadata")
    name = reader.required(reader.string(meta.get("name"), "metadata.name"), "metadata.name")
    name = reader.checked(name, "metadata.name", name_check)
    namespace = ""
    if namespaced:
        ns = reader.string(meta.get("namespace"), "metadata.namespace")
        namespace = reader.checked(ns, "metadata.namespace", v.check_dns1123_label) or "default"
    return name or "", namespace, reader.labels(meta.get("labels"), "metadata.labels")


def describe_object(doc: dict[str, Any]) -> str:
    """`Kind ns/name` as well as an unvalidated document allows (for error messages)."""
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) and doc.get("kind") else "object"
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = _shown(meta["name"]) if isinstance(meta.get("name"), str) else "<unnamed>"
    ns = _shown(meta["namespace"]) if isinstance(meta.get("namespace"), str) else None
    if kind in CLUSTER_SCOPED or kind not in SUPPORTED_KINDS:
        return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
    return f"{kind} {ns or 'default'}/{name}"


def decode_namespace(reader: Reader, doc: dict[str, Any]) -> Namespace:
    name, _, labels = _metadata(reader, doc, False, v.check_dns1123_label)
    return Namespace(name, labels)


def decode_node(reader: Reader, doc: dict[str, Any]) -> Node:
    name, _, labels = _metadata(reader, doc, False, v.check_dns1123_subdomain)
    spec = reader.mapping(doc.get("spec"), "spec")
    status = reader.mapping(doc.get("status"), "status")
    addresses: list[IPAddress] = []
    for path, item in reader.items(status.get("addresses"), "status.addresses"):
        entry = reader.mapping(item, path)
        kind = reader.string(entry.get("type"), f"{path}.type")
        if kind in ("InternalIP", "ExternalIP"):
            ip = _ip(reader, entry.get("address"), f"{path}.address")
            if ip is not None and ip not in addresses:
                addresses.append(ip)
    cidrs: list[IPNetwork] = []
    for path, item in reader.items(spec.get("podCIDRs"), "spec.podCIDRs"):
        if (net := _cidr(reader, item, path)) is not None:
            cidrs.append(net)
    if not cidrs and (single := _cidr(reader, spec.get("podCIDR"), "spec.podCIDR")) is not None:
        cidrs.append(single)
    return Node(name, labels, tuple(addresses), tuple(cidrs))


def _container_ports(reader: Reader, spec: dict[str, Any]) -> tuple[ContainerPort, ...]:
    ports: list[ContainerPort] = []
    for cpath, container in reader.items(spec.get("containers"), "spec.containers"):
        cspec = reader.mapping(container, cpath)
        seen_names: dict[str, str] = {}  # validateContainerPorts: unique within a container
        for path, item in reader.items(cspec.get("ports"), f"{cpath}.ports"):
            entry = reader.mapping(item, path)
            number = reader.required(reader.integer(entry.get("containerPort"),
                                                    f"{path}.containerPort"), f"{path}.containerPort")
            if number is not None and (problem := v.check_port_number(number)):
                reader.error(f"{path}.containerPort", problem)
                number = None
            name = reader.checked(reader.string(entry.get("name"), f"{path}.name"),
                                  f"{path}.name", v.check_port_name)
            if name is not None:
                if name in seen_names:
                    reader.error(f"{path}.name", f"Duplicate value: {name!r} (also {seen_names[name]})")
                seen_names[name] = f"{path}.name"
            protocol = reader.protocol(entry.get("protocol"), f"{path}.protocol")
            if number is not None:
                ports.append(ContainerPort(number, protocol, name))
    return tuple(ports)


def _pod_ips(reader: Reader, status: dict[str, Any]) -> tuple[IPAddress, ...]:
    ips: list[IPAddress] = []
    for path, item in reader.items(status.get("podIPs"), "status.podIPs"):
        entry = reader.mapping(item, path, ("ip",))
        if (ip := _ip(reader, entry.get("ip"), f"{path}.ip")) is not None:
            ips.append(ip)
    single = _ip(reader, status.get("podIP"), "status.podIP")
    if single is not None and ips and ips[0] != single:
        reader.error("status.podIPs[0].ip", f"must match status.podIP {single}, got {ips[0]}")
    if single is not None and not ips:
        ips = [single]
    if len(ips) > 2:
        reader.error("status.podIPs", "may specify no more than one IP for each IP family")
    elif len(ips) == 2 and ips[0].version == ips[1].version:
        reader.error("status.podIPs", "expected at most one IP for each IP family")
    return tuple(ips)


def decode_pod(reader: Reader, doc: dict[str, Any]) -> Pod:
    name, namespace, labels = _metadata(reader, doc, True, v.check_dns1123_subdomain)
    spec = reader.mapping(doc.get("spec"), "spec")
    status = reader.mapping(doc.get("status"), "status")
    phase = reader.string(status.get("phase"), "status.phase") or "Running"
    if phase not in POD_PHASES:
        reader.error("status.phase", f"{phase!r}: supported values: {', '.join(POD_PHASES)}")
    node_name = reader.checked(reader.string(spec.get("nodeName"), "spec.nodeName"),
                               "spec.nodeName", v.check_dns1123_subdomain)
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        ips=_pod_ips(reader, status),
        node_name=node_name,
        host_network=bool(reader.boolean(spec.get("hostNetwork"), "spec.hostNetwork")),
        phase=phase,
        ports=_container_ports(reader, spec),
    )


def _policy_port(reader: Reader, value: Any, path: str) -> PolicyPort:
    entry = reader.mapping(value, path, ("protocol", "port", "endPort"))
    protocol = reader.protocol(entry.get("protocol"), f"{path}.protocol")
    raw = entry.get("port")
    port: int | str | None = None
    if isinstance(raw, str):
        port = reader.checked(raw, f"{path}.port", v.check_port_name)
    elif raw is not None:
        number = reader.integer(raw, f"{path}.port")
        if number is not None and (problem := v.check_port_number(number)):
            reader.error(f"{path}.port", problem)
        else:
            port = number
    end_port = reader.integer(entry.get("endPort"), f"{path}.endPort")
    if end_port is not None:
        if raw is None:
            reader.error(f"{path}.endPort", "may not be specified when `port` is not specified")
        elif isinstance(raw, str):
            reader.error(f"{path}.endPort", "may not be specified when `port` is non-numeric")
        elif isinstance(port, int) and end_port < port:
            reader.error(f"{path}.endPort", f"{end_port}: must be greater than or equal to `port`")
        elif problem := v.check_port_number(end_port):
            reader.error(f"{path}.endPort", problem)
    return PolicyPort(protocol, port, end_port)


def _ip_block(reader: Reader, value: Any, path: str) -> IPBlock | None:
    entry = reader.mapping(value, path, ("cidr", "except"))
    cidr = _cidr(reader, reader.required(entry.get("cidr"), f"{path}.cidr"), f"{path}.cidr")
    excepts: list[IPNetwork] = []
    for epath, item in reader.items(entry.get("except"), f"{path}.except"):
        if item is None:  # Go decodes "", which is no CIDR
            reader.error(epath, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64), got null")
            continue
        inner = _cidr(reader, item, epath)
        if inner is None or cidr is None:
            continue
        if inner.version != cidr.version:
            reader.error(epath, f"{inner} is not in the same IP family as cidr {cidr}")
        elif not (inner.subnet_of(cidr) and inner.prefixlen > cidr.prefixlen):  # type: ignore[arg-type]
            reader.error(epath, f"{inner} is not a strict subset of cidr {cidr}")
        else:
            excepts.append(inner)
    return IPBlock(cidr, tuple(excepts)) if cidr is not None else None


def _peer(reader: Reader, value: Any, path: str) -> Peer:
    if value is None:  # `- ` with nothing after it: Go decodes an empty peer, which it refuses
        reader.error(path, "must specify a peer")
        return Peer()
    if not isinstance(value, dict):
        reader.mapping(value, path)  # reports the wrong type, once
        return Peer()
    entry = reader.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    # A null field is an absent one (Go decodes null into a nil pointer).
    pods, namespaces, block = entry.get("podSelector"), entry.get("namespaceSelector"), entry.get("ipBlock")
    if pods is None and namespaces is None and block is None:
        reader.error(path, "must specify a peer")
    if block is not None and (pods is not None or namespaces is not None):
        reader.error(path, "may not specify more than 1 peer type: ipBlock excludes the selectors")
    return Peer(
        pod_selector=None if pods is None else reader.selector(pods, f"{path}.podSelector"),
        namespace_selector=(None if namespaces is None
                            else reader.selector(namespaces, f"{path}.namespaceSelector")),
        ip_block=None if block is None else _ip_block(reader, block, f"{path}.ipBlock"),
    )


def _rules(reader: Reader, value: Any, path: str, peers_field: str) -> tuple[Rule, ...]:
    rules = []
    for rpath, item in reader.items(value, path):
        entry = reader.mapping(item, rpath, (peers_field, "ports"))
        peers = [_peer(reader, p, pp) for pp, p in reader.items(entry.get(peers_field),
                                                                  f"{rpath}.{peers_field}")]
        ports = [_policy_port(reader, p, pp) for pp, p in reader.items(entry.get("ports"),
                                                                        f"{rpath}.ports")]
        rules.append(Rule(tuple(peers), tuple(ports)))
    return tuple(rules)


def decode_network_policy(reader: Reader, doc: dict[str, Any]) -> NetworkPolicy:
    name, namespace, _ = _metadata(reader, doc, True, v.check_dns1123_subdomain)
    reader.mapping(doc, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    spec = reader.mapping(reader.required(doc.get("spec"), "spec"), "spec",
                          ("podSelector", "ingress", "egress", "policyTypes"))
    if "spec" in doc and "podSelector" not in spec:
        reader.error("spec.podSelector", "Required value")
    selector = reader.selector(spec.get("podSelector"), "spec.podSelector")
    ingress = _rules(reader, spec.get("ingress"), "spec.ingress", "from")
    egress = _rules(reader, spec.get("egress"), "spec.egress", "to")
    types: list[PolicyType] = []
    for path, item in reader.items(spec.get("policyTypes"), "spec.policyTypes"):
        if item is None:  # Go decodes "", which is not a policy type
            reader.error(path, "null: supported values: Ingress, Egress")
            continue
        text = reader.string(item, path)
        if text is not None and text not in ("Ingress", "Egress"):
            reader.error(path, f"{text!r}: supported values: Ingress, Egress")
        elif text is not None and text not in types:
            types.append(cast(PolicyType, text))
    if isinstance(spec.get("policyTypes"), list) and len(spec["policyTypes"]) > 2:
        reader.error("spec.policyTypes", "may not specify more than two policyTypes")
    if not spec.get("policyTypes"):  # SetDefaults_NetworkPolicy: absent and [] alike
        policy_types = default_policy_types(bool(egress))
    else:
        policy_types = tuple(t for t in ("Ingress", "Egress") if t in types)
    return NetworkPolicy(namespace, name, selector, ingress, egress, policy_types)

# -- ClusterNetworkPolicy, and the v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy -------

BANP_PRIORITY = 1000  # a converted BaselineAdminNetworkPolicy: last of the Baseline tier


@dataclass(frozen=True)
class ClusterSchema:
    """What differs between the schemas read into `ClusterNetworkPolicy`.

    * **ClusterNetworkPolicy** v1beta1 and v1alpha2 (one schema, the CRD's experimental
      channel): `spec.tier`, `spec.priority` 0–1000, actions Accept/Deny/Pass, at most 25 rules
      per direction, peers per rule and `protocols` per rule; CIDRs with host bits zero.
    * **AdminNetworkPolicy** v1alpha1 → tier Admin, its `priority`. **BaselineAdminNetworkPolicy**
      v1alpha1 (a singleton named `default`, no priority) → tier Baseline, priority
      `BANP_PRIORITY` = 1000: after every Baseline ClusterNetworkPolicy of a lower priority (a
      tie at 1000 is ordered by name and warned about, like any other). Both: action `Allow` →
      `Accept` (a BANP has no `Pass`); at most 100 rules, peers and ports (their CRDs' limits);
      CIDRs may have host bits set (their CRD checks only `isCIDR`); `pods.namespaceSelector`
      required; `ports` → `protocols`, entry by entry: `portNumber: {protocol, port}` →
      `<protocol>: {destinationPort: {number: port}}` (protocol default TCP), `portRange:
      {protocol, start, end}` → `{range: {start, end}}` (start = end: that one port; start > end,
      which their CRD does not check, is refused), `namedPort` → `destinationNamedPort`. The
      converted policy keeps its kind and name (`AdminNetworkPolicy x`) in every message.
    """

    kind: str
    actions: Mapping[str, Action]  # as spelled → as the model has it
    max_items: int  # rules per direction, peers per rule, entries of `protocols`/`ports`
    ports_field: str  # "protocols" (v1beta1) or "ports" (v1alpha1)
    masked_cidrs: bool
    egress_peers: tuple[str, ...]  # fields an egress peer may have; ingress: namespaces, pods
    tier: Tier | None = None  # None: `spec.tier`
    priority: int | None = None  # None: `spec.priority`, required
    namespace_selector_required: bool = False

    @property
    def spec_fields(self) -> tuple[str, ...]:
        head = ("tier", "priority") if self.tier is None else ("priority",) if self.priority is None else ()
        return (*head, "subject", "ingress", "egress")


CLUSTER_SCHEMAS: dict[str, ClusterSchema] = {
    "ClusterNetworkPolicy": ClusterSchema(
        "ClusterNetworkPolicy", {"Accept": "Accept", "Deny": "Deny", "Pass": "Pass"}, 25, "protocols",
        True, ("namespaces", "pods", "networks", "nodes", "domainNames")),
    "AdminNetworkPolicy": ClusterSchema(
        "AdminNetworkPolicy", {"Allow": "Accept", "Deny": "Deny", "Pass": "Pass"}, 100, "ports",
        False, ("namespaces", "pods", "networks", "nodes", "domainNames"), "Admin", None, True),
    "BaselineAdminNetworkPolicy": ClusterSchema(
        "BaselineAdminNetworkPolicy", {"Allow": "Accept", "Deny": "Deny"}, 100, "ports",
        False, ("namespaces", "pods", "networks", "nodes"), "Baseline", BANP_PRIORITY, True),
}
MAX_NETWORKS = 25  # CIDRs per `networks` peer, in every version
MAX_RULE_NAME = 100
DOMAIN_NAMES_REFUSED = ("not supported: netpol has no DNS-aware enforcement (a domain's addresses are "
                        "known only from DNS answers), so a policy naming domains is refused rather than "
                        "audited or enforced without them; use `networks` with the addresses instead")


def _present(entry: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """The fields of `fields` set in `entry`: a null value is an absent field (the API server
    prunes nulls a CRD's schema does not allow before validating)."""
    return [f for f in fields if entry.get(f) is not None]


def _exactly_one(reader: Reader, entry: dict[str, Any], path: str, fields: tuple[str, ...]) -> str | None:
    """The one field of `fields` set in `entry` (the CRD's minProperties/maxProperties 1)."""
    present = _present(entry, fields)
    if len(present) == 1:
        return present[0]
    if not present:
        reader.error(path, f"must specify exactly one of: {', '.join(fields)}")
    else:
        reader.error(path, f"may specify only one of: {', '.join(fields)}; found {', '.join(present)}")
    return None


def _sized_items(reader: Reader, value: Any, path: str, low: int, high: int) -> Iterator[tuple[str, Any]]:
    """A list's items, its length checked against the CRD's minItems/maxItems."""
    if isinstance(value, list) and len(value) < low:
        reader.error(path, f"must have at least {low} item{'s' if low > 1 else ''}")
    elif isinstance(value, list) and len(value) > high:
        reader.error(path, f"Too many: {len(value)}: must have at most {high} items")
    return reader.items(value, path)


def _ranged(reader: Reader, value: Any, path: str, low: int, high: int) -> int | None:
    number = reader.integer(value, path)
    if number is not None and not low <= number <= high:
        reader.error(path, f"{number}: must be between {low} and {high}, inclusive")
        return None
    return number


def _namespaced_pods(reader: Reader, value: Any, path: str, schema: ClusterSchema) -> NamespacedPods:
    if not isinstance(value, dict):
        reader.mapping(value, path)  # reports the wrong type, once
        return NamespacedPods()
    entry = reader.mapping(value, path, ("namespaceSelector", "podSelector"))
    for name in ("podSelector", "namespaceSelector")[:2 if schema.namespace_selector_required else 1]:
        reader.required(entry.get(name), f"{path}.{name}")
    return NamespacedPods(reader.selector(entry.get("namespaceSelector"), f"{path}.namespaceSelector"),
                          reader.selector(entry.get("podSelector"), f"{path}.podSelector"))


def _cluster_subject(reader: Reader, value: Any, path: str, schema: ClusterSchema) -> ClusterSubject:
    entry = reader.mapping(value, path, ("namespaces", "pods"))
    chosen = _exactly_one(reader, entry, path, ("namespaces", "pods")) if isinstance(value, dict) else None
    if chosen == "namespaces":
        return ClusterSubject(namespaces=reader.selector(entry["namespaces"], f"{path}.namespaces"))
    if chosen == "pods":
        return ClusterSubject(pods=_namespaced_pods(reader, entry["pods"], f"{path}.pods", schema))
    return ClusterSubject()


def _networks(reader: Reader, value: Any, path: str, schema: ClusterSchema) -> tuple[IPNetwork, ...]:
    found: list[IPNetwork] = []
    seen: dict[str, str] = {}  # x-kubernetes-list-type: set
    for npath, item in _sized_items(reader, value, path, 1, MAX_NETWORKS):
        text = reader.required(reader.string(item, npath), npath)
        if text is None:
            continue
        if text in seen:
            reader.error(npath, f"Duplicate value: {text!r} (also {seen[text]})")
        seen[text] = npath
        if len(text) > 43:
            reader.error(npath, f"{_shown(text)[:60]}…: must be no more than 43 characters")
            continue
        network = _cidr(reader, text, npath)
        if network is not None and schema.masked_cidrs and (problem := v.check_masked_cidr(text, network)):
            reader.error(npath, problem)
        elif network is not None:
            found.append(network)
    return tuple(found)


def _cluster_peer(reader: Reader, value: Any, path: str, direction: Direction,
                  schema: ClusterSchema) -> ClusterPeer:
    """One `from`/`to` entry: exactly one field; a peer with none (`{}`, `- `) is refused here, so
    nothing of ours ever decides what an unrecognised peer means (`ClusterRule.fails_closed`)."""
    fields = ("namespaces", "pods") if direction == "ingress" else schema.egress_peers
    if value is not None and not isinstance(value, dict):
        reader.mapping(value, path)  # reports the wrong type, once
        return ClusterPeer()
    entry = reader.mapping(value or {}, path, fields)
    chosen = _exactly_one(reader, entry, path, fields)
    if chosen == "namespaces":
        return ClusterPeer(namespaces=reader.selector(entry[chosen], f"{path}.namespaces"))
    if chosen == "pods":
        return ClusterPeer(pods=_namespaced_pods(reader, entry[chosen], f"{path}.pods", schema))
    if chosen == "networks":
        return ClusterPeer(networks=_networks(reader, entry[chosen], f"{path}.networks", schema))
    if chosen == "nodes":
        return ClusterPeer(nodes=reader.selector(entry[chosen], f"{path}.nodes"))
    if chosen == "domainNames":
        reader.error(f"{path}.domainNames", DOMAIN_NAMES_REFUSED)
    return ClusterPeer()


def _named_port(reader: Reader, value: Any, path: str) -> DestinationNamedPort | None:
    # The CRD checks no pattern; a name that is no IANA service name is no container port's
    # name either, so it could never match: refused as a typo rather than kept as a no-op.
    name = reader.checked(reader.string(value, path), path, v.check_port_name)
    return DestinationNamedPort(name) if name is not None else None


def _port_range(reader: Reader, protocol: Protocol, entry: dict[str, Any], path: str,
                strict: bool) -> DestinationPorts | None:
    """`{start, end}`: v1beta1 requires start < end (CEL); v1alpha1 (`strict` False) takes
    start = end as that one port."""
    start = _ranged(reader, reader.required(entry.get("start"), f"{path}.start"), f"{path}.start", 1, 65535)
    end = _ranged(reader, reader.required(entry.get("end"), f"{path}.end"), f"{path}.end", 1, 65535)
    if start is None or end is None:
        return None
    if start > end or (strict and start == end):
        reader.error(path, f"{start}-{end}: Start port must be less than End port")
        return None
    return DestinationPorts(protocol, start, end)


def _protocol_entry(reader: Reader, value: Any, path: str) -> ClusterProtocol | None:
    """A v1beta1 `protocols` entry: `tcp|udp|sctp: {destinationPort: {number | range}}` or
    `destinationNamedPort`. `tcp: {}` is invalid (the CRD's minProperties: there is no
    "every port of a protocol" form but the range 1-65535)."""
    entry = reader.mapping(value, path, ("tcp", "udp", "sctp", "destinationNamedPort"))
    chosen = _exactly_one(reader, entry, path, ("tcp", "udp", "sctp", "destinationNamedPort"))
    if chosen is None:
        return None
    if chosen == "destinationNamedPort":
        return _named_port(reader, entry[chosen], f"{path}.destinationNamedPort")
    protocol = cast(Protocol, chosen.upper())
    spec = reader.mapping(entry[chosen], f"{path}.{chosen}", ("destinationPort",))
    port_path = f"{path}.{chosen}.destinationPort"
    if spec.get("destinationPort") is None:
        if not any(p.path == f"{path}.{chosen}" for p in reader.problems):
            reader.error(port_path, f"Required value: a {chosen} entry names its ports (every port: "
                                    "a range from 1 to 65535)")
        return None
    port = reader.mapping(spec["destinationPort"], port_path, ("number", "range"))
    which = _exactly_one(reader, port, port_path, ("number", "range"))
    if which == "number":
        number = _ranged(reader, port["number"], f"{port_path}.number", 1, 65535)
        return DestinationPorts(protocol, number, number) if number is not None else None
    if which == "range":
        bounds = reader.mapping(port["range"], f"{port_path}.range", ("start", "end"))
        return _port_range(reader, protocol, bounds, f"{port_path}.range", strict=True)
    return None


def _v1alpha1_port(reader: Reader, value: Any, path: str) -> ClusterProtocol | None:
    """A v1alpha1 `ports` entry, converted: `portNumber`, `portRange`, `namedPort`."""
    entry = reader.mapping(value, path, ("portNumber", "portRange", "namedPort"))
    chosen = _exactly_one(reader, entry, path, ("portNumber", "portRange", "namedPort"))
    if chosen == "namedPort":
        return _named_port(reader, entry[chosen], f"{path}.namedPort")
    if chosen == "portNumber":
        spec = reader.mapping(entry[chosen], f"{path}.portNumber", ("protocol", "port"))
        protocol = reader.protocol(spec.get("protocol"), f"{path}.portNumber.protocol")
        number = _ranged(reader, reader.required(spec.get("port"), f"{path}.portNumber.port"),
                         f"{path}.portNumber.port", 1, 65535)
        return DestinationPorts(protocol, number, number) if number is not None else None
    if chosen == "portRange":
        spec = reader.mapping(entry[chosen], f"{path}.portRange", ("protocol", "start", "end"))
        protocol = reader.protocol(spec.get("protocol"), f"{path}.portRange.protocol")
        return _port_range(reader, protocol, spec, f"{path}.portRange", strict=False)
    return None


def _cluster_rule(reader: Reader, value: Any, path: str, direction: Direction,
                  schema: ClusterSchema) -> ClusterRule | None:
    peers_field = "from" if direction == "ingress" else "to"
    entry = reader.mapping(value, path, ("name", "action", peers_field, schema.ports_field))
    name = reader.string(entry.get("name"), f"{path}.name") or ""
    if len(name) > MAX_RULE_NAME:
        reader.error(f"{path}.name", f"must be no more than {MAX_RULE_NAME} characters")
    action = reader.required(reader.string(entry.get("action"), f"{path}.action"), f"{path}.action")
    if action is not None and action not in schema.actions:
        reader.error(f"{path}.action", f"{action!r}: supported values: {', '.join(schema.actions)}")
    peers_path = f"{path}.{peers_field}"
    reader.required(entry.get(peers_field), peers_path)
    peers = [_cluster_peer(reader, item, ppath, direction, schema)
             for ppath, item in _sized_items(reader, entry.get(peers_field), peers_path, 1, schema.max_items)]
    read_entry = _protocol_entry if schema.ports_field == "protocols" else _v1alpha1_port
    protocols = [(ppath, read_entry(reader, item, ppath)) for ppath, item in
                 _sized_items(reader, entry.get(schema.ports_field), f"{path}.{schema.ports_field}", 1,
                              schema.max_items)]
    _check_named_ports(reader, peers, protocols, peers_path)
    if action is None or action not in schema.actions:
        return None
    return ClusterRule(schema.actions[action], tuple(peers), tuple(p for _, p in protocols if p is not None),
                       name)


def _check_named_ports(reader: Reader, peers: list[ClusterPeer],
                       protocols: list[tuple[str, ClusterProtocol | None]], peers_path: str) -> None:
    """The CRD's CEL rule: a named port is a pod's, so it cannot go with networks or nodes peers
    ("networks/nodes/domainNames peer cannot be set with namedPorts")."""
    outside = next((i for i, peer in enumerate(peers) if peer.networks or peer.nodes is not None), None)
    if outside is None:
        return
    for path, entry in protocols:
        if isinstance(entry, DestinationNamedPort):
            reader.error(path, f"a named port cannot go with the networks/nodes peer "
                               f"{peers_path}[{outside}]: networks and nodes have no named ports")


def decode_cluster_policy(reader: Reader, doc: dict[str, Any]) -> ClusterNetworkPolicy:
    """A ClusterNetworkPolicy, or an AdminNetworkPolicy / BaselineAdminNetworkPolicy converted
    into one (`ClusterSchema` says how they differ)."""
    schema = CLUSTER_SCHEMAS[doc["kind"]]
    name, _, _ = _metadata(reader, doc, False, v.check_dns1123_subdomain)
    if schema.kind == "BaselineAdminNetworkPolicy" and name and name != "default":
        reader.error("metadata.name", f"{name!r}: Only one baseline admin network policy with "
                                      'metadata.name="default" can be created in the cluster')
    reader.mapping(doc, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    spec = reader.mapping(reader.required(doc.get("spec"), "spec"), "spec", schema.spec_fields)
    tier = schema.tier
    if tier is None and "spec" in doc:
        spelled = reader.required(reader.string(spec.get("tier"), "spec.tier"), "spec.tier")
        if spelled is not None and spelled not in TIERS:
            reader.error("spec.tier", f"{spelled!r}: supported values: {', '.join(TIERS)}")
        tier = cast(Tier, spelled)
    priority = schema.priority
    if priority is None and "spec" in doc:
        spelled_priority = reader.required(spec.get("priority"), "spec.priority")
        priority = _ranged(reader, spelled_priority, "spec.priority", 0, 1000)
    if "spec" in doc:
        reader.required(spec.get("subject"), "spec.subject")
    subject = _cluster_subject(reader, spec.get("subject"), "spec.subject", schema)
    rules: dict[Direction, list[ClusterRule | None]] = {
        direction: [_cluster_rule(reader, item, rpath, direction, schema)
                    for rpath, item in _sized_items(reader, spec.get(direction), f"spec.{direction}", 0,
                                                    schema.max_items)]
        for direction in ("ingress", "egress")}
    ingress, egress = (tuple(r for r in rules[d] if r is not None) for d in ("ingress", "egress"))
    return ClusterNetworkPolicy(name, tier or "Admin", priority or 0, subject, ingress, egress, schema.kind)


DECODERS: dict[str, Callable[[Reader, dict[str, Any]], KubeObject]] = {
    "Namespace": decode_namespace,
    "Pod": decode_pod,
    "Node": decode_node,
    "NetworkPolicy": decode_network_policy,
    **dict.fromkeys(CLUSTER_POLICY_KINDS, decode_cluster_policy),
}


FAST_DECODERS: dict[str, Callable[[dict[str, Any]], KubeObject | None]] = {
    "Namespace": fast_namespace,
    "Pod": fast_pod,
    "NetworkPolicy": fast_policy,
}


MAX_LIST_NESTING = 3  # a List inside a List inside a List; deeper is an alias bomb or garbage


Wanted = Callable[[str, dict[str, Any]], bool]  # (kind, object as parsed): decode it?


def decode_document(doc: Any, source: str, depth: int = 0, wanted: Wanted | None = None,
                    skipped: Counter[str] | None = None) -> tuple[list[KubeObject], list[Problem]]:
    """Objects of the kinds we use found in `doc` (an object or a `*List`), and every problem;
    objects of a kind we use that `wanted` refuses are skipped, unchecked. Objects of other
    kinds are skipped too, and counted per kind in `skipped`: a folder of Deployments gives
    no pods, and the command line says why instead of showing an empty matrix."""
    if doc is None:
        return [], []
    if not isinstance(doc, dict):
        return [], [Problem(source, "", "", f"expected a Kubernetes object (a mapping), "
                                            f"got {type_name(doc)}")]
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        what = describe_object(doc)
        return [], [Problem(source, what if what != "object <unnamed>" else "", "kind",
                            "Required value: every object needs a kind")]
    if kind.endswith("List") and "items" in doc:
        if depth >= MAX_LIST_NESTING:
            return [], [Problem(source, kind, "items", f"Lists nested more than {MAX_LIST_NESTING} deep")]
        return _decode_list(doc, source, depth + 1, wanted, skipped)
    if kind not in DECODERS:
        if skipped is not None:
            skipped[kind] += 1
        return [], []
    if wanted is not None and not wanted(kind, doc):
        return [], []
    fast = FAST_DECODERS.get(kind)
    if fast is not None and (obj := fast(doc)) is not None:  # well-formed: no paths needed
        return [obj], []
    reader = Reader(source, describe_object(doc))
    api_version = doc.get("apiVersion")
    if api_version not in SUPPORTED_KINDS[kind]:
        reader.error("apiVersion", f"{api_version!r}: {kind} must be {' or '.join(SUPPORTED_KINDS[kind])}")
    obj = DECODERS[kind](reader, doc)
    return ([], reader.problems) if reader.problems else ([obj], [])


def typed_item(list_kind: str, raw: Any) -> Any:
    """An item of a `<Kind>List`, with the kind and apiVersion the raw API (`GET /api/v1/pods`)
    leaves out of a typed list's items put back."""
    item_kind = list_kind.removesuffix("List")
    if isinstance(raw, dict) and "kind" not in raw and item_kind in SUPPORTED_KINDS:
        return {"kind": item_kind, "apiVersion": SUPPORTED_KINDS[item_kind][0], **raw}
    return raw


def _decode_list(doc: dict[str, Any], source: str, depth: int, wanted: Wanted | None,
                 skipped: Counter[str] | None) -> tuple[list[KubeObject], list[Problem]]:
    items = doc["items"]
    if items is None:
        return [], []
    if not isinstance(items, list):
        return [], [Problem(source, f"{doc['kind']}", "items",
                            f"must be a list, got {type_name(items)}")]
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for i, raw in enumerate(items):
        found, bad = decode_document(typed_item(doc["kind"], raw), f"{source} items[{i}]", depth, wanted,
                                     skipped)
        objects += found
        problems += bad
    return objects, problems


def says_what_it_is(doc: Any) -> bool:
    """A mapping with a `kind` or an `apiVersion`: a Kubernetes object, well-formed or not (its
    problems are reported). Anything else is not one: some other tool's file (`expected.json`)
    or a stray document. A list counts when one of its items says what it is, so a YAML list of
    objects is reported as a list, never taken for another tool's file (items only: a deeper
    walk could follow YAML aliases exponentially)."""
    if isinstance(doc, list):
        return any(isinstance(item, dict) and _names_a_kind(item) for item in doc)
    return isinstance(doc, dict) and _names_a_kind(doc)


def _names_a_kind(doc: dict[Any, Any]) -> bool:
    """Says its kind or its API group, however wrongly: from there on, problems are named."""
    return doc.get("kind") is not None or doc.get("apiVersion") is not None
