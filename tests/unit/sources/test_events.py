"""The event vocabulary never raises on what a source hands over, however malformed: every
object gets a key (two different malformed objects two keys, the same one one key), the
mirror folds snapshots and deltas of them, and a thread that dies is reported, not silent."""

from __future__ import annotations

import threading

import pytest

from netpol.sources.events import Delta, Mirror, Snapshot, object_key, run_reporting_death
from tests.conftest import pod_object, policy_object

MALFORMED = {
    "metadata not a mapping": {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1", "metadata": "oops"},
    "metadata a list": {"kind": "Pod", "apiVersion": "v1", "metadata": ["name", "x"]},
    "name not a string": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": 5, "namespace": "shop"}},
    "no name": {"kind": "Namespace", "apiVersion": "v1", "metadata": {"labels": {"a": "b"}}},
    "namespace not a string": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x", "namespace": ["a"]}},
    "kind missing": {"apiVersion": "v1", "metadata": {"name": "x"}},
    "kind a list": {"kind": ["Pod"], "metadata": {"name": "x"}},
    "not an object": ["a", "list"],
    "nothing": None,
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_malformed_object_gets_a_key_and_the_mirror_takes_it(name):
    obj = MALFORMED[name]
    namespace, key_name = object_key(obj)
    assert isinstance(namespace, str) and isinstance(key_name, str) and key_name
    assert object_key(obj) == object_key(obj)  # the same object keeps its key
    mirror = Mirror()
    assert len(mirror.apply(Snapshot("Pod", (obj,), "1"))) == 1  # type: ignore[arg-type]
    assert mirror.apply(Delta("Pod", "MODIFIED", obj)) == []  # type: ignore[arg-type]
    assert [d.type for d in mirror.apply(Delta("Pod", "DELETED", obj))] == ["DELETED"]  # type: ignore[arg-type]


def test_two_different_unnamed_objects_are_two_objects_and_a_new_version_is_the_same_one():
    a = {"kind": "Pod", "metadata": {"name": 5, "resourceVersion": "1"}}
    b = {"kind": "Pod", "metadata": {"name": 6, "resourceVersion": "1"}}
    assert object_key(a) != object_key(b)
    assert object_key(a) == object_key({"kind": "Pod", "metadata": {"name": 5, "resourceVersion": "2"}})


def test_a_namespaced_object_without_a_namespace_is_in_default_and_no_name_passes_for_a_valid_one():
    assert object_key(policy_object("p", namespace="")) == ("default", "p")
    assert object_key({"kind": "Namespace", "metadata": {"name": "a"}}) == ("", "a")
    odd = object_key({"kind": "Pod", "metadata": {"name": "x", "namespace": 5}})[0]
    assert odd.startswith("?")  # never a namespace anyone could be named
    assert object_key(pod_object("web", "10.0.0.1", namespace="shop")) == ("shop", "web")


def test_a_thread_that_raises_or_ends_unasked_is_reported_and_one_that_was_stopped_is_not():
    deaths: list[tuple[str, str]] = []
    stop = threading.Event()

    def report(thread: str, error: BaseException) -> None:
        deaths.append((thread, type(error).__name__))

    def broken() -> None:
        raise AttributeError("'str' object has no attribute 'get'")

    run_reporting_death("dir-source", broken, report, stop.is_set)
    run_reporting_death("watch-Pod", lambda: None, report, stop.is_set)
    stop.set()
    run_reporting_death("sync-loop", lambda: None, report, stop.is_set)
    assert deaths == [("dir-source", "AttributeError"), ("watch-Pod", "RuntimeError")]
    with pytest.raises(AttributeError):  # nobody to tell: the exception is raised as before
        run_reporting_death("dir-source", broken, None, stop.is_set)
