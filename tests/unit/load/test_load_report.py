"""What a load leaves out is reported, never silent: objects of kinds netpol does not use are
counted per kind, a file holding no Kubernetes object is refused by name (or skipped, and named,
with `skip_unknown`), and `load_state` stays what every other caller knows."""

from __future__ import annotations

import json

import pytest

from netpol.errors import InputError
from netpol.load.manifests import (
    NOT_AN_OBJECT,
    LoadReport,
    load_state,
    load_state_with_report,
    parse_paths,
)
from netpol.model import ClusterState

DEPLOYMENT = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
POD = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: a}\nstatus: {podIP: 10.0.0.1}\n"


def test_skipped_kinds_are_counted_per_kind_lists_included(tmp_path):
    (tmp_path / "app.yaml").write_text(DEPLOYMENT * 2 + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}}]}))
    state, report = load_state_with_report([str(tmp_path)])
    assert isinstance(state, ClusterState) and not state.pods
    assert report.skipped_kinds == {"Deployment": 3, "Service": 1, "StatefulSet": 1}
    assert report.kinds_note(pods_missing=False) == "skipped 3 Deployment, 1 Service, 1 StatefulSet (kinds netpol does not use)"
    assert load_state([str(tmp_path)]) == state  # unchanged for every other caller


def test_the_kinds_note_says_how_to_get_pods_only_when_they_are_missing():
    assert LoadReport().kinds_note(pods_missing=True) is None
    services = LoadReport()
    services.skipped_kinds["Service"] += 2
    assert services.kinds_note(pods_missing=True) == (
        "skipped 2 Service: netpol needs Pods with status.podIP; try `kubectl get pods -A -o yaml`")


@pytest.mark.parametrize("text", ['[1, 2, "x"]', '{"expected": true}', "replicas: 3\n", '[{"a": 1}, {"b": 2}]',
                                  '"just a string"'])
def test_a_file_without_kubernetes_objects_is_one_problem_naming_it(tmp_path, text):
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "other.json").write_text(text)
    with pytest.raises(InputError) as refused:
        load_state([str(tmp_path)])
    [problem] = refused.value.problems
    assert problem.source == str(tmp_path / "other.json") and problem.message.startswith(NOT_AN_OBJECT)
    assert "--skip-unknown" in problem.message
    with pytest.raises(InputError) as parsed:  # the sharded compile's route says the same
        parse_paths([str(tmp_path)]).state()
    assert [str(p) for p in parsed.value.problems] == [str(problem)]
    state, report = load_state_with_report([str(tmp_path)], skip_unknown=True)
    assert [p.key for p in state.pods] == ["a/web"] and report.skipped_files == [str(tmp_path / "other.json")]


def test_empty_files_and_broken_objects_are_not_foreign(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n---\n")
    assert load_state_with_report([str(tmp_path)], skip_unknown=True)[1].skipped_files == []
    (tmp_path / "broken.json").write_text('{"kind": "Pod"}')  # says what it is: its problems count
    with pytest.raises(InputError, match=r"broken.json: Pod default/<unnamed>: metadata.name: Required value"):
        load_state_with_report([str(tmp_path)], skip_unknown=True)
