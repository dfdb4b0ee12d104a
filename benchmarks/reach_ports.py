"""`netpol reach` without --port on clusters that name many distinct ports, next to the same run
with one explicit --port (the baseline: loading, one probe, rendering).

Without --port every port a policy or a container port names is probed, so the run's cost should
grow with the ports linearly (issue 14: it was quadratic, 1,000 ports 22 s, 5,000 over 300 s).

    python benchmarks/reach_ports.py [--ports 100,1000,5000,10000] [--pods 40] [-o groups] [--timeout 600]

Prints one JSON object per line (machine-readable), a summary table on stderr. To measure another
checkout (before/after), put it first on PYTHONPATH: the runs import `netpol` from there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from reach_scale import measure

import netpol

DEFAULT_PORTS = "100,1000,5000,10000"
DEPLOYMENTS = 8
NAMESPACES = ("shop", "data")
FIRST_PORT = 1024
# `netpol reach …` in a fresh interpreter that imports netpol as PYTHONPATH finds it
NETPOL = ["-c", "import sys\nfrom netpol.cli import main\nsys.exit(main())"]


def generate(ports: int, pods: int) -> list[dict[str, Any]]:
    """Namespaces, pods and policies that name exactly `ports` distinct ports: half declared by
    the deployments (many container ports per pod, every fourth named), half named by policies
    (one port or a 3-port range each, ingress and egress in turn: see `_roles`), plus policies
    that name container ports by name (which add no port)."""
    declared = ports // 2
    per_deployment = [declared // DEPLOYMENTS + (d < declared % DEPLOYMENTS) for d in range(DEPLOYMENTS)]
    firsts = [FIRST_PORT + sum(per_deployment[:d]) for d in range(DEPLOYMENTS)]
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                                     for ns in NAMESPACES]
    for i in range(pods):
        d = i % DEPLOYMENTS
        container_ports = [{"containerPort": firsts[d] + k, **({"name": _port_name(d, k)} if k % 4 == 0 else {})}
                           for k in range(per_deployment[d])]
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"app{d}-{i // DEPLOYMENTS}", "namespace": _namespace(d),
                                     "labels": {"app": f"app{d}"}},
                        "spec": {"nodeName": "node-a", "containers": [{"name": "main", "ports": container_ports}]},
                        "status": {"phase": "Running", "podIP": f"10.0.{i // 250}.{i % 250 + 2}"}})
    next_port = FIRST_PORT + declared
    for j in range(ports - declared):
        entry = {"port": next_port, "endPort": next_port + 2} if j % 3 == 2 else {"port": next_port}
        next_port += 3 if j % 3 == 2 else 1
        objects.append(_policy(f"numbered-{j}", j, entry))
        destination = _roles(j)[2]
        if j % 2 == 0 and per_deployment[destination]:  # a port of the destination, by name
            named = 4 * (j // 2 % -(-per_deployment[destination] // 4))
            objects.append(_policy(f"named-{j}", j, {"port": _port_name(destination, named)}))
    if next_port > 65536:
        raise ValueError(f"{ports} ports do not fit above {FIRST_PORT}")
    return objects


def _port_name(deployment: int, k: int) -> str:
    return f"p{deployment}-{k}"


def _namespace(deployment: int) -> str:
    return NAMESPACES[deployment % len(NAMESPACES)]


def _roles(j: int) -> tuple[int, int, int]:
    """(selected, peer, destination) deployments of policy j. Servers 0-3 are isolated for
    ingress, clients 4-5 for egress; 6-7 for neither, so each port opens what its policy says:
    ingress into a server from 6 or 7 (even j), egress from a client to 6 or 7 (odd j)."""
    other = 6 + j // 2 % 2
    if j % 2 == 0:
        server = j // 4 % 4
        return server, other, server
    return 4 + j // 4 % 2, other, other


def _policy(name: str, j: int, port: dict[str, Any]) -> dict[str, Any]:
    selected, peer, _ = _roles(j)
    direction, peers = ("ingress", "from") if j % 2 == 0 else ("egress", "to")
    selector = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": _namespace(peer)}},
                "podSelector": {"matchLabels": {"app": f"app{peer}"}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": _namespace(selected)},
            "spec": {"podSelector": {"matchLabels": {"app": f"app{selected}"}},
                     "policyTypes": [direction.capitalize()], direction: [{peers: [selector], "ports": [port]}]}}


def run_size(ports: int, pods: int, output: str, work: Path, timeout: float) -> dict[str, Any]:
    manifest = work / f"ports-{ports}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": generate(ports, pods)}))
    reach = [sys.executable, *NETPOL, "reach", "-f", str(manifest), "-o", output]
    without = measure(reach, work, work / f"without-{ports}.txt", timeout)
    baseline = measure([*reach, "--port", f"{FIRST_PORT}/TCP"], work, work / f"with-{ports}.txt", timeout)
    row: dict[str, Any] = {"benchmark": "reach_ports", "ports": ports, "pods": pods, "output": output,
                           "without_port": without, "with_one_port": baseline}
    if without["status"] == "ok" and baseline["status"] == "ok":
        row["ratio"] = round(float(without["seconds"]) / float(baseline["seconds"]), 2)
        row["output_lines"] = sum(1 for _ in (work / f"without-{ports}.txt").open("rb"))
    return row


def netpol_source() -> str:
    """The checkout measured (PYTHONPATH first), said in every row."""
    return str(Path(netpol.__file__).parent.parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", default=DEFAULT_PORTS, help="distinct ports, comma-separated (default %(default)s)")
    parser.add_argument("--pods", type=int, default=40, help="pods, in 8 deployments (default %(default)s)")
    parser.add_argument("-o", "--output", default="groups", help="netpol reach -o (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is stopped")
    parser.add_argument("--keep", type=Path, help="keep manifests and outputs in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="netpol-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source, rows = netpol_source(), []
    try:
        for ports in (int(p) for p in args.ports.split(",")):
            row = {**run_size(ports, args.pods, args.output, work.resolve(), args.timeout), "netpol": source}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'ports':>6} {'without --port s':>17} {'with --port s':>14} {'ratio':>6}", file=sys.stderr)
    for r in rows:
        print(f"{r['ports']:>6} {r['without_port'].get('seconds', '-'):>17} {r['with_one_port'].get('seconds', '-'):>14} "
              f"{r.get('ratio', '-'):>6}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
