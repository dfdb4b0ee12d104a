"""Rulesets that must not grow with pods × rules (issue 14, item 8): three inputs that amplified,
each compiled for one node as its agent compiles it, printed, and loaded with `nft -f` into a
network namespace this script creates and always deletes (`np-amp-<6hex>`).

    python benchmarks/amplification.py [--baseline REF] [--scale F] [--load-timeout S] [--json FILE]

Inputs (at --scale 1):
  identical-named-port-policies   10,000 pods on 40 nodes, each declaring port `http`; 100 policies
                                  alike but for their names, in the measured node's namespace,
                                  egress to `namespaceSelector: {}` on the named port
  one-policy-5000-rules           one policy selecting the 250 pods of the measured node, 5,000
                                  ingress rules (50 peer selectors × distinct ports)
  select-all-named-port-policies  5,000 pods on the measured node; 200 select-all policies, egress
                                  on a named port to anywhere (each destination pod's number)

Per input and code version: the ruleset's bytes, sets, set elements, chains and rules; compile
and render seconds; the load time into a fresh namespace (or "timeout"); the iptables backend's
bundle size and rules (`iptables_bytes`, `iptables_rules`). `--baseline REF` runs
the same measurements with the code of git revision REF (extracted with `git archive` into a
temporary folder, imported through PYTHONPATH) in the same run, interleaved with the current
code. One JSON document on stdout (and in --json FILE), a table on stderr. Nothing touches the
root namespace. Target: every input loads in ≤ 5 s.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The code under test: the child processes run with the measured version on PYTHONPATH.
from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import render
from netpol.compile.compiler import compile_node
from netpol.gc import without_cyclic_gc
from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, ContainerPort, IPAddress, NetworkPolicy, Peer, Pod, PolicyPort, Rule

REPO = Path(__file__).resolve().parent.parent
NODE = "node-0"
TARGET_LOAD_S = 5.0


# ── the inputs (model objects only: the same code builds them for the baseline) ──────────────

def _ip(index: int) -> IPAddress:
    return ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.128.0.10")) + index)


def _scaled(count: int, scale: float, least: int = 1) -> int:
    return max(least, round(count * scale))


def identical_named_port_policies(scale: float) -> ClusterState:
    """100 identical named-port egress policies: one set per policy was 100 identical sets."""
    nodes, per_node = _scaled(40, scale, 2), 250 if scale >= 1 else _scaled(250, scale, 5)
    http = (ContainerPort(8080, "TCP", "http"),)
    pods = [Pod(f"team-{n}", f"pod-{i}", Labels({"app": f"app-{i % 10}"}), (_ip(n * per_node + i),),
                f"node-{n}", ports=http) for n in range(nodes) for i in range(per_node)]
    rule = Rule((Peer(namespace_selector=LabelSelector()),), (PolicyPort("TCP", "http"),))
    policies = [NetworkPolicy("team-0", f"egress-http-{k}", LabelSelector(), egress=(rule,),
                              policy_types=("Ingress", "Egress")) for k in range(_scaled(100, scale, 2))]
    return ClusterState.build(pods=pods, policies=policies)


def one_policy_5000_rules(scale: float) -> ClusterState:
    """One policy over the node's 250 pods with 5,000 rules: a chain per pod printed them 250 times."""
    servers, rules = _scaled(250, scale, 2), _scaled(5000, scale, 10)
    pods = [Pod("app", f"server-{i}", Labels({"tier": "server"}), (_ip(i),), NODE) for i in range(servers)]
    pods += [Pod("app", f"client-{i}", Labels({"tier": "client", "role": f"r-{i % 50}"}), (_ip(10_000 + i),),
                 "node-1") for i in range(500)]
    ingress = tuple(Rule((Peer(LabelSelector(Labels({"role": f"r-{i % 50}"}))),), (PolicyPort("TCP", 10_000 + i),))
                    for i in range(rules))
    policy = NetworkPolicy("app", "servers", LabelSelector(Labels({"tier": "server"})), ingress=ingress,
                           policy_types=("Ingress",))
    return ClusterState.build(pods=pods, policies=[policy])


def select_all_named_port_policies(scale: float) -> ClusterState:
    """200 select-all named-port policies over a 5,000-pod node: did not load in 300 s."""
    count = _scaled(5000, scale, 10)
    http = (ContainerPort(8080, "TCP", "http"),)
    pods = [Pod("big", f"pod-{i}", Labels({"app": f"app-{i % 20}"}), (_ip(i),), NODE, ports=http)
            for i in range(count)]
    rule = Rule((), (PolicyPort("TCP", "http"),))
    policies = [NetworkPolicy("big", f"select-all-{k}", LabelSelector(), egress=(rule,),
                              policy_types=("Ingress", "Egress")) for k in range(_scaled(200, scale, 2))]
    return ClusterState.build(pods=pods, policies=policies)


INPUTS: dict[str, Callable[[float], ClusterState]] = {
    "identical-named-port-policies": identical_named_port_policies,
    "one-policy-5000-rules": one_policy_5000_rules,
    "select-all-named-port-policies": select_all_named_port_policies,
}


# ── one measurement, in a child process (the code under test on its PYTHONPATH) ──────────────

def ruleset_counts(text: str) -> dict[str, int]:
    """Sets, set and map elements, chains (but `forward`) and rules, read off the script."""
    counts = {"sets": 0, "set_elements": 0, "map_elements": 0, "chains": 0, "rules": 0}
    in_chain = False
    for line in text.splitlines():
        if line.startswith(("\tset ", "\tmap ")):
            kind = "set_elements" if line.startswith("\tset ") else "map_elements"
            counts["sets"] += kind == "set_elements"
            found = re.search(r"elements = \{ (.*) \};", line)
            counts[kind] += len(found.group(1).split(", ")) if found else 0
        elif line.startswith("\tchain "):
            in_chain = not line.startswith("\tchain forward ")
            counts["chains"] += in_chain
        elif in_chain and line.startswith("\t\t") and not line.startswith(("\t\tcomment ", "\t\ttype ")):
            counts["rules"] += 1
    return counts


def child(name: str, scale: float, out: Path) -> dict[str, Any]:
    state = INPUTS[name](scale)
    with without_cyclic_gc():
        started = time.perf_counter()
        program = compile_node(state, NODE)
        compiled = time.perf_counter() - started
        started = time.perf_counter()
        text = render(program)
        rendered = time.perf_counter() - started
        bundle = render_iptables(program)  # the other backend, for its size
    out.write_text(text)
    return {"pods": len(state.pods), "policies": len(state.policies), "node_pods": len(program.pods),
            "compile_s": round(compiled, 3), "render_s": round(rendered, 3), "bytes": len(text.encode()),
            **ruleset_counts(text), "iptables_bytes": sum(len(t.encode()) for t in (bundle.ipset, bundle.iptables, bundle.ip6tables)),
            "iptables_rules": bundle.iptables.count("\n-A ")}


# ── the parent: code versions, namespaces, the load ─────────────────────────────────────────

@contextmanager
def baseline_tree(ref: str | None) -> Iterator[Path | None]:
    """The code of git revision `ref`, extracted into a temporary folder (no worktree, no checkout)."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="np-amp-baseline-") as folder:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "netpol"],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def measure(name: str, scale: float, code: Path, label: str, load_timeout: float, kernel: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"input": name, "code": label, "scale": scale}
    with tempfile.TemporaryDirectory(prefix="np-amp-") as work:
        out = Path(work) / "ruleset.nft"
        env = dict(os.environ, PYTHONPATH=str(code))
        done = subprocess.run([sys.executable, __file__, "--child", name, "--scale", str(scale), "--out-nft", str(out)],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return row | {"status": "error", "error": done.stderr[-2000:]}
        row |= json.loads(done.stdout)
        if kernel:
            row["load"] = load(out, load_timeout)
        row["status"] = "ok"
    return row


def load(ruleset: Path, timeout: float) -> dict[str, Any]:
    """`nft -f` into a fresh namespace, timed; the namespace is always deleted."""
    netns = f"np-amp-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        started = time.perf_counter()
        try:
            done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", str(ruleset)], capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": timeout}
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"status": "refused", "error": done.stderr[-2000:]}
        return {"status": "ok", "seconds": round(seconds, 3), "target_met": seconds <= TARGET_LOAD_S}
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'input':32} {'code':9} {'MB':>8} {'sets':>6} {'set elems':>10} {'chains':>7} {'rules':>9} "
            f"{'compile s':>9} {'render s':>8} {'load s':>8} {'ipt MB':>8} {'ipt rules':>9}")
    lines = [head]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['input']:32} {r['code']:9} {r.get('status')}")
            continue
        loaded = r.get("load", {})
        load_text = f"{loaded['seconds']:.2f}" if loaded.get("status") == "ok" else loaded.get("status", "-")
        lines.append(f"{r['input']:32} {r['code']:9} {r['bytes'] / 1e6:8.2f} {r['sets']:6} {r['set_elements']:10} "
                     f"{r['chains']:7} {r['rules']:9} {r['compile_s']:9.2f} {r['render_s']:8.2f} {load_text:>8} "
                     f"{r['iptables_bytes'] / 1e6:8.2f} {r['iptables_rules']:9}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REF", help="also measure git revision REF's code (e.g. be3578c)")
    parser.add_argument("--scale", type=float, default=1.0, help="input sizes × F (CI: 0.02)")
    parser.add_argument("--inputs", default=",".join(INPUTS), help="comma-separated (default: all)")
    parser.add_argument("--load-timeout", type=float, default=120.0, help="seconds before a load is given up")
    parser.add_argument("--no-kernel", action="store_true", help="skip loading the rulesets")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=sorted(INPUTS), help=argparse.SUPPRESS)
    parser.add_argument("--out-nft", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.scale, args.out_nft)))
        return 0
    rows = []
    with baseline_tree(args.baseline) as old:
        versions = [("current", REPO)] + ([(f"baseline {args.baseline}", old)] if old is not None else [])
        for name in args.inputs.split(","):
            for label, code in versions:  # interleaved: drift hits both alike
                rows.append(measure(name, args.scale, code, label.split()[0], args.load_timeout, not args.no_kernel))
                print(table(rows[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    result = {"baseline": args.baseline, "scale": args.scale, "target_load_s": TARGET_LOAD_S, "rows": rows}
    print(table(rows), file=sys.stderr)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
