"""Loading manifests: every input shape, and every problem reported with file, object and field."""

from __future__ import annotations

import io
import json
import sys
import textwrap

import pytest
from hypothesis import given

from netpol.errors import InputError
from netpol.load.decode import decode_document
from netpol.load.manifests import load_state, load_text
from netpol.testing import invalid_manifests, invalid_policy_manifests

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(InputError) as info:
        load_text(textwrap.dedent(text), "in.yaml")
    return [str(p) for p in info.value.problems]


def test_the_bundled_example_loads(example_path):
    state = load_state([example_path])
    assert len(state.policies) == 12 and len(state.namespaces) == 5 and len(state.nodes) == 2
    assert {p.key for p in state.pods if p.host_network} == {"kube-system/kube-proxy-node-a",
                                                             "kube-system/kube-proxy-node-b"}


def test_directories_are_walked_recursively_and_other_files_ignored(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "p.yml").write_text(POLICY)
    (tmp_path / "a" / "ns.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": "shop"}}))
    (tmp_path / "README.md").write_text("not: [a manifest")
    state = load_state([str(tmp_path)])
    assert [p.key for p in state.policies] == ["shop/allow-web"]
    assert [n.name for n in state.namespaces] == ["shop"]


def test_stdin_is_read_for_dash(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(POLICY.encode())))
    assert [p.key for p in load_state(["-"]).policies] == ["shop/allow-web"]


def test_kubectl_list_output_and_typed_lists_load():
    doc = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "x",
                                                               "managedFields": [{"manager": "kubectl"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "items": [
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "p", "namespace": "shop"}, "spec": {"podSelector": {}}, "status": {}}]},
    ]}
    state = load_text(json.dumps(doc))
    assert [p.key for p in state.policies] == ["shop/p"]


def test_kinds_we_do_not_use_are_skipped():
    state = load_text(POLICY + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: 7\n"
                      "---\napiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n---\n")
    assert len(state.policies) == 1


def test_every_problem_is_reported_with_file_object_and_field():
    found = problems_of("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-web, namespace: shop}
        spec:
          podSelector: {matchExpressions: [{key: app, operator: Like}]}
          ingress:
          - from:
            - podSelector: {}
            - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/16]}
            ports: [{port: 80, endPort: 79, protocol: ICMP}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: shop, labels: {enabled: true}}
        status: {podIP: 10.0.0.300}
        """)
    assert found == [
        "in.yaml (document 1): NetworkPolicy shop/allow-web: spec.podSelector.matchExpressions[0].operator: "
        "'Like': not a valid selector operator; supported values: In, NotIn, Exists, DoesNotExist",
        "in.yaml (document 1): NetworkPolicy shop/allow-web: spec.ingress[0].from[1].ipBlock.except[0]: "
        "10.1.0.0/16 is not a strict subset of cidr 10.0.0.0/16",
        "in.yaml (document 1): NetworkPolicy shop/allow-web: spec.ingress[0].ports[0].protocol: "
        "'ICMP': supported values: TCP, UDP, SCTP",
        "in.yaml (document 1): NetworkPolicy shop/allow-web: spec.ingress[0].ports[0].endPort: "
        "79: must be greater than or equal to `port`",
        "in.yaml (document 2): Pod shop/web: metadata.labels.enabled: must be a string, got boolean",
        "in.yaml (document 2): Pod shop/web: status.podIP: '10.0.0.300': must be a valid IP address, "
        "(e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]


@given(invalid_policy_manifests())
def test_each_planted_defect_is_reported_at_its_field(case):
    manifest, path = case
    objects, problems = decode_document(manifest, "gen.yaml")
    assert not objects, "an invalid policy must not be loaded (fail closed)"
    assert any(p.path == path for p in problems), [str(p) for p in problems]
    assert all(p.obj.startswith("NetworkPolicy ") for p in problems)


@given(invalid_manifests())
def test_each_planted_defect_in_any_kind_is_reported_at_its_field(case):
    manifest, path = case
    objects, problems = decode_document(manifest, "gen.yaml")
    assert not objects
    assert any(p.path == path for p in problems), [str(p) for p in problems]
    assert all(p.obj.startswith(manifest["kind"] + " ") for p in problems)


@pytest.mark.parametrize(("text", "expected"), [
    ("kind: [", "invalid YAML: line 2, column 1: did not find expected node content"),
    ("a: b\n\tc: d\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a Kubernetes object (a mapping), got list"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "kind: Required value"),
    ("apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}}\n",
     "apiVersion: 'extensions/v1beta1': NetworkPolicy must be networking.k8s.io/v1"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
     "spec.podSelector: Required value"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n",
     "metadata.name: Required value"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{ports: [{containerPort: 80, name: a},"
     " {containerPort: 81, name: a}]}]}\n", "spec.containers[0].ports[1].name: Duplicate value"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.2}]}\n",
     "status.podIPs[0].ip: must match status.podIP"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]}\n",
     "status.podIPs: expected at most one IP for each IP family"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n", "Namespace Shop: metadata.name"),
])
def test_malformed_documents_get_a_clear_message(text, expected):
    assert any(expected in p for p in problems_of(text)), problems_of(text)


def test_duplicates_and_clashing_pod_ips_are_reported():
    pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: s}}\nstatus: {{podIP: 10.0.0.1}}\n"
    found = problems_of(pod.format(n="a") + pod.format(n="a") + pod.format(n="b"))
    assert any("Pod s/a: metadata.name: Duplicate value" in p for p in found)
    assert any("Pod s/b: status.podIPs: 10.0.0.1 is also the address of Pod s/a" in p for p in found)


def test_binary_and_non_utf8_input_is_refused(tmp_path):
    (tmp_path / "garbage.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(InputError) as info:
        load_state([str(tmp_path / "garbage.yaml")])
    assert "garbage.yaml" in str(info.value) and "UTF-8" in str(info.value)


def test_missing_paths_are_reported():
    with pytest.raises(InputError, match="no/such/file.yaml: no such file or directory"):
        load_state(["no/such/file.yaml"])


def test_host_bits_in_cidr_are_accepted_like_go_parse_cidr():
    state = load_text(POLICY.replace("10.0.0.0/16", "10.0.3.4/16"))
    assert str(state.policies[0].ingress[0].peers[0].ip_block.cidr) == "10.0.0.0/16"


def test_namespaces_are_synthesised_for_pods_and_policies():
    state = load_text(POLICY)
    assert state.namespace("shop").labels == {"kubernetes.io/metadata.name": "shop"}


# Found in review: each of these once gave a wrong answer, a refusal of valid input, or a crash.

def test_empty_policy_types_defaults_like_absent():
    state = load_text(POLICY.replace("spec:\n", "spec:\n  policyTypes: []\n"))
    assert state.policies[0].policy_types == ("Ingress",)


def test_null_peer_fields_are_absent_not_empty():
    text = POLICY.replace("- ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}",
                          "- {podSelector: {matchLabels: {app: b}}, namespaceSelector: }")
    peer = load_text(text).policies[0].ingress[0].peers[0]
    assert peer.namespace_selector is None  # only the policy's namespace, not all namespaces
    alone = POLICY.replace("- ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}", "- {podSelector: }")
    assert any("spec.ingress[0].from[0]: must specify a peer" in p for p in problems_of(alone))


@pytest.mark.parametrize(("old", "new", "field"), [
    # a `- ` with nothing after it: Go decodes an empty value, which the API server refuses
    ("    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}", "    -", "spec.ingress[0].from[0]"),
    ("except: [10.0.1.0/24]", "except: [null]", "spec.ingress[0].from[0].ipBlock.except[0]"),
    ("  podSelector: {matchLabels: {app: web}}", "  podSelector: {}\n  policyTypes: [null]",
     "spec.policyTypes[0]"),
])
def test_null_list_items_are_refused_not_read_as_everything(old, new, field):
    problems = problems_of(POLICY.replace(old, new))
    assert any(f"{field}: " in p for p in problems), problems


def test_a_null_selector_value_is_the_empty_string_as_go_stores_it():
    text = POLICY.replace("{matchLabels: {app: web}}",
                          "{matchExpressions: [{key: tier, operator: In, values: [null]}]}")
    assert load_text(text).policies[0].pod_selector.match_expressions[0].values == ("",)


def test_port_names_must_be_unique_per_container_only():
    state = load_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: ["
                      "{name: a, ports: [{name: metrics, containerPort: 9090}]},"
                      "{name: b, ports: [{name: metrics, containerPort: 9091}]}]}\n")
    assert len(state.pods[0].ports) == 2


def test_every_problem_is_reported_even_across_checks_and_documents():
    found = problems_of("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: s}
        spec: {containers: [{ports: [{containerPort: 0}]}]}
        status: {podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: s}
        status: {podIP: 10.0.0.9}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: c, namespace: s}
        status: {podIP: 10.0.0.9}
        ---
        kind: [
        """)
    assert any("containerPort" in p for p in found)
    assert any("Pod s/c: status.podIPs: 10.0.0.9 is also the address of Pod s/b" in p for p in found)
    assert any("invalid YAML" in p for p in found)
    assert all(p.startswith("in.yaml") for p in found)


def test_ipv6_zones_are_rejected_and_duplicate_policy_types_accepted():
    assert any("zone" in p for p in problems_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 'fe80::1%eth0'}\n"))
    state = load_text(POLICY.replace("spec:\n", "spec:\n  policyTypes: [Ingress, Ingress]\n"))
    assert state.policies[0].policy_types == ("Ingress",)


def test_raw_api_lists_without_item_kinds_load():
    doc = {"kind": "PodList", "apiVersion": "v1", "items": [
        {"metadata": {"name": "p", "namespace": "s"}, "status": {"podIP": "10.0.0.1"}}]}
    assert [p.key for p in load_text(json.dumps(doc)).pods] == ["s/p"]


def test_nested_list_alias_bomb_is_refused_quickly():
    levels = ["a0: &a0 {kind: Pod, apiVersion: v1, metadata: {name: x}}"]
    for i in range(1, 12):
        items = ", ".join([f"*a{i - 1}"] * 10)
        levels.append(f"a{i}: &a{i} {{kind: List, items: [{items}]}}")
    text = "\n".join(levels) + "\nkind: List\nitems: [*a11]\n"
    assert any("nested more than" in p for p in problems_of(text))


def test_process_substitution_and_fifos_are_read(tmp_path):
    import os
    import threading
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(POLICY), daemon=True)
    writer.start()
    try:
        assert [p.key for p in load_state([str(fifo)]).policies] == ["shop/allow-web"]
    finally:
        # Should load_state fail before it opens the FIFO, the writer would block in open() for
        # ever: a reader of our own (non-blocking, so it never waits) lets it write and finish.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            writer.join(60)  # a hang bound only
        finally:
            os.close(reader)
    assert not writer.is_alive()
