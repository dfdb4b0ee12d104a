"""The full reachability map at scale: `netpol reach -o groups` (every relevant port and protocol)
on synthetic clusters, wall time and peak memory, optionally against IBM's network-config-analyzer
(NCA) on the same cluster in the same run.

    python benchmarks/reach_scale.py [--sizes 1000/250,2000/1000,5000/2000] [--vs-nca] [--nca-timeout 600]

Prints one JSON object per line (machine-readable), a summary table on stderr.
NCA is installed into a venv of its own (benchmarks/.nca-venv) on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import nca_output
import synthetic

from netpol.load.manifests import load_state
from netpol.semantics.probes import default_probes
from netpol.semantics.reach import compute_reach

HERE = Path(__file__).parent
NCA_VENV = HERE / ".nca-venv"
DEFAULT_SIZES = "1000/250,2000/1000,5000/2000"


def measure(argv: list[str], cwd: Path, stdout: Path, timeout: float) -> dict[str, float | str]:
    """Run `argv`; wall seconds and the child's own peak RSS (os.wait4), or a timeout."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    env["HOME"] = str(cwd)  # no ~/.kube/config: nothing may talk to a cluster
    start = time.perf_counter()
    errors = stdout.with_suffix(".stderr")
    with stdout.open("wb") as out, errors.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"status": "timeout", "seconds": timeout}
            time.sleep(0.02)
    seconds = time.perf_counter() - start
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


def run_size(pods: int, policies: int, work: Path, vs_nca: bool, nca_timeout: float) -> dict:
    cluster_dir = work / f"cluster-{pods}-{policies}"
    synthetic.write(synthetic.generate(pods, policies), cluster_dir)
    netpol = Path(sys.executable).parent / "netpol"
    ours = measure([str(netpol), "reach", "-f", str(cluster_dir), "-o", "groups"], work,
                   work / f"netpol-{pods}.txt", timeout=600)
    result: dict = {"benchmark": "reach_scale", "pods": pods, "policies": policies,
                    "netpol": ours, "netpol_group_lines": _lines(work / f"netpol-{pods}.txt")}
    if vs_nca:
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
    """Cell by cell on every probe: pod pairs NCA and netpol disagree on (self-pairs excluded)."""
    state = load_state([str(cluster_dir)])
    probes = default_probes(state)
    reach = compute_reach(state, probes)
    ours = {(reach.pods[s].key, reach.pods[d].key, probe)
            for pi, probe in enumerate(probes)
            for s in range(len(reach.pods)) for d in range(len(reach.pods))
            if s != d and reach.allowed(pi, s, d)}
    theirs = set(nca_output.pod_cells(nca_out, probes))
    cells = len(probes) * len(reach.pods) * (len(reach.pods) - 1)
    only_ours, only_theirs = sorted(ours - theirs, key=str), sorted(theirs - ours, key=str)
    return {"cells": cells, "allowed_cells": len(ours), "only_netpol": len(only_ours),
            "only_nca": len(only_theirs),
            "examples": [f"{s} -> {d} {p}" for s, d, p in (only_ours[:3] + only_theirs[:3])]}


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="PODS/POLICIES,… (default %(default)s)")
    parser.add_argument("--vs-nca", action="store_true", help="also run network-config-analyzer")
    parser.add_argument("--nca-timeout", type=float, default=600.0, help="seconds before NCA is stopped")
    parser.add_argument("--keep", type=Path, help="keep clusters and outputs in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="netpol-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes.split(","):
            pods, policies = (int(x) for x in size.split("/"))
            row = run_size(pods, policies, work.resolve(), args.vs_nca, args.nca_timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'pods/policies':>14} {'netpol s':>9} {'MB':>7} {'NCA s':>9} {'speed-up':>9}", file=sys.stderr)
    for r in rows:
        nca = r.get("nca", {})
        print(f"{r['pods']:>7}/{r['policies']:<6} {r['netpol'].get('seconds', '-'):>9} "
              f"{r['netpol'].get('peak_rss_mb', '-'):>7} {nca.get('seconds', '-') if nca else '-':>9} "
              f"{r.get('speedup_vs_nca', '-'):>9}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
