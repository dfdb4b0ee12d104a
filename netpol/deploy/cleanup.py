"""`netpol cleanup --node`: the uninstall of one node — what netpol put there, and only that.

Files (under the host root, as `install-cni` wrote them): the conflist (the one its record names,
and `10-netpol.conflist`, each only if it is a netpol configuration), the netpol-cni launcher
(only if it is ours), host-local only if the record says we installed it and it is unchanged,
and netpol-cni's library directory. Kernel, in the node's network namespace (or `--netns`):
`table inet netpol` and netpol-cni's `table bridge netpol_cni`, the iptables backend's FORWARD
jump, chains and sets, and the host-gw routes `proto 199`. Files go first, so no new pod is
attached by a plugin about to lose its table; every step runs even when one before failed.

Left in place, on purpose: the bridge `cni0`, the pods' veths, netpol-cni's records
(/var/lib/cni/netpol-cni) and host-local's reservations (/var/lib/cni/networks/netpol) — they
belong to pods still attached, and go with them (drain the node first) or by hand.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from netpol.backends.nftables import TABLE
from netpol.dataplane.iptables import remove_iptables
from netpol.dataplane.nft import Applier
from netpol.dataplane.routes import RouteKeeper
from netpol.deploy.cni_install import CONFLIST, CniLayout, Outcome, digest, is_our_conflist, read_record
from netpol.errors import NetpolError

PLUGIN_TABLE = ("bridge", "netpol_cni")  # netpol-cni's anti-spoofing table (DESIGN §3, CNI plugin)
LAUNCHER_LINE = "from netpol_cni.main import run"  # what netpol_cni.install's launcher runs


def remove_files(layout: CniLayout) -> list[str]:
    """What install-cni wrote (see the module); the node paths removed."""
    record = read_record(layout)
    removed = []
    for conflist in dict.fromkeys([str(record.get("conflist") or ""), f"{layout.conf_dir}/{CONFLIST}"]):
        path = layout.here(conflist) if conflist.startswith("/") else None
        if path is not None and path.is_file() and is_our_conflist(path.read_text(errors="replace")):
            path.unlink()
            removed.append(conflist)
    launcher = layout.here(layout.bin_dir) / "netpol-cni"
    if launcher.is_file() and LAUNCHER_LINE in launcher.read_text(errors="replace").splitlines():
        launcher.unlink()
        removed.append(f"{layout.bin_dir}/netpol-cni")
    host_local = layout.here(layout.bin_dir) / "host-local"
    if record.get("host_local") and digest(host_local) == record["host_local"]:
        host_local.unlink()
        removed.append(f"{layout.bin_dir}/host-local")
    lib = layout.here(layout.lib)
    if lib.is_dir() and not lib.is_symlink():
        shutil.rmtree(lib)
        removed.append(f"{layout.lib}/")
    return removed


def remove_tables(netns: str | None) -> list[str]:
    with Applier(netns) as applier:
        return [f"nft table {table}" for table in applier.delete_tables([("inet", TABLE), PLUGIN_TABLE])]


def remove_routes(netns: str | None) -> list[str]:
    return [f"route {change.removeprefix('del ')} proto 199" for change in RouteKeeper(netns).sync({})]


def cleanup_node(layout: CniLayout, netns: str | None = None) -> Outcome:
    """Every step (see the module), each tried whatever the others did."""
    out = Outcome()
    steps: list[tuple[str, Callable[[], list[str]]]] = [
        ("files", lambda: remove_files(layout)),
        ("nftables", lambda: remove_tables(netns)),
        ("iptables", lambda: remove_iptables(netns)),
        ("routes", lambda: remove_routes(netns)),
    ]
    for what, step in steps:
        try:
            out.done += step()
        except (NetpolError, OSError) as exc:
            out.failed.append(f"{what}: {exc}")
    return out
