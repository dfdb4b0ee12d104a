"""The lab's kubelet (`netpol.lab.daemonset`): the rendered bundle's DaemonSet becomes podman runs
with exactly its command, env, mounts, capabilities and limits — read from the manifest, each
`$(VAR)` expanded as the kubelet does — a writable hostPath lands in the node's own directory, a
read-only one on the machine's real path (never created), and whatever the lab does not model
is refused naming the field. No kernel, no podman: argument lists only."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from netpol.deploy.manifests import ManifestOptions, render_objects
from netpol.errors import LabError
from netpol.lab import daemonset
from netpol.lab.daemonset import (
    SERVICE_ACCOUNT_MOUNT,
    Bundle,
    DaemonPod,
    NodeHost,
    container_spec,
    expand,
    parse_bundle,
    readiness,
    rendered_bundle,
    resources,
)
from netpol.lab.podman import PODMAN, RUN_FLAGS, Mount, podman_run_args

IMAGE = "registry.example/netpol:test"


@pytest.fixture
def pod(tmp_path) -> DaemonPod:
    node = NodeHost("node-a", "192.168.50.10", "np-abcdef-n0", tmp_path / "node-a" / "root")
    return DaemonPod("netpol-x1y2z", node, tmp_path / "node-a" / "pods" / "netpol-x1y2z", "192.168.254.1", 6443)


def containers(bundle: Bundle) -> list[tuple[str, dict]]:
    spec = bundle.pod_spec
    return [*((f"spec.template.spec.initContainers[{i}]", c) for i, c in enumerate(spec["initContainers"])),
            *((f"spec.template.spec.containers[{i}]", c) for i, c in enumerate(spec["containers"]))]


def test_the_bundle_is_what_netpol_manifests_prints_and_names_the_pods_account_and_its_rules():
    bundle = rendered_bundle(IMAGE)
    assert list(bundle.objects) == render_objects(ManifestOptions(image=IMAGE))
    assert bundle.user == "system:serviceaccount:netpol:netpol"
    assert bundle.cluster_role_rules() == next(o["rules"] for o in bundle.objects if o["kind"] == "ClusterRole")
    assert bundle.grace == 30  # the manifest leaves terminationGracePeriodSeconds at Kubernetes' default
    assert readiness(bundle) == ("/readyz", 9909, 5.0)  # the port named `metrics`, resolved


def test_every_container_runs_with_exactly_its_specs_command_env_mounts_capabilities_and_limits(pod):
    bundle = rendered_bundle(IMAGE)
    for where, container in containers(bundle):
        spec = container_spec(bundle, container, where, pod)
        env = {"NODE_NAME": "node-a", "NODE_IP": "192.168.50.10"}
        assert spec.entrypoint == tuple(expand(word, env) for word in container["command"])
        assert "$(" not in " ".join(spec.entrypoint or ()) and spec.command == ()
        assert spec.env["NODE_NAME"] == "node-a" and spec.env["KUBERNETES_SERVICE_HOST"] == "192.168.254.1"
        assert spec.env["KUBERNETES_SERVICE_PORT"] == "6443"
        context = container["securityContext"]
        assert spec.cap_drop == tuple(context["capabilities"]["drop"])
        assert spec.cap_add == tuple(context["capabilities"].get("add", ()))
        assert spec.read_only == context["readOnlyRootFilesystem"] and spec.no_new_privileges
        assert spec.user == "0" and not spec.privileged
        assert spec.netns == "/run/netns/np-abcdef-n0"  # hostNetwork: the node's namespace, nothing else
        assert spec.pull == "missing"  # IfNotPresent
        assert [m.target for m in spec.mounts] == [*(m["mountPath"] for m in container["volumeMounts"]),
                                                  SERVICE_ACCOUNT_MOUNT]
        assert spec.mounts[-1] == Mount(str(pod.service_account_dir), SERVICE_ACCOUNT_MOUNT, read_only=True)
    agent = container_spec(bundle, bundle.pod_spec["containers"][0], "agent", pod)
    assert agent.entrypoint == ("netpol", "agent", "--node", "node-a", "--listen", "192.168.50.10:9909")
    assert agent.cap_add == ("NET_ADMIN",) and agent.cap_drop == ("ALL",)
    assert agent.mounts[0] == Mount(str(pod.volume_dir("tmp")), "/tmp")  # emptyDir: the pod's own
    assert (agent.resources.cpu_shares, agent.resources.cpus, agent.resources.memory_bytes) == (102, 1, 640 << 20)


def test_a_writable_host_path_is_the_nodes_own_and_a_read_only_one_the_machines(pod):
    bundle = rendered_bundle(IMAGE)
    init = bundle.pod_spec["initContainers"][0]
    mounts = {m.target: m for m in container_spec(bundle, init, "init", pod).mounts}
    for node_path in ("/opt/cni/bin", "/opt/cni/lib/netpol-cni", "/etc/cni/net.d"):
        mount = mounts[f"/host{node_path}"]
        assert mount.source == str(pod.node.root / node_path.lstrip("/")) and not mount.read_only
        assert Path(mount.source).is_dir()  # DirectoryOrCreate, made under the node's root
    assert mounts["/host/usr"] == Mount("/usr", "/host/usr", read_only=True)


def test_the_podman_arguments_carry_the_machines_flags_once_and_the_spec_as_given(pod):
    bundle = rendered_bundle(IMAGE)
    agent = bundle.pod_spec["containers"][0]
    argv = podman_run_args(IMAGE, container_spec(bundle, agent, "agent", pod), "np-abcdef-node-a-agent")
    assert argv[:len(PODMAN)] == list(PODMAN) and argv.count(RUN_FLAGS[1]) == 1
    assert argv[-1] == IMAGE  # no args: the entrypoint alone, the image's CMD dropped
    entrypoint = next(a for a in argv if a.startswith("--entrypoint="))
    assert json.loads(entrypoint.split("=", 1)[1]) == ["netpol", "agent", "--node", "node-a", "--listen",
                                                        "192.168.50.10:9909"]
    network = argv.index("--network")
    assert argv[network:network + 2] == ["--network", "ns:/run/netns/np-abcdef-n0"]
    assert "--read-only-tmpfs=false" in argv and "--privileged" not in argv


@pytest.mark.parametrize(("text", "expanded"), [
    ("$(NODE_NAME)", "node-a"), ("x-$(NODE_NAME)-y", "x-node-a-y"), ("$$(NODE_NAME)", "$(NODE_NAME)"),
    ("$(UNSET)", "$(UNSET)"), ("$NODE_NAME", "$NODE_NAME"), ("a$", "a$"), ("$$", "$"), ("$(", "$("),
])
def test_variables_expand_as_the_kubelet_expands_them(text, expanded):
    assert expand(text, {"NODE_NAME": "node-a"}) == expanded


def test_env_values_expand_against_what_is_defined_before_them(pod):
    bundle = rendered_bundle(IMAGE)
    agent = copy.deepcopy(bundle.pod_spec["containers"][0])
    agent["env"] += [{"name": "WHERE", "value": "$(NODE_NAME)@$(KUBERNETES_SERVICE_HOST)"},
                     {"name": "EARLY", "value": "$(LATER)"}, {"name": "LATER", "value": "x"}]
    env = container_spec(bundle, agent, "agent", pod).env
    assert (env["WHERE"], env["EARLY"]) == ("node-a@192.168.254.1", "$(LATER)")


def edited(change) -> Bundle:
    objects = copy.deepcopy(render_objects(ManifestOptions(image=IMAGE)))
    change(next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"])
    return Bundle(tuple(objects))


@pytest.mark.parametrize(("change", "named"), [
    (lambda s: s["volumes"].append({"name": "cfg", "configMap": {"name": "x"}})
     or s["containers"][0]["volumeMounts"].append({"name": "cfg", "mountPath": "/cfg"}), "configMap"),
    (lambda s: s["containers"][0].update(lifecycle={}), "containers[0].lifecycle"),
    (lambda s: s["containers"][0]["securityContext"].update(seccompProfile={"type": "RuntimeDefault"}),
     "securityContext.seccompProfile"),
    (lambda s: s["containers"][0]["env"].append({"name": "U", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}),
     "metadata.uid"),
    (lambda s: s["containers"][0]["volumeMounts"][0].update(subPath="x"), "volumeMounts[0].subPath"),
    (lambda s: s.update(hostPID=True), "spec.template.spec.hostPID"),
    (lambda s: s["volumes"][0]["hostPath"].update(type="Socket"), "hostPath type Socket"),
])
def test_what_the_lab_does_not_model_is_refused_naming_the_field(pod, change, named):
    bundle = edited(change)
    with pytest.raises(LabError, match=named.replace("[", r"\[").replace("]", r"\]")):
        for where, container in containers(bundle):
            container_spec(bundle, container, where, pod)


def test_a_missing_read_only_host_path_is_refused_never_created(pod, tmp_path):
    missing = tmp_path / "not-on-this-machine"

    def mount_it(spec):
        spec["volumes"].append({"name": "gone", "hostPath": {"path": str(missing), "type": "DirectoryOrCreate"}})
        spec["initContainers"][0]["volumeMounts"].append({"name": "gone", "mountPath": "/gone", "readOnly": True})
    bundle = edited(mount_it)
    with pytest.raises(LabError, match="is not a directory"):
        container_spec(bundle, bundle.pod_spec["initContainers"][0], "init", pod)
    assert not missing.exists()


def test_quantities_become_cgroup_settings_as_the_kubelet_computes_them():
    assert resources({"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}, "r") == \
        daemonset.podman.Resources(51, None, 256 << 20)
    assert resources({"requests": {"cpu": "1m"}, "limits": {"cpu": "1.5", "memory": "1G"}}, "r") == \
        daemonset.podman.Resources(2, 1.5, 10 ** 9)
    with pytest.raises(LabError, match="quantity"):
        resources({"limits": {"memory": "lots"}}, "r")


def test_a_bundle_without_exactly_one_daemonset_is_refused():
    text = "\n---\n".join(json.dumps(o) for o in render_objects() if o["kind"] != "DaemonSet")
    with pytest.raises(LabError, match="0 DaemonSets"):
        assert parse_bundle(text).daemonset
