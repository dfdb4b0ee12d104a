"""Every name, label key and value, port name and selector value is checked whole (issue 14).

Python's `$` also matches before a final newline, so `re.match(r"^…$")` accepted "web\\n" as a
name: the API server refuses it, `compile` exited 0 with a ruleset nft refuses, and in the agent
one such namespace blocked every update on the node. Each value below carries a trailing newline
(or other whitespace or a control character the API server refuses) and must be refused naming
the object and the field, by `decode_document`, by `load_state` and on the command line; the fast
path must give it up to the decoder that reports it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netpol.errors import InputError
from netpol.load import validation as v
from netpol.load.decode import decode_document
from netpol.load.decode_fast import fast_namespace, fast_pod, fast_policy
from netpol.load.manifests import load_state
from tests.conftest import run_cli

# A newline first (the `$` bug); the rest the API server refuses too, and so must we.
REFUSED_TAILS = ("\n", "\r\n", "\r", " ", "\t", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u00a0", "\u2028")

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
       "status": {"phase": "Running", "podIP": "10.0.0.5"}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "allow", "namespace": "shop"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"},
                                   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                                "ports": [{"port": "http"}]}]}}
FAST = {"Namespace": fast_namespace, "Pod": fast_pod, "NetworkPolicy": fast_policy}


def quoted(text: str) -> str:
    """How messages show a name or a key: JSON-quoted if it holds a character that is not
    printable (a newline would break the report's line), as it is otherwise."""
    return text if text.isprintable() else json.dumps(text)


def changed(doc: dict[str, Any], *path: str | int, value: Any) -> dict[str, Any]:
    """A copy of `doc` with the value at `path` replaced."""
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return out


def renamed_key(doc: dict[str, Any], *path: str, key: str, new: str) -> dict[str, Any]:
    """A copy of `doc` whose mapping at `path` has `key` renamed to `new`."""
    out = copy.deepcopy(doc)
    mapping = out
    for step in path:
        mapping = mapping[step]
    mapping[new] = mapping.pop(key)
    return out


# field → (the document with `tail` planted, the object the problem names, the field's path)
Case = Callable[[str], tuple[dict[str, Any], str, str]]
CASES: dict[str, Case] = {
    "namespace name": lambda t: (changed(NAMESPACE, "metadata", "name", value="shop" + t),
                                 f"Namespace {quoted('shop' + t)}", "metadata.name"),
    "namespace label key": lambda t: (renamed_key(NAMESPACE, "metadata", "labels", key="team", new="team" + t),
                                      "Namespace shop", f"metadata.labels.{quoted('team' + t)}"),
    "namespace label value": lambda t: (changed(NAMESPACE, "metadata", "labels", "team", value="a" + t),
                                        "Namespace shop", "metadata.labels.team"),
    "pod name": lambda t: (changed(POD, "metadata", "name", value="web" + t),
                           f"Pod shop/{quoted('web' + t)}", "metadata.name"),
    "pod namespace": lambda t: (changed(POD, "metadata", "namespace", value="shop" + t),
                                f"Pod {quoted('shop' + t)}/web", "metadata.namespace"),
    "pod label key": lambda t: (renamed_key(POD, "metadata", "labels", key="app", new="app" + t),
                                "Pod shop/web", f"metadata.labels.{quoted('app' + t)}"),
    "pod label value": lambda t: (changed(POD, "metadata", "labels", "app", value="web" + t),
                                  "Pod shop/web", "metadata.labels.app"),
    "pod node name": lambda t: (changed(POD, "spec", "nodeName", value="node-a" + t),
                                "Pod shop/web", "spec.nodeName"),
    "container port name": lambda t: (changed(POD, "spec", "containers", 0, "ports", 0, "name", value="http" + t),
                                      "Pod shop/web", "spec.containers[0].ports[0].name"),
    "pod IP": lambda t: (changed(POD, "status", "podIP", value="10.0.0.5" + t), "Pod shop/web", "status.podIP"),
    "policy name": lambda t: (changed(POLICY, "metadata", "name", value="allow" + t),
                              f"NetworkPolicy shop/{quoted('allow' + t)}", "metadata.name"),
    "policy namespace": lambda t: (changed(POLICY, "metadata", "namespace", value="shop" + t),
                                   f"NetworkPolicy {quoted('shop' + t)}/allow", "metadata.namespace"),
    "selector label value": lambda t: (
        changed(POLICY, "spec", "podSelector", "matchLabels", "app", value="web" + t),
        "NetworkPolicy shop/allow", "spec.podSelector.matchLabels.app"),
    "selector label key": lambda t: (
        renamed_key(POLICY, "spec", "podSelector", "matchLabels", key="app", new="app" + t),
        "NetworkPolicy shop/allow", f"spec.podSelector.matchLabels.{quoted('app' + t)}"),
    "expression key": lambda t: (
        changed(POLICY, "spec", "podSelector", "matchExpressions", 0, "key", value="tier" + t),
        "NetworkPolicy shop/allow", "spec.podSelector.matchExpressions[0].key"),
    "expression value": lambda t: (
        changed(POLICY, "spec", "podSelector", "matchExpressions", 0, "values", value=["a" + t]),
        "NetworkPolicy shop/allow", "spec.podSelector.matchExpressions[0].values[0]"),
    "expression operator": lambda t: (
        changed(POLICY, "spec", "podSelector", "matchExpressions", 0, "operator", value="In" + t),
        "NetworkPolicy shop/allow", "spec.podSelector.matchExpressions[0].operator"),
    "namespace selector value": lambda t: (
        changed(POLICY, "spec", "ingress", 0, "from", 0, "namespaceSelector", "matchLabels", "team", value="a" + t),
        "NetworkPolicy shop/allow", "spec.ingress[0].from[0].namespaceSelector.matchLabels.team"),
    "policy port name": lambda t: (changed(POLICY, "spec", "ingress", 0, "ports", 0, "port", value="http" + t),
                                   "NetworkPolicy shop/allow", "spec.ingress[0].ports[0].port"),
    "policy port protocol": lambda t: (
        changed(POLICY, "spec", "ingress", 0, "ports", 0, "protocol", value="TCP" + t),
        "NetworkPolicy shop/allow", "spec.ingress[0].ports[0].protocol"),
    "policy type": lambda t: (changed(POLICY, "spec", "policyTypes", value=["Ingress" + t]),
                              "NetworkPolicy shop/allow", "spec.policyTypes[0]"),
}


def others(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The valid documents of the other kinds: a cluster around `doc`."""
    return [d for d in (NAMESPACE, POD, POLICY) if d["kind"] != doc["kind"]]


def test_the_documents_are_valid_as_they_are():
    for doc in (NAMESPACE, POD, POLICY):
        assert FAST[doc["kind"]](doc) is not None
        objects, problems = decode_document(doc, "<test>")
        assert problems == [] and len(objects) == 1


@pytest.mark.parametrize("tail", REFUSED_TAILS, ids=repr)
@pytest.mark.parametrize("field", CASES)
def test_decode_document_refuses_the_value_naming_object_and_field(field, tail):
    doc, obj, path = CASES[field](tail)
    assert FAST[doc["kind"]](doc) is None  # the fast path gives it up to the decoder
    objects, problems = decode_document(doc, "<test>")
    assert objects == []
    assert (obj, path) in {(p.obj, p.path) for p in problems}, [str(p) for p in problems]


@pytest.mark.parametrize("field", CASES)
def test_load_state_refuses_a_trailing_newline(field, tmp_path):
    doc, obj, path = CASES[field]("\n")
    manifest = tmp_path / "input.yaml"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [*others(doc), doc]}))
    with pytest.raises(InputError) as refused:
        load_state([str(manifest)])
    assert (obj, path) in {(p.obj, p.path) for p in refused.value.problems}


@pytest.mark.parametrize("field", ["namespace name", "pod label value", "container port name", "policy port name"])
def test_compile_exits_1_naming_the_field_instead_of_writing_a_ruleset(field, tmp_path):
    doc, obj, path = CASES[field]("\n")
    manifest = tmp_path / "input.yaml"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [*others(doc), doc]}))
    code, out, err = run_cli("compile", "-f", str(manifest), "--node", "node-a")
    assert (code, out) == (1, "")
    header, problem = err.splitlines()  # one line for the problem: the name is quoted, not broken
    assert header == "netpol: invalid input (1 problem):"
    assert f"{obj}: {path}: " in problem


CHECKS: dict[Callable[[str], str | None], str] = {  # each check, and a pattern of what it accepts
    v.check_dns1123_label: r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
    v.check_dns1123_subdomain: r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,3}",
    v.check_label_key: r"([a-z0-9]{1,8}(\.[a-z]{1,5}){0,2}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
    v.check_label_value: r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?",
    v.check_port_name: r"[a-z]{1,4}(-[a-z0-9]{1,4}){0,2}",
}
REFUSED_CHARACTERS = st.sampled_from(REFUSED_TAILS) | st.characters(
    blacklist_categories=("Lu", "Ll", "Nd"), blacklist_characters="-_./")


@given(st.sampled_from(list(CHECKS)).flatmap(
    lambda check: st.tuples(st.just(check), st.from_regex(CHECKS[check], fullmatch=True))),
    REFUSED_CHARACTERS, st.booleans())
def test_any_valid_value_with_whitespace_or_a_control_character_around_it_is_refused(case, character, at_end):
    check, value = case
    assert check(value) is None
    assert check(value + character if at_end else character + value) is not None
