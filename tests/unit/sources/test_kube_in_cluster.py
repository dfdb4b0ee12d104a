"""The kube source as it runs in a pod: no kubeconfig, KUBERNETES_SERVICE_HOST/PORT and the
service account's token and CA — projected by the test server into a tmp dir the way the kubelet
does, found through NETPOL_SERVICE_ACCOUNT_DIR — against the in-process API server over HTTPS
with a CA made in the test, enforcing the agent's ClusterRole (netpol.deploy.rbac).

Property: the source lists and watches every kind — exactly the resources its ClusterRole
grants, no request outside it; a rotated token is used from the next request on, and a request refused with an
expired one is retried with whatever the file holds then, without a restart; whatever is wrong —
a file, the CA, a permission — is said in one line naming it, never a traceback."""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from netpol.agent.runner import AgentOptions, _source
from netpol.errors import AgentError, SourceError
from netpol.sources.in_cluster import DIR_VARIABLE, SERVICE_ACCOUNT_DIR, join_host_port
from netpol.sources.kube import KINDS as WATCHED
from netpol.sources.kube import new_api_client
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.authz import request_attributes
from netpol.testing.pki import make_serving_certificate
from netpol.testing.projected import project_files
from tests.conftest import (
    HANG,
    manifest_cluster_role,
    namespace_object,
    pod_object,
    policy_object,
    wait_until,
)
from tests.unit.sources.follow import KINDS, Follower

USER, MANIFEST_RULES = manifest_cluster_role()  # what the rendered bundle grants the agent
GRANTED = {(group, resource) for rule in MANIFEST_RULES for group in rule.get("apiGroups", ())
           for resource in rule.get("resources", ())}


def node_object(name: str) -> dict:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
            "spec": {"podCIDRs": ["10.0.0.0/24"]}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_serving_certificate(tmp_path_factory.mktemp("pki"))


def serve(certs, rules=None, host="127.0.0.1") -> FakeApiServer:
    """HTTPS, enforcing `rules` (default: the agent's ClusterRole), one object of every kind."""
    api = FakeApiServer(bookmark_interval=0.2, tls=certs, user=USER,
                        rbac=MANIFEST_RULES if rules is None else rules).start(host)
    api.apply_all([namespace_object("shop"), node_object("node-a"), pod_object("web-1", "10.0.0.1", app="web"),
                   policy_object("deny")])
    return api


@pytest.fixture
def api(certs):
    server = serve(certs)
    yield server
    server.stop()


@pytest.fixture
def in_pod(monkeypatch, tmp_path):
    """Make this process look like a pod of `api`'s cluster; returns the service-account dir."""
    def enter(api: FakeApiServer) -> Path:
        directory = api.service_account(tmp_path / "serviceaccount")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", api.host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        monkeypatch.setenv(DIR_VARIABLE, str(directory))
        return directory
    return enter


def asked(api: FakeApiServer) -> set[tuple[str, str, str]]:
    """(verb, API group, resource) of every request the server got, as its authorizer read them."""
    found = set()
    for request in api.requests:
        method, _, target = request.partition(" ")
        path, _, query = target.partition("?")
        attributes = request_attributes(method, path, query)
        found.add((attributes.verb, attributes.api_group, attributes.resource))
    return found


def test_in_a_pod_it_lists_and_watches_every_kind_over_tls_inside_its_cluster_role(api, in_pod, tmp_path):
    in_pod(api)
    client = new_api_client()
    assert client.configuration.host == f"https://127.0.0.1:{api.port}"
    with Follower(api, tmp_path, client=client) as f:
        f.converge()
        assert api.wait_watching(len(KINDS), HANG)
        api.apply(pod_object("web-2", "10.0.0.2", app="web"))
        api.apply(node_object("node-b"))
        f.converge()
    assert api.forbidden_requests() == [] and api.unauthorized_requests() == []
    # what the agent needs is what it is granted: every resource, nothing else
    assert asked(api) == {(verb, group, r) for verb in ("list", "watch") for group, r in GRANTED}
    assert f.source.stats.last_errors == {}


def test_a_rotated_token_is_sent_from_the_next_request_on_without_a_restart(api, in_pod, tmp_path):
    directory = in_pod(api)
    with Follower(api, tmp_path, client=new_api_client()) as f:
        f.converge()
        assert api.wait_watching(len(KINDS), HANG)  # every thread is reading a stream: none is mid-request
        old = api.token
        new = api.rotate_token()
        assert (directory / "token").read_text() == new != old
        assert _status_with(api, old) == 401  # the old token is refused from now on
        served = len(api.requests)
        api.drop_watches()  # every kind must ask again, with whatever token it holds
        api.apply(pod_object("after-rotation", "10.0.0.9"))
        f.converge()
        assert ("shop", "after-rotation") in f.mirror.objects["Pod"]
    assert len(api.requests) > served + 1
    assert api.unauthorized_requests() == ["GET /api/v1/nodes"]  # only the probe with the old token


def test_a_request_refused_with_an_expired_token_is_retried_with_the_file_the_kubelet_rewrote(
        api, in_pod, tmp_path):
    directory = in_pod(api)
    with Follower(api, tmp_path, client=new_api_client()) as f:
        f.converge()
        assert api.wait_watching(len(KINDS), HANG)
        api.rotate_token(project=False)  # the old token expires before the kubelet rewrote the file
        api.drop_watches()
        wait_until(lambda: all("API error 401" in f.source.stats.last_errors.get(k, "") for k in KINDS),
                   "every kind refused with the expired token")
        api.service_account(directory)  # the kubelet catches up
        api.apply(pod_object("after-rotation", "10.0.0.9"))
        f.converge()
        assert ("shop", "after-rotation") in f.mirror.objects["Pod"]
        assert all(t.is_alive() for t in f.source._threads)
    assert api.forbidden_requests() == []


def _status_with(api: FakeApiServer, token: str) -> int:
    assert api.tls is not None
    request = urllib.request.Request(api.url + "/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    context = ssl.create_default_context(cafile=str(api.tls.ca))
    try:
        with urllib.request.urlopen(request, timeout=HANG, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_cluster_role_is_enforced_a_missing_rule_is_a_403_reported_naming_the_permission(
        certs, in_pod, tmp_path, caplog):
    without_nodes = [{**rule, "resources": [r for r in rule["resources"] if r != "nodes"]}
                     for rule in MANIFEST_RULES]
    api = serve(certs, without_nodes)
    in_pod(api)
    caplog.set_level(logging.WARNING, "netpol.sources.kube")
    try:
        with Follower(api, tmp_path, client=new_api_client()) as f:
            wait_until(lambda: "Node" in f.source.stats.last_errors, "the Node list refused")
            wait_until(lambda: f.drain(0.01) or f.mirror.listed == set(KINDS) - {"Node"},
                       "the other kinds listed")
    finally:
        api.stop()
    expected = ('API error 403 Forbidden: nodes is forbidden: User "system:serviceaccount:netpol:netpol" '
                'cannot list resource "nodes" in API group "" at the cluster scope')
    assert f.source.stats.last_errors == {"Node": expected}
    assert any(expected in r.getMessage() for r in caplog.records)
    assert {(d.attributes.verb, d.attributes.resource) for d in api.forbidden_requests()} == {("list", "nodes")}


def test_a_cluster_role_without_the_cluster_policies_is_a_403_never_taken_for_a_crd_not_installed(
        certs, in_pod, tmp_path):
    """An agent upgraded without its new ClusterRole must not enforce as if there were no cluster
    policies (their Deny rules would be dropped): the kinds stay unlisted, the 403 says which
    permission is missing, and the agent never starts compiling from that partial view."""
    custom = {"ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"}
    api = serve(certs, [r for r in MANIFEST_RULES if "policy.networking.k8s.io" not in r["apiGroups"]])
    in_pod(api)
    try:
        with Follower(api, tmp_path, client=new_api_client(), absent_recheck_initial=0.01,
                      absent_recheck_cap=0.02) as f:
            wait_until(lambda: custom <= set(f.source.stats.last_errors), "the cluster policies refused")
            wait_until(lambda: f.drain(0.01) or f.mirror.listed == set(KINDS) - custom, "the other kinds listed")
            refused = len(api.forbidden_requests())
            wait_until(lambda: len(api.forbidden_requests()) > refused + 3, "the lists retried, still refused")
            f.drain(0.01)
    finally:
        api.stop()
    assert f.mirror.listed == set(KINDS) - custom and f.source.stats.not_served == {}
    assert f.source.stats.last_errors["ClusterNetworkPolicy"] == (
        'API error 403 Forbidden: clusternetworkpolicies.policy.networking.k8s.io is forbidden: User '
        '"system:serviceaccount:netpol:netpol" cannot list resource "clusternetworkpolicies" in API group '
        '"policy.networking.k8s.io" at the cluster scope')


@pytest.mark.parametrize("case", ["another CA", "no SAN for the address"])
def test_a_server_certificate_the_ca_does_not_vouch_for_is_a_clear_error(case, certs, in_pod, tmp_path):
    if case == "another CA":
        trusted, served, why = make_serving_certificate(tmp_path / "other").ca, certs, \
            "certificate verify failed: unable to get local issuer certificate"
    else:
        served = make_serving_certificate(tmp_path / "elsewhere", addresses=["10.9.9.9"])
        trusted, why = served.ca, "certificate verify failed: IP address mismatch, certificate is not valid for " \
                                  "'127.0.0.1'."
    api = serve(served)
    url = api.url
    try:
        directory = in_pod(api)
        project_files(directory, {"token": api.token.encode(), "ca.crt": trusted.read_bytes()})
        with Follower(api, tmp_path, client=new_api_client(), kinds=WATCHED[:1]) as f:
            wait_until(lambda: "Namespace" in f.source.stats.last_errors, "the TLS failure reported")
    finally:
        api.stop()
    assert f.source.stats.last_errors["Namespace"] == (f"TLS to {url}: {why} (trusting the CA in "
                                                       f"{directory}/ca.crt)")
    assert api.requests == [] and f.mirror.listed == set()


@pytest.mark.parametrize(("case", "files", "message"), [
    ("no token", {"ca.crt": None}, "service-account token {dir}/token: No such file or directory"),
    ("empty token", {"token": b"\n", "ca.crt": None}, "service-account token {dir}/token: the file is empty"),
    ("no CA", {"token": b"t"}, "service-account CA {dir}/ca.crt: No such file or directory"),
    ("CA not PEM", {"token": b"t", "ca.crt": b"-----BEGIN NONSENSE-----\n"},
     "service-account CA {dir}/ca.crt: no PEM certificate in it"),
])
def test_unusable_service_account_files_are_named_and_stop_the_agent_at_start(
        case, files, message, certs, monkeypatch, tmp_path):
    directory = tmp_path / "serviceaccount"
    project_files(directory, {name: content if content is not None else certs.ca.read_bytes()
                              for name, content in files.items()})
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv(DIR_VARIABLE, str(directory))
    with pytest.raises(SourceError) as raised:
        new_api_client()
    assert str(raised.value) == message.format(dir=directory)
    with pytest.raises(AgentError) as stopped:  # what `netpol agent` exits 1 with
        _source(AgentOptions(node="node-a"), agent=None, health=None)
    assert str(stopped.value) == f"in-cluster config: {raised.value}"


def test_without_the_variable_the_files_are_the_kubelets_mount_and_the_port_is_required(monkeypatch):
    monkeypatch.delenv(DIR_VARIABLE, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(SourceError, match="KUBERNETES_SERVICE_HOST='10.96.0.1', KUBERNETES_SERVICE_PORT='': both"):
        new_api_client()
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    if Path(SERVICE_ACCOUNT_DIR, "token").exists():
        pytest.skip("this machine has a service-account token (a pod?)")
    with pytest.raises(SourceError, match=f"^service-account token {SERVICE_ACCOUNT_DIR}/token: "):
        new_api_client()


def test_an_ipv6_service_host_is_dialled_in_brackets(certs, in_pod, tmp_path):
    assert join_host_port("fd00::1", "443") == "[fd00::1]:443"
    assert join_host_port("10.96.0.1", "443") == "10.96.0.1:443"
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    api = serve(certs, host="::1")  # the default certificate names ::1 too
    try:
        in_pod(api)
        client = new_api_client()
        assert client.configuration.host == f"https://[::1]:{api.port}"
        with Follower(api, tmp_path, client=client) as f:
            f.converge()
    finally:
        api.stop()
    assert api.forbidden_requests() == []
