"""netpol.load.yaml_parallel reads a text in two processes only when the halves, joined, are
exactly what `yaml_fast.load_all` (and so PyYAML's SafeLoader) reads: on generated manifests
written every way test_yaml_fast writes them, as a stream of documents and as one `kind: List`,
edited or not, `read_in_halves` gives the same documents or declines (None) — never others. And
it declines where a fork is unsafe (another thread) or where a half needs PyYAML."""

from __future__ import annotations

import datetime
import random
import threading
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol.load import yaml_fast, yaml_parallel
from netpol.load.encode import encode_state
from netpol.testing import clusters
from tests.unit.load.test_yaml_fast import LOADER, edit, emit, manifests, plant, typed, write

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_list(rng: random.Random, items: list[Any]) -> str:
    """One `kind: List` document with `items:` and its entries at the first column: as kubectl
    (a dumper) writes it, or by hand (test_yaml_fast's writer), sometimes with keys after the
    items as kubectl puts them."""
    if rng.random() < 0.5:
        document = {"apiVersion": "v1", "items": items, **({"kind": "List"} if rng.random() < 0.7 else {})}
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=rng.random() < 0.5)
    lines = ["apiVersion: v1", "items:"]
    emit(rng, items, 0, lines, "")  # at column 0: `-` and one to three blanks, then the entry
    if rng.random() < 0.7:
        lines += ["kind: List", "metadata:", "  resourceVersion: ''"]
    return rng.choice(("", "---\n", "# c\n")) + "\n".join(lines) + rng.choice(("\n", "", "\n\n# end\n"))


def same_or_declined(text: str) -> bool:
    """True if the halves were read (and equal what yaml_fast and PyYAML read), False if declined."""
    halves = yaml_parallel.read_in_halves(text)
    if halves is None:
        return False
    assert [typed(d) for d in halves] == [typed(d) for d in yaml_fast.load_all(text)]
    assert [typed(d) for d in halves] == [typed(d) for d in yaml.load_all(text, Loader=LOADER)]
    return True


@SETTINGS
@given(manifests, st.randoms(use_true_random=False))
def test_a_stream_read_in_halves_is_the_stream(documents, rng):
    documents = [plant(rng, doc) for doc in documents] * 3
    if rng.random() < 0.5:
        same_or_declined("---\n".join(yaml.safe_dump(doc, sort_keys=False) for doc in documents))
    else:
        same_or_declined(write(rng, documents))


@SETTINGS
@given(st.lists(clusters(max_pods=4, max_policies=2).map(lambda s: encode_state(s)["items"]), min_size=1,
                max_size=3), st.randoms(use_true_random=False))
def test_a_list_read_in_halves_is_the_list(items, rng):
    same_or_declined(as_list(rng, [plant(rng, item) for group in items for item in group]))


@SETTINGS
@given(st.lists(clusters(max_pods=4, max_policies=2).map(lambda s: encode_state(s)["items"]), min_size=1,
                max_size=2), st.randoms(use_true_random=False))
def test_an_edited_list_is_read_in_halves_only_when_that_reads_it_as_pyyaml_does(items, rng):
    text = edit(rng, as_list(rng, [item for group in items for item in group]))
    try:
        expected = [typed(d) for d in yaml.load_all(text, Loader=LOADER)]
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        assert yaml_parallel.read_in_halves(text) is None  # an error is told by the usual reading
        return
    halves = yaml_parallel.read_in_halves(text)
    assert halves is None or [typed(d) for d in halves] == expected


def test_a_kubectl_list_and_a_stream_of_documents_are_read_in_halves():
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "ns",
                                                              "labels": {"app": "web", "on": "yes"}},
             "status": {"podIP": f"10.0.{i // 250}.{i % 250}", "conditions": [{"type": "Ready"}]}}
            for i in range(200)]
    kubectl = yaml.safe_dump({"apiVersion": "v1", "items": pods, "kind": "List", "metadata": {"resourceVersion": ""}},
                             sort_keys=False)  # the shape of `kubectl get pods -A -o yaml`
    assert kubectl.startswith("apiVersion: v1\nitems:\n- apiVersion: v1\n")
    assert same_or_declined(kubectl)
    assert same_or_declined("---\n".join(yaml.safe_dump(p) for p in pods))


def test_a_half_that_needs_pyyaml_declines():
    plain = "apiVersion: v1\nitems:\n" + "".join(f"- kind: Pod\n  metadata: {{name: p{i}}}\n" for i in range(20))
    assert yaml_parallel.read_in_halves(plain) is not None  # so the anchor is why the next declines
    text = plain.replace("metadata: {name: p15}", "metadata: &a {name: p15}")  # in the child's half
    assert yaml_parallel.read_in_halves(text) is None
    [document] = yaml_parallel.load_all(text)
    assert document["items"][15] == {"kind": "Pod", "metadata": {"name": "p15"}}


def test_no_fork_beside_another_thread():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not yaml_parallel.can_fork()
    finally:
        stop.set()
        other.join()


def test_a_child_that_fails_reads_nothing():
    assert yaml_parallel._in_child(lambda: [1 // 0])() is None  # the fork itself
    documents = [{"a": [1, 2.5, None, True]}, {"when": datetime.date(2026, 12, 6)}]  # marshal; pickle
    assert yaml_parallel._in_child(lambda: documents[:1])() == documents[:1]
    assert yaml_parallel._in_child(lambda: documents)() == documents
