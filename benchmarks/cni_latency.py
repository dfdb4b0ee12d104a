"""CNI plugin latency: ADD / CHECK / DEL of netpol-cni next to Debian's reference `bridge`
plugin, same host-local IPAM, same machine, same run.

    python benchmarks/cni_latency.py [--ops 50] [--rounds 3] [--json FILE]

Method. A node namespace (`np-bench-cni-<6hex>-node`) and, per round and plugin, --ops pod
namespaces are created by this script and always deleted. The timing loop runs in a child
process *inside* the node namespace (as a runtime on a node would), so a measured call is
exactly one exec of the plugin: stdin config, CNI_* environment, wait for exit — no
`ip netns exec` in the clock. Per round, the plugins take turns (ours, reference, ours, ...
interleaved op by op) so machine noise hits both alike: --ops ADDs into fresh pod namespaces,
then --ops CHECKs with each ADD's result as prevResult, then --ops DELs. Ours is installed the
way the README says (the launcher written by `python -m netpol_cni.install`, run by
/usr/bin/python3 -IS when there is one); the reference is /usr/lib/cni/bridge. Both get
`isGateway: true`, host-local with its own dataDir and subnet; the reference gets
`ipMasq: false` (no iptables: ours does not masquerade either).

The same loop also times, interleaved with the plugins, the two things our ADD cannot do
without: starting the interpreter (`python3 -IS -c pass`, the launcher's first line with
nothing to run) and host-local's own ADD (the IPAM plugin alone, its own dataDir; released
again in the DEL loop). The ADD's result needs the address host-local hands out, so
`interpreter start + host-local ADD` is a floor under any ADD of a CPython plugin that
delegates IPAM, however little else it does: the table prints it next to the reference's ADD.

Output: one JSON object per (plugin, operation) on stdout — median, p95, mean, min, max in
milliseconds over all rounds — and a table on stderr, with ours ÷ reference for each median.
Nothing is created in or loaded into the root namespace; no packets are sent."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugin"))

from latency_stats import percentile
from netpol_cni.install import install

REFERENCE = Path("/usr/lib/cni")
OPS = ("ADD", "CHECK", "DEL")
FLOOR = "floor"


def plugin_configs(work: Path) -> dict[str, dict[str, object]]:
    def ipam(name: str, subnet: str) -> dict[str, object]:
        return {"type": "host-local", "dataDir": str(work / "ipam" / name), "ranges": [[{"subnet": subnet}]]}

    return {  # (the third is host-local's own config, for the floor: not a plugin)
        "netpol-cni": {"cniVersion": "1.0.0", "name": "bench-ours", "type": "netpol-cni", "bridge": "cni0",
                       "isGateway": True, "dataDir": str(work / "state"), "ipam": ipam("ours", "10.90.0.0/16")},
        "bridge": {"cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": "cniref0",
                   "isGateway": True, "ipMasq": False, "ipam": ipam("ref", "10.91.0.0/16")},
    }


# ── the child: inside the node namespace ────────────────────────────────────────────────────


def call(plugin: Path | list[str], command: str, conf: dict[str, object], container_id: str, netns: str,
         cni_path: str) -> tuple[float, str]:
    argv = [str(plugin)] if isinstance(plugin, Path) else plugin
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": cni_path}
    stdin = json.dumps(conf)
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} {command} failed: {done.stdout} {done.stderr}")
    return elapsed, done.stdout


def child(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.spec).read_text())
    configs, bin_dir = spec["configs"], spec["bin_dir"]
    times: dict[str, dict[str, list[float]]] = {p: {op: [] for op in OPS} for p in configs}
    times[FLOOR] = {"interpreter": [], "host-local ADD": []}
    plugins = {name: Path(bin_dir) / name for name in configs}
    interpreter = [spec["python"], "-IS", "-c", "pass"]
    ipam_alone, host_local = spec["ipam_alone"], Path(bin_dir) / "host-local"
    for pods in spec["rounds"]:  # pods[plugin] = list of netns paths for this round
        results: dict[tuple[str, int], str] = {}
        for i in range(len(pods["netpol-cni"])):
            for name in configs:
                ms, out = call(plugins[name], "ADD", configs[name], f"c{i}", pods[name][i], bin_dir)
                times[name]["ADD"].append(ms)
                results[name, i] = out
            times[FLOOR]["interpreter"].append(call(interpreter, "ADD", {}, f"c{i}", "", bin_dir)[0])
            netns = pods["netpol-cni"][i]
            times[FLOOR]["host-local ADD"].append(call(host_local, "ADD", ipam_alone, f"c{i}", netns, bin_dir)[0])
        for i in range(len(pods["netpol-cni"])):  # untimed: give host-local's addresses back
            call(host_local, "DEL", ipam_alone, f"c{i}", pods["netpol-cni"][i], bin_dir)
        for op in ("CHECK", "DEL"):
            for i in range(len(pods["netpol-cni"])):
                for name in configs:
                    conf = dict(configs[name], prevResult=json.loads(results[name, i]))
                    ms, _ = call(plugins[name], op, conf, f"c{i}", pods[name][i], bin_dir)
                    times[name][op].append(ms)
    print(json.dumps(times))


# ── the parent: namespaces, install, report ─────────────────────────────────────────────────


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    tag = secrets.token_hex(3)
    node = f"np-bench-cni-{tag}-node"
    made: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="netpol-cni-bench-"))
    try:
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        install(work / "bin", None, python)  # the default layout: the package found from the launcher
        (work / "bin" / "bridge").symlink_to(REFERENCE / "bridge")
        (work / "bin" / "host-local").symlink_to(REFERENCE / "host-local")
        configs = plugin_configs(work)
        ipam_alone = {"cniVersion": "1.0.0", "name": "bench-ipam", "type": "host-local",
                      "ipam": {"type": "host-local", "dataDir": str(work / "ipam" / "alone"),
                               "ranges": [[{"subnet": "10.92.0.0/16"}]]}}
        subprocess.run(["ip", "netns", "add", node], check=True)
        made.append(node)
        rounds = []
        for r in range(args.rounds):
            pods: dict[str, list[str]] = {}
            for name in configs:
                pods[name] = []
                for i in range(args.ops):
                    pod = f"np-bench-cni-{tag}-{name[:3]}{r}-{i}"
                    subprocess.run(["ip", "netns", "add", pod], check=True)
                    made.append(pod)
                    pods[name].append(f"/run/netns/{pod}")
            rounds.append(pods)
        spec = work / "spec.json"
        spec.write_text(json.dumps({"configs": configs, "bin_dir": str(work / "bin"), "rounds": rounds,
                                    "python": python, "ipam_alone": ipam_alone}))
        done = subprocess.run(["ip", "netns", "exec", node, sys.executable, __file__, "--child", str(spec)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"timing loop failed: {done.stderr.strip()}")
        times = json.loads(done.stdout)
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for plugin, per_op in times.items():
        for op, values in per_op.items():
            rows.append({"plugin": plugin, "op": op, "n": len(values),
                         "median_ms": round(statistics.median(values), 2),
                         "p95_ms": round(percentile(values, 0.95), 2),
                         "mean_ms": round(statistics.fmean(values), 2),
                         "min_ms": round(min(values), 2), "max_ms": round(max(values), 2)})
    return rows


def report(rows: list[dict[str, object]]) -> None:
    by = {(r["plugin"], r["op"]): r for r in rows}
    print(f"{'op':<6} {'netpol-cni median/p95':>22} {'bridge median/p95':>20} {'ours ÷ ref':>11}", file=sys.stderr)
    for op in OPS:
        ours, ref = by["netpol-cni", op], by["bridge", op]
        ratio = float(ours["median_ms"]) / float(ref["median_ms"])  # type: ignore[arg-type]
        print(f"{op:<6} {ours['median_ms']:>12} / {ours['p95_ms']:<8} {ref['median_ms']:>10} / {ref['p95_ms']:<8}"
              f" {ratio:>10.2f}", file=sys.stderr)
    start, ipam = by[FLOOR, "interpreter"]["median_ms"], by[FLOOR, "host-local ADD"]["median_ms"]
    floor = float(start) + float(ipam)  # type: ignore[arg-type]
    print(f"floor of a CPython ADD: interpreter start {start} + host-local ADD {ipam} = {floor:.2f} ms "
          f"(reference ADD {by['bridge', 'ADD']['median_ms']} ms)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=50, help="ADDs (then CHECKs, DELs) per plugin per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.spec = args.child
        child(args)
        return
    if os.geteuid() != 0 or not (REFERENCE / "bridge").exists():
        raise SystemExit("needs root and Debian's containernetworking-plugins (/usr/lib/cni/bridge)")
    rows = run(args)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows)


if __name__ == "__main__":
    main()
