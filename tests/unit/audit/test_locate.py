"""`netpol.audit.locate`: the file and line of a finding's object and field, in every form `-f`
reads (multi-document YAML, `v1/List`, `kubectl get -o yaml|json`, a JSON array, typed lists),
the deepest written field when the path goes past what is written, nothing for stdin."""

from __future__ import annotations

import json
import textwrap

from netpol.audit.lint import Finding
from netpol.audit.locate import locate, object_key

POLICIES = textwrap.dedent("""\
    # shop's policies
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata:
      name: web
      namespace: shop
    spec:
      podSelector:
        matchLabels: {app: web}
      ingress:
      - from:
        - podSelector: {matchLabels: {app: db}}
        - namespaceSelector: {}
        ports: [{port: http}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny}  # namespace default
    spec: {podSelector: {}}
    """)


def finding(obj: str, path: str = "") -> Finding:
    return Finding("peer-selects-nothing", "warning", obj, path, "m")


def lines(found: list[Finding]) -> list[tuple[str | None, int | None]]:
    return [(f.file, f.line) for f in found]


def reader(files: dict[str, str]):
    return files.__getitem__


def test_the_line_of_the_field():
    found = locate([finding("NetworkPolicy shop/web", "spec.ingress[0].from[1]"),
                    finding("NetworkPolicy shop/web", "spec.podSelector"),
                    finding("NetworkPolicy shop/web", "spec.ingress[0].ports[0]"),
                    finding("NetworkPolicy shop/web", "")],
                   ["p.yaml"], reader({"p.yaml": POLICIES}))
    assert lines(found) == [("p.yaml", 13), ("p.yaml", 8), ("p.yaml", 14), ("p.yaml", 2)]


def test_a_path_past_what_is_written_gives_the_deepest_field_written():
    found = locate([finding("NetworkPolicy default/deny", "spec.policyTypes"),
                    finding("NetworkPolicy shop/web", "spec.ingress[3].from[0]")],
                   ["p.yaml"], reader({"p.yaml": POLICIES}))
    assert lines(found) == [("p.yaml", 19), ("p.yaml", 10)]


def test_v1_list_and_typed_list_items():
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Namespace
          metadata: {name: ops}
        - kind: NetworkPolicyList
          items:
          - metadata: {name: web, namespace: shop}
            spec:
              podSelector: {}
        """)
    found = locate([finding("Namespace ops"), finding("NetworkPolicy shop/web", "spec.podSelector")],
                   ["l.yaml"], reader({"l.yaml": text}))
    assert lines(found) == [("l.yaml", 4), ("l.yaml", 11)]


def test_kubectl_json_and_a_json_array():
    policy = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
              "metadata": {"name": "web", "namespace": "shop"}, "spec": {"podSelector": {}, "ingress": [{}]}}
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy]}, indent="\t")
    array = json.dumps([{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}}, policy], indent=2)
    found = locate([finding("NetworkPolicy shop/web", "spec.ingress[0]")], ["l.json"], reader({"l.json": listed}))
    assert found[0].line is not None and listed.splitlines()[found[0].line - 1].strip() == "{}"
    found = locate([finding("NetworkPolicy shop/web", "spec.ingress")], ["a.json"], reader({"a.json": array}))
    assert array.splitlines()[found[0].line - 1].strip() == '"ingress": ['


def test_the_first_file_holding_the_object_and_files_without_its_name_unread():
    read: list[str] = []

    def tracking(name: str) -> str:
        read.append(name)
        return {"a.yaml": "kind: Namespace\napiVersion: v1\nmetadata: {name: other}\n", "b.yaml": POLICIES}[name]

    found = locate([finding("NetworkPolicy shop/web", "spec")], ["-", "a.yaml", "b.yaml"], tracking)
    assert lines(found) == [("b.yaml", 7)] and read == ["a.yaml", "b.yaml"]


def test_objects_not_found_stdin_and_unparsable_files_keep_no_location():
    found = locate([finding("NetworkPolicy shop/web"), finding("Namespace gone")], ["-", "bad.yaml"],
                   reader({"bad.yaml": "web: [unclosed\n"}))
    assert lines(found) == [(None, None), (None, None)]


def test_object_keys():
    assert object_key("NetworkPolicy shop/web") == ("NetworkPolicy", "shop", "web")
    assert object_key("ClusterNetworkPolicy guard") == ("ClusterNetworkPolicy", "", "guard")
    assert object_key("AdminNetworkPolicy a") == ("AdminNetworkPolicy", "", "a")
