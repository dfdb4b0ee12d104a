"""Change → enforced-in-kernel latency of `netpol agent`, on a kube-burner-shaped cluster.

    python benchmarks/agent_latency.py [--pods 1000] [--events 200] [--gap 0.15] [--json FILE]

Method. The benchmark makes one network namespace (`np-bench-agent-<6hex>`, always deleted), runs
the in-process API server *inside* it on 127.0.0.1 (`FakeApiServer.start(netns=…)`), loads a
synthetic cluster (`kube_burner.generate`: --pods pods, a tenth as many policies, pods over
pods/250 nodes), and starts `netpol agent --node worker-0` as its own process inside the same
namespace, loading rulesets there with libnftables. After the first sync, it writes one change
at a time to the API server, each touching worker-0's ruleset — a pod added on worker-0, a pod
deleted from it, a policy selecting worker-0 pods added, one deleted, a pod elsewhere joining a
peer set (set elements only) — and times it from the write to the agent's "synced" log line
for the sync that contains it: the first whose `resource_versions` show the change's kind taken
to the change's resourceVersion (agent and benchmark share the clock). Each change is then
confirmed in the kernel (`nft list`), not assumed. Changes are `--gap` seconds apart so that
each is measured alone (the agent coalesces what arrives within its --min-interval).

Reported: p50/p99/max of change → enforced, per kind and overall, next to the agent's own sync
duration (render + libnftables apply, from its "synced" log field) — the floor the watch →
decode → compile path adds to. Baseline, same run: the agent with --replace-on-structure (a
whole table per structural change, what the issue's text describes). Target (issue 5): p99 ≤
100 ms at 1,000 pods.
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kube_burner
from latency_stats import percentile

from netpol.testing.apiserver import FakeApiServer

NODE = "worker-0"


Sync = tuple[float, float, str, dict[str, str]]  # wall time read, seconds, mode, resource_versions
SYNC_TIMEOUT = 60.0  # seconds a change gets to be enforced: a hang bound (it takes milliseconds)


def _revision(version: object) -> int:
    return int(version) if isinstance(version, str) and version.isdigit() else -1


class AgentLog:
    """Follows the agent's JSON log: every successful sync."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.syncs: list[Sync] = []
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "synced":
                with self.cond:
                    self.syncs.append((time.time(), float(record.get("seconds", 0)), record.get("mode", ""),
                                       dict(record.get("resource_versions") or {})))
                    self.cond.notify_all()

    def wait_sync_taking(self, kind: str, revision: int, timeout: float = SYNC_TIMEOUT, what: str = "") -> Sync:
        """The first sync that had taken `kind` at least to `revision`: the one that enforces
        the change written at that revision."""
        return self.wait_sync(lambda s: _revision(s[3].get(kind)) >= revision, timeout, what)

    def wait_sync(self, wanted: Callable[[Sync], bool], timeout: float = SYNC_TIMEOUT, what: str = "") -> Sync:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((s for s in self.syncs if wanted(s)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    said = "".join(line for line in self.lines if not line.startswith("{")) or "".join(self.lines[-3:])
                    raise SystemExit(f"no sync after the change {what}; agent said: {said}")
                self.cond.wait(remaining)


def nft(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True,
                          check=True).stdout


def changes(objects: list[dict[str, Any]], count: int) -> list[tuple[str, Any, str]]:
    """(kind of change, the change as a callable on the API, what to look for in the kernel)."""
    local = [o for o in objects if o["kind"] == "Pod" and o["spec"].get("nodeName") == NODE
             and not o["spec"].get("hostNetwork")]
    remote = [o for o in objects if o["kind"] == "Pod" and o["spec"].get("nodeName") not in (NODE, None)
              and not o["spec"].get("hostNetwork")]
    template = local[0]
    out: list[tuple[str, Any, str]] = []
    for i in range(count):
        kind = ("add-pod", "delete-pod", "add-policy", "delete-policy", "remote-peer")[i % 5]
        n = i // 5
        if kind == "add-pod":
            pod = copy.deepcopy(template)
            pod["metadata"]["name"] = f"bench-{n}"
            ip = f"10.255.{n // 250}.{n % 250 + 1}"
            pod["status"]["podIP"], pod["status"]["podIPs"] = ip, [{"ip": ip}]
            out.append((kind, ("apply", pod), ip))
        elif kind == "delete-pod":
            out.append((kind, ("delete", "Pod", f"bench-{n}", template["metadata"]["namespace"]),
                        f"!10.255.{n // 250}.{n % 250 + 1}"))
        elif kind == "add-policy":
            target = local[n % len(local)]
            policy = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                      "metadata": {"name": f"bench-lock-{n}", "namespace": target["metadata"]["namespace"]},
                      "spec": {"podSelector": {"matchLabels": target["metadata"].get("labels") or {}},
                               "ingress": [{"from": [{"ipBlock": {"cidr": f"10.253.{n % 250}.0/24"}}]}]}}
            out.append((kind, ("apply", policy), f"10.253.{n % 250}.0/24"))  # its own set, in the kernel
        elif kind == "delete-policy":
            target = local[n % len(local)]
            out.append((kind, ("delete", "NetworkPolicy", f"bench-lock-{n}", target["metadata"]["namespace"]),
                        f"!10.253.{n % 250}.0/24"))
        else:  # a pod on another node joining the peer set of `standing_policy`: set elements only
            pod = copy.deepcopy(template)
            pod["metadata"]["name"] = f"bench-peer-{n}"
            pod["metadata"]["labels"] = {"bench-peer": "yes"}
            pod["spec"]["nodeName"] = remote[0]["spec"]["nodeName"]
            ip = f"10.254.{n // 250}.{n % 250 + 1}"
            pod["status"]["podIP"], pod["status"]["podIPs"] = ip, [{"ip": ip}]
            out.append((kind, ("apply", pod), ip))
    return out


def standing_policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Admits pods labelled bench-peer=yes into worker-0's first pod: a peer set on worker-0
    that remote pods can join (the element-only changes)."""
    first = next(o for o in objects if o["kind"] == "Pod" and o["spec"].get("nodeName") == NODE
                 and not o["spec"].get("hostNetwork"))
    return {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": "bench-peers", "namespace": first["metadata"]["namespace"]},
            "spec": {"podSelector": {"matchLabels": first["metadata"].get("labels") or {}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"bench-peer": "yes"}}}]}]}}


@contextmanager
def agent_in_netns(objects: list[dict[str, Any]], prefix: str,
                   *agent_args: str) -> Iterator[tuple[FakeApiServer, AgentLog, str]]:
    """The API server holding `objects` and `netpol agent --node NODE AGENT_ARGS` (its own
    process: `ip netns exec` execs the interpreter, so the PID is the agent's) in a namespace
    `PREFIX-<6hex>` of their own, removed afterwards with everything in it."""
    netns = f"{prefix}-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="netpol-agent-bench-"))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    api = FakeApiServer(bookmark_interval=30)
    proc: subprocess.Popen[str] | None = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        api.start("127.0.0.1", 0, netns=netns)
        api.apply_all(objects)
        kubeconfig = api.kubeconfig(work / "kubeconfig")
        proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "netpol.cli", "agent",
                                 "--node", NODE, "--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0",
                                 *agent_args],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        yield api, AgentLog(proc), netns
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        api.stop()
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def write_change(api: FakeApiServer, change: Any) -> str:
    """Apply or delete, as `changes` describes it; the kind written."""
    if change[0] == "apply":
        api.apply(change[1])
        return str(change[1]["kind"])
    api.delete(*change[1:])
    return str(change[1])


def run(args: argparse.Namespace, replace_on_structure: bool) -> dict[str, Any]:
    shape = kube_burner.Shape.of(args.pods, None, None, 1)
    objects = kube_burner.generate(shape)
    objects.append(standing_policy(objects))
    rows = []
    with agent_in_netns(objects, "np-bench-agent", "--min-interval", str(args.min_interval),
                        *(["--replace-on-structure"] if replace_on_structure else [])) as (api, log, netns):
        first = log.wait_sync(lambda s: True, timeout=120)
        for kind, change, expect in changes(objects, args.events):
            time.sleep(args.gap)
            written = time.time()
            written_kind = write_change(api, change)
            synced_at, sync_seconds, mode, _ = log.wait_sync_taking(written_kind, api.revision, what=f"{kind} {expect}")
            table = nft(netns, "list", "table", "inet", "netpol")
            if (expect.lstrip("!") in table) == expect.startswith("!"):
                raise SystemExit(f"{kind}: after the sync that took the change, the kernel does not match {expect!r} "
                                 "('!': must be gone)")
            rows.append({"kind": kind, "ms": (synced_at - written) * 1000, "sync_ms": sync_seconds * 1000,
                         "mode": mode})

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 2), "p99": round(percentile(values, 0.99), 2),
                "max": round(max(values), 2)}

    by_kind = {k: summary([r["ms"] for r in rows if r["kind"] == k]) for k in sorted({r["kind"] for r in rows})}
    return {"mode": "replace-on-structure" if replace_on_structure else "incremental",
            "pods": args.pods, "policies": shape.policies, "nodes": shape.nodes, "events": len(rows),
            "initial_sync_s": round(first[1], 3), "change_to_enforced_ms": summary([r["ms"] for r in rows]),
            "sync_ms": summary([r["sync_ms"] for r in rows]), "by_kind": by_kind,
            "modes": {m: sum(1 for r in rows if r["mode"] == m) for m in sorted({r["mode"] for r in rows})}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.15, help="seconds between changes")
    parser.add_argument("--min-interval", type=float, default=0.005, help="the agent's --min-interval")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the agent with --replace-on-structure (a full table per structural "
                             "change), in the same run")
    args = parser.parse_args()
    results = [run(args, False)] + ([run(args, True)] if args.baseline else [])
    for result in results:
        print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    for result in results:
        total = result["change_to_enforced_ms"]
        print(f"{result['mode']}: {result['pods']} pods / {result['policies']} policies / {result['nodes']} "
              f"nodes, {result['events']} changes: change → enforced p50 {total['p50']} ms, p99 {total['p99']} ms, "
              f"max {total['max']} ms; the agent's own sync (render + apply) p50 {result['sync_ms']['p50']} ms",
              file=sys.stderr)
        for kind, s in result["by_kind"].items():
            print(f"  {kind:<15} p50 {s['p50']:>7} ms  p99 {s['p99']:>7} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
