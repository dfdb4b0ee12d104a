"""The install bundle `netpol manifests` prints (and netpol/deploy/netpol.yaml keeps rendered
with the defaults): Namespace, ServiceAccount, ClusterRole and its binding, and the DaemonSet
whose init container installs netpol-cni. Pure: options in, API objects (dicts) out, then one
multi-document YAML text. Every object is checked against Kubernetes' OpenAPI schemas in tests.

Why the DaemonSet looks as it does:

* **Capabilities: NET_ADMIN only**, everything else dropped, not privileged. The agent's writes
  are nftables transactions (libnftables over nfnetlink), its drift watch a subscription to
  nftables' notifications (an nfnetlink group: CAP_NET_ADMIN) and its host-gw routes `ip route`
  over rtnetlink — all NET_ADMIN. No NET_RAW: netlink sockets need none, and the one thing
  here that opens raw IP sockets, legacy iptables, is the iptables backend, which the agent
  does not run. No SYS_MODULE and no /lib/modules: nf_tables' modules are loaded by the
  kernel on the agent's first transaction, br_netfilter by netpol-cni, which runs on the host.
  No sysctls: netpol-cni sets forwarding and bridge-nf-call-ip(6)tables, on the host.
  tests/kernel/test_deploy_capabilities.py runs the agent with exactly these (and, to show the
  test can fail, with none: it cannot start).
* **Listening on `$(NODE_IP):9909`** (status.hostIP). With hostNetwork the kubelet probes, and
  Prometheus scrapes, the pod's IP, which is the node's; 127.0.0.1 (the agent's default) is
  unreachable to both, and 0.0.0.0 would also expose the endpoints on every other interface of
  the node (public ones included).
* **Resources** from the real `netpol agent` process at 10,000 pods on 40 nodes
  (benchmarks/agent_resources.py, benchmarks/README.md): peak RSS 246 MB with 1,000 policies
  and 418 MB with 10,000, flat afterwards; idle 0.002-0.003 cores; taking changes one after the
  other as fast as it enforces them, 0.07 cores (6.6 changes/s, 1k policies) and 0.62 cores
  (2.5/s, 10k); 3.3 and 7.7 CPU-seconds for the first sync. Requests: what 10k pods / 1k
  policies hold (256Mi, 100m). Limits: memory about 1.6 × the 10k-policy peak (640Mi: an OOM
  kill would stop updates, not enforcement, and must not happen at the sizes we measured); CPU
  one core, above every rate measured (the sync loop is one thread), so that only a very large
  first sync is slowed. The init container: `netpol install-cni`
  peaks at 87 MB RSS (the kubernetes client), with netpol_cni.install (17 MB) and its
  compileall (12 MB) alive beside it: 116 MB in all, 1 s; requests 128Mi, limit twice that.
* **Mounts**: the agent needs none from the host (its kernel objects are reached through the
  host network namespace) — an emptyDir at /tmp under a read-only root. The init container
  mounts the host's CNI bin dir, netpol-cni's library dir and the CNI config dir at /host/…,
  and /usr read-only to find the host's python3 (netpol-cni's launcher runs on the host). No
  /run/xtables.lock (no iptables in the agent), no /var/lib/cni (netpol-cni keeps its records
  there itself, on the host).
* **Rolling updates** one node at a time; the new pod is Ready after its first full sync, and
  the table stays in force between the old agent's exit and then (README "Failure model").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from netpol.deploy.image import DEFAULT_TAG
from netpol.deploy.rbac import cluster_role_rules

NAME = "netpol"
DEFAULT_IMAGE = DEFAULT_TAG  # what `make image` tags
PORT = 9909
HOST_ROOT = "/host"  # where the init container sees the host's paths
LABELS = {"app.kubernetes.io/name": NAME}
# Namespaces a cluster has anyway: never rendered as ours (`kubectl delete -f` would delete them).
SHARED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
AGENT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"},
                   "limits": {"cpu": "1", "memory": "640Mi"}}
INIT_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class ManifestOptions:
    image: str = DEFAULT_IMAGE
    namespace: str = NAME
    pull_policy: str = "IfNotPresent"
    port: int = PORT
    cni_bin_dir: str = "/opt/cni/bin"
    cni_conf_dir: str = "/etc/cni/net.d"

    @property
    def cni_lib_dir(self) -> str:
        """Where netpol-cni's package goes (netpol_cni.install's default: beside the bin dir)."""
        return str(PurePosixPath(self.cni_bin_dir).parent / "lib" / "netpol-cni")


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(LABELS)
    return meta


def namespace(opts: ManifestOptions) -> dict[str, Any]:
    meta = _meta(opts.namespace)
    # hostNetwork, hostPath and NET_ADMIN are beyond Pod Security's "baseline" level
    meta["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def rbac(opts: ManifestOptions) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole (read-only: netpol.deploy.rbac) and the binding."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, opts.namespace)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
         "rules": cluster_role_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": opts.namespace}]},
    ]


def _env(**fields: str) -> list[dict[str, Any]]:
    return [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in fields.items()]


def _security(*capabilities: str) -> dict[str, Any]:
    """Root (the host's CNI dirs and the kernel's tables are root's), only `capabilities`."""
    return {"runAsUser": 0, "privileged": False, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], **({"add": list(capabilities)} if capabilities else {})}}


def _host_dirs(opts: ManifestOptions) -> list[tuple[str, str, str, bool]]:
    """(volume, host path, hostPath type, read-only) of what the init container mounts."""
    return [("cni-bin", opts.cni_bin_dir, "DirectoryOrCreate", False),
            ("cni-lib", opts.cni_lib_dir, "DirectoryOrCreate", False),
            ("cni-conf", opts.cni_conf_dir, "DirectoryOrCreate", False),
            ("host-usr", "/usr", "Directory", True)]


def install_container(opts: ManifestOptions) -> dict[str, Any]:
    mounts = [{"name": volume, "mountPath": f"{HOST_ROOT}{path}", **({"readOnly": True} if ro else {})}
              for volume, path, _, ro in _host_dirs(opts)]
    return {
        "name": "install-cni", "image": opts.image, "imagePullPolicy": opts.pull_policy,
        "command": ["netpol", "install-cni", "--node", "$(NODE_NAME)", "--host-root", HOST_ROOT,
                    "--cni-bin-dir", opts.cni_bin_dir, "--cni-conf-dir", opts.cni_conf_dir],
        "env": _env(NODE_NAME="spec.nodeName"),
        "resources": INIT_RESOURCES,
        "securityContext": _security(),
        "volumeMounts": mounts,
    }


def agent_container(opts: ManifestOptions) -> dict[str, Any]:
    def probe(path: str, period: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period,
                "timeoutSeconds": 5, "failureThreshold": 3}

    return {
        "name": "agent", "image": opts.image, "imagePullPolicy": opts.pull_policy,
        "command": ["netpol", "agent", "--node", "$(NODE_NAME)", "--listen", f"$(NODE_IP):{opts.port}"],
        "env": _env(NODE_NAME="spec.nodeName", NODE_IP="status.hostIP"),
        "ports": [{"name": "metrics", "containerPort": opts.port, "protocol": "TCP"}],
        "livenessProbe": probe("/healthz", 10),
        "readinessProbe": probe("/readyz", 5),
        "resources": AGENT_RESOURCES,
        "securityContext": _security("NET_ADMIN"),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def daemonset(opts: ManifestOptions) -> dict[str, Any]:
    volumes = [{"name": volume, "hostPath": {"path": path, "type": kind}}
               for volume, path, kind, _ in _host_dirs(opts)]
    volumes.append({"name": "tmp", "emptyDir": {}})
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(opts.port),
                   "prometheus.io/path": "/metrics"}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(NAME, opts.namespace),
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(LABELS), "annotations": annotations},
                "spec": {
                    "serviceAccountName": NAME,
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],  # every taint, every effect
                    "initContainers": [install_container(opts)],
                    "containers": [agent_container(opts)],
                    "volumes": volumes,
                },
            },
        },
    }


def render_objects(opts: ManifestOptions = ManifestOptions()) -> list[dict[str, Any]]:
    """Every object of the bundle, in the order `kubectl apply` needs them."""
    head = [] if opts.namespace in SHARED_NAMESPACES else [namespace(opts)]
    return [*head, *rbac(opts), daemonset(opts)]


HEADER = """\
# netpol: the policy agent on every node; its init container installs netpol-cni.
# Rendered by `netpol manifests --image {image}`; each setting is argued in
# netpol/deploy/manifests.py:
#   capabilities NET_ADMIN only (nftables, its notifications, routes: netlink); hostNetwork;
#   agent listens on the node's IP ($(NODE_IP), what the kubelet probes and Prometheus scrapes);
#   resources from the agent at 10k pods / 40 nodes: peak RSS 246 MB (1k policies), 418 MB
#   (10k); 0.003 cores idle, 0.07 (1k) to 0.62 (10k) cores under a stream of changes.
# Install: kubectl apply -f THIS.  Uninstall: the README's "Install on a cluster".
"""


def render_yaml(opts: ManifestOptions = ManifestOptions()) -> str:
    return HEADER.format(image=opts.image) + yaml.safe_dump_all(
        render_objects(opts), sort_keys=False, explicit_start=True, width=100)
