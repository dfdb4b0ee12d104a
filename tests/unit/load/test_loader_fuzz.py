"""Fuzzing the loader through the CLI: any input ends in exit 0 or exit 1 with a message naming
the problem — never a traceback, never the internal-error fallback."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.cli import main
from netpol.load.encode import encode_state
from netpol.testing import cluster_policy_manifests, clusters, policy_manifests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = ("apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "labels", "podSelector",
        "ingress", "egress", "from", "to", "ports", "port", "endPort", "protocol", "ipBlock", "cidr", "except",
        "matchLabels", "matchExpressions", "operator", "values", "key", "policyTypes", "items", "podIP",
        "podIPs", "containers", "containerPort", "hostNetwork", "phase", "namespaceSelector", "tier", "priority",
        "subject", "namespaces", "pods", "networks", "nodes", "domainNames", "action", "protocols", "tcp",
        "destinationPort", "number", "range", "start", "end", "destinationNamedPort")


def run_validate(name: str, content: bytes) -> tuple[int, str]:
    """`netpol validate -f FILE` in-process; (exit code, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["validate", "-f", str(path)])
    return code, err.getvalue()


def check_outcome(code: int, err: str) -> None:
    assert code in (0, 1), err
    assert "internal error" not in err and "Traceback" not in err
    if code == 1:
        assert err.startswith("netpol: invalid input (")
        assert len(err.splitlines()) >= 2


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, base):
    doc = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(("replace", "delete", "add")))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(KEYS))] = draw(json_values)
    return doc


@settings(max_examples=300)
@given(mutated(policy_manifests()))
def test_mutated_policies_never_crash(doc):
    check_outcome(*run_validate("p.json", json.dumps(doc).encode()))
    check_outcome(*run_validate("p.yaml", yaml.safe_dump(doc).encode()))


@settings(max_examples=300)
@given(mutated(cluster_policy_manifests()))
def test_mutated_cluster_policies_never_crash(doc):
    check_outcome(*run_validate("c.json", json.dumps(doc).encode()))


@settings(max_examples=100)
@given(mutated(clusters(max_pods=4, max_policies=2, max_cluster_policies=2).map(encode_state)))
def test_mutated_clusters_never_crash(doc):
    check_outcome(*run_validate("c.json", json.dumps(doc).encode()))


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
       | st.fixed_dictionaries({"kind": st.sampled_from(("Pod", "Namespace", "Node", "NetworkPolicy", "List",
                                                         "ClusterNetworkPolicy", "AdminNetworkPolicy",
                                                         "BaselineAdminNetworkPolicy")),
                                "apiVersion": st.sampled_from(("v1", "networking.k8s.io/v1",
                                                               "policy.networking.k8s.io/v1beta1",
                                                               "policy.networking.k8s.io/v1alpha1"))},
                               optional={k: json_values for k in ("metadata", "spec", "status", "items")}))
def test_random_json_trees_never_crash(doc):
    check_outcome(*run_validate("t.json", json.dumps(doc).encode()))


@settings(max_examples=200)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.lists(st.sampled_from(["{", "}", "[", "]", ":", "- ", "\n", "  ", "kind: Pod", "&a", "*a", "!!python/object",
                                   "---", "'", '"', "\t", "? ", "|", ">", "%YAML 1.1"]), max_size=30)
       .map(lambda parts: "".join(parts).encode()))
def test_garbage_bytes_never_crash(content):
    check_outcome(*run_validate("g.yaml", content))


def test_deeply_nested_input_is_refused_cleanly(tmp_path):
    code, err = run_validate("deep.yaml", b"[" * 100_000)
    check_outcome(code, err)
    assert code == 1


def test_yaml_alias_bomb_is_refused_or_bounded(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    code, err = run_validate("bomb.yaml", bomb.encode())
    check_outcome(code, err)


def test_the_console_script_never_prints_a_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"\x00\x01\x02garbage")
    result = subprocess.run([sys.executable, "-m", "netpol.cli", "reach", "-f", str(tmp_path / "bad.yaml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "bad.yaml" in result.stderr
