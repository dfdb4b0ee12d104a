"""Memory and CPU of the real `netpol agent` process: what the DaemonSet's resource requests and
limits are taken from (netpol/deploy/manifests.py).

    python benchmarks/agent_resources.py [--sizes 10000/1000,10000/10000] [--changes 100] [--gap 0.1] [--json FILE]

Method. Per size (PODS/POLICIES, kube-burner-shaped, 250 pods a node), agent_latency.py's
set-up: a network namespace of its own (`np-bench-res-<6hex>`, always deleted), the in-process
API server inside it, `netpol agent --node <first node>` as its own process there. Read from
/proc/<agent>/: CPU time (utime + stime) and VmHWM when the first sync is logged; CPU over 10 s
of quiet, 5 s later (idle); CPU per wall second while --changes changes arrive one at a time,
each --gap s after the previous one's sync was logged (agent_latency.py's change mix: local pods
and policies added and deleted, remote pods joining a peer set), and the rate that made; VmHWM
and VmRSS at the end. One JSON row per size on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import agent_latency
import kube_burner
from agent_latency import agent_in_netns, changes, standing_policy, write_change

SETTLE_SECONDS = 5.0  # after the first sync: its paced garbage collection (netpol.gc) runs on
IDLE_SECONDS = 10.0


def proc_status(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) / 1024
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pods: int, policies: int, args: argparse.Namespace) -> dict[str, Any]:
    shape = kube_burner.Shape.of(pods, policies)
    objects = kube_burner.generate(shape)
    objects.append(standing_policy(objects))  # on agent_latency.NODE, which main() sets
    started = time.monotonic()
    with agent_in_netns(objects, "np-bench-res") as (api, log, _):
        pid = log.proc.pid
        first = log.wait_sync(lambda s: True, timeout=600)
        row: dict[str, Any] = {"pods": pods, "policies": policies, "nodes": shape.nodes,
                               "first_sync_wall_s": round(time.monotonic() - started, 2),
                               "first_sync_cpu_s": round(cpu_seconds(pid), 2),
                               "first_sync_apply_s": round(first[1], 2),
                               "peak_rss_after_first_sync_mb": round(proc_status(pid)["VmHWM"], 1)}
        time.sleep(SETTLE_SECONDS)
        idle_from = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        row["idle_cores"] = round((cpu_seconds(pid) - idle_from) / IDLE_SECONDS, 4)
        churn_from, wall_from = cpu_seconds(pid), time.monotonic()
        for kind, change, _ in changes(objects, args.changes):
            time.sleep(args.gap)
            log.wait_sync_taking(write_change(api, change), api.revision, what=kind)
        row["churn_changes_per_s"] = round(args.changes / (time.monotonic() - wall_from), 1)
        row["churn_cores"] = round((cpu_seconds(pid) - churn_from) / (time.monotonic() - wall_from), 3)
        status = proc_status(pid)
        row["peak_rss_mb"], row["rss_end_mb"] = round(status["VmHWM"], 1), round(status["VmRSS"], 1)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000/1000,10000/10000", help="PODS/POLICIES,… (default %(default)s)")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between changes")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        pods, policies = (int(n) for n in size.split("/"))
        nodes = kube_burner.Shape.of(pods, policies).nodes
        agent_latency.NODE = f"worker-{0:0{len(str(nodes - 1))}d}"  # kube_burner's first node
        rows.append(measure(pods, policies, args))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
