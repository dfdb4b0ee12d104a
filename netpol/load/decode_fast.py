"""Fast paths for well-formed Namespaces, Pods and NetworkPolicies.

`netpol.load.decode`'s Reader builds a field path for every value it looks at, so that any problem
names its field. Nearly every object in a real cluster has no problem at all, and at 10k pods
and 10k policies those paths were most of the decoding time. Here each kind is read once more
directly, with the same checks (the same cached validators), but with no paths and no
problem list: the moment anything is unusual (a wrong type, an unknown field, a value a check
refuses, a null where the API would object), the fast path gives up and returns None, and the
Reader decodes the document from scratch and reports every problem.

So a fast path never rejects and never reports; it only ever returns what the Reader would have
returned. tests/unit/load/test_decode_fast.py holds the two to that on generated documents, valid ones and
ones with random defects planted anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from netpol.labels import OPERATORS, Labels, LabelSelector, Requirement
from netpol.load import validation as v
from netpol.model import (
    POD_PHASES,
    PROTOCOLS,
    ContainerPort,
    IPAddress,
    IPBlock,
    IPNetwork,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    PolicyType,
    Rule,
    default_policy_types,
)

Decoded = TypeVar("Decoded")
_NO_LABELS = Labels()
_EVERYTHING = LabelSelector()
_POLICY_FIELDS = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))
_SPEC_FIELDS = frozenset(("podSelector", "ingress", "egress", "policyTypes"))
_SELECTOR_FIELDS = frozenset(("matchLabels", "matchExpressions"))
_REQUIREMENT_FIELDS = frozenset(("key", "operator", "values"))
_PEER_FIELDS = frozenset(("podSelector", "namespaceSelector", "ipBlock"))
_BLOCK_FIELDS = frozenset(("cidr", "except"))
_PORT_FIELDS = frozenset(("protocol", "port", "endPort"))
_RULE_FIELDS = {"from": frozenset(("from", "ports")), "to": frozenset(("to", "ports"))}


class _Unusual(Exception):
    """Leave the fast path: the Reader takes the document."""


def _attempt(decode: Callable[[dict[str, Any]], Decoded], doc: dict[str, Any]) -> Decoded | None:
    try:
        return decode(doc)
    except _Unusual:
        return None


def _fields(value: Any, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """A mapping (absent = empty) whose keys are all allowed."""
    if value is None:
        return {}
    if type(value) is not dict or (allowed is not None and not allowed.issuperset(value)):
        raise _Unusual
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise _Unusual
    return value


def own_copy(text: str) -> str:
    """An equal string of our own. The decoded objects then hold no string of the parsed
    document, so once it is freed its memory goes back whole instead of staying pinned by a name
    here and a label there (see netpol.pipeline.sharded: what a process keeps after parsing)."""
    return text.encode().decode()


_SHARED: dict[str, str] = {}
_SHARED_PORTS: dict[object, object] = {}
Shareable = TypeVar("Shareable", ContainerPort, tuple[ContainerPort, ...])
_SHARED_MAX = 1 << 16  # a long-running agent's table is bounded: full, it starts again


def _shared(text: str) -> str:
    """Our own copy, one per distinct value: label keys and values, namespaces, node names and
    port names recur across thousands of objects."""
    found = _SHARED.get(text)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = own_copy(text)
        _SHARED[found] = found
    return found


def _string(value: Any, own: Callable[[str], str] = own_copy) -> str | None:
    """None, or the string as our own copy (`own_copy`, or `_shared` for recurring values)."""
    if value is None:
        return None
    if type(value) is str:
        return own(value)
    raise _Unusual


def _labels(value: Any) -> Labels:
    if value is None:
        return _NO_LABELS
    if type(value) is not dict:
        raise _Unusual
    owned = {}
    for raw_key, raw_text in value.items():
        if type(raw_key) is not str or type(raw_text) is not str:
            raise _Unusual
        key, text = _shared(raw_key), _shared(raw_text)
        if v.check_label_key(key) is not None or v.check_label_value(text) is not None:
            raise _Unusual
        owned[key] = text
    return Labels(owned)


def _name_and_namespace(doc: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    meta = _fields(doc.get("metadata"))
    name = _string(meta.get("name"))
    if name is None or v.check_dns1123_subdomain(name) is not None:
        raise _Unusual
    namespace = _string(meta.get("namespace"), _shared)
    if namespace is None:
        namespace = "default"
    elif v.check_dns1123_label(namespace) is not None:
        raise _Unusual
    return name, namespace, meta


def _parsed(value: Any, parse: Callable[[str], object]) -> Any:
    """None for null; the parser's value; or out of the fast path when it returns a message."""
    text = _string(value)
    if text is None:
        return None
    parsed = parse(text)
    if isinstance(parsed, str):
        raise _Unusual
    return parsed


def _ip(value: Any) -> IPAddress | None:
    return cast("IPAddress | None", _parsed(value, v.parse_ip))


def _cidr(value: Any) -> IPNetwork | None:
    return cast("IPNetwork | None", _parsed(value, v.parse_cidr))


_PROTOCOLS = {protocol: protocol for protocol in PROTOCOLS}


def _protocol(value: Any) -> str:
    if value is None:
        return "TCP"  # the API default
    if type(value) is not str or value not in _PROTOCOLS:  # an empty string too
        raise _Unusual
    return _PROTOCOLS[value]  # ours, not the document's


# == Namespace =================================================================================


def fast_namespace(doc: dict[str, Any]) -> Namespace | None:
    """The Namespace the Reader would decode from `doc`, or None to let the Reader do it."""
    return _attempt(_namespace, doc)


def _namespace(doc: dict[str, Any]) -> Namespace:
    if doc.get("apiVersion") != "v1":
        raise _Unusual
    meta = _fields(doc.get("metadata"))
    name = _string(meta.get("name"))
    if name is None or v.check_dns1123_label(name) is not None:
        raise _Unusual
    return Namespace(name, _labels(meta.get("labels")))


# == Pod =======================================================================================


def fast_pod(doc: dict[str, Any]) -> Pod | None:
    """The Pod the Reader would decode from `doc`, or None to let the Reader do it."""
    return _attempt(_pod, doc)


def _pod(doc: dict[str, Any]) -> Pod:
    if doc.get("apiVersion") != "v1":
        raise _Unusual
    name, namespace, meta = _name_and_namespace(doc)
    labels = _labels(meta.get("labels"))
    spec, status = _fields(doc.get("spec")), _fields(doc.get("status"))
    phase = _string(status.get("phase"), _shared) or "Running"
    node_name = _string(spec.get("nodeName"), _shared)
    host_network = spec.get("hostNetwork")
    bad_node = node_name is not None and v.check_dns1123_subdomain(node_name) is not None
    if phase not in POD_PHASES or bad_node or (host_network is not None and type(host_network) is not bool):
        raise _Unusual
    return Pod(namespace, name, labels, _pod_ips(status), node_name, bool(host_network), phase,
               _container_ports(spec))


def _pod_ips(status: dict[str, Any]) -> tuple[IPAddress, ...]:
    ips = []
    for entry in _list(status.get("podIPs")):
        if (ip := _ip(_fields(entry, frozenset(("ip",))).get("ip"))) is not None:
            ips.append(ip)
    single = _ip(status.get("podIP"))
    if single is not None:
        if not ips:
            ips = [single]
        elif ips[0] != single:
            raise _Unusual
    if len(ips) > 2 or (len(ips) == 2 and ips[0].version == ips[1].version):
        raise _Unusual
    return tuple(ips)


def _container_ports(spec: dict[str, Any]) -> tuple[ContainerPort, ...]:
    ports = []
    for container in _list(spec.get("containers")):
        names: set[str] = set()
        for entry in _list(_fields(container).get("ports")):
            if type(entry) is not dict:
                raise _Unusual
            number, name = entry.get("containerPort"), _string(entry.get("name"), _shared)
            protocol = _protocol(entry.get("protocol"))
            if (type(number) is not int or not 1 <= number <= 65535
                    or (name is not None and (name in names or v.check_port_name(name) is not None))):
                raise _Unusual
            if name is not None:
                names.add(name)
            ports.append(_container_port(number, protocol, name))
    return _shared_value(tuple(ports))  # a deployment's pods declare the same ports


def _container_port(number: int, protocol: str, name: str | None) -> ContainerPort:
    """One ContainerPort object per distinct port (and no number of the document's)."""
    found = _SHARED_PORTS.get((number, protocol, name))
    if found is None:
        found = _shared_value(ContainerPort(number + 0, protocol, name))  # type: ignore[arg-type]  # + 0: ours
    return cast(ContainerPort, found)


def _shared_value(value: Shareable) -> Shareable:
    """`value`, or an equal one already seen (for ports and port tuples; bounded like _SHARED)."""
    found = _SHARED_PORTS.get(value)
    if found is None:
        if len(_SHARED_PORTS) >= _SHARED_MAX:
            _SHARED_PORTS.clear()
        _SHARED_PORTS[value] = found = value
        if isinstance(value, ContainerPort):
            _SHARED_PORTS[(value.port, value.protocol, value.name)] = value
    return cast(Shareable, found)


# == NetworkPolicy =============================================================================


def fast_policy(doc: dict[str, Any]) -> NetworkPolicy | None:
    """The NetworkPolicy the Reader would decode from `doc`, or None to let the Reader do it."""
    return _attempt(_policy, doc)


def _policy(doc: dict[str, Any]) -> NetworkPolicy:
    if doc.get("apiVersion") != "networking.k8s.io/v1" or not _POLICY_FIELDS.issuperset(doc):
        raise _Unusual
    name, namespace, meta = _name_and_namespace(doc)
    _labels(meta.get("labels"))  # unused, but checked all the same
    spec = doc.get("spec")
    if spec is None or "podSelector" not in _fields(spec, _SPEC_FIELDS):
        raise _Unusual
    selector = _selector(spec["podSelector"])
    ingress = _rules(spec.get("ingress"), "from")
    egress = _rules(spec.get("egress"), "to")
    listed = _list(spec.get("policyTypes"))
    if len(listed) > 2:
        raise _Unusual
    types = set()
    for item in listed:
        text = _string(item)
        if text not in ("Ingress", "Egress"):  # null too
            raise _Unusual
        types.add(text)
    if not listed:  # SetDefaults_NetworkPolicy: absent and [] alike
        policy_types = default_policy_types(bool(egress))
    else:
        order: tuple[PolicyType, ...] = ("Ingress", "Egress")
        policy_types = tuple(t for t in order if t in types)
    return NetworkPolicy(namespace, name, selector, ingress, egress, policy_types)


def _selector(value: Any) -> LabelSelector:
    if value is None:
        return _EVERYTHING
    spec = _fields(value, _SELECTOR_FIELDS)
    expressions = tuple(_requirement(item) for item in _list(spec.get("matchExpressions")))
    return LabelSelector(_labels(spec.get("matchLabels")), expressions)


def _requirement(value: Any) -> Requirement:
    if type(value) is not dict:
        raise _Unusual
    spec = _fields(value, _REQUIREMENT_FIELDS)
    key, operator, raw_values = _string(spec.get("key"), _shared), spec.get("operator"), spec.get("values")
    if (key is None or v.check_label_key(key) is not None or type(operator) is not str
            or operator not in OPERATORS):
        raise _Unusual
    operator = OPERATORS[OPERATORS.index(operator)]  # ours, not the document's
    values = []
    for item in _list(raw_values):
        text = _string(item, _shared) or ""  # null: "", as Go stores it
        if v.check_label_value(text) is not None:
            raise _Unusual
        values.append(text)
    if (operator in ("In", "NotIn")) != bool(raw_values):  # In/NotIn need values, the others none
        raise _Unusual
    return Requirement(key, operator, tuple(values))


def _rules(value: Any, peers_field: str) -> tuple[Rule, ...]:
    rules = []
    for item in _list(value):
        entry = _fields(item, _RULE_FIELDS[peers_field])
        peers = tuple(_peer(p) for p in _list(entry.get(peers_field)))
        ports = tuple(_port(p) for p in _list(entry.get("ports")))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _peer(value: Any) -> Peer:
    entry = _fields(value, _PEER_FIELDS)
    pods, namespaces, block = entry.get("podSelector"), entry.get("namespaceSelector"), entry.get("ipBlock")
    if block is None:
        if pods is None and namespaces is None:
            raise _Unusual
        return Peer(None if pods is None else _selector(pods),
                    None if namespaces is None else _selector(namespaces))
    if pods is not None or namespaces is not None:
        raise _Unusual
    return Peer(ip_block=_ip_block(block))


def _ip_block(value: Any) -> IPBlock:
    entry = _fields(value, _BLOCK_FIELDS)
    cidr = _cidr(entry.get("cidr"))
    if cidr is None:
        raise _Unusual
    excepts = []
    for item in _list(entry.get("except")):
        inner = _cidr(item)
        if (inner is None or inner.version != cidr.version or not inner.subnet_of(cidr)  # type: ignore[arg-type]
                or inner.prefixlen <= cidr.prefixlen):
            raise _Unusual
        excepts.append(inner)
    return IPBlock(cidr, tuple(excepts))


def _port(value: Any) -> PolicyPort:
    entry = _fields(value, _PORT_FIELDS)
    protocol = _protocol(entry.get("protocol"))
    raw, end_port = entry.get("port"), entry.get("endPort")
    if type(raw) is str:
        raw = _shared(raw)
        if v.check_port_name(raw) is not None or end_port is not None:
            raise _Unusual
    elif raw is not None and (type(raw) is not int or not 1 <= raw <= 65535):
        raise _Unusual
    if end_port is not None and (raw is None or type(end_port) is not int or end_port < cast(int, raw)
                                 or not 1 <= end_port <= 65535):
        raise _Unusual
    if type(raw) is int:
        raw += 0  # an int of our own
    return PolicyPort(protocol, raw, None if end_port is None else end_port + 0)  # type: ignore[arg-type]
