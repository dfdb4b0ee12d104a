"""The full reachability map at scale: `netpol reach -o groups` (every relevant port and protocol)
on synthetic clusters, wall time and peak memory, optionally against IBM's network-config-analyzer
(NCA) on the same cluster in the same run.

    python benchmarks/reach_scale.py [--sizes 1000/250,2000/1000,5000/2000] [--vs-nca] [--nca-timeout 600]
    python benchmarks/reach_scale.py --vs-nca --yaml-targets [--sizes 1000/250,5000/2000] [--nca-timeout 120]

`--yaml` writes each cluster as `kubectl get -o yaml|json` would (pods with the fields kubectl
shows, less managedFields: `kubectl_shaped`), as YAML and as JSON, times netpol on both (best of
`--repeat`) and runs NCA on the YAML. `--yaml-targets` adds `netpol compile --all-nodes` of
kube-burner's 100k pods / 10k policies / 400 nodes from YAML and from JSON (cached in
benchmarks/.cache, as compile_scale.py caches it), and checks issue 18's three targets: ≥ 50×
NCA at 1,000 / 250 from YAML; YAML ≤ 1.3× JSON at 5,000 / 2,000; the 100k compile from YAML
≤ 30 s.

Prints one JSON object per line (machine-readable; a `"target"` line per target with `"met"`),
a summary table on stderr. NCA is installed into a venv of its own (benchmarks/.nca-venv) on
first use.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import nca_output
import synthetic
import yaml

import netpol
from netpol.load.manifests import load_state
from netpol.semantics.probes import default_probes
from netpol.semantics.reach import compute_reach

HERE = Path(__file__).parent
NCA_VENV = HERE / ".nca-venv"
CACHE = HERE / ".cache"
DEFAULT_SIZES = "1000/250,2000/1000,5000/2000"
TARGET_SIZES = "1000/250,5000/2000"
# issue 18's targets for YAML input
VS_NCA_SIZE, VS_NCA_AT_LEAST = (1000, 250), 50.0
RATIO_SIZE, RATIO_AT_MOST = (5000, 2000), 1.3
COMPILE_SHAPE, COMPILE_AT_MOST_S = (100_000, 10_000, 400), 30.0
TIMESTAMP = "2026-11-28T09:14:07Z"


def measure(argv: list[str], cwd: Path, stdout: Path, timeout: float) -> dict[str, float | str]:
    """Run `argv`; wall seconds and the child's own peak RSS (os.wait4), or a timeout. The wait
    blocks (a timer kills the child at the deadline), so the time is the child's, not a polling
    interval's. Bytecode is written and read as in an installed package (a `PYTHONDONTWRITEBYTECODE`
    in the caller's environment would make every run compile every module again: +0.05-0.1 s)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTHONDONTWRITEBYTECODE")}
    env["HOME"] = str(cwd)  # no ~/.kube/config: nothing may talk to a cluster
    errors = stdout.with_suffix(".stderr")
    with stdout.open("wb") as out, errors.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if seconds >= timeout:
        return {"status": "timeout", "seconds": timeout}
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = errors.read_text(errors="replace")[-2000:]
        return {"status": f"exit {code}: {tail}", "seconds": seconds}
    return {"status": "ok", "seconds": round(seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def ensure_nca() -> Path:
    nca = NCA_VENV / "bin" / "nca"
    if not nca.exists():
        print("installing network-config-analyzer into benchmarks/.nca-venv …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(NCA_VENV)], check=True)
        subprocess.run([str(NCA_VENV / "bin" / "pip"), "install", "-q", "network-config-analyzer"], check=True)
    return nca


def _uid(*parts: object) -> str:
    digest = hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def kubectl_shaped(manifest: dict) -> dict:
    """`manifest` with the fields `kubectl get -o yaml` shows for it (less managedFields): uid,
    resourceVersion, creationTimestamp; for a namespace the `kubernetes.io/metadata.name` label
    (netpol assumes it as the API server sets it; NCA reads only what is written); for a pod its owner, the spec and status fields the API
    server and kubelet fill in. netpol reads none of them; real input carries them all."""
    out = copy.deepcopy(manifest)
    meta = out["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "")
    meta.update(uid=_uid(out["kind"], namespace, name), resourceVersion=str(int(_uid(name)[:6], 16)),
                creationTimestamp=TIMESTAMP)
    if out["kind"] == "Namespace":  # the API server labels every namespace with its name
        meta["labels"] = {**meta.get("labels", {}), "kubernetes.io/metadata.name": name}
    if out["kind"] != "Pod":
        return out
    owner = name.rsplit("-", 1)[0]
    meta.update(generateName=f"{owner}-", ownerReferences=[{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-5d8f7c9b4", "uid": _uid("rs", namespace, owner),
        "controller": True, "blockOwnerDeletion": True}])
    spec, status = out["spec"], out["status"]
    for container in spec["containers"]:
        container.update(imagePullPolicy="IfNotPresent", resources={"requests": {"cpu": "100m", "memory": "128Mi"}},
                         terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File",
                         volumeMounts=[{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                        "name": "kube-api-access-x7k2p", "readOnly": True}])
    spec.update(dnsPolicy="ClusterFirst", enableServiceLinks=True, preemptionPolicy="PreemptLowerPriority",
                priority=0, restartPolicy="Always", schedulerName="default-scheduler", securityContext={},
                serviceAccount="default", serviceAccountName="default", terminationGracePeriodSeconds=30,
                tolerations=[{"effect": "NoExecute", "key": f"node.kubernetes.io/{taint}", "operator": "Exists",
                              "tolerationSeconds": 300} for taint in ("not-ready", "unreachable")])
    status.update(conditions=[{"lastProbeTime": None, "lastTransitionTime": TIMESTAMP, "status": "True",
                               "type": kind} for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                  containerStatuses=[{"containerID": f"containerd://{_uid('c', namespace, name).replace('-', '')}",
                                      "image": c["image"], "imageID": f"docker.io/library/{c['image']}",
                                      "lastState": {}, "name": c["name"], "ready": True, "restartCount": 0,
                                      "started": True, "state": {"running": {"startedAt": TIMESTAMP}}}
                                     for c in spec["containers"]],
                  hostIP=f"172.16.0.{int(spec['nodeName'].rsplit('-', 1)[1]) % 250 + 1}", qosClass="Burstable",
                  startTime=TIMESTAMP)
    return out


class _KubectlDumper(yaml.SafeDumper):
    """Block style, sequences not indented under their key, no anchors: as kubectl writes YAML."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def write_kubectl(cluster: dict[str, list[dict]], json_dir: Path, yaml_dir: Path) -> None:
    """One `v1/List` file per kind, as `kubectl get -o json` and `-o yaml` write them."""
    json_dir.mkdir(parents=True, exist_ok=True)
    yaml_dir.mkdir(parents=True, exist_ok=True)
    for kind, items in cluster.items():
        doc = {"apiVersion": "v1", "kind": "List", "items": [kubectl_shaped(item) for item in items],
               "metadata": {"resourceVersion": ""}}
        (json_dir / f"{kind}.json").write_text(json.dumps(doc, indent=4))
        (yaml_dir / f"{kind}.yaml").write_text(yaml.dump(doc, Dumper=_KubectlDumper, sort_keys=False,
                                                         default_flow_style=False, width=10_000))


def run_size(pods: int, policies: int, work: Path, vs_nca: bool, nca_timeout: float,
             yaml_too: bool = False, repeat: int = 1) -> dict:
    netpol = Path(sys.executable).parent / "netpol"
    cluster = synthetic.generate(pods, policies)
    result: dict = {"benchmark": "reach_scale", "pods": pods, "policies": policies}
    if yaml_too:
        cluster_dir, yaml_dir = work / f"cluster-{pods}-{policies}", work / f"cluster-{pods}-{policies}-yaml"
        write_kubectl(cluster, cluster_dir, yaml_dir)
        result["input"] = "kubectl-shaped Lists, JSON and YAML"
        result["yaml_mb"] = round(sum(f.stat().st_size for f in yaml_dir.iterdir()) / 1e6, 2)
        result["json_mb"] = round(sum(f.stat().st_size for f in cluster_dir.iterdir()) / 1e6, 2)
    else:
        cluster_dir = yaml_dir = work / f"cluster-{pods}-{policies}"
        synthetic.write(cluster, cluster_dir)
    # alternate JSON and YAML runs, so that a slower moment of the machine hits both
    runs: dict[str, list[dict]] = {"netpol": [], "netpol_yaml": []}
    for _ in range(repeat):
        runs["netpol"].append(measure([str(netpol), "reach", "-f", str(cluster_dir), "-o", "groups"], work,
                                      work / f"netpol-{pods}.txt", timeout=600))
        if yaml_too:
            runs["netpol_yaml"].append(measure([str(netpol), "reach", "-f", str(yaml_dir), "-o", "groups"], work,
                                               work / f"netpol-yaml-{pods}.txt", timeout=600))
    for name, measured in runs.items():
        if measured:
            result[name] = _fastest(measured)
    result["netpol_group_lines"] = _lines(work / f"netpol-{pods}.txt")
    ours = result["netpol"]
    if yaml_too:
        same = (work / f"netpol-{pods}.txt").read_bytes() == (work / f"netpol-yaml-{pods}.txt").read_bytes()
        result["yaml_output_same_as_json"] = same
        ours = result["netpol_yaml"]
        if ours["status"] == "ok" and result["netpol"]["status"] == "ok":
            result["yaml_over_json"] = round(float(ours["seconds"]) / float(result["netpol"]["seconds"]), 3)
    if vs_nca:
        cluster_dir = yaml_dir  # NCA reads what netpol read from YAML
        nca_out = work / f"nca-{pods}.txt"
        nca_out.unlink(missing_ok=True)  # nca -f appends
        theirs = measure([str(ensure_nca()), "--connectivity", "-r", str(cluster_dir), "--output_endpoints",
                          "pods", "-o", "txt_no_fw_rules", "-f", str(nca_out)], work, work / "nca.log",
                         timeout=nca_timeout)
        result["nca"] = theirs
        result["nca_edge_lines"] = _lines(nca_out) if nca_out.exists() else None
        if theirs["status"] == "ok" and ours["status"] == "ok":
            result["speedup_vs_nca"] = round(float(theirs["seconds"]) / float(ours["seconds"]), 1)
            result["agreement_with_nca"] = compare_with_nca(cluster_dir, nca_out)
        elif theirs["status"] == "timeout" and ours["status"] == "ok":
            result["speedup_vs_nca"] = f">{round(nca_timeout / float(ours['seconds']), 1)}"
    return result


def compare_with_nca(cluster_dir: Path, nca_out: Path) -> dict:
    """Cell by cell on every probe: pod pairs NCA and netpol disagree on (self-pairs excluded),
    among the pods NCA's output names (`nca_output.listed_pods`: not every pod, with kubectl's
    ownerReferences on them)."""
    state = load_state([str(cluster_dir)])
    probes = default_probes(state)
    reach = compute_reach(state, probes)
    listed = nca_output.listed_pods(nca_out)
    compared = [i for i, pod in enumerate(reach.pods) if pod.key in listed]
    ours = {(reach.pods[s].key, reach.pods[d].key, probe)
            for pi, probe in enumerate(probes)
            for s in compared for d in compared
            if s != d and reach.allowed(pi, s, d)}
    theirs = set(nca_output.pod_cells(nca_out, probes))
    cells = len(probes) * len(compared) * (len(compared) - 1)
    only_ours, only_theirs = sorted(ours - theirs, key=str), sorted(theirs - ours, key=str)
    return {"pods": len(reach.pods), "pods_nca_names": len(compared), "cells": cells,
            "allowed_cells": len(ours), "only_netpol": len(only_ours), "only_nca": len(only_theirs),
            "examples": [f"{s} -> {d} {p}" for s, d, p in (only_ours[:3] + only_theirs[:3])]}


def _fastest(runs: list[dict]) -> dict:
    done = [r for r in runs if r["status"] == "ok"]
    if not done:
        return runs[0]
    best = dict(min(done, key=lambda r: float(r["seconds"])))
    if len(runs) > 1:
        best["runs_s"] = [r["seconds"] for r in runs]
    return best


def kube_burner_cluster(pods: int, policies: int, nodes: int) -> tuple[Path, Path]:
    """kube-burner's cluster of this size as JSON and multi-document YAML, generated once into
    benchmarks/.cache (the files compile_scale.py generates and reads for the same shape)."""
    name = f"kube-burner-{pods}p-{policies}q-{nodes}n-s1"
    json_path, yaml_path = CACHE / f"{name}.json", CACHE / f"{name}.yaml"
    if not (json_path.exists() and yaml_path.exists()):
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"generating {name} (once) …", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "kube_burner.py"), "--pods", str(pods), "--policies",
                        str(policies), "--nodes", str(nodes), "-o", str(json_path), "--yaml", str(yaml_path)],
                       check=True)
    return json_path, yaml_path


def compile_all_nodes(work: Path, timeout: float) -> dict:
    """`netpol compile --all-nodes` of the 100k cluster, from YAML and from JSON."""
    pods, policies, nodes = COMPILE_SHAPE
    json_path, yaml_path = kube_burner_cluster(pods, policies, nodes)
    netpol = Path(sys.executable).parent / "netpol"
    row: dict = {"benchmark": "reach_scale", "stage": "compile-all-nodes", "pods": pods, "policies": policies,
                 "nodes": nodes, "yaml_mb": round(yaml_path.stat().st_size / 1e6, 1),
                 "json_mb": round(json_path.stat().st_size / 1e6, 1)}
    for name, path in (("yaml", yaml_path), ("json", json_path)):
        out_dir = work / f"compile-{name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        row[name] = measure([str(netpol), "compile", "-f", str(path), "--all-nodes", "--out-dir", str(out_dir)],
                            work, work / f"compile-{name}.log", timeout=timeout)
        row[name]["rulesets"] = len(list(out_dir.iterdir()))
    same = all((work / "compile-yaml" / f.name).read_bytes() == f.read_bytes()
               for f in (work / "compile-json").iterdir())
    row["yaml_rulesets_same_as_json"] = same
    shutil.rmtree(work / "compile-yaml", ignore_errors=True)
    shutil.rmtree(work / "compile-json", ignore_errors=True)
    return row


def targets(rows: list[dict], compiled: dict | None) -> list[dict]:
    """Issue 18's YAML targets, each with its measured value and whether it is met."""
    def size(pods_policies: tuple[int, int]) -> dict:
        return next((r for r in rows if (r["pods"], r["policies"]) == pods_policies), {})

    out = []
    row = size(VS_NCA_SIZE)
    speedup = row.get("speedup_vs_nca")
    met = (isinstance(speedup, float) and speedup >= VS_NCA_AT_LEAST) or (
        isinstance(speedup, str) and float(speedup.lstrip(">")) >= VS_NCA_AT_LEAST)
    out.append({"benchmark": "reach_scale", "target": "reach from YAML vs NCA, 1,000 pods / 250 policies",
                "value": speedup, "required": f">= {VS_NCA_AT_LEAST}x", "met": bool(row) and met})
    row = size(RATIO_SIZE)
    ratio = row.get("yaml_over_json")
    out.append({"benchmark": "reach_scale", "target": "reach from YAML / from JSON, 5,000 pods / 2,000 policies",
                "value": ratio, "required": f"<= {RATIO_AT_MOST}",
                "met": ratio is not None and ratio <= RATIO_AT_MOST and bool(row.get("yaml_output_same_as_json"))})
    seconds = compiled["yaml"].get("seconds") if compiled and compiled["yaml"]["status"] == "ok" else None
    out.append({"benchmark": "reach_scale", "target": "compile --all-nodes from YAML, 100k pods / 10k policies",
                "value": seconds, "required": f"<= {COMPILE_AT_MOST_S} s",
                "met": seconds is not None and seconds <= COMPILE_AT_MOST_S
                and bool(compiled and compiled.get("yaml_rulesets_same_as_json"))})
    return out


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="PODS/POLICIES,… (default %(default)s)")
    parser.add_argument("--vs-nca", action="store_true", help="also run network-config-analyzer")
    parser.add_argument("--nca-timeout", type=float, default=600.0, help="seconds before NCA is stopped")
    parser.add_argument("--keep", type=Path, help="keep clusters and outputs in this directory")
    parser.add_argument("--yaml", action="store_true",
                        help="kubectl-shaped clusters, as YAML and JSON: netpol on both, NCA on the YAML")
    parser.add_argument("--yaml-targets", action="store_true",
                        help="--yaml, the 100k compile from YAML and JSON, and issue 18's three targets "
                             f"(default sizes then {TARGET_SIZES})")
    parser.add_argument("--repeat", type=int, help="netpol runs per input, the fastest kept (default 3 with --yaml)")
    parser.add_argument("--compile-timeout", type=float, default=600.0, help="seconds before a compile is stopped")
    args = parser.parse_args()
    yaml_too = args.yaml or args.yaml_targets
    sizes = args.sizes if args.sizes != DEFAULT_SIZES or not args.yaml_targets else TARGET_SIZES
    repeat = args.repeat or (3 if yaml_too else 1)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(netpol.__file__).parent)],
                   check=True, stdout=subprocess.DEVNULL)  # as `pip install` leaves a package
    work = args.keep or Path(tempfile.mkdtemp(prefix="netpol-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    compiled = None
    try:
        for size in sizes.split(","):
            pods, policies = (int(x) for x in size.split("/"))
            row = run_size(pods, policies, work.resolve(), args.vs_nca, args.nca_timeout, yaml_too, repeat)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.yaml_targets:
            compiled = compile_all_nodes(work.resolve(), args.compile_timeout)
            print(json.dumps(compiled), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'pods/policies':>14} {'netpol s':>9} {'MB':>7} {'YAML s':>8} {'MB':>7} {'NCA s':>9} {'speed-up':>9}",
          file=sys.stderr)
    for r in rows:
        nca, from_yaml = r.get("nca", {}), r.get("netpol_yaml", {})
        print(f"{r['pods']:>7}/{r['policies']:<6} {r['netpol'].get('seconds', '-'):>9} "
              f"{r['netpol'].get('peak_rss_mb', '-'):>7} {from_yaml.get('seconds', '-'):>8} "
              f"{from_yaml.get('peak_rss_mb', '-'):>7} {nca.get('seconds', '-') if nca else '-':>9} "
              f"{r.get('speedup_vs_nca', '-'):>9}", file=sys.stderr)
    if compiled is not None:
        for name in ("yaml", "json"):
            run = compiled[name]
            print(f"compile --all-nodes 100k/10k/400 from {name.upper()}: {run.get('seconds', '-')} s, "
                  f"peak RSS {run.get('peak_rss_mb', '-')} MB ({run['status'][:60]})", file=sys.stderr)
    if args.yaml_targets:
        print("\nissue 18 YAML targets:", file=sys.stderr)
        for target in targets(rows, compiled):
            print(json.dumps(target), flush=True)
            print(f"  {'MET    ' if target['met'] else 'NOT MET'} {target['target']}: {target['value']} "
                  f"(required {target['required']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
