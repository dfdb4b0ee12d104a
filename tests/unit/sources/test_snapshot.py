"""A live cluster read once (netpol.sources.snapshot), against the in-process API server through
the unmodified `kubernetes` client.

Property: the snapshot holds exactly the server's objects of the agent's kinds, each with its kind
and apiVersion, read in pages (a continue token that expired lists that kind again, a bounded
number of times); a cluster policy at its first version served, a CRD not installed read as none
with a note (not after one stray 404); invalid objects named as in a file, by `cluster CONTEXT:
RESOURCE`; and whatever stops the read — kubeconfig, context, server, credentials, permission — is
one SourceError naming it. Reading needs `list` only, on the agent's resources."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from netpol.deploy.rbac import audit_role_rules
from netpol.errors import InputError, SourceError
from netpol.sources.in_cluster import DIR_VARIABLE
from netpol.sources.kube import KINDS
from netpol.sources.snapshot import EXPIRED_RESTARTS, ClusterOrigin, read_snapshot
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.pki import make_serving_certificate
from tests.conftest import cluster_policy_object, namespace_object, pod_object, policy_object

PODS = [pod_object(f"web-{i}", f"10.0.0.{i + 1}", app="web") for i in range(7)]
OBJECTS = [namespace_object("shop", team="a"), *PODS, policy_object("deny"),
           cluster_policy_object("guard", priority=5)]


def serve(**options) -> FakeApiServer:
    api = FakeApiServer(**options).start()
    api.apply_all([o for o in OBJECTS if o["kind"] != "ClusterNetworkPolicy" or api.served()["clusternetworkpolicies"]])
    return api


@pytest.fixture
def api():
    server = serve()
    yield server
    server.stop()


def read(api: FakeApiServer, tmp_path, page_size: int = 500, **origin):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    return read_snapshot(ClusterOrigin(kubeconfig, **origin), environ={}, page_size=page_size)


def names(snapshot, kind: str) -> list[str]:
    return sorted(doc["metadata"]["name"] for _, doc in snapshot.documents if doc["kind"] == kind)


def list_requests(api: FakeApiServer, path: str) -> list[dict[str, str]]:
    """The query of every list (not watch) request the server got for `path`."""
    found = []
    for request in api.requests:
        parts = urlsplit(request.removeprefix("GET "))
        if parts.path == path:
            found.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
    return found


def test_every_object_of_every_kind_read_in_pages_with_kind_and_api_version(api, tmp_path):
    snapshot = read(api, tmp_path, page_size=3)
    assert names(snapshot, "Pod") == sorted(p["metadata"]["name"] for p in PODS)
    assert names(snapshot, "Namespace") == ["shop"] and names(snapshot, "NetworkPolicy") == ["deny"]
    assert names(snapshot, "ClusterNetworkPolicy") == ["guard"]
    versions = {doc["kind"]: doc["apiVersion"] for _, doc in snapshot.documents}
    assert versions == {"Namespace": "v1", "Pod": "v1", "NetworkPolicy": "networking.k8s.io/v1",
                        "ClusterNetworkPolicy": "policy.networking.k8s.io/v1beta1"}
    pages = list_requests(api, "/api/v1/pods")
    assert [q.get("limit") for q in pages] == ["3"] * 3 and sum("continue" in q for q in pages) == 2
    assert snapshot.notes == []
    state, _ = snapshot.state()
    assert len(state.pods) == 7 and len(state.cluster_policies) == 1


def test_labels_name_the_cluster_and_the_resource_and_pages_are_kubectls_500(api, tmp_path):
    labels = {label for label, _ in read_snapshot(ClusterOrigin(str(api.kubeconfig(tmp_path / "k"))),
                                                  environ={}).documents}
    assert [q.get("limit") for q in list_requests(api, "/api/v1/pods")] == ["500"]
    assert labels == {"cluster fake: namespaces", "cluster fake: pods", "cluster fake: networkpolicies",
                      "cluster fake: clusternetworkpolicies"}


def test_an_invalid_object_is_named_as_in_a_file_by_its_cluster_and_resource(api, tmp_path):
    bad = pod_object("odd", "10.0.9.1")
    bad["metadata"]["labels"] = {"enabled": True}
    api.apply(bad)
    with pytest.raises(InputError) as caught:
        read(api, tmp_path).state()
    assert [str(p) for p in caught.value.problems] == [
        "cluster fake: pods: Pod shop/odd: metadata.labels.enabled: must be a string, got boolean"]


def test_an_expired_continue_token_lists_that_kind_again_from_the_start(api, tmp_path):
    api.expire_continue_tokens(1)
    snapshot = read(api, tmp_path, page_size=3)
    assert names(snapshot, "Pod") == sorted(p["metadata"]["name"] for p in PODS)  # none twice, none lost
    pods = list_requests(api, "/api/v1/pods")
    assert ["continue" in q for q in pods] == [False, True, False, True, True]  # expired, then again


def test_a_continue_token_expiring_every_time_is_an_error_after_a_few_restarts(api, tmp_path):
    api.expire_continue_tokens(1000)
    with pytest.raises(SourceError, match=r"^cluster fake: cannot list pods: Pod: the list's continue token "
                                          rf"expired {EXPIRED_RESTARTS + 1} times in a row"):
        read(api, tmp_path, page_size=3)


def test_cluster_network_policies_are_read_at_v1alpha2_when_v1beta1_is_not_served(tmp_path):
    api = serve(crd_versions={"ClusterNetworkPolicy": ["v1alpha2"]})
    try:
        snapshot = read(api, tmp_path)
    finally:
        api.stop()
    [policy] = [doc for _, doc in snapshot.documents if doc["kind"] == "ClusterNetworkPolicy"]
    assert policy["apiVersion"] == "policy.networking.k8s.io/v1alpha2"
    assert len(snapshot.state()[0].cluster_policies) == 1 and snapshot.notes == []


def test_kinds_whose_crds_are_not_installed_are_read_as_none_with_a_note(tmp_path):
    api = serve(crd_versions={"ClusterNetworkPolicy": [], "AdminNetworkPolicy": [],
                              "BaselineAdminNetworkPolicy": []})
    try:
        snapshot = read(api, tmp_path)
    finally:
        api.stop()
    assert names(snapshot, "Pod") and not snapshot.state()[0].cluster_policies
    assert snapshot.notes == [
        "cluster fake: read as none, not served (their CRDs are not installed): ClusterNetworkPolicy "
        "(policy.networking.k8s.io v1beta1, v1alpha2), AdminNetworkPolicy (policy.networking.k8s.io "
        "v1alpha1), BaselineAdminNetworkPolicy (policy.networking.k8s.io v1alpha1)"]


def test_one_stray_404_does_not_lose_the_cluster_policies(api, tmp_path):
    api.stray_not_found("ClusterNetworkPolicy", 2)  # both versions, once: the confirming round finds it
    snapshot = read(api, tmp_path)
    assert names(snapshot, "ClusterNetworkPolicy") == ["guard"] and snapshot.notes == []


def test_list_alone_on_the_agents_resources_is_enough(tmp_path):
    list_only = audit_role_rules()
    api = serve(rbac=list_only)
    try:
        snapshot = read(api, tmp_path)
        assert api.forbidden_requests() == []
    finally:
        api.stop()
    assert len(snapshot.documents) == len(OBJECTS)
    assert {doc["kind"] for _, doc in snapshot.documents} <= {k.kind for k in KINDS}


def test_a_missing_permission_names_the_verb_and_the_resource(tmp_path):
    without_policies = [rule for rule in audit_role_rules()
                        if "networkpolicies" not in rule["resources"]]
    api = serve(rbac=without_policies)
    try:
        with pytest.raises(SourceError) as caught:
            read(api, tmp_path)
    finally:
        api.stop()
    assert str(caught.value) == (
        'cluster fake: cannot list networkpolicies: 403 Forbidden: networkpolicies.networking.k8s.io is '
        'forbidden: User "system:serviceaccount:netpol:netpol" cannot list resource "networkpolicies" in '
        'API group "networking.k8s.io" at the cluster scope (the role needs list on resource '
        '"networkpolicies" in API group "networking.k8s.io")')


def test_refused_credentials_are_said_in_one_line(api, tmp_path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.token = "another"
    with pytest.raises(SourceError, match=r"^cluster fake: http://127\.0\.0\.1:\d+ refused the credentials "
                                          r"\(401 Unauthorized\) listing namespaces: "):
        read_snapshot(ClusterOrigin(kubeconfig), environ={})


def test_a_server_that_does_not_answer_is_said_in_one_line(api, tmp_path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    url = api.url
    api.stop()
    with pytest.raises(SourceError) as caught:
        read_snapshot(ClusterOrigin(kubeconfig), environ={})
    assert str(caught.value) == f"cluster fake: cannot reach the API server at {url}: connection refused"


def two_contexts(first: FakeApiServer, second: FakeApiServer, path) -> str:
    """One kubeconfig with a context for each server (`first` current)."""
    merged: dict = {"apiVersion": "v1", "kind": "Config", "current-context": "first",
                    "clusters": [], "users": [], "contexts": []}
    for name, api in (("first", first), ("second", second)):
        config = json.loads(api.kubeconfig(path.with_suffix(f".{name}")).read_text())
        merged["clusters"].append({"name": name, "cluster": config["clusters"][0]["cluster"]})
        merged["users"].append({"name": name, "user": config["users"][0]["user"]})
        merged["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    path.write_text(json.dumps(merged))
    return str(path)


def test_the_context_picks_the_cluster(api, tmp_path):
    other = FakeApiServer().start()
    try:
        other.apply_all([namespace_object("elsewhere")])
        kubeconfig = two_contexts(api, other, tmp_path / "kubeconfig")
        second = read_snapshot(ClusterOrigin(kubeconfig, "second"), environ={})
        first = read_snapshot(ClusterOrigin(kubeconfig), environ={})
    finally:
        other.stop()
    assert names(second, "Namespace") == ["elsewhere"] and not names(second, "Pod")
    assert names(first, "Namespace") == ["shop"] and second.name == "cluster second"
    assert first.name == "cluster first"


def test_kubeconfig_defaults_to_the_kubeconfig_variable(api, tmp_path):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    missing = str(tmp_path / "missing")
    snapshot = read_snapshot(ClusterOrigin(context="fake"), environ={"KUBECONFIG": f"{missing}:{kubeconfig}"})
    assert names(snapshot, "Namespace") == ["shop"]


@pytest.mark.parametrize(("origin", "environ", "message"), [
    (ClusterOrigin("{tmp}/kubeconfig", "nope"), {}, "kubeconfig {tmp}/kubeconfig: no context 'nope' (it has fake)"),
    (ClusterOrigin("{tmp}/absent"), {}, "kubeconfig {tmp}/absent: no such file"),
    (ClusterOrigin(context="fake"), {"KUBECONFIG": "{tmp}/absent"},
     "kubeconfig {tmp}/absent (from $KUBECONFIG): no such file"),
    (ClusterOrigin("{tmp}/list"), {},
     "kubeconfig {tmp}/list: not a kubeconfig (a mapping of clusters, contexts and users, each a list of "
     "named entries)"),
    (ClusterOrigin("{tmp}/nocurrent"), {}, "kubeconfig {tmp}/nocurrent: no current-context: name one with "
                                           "--context (it has fake)"),
    (ClusterOrigin("{tmp}/broken"), {}, "kubeconfig {tmp}/broken: invalid YAML: "),
    (ClusterOrigin(in_cluster=True), {}, "--in-cluster: KUBERNETES_SERVICE_HOST='', KUBERNETES_SERVICE_PORT='': "
                                         "both are needed (outside a pod, pass --kubeconfig)"),
])
def test_an_unusable_kubeconfig_or_context_is_said_in_one_line(api, tmp_path, origin, environ, message):
    config = json.loads(api.kubeconfig(tmp_path / "kubeconfig").read_text())
    (tmp_path / "list").write_text("- 1\n")
    (tmp_path / "nocurrent").write_text(json.dumps({k: v for k, v in config.items() if k != "current-context"}))
    (tmp_path / "broken").write_text("clusters: [\n")
    tmp = str(tmp_path)
    origin = ClusterOrigin(origin.kubeconfig and origin.kubeconfig.format(tmp=tmp), origin.context,
                           origin.in_cluster)
    with pytest.raises(SourceError) as caught:
        read_snapshot(origin, environ={k: v.format(tmp=tmp) for k, v in environ.items()})
    assert str(caught.value).startswith(message.format(tmp=tmp))
    assert "\n" not in str(caught.value)


def test_in_cluster_reads_with_the_pods_service_account_over_tls(tmp_path_factory, tmp_path):
    certs = make_serving_certificate(tmp_path_factory.mktemp("pki"))
    api = serve(tls=certs, rbac=audit_role_rules())
    try:
        directory = api.service_account(tmp_path / "serviceaccount")
        environ = {"KUBERNETES_SERVICE_HOST": api.host, "KUBERNETES_SERVICE_PORT": str(api.port),
                   DIR_VARIABLE: str(directory)}
        snapshot = read_snapshot(ClusterOrigin(in_cluster=True), environ=environ)
        assert api.forbidden_requests() == [] and api.unauthorized_requests() == []
    finally:
        api.stop()
    assert snapshot.name == "cluster (in-cluster)" and names(snapshot, "Pod")
    assert len(snapshot.documents) == len(OBJECTS)

