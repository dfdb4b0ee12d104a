"""Cluster policies through the kube source, against the in-process API server and the
unmodified `kubernetes` client: listed and watched like every kind (bookmarks, dropped streams,
410 Gone); at v1beta1, else at v1alpha2 until that is no longer served; a CRD not installed is
a kind with no objects — the other kinds listed as ever — until it is installed, which is
picked up; and a lone round of 404s is never taken for a CRD that is not there. In every case
the objects the source's events add up to (Mirror) end equal to the server's."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from netpol.sources.events import Delta, Snapshot
from netpol.sources.kube import ABSENT_CONFIRMATIONS
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import (
    HANG,
    cluster_policy_object,
    namespace_object,
    pod_object,
    policy_object,
    wait_until,
)
from tests.unit.sources.follow import KINDS, Follower

CNP = "ClusterNetworkPolicy"
CUSTOM = (CNP, "AdminNetworkPolicy", "BaselineAdminNetworkPolicy")
GROUP = "policy.networking.k8s.io"
RECHECK = {"absent_recheck_initial": 0.02, "absent_recheck_cap": 0.1}  # a CRD not installed: look often


def core() -> list[dict]:
    return [namespace_object("shop"), pod_object("web-1", "10.0.0.1", app="web"), policy_object("deny")]


def cluster_policies() -> list[dict]:
    return [cluster_policy_object("deny-all", "Admin", 5), cluster_policy_object("default-deny", "Baseline", 900),
            cluster_policy_object("legacy", kind="AdminNetworkPolicy", priority=3),
            cluster_policy_object("default", kind="BaselineAdminNetworkPolicy")]


@pytest.fixture
def api():
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.apply_all([*core(), *cluster_policies()])
        yield server


def policy_requests(api: FakeApiServer, plural: str = "clusternetworkpolicies") -> list[tuple[str, bool]]:
    """(version, is a watch) of every request for `plural`, in order."""
    found = []
    for request in api.requests:
        parts = urlsplit(request.partition(" ")[2])
        segments = parts.path.split("/")
        if parts.path.startswith(f"/apis/{GROUP}/") and segments[-1] == plural:
            found.append((segments[3], parse_qs(parts.query).get("watch") == ["true"]))
    return found


def test_cluster_policies_are_listed_and_watched_at_v1beta1_like_every_kind(api, tmp_path):
    with Follower(api, tmp_path, page_size=1) as f:
        f.converge()
        snapshots = {e.kind: e for e in f.seen if isinstance(e, Snapshot)}
        assert sorted(o["metadata"]["name"] for o in snapshots[CNP].objects) == ["default-deny", "deny-all"]
        assert {o["apiVersion"] for o in snapshots[CNP].objects} == {f"{GROUP}/v1beta1"}
        assert [o["apiVersion"] for o in snapshots["AdminNetworkPolicy"].objects] == [f"{GROUP}/v1alpha1"]
        before = len(f.seen)
        api.apply(cluster_policy_object("late", "Admin", 7))
        api.apply(cluster_policy_object("late", "Admin", 8))
        api.delete(CNP, "deny-all")
        api.delete("BaselineAdminNetworkPolicy", "default")
        f.converge()
        deltas = [(e.kind, e.type, e.object["metadata"]["name"]) for e in f.seen[before:] if isinstance(e, Delta)]
        assert [d for d in deltas if d[0] == CNP] == [(CNP, "ADDED", "late"), (CNP, "MODIFIED", "late"),
                                                      (CNP, "DELETED", "deny-all")]  # in order, per kind
        assert [d for d in deltas if d[0] != CNP] == [("BaselineAdminNetworkPolicy", "DELETED", "default")]
        assert f.source.serving(CNP) == f"{GROUP}/v1beta1" and f.source.stats.not_served == {}
    assert {version for version, _ in policy_requests(api)} == {"v1beta1"}  # v1alpha2 never asked
    assert (("v1beta1", True) in policy_requests(api)) and len(policy_requests(api)) >= 3  # paginated list, watch


def test_a_dropped_cluster_policy_watch_resumes_and_a_410_relists_catching_up_deletions(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        assert api.wait_watching(len(KINDS), HANG)  # the drop below cuts open streams
        api.apply(cluster_policy_object("one", "Admin", 1))
        api.drop_watches()
        api.apply(cluster_policy_object("two", "Admin", 2))
        f.converge()
        assert f.source.stats.errors >= 1 and f.source.stats.relists == 0
        added = [e.object["metadata"]["name"] for e in f.seen if isinstance(e, Delta) and e.kind == CNP]
        assert added == ["one", "two"]  # resumed, not replayed
        with api.paused_watches():
            api.delete(CNP, "deny-all")
            api.apply(cluster_policy_object("three", "Baseline", 3))
            api.compact()
            api.drop_watches()
        f.converge()
        assert f.source.stats.relists >= 1
        assert ("", "deny-all") not in f.mirror.objects[CNP]


def test_bookmarks_move_the_cluster_policy_resume_point(api, tmp_path):
    with Follower(api, tmp_path) as f:
        f.converge()
        api.apply(namespace_object("other"))  # moves the revision past the cluster policies' last event
        revision = api.revision
        wait_until(lambda: f.source.resume_version(CNP) == str(revision), "a bookmark at the new revision")
        seen = len(api.requests)
        api.drop_watches()
        wait_until(lambda: any(_watch_from(r, revision) for r in api.requests[seen:]), "the watch reopened there")
        f.converge()
        assert f.source.stats.bookmarks >= 1


def _watch_from(request: str, revision: int) -> bool:
    parts = urlsplit(request.removeprefix("GET "))
    query = parse_qs(parts.query)
    return (parts.path == f"/apis/{GROUP}/v1beta1/clusternetworkpolicies" and query.get("watch") == ["true"]
            and query.get("resourceVersion") == [str(revision)])


def test_without_v1beta1_it_follows_v1alpha2_and_moves_only_when_that_is_no_longer_served(tmp_path):
    """Versions of one CRD are views of the same objects: the source stays on v1alpha2 while it
    is served (nothing to gain by moving), and lists v1beta1 when it goes — losing nothing."""
    with FakeApiServer(bookmark_interval=0.2, crd_versions={CNP: ["v1alpha2"]}) as api:
        api.apply_all([*core(), *cluster_policies()])
        with Follower(api, tmp_path) as f:
            f.converge()
            assert f.source.serving(CNP) == f"{GROUP}/v1alpha2"
            assert {o["apiVersion"] for o in f.mirror.objects[CNP].values()} == {f"{GROUP}/v1alpha2"}
            assert policy_requests(api)[:2] == [("v1beta1", False), ("v1alpha2", False)]  # 404, then served
            api.serve_versions(CNP, ["v1beta1", "v1alpha2"])  # the CRD upgraded: its watches end
            api.apply(cluster_policy_object("late", "Admin", 7))
            f.converge()
            assert f.source.serving(CNP) == f"{GROUP}/v1alpha2"
            api.serve_versions(CNP, ["v1beta1"])  # v1alpha2 removed: a 404, so a new list
            api.apply(cluster_policy_object("later", "Admin", 8))
            wait_until(lambda: f.drain(0.01) or f.source.serving(CNP) == f"{GROUP}/v1beta1", "v1beta1 followed")
            f.converge()
            assert {o["apiVersion"] for o in f.mirror.objects[CNP].values()} == {f"{GROUP}/v1beta1"}
        assert not [e for e in f.seen if isinstance(e, Delta) and e.kind == CNP and e.type == "DELETED"]
        assert f.source.stats.not_served == {}


def test_a_crd_not_installed_is_a_kind_with_no_objects_and_installing_it_later_is_picked_up(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "netpol.sources.kube")
    with FakeApiServer(bookmark_interval=0.2, crd_versions=dict.fromkeys(CUSTOM, ())) as api:
        api.apply_all(core())
        with Follower(api, tmp_path, **RECHECK) as f:
            f.converge()  # every kind listed — the three not installed as empty — so the agent can start
            assert set(f.source.stats.not_served) == set(CUSTOM)
            assert policy_requests(api)[:2 * ABSENT_CONFIRMATIONS] == \
                [("v1beta1", False), ("v1alpha2", False)] * ABSENT_CONFIRMATIONS  # confirmed before believed
            assert any("ClusterNetworkPolicy: not served (policy.networking.k8s.io/v1beta1 and "
                       "policy.networking.k8s.io/v1alpha2: 404 Not Found): its CRD is not installed" in r.getMessage()
                       for r in caplog.records)
            api.apply(pod_object("web-2", "10.0.0.2", app="web"))  # the other kinds go on as ever
            f.converge()
            api.serve_versions(CNP, ["v1beta1", "v1alpha2"])  # installed
            api.apply(cluster_policy_object("late", "Admin", 7))
            wait_until(lambda: f.drain(0.01) or ("", "late") in f.mirror.objects[CNP], "the new CRD's policy")
            f.converge()
            assert set(f.source.stats.not_served) == set(CUSTOM) - {CNP}
            # (v1alpha2 if the install came between the round's two lists: the same objects)
            assert f.source.serving(CNP) in (f"{GROUP}/v1beta1", f"{GROUP}/v1alpha2")
            api.serve_versions(CNP, [])  # uninstalled: its objects go with it
            wait_until(lambda: f.drain(0.01) or CNP in f.source.stats.not_served, "the CRD taken as gone")
            f.converge()
            assert f.mirror.objects[CNP] == {}
    # uninstalling deleted it first, and the watch said so before it ended
    assert ("DELETED", "late") in [(e.type, e.object["metadata"]["name"]) for e in f.seen if isinstance(e, Delta)]


def test_one_round_of_404s_is_not_taken_for_a_crd_that_is_not_installed(tmp_path):
    """A restarting API server can answer 404 for a custom resource it serves
    (kubernetes#115241); an agent that believed it would start enforcing without the cluster's
    deny policies."""
    with FakeApiServer(bookmark_interval=0.2) as api:
        api.apply_all([*core(), *cluster_policies()])
        api.stray_not_found(CNP, 2)  # the first list at each version
        with Follower(api, tmp_path, **RECHECK) as f:
            f.converge()
        assert [e.objects for e in f.seen if isinstance(e, Snapshot) and e.kind == CNP] == \
            [tuple(f.mirror.objects[CNP].values())]  # one list, the real one: never an empty one first
    assert policy_requests(api)[:3] == [("v1beta1", False), ("v1alpha2", False), ("v1beta1", False)]
    assert f.source.stats.not_served == {} and len(f.mirror.objects[CNP]) == 2
