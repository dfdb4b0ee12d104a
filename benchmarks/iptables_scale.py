"""The iptables backend at scale, next to nftables in the same run: render time for every node,
bundle sizes, and the kernel load time of the largest node's bundle.

    python benchmarks/iptables_scale.py [--sizes 1k,10k,100k] [--json FILE]

Per size (kube-burner-shaped clusters, `kube_burner.py`, cached in benchmarks/.cache/ like
compile_scale.py's; a size is PODS with `k`, policies pods/10, nodes pods/250): the cluster is
loaded and compiled once (`compile_cluster`), then every node is rendered by both backends
(timed separately), and the largest node's output is loaded into a network namespace this
script creates and always deletes (`np-bench-ipt-<6hex>`): `nft -f` for nftables, `ipset
restore -exist` + `iptables-restore --noflush` + `ip6tables-restore --noflush` for iptables
(`netpol.dataplane.iptables`, which also adds the hook and sweeps stale objects). One JSON object
per size on stdout, a table on stderr. Nothing touches the root namespace.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kube_burner

from netpol.backends import iptables, nftables
from netpol.compile.compiler import compile_cluster
from netpol.dataplane.iptables import apply_iptables
from netpol.gc import without_cyclic_gc
from netpol.load.manifests import load_state

CACHE = Path(__file__).resolve().parent / ".cache"


def cluster_file(pods: int) -> Path:
    shape = kube_burner.Shape.of(pods)
    path = CACHE / f"{shape.name}.json"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        kube_burner.write_json(kube_burner.generate(shape), path, None)  # the same file compile_scale.py caches
    return path


def parse_size(text: str) -> int:
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def measure(pods: int) -> dict[str, Any]:
    path = cluster_file(pods)
    with without_cyclic_gc():
        started = time.perf_counter()
        programs = compile_cluster(load_state([str(path)]))
        compiled = time.perf_counter() - started
        largest, largest_text, nft_bytes = "", "", 0  # keep only the largest: 100k pods render to GBs
        started = time.perf_counter()
        for name, program in programs.items():
            text = nftables.render(program)
            nft_bytes += len(text)
            if len(text) > len(largest_text):
                largest, largest_text = name, text
        nft_s = time.perf_counter() - started
        ipt_bytes = 0
        started = time.perf_counter()
        for name, program in programs.items():
            rendered = iptables.render(program)
            ipt_bytes += len(rendered.ipset) + len(rendered.iptables) + len(rendered.ip6tables)
            if name == largest:
                bundle = rendered
        ipt_s = time.perf_counter() - started
    netns = f"np-bench-ipt-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=largest_text, text=True,
                       check=True, capture_output=True)
        nft_load = time.perf_counter() - started
        started = time.perf_counter()
        apply_iptables(bundle, programs[largest], netns)
        ipt_load = time.perf_counter() - started
        started = time.perf_counter()
        apply_iptables(bundle, programs[largest], netns)  # again: what a sync that changed nothing costs
        ipt_reload = time.perf_counter() - started
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    return {"pods": pods, "nodes": len(programs), "compile_all_s": round(compiled, 2),
            "nftables": {"render_all_s": round(nft_s, 2), "bytes_all": nft_bytes,
                         "largest_bytes": len(largest_text), "load_largest_s": round(nft_load, 3)},
            "iptables": {"render_all_s": round(ipt_s, 2), "bytes_all": ipt_bytes,
                         "largest_bytes": len(bundle.ipset) + len(bundle.iptables) + len(bundle.ip6tables),
                         "largest_rules": bundle.iptables.count("\n-A "), "largest_sets": bundle.ipset.count("\nswap "),
                         "load_largest_s": round(ipt_load, 3), "reload_largest_s": round(ipt_reload, 3)},
            "largest_node": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1k,10k,100k")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        row = measure(parse_size(size))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\n{'pods':>7} {'nodes':>5} {'compile s':>9} | {'nft render s':>12} {'nft MB':>7} {'nft -f s':>8} | "
          f"{'ipt render s':>12} {'ipt MB':>7} {'restore s':>9} {'again s':>7}", file=sys.stderr)
    for r in rows:
        n, i = r["nftables"], r["iptables"]
        print(f"{r['pods']:>7} {r['nodes']:>5} {r['compile_all_s']:>9} | {n['render_all_s']:>12} "
              f"{n['bytes_all'] / 1e6:>7.1f} {n['load_largest_s']:>8} | {i['render_all_s']:>12} "
              f"{i['bytes_all'] / 1e6:>7.1f} {i['load_largest_s']:>9} {i['reload_largest_s']:>7}", file=sys.stderr)


if __name__ == "__main__":
    main()
