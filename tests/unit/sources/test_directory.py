"""The directory source reads what `kubectl get -o json|yaml` writes into a folder, never raises
on what a folder holds, refuses a read it cannot make sense of (the last good folder stays),
and hands an object defined differently in two files over as a conflict, never one copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netpol.load.decode import decode_document
from netpol.model import ClusterNetworkPolicy
from netpol.sources.directory import read_objects
from netpol.sources.events import conflicting_copies, object_key
from tests.conftest import cluster_policy_object, pod_object, policy_yaml


def test_the_directory_source_reads_items_of_a_typed_list_as_the_api_serves_them(tmp_path):
    """`kubectl get pods -o json` into the folder: items without kind and apiVersion decode."""
    items = [{k: v for k, v in pod_object(f"p{i}", f"10.244.0.{i + 10}", namespace="frontend", ports=(8080,)).items()
              if k not in ("kind", "apiVersion")} for i in range(2)]
    (tmp_path / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": items}))
    objects = read_objects(str(tmp_path))
    assert objects is not None and len(objects["Pod"]) == 2
    assert all(decode_document(o, "test")[1] == [] for o in objects["Pod"])


def test_cluster_policies_are_read_each_kind_apart_as_the_agent_follows_them(tmp_path):
    """ClusterNetworkPolicy, and the v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy
    that decoding converts, are read like every kind (a `kubectl get -o json` List too); an
    AdminNetworkPolicy and a ClusterNetworkPolicy of one name are two objects."""
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump_all([
        cluster_policy_object("deny"), cluster_policy_object("deny", kind="AdminNetworkPolicy", priority=4),
        cluster_policy_object("default", kind="BaselineAdminNetworkPolicy")]))
    item = {k: v for k, v in cluster_policy_object("listed", "Baseline").items() if k not in ("kind", "apiVersion")}
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ClusterNetworkPolicyList",
                                                    "items": [item]}))
    objects = read_objects(str(tmp_path))
    assert objects is not None
    names = {kind: sorted(o["metadata"]["name"] for o in found) for kind, found in objects.items() if found}
    assert names == {"ClusterNetworkPolicy": ["deny", "listed"], "AdminNetworkPolicy": ["deny"],
                     "BaselineAdminNetworkPolicy": ["default"]}
    decoded = [decode_document(o, "test") for found in objects.values() for o in found]
    assert all(not problems and isinstance(obj, ClusterNetworkPolicy) for [obj], problems in decoded)
    assert sorted(obj.ref for [obj], _ in decoded) == [
        "AdminNetworkPolicy deny", "BaselineAdminNetworkPolicy default", "ClusterNetworkPolicy deny",
        "ClusterNetworkPolicy listed"]


def test_a_cluster_policy_defined_differently_in_two_files_is_a_conflict(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cluster_policy_object("deny", "Admin", 5)))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cluster_policy_object("deny", "Admin", 50)))
    objects = read_objects(str(tmp_path))
    assert objects is not None
    [stand_in] = objects["ClusterNetworkPolicy"]
    copies = conflicting_copies(stand_in)
    assert copies is not None and [c["spec"]["priority"] for _, c in copies] == [5, 50]


# ── what a folder cannot say is never guessed, and never raises ─────────────────────────────


def test_malformed_objects_are_handed_on_as_they_are_for_the_agent_to_report(tmp_path):
    """`metadata: oops` and a name that is not a string: the source hands them over (reading
    them must not raise in the source thread); the agent decodes and reports them."""
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: oops\n"
                                       "---\napiVersion: v1\nkind: Pod\nmetadata: {name: 5}\n")
    (tmp_path / "kinds.yaml").write_text("kind: [Pod]\nmetadata: {name: x}\n")
    objects = read_objects(str(tmp_path))
    assert objects is None  # a kind that is not a string: the read fails (the last good folder stays)
    (tmp_path / "kinds.yaml").unlink()
    objects = read_objects(str(tmp_path))
    assert objects is not None
    assert [o["metadata"] for o in objects["NetworkPolicy"]] == ["oops"]
    assert [o["metadata"] for o in objects["Pod"]] == [{"name": 5}]


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n[not, an, object]\n",
    "apiVersion: v1\nkind: PodList\nitems: [{metadata: {name: a}}, 5]\n",
])
def test_a_document_without_a_kind_among_objects_fails_the_read_as_a_syntax_error_does(tmp_path, text):
    """A typo (`kind:` lost) could be the line that made a policy a policy: the read is refused
    and the last good folder stays in force, as `-f` refuses such input."""
    (tmp_path / "a.yaml").write_text(text)
    assert read_objects(str(tmp_path)) is None


def test_a_binary_or_non_utf8_file_fails_the_read_instead_of_the_source(tmp_path):
    (tmp_path / "ok.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "latin1.yaml").write_bytes("kind: Namespace\nmetadata: {name: caf\xe9}\n".encode("latin-1"))
    assert read_objects(str(tmp_path)) is None
    (tmp_path / "latin1.yaml").unlink()
    (tmp_path / "expected.json").write_text('{"cells": 3}')  # some tool's file: skipped, as before
    objects = read_objects(str(tmp_path))
    assert objects is not None and [o["metadata"]["name"] for o in objects["Namespace"]] == ["a"]


def test_one_object_defined_identically_twice_is_one_object(tmp_path):
    (tmp_path / "a.yaml").write_text(policy_yaml("shop", "deny", "{podSelector: {}}"))
    (tmp_path / "b.yaml").write_text(policy_yaml("shop", "deny", "{podSelector: {}}"))
    (tmp_path / "c.yaml").write_text(policy_yaml("default", "p", "{podSelector: {}}"))
    (tmp_path / "d.yaml").write_text(policy_yaml("", "p", "{podSelector: {}}").replace(", namespace: }", "}"))
    objects = read_objects(str(tmp_path))
    assert objects is not None
    assert sorted(object_key(o) for o in objects["NetworkPolicy"]) == [("default", "p"), ("shop", "deny")]
    assert all(conflicting_copies(o) is None for o in objects["NetworkPolicy"])


def test_one_object_defined_differently_in_two_files_is_a_conflict_naming_both(tmp_path):
    """The later file used to win silently (an allow-all beat a deny-all): now neither does."""
    (tmp_path / "a-deny.yaml").write_text(policy_yaml("shop", "web", "{podSelector: {}}"))
    (tmp_path / "b-allow.yaml").write_text(policy_yaml("shop", "web", "{podSelector: {}, ingress: [{}]}"))
    objects = read_objects(str(tmp_path))
    assert objects is not None
    [stand_in] = objects["NetworkPolicy"]
    copies = conflicting_copies(stand_in)
    assert copies is not None and object_key(stand_in) == ("shop", "web")
    assert [Path(file).name for file, _ in copies] == ["a-deny.yaml", "b-allow.yaml"]
    assert [copy["spec"].get("ingress") for _, copy in copies] == [None, [{}]]
