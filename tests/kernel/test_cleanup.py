"""`netpol cleanup --node` removes from a node what netpol put there and nothing else. In a
network namespace this test creates (never the machine's own): our nftables table and
netpol-cni's, the iptables backend's chains, FORWARD jump and sets (both flavours), our routes
`proto 199`, and the CNI files install-cni wrote — next to a foreign table of every family
(one named `netpol`), foreign chains and sets, one whose name shares our prefix, foreign routes
and foreign CNI files. After the cleanup only ours are gone; a second run finds nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import render as render_nftables
from netpol.compile.compiler import compile_cluster
from netpol.dataplane.iptables import apply_iptables
from netpol.deploy.cni_install import CniLayout, install_cni
from netpol.load.manifests import load_state
from tests.conftest import run_cli
from tests.kernel.conftest import fresh_netns, nft_load
from tests.unit.deploy.test_cni_install import fake_host, node_doc

IPTABLES_FLAVOURS = [f for f in ("nft", "legacy") if shutil.which(f"iptables-{f}-restore")] \
    if shutil.which("ipset") else []
PLUGIN_TABLE = """
table bridge netpol_cni {
	set ports { type ifname; }
	chain prerouting {
		type filter hook prerouting priority -200; policy accept;
		iifname != @ports accept
	}
}
"""
FOREIGN_TABLES = """
table inet someone_else {
	chain forward { type filter hook forward priority 0; policy accept; }
}
table ip netpol {
	chain c { }
}
table bridge other {
}
"""


@pytest.fixture
def netns():
    """A namespace of this test's own, deleted after it, and `ip netns list` as before."""
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    generator = fresh_netns("netpol-test-cleanup")
    name = next(generator)
    try:
        yield name
    finally:
        generator.close()
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert name not in after and name not in before


def ns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True).stdout


def routes(netns: str) -> list[str]:
    return sorted(line.strip() for family in ("-4", "-6")
                  for line in subprocess.run(["ip", "-n", netns, family, "route", "show", "table", "main"],
                                             capture_output=True, text=True, check=True).stdout.splitlines()
                  if "via" in line)


def tables(netns: str) -> list[str]:
    return sorted(ns(netns, "nft", "list", "tables").splitlines())


def iptables_state(netns: str) -> dict[str, str]:
    state = {f"{base}-{flavour}": ns(netns, f"{base}-{flavour}", "-w", "-S")
             for flavour in IPTABLES_FLAVOURS for base in ("iptables", "ip6tables")}
    if IPTABLES_FLAVOURS:
        state["ipset"] = " ".join(sorted(ns(netns, "ipset", "list", "-n").split()))
    return state


def build_node(netns: str, example_path: str) -> None:
    """Ours and foreign objects of every kind, in `netns`."""
    for argv in (["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], ["link", "set", "eth0", "up"],
                 ["link", "set", "eth1", "up"], ["addr", "add", "192.0.2.1/24", "dev", "eth0"],
                 ["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"],
                 ["route", "add", "10.244.1.0/24", "via", "192.0.2.2", "proto", "199"],
                 ["route", "add", "10.244.2.0/24", "via", "192.0.2.3", "proto", "199"],
                 ["-6", "route", "add", "fd00:10:244:1::/64", "via", "2001:db8::2", "proto", "199"],
                 ["route", "add", "10.99.0.0/24", "via", "192.0.2.9"],
                 ["route", "add", "10.98.0.0/24", "via", "192.0.2.8", "proto", "200"],
                 ["-6", "route", "add", "fd00:99::/64", "via", "2001:db8::9"]):
        subprocess.run(["ip", "-n", netns, *argv], check=True)
    program = compile_cluster(load_state([example_path]))["node-a"]
    nft_load(netns, render_nftables(program) + PLUGIN_TABLE + FOREIGN_TABLES)
    for flavour in IPTABLES_FLAVOURS:
        apply_iptables(render_iptables(program), program, netns, variant=flavour)
        for base in ("iptables", "ip6tables"):
            for chain in ("SOMEONE-ELSE", "NP-FOREIGN"):
                ns(netns, f"{base}-{flavour}", "-w", "-N", chain)
                ns(netns, f"{base}-{flavour}", "-w", "-A", "FORWARD", "-j", chain)
    if IPTABLES_FLAVOURS:
        ns(netns, "ipset", "create", "someone-else", "hash:ip")
        ns(netns, "ipset", "create", "pods-not-ours", "hash:ip")


def build_files(root: Path, image_host_local: Path) -> dict[Path, str]:
    """install-cni's files under `root`, and foreign ones beside them (returned)."""
    install_cni(CniLayout(fake_host(root)), lambda: node_doc("10.244.0.0/24"), source="test",
                host_local=image_host_local)
    foreign = {root / "opt/cni/bin/bridge": "the reference bridge plugin",
               root / "opt/cni/bin/netpol-cni.orig": "a copy someone kept",
               root / "opt/cni/lib/other-plugin/lib.py": "another plugin's library",
               root / "etc/cni/net.d/99-loopback.conf": json.dumps({"name": "lo", "type": "loopback"})}
    for path, text in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return foreign


def test_cleanup_removes_ours_and_only_ours(netns, tmp_path, example_path):
    build_node(netns, example_path)
    image_host_local = tmp_path / "host-local"
    image_host_local.write_bytes(b"pretend host-local")
    root = tmp_path / "host"
    foreign = build_files(root, image_host_local)
    assert "table inet netpol" in tables(netns) and "table bridge netpol_cni" in tables(netns)
    if IPTABLES_FLAVOURS:
        assert all("NETPOL-FORWARD" in listed for name, listed in iptables_state(netns).items() if name != "ipset")

    code, out, err = run_cli("cleanup", "--node", "--netns", netns, "--host-root", str(root))
    assert code == 0, err

    assert tables(netns) == sorted(["table inet someone_else", "table ip netpol", "table bridge other",
                                    *(["table ip filter", "table ip6 filter"] if "nft" in IPTABLES_FLAVOURS else [])])
    assert routes(netns) == sorted(["10.99.0.0/24 via 192.0.2.9 dev eth0",
                                    "10.98.0.0/24 via 192.0.2.8 dev eth0 proto 200",
                                    "fd00:99::/64 via 2001:db8::9 dev eth0 metric 1024 pref medium"])
    for name, listed in iptables_state(netns).items():
        if name == "ipset":
            assert listed == "pods-not-ours someone-else"
            continue
        assert "NETPOL" not in listed and "NP-I-" not in listed and "NP-E-" not in listed, name
        assert "-A FORWARD -j SOMEONE-ELSE" in listed and "-A FORWARD -j NP-FOREIGN" in listed, name
    left = sorted(p for p in root.rglob("*") if p.is_file() and "usr" not in p.relative_to(root).parts)
    assert left == sorted(foreign)
    assert "/etc/cni/net.d/10-netpol.conflist" in out and "nft table inet netpol" in out and \
        "route 10.244.1.0/24 proto 199" in out

    code, out, err = run_cli("cleanup", "--node", "--netns", netns, "--host-root", str(root))
    assert (code, out) == (0, "nothing of netpol's on this node\n"), err


def test_a_step_that_fails_is_reported_and_the_others_still_run(netns, tmp_path):
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    nft_load(netns, "table inet netpol { }\n")
    root = tmp_path / "host"
    (root / "opt/cni/lib").mkdir(parents=True)
    (root / "opt/cni/lib/netpol-cni").write_text("a file where our directory should be")
    code, _, err = run_cli("cleanup", "--node", "--netns", "netpol-test-no-such-namespace",
                             "--host-root", str(root))
    assert code == 1
    assert "netpol: cleanup: nftables: network namespace netpol-test-no-such-namespace" in err
    assert "table inet netpol" in tables(netns)  # another namespace: untouched
