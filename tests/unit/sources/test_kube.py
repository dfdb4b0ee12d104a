"""The Kubernetes source against the in-process API server (netpol.testing.apiserver), through
the unmodified `kubernetes` client and a generated kubeconfig: initial lists (paginated),
watch events, dropped streams, 410 Gone, a restarted server with a new history, bookmarks,
bursts, and backoff. In every case, the objects the source's events add up to (Mirror) end
equal to the server's."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from netpol.sources.backoff import Backoff
from netpol.sources.events import Delta, Snapshot
from netpol.sources.kube import KINDS as WATCHED
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import HANG, namespace_object, pod_object, policy_object, wait_until
from tests.unit.sources.follow import KINDS, Follower


@pytest.fixture
def api():
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.apply_all([namespace_object("shop", team="a"), namespace_object("db"),
                          pod_object("web-1", "10.0.0.1", app="web"), pod_object("web-2", "10.0.0.2", app="web"),
                          pod_object("pg-0", "10.0.1.1", "db", app="pg"), policy_object("deny")])
        yield server


def test_initial_list_is_one_snapshot_per_kind_with_kind_and_api_version(api, tmp_path):
    with Follower(api, tmp_path, page_size=2) as f:
        f.converge()
        snapshots = {e.kind: e for e in f.seen if isinstance(e, Snapshot)}
        assert set(snapshots) == set(KINDS)
        pods = snapshots["Pod"].objects
        assert sorted(p["metadata"]["name"] for p in pods) == ["pg-0", "web-1", "web-2"]
        assert all(p["kind"] == "Pod" and p["apiVersion"] == "v1" for p in pods)
        assert snapshots["NetworkPolicy"].objects[0]["apiVersion"] == "networking.k8s.io/v1"
    assert any("continue=" in r for r in api.requests)  # 3 pods in pages of 2


def test_changes_arrive_as_deltas_in_order(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        before = len(f.seen)
        api.apply(pod_object("web-3", "10.0.0.3", app="web"))
        api.apply(pod_object("web-3", "10.0.0.3", app="web", tier="front"))
        api.delete("Pod", "web-1", "shop")
        f.converge()
        deltas = [(e.type, e.object["metadata"]["name"]) for e in f.seen[before:] if isinstance(e, Delta)]
        assert deltas == [("ADDED", "web-3"), ("MODIFIED", "web-3"), ("DELETED", "web-1")]


def test_a_dropped_watch_resumes_from_the_last_resource_version(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        assert api.wait_watching(len(KINDS), HANG)  # the drops below cut open streams
        for i in range(5):
            api.apply(pod_object(f"extra-{i}", f"10.0.2.{i}"))
            api.drop_watches()
            api.apply(pod_object(f"extra-{i}", f"10.0.2.{i}", round=str(i)))
        f.converge()
        assert f.source.stats.errors >= 1 and f.source.stats.relists == 0
        names = [e.object["metadata"]["name"] for e in f.seen if isinstance(e, Delta) and e.type == "ADDED"]
        assert len(names) == len(set(names))  # resumed, not replayed
    assert any("resourceVersion=" in r and "watch=true" in r for r in api.requests)


def test_410_gone_relists_and_the_mirror_catches_up_with_deletions(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        with api.paused_watches():
            api.delete("Pod", "web-2", "shop")
            api.apply(pod_object("late", "10.0.3.1"))
            api.compact()
            api.drop_watches()
        f.converge()
        assert f.source.stats.relists >= 1
        assert ("shop", "web-2") not in f.mirror.objects["Pod"]


def test_a_restarted_server_with_a_new_history_is_relisted(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        api.restart([namespace_object("shop"), pod_object("only", "10.9.9.9"), policy_object("allow-all")])
        f.converge()
        assert set(f.mirror.objects["Pod"]) == {("shop", "only")}


def test_a_burst_of_a_thousand_pod_events_arrives_complete(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        api.burst([pod_object(f"p{i}", f"10.1.{i // 250}.{i % 250}", app=str(i % 7)) for i in range(1000)])
        api.burst([pod_object(f"p{i}", f"10.1.{i // 250}.{i % 250}", app="moved") for i in range(0, 1000, 3)])
        f.converge()
        assert len(f.mirror.objects["Pod"]) == 1003


def test_bookmarks_move_the_resume_point(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        api.apply(namespace_object("other"))  # a Namespace change moves the revision past the pod watch's events
        revision = api.revision
        # Only a BOOKMARK can move the Pod watch to this revision: wait until the source took one.
        wait_until(lambda: f.source.resume_version("Pod") == str(revision), "a bookmark at the new revision")
        seen = len(api.requests)
        api.drop_watches()
        wait_until(lambda: any(_pod_watch_from(r, revision) for r in api.requests[seen:]),
                   "the Pod watch reopened")  # before stop(): it may not leave its backoff otherwise
        f.converge()
        assert f.source.stats.bookmarks >= 1
    assert revision == api.revision
    pod_watches = [r for r in api.requests if r.startswith("GET /api/v1/pods?") and "watch=true" in r]
    assert any(_pod_watch_from(r, revision) for r in pod_watches[1:])


def _pod_watch_from(request: str, revision: int) -> bool:
    """Whether `request` opens a Pod watch at exactly this resourceVersion."""
    parts = urlsplit(request.removeprefix("GET "))
    query = parse_qs(parts.query)
    return (parts.path == "/api/v1/pods" and query.get("watch") == ["true"]
            and query.get("resourceVersion") == [str(revision)])


def test_unreachable_or_unauthorised_servers_are_retried_with_growing_delays(api, tmp_path):
    delays: list[float] = []
    enough = threading.Event()

    def record(seconds: float) -> bool:
        delays.append(seconds)
        if len(delays) >= 6:
            enough.set()
            return False
        return True

    f = Follower(api, tmp_path, sleep=record, kinds=WATCHED[:1], backoff_initial=0.1, backoff_cap=0.4)
    api.token = "rotated"  # the kubeconfig's token is no longer accepted: every call is a 401
    with f:
        assert enough.wait(HANG)
    assert f.source.stats.errors >= 6 and f.mirror.listed == set()
    assert all(0.05 <= d <= 0.4 for d in delays) and delays[-1] > delays[0]


def test_backoff_doubles_to_its_cap_with_jitter_and_resets():
    backoff = Backoff(initial=1, cap=8)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_malformed_objects_are_handed_on_and_garbage_events_relisted_without_losing_the_stream(api, tmp_path):
    """What an API server can hold from before its validation tightened (metadata not a
    mapping, a name that is not a string) arrives as deltas for the agent to report; an event
    whose object is not an object makes the source list again — every thread stays alive and
    later changes keep arriving."""
    deaths: list[str] = []
    with Follower(api, tmp_path, on_death=lambda thread, exc: deaths.append(thread)) as f:
        f.converge()
        before = len(f.seen)
        api.store_as_given("NetworkPolicy", "oops", {"kind": "NetworkPolicy", "metadata": "oops"}, "shop")
        api.store_as_given("Pod", "five", {"metadata": {"name": 5, "namespace": "shop"}}, "shop")
        wait_until(lambda: (f.drain(0.01), sum(isinstance(e, Delta) for e in f.seen[before:]))[1] >= 2,
                   "the malformed objects")
        taken = [e.object for e in f.seen[before:] if isinstance(e, Delta)]
        assert {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1", "metadata": "oops"} in taken
        assert {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": 5, "namespace": "shop"}} in taken
        lists = f.source.stats.lists
        api.store_as_given("Pod", "garbage", ["not", "an", "object"], "shop")
        wait_until(lambda: f.source.stats.lists > lists, "a relist after the garbage event")
        api.apply(pod_object("web-9", "10.0.0.9", app="web"))
        wait_until(lambda: f.drain(0.01) or ("shop", "web-9") in f.mirror.objects.get("Pod", {}),
                   "a change after the garbage")
        assert not deaths and all(t.is_alive() for t in f.source._threads)
