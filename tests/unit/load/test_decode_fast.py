"""The fast decoders agree with the Reader: on any document, a fast path returns exactly what the
Reader decodes without a problem, or None (and then the Reader reports). Documents: generated
valid Pods and NetworkPolicies, each with up to three random defects planted at random places
(a value replaced by one of the wrong kind or by a near miss for its field, a key removed, an
unknown key added)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol.labels import Labels
from netpol.load.decode import Reader, decode_namespace, decode_network_policy, decode_pod
from netpol.load.decode_fast import fast_namespace, fast_pod, fast_policy
from netpol.load.encode import encode_namespace, encode_pod
from netpol.load.validation import parse_ip, parse_ip_by_rules
from netpol.testing import namespaces, pods
from netpol.testing.strategies import invalid_manifests, policy_manifests

ODD_VALUES = (None, "", "x", "0", "TCP", "Ingress", "10.0.0.0/8", "10.1.2.3", "fd00::1", "a/b", "-a", 0, -1,
              1, 80, 65536, True, False, 1.5, [], [None], ["x"], [{}], {}, {"a": "b"}, {"ip": None})


NEAR_MISSES = {  # per field name: values one step from valid (or valid, but different)
    "protocol": ("", "tcp", "ICMP", "UDP", "SCTP"),
    "port": (0, 65535, 65536, "", "http", "HTTP", "a--b", "1234", "abcdefghijklmnop", 8080),
    "endPort": (0, 79, 80, 81, 65536, "90"),
    "containerPort": (0, 1, 65535, 65536, "80"),
    "name": ("", "Web", "web", "web-", "a" * 64, "x.y"),
    "podIP": ("10.0.0.99", "10.00.0.1", "fd00::99", "fe80::1%eth0", ""),
    "ip": ("10.0.0.99", "010.0.0.1", "fd00::99", ""),
    "cidr": ("10.0.0.0/33", "10.0.0.0/08", "10.0.0.1/8", "0.0.0.0/0", "fd00::/8", "10.0.0.0"),
    "operator": ("in", "Exists", "DoesNotExist", "In", "NotIn", ""),
    "key": ("", "a/", "/a", "a" * 64, "x.io/app", "-app"),
    "values": ([], ["a"], ["-bad"], [None], ["a", None]),
    "phase": ("", "running", "Succeeded", "Unknown"),
    "nodeName": ("", "Node-A", "node.a", "node_a"),
    "hostNetwork": ("true", 1, True, False),
    "namespace": ("", "Default", "a.b", "kube-system"),
    "policyTypes": ([], [None], ["Ingress", "Ingress"], ["Ingress", "Egress", "Ingress"], ["ingress"]),
}


RICH_POLICY = {  # every field the fast path reads, so that damage can land on each of them
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "rich", "namespace": "shop", "labels": {"team": "a"}},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                             {"key": "legacy", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}},
                               "namespaceSelector": {"matchExpressions": [
                                   {"key": "env", "operator": "NotIn", "values": ["dev"]}]}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}}],
                     "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}, {"port": "metrics"},
                               {"protocol": "UDP", "port": 53}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}}],
                    "ports": [{"protocol": "SCTP"}]}, {}],
    },
}
RICH_NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "shop", "labels": {"team": "payments", "kubernetes.io/metadata.name": "shop"}}}
RICH_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web", "tier": "a"}},
    "spec": {"nodeName": "node-a", "hostNetwork": False, "containers": [
        {"name": "main", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"},
                                   {"containerPort": 9100, "name": "metrics"}]},
        {"name": "side", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "http"}]}]},
    "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}]},
}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `doc` (dict keys and list indexes), depth first."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths(value, (*prefix, i))
    return found


@st.composite
def damaged(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        places = paths(doc)
        if not places:
            break
        named = [place for place in places if isinstance(place[-1], str) and place[-1] in NEAR_MISSES]
        if named and draw(st.booleans()):  # half the time, a field with near misses of its own
            places = named
        *parents, last = draw(st.sampled_from(places))
        holder: Any = doc
        for part in parents:
            holder = holder[part]
        action = draw(st.sampled_from(("near", "near", "replace", "remove", "add")))
        if action == "near" and isinstance(last, str) and last in NEAR_MISSES:
            holder[last] = copy.deepcopy(draw(st.sampled_from(NEAR_MISSES[last])))
        elif action == "near" and isinstance(last, str) and last in ("from", "to"):
            holder[last] = [None, {}] if draw(st.booleans()) else [{"ipBlock": None}]
        elif action in ("near", "replace"):
            holder[last] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
        elif action == "remove" and isinstance(holder, dict):
            del holder[last]
        elif isinstance(holder, dict):
            holder[draw(st.sampled_from(("extra", "ip", "port", "values", "cidr", "to", "from")))] = \
                copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return doc


def agree(doc: dict[str, Any], fast: Any, slow: Any) -> Any:
    reader = Reader("test", "object")
    expected = slow(reader, doc)
    got = fast(doc)
    if got is not None:
        assert not reader.problems, f"fast path took a document the Reader refuses: {reader.problems}"
        assert got == expected
    return got, reader.problems


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged(st.one_of(pods().map(encode_pod), st.just(RICH_POD))))
def test_fast_pod_returns_what_the_reader_decodes_or_nothing(doc):
    if doc.get("apiVersion") == "v1":
        agree(doc, fast_pod, decode_pod)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged(st.one_of(policy_manifests(), st.just(RICH_POLICY))))
def test_fast_policy_returns_what_the_reader_decodes_or_nothing(doc):
    if doc.get("apiVersion") == "networking.k8s.io/v1" and isinstance(doc, dict):
        agree(doc, fast_policy, decode_network_policy)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged(st.one_of(namespaces().map(encode_namespace), st.just(RICH_NAMESPACE))))
def test_fast_namespace_returns_what_the_reader_decodes_or_nothing(doc):
    if doc.get("apiVersion") == "v1":
        agree(doc, fast_namespace, decode_namespace)


FAST = {"Namespace": (fast_namespace, decode_namespace), "Pod": (fast_pod, decode_pod),
        "NetworkPolicy": (fast_policy, decode_network_policy)}


@settings(max_examples=300, deadline=None)
@given(st.one_of(pods().map(encode_pod), policy_manifests(), namespaces().map(encode_namespace),
                 st.just(RICH_POD), st.just(RICH_POLICY), st.just(RICH_NAMESPACE)))
def test_well_formed_documents_take_the_fast_path(doc):
    got, problems = agree(doc, *FAST[doc["kind"]])
    assert not problems and got is not None


@settings(max_examples=300, deadline=None)
@given(invalid_manifests())
def test_every_planted_defect_leaves_the_fast_path(case):
    doc, _ = case
    if doc["kind"] in FAST:
        assert FAST[doc["kind"]][0](doc) is None


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789.:abcdefx% \x00", max_size=18)
       | st.ip_addresses().map(str)
       | st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t))))
def test_the_ipv4_shortcut_parses_exactly_as_the_rules_do(text):
    assert parse_ip(text) == parse_ip_by_rules(text)


def _objects(value: Any, seen: set[int] | None = None) -> list[Any]:
    """Every str and int reachable from a parsed document or a decoded object."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, dict):
        return [x for pair in value.items() for item in pair for x in _objects(item, seen)]
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _objects(item, seen)]
    if isinstance(value, Labels):
        return _objects(dict(value.items()), seen)
    if dataclasses.is_dataclass(value):
        return [x for f in dataclasses.fields(value) for x in _objects(getattr(value, f.name), seen)]
    return []


@settings(max_examples=200, deadline=None)
@given(st.one_of(pods().map(encode_pod), policy_manifests(), namespaces().map(encode_namespace),
                 st.just(RICH_POD), st.just(RICH_POLICY), st.just(RICH_NAMESPACE)))
def test_decoded_objects_keep_no_string_or_number_of_the_document(doc):
    """Once the parsed documents are freed, their memory goes back whole only if no decoded
    object still holds one of their strings or numbers (netpol.pipeline.sharded measures the difference:
    305 → 265 MB at 10k). Strings of one character and small ints are CPython's shared
    singletons either way."""
    raw = orjson.loads(orjson.dumps(doc))  # as the manifests are parsed
    decoded = FAST[raw["kind"]][0](raw)
    assert decoded is not None
    def owned(x: Any) -> bool:
        return not (isinstance(x, str) and len(x) <= 1) and not (isinstance(x, int) and -5 <= x <= 256)
    document = {id(x) for x in _objects(raw) if owned(x)}
    assert not [x for x in _objects(decoded) if owned(x) and id(x) in document]
