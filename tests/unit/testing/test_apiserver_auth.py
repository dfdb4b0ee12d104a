"""FakeApiServer's TLS, tokens and RBAC answer as the real API server does: requests read into
(verb, group, resource, namespace, name) as apiserver's RequestInfoFactory reads them, rules
matched as rbac.RuleAllows matches them, refusals worded as apiserver words them, tokens that
stop working when rotated, and service-account files replaced the way the kubelet replaces
them. The kube source's tests rely on each of these."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest

from netpol.deploy.rbac import cluster_role_rules
from netpol.sources.kube import KINDS, KubeSource, new_api_client
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.authz import (
    RequestAttributes,
    bound_cluster_role_rules,
    forbidden_status,
    request_attributes,
    rule_allows,
)
from netpol.testing.pki import make_serving_certificate
from netpol.testing.projected import project_files
from tests.conftest import HANG, namespace_object, wait_until

USER = "system:serviceaccount:netpol:netpol"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_serving_certificate(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def api(certs):
    with FakeApiServer(tls=certs, rbac=cluster_role_rules(), user=USER) as server:
        server.apply({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-a"}})
        yield server


def fetch(api: FakeApiServer, path: str, method: str = "GET", token: str | None = None,
          scheme: str = "Bearer") -> tuple[int, Any]:
    """(status, JSON body) of one request over HTTPS, trusting the server's CA."""
    assert api.tls is not None
    headers = {"Authorization": f"{scheme} {api.token if token is None else token}"}
    request = urllib.request.Request(api.url + path, method=method, headers=headers,
                                     data=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    context = ssl.create_default_context(cafile=str(api.tls.ca))
    try:
        with urllib.request.urlopen(request, timeout=HANG, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(("method", "target", "expected"), [
    ("GET", "/api/v1/pods", ("list", "", "pods", "", "")),
    ("GET", "/api/v1/pods?watch=true&resourceVersion=5", ("watch", "", "pods", "", "")),
    ("GET", "/api/v1/pods?watch=1", ("watch", "", "pods", "", "")),
    ("GET", "/api/v1/watch/pods", ("watch", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces", ("list", "", "namespaces", "", "")),
    ("GET", "/api/v1/namespaces/shop", ("get", "", "namespaces", "shop", "shop")),
    ("GET", "/api/v1/namespaces/shop/pods", ("list", "", "pods", "shop", "")),
    ("GET", "/api/v1/namespaces/shop/pods/web", ("get", "", "pods", "shop", "web")),
    ("GET", "/api/v1/namespaces/shop/pods?fieldSelector=metadata.name%3Dweb", ("list", "", "pods", "shop", "web")),
    ("GET", "/api/v1/nodes/node-a", ("get", "", "nodes", "", "node-a")),
    ("GET", "/apis/networking.k8s.io/v1/networkpolicies", ("list", "networking.k8s.io", "networkpolicies", "", "")),
    ("GET", "/apis/policy.networking.k8s.io/v1beta1/clusternetworkpolicies?watch=true",
     ("watch", "policy.networking.k8s.io", "clusternetworkpolicies", "", "")),
    ("GET", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/deny",
     ("get", "policy.networking.k8s.io", "clusternetworkpolicies", "", "deny")),
    ("POST", "/api/v1/namespaces/shop/pods", ("create", "", "pods", "shop", "")),
    ("DELETE", "/api/v1/namespaces/shop/pods", ("deletecollection", "", "pods", "shop", "")),
    ("DELETE", "/api/v1/namespaces/shop/pods/web", ("delete", "", "pods", "shop", "web")),
])
def test_requests_are_read_into_attributes_as_the_api_server_reads_them(method, target, expected):
    path, _, query = target.partition("?")
    a = request_attributes(method, path, query)
    assert (a.verb, a.api_group, a.resource, a.namespace, a.name) == expected


def test_subresources_and_non_resource_paths():
    status = request_attributes("PUT", "/api/v1/namespaces/shop/status")  # a namespace's own subresource
    assert (status.resource, status.name, status.subresource) == ("namespaces", "shop", "status")
    log = request_attributes("GET", "/api/v1/namespaces/shop/pods/web/log")
    assert (log.verb, log.resource, log.name, log.subresource) == ("get", "pods", "web", "log")
    for path in ("/version", "/api", "/api/v1", "/apis/networking.k8s.io/v1", "/metrics"):
        assert request_attributes("GET", path) == RequestAttributes("get", path)


def test_rules_match_verbs_groups_resources_names_subresources_and_urls():
    pods = request_attributes("GET", "/api/v1/pods")
    log = request_attributes("GET", "/api/v1/namespaces/shop/pods/web/log")
    assert rule_allows({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}, pods)
    assert rule_allows({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, pods)
    assert not rule_allows({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, pods)
    assert not rule_allows({"verbs": ["list"], "apiGroups": ["apps"], "resources": ["pods"]}, pods)
    assert not rule_allows({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, log)
    assert rule_allows({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, log)
    assert rule_allows({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}, log)
    named = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["db"]}
    assert not rule_allows(named, log)
    version = request_attributes("GET", "/version")
    assert rule_allows({"verbs": ["get"], "nonResourceURLs": ["/version"]}, version)
    assert rule_allows({"verbs": ["get"], "nonResourceURLs": ["/ver*"]}, version)
    assert not rule_allows({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}, version)


@pytest.mark.parametrize(("method", "path", "message"), [
    ("GET", "/api/v1/pods", 'pods is forbidden: User "u" cannot list resource "pods" in API group "" at the '
                            'cluster scope'),
    ("GET", "/api/v1/namespaces/shop/pods/web", 'pods "web" is forbidden: User "u" cannot get resource "pods" in '
                                                'API group "" in the namespace "shop"'),
    ("GET", "/apis/networking.k8s.io/v1/networkpolicies?watch=true",
     'networkpolicies.networking.k8s.io is forbidden: User "u" cannot watch resource "networkpolicies" in API '
     'group "networking.k8s.io" at the cluster scope'),
    ("GET", "/api/v1/namespaces/shop/pods/web/log", 'pods "web" is forbidden: User "u" cannot get resource '
                                                    '"pods/log" in API group "" in the namespace "shop"'),
    ("GET", "/metrics", 'forbidden: User "u" cannot get path "/metrics"'),
])
def test_refusals_are_worded_as_the_api_server_words_them(method, path, message):
    target, _, query = path.partition("?")
    status = forbidden_status("u", request_attributes(method, target, query))
    assert status["message"] == message
    assert (status["kind"], status["reason"], status["code"], status["status"]) == ("Status", "Forbidden", 403,
                                                                                   "Failure")


def test_the_rules_bound_to_a_service_account_are_read_from_an_install_bundle():
    bundle = [
        {"kind": "ClusterRole", "metadata": {"name": "netpol"}, "rules": cluster_role_rules()},
        {"kind": "ClusterRole", "metadata": {"name": "admin"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"],
                                                                          "resources": ["*"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "netpol"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "netpol"},
         "subjects": [{"kind": "ServiceAccount", "name": "netpol", "namespace": "netpol"}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "someone-else"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "netpol"}]},
    ]
    assert bound_cluster_role_rules(bundle, USER) == cluster_role_rules()


def test_the_server_refuses_what_the_cluster_role_does_not_grant_before_routing(api):
    assert fetch(api, "/api/v1/nodes/node-a")[1]["kind"] == "Node"  # granted: get nodes
    code, body = fetch(api, "/api/v1/nodes/ghost")
    assert (code, body["message"], body["details"]) == (404, 'nodes "ghost" not found',
                                                        {"name": "ghost", "kind": "nodes"})
    code, body = fetch(api, "/api/v1/namespaces/kube-system/secrets")  # not a kind it serves: still 403
    assert (code, body["reason"], body["details"]) == (403, "Forbidden", {"kind": "secrets"})
    assert fetch(api, "/api/v1/namespaces/shop/pods", "POST")[0] == 403  # the agent never writes
    assert fetch(api, "/version")[0] == 404  # discovery: every authenticated user may ask (not served)
    assert [str(f) for f in api.forbidden_requests()] == [
        'GET /api/v1/namespaces/kube-system/secrets: secrets is forbidden: User "system:serviceaccount:netpol:netpol" '
        'cannot list resource "secrets" in API group "" in the namespace "kube-system"',
        'POST /api/v1/namespaces/shop/pods: pods is forbidden: User "system:serviceaccount:netpol:netpol" '
        'cannot create resource "pods" in API group "" in the namespace "shop"']


def test_without_rbac_everything_authenticated_is_allowed_and_writes_are_not_served(certs):
    with FakeApiServer(tls=certs) as api:
        assert fetch(api, "/api/v1/namespaces/kube-system/secrets")[0] == 404
        assert fetch(api, "/api/v1/namespaces/shop/pods", "POST")[0] == 405
        assert api.forbidden_requests() == []


def test_tokens_rotate_the_old_one_is_refused_unless_kept_until_expired(api, tmp_path):
    first = api.token
    assert fetch(api, "/api/v1/nodes", scheme="bearer")[0] == 200  # the scheme is case-insensitive
    assert fetch(api, "/api/v1/nodes", token="forged")[0] == 401
    second = api.rotate_token(keep_old=True)  # the kubelet rotates at 80% of a token's life
    assert fetch(api, "/api/v1/nodes", token=first)[0] == fetch(api, "/api/v1/nodes", token=second)[0] == 200
    api.expire_tokens()
    code, body = fetch(api, "/api/v1/nodes", token=first)
    assert (code, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    third = api.rotate_token()
    assert fetch(api, "/api/v1/nodes", token=second)[0] == 401 and fetch(api, "/api/v1/nodes", token=third)[0] == 200
    assert api.unauthorized_requests() == ["GET /api/v1/nodes"] * 3


def test_service_account_files_are_replaced_in_one_step_as_the_kubelet_does(api, tmp_path):
    directory = api.service_account(tmp_path / "sa")
    assert os.readlink(directory / "token") == "..data/token"
    before = os.readlink(directory / "..data")
    assert (directory / "ca.crt").read_bytes() == api.tls.ca.read_bytes()
    assert (directory / "namespace").read_text() == "netpol"
    new = api.rotate_token()
    assert (directory / "token").read_text() == new
    assert os.readlink(directory / "..data") != before and not (directory / before).exists()
    project_files(directory, {"token": b"x", "ca.crt": b"y", "namespace": b"z"})
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("..")) == ["ca.crt", "namespace",
                                                                                          "token"]


def test_a_kubeconfig_carries_the_ca_over_tls(api, tmp_path):
    api.apply(namespace_object("shop"))
    listed: list = []
    source = KubeSource(new_api_client(str(api.kubeconfig(tmp_path / "kubeconfig"))), listed.append,
                        kinds=KINDS[:1]).start()
    try:
        wait_until(lambda: listed, "the Namespace list")
    finally:
        source.stop()
    assert api.url.startswith("https://") and api.forbidden_requests() == []
