"""What the node needs for pods on the bridge: the bridge itself, its gateway address, packet
forwarding, and br_netfilter handing bridged traffic to the compiled ruleset.

Every step is an idempotent `ensure_*` that is safe when twenty ADDs race: creating the bridge
or an address that already exists is success (EEXIST), not an error."""

from __future__ import annotations

from netpol_cni import sysos as os
from netpol_cni.errors import INVALID_CONFIG, IO_FAILURE, CniError
from netpol_cni.netlink import Link, Rtnl

SYSCTL_ROOT = "/proc/sys"
_MODPROBE = ("/usr/sbin/modprobe", "/sbin/modprobe")


def ensure_bridge(rtnl: Rtnl, name: str, mtu: int) -> Link:
    """The bridge `name`, up, its MAC address pinned; created unless it exists. Another kind of
    interface with that name is a configuration error.

    Pinning: a Linux bridge whose MAC was never set takes the lowest MAC among its ports, and
    takes another when that port leaves. Pods keep the gateway's old MAC in their neighbour
    cache, their frames for it are flooded instead of routed, and traffic to other nodes
    stops until the entry expires (the reference plugin pins it for the same reason). Setting
    the address to its current value makes it fixed; doing it on every ADD also fixes a bridge
    someone else created."""
    rtnl.create_bridge(name, mtu)
    link = rtnl.get_link(name)
    if link is None:  # deleted between our create and get: the runtime may retry
        raise CniError(IO_FAILURE, f"bridge {name!r} vanished while being set up")
    if link.kind != "bridge":
        raise CniError(INVALID_CONFIG, f"bridge: {name!r} exists and is a {link.kind or 'plain'} "
                       "interface, not a bridge")
    rtnl.set_link(link.index, up=True, mac=link.mac)
    return link


def ensure_gateway_address(rtnl: Rtnl, bridge: Link, ip: str, prefixlen: int) -> None:
    rtnl.add_address(bridge.index, ip, prefixlen)


def ensure_sysctl(name: str, value: str = "1") -> None:
    """Set /proc/sys/`name` (dots or slashes) unless it already holds `value`."""
    path = os.path.join(SYSCTL_ROOT, name.replace(".", "/"))
    with open(path) as current:
        if current.read().strip() == value:
            return
    with open(path, "w") as out:
        out.write(value)


def ensure_forwarding(ipv4: bool, ipv6: bool) -> None:
    """Forwarding for the families the pod uses, and br_netfilter's bridge-nf-call sysctls (the
    compiled ruleset filters bridged traffic through them), loading the module if needed."""
    try:
        if ipv4:
            ensure_sysctl("net/ipv4/ip_forward")
        if ipv6:
            ensure_sysctl("net/ipv6/conf/all/forwarding")
        if not os.path.isdir(os.path.join(SYSCTL_ROOT, "net/bridge")):
            _load_br_netfilter()
        ensure_sysctl("net/bridge/bridge-nf-call-iptables")
        ensure_sysctl("net/bridge/bridge-nf-call-ip6tables")
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot set sysctl {exc.filename}: {exc.strerror}") from None


def bridge_netfilter_ready() -> bool:
    return os.path.isdir(os.path.join(SYSCTL_ROOT, "net/bridge"))


def _load_br_netfilter() -> None:
    for modprobe in _MODPROBE:
        if os.access(modprobe, os.X_OK):
            pid = os.posix_spawn(modprobe, [modprobe, "br_netfilter"], {"PATH": "/usr/sbin:/sbin"})
            os.waitpid(pid, 0)
            break
    if not bridge_netfilter_ready():
        raise CniError(IO_FAILURE, "net.bridge.bridge-nf-call-iptables: the br_netfilter module is not "
                       "loaded and `modprobe br_netfilter` did not load it")
