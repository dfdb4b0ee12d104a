"""The iptables backend without a kernel: chain names within iptables' limits, ipBlocks as the
fewest CIDRs hash:net holds, multiport splits, and the three payload files `compile` writes. In
the kernel (loading, verify cell for cell): tests/kernel/test_iptables.py."""

from __future__ import annotations

import ipaddress
import os
import shutil

import pytest

from netpol.backends.iptables import IptablesBundle, _cidrs, _port_groups, chain_name
from netpol.cli import main
from netpol.compile.ir import Allow, DirectionProgram, PortMatch
from tests.kernel.conftest import fresh_netns

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ipset") is None
                                  or shutil.which("iptables-restore") is None,
                                  reason="needs root, ipset and iptables (make test installs them)")
netns = pytest.fixture(fresh_netns)


# ── the payloads (pure) ─────────────────────────────────────────────────────────────────────


def test_chain_names_fit_iptables_and_differ_per_side_and_kind():
    sides = [DirectionProgram((f"namespace-{i}/a-very-long-policy-name-{'x' * 200}",)) for i in range(50)]
    names = {chain_name(kind, side) for side in sides for kind in ("ingress", "egress", "claimant")}
    assert len(names) == 150 and all(len(n) <= 28 for n in names)
    assert chain_name("ingress", DirectionProgram(sides[0].isolated_by)) == chain_name("ingress", sides[0])


def test_everything_becomes_two_halves_because_hash_net_refuses_a_zero_prefix():
    assert _cidrs(4, 0, 2**32 - 1) == ["0.0.0.0/1", "128.0.0.0/1"]
    assert _cidrs(6, 0, 2**128 - 1) == ["::/1", "8000::/1"]
    low, high = int(ipaddress.ip_address("0.0.0.0")), int(ipaddress.ip_address("9.255.255.255"))
    assert _cidrs(4, low, high) == ["0.0.0.0/5", "8.0.0.0/7"]


def test_ports_are_split_into_multiport_matches_of_at_most_fifteen():
    ports = (*(PortMatch("TCP", p) for p in range(1000, 1020)), PortMatch("TCP", 2000, 2100), PortMatch("UDP"))
    groups = _port_groups(Allow("origin", None, ports))
    tcp = [chunk for proto, chunk in groups if proto == "tcp"]
    assert ("udp", None) in groups
    assert all(sum(2 if ":" in p else 1 for p in chunk) <= 15 for chunk in tcp if chunk is not None)
    assert sorted(p for chunk in tcp if chunk for p in chunk) == sorted([*map(str, range(1000, 1020)), "2000:2100"])


def test_compile_writes_the_three_files(example_path, tmp_path):
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--node", "node-a",
                 "-o", str(tmp_path / "a")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["ip6tables.restore", "ipset.restore", "iptables.restore"]
    text = (tmp_path / "a" / "iptables.restore").read_text()
    assert text.startswith("# netpol iptables rules") and "*filter" in text and text.rstrip().endswith("COMMIT")
    assert '-m comment --comment "NetworkPolicy db/allow-postgres spec.ingress[0]"' in text
    sets = (tmp_path / "a" / "ipset.restore").read_text().splitlines()
    # PITFALLS 14: never flush-then-add a live set; fill a temporary one and swap it in
    live = [line.split()[1] for line in sets if line.startswith("swap ")]
    assert live and all(f"swap {name}.new {name}" in sets for name in [n.removesuffix(".new") for n in live])
    assert not any(line.startswith(("flush ", "add ")) and ".new" not in line.split()[1] for line in sets)
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--all-nodes",
                 "--out-dir", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["node-a", "node-b"]
    assert main(["compile", "-f", example_path, "--backend", "iptables", "--node", "node-a"]) == 2  # no -o


def test_the_bundle_names_its_payloads_by_family():
    bundle = IptablesBundle("sets", "v4", "v6")
    assert (bundle.by_family(4), bundle.by_family(6)) == ("v4", "v6")
