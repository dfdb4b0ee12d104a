"""The install bundle: the file kept in the repo is exactly `netpol manifests`' default output,
every object is valid against Kubernetes 1.37's OpenAPI schemas (strict: an unknown field is an
error), the ClusterRole grants exactly `netpol.deploy.rbac`'s rules, and the DaemonSet carries
what the agent and the CNI install need and nothing more."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from netpol.cli import main
from netpol.deploy import manifests
from netpol.deploy.manifests import ManifestOptions, render_objects, render_yaml
from netpol.deploy.rbac import cluster_role_rules
from tests.conftest import run_cli

# The newest schemas kubernetes-validate ships (1.37.0 as of its 1.37.0 release, 2026); pinned so
# that upgrading the package never changes silently what the test holds the manifests to.
SCHEMA_VERSION = "1.37.0"
RENDERED = Path(manifests.__file__).with_name("netpol.yaml")


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def pod_spec(objects: list[dict]) -> dict:
    return by_kind(objects)["DaemonSet"]["spec"]["template"]["spec"]


def test_the_file_in_the_repo_is_the_default_output():
    code, out, err = run_cli("manifests")
    assert code == 0, err
    assert out == RENDERED.read_text(), "netpol/deploy/netpol.yaml is stale: netpol manifests -o netpol/deploy/netpol.yaml"


@pytest.mark.parametrize("opts", [ManifestOptions(), ManifestOptions(image="registry.example/netpol@sha256:" + "a" * 64,
                                                                      namespace="kube-system", port=19909,
                                                                      cni_bin_dir="/home/kubernetes/bin")])
def test_every_object_is_valid_against_the_kubernetes_schemas(opts):
    objects = list(yaml.safe_load_all(render_yaml(opts)))
    assert objects == render_objects(opts)
    for obj in objects:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_the_schemas_catch_a_misspelt_field():
    daemonset = by_kind(render_objects())["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrk"):
        kubernetes_validate.validate(daemonset, SCHEMA_VERSION, strict=True)


def test_the_cluster_role_is_the_rbac_module_read_only_and_bound_to_the_agent():
    objects = by_kind(render_objects(ManifestOptions(namespace="np")))
    assert objects["ClusterRole"]["rules"] == cluster_role_rules()
    assert {verb for rule in cluster_role_rules() for verb in rule["verbs"]} == {"get", "list", "watch"}
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "netpol", "namespace": "np"}]
    assert pod_spec(list(objects.values()))["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]


def test_the_cluster_role_reads_every_custom_resource_the_agent_follows_and_no_other():
    """The cluster policies' CRDs: the resources the kube source lists and watches, each in its
    group — not the CustomResourceDefinitions, not a wildcard. (tests/unit/sources/
    test_kube_in_cluster.py holds the agent's real requests to exactly what the role grants.)"""
    from netpol.sources.kube import KINDS

    followed = {(kind.versions[0].split("/")[0], kind.plural) for kind in KINDS if kind.custom}
    granted = {(group, resource) for rule in cluster_role_rules() for group in rule["apiGroups"]
               for resource in rule["resources"]}
    assert followed == {(g, r) for g, r in granted if g not in ("", "networking.k8s.io")}
    assert followed == {("policy.networking.k8s.io", r) for r in
                        ("clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies")}
    assert not any("*" in value for rule in cluster_role_rules() for values in rule.values() for value in values)


def test_the_agent_runs_on_every_node_with_net_admin_only():
    spec = pod_spec(render_objects())
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]  # no key, no effect: every taint
    agent, = spec["containers"]
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert agent["securityContext"]["privileged"] is False
    init, = spec["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert init["image"] == agent["image"]


def test_the_agent_listens_where_the_kubelet_probes_and_names_its_node():
    agent, = pod_spec(render_objects())["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP"}
    assert agent["command"] == ["netpol", "agent", "--node", "$(NODE_NAME)", "--listen", "$(NODE_IP):9909"]
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9909, "protocol": "TCP"}]
    template = by_kind(render_objects())["DaemonSet"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9909",
                                                   "prometheus.io/path": "/metrics"}


def test_resources_and_the_rolling_update():
    daemonset = by_kind(render_objects())["DaemonSet"]
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    agent, = daemonset["spec"]["template"]["spec"]["containers"]
    assert agent["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                  "limits": {"cpu": "1", "memory": "640Mi"}}


def test_the_init_container_installs_into_the_hosts_cni_dirs():
    spec = pod_spec(render_objects(ManifestOptions(cni_bin_dir="/home/kubernetes/bin", cni_conf_dir="/etc/cni/x")))
    init, = spec["initContainers"]
    assert init["command"] == ["netpol", "install-cni", "--node", "$(NODE_NAME)", "--host-root", "/host",
                               "--cni-bin-dir", "/home/kubernetes/bin", "--cni-conf-dir", "/etc/cni/x"]
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: (volumes[m["name"]]["path"], m.get("readOnly", False)) for m in init["volumeMounts"]}
    assert mounts == {"/host/home/kubernetes/bin": ("/home/kubernetes/bin", False),
                      "/host/home/kubernetes/lib/netpol-cni": ("/home/kubernetes/lib/netpol-cni", False),
                      "/host/etc/cni/x": ("/etc/cni/x", False),
                      "/host/usr": ("/usr", True)}
    agent, = spec["containers"]
    assert [m["name"] for m in agent["volumeMounts"]] == ["tmp"]  # nothing of the host's


def test_a_shared_namespace_is_never_rendered_as_ours():
    kinds = [o["kind"] for o in render_objects(ManifestOptions(namespace="kube-system"))]
    assert "Namespace" not in kinds  # `kubectl delete -f` would take kube-system with it
    namespace, = [o for o in render_objects() if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_options_reach_the_bundle(tmp_path):
    out = tmp_path / "bundle.yaml"
    code, _, err = run_cli("manifests", "--image", "r.example/netpol:1", "--namespace", "np", "--port", "9000",
                           "--image-pull-policy", "Always", "-o", str(out))
    assert code == 0, err
    objects = list(yaml.safe_load_all(out.read_text()))
    agent, = pod_spec(objects)["containers"]
    assert (agent["image"], agent["imagePullPolicy"]) == ("r.example/netpol:1", "Always")
    assert agent["command"][-1] == "$(NODE_IP):9000"
    assert {o["metadata"].get("namespace") for o in objects} == {None, "np"}


@pytest.mark.parametrize("argv", [["--namespace", "Kube_System"], ["--port", "0"], ["--cni-bin-dir", "opt/cni/bin"]])
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["manifests", *argv])
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
