"""Shared builders for every test folder (unit/, kernel/, cni/, bench/): clusters from YAML text,
so that tests read like the manifests they test, and single API objects as the API server serves
them (dicts), for the sources and the agent. Import them as `from tests.conftest import …`."""

from __future__ import annotations

import contextlib
import io
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import netpol
from netpol.agent.stand_ins import fail_closed_cluster_policy, fail_closed_policy
from netpol.cli import main
from netpol.compile.compiler import compile_node
from netpol.compile.ir import NodeProgram
from netpol.load.decode import decode_document
from netpol.load.manifests import build_state, load_text
from netpol.model import CLUSTER_POLICY_KINDS, ClusterState
from netpol.semantics.reference import pods_connect

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def cluster(text: str) -> ClusterState:
    return load_text(textwrap.dedent(text), "<test>")


def pod_yaml(ns: str, name: str, ip: str, labels: str = "{}", ports: str = "[]", extra: str = "",
             node: str = "node-a") -> str:
    """One Pod document; `ip` may be 'a,b' for dual-stack, '' for none."""
    ips = [i for i in ip.split(",") if i]
    status = f"podIP: {ips[0]}, podIPs: [{', '.join('{ip: ' + i + '}' for i in ips)}]" if ips else ""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
        spec: {{nodeName: {node}, containers: [{{name: c, ports: {ports}}}] {extra}}}
        status: {{phase: Running, {status}}}
        """)


def connects(state: ClusterState, src: str, dst: str, port: int | None = 80, protocol: str = "TCP") -> bool:
    a, b = state.pod(src), state.pod(dst)
    assert a is not None and b is not None
    return pods_connect(state, a, b, port, protocol)


def mark_kernel_folder(items: list[pytest.Item], folder: Path, missing: str, needs: str) -> None:
    """Mark every test under `folder` `kernel`; skip them all, saying why, when `missing`."""
    for item in items:
        if folder in item.path.parents:
            item.add_marker(pytest.mark.kernel)
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"{missing}: needs {needs} (make test installs it)"))


HANG = 60.0  # seconds a wait may take before the test fails: a hang bound, never a verdict


def wait_until(condition: Callable[[], object], what: str, timeout: float = HANG) -> None:
    """Poll `condition` (something the code under test reports) until it holds; fail, naming
    `what`, only if it never does within the hang bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


REPO = Path(__file__).resolve().parent.parent  # the checkout: benchmarks/, plugin/, rulesets/
EXAMPLE = Path(netpol.__file__).parent / "examples" / "shop"


@pytest.fixture
def example_path() -> str:
    return str(EXAMPLE)


def example_objects() -> list[dict[str, Any]]:
    """Every object of the bundled shop example, as the API serves it."""
    from netpol.sources.directory import read_objects

    objects = read_objects(str(EXAMPLE))
    assert objects is not None
    return [o for kind in objects.values() for o in kind]


def namespace_object(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name, "labels": labels}}


def pod_object(name: str, ip: str, namespace: str = "shop", node: str = "node-a", ports: tuple[int, ...] = (),
               **labels: str) -> dict[str, Any]:
    """A running pod with one address and a container listening on `ports`."""
    container: dict[str, Any] = {"name": "c"}
    if ports:
        container["ports"] = [{"containerPort": port} for port in ports]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [container]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def policy_object(name: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    """A NetworkPolicy; by default it selects every pod of its namespace and admits nothing in."""
    return {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], **spec}}


def cluster_policy_object(name: str, tier: str = "Admin", priority: int = 10, kind: str = "ClusterNetworkPolicy",
                          subject: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A cluster policy (v1beta1; `kind` AdminNetworkPolicy or BaselineAdminNetworkPolicy: v1alpha1,
    without the fields its kind has not); by default its subject is every pod and it has no rules."""
    head: dict[str, Any] = {"tier": tier, "priority": priority}
    version = "v1beta1"
    if kind != "ClusterNetworkPolicy":
        head, version = ({"priority": priority} if kind == "AdminNetworkPolicy" else {}), "v1alpha1"
    return {"kind": kind, "apiVersion": f"policy.networking.k8s.io/{version}", "metadata": {"name": name},
            "spec": {**head, "subject": subject or {"namespaces": {}}, **spec}}


def agent_program(objects: list[Any], node: str = "node-a") -> NodeProgram:
    """A compile from scratch of these API objects as the agent treats them: an invalid object
    is skipped, an invalid policy (cluster policies too) fails closed. Items that are not dicts
    are taken as decoded already (a stand-in no manifest can spell)."""
    decoded = []
    for raw in objects:
        if not isinstance(raw, dict):
            decoded.append(raw)
            continue
        found, problems = decode_document(raw, "expected")
        if problems and raw.get("kind") == "NetworkPolicy":
            found = [fail_closed_policy(raw)]
        elif problems and raw.get("kind") in CLUSTER_POLICY_KINDS:
            found = [fail_closed_cluster_policy(raw)]
        decoded += found  # (an invalid object of another kind decodes to nothing)
    return compile_node(build_state(decoded), node)


# ── a dual-stack, three-node cluster (tests/unit/lab, tests/kernel) ─────────────────────────

NODES = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.10.0.0/24, podCIDRs: [10.10.0.0/24, "fd10:a::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.1}, {type: InternalIP, address: "fd30::1"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.10.1.0/24, podCIDRs: [10.10.1.0/24, "fd10:b::/64"]}
status: {addresses: [{type: InternalIP, address: 172.30.0.2}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
"""
# node-c has no Node object: its subnets are derived from its pods, its fabric addresses invented.
PODS = "".join([
    pod_yaml("shop", "web-1", "10.10.0.10,fd10:a::10", "{app: web}",
             "[{name: http, containerPort: 8080}]", node="node-a"),
    pod_yaml("shop", "web-2", "fd10:b::10", "{app: web}", "[{name: http, containerPort: 8081}]", node="node-b"),
    pod_yaml("shop", "db", "10.10.2.20,fd10:c::20", "{app: db}", "[{name: pg, containerPort: 5432}]",
             node="node-c"),
    pod_yaml("ops", "client", "10.10.1.30,fd10:b::30", "{app: client}", node="node-b"),
    pod_yaml("ops", "prober", "10.10.2.40", "{app: monitor}", node="node-c"),
    pod_yaml("ops", "dns", "10.10.0.53,fd10:a::53", "{app: dns}",
             "[{name: dns, containerPort: 53, protocol: UDP}]", node="node-a"),
])
POLICIES = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 10.10.0.0/16, except: [10.10.1.0/24]}},
           {ipBlock: {cidr: "fd10::/16", except: ["fd10:b::/64"]}}]
    ports: [{port: pg}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: ops}
spec:
  podSelector: {matchLabels: {app: client}}
  egress:
  - to: [{namespaceSelector: {}, podSelector: {}}]
    ports: [{port: 53, protocol: UDP}]
  - to: [{namespaceSelector: {matchLabels: {team: shop}}}]
    ports: [{port: http}, {port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: ops}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-in, namespace: ops}
spec:
  podSelector: {matchLabels: {app: dns}}
  ingress: [{ports: [{port: dns, protocol: UDP}]}]
"""


def dual_stack():
    """Three nodes (node-c without a Node object), IPv4, IPv6 and dual-stack pods, ipBlocks with
    except in both families, named ports, DNS over UDP."""
    return cluster(NODES + PODS + POLICIES)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`netpol ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# ── the clause world (tests/unit/semantics): two namespaces, two nodes, four pods ──────────────

WORLD_OBJECTS = """
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: y}}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a, zone: one}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {kubernetes.io/hostname: node-b, zone: two}}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
"""
WORLD_PODS = (
    pod_yaml("a", "web", "10.0.0.1", "{app: web}", "[{name: http, containerPort: 80}]")
    + pod_yaml("a", "db", "10.0.0.2", "{app: db}", "[{name: pg, containerPort: 5432}]")
    + pod_yaml("b", "client", "10.0.1.1", "{app: client}")
    + pod_yaml("b", "web", "10.0.1.2", "{app: web}",
               "[{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]")
)


def policy_yaml(ns: str, name: str, spec: str) -> str:
    """One NetworkPolicy document with `spec` in flow style."""
    return f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"


def world(*policies: str, extra_pods: str = "") -> ClusterState:
    """Namespaces a (team x) and b (team y), two nodes (labelled with their names and zones one,
    two), four pods, and these policies."""
    return cluster(WORLD_OBJECTS + WORLD_PODS + extra_pods + "".join(policies))


DENY_INGRESS = "{podSelector: {}, policyTypes: [Ingress]}"
DENY_EGRESS = "{podSelector: {}, policyTypes: [Egress]}"


def manifest_cluster_role() -> tuple[str, list[dict[str, Any]]]:
    """The agent's user and the rules the rendered bundle users apply (netpol/deploy/netpol.yaml)
    grants it: what a test API server enforces, so RBAC and the agent's needs meet in tests."""
    import yaml

    from netpol.testing.authz import bound_cluster_role_rules

    bundle = [o for o in yaml.safe_load_all((Path(netpol.__file__).parent / "deploy" / "netpol.yaml").read_text())
              if o]
    account = next(o["metadata"] for o in bundle if o["kind"] == "ServiceAccount")
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    return user, bound_cluster_role_rules(bundle, user)

