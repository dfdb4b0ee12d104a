"""Loading an iptables bundle (`netpol.backends.iptables`) into a network namespace, in the order
the README gives: `ipset restore -exist` (each set's new contents swapped in whole), both filter
payloads checked (`iptables-restore --test`, which needs the sets to exist), then committed
with `iptables-restore --noflush` and `ip6tables-restore --noflush` (each one atomic commit of
our chains), the FORWARD → NETPOL-FORWARD jump added once (with cluster-policy tier rules, the
INPUT → NETPOL-INPUT and OUTPUT → NETPOL-OUTPUT jumps too), and finally our chains and sets the
new rules no longer use removed (the INPUT and OUTPUT jumps with their chains, once the tier
rules are gone). A filter payload the kernel refuses raises ApplyError before
any rule changes; the previous rules stay — with the new set contents, which is where this
backend is less atomic than nftables (one transaction for sets and rules together).

Binaries are run with argument lists (never a shell), inside `netns` via `ip netns exec` when a
named namespace is given."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from netpol.backends.iptables import (
    OUR_SET,
    SET_PREFIXES,
    IptablesBundle,
    declared_sets,
    ensure_hook_commands,
    hooks,
    removal_payload,
    stale_chain_payload,
)
from netpol.compile.ir import NodeProgram
from netpol.errors import ApplyError, NftMessage, UsageError

# Debian's default `iptables` is the nf_tables flavour; `legacy` drives the old x_tables one.
VARIANTS = ("nft", "legacy")


def binaries(variant: str, version: int) -> tuple[str, str]:
    """(restore, list) binaries of a variant and family."""
    base = "iptables" if version == 4 else "ip6tables"
    suffix = "-legacy" if variant == "legacy" else ""
    return f"{base}{suffix}-restore", f"{base}{suffix}"


def _run(netns: str | None, argv: Sequence[str], stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, *argv], input=stdin, text=True, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise ApplyError(argv[0], [NftMessage(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")])
    return done


def apply_iptables(bundle: IptablesBundle, program: NodeProgram, netns: str | None = None,
                   variant: str = "nft") -> None:
    if variant not in VARIANTS:
        raise UsageError(f"iptables variant {variant!r}: one of {', '.join(VARIANTS)}")
    _run(netns, ["ipset", "restore", "-exist"], bundle.ipset)  # the rules below refer to these sets
    for version in (4, 6):
        restore, _ = binaries(variant, version)
        _run(netns, [restore, "-w", "--test", "--noflush"], bundle.by_family(version))
    for version in (4, 6):
        restore, listing = binaries(variant, version)
        _run(netns, [restore, "-w", "--noflush"], bundle.by_family(version))
        for hook in hooks(program):
            check, insert = ensure_hook_commands(listing, hook)
            if _run(netns, check, check=False).returncode != 0:
                _run(netns, insert)
        stale = stale_chain_payload(_run(netns, [listing, "-w", "-S"]).stdout, program)
        if stale:
            _run(netns, [restore, "-w", "--noflush"], stale)
    wanted = {name for name, *_ in declared_sets(program)}
    for name in _run(netns, ["ipset", "list", "-n"]).stdout.split():
        if name.startswith(SET_PREFIXES) and name not in wanted:
            _run(netns, ["ipset", "destroy", name], check=False)  # still referenced elsewhere: kept


def remove_iptables(netns: str | None = None) -> list[str]:
    """Uninstall: our hook jumps (FORWARD, INPUT, OUTPUT), chains and sets, in every flavour and
    family that has any; what was removed. Nothing is created to look: legacy tables are listed
    only where the kernel already has them (listing creates them), sets only when ip_set is
    loaded."""
    removed = []
    for variant in VARIANTS:
        for version in (4, 6):
            base = "iptables" if version == 4 else "ip6tables"
            listing = f"{base}-{variant}"  # by name: plain `iptables` may be either flavour
            restore = f"{base}-{variant}-restore"
            if shutil.which(listing) is None or not _has_filter_table(netns, variant, version):
                continue
            payload, chains = removal_payload(_run(netns, [listing, "-w", "-S"]).stdout)
            if payload:
                _run(netns, [restore, "-w", "--noflush"], payload)
                removed.append(f"{listing}: our hook jumps and {len(chains)} chain(s) of ours")
    if shutil.which("ipset") is not None and Path("/sys/module/ip_set").exists():
        for name in _run(netns, ["ipset", "list", "-n"]).stdout.split():
            if OUR_SET.match(name):
                _run(netns, ["ipset", "destroy", name])
                removed.append(f"ipset {name}")
    return removed


def _has_filter_table(netns: str | None, variant: str, version: int) -> bool:
    """iptables-nft lists without creating anything; legacy only where `filter` exists."""
    if variant != "legacy":
        return True
    names = f"/proc/net/ip{'6' if version == 6 else ''}_tables_names"
    return "filter" in _run(netns, ["cat", names], check=False).stdout.split()
