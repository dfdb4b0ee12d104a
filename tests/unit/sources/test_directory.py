"""The directory source reads what `kubectl get -o json|yaml` writes into a folder."""

from __future__ import annotations

import json

from netpol.load.decode import decode_document
from netpol.sources.directory import read_objects
from tests.conftest import pod_object


def test_the_directory_source_reads_items_of_a_typed_list_as_the_api_serves_them(tmp_path):
    """`kubectl get pods -o json` into the folder: items without kind and apiVersion decode."""
    items = [{k: v for k, v in pod_object(f"p{i}", f"10.244.0.{i + 10}", namespace="frontend", ports=(8080,)).items()
              if k not in ("kind", "apiVersion")} for i in range(2)]
    (tmp_path / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": items}))
    objects = read_objects(str(tmp_path))
    assert objects is not None and len(objects["Pod"]) == 2
    assert all(decode_document(o, "test")[1] == [] for o in objects["Pod"])
