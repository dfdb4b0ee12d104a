"""The install bundle's DaemonSet, run on the lab's nodes with podman as a kubelet runs its pods:
the rendered bundle (`netpol manifests --image REF`'s text) is parsed and followed, never restated.

Per pod: every init container to completion, in order, then the container, each as
`netpol.lab.podman.Container` with exactly the spec's command and args (`$(VAR)` expanded as
the kubelet does), env (fieldRefs resolved for the node, and the `kubernetes` service's
variables the kubelet adds), volumeMounts, securityContext, resources and image pull policy;
hostNetwork joins the node's network namespace. The service-account files are mounted
read-only where the kubelet mounts them, unless the pod opts out.

Where a hostPath lands (lab nodes share one machine's file system). A hostPath that some
container mounts writable is the node's own: `<work>/<node>/root/PATH` (the lab's stand-in for
the node's `/`, where install-cni puts netpol-cni and its conflist); one that every container
mounts read-only is the machine's real PATH (/usr, where install-cni checks the node's python3:
nothing can be written there, and the installed plugin runs under that same python3). A real
PATH that is missing is an error, never created. emptyDir is a directory of the pod's.

Anything of the spec this module does not model (another volume type, subPath, a fieldRef it
cannot resolve, a securityContext field, an unknown container field) is an error naming the
field, never skipped. Modelled only in part, unlike a kubelet with containerd: no scheduler or
DaemonSet controller (one pod per lab node; tolerations, priorityClassName unused; a rolling
update is the caller's stop-then-start), no pod sandbox (each container gets podman's own IPC,
UTS and PID namespaces; the hostname is the container's, not the node's), dnsPolicy (the
machine's resolv.conf), livenessProbe (not run; the readinessProbe is polled after a start
until Ready), seccomp and AppArmor (podman's default profiles; the kubelet's default is
Unconfined seccomp and the runtime's AppArmor profile), cgroups (podman's parent, not
kubepods; memory requests set nothing, as on cgroup v1), logs (podman's attached output, not
CRI log files), and the `kubernetes` Service (its variables name the API server itself: no
ClusterIP, no kube-proxy).
"""

from __future__ import annotations

import functools
import http.client
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from netpol.dataplane.netns import enter_netns
from netpol.deploy.manifests import ManifestOptions, render_yaml
from netpol.errors import LabError
from netpol.lab import podman
from netpol.lab.cluster import Lab
from netpol.testing.authz import bound_cluster_role_rules

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_GRACE = 30  # s: terminationGracePeriodSeconds when the pod spec does not say
READY_TIMEOUT = 120.0  # s a new pod gets to be Ready: a hang bound (it takes a few seconds)
HTTP_TIMEOUT = 5.0  # s one HTTP GET may take when the caller does not say
# What the lab follows of a pod spec (tolerations and priorityClassName change nothing on nodes
# without taints or a scheduler; dnsPolicy: see the module); anything else is refused.
POD_FIELDS = {"serviceAccountName", "hostNetwork", "dnsPolicy", "priorityClassName", "tolerations",
              "initContainers", "containers", "volumes", "terminationGracePeriodSeconds",
              "automountServiceAccountToken"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "env", "ports", "livenessProbe",
                    "readinessProbe", "resources", "securityContext", "volumeMounts", "workingDir"}
SECURITY_FIELDS = {"runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
                   "readOnlyRootFilesystem", "capabilities"}
_VARIABLE = re.compile(r"\$\((?P<name>[^)]*)\)|\$\$")


# ── the bundle (pure) ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Bundle:
    """The objects `netpol manifests` prints, and what the lab needs of them."""

    objects: tuple[dict[str, Any], ...]

    @property
    def daemonset(self) -> dict[str, Any]:
        found = [o for o in self.objects if o.get("kind") == "DaemonSet"]
        if len(found) != 1:
            raise LabError(f"the bundle holds {len(found)} DaemonSets; the lab runs exactly one")
        return found[0]

    @property
    def namespace(self) -> str:
        return str(self.daemonset["metadata"].get("namespace") or "default")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.daemonset["spec"]["template"]["spec"]
        unknown = sorted(set(spec) - POD_FIELDS - {"securityContext"}) or (
            ["securityContext"] if spec.get("securityContext") else [])
        if unknown:
            raise LabError(f"DaemonSet {self.namespace}/{self.daemonset['metadata']['name']}: "
                           f"spec.template.spec.{unknown[0]} is not modelled by the lab")
        return spec

    @property
    def user(self) -> str:
        """Whom the pods' service-account token authenticates as."""
        account = self.pod_spec.get("serviceAccountName") or "default"
        return f"system:serviceaccount:{self.namespace}:{account}"

    def cluster_role_rules(self) -> list[dict[str, Any]]:
        """What the bundle's ClusterRoleBindings grant the pods' service account."""
        return bound_cluster_role_rules(self.objects, self.user)

    @property
    def grace(self) -> float:
        return float(self.pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE))


def parse_bundle(text: str) -> Bundle:
    return Bundle(tuple(o for o in yaml.safe_load_all(text) if o))


def rendered_bundle(image: str) -> Bundle:
    """`netpol manifests --image IMAGE`, parsed."""
    return parse_bundle(render_yaml(ManifestOptions(image=image)))


# ── the kubelet's part: a container spec resolved for one node (pure) ─────────────────────────


@dataclass(frozen=True)
class NodeHost:
    """What a pod gets from its node: its name, the address `status.hostIP` reports, the network
    namespace hostNetwork joins, and the directory standing for its `/` (see the module)."""

    name: str
    address: str
    netns: str
    root: Path

    def host_path(self, path: str, writable: bool) -> Path:
        return self.root / PurePosixPath(path).relative_to("/") if writable else Path(path)


@dataclass(frozen=True)
class DaemonPod:
    """One pod of the DaemonSet on one node: its name, the node, its own directory (emptyDirs,
    the projected service account) and the API server its containers are told about."""

    name: str
    node: NodeHost
    directory: Path
    api_host: str
    api_port: int

    @property
    def service_account_dir(self) -> Path:
        return self.directory / "serviceaccount"

    def volume_dir(self, volume: str) -> Path:
        return self.directory / "volumes" / volume


def expand(text: str, env: Mapping[str, str]) -> str:
    """`$(VAR)` replaced by its value when VAR is defined (else kept as written), `$$` by `$`:
    the kubelet's expansion of command, args and env values."""
    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return "$"
        return env.get(name, match.group(0))
    return _VARIABLE.sub(one, text)


def service_env(host: str, port: int) -> dict[str, str]:
    """The variables the kubelet gives every container for the `kubernetes` service."""
    url = f"tcp://{host}:{port}"
    prefix = f"KUBERNETES_PORT_{port}_TCP"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url, prefix: url,
            f"{prefix}_PROTO": "tcp", f"{prefix}_PORT": str(port), f"{prefix}_ADDR": host}


def field_value(path: str, pod: DaemonPod, spec: Mapping[str, Any], namespace: str, where: str) -> str:
    """A downward-API fieldRef, for a hostNetwork pod of this node."""
    values = {"spec.nodeName": pod.node.name, "status.hostIP": pod.node.address,
              "metadata.name": pod.name, "metadata.namespace": namespace,
              "spec.serviceAccountName": str(spec.get("serviceAccountName") or "default")}
    if spec.get("hostNetwork"):
        values["status.podIP"] = pod.node.address
    if path not in values:
        raise LabError(f"{where}: fieldRef {path!r} is not modelled by the lab")
    return values[path]


def container_env(container: Mapping[str, Any], pod: DaemonPod, spec: Mapping[str, Any], namespace: str,
                  where: str) -> dict[str, str]:
    """The service's variables, then the container's env in order, each value expanded against
    what is defined before it."""
    env = service_env(pod.api_host, pod.api_port)
    for i, item in enumerate(container.get("env") or ()):
        here = f"{where}.env[{i}]"
        if "valueFrom" in item:
            source = item["valueFrom"]
            if set(source) != {"fieldRef"}:
                raise LabError(f"{here}.valueFrom: only fieldRef is modelled by the lab")
            env[item["name"]] = field_value(source["fieldRef"]["fieldPath"], pod, spec, namespace, here)
        else:
            env[item["name"]] = expand(str(item.get("value", "")), env)
    return env


def container_mounts(container: Mapping[str, Any], pod: DaemonPod, spec: Mapping[str, Any],
                     writable: set[str], where: str) -> tuple[podman.Mount, ...]:
    """Each volumeMount with its source (see the module), then the service account's."""
    volumes = {v["name"]: v for v in spec.get("volumes") or ()}
    mounts = []
    for i, mount in enumerate(container.get("volumeMounts") or ()):
        here = f"{where}.volumeMounts[{i}]"
        unknown = sorted(set(mount) - {"name", "mountPath", "readOnly"})
        if unknown:
            raise LabError(f"{here}.{unknown[0]} is not modelled by the lab")
        volume = volumes.get(mount["name"])
        if volume is None:
            raise LabError(f"{here}: no volume {mount['name']!r} in the pod")
        source = volume_source(volume, pod, mount["name"] in writable)
        mounts.append(podman.Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
    if spec.get("automountServiceAccountToken", True):
        mounts.append(podman.Mount(str(pod.service_account_dir), SERVICE_ACCOUNT_MOUNT, read_only=True))
    return tuple(mounts)


def volume_source(volume: Mapping[str, Any], pod: DaemonPod, writable: bool) -> Path:
    """Where a volume's files are on this machine (made if the volume type makes it)."""
    if "emptyDir" in volume:
        target = pod.volume_dir(volume["name"])
        target.mkdir(parents=True, exist_ok=True)
        return target
    if "hostPath" not in volume:
        kind = next((k for k in volume if k != "name"), "?")
        raise LabError(f"volume {volume['name']}: {kind} is not modelled by the lab (hostPath, emptyDir)")
    path, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
    target = pod.node.host_path(path, writable)
    if kind == "DirectoryOrCreate" and writable:
        target.mkdir(parents=True, exist_ok=True)
    elif kind not in ("", "Directory", "DirectoryOrCreate"):
        raise LabError(f"volume {volume['name']}: hostPath type {kind} is not modelled by the lab")
    if not target.is_dir():
        raise LabError(f"volume {volume['name']}: hostPath {path} ({target}) is not a directory")
    return target


def writable_volumes(spec: Mapping[str, Any]) -> set[str]:
    """Volumes that some container (init ones included) mounts without readOnly."""
    return {m["name"] for c in (*(spec.get("initContainers") or ()), *spec["containers"])
            for m in c.get("volumeMounts") or () if not m.get("readOnly")}


def security_options(context: Mapping[str, Any], where: str) -> dict[str, Any]:
    """securityContext as podman.Container fields."""
    unknown = sorted(set(context) - SECURITY_FIELDS)
    if unknown:
        raise LabError(f"{where}.securityContext.{unknown[0]} is not modelled by the lab")
    user = context.get("runAsUser")
    if context.get("runAsNonRoot") and user in (None, 0):
        raise LabError(f"{where}: runAsNonRoot with user {user}: the kubelet would refuse to start it")
    group = context.get("runAsGroup")
    capabilities = context.get("capabilities") or {}
    return {"cap_add": tuple(capabilities.get("add") or ()),
            "cap_drop": tuple(capabilities.get("drop") or ()),
            "privileged": bool(context.get("privileged")),
            "read_only": bool(context.get("readOnlyRootFilesystem")),
            "no_new_privileges": context.get("allowPrivilegeEscalation") is False,
            "user": None if user is None else f"{user}{'' if group is None else f':{group}'}"}


_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti|)$")
_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}


def quantity(text: object, where: str) -> float:
    """A Kubernetes quantity (`100m`, `1`, `256Mi`) as a number."""
    match = _QUANTITY.match(str(text))
    if match is None:
        raise LabError(f"{where}: quantity {text!r} is not modelled by the lab")
    return float(match["number"]) * _SUFFIX[match["suffix"]]


def resources(spec: Mapping[str, Any], where: str) -> podman.Resources:
    """What the kubelet puts in the cgroup: cpu.shares from the CPU request (1024 per core, at
    least 2), a CFS quota from the CPU limit, the memory limit."""
    requests, limits = spec.get("requests") or {}, spec.get("limits") or {}
    shares = None
    if "cpu" in requests:
        shares = max(2, int(quantity(requests["cpu"], f"{where}.requests.cpu") * 1024))
    cpus = quantity(limits["cpu"], f"{where}.limits.cpu") if "cpu" in limits else None
    memory = int(quantity(limits["memory"], f"{where}.limits.memory")) if "memory" in limits else None
    return podman.Resources(shares, cpus, memory)


def container_spec(bundle: Bundle, container: Mapping[str, Any], where: str,
                   pod: DaemonPod) -> podman.Container:
    """One container of the pod as podman runs it on `pod.node`."""
    unknown = sorted(set(container) - CONTAINER_FIELDS)
    if unknown:
        raise LabError(f"{where}.{unknown[0]} is not modelled by the lab")
    spec = bundle.pod_spec
    env = container_env(container, pod, spec, bundle.namespace, where)
    command = container.get("command")
    pull = container.get("imagePullPolicy", "IfNotPresent")
    if pull not in podman.PULL:
        raise LabError(f"{where}.imagePullPolicy: {pull!r} is not one Kubernetes has")
    return podman.Container(
        command=tuple(expand(word, env) for word in container.get("args") or ()),
        entrypoint=None if command is None else tuple(expand(word, env) for word in command),
        env=env, mounts=container_mounts(container, pod, spec, writable_volumes(spec), where),
        netns=f"/run/netns/{pod.node.netns}" if spec.get("hostNetwork") else None,
        workdir=container.get("workingDir"), pull=podman.PULL[pull],
        resources=resources(container.get("resources") or {}, f"{where}.resources"),
        **security_options(container.get("securityContext") or {}, where))


def readiness(bundle: Bundle) -> tuple[str, int, float] | None:
    """The app container's readinessProbe as (path, port, timeout), the port resolved by name."""
    container = app_container(bundle)
    probe = container.get("readinessProbe")
    if probe is None:
        return None
    if set(probe.get("httpGet") or {}) - {"path", "port"} or "httpGet" not in probe:
        raise LabError("containers[0].readinessProbe: only httpGet with path and port is modelled by the lab")
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or ()}
        if port not in named:
            raise LabError(f"containers[0].readinessProbe.httpGet.port: no port named {port!r}")
        port = named[port]
    return str(probe["httpGet"].get("path", "/")), int(port), float(probe.get("timeoutSeconds", 1))


def app_container(bundle: Bundle) -> dict[str, Any]:
    containers = bundle.pod_spec["containers"]
    if len(containers) != 1:
        raise LabError(f"the DaemonSet's pods have {len(containers)} containers; the lab runs one")
    found: dict[str, Any] = containers[0]
    return found


# ── running the pods (I/O) ────────────────────────────────────────────────────────────────────


@dataclass
class PodRun:
    """A started pod: what its init containers printed, its container's name and podman process
    (the container's stdout and stderr on its pipes)."""

    pod: DaemonPod
    container: str
    process: subprocess.Popen[str]
    installed: list[str] = field(default_factory=list)  # each init container's stdout lines


@dataclass
class DaemonSetRunner:
    """The bundle's DaemonSet on the lab's nodes. Containers are named `np-TAG-<node>-<pod>-<container>`
    (TAG: the lab's, unique per run); every one is removed when the lab closes, also on errors
    and Ctrl-C, and joins no namespace but the ones podman makes for it and its node's."""

    lab: Lab
    bundle: Bundle
    work: Path
    api_host: str
    api_port: int
    project_service_account: Callable[[Path], object]  # writes token, ca.crt, namespace into a dir

    def new_pod(self, node: NodeHost) -> DaemonPod:
        name = f"{self.bundle.daemonset['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        pod = DaemonPod(name, node, self.work / node.name / "pods" / name, self.api_host, self.api_port)
        pod.directory.mkdir(parents=True)
        node.root.mkdir(parents=True, exist_ok=True)
        self.project_service_account(pod.service_account_dir)
        return pod

    def container_name(self, pod: DaemonPod, container: Mapping[str, Any]) -> str:
        return f"np-{self.lab.plan.tag}-{pod.node.name}-{pod.name}-{container['name']}"

    def start(self, node: NodeHost) -> PodRun:
        """A new pod on `node`: its init containers, one after the other, each to exit 0; then
        its container, started (not waited for)."""
        pod = self.new_pod(node)
        spec = self.bundle.pod_spec
        installed = []
        for i, init in enumerate(spec.get("initContainers") or ()):
            proc = self.spawn(pod, init, f"spec.template.spec.initContainers[{i}]")
            try:
                out, err = proc.communicate(timeout=podman.TIMEOUT)
            except subprocess.TimeoutExpired:
                raise LabError(f"{node.name}: init container {init['name']} did not finish within "
                               f"{podman.TIMEOUT:.0f} s") from None
            if proc.returncode != 0:
                raise LabError(f"{node.name}: init container {init['name']} exited with {proc.returncode}: "
                               f"{err.strip() or out.strip()}")
            installed += [f"{init['name']}: {line}" for line in out.splitlines()]
        container = app_container(self.bundle)
        proc = self.spawn(pod, container, "spec.template.spec.containers[0]")
        return PodRun(pod, self.container_name(pod, container), proc, installed)

    def spawn(self, pod: DaemonPod, container: Mapping[str, Any], where: str) -> subprocess.Popen[str]:
        """`podman run` of one container, attached; the lab removes the container when it closes."""
        name = self.container_name(pod, container)
        spec = container_spec(self.bundle, container, where, pod)
        argv = podman.podman_run_args(container["image"], spec, name)
        return self.lab.spawn(None, argv, stop=functools.partial(podman.end_started, name))

    def stop(self, run: PodRun) -> tuple[int | None, float]:
        """SIGTERM to the pod's container and SIGKILL after the grace period, as a rolling update
        deletes a pod: its exit code (None: it never exited) and how long it took."""
        started = time.monotonic()
        podman.stop_container(run.container, self.bundle.grace)
        try:
            run.process.wait(podman.TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - started
        return run.process.returncode, time.monotonic() - started

    def wait_ready(self, run: PodRun) -> float:
        """Seconds until the pod's readinessProbe answers 200 (as the kubelet probes it: the pod's
        IP, which is the node's); LabError if the container exits or never gets there."""
        probe = readiness(self.bundle)
        started = time.monotonic()
        if probe is None:
            return 0.0
        path, port, timeout = probe
        while http_status(run.pod.node.netns, run.pod.node.address, port, path, timeout) != 200:
            if run.process.poll() is not None:
                raise LabError(f"{run.pod.node.name}: the agent container exited ({run.process.returncode}) "
                               "before it was Ready")
            if time.monotonic() - started > READY_TIMEOUT:
                raise LabError(f"{run.pod.node.name}: the agent was not Ready within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started


def http_status(netns: str, host: str, port: int, path: str, timeout: float = HTTP_TIMEOUT) -> int | None:
    """GET http://HOST:PORT/PATH from inside `netns` (a thread of its own enters it): the status,
    or None when nothing answers."""
    def get() -> int | None:
        enter_netns(netns)
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except OSError:
            return None
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(get).result()
