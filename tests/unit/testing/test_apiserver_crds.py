"""FakeApiServer serves the cluster policies' custom resources as their CRDs do: the same
objects at every served version (only apiVersion differs), 404 for a version not served and
for a CRD not installed — after RBAC, which refuses first — and a CRD's deletion deletes its
objects, which open watches still send before they end. The kube source's tests rely on each."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

import pytest

from netpol.deploy.rbac import cluster_role_rules
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import HANG, cluster_policy_object

GROUP = "policy.networking.k8s.io"
CNPS = "clusternetworkpolicies"
USER = "system:serviceaccount:netpol:netpol"


def request(api: FakeApiServer, path: str, method: str = "GET") -> tuple[int, Any]:
    """(status, JSON body — None when empty) of one request with the server's token."""
    connection = http.client.HTTPConnection(api.host, api.port, timeout=HANG)
    try:
        connection.request(method, path, body=b"{}" if method != "GET" else None,
                           headers={"Authorization": f"Bearer {api.token}"})
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        connection.close()


def test_every_served_version_serves_the_same_objects_each_with_its_apiversion():
    with FakeApiServer(crd_versions={"ClusterNetworkPolicy": ["v1beta1", "v1alpha2"]}) as api:
        api.apply(cluster_policy_object("deny-all", "Admin", 5))
        for version in ("v1beta1", "v1alpha2"):
            code, body = request(api, f"/apis/{GROUP}/{version}/{CNPS}")
            assert (code, body["kind"], body["apiVersion"]) == (200, "ClusterNetworkPolicyList", f"{GROUP}/{version}")
            [item] = body["items"]
            assert "apiVersion" not in item and item["spec"]["priority"] == 5  # items as a typed list serves them
            code, named = request(api, f"/apis/{GROUP}/{version}/{CNPS}/deny-all")
            assert (code, named["apiVersion"], named["metadata"]) == (200, f"{GROUP}/{version}", item["metadata"])


def test_a_version_not_served_and_a_crd_not_installed_are_404_as_an_unknown_resource_is():
    with FakeApiServer(crd_versions={"ClusterNetworkPolicy": ["v1alpha2"], "AdminNetworkPolicy": []}) as api:
        for path in (f"/apis/{GROUP}/v1beta1/{CNPS}", f"/apis/{GROUP}/v1beta1/{CNPS}?watch=true",
                     f"/apis/{GROUP}/v1beta1/{CNPS}/x", f"/apis/{GROUP}/v1alpha1/adminnetworkpolicies"):
            code, body = request(api, path)
            assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound"), path
        assert request(api, f"/apis/{GROUP}/v1alpha2/{CNPS}")[0] == 200
        assert request(api, f"/apis/{GROUP}/v1alpha1/baselineadminnetworkpolicies")[0] == 200  # not named: served
        with pytest.raises(LookupError, match="AdminNetworkPolicy: its CRD is not installed"):
            api.apply(cluster_policy_object("x", kind="AdminNetworkPolicy"))
        with pytest.raises(ValueError, match="ClusterNetworkPolicy: its CRD has no version policy.networking"):
            api.serve_versions("ClusterNetworkPolicy", ["v1"])
        with pytest.raises(ValueError, match="Pod: not a custom resource"):
            api.serve_versions("Pod", [])


def test_rbac_refuses_before_routing_what_the_agent_role_does_not_grant_installed_or_not():
    """The role grants reading the cluster policies and nothing near them: no writes, not their
    CRDs, no subresource, not another resource of their group — whether installed or not."""
    with FakeApiServer(rbac=cluster_role_rules(), user=USER, crd_versions={"AdminNetworkPolicy": []}) as api:
        api.apply(cluster_policy_object("deny-all"))
        assert request(api, f"/apis/{GROUP}/v1beta1/{CNPS}")[0] == 200
        watch = f"/apis/{GROUP}/v1beta1/{CNPS}?watch=true&resourceVersion={api.revision}&timeoutSeconds=0"
        assert request(api, watch) == (200, None)
        assert request(api, f"/apis/{GROUP}/v1alpha1/adminnetworkpolicies")[0] == 404  # granted, not installed
        refused = [
            ("POST", f"/apis/{GROUP}/v1beta1/{CNPS}"),
            ("DELETE", f"/apis/{GROUP}/v1beta1/{CNPS}/deny-all"),
            ("PATCH", f"/apis/{GROUP}/v1alpha1/adminnetworkpolicies/x"),
            ("GET", f"/apis/{GROUP}/v1beta1/{CNPS}/deny-all/status"),
            ("GET", f"/apis/{GROUP}/v1alpha1/networkpolicies"),
            ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        ]
        for method, path in refused:
            code, body = request(api, path, method)
            assert (code, body["reason"]) == (403, "Forbidden"), (method, path)
    assert [f.request for f in api.forbidden_requests()] == [f"{m} {p}" for m, p in refused]


def test_deleting_a_crd_deletes_its_objects_which_open_watches_send_before_they_end():
    with FakeApiServer(bookmark_interval=60) as api:
        api.apply_all([cluster_policy_object("a"), cluster_policy_object("b")])
        since = api.revision
        connection = http.client.HTTPConnection(api.host, api.port, timeout=HANG)
        connection.request("GET", f"/apis/{GROUP}/v1alpha2/{CNPS}?watch=true&resourceVersion={since}",
                           headers={"Authorization": f"Bearer {api.token}"})
        response = connection.getresponse()
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(response.read().splitlines()), daemon=True)
        reader.start()
        assert api.wait_watching(1, HANG)
        api.serve_versions("ClusterNetworkPolicy", [])
        reader.join(HANG)
        connection.close()
        assert not reader.is_alive()  # the stream ended, cleanly (read() got the terminating chunk)
        events = [json.loads(line) for line in lines if line]
        assert [(e["type"], e["object"]["metadata"]["name"], e["object"]["apiVersion"]) for e in events] == \
            [("DELETED", "a", f"{GROUP}/v1alpha2"), ("DELETED", "b", f"{GROUP}/v1alpha2")]
        assert api.objects("ClusterNetworkPolicy") == []
        assert request(api, f"/apis/{GROUP}/v1beta1/{CNPS}")[0] == 404


def test_stray_404s_are_answered_for_a_resource_that_is_served_then_it_is_again():
    with FakeApiServer() as api:
        api.apply(cluster_policy_object("a"))
        api.stray_not_found("ClusterNetworkPolicy", 2)
        assert [request(api, f"/apis/{GROUP}/v1beta1/{CNPS}")[0] for _ in range(3)] == [404, 404, 200]
        assert api.objects("ClusterNetworkPolicy") != []
