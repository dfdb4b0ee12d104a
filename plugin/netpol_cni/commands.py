"""The CNI operations: ADD, DEL, CHECK, STATUS, GC (VERSION is answered by `main`).

ADD, in order: the attachment's record claimed (naming the host veth to be) and the IPAM
plugin started (by `main`; it allocates while the rest runs), the bridge (ensured), a veth
pair whose peer is created directly inside the pod's namespace, the host end on the bridge;
then the IPAM result, forwarding sysctls, addresses and routes inside, the gateway address on
the bridge. Each step that made something registers its undo; if a later step fails, the undo
steps run newest first, so a failed ADD leaves no veth, no allocated address and no record
behind — and releases only what it made: the IPAM DEL goes out only if this ADD's IPAM ADD
succeeded (`_release`), and `main` refuses an ADD whose record exists before the IPAM plugin
sees it, so a repeated ADD never frees the running attachment's address."""

from __future__ import annotations

import _socket
import sys

from netpol_cni import antispoof, ipam, store
from netpol_cni import sysos as os
from netpol_cni.config import CURRENT_VERSION, check_cidr
from netpol_cni.errors import (
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    NOT_AVAILABLE,
    STATE_MISMATCH,
    UNKNOWN_CONTAINER,
    CniError,
)
from netpol_cni.netlink import AF_INET, AF_INET6, Link, Rtnl, family_of
from netpol_cni.netns import Netns, NetnsError
from netpol_cni.node import bridge_netfilter_ready, ensure_bridge, ensure_forwarding, ensure_gateway_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from netpol_cni.config import Invocation

ALIAS_PREFIX = "netpol-cni"
_MAIN_TABLE = 254
_IFALIASZ = 255
_VETH_ATTEMPTS = 4


class Rollback:
    """Undo steps, run newest first when the block fails; dropped when it succeeds.
    (contextlib.ExitStack would do, but importing contextlib costs ~4 ms of a ~10 ms ADD.)"""

    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def push(self, step: Callable[..., object], *args: object) -> None:
        self._steps.append((step, args))

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        steps, self._steps = self._steps, []
        if exc_type is None:
            return
        for step, args in reversed(steps):
            try:
                step(*args)
            except Exception as undo_error:  # keep undoing; the original error is what we report
                sys.stderr.write(f"netpol-cni: rollback step {step.__name__} failed: {undo_error}\n")


class _Address:
    __slots__ = ("family", "gateway", "ip", "prefixlen")

    def __init__(self, ip: str, prefixlen: int, gateway: str) -> None:
        self.ip, self.prefixlen, self.gateway, self.family = ip, prefixlen, gateway, family_of(ip)

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


# ── ADD ─────────────────────────────────────────────────────────────────────────────────────


def cmd_add(inv: Invocation, adding: ipam.Delegation) -> dict[str, Any]:
    """`adding`: the IPAM ADD, already running (main starts it before loading this module)."""
    conf = inv.conf
    with Rollback() as undo:
        undo.push(_release, inv, adding)
        host = Rtnl()
        bridge = ensure_bridge(host, conf.bridge, conf.mtu)
        netns = _open_netns(inv.netns, INVALID_ENVIRONMENT)
        try:
            if netns.rtnl.get_link(inv.ifname) is not None:
                raise CniError(INVALID_ENVIRONMENT,
                               f"CNI_IFNAME: {inv.ifname!r} already exists in {inv.netns}")
            host_veth = _create_veth(inv, host, netns)
            undo.push(host.delete_link, host_veth.index)
            host.set_link(host_veth.index, alias=_alias(conf.name, inv.container_id, inv.ifname))  # for GC
            inside = netns.rtnl.get_link(inv.ifname)
            if inside is None:
                raise CniError(IO_FAILURE, f"{inv.ifname!r} did not appear in {inv.netns}")
            allocation = ipam.allocation(inv, adding)
            addresses = _addresses(allocation, conf.is_gateway)
            # The pod may send only from these, from the moment its port joins the bridge. The
            # record keeps them too: GC restores what ADD bound, not what the pod has set since.
            binding = antispoof.Binding(host_veth.name, inside.mac, [a.ip for a in addresses])
            store.save(conf.data_dir, conf.name, inv.container_id, inv.ifname,
                       store.attachment_record(inv, host_veth.name, binding.mac, binding.ips))
            antispoof.bind(binding)
            undo.push(antispoof.unbind, host_veth.name)
            host.set_link(host_veth.index, master=bridge.index, up=True)
            if conf.hairpin_mode:
                host.set_hairpin(host_veth.index, True)
            ensure_forwarding(any(a.family == AF_INET for a in addresses),
                              any(a.family == AF_INET6 for a in addresses))
            for address in addresses:
                netns.rtnl.add_address(inside.index, address.ip, address.prefixlen)
            netns.rtnl.set_link(inside.index, up=True)
            routes = _routes(allocation, addresses, conf.is_default_gateway)
            for dst, dst_len, gateway in routes:
                netns.rtnl.add_route(dst, dst_len, gateway, inside.index)
        finally:
            netns.close()
        if conf.is_gateway:
            for address in addresses:
                if address.gateway:
                    ensure_gateway_address(host, bridge, address.gateway, address.prefixlen)
        bridge = host.get_link(conf.bridge) or bridge  # its MAC may have changed as the port joined
    host.close()
    return _result(inv, allocation, addresses, routes, interfaces=(bridge, host_veth, inside))


def _release(inv: Invocation, adding: ipam.Delegation) -> None:
    """Undo this ADD's allocation, and nothing else, then its claim on the record.

    IPAM DEL only when the IPAM ADD succeeded: one that failed allocated nothing, and failing
    is how host-local answers an ADD for an attachment it already holds an address for (a
    running pod whose record we lost): a DEL then would free that pod's address for the next
    pod. The record goes after the address and only if it went (a failed DEL raises first),
    so GC still finds what the record may hold."""
    if adding.succeeded():
        ipam.delegate(inv, "DEL")
    store.remove(inv.conf.data_dir, inv.conf.name, inv.container_id, inv.ifname)


def _open_netns(path: str, code: int) -> Netns:
    try:
        return Netns(path)
    except NetnsError as exc:
        where = "CNI_NETNS: " if code == INVALID_ENVIRONMENT else ""
        raise CniError(code, f"{where}{exc.strerror}") from None


def _alias(network: str, container_id: str, ifname: str) -> str:
    alias = f"{ALIAS_PREFIX} {network} {container_id} {ifname}"
    return alias if len(alias.encode()) <= _IFALIASZ else ""


def _create_veth(inv: Invocation, host: Rtnl, netns: Netns) -> Link:
    """The pair, its host end named veth<8 hex> (as the reference plugin names it): the name
    `main` chose and recorded first, a new one only if that is taken. The caller labels it
    with an alias naming the attachment, for GC and for people reading `ip link`."""
    for attempt in range(_VETH_ATTEMPTS):
        name = inv.host_veth if attempt == 0 and inv.host_veth else store.host_veth_name()
        if host.create_veth(name, inv.ifname, netns.fd, mtu=inv.conf.mtu, peer_mac=inv.conf.mac):
            link = host.get_link(name)
            if link is not None:
                return link
    raise CniError(IO_FAILURE, "could not find a free host-side veth name")


def _addresses(allocation: dict[str, Any], is_gateway: bool) -> list[_Address]:
    out = []
    for i, entry in enumerate(allocation["ips"]):
        ip, prefixlen = check_cidr(entry["address"], f"IPAM result ips[{i}].address")
        gateway = entry.get("gateway") or ""
        if not isinstance(gateway, str):
            raise CniError(IO_FAILURE, f"IPAM result ips[{i}].gateway: expected a string")
        if is_gateway and not gateway:
            gateway = _first_address(ip, prefixlen)
        out.append(_Address(ip, prefixlen, gateway))
    return out


def _first_address(ip: str, prefixlen: int) -> str:
    family = family_of(ip)
    bits = 128 if family == AF_INET6 else 32
    value = int.from_bytes(_socket.inet_pton(family, ip), "big")
    network = value & ~((1 << (bits - prefixlen)) - 1)
    return _socket.inet_ntop(family, (network + 1).to_bytes(bits // 8, "big"))


def _routes(allocation: dict[str, Any], addresses: list[_Address],
            default_gateway: bool) -> list[tuple[str, int, str]]:
    """(dst, prefix length, gateway) for every route of the IPAM result (gateway defaulting to
    the family's), plus a default route per family when isDefaultGateway."""
    gateway_of = {a.family: a.gateway for a in addresses if a.gateway}
    out: list[tuple[str, int, str]] = []
    for i, route in enumerate(allocation.get("routes") or ()):
        if not isinstance(route, dict) or not isinstance(route.get("dst"), str):
            raise CniError(IO_FAILURE, f"IPAM result routes[{i}]: expected an object with dst")
        dst, dst_len = check_cidr(route["dst"], f"IPAM result routes[{i}].dst")
        gateway = route.get("gw") or gateway_of.get(family_of(dst), "")
        out.append((dst, dst_len, gateway))
    if default_gateway:
        for family, gateway in sorted(gateway_of.items()):
            default = "::" if family == AF_INET6 else "0.0.0.0"
            if not any(dst_len == 0 and family_of(dst) == family for dst, dst_len, _ in out):
                out.append((default, 0, gateway))
    return out


def _result(inv: Invocation, allocation: dict[str, Any], addresses: list[_Address],
            routes: list[tuple[str, int, str]], *, interfaces: tuple[Link, Link, Link]) -> dict[str, Any]:
    bridge, host_veth, inside = interfaces
    result: dict[str, Any] = {
        "cniVersion": inv.conf.cni_version,
        "interfaces": [{"name": bridge.name, "mac": bridge.mac},
                       {"name": host_veth.name, "mac": host_veth.mac},
                       {"name": inside.name, "mac": inside.mac, "sandbox": inv.netns}],
        "ips": [dict({"address": a.cidr, "interface": 2}, **({"gateway": a.gateway} if a.gateway else {}))
                for a in addresses],
    }
    if routes:
        result["routes"] = [dict({"dst": f"{dst}/{dst_len}"}, **({"gw": gw} if gw else {}))
                            for dst, dst_len, gw in routes]
    dns = allocation.get("dns") or inv.conf.dns
    if dns:
        result["dns"] = dns
    return result


# ── DEL ─────────────────────────────────────────────────────────────────────────────────────


def cmd_del(inv: Invocation, releasing: ipam.Delegation) -> None:
    """Release the address, remove the pod's interface (its veth peer goes with it) and the
    record. Everything already gone — the namespace, the interface, the record, CNI_NETNS
    itself — is success: the runtime may call DEL any number of times."""
    conf = inv.conf
    if inv.netns and os.path.exists(inv.netns):
        try:
            netns: Netns | None = Netns(inv.netns)
        except NetnsError:
            netns = None  # not a namespace any more (a stale file): nothing of ours is inside
        if netns is not None:
            try:
                inside = netns.rtnl.get_link(inv.ifname)
                if inside is not None:
                    netns.rtnl.delete_link(inside.index)
            finally:
                netns.close()
    record = store.load(conf.data_dir, conf.name, inv.container_id, inv.ifname)
    if record is not None:
        _delete_host_veth(record.get("hostInterface"), _alias(conf.name, inv.container_id, inv.ifname))
    _unbind_gone(record)
    releasing.result()
    store.remove(conf.data_dir, conf.name, inv.container_id, inv.ifname)


def _unbind_gone(record: dict[str, Any] | None) -> None:
    """The attachment's anti-spoofing keys, and those of every port that no longer exists (an
    attachment whose record was lost): a veth name reused later must not inherit them."""
    port = record.get("hostInterface") if record is not None else None
    host = Rtnl()
    try:
        live = {link.name for link in host.links()}
    finally:
        host.close()
    antispoof.unbind(port if isinstance(port, str) else "", live)


def _delete_host_veth(name: object, alias: str) -> None:
    """The host end, if it is still there and still ours (its alias names this attachment)."""
    if not isinstance(name, str) or not name:
        return
    host = Rtnl()
    try:
        link = host.get_link(name)
        if link is not None and alias and link.alias == alias:
            host.delete_link(link.index)
    finally:
        host.close()


# ── CHECK ───────────────────────────────────────────────────────────────────────────────────


def cmd_check(inv: Invocation, checking: ipam.Delegation) -> None:
    """Compare the real state with prevResult: the pod's interface, its MAC, addresses and
    routes; the host veth, that it is the pod interface's peer, and on the right bridge. The
    IPAM plugin checks its side meanwhile (`checking`); both must pass."""
    try:
        _check_state(inv)
    finally:
        checking.settle()
    checking.result()


def _check_state(inv: Invocation) -> None:
    conf = inv.conf
    prev = conf.prev_result
    assert prev is not None  # load_config requires it for CHECK
    interfaces = prev.get("interfaces")
    if not isinstance(interfaces, list) or not all(isinstance(i, dict) for i in interfaces):
        raise CniError(INVALID_CONFIG, "prevResult.interfaces: expected a list of objects")
    container = [i for i, itf in enumerate(interfaces)
                 if itf.get("name") == inv.ifname and itf.get("sandbox")]
    if not container:
        raise CniError(INVALID_CONFIG, f"prevResult.interfaces: no entry for {inv.ifname!r} with a sandbox")
    index = container[0]
    hosts = [itf for itf in interfaces if not itf.get("sandbox") and itf.get("name") != conf.bridge]
    if not os.path.exists(inv.netns):
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS: {inv.netns} does not exist")
    netns = _open_netns(inv.netns, UNKNOWN_CONTAINER)
    try:
        inside = netns.rtnl.get_link(inv.ifname)
        if inside is None:
            raise CniError(STATE_MISMATCH, f"interface {inv.ifname!r} is missing in {inv.netns}")
        _check_inside(prev, index, inside, netns.rtnl)
    finally:
        netns.close()
    _check_host(conf.bridge, hosts, inside)
    _check_binding(inv, hosts, inside, index)


def _check_binding(inv: Invocation, hosts: list[dict[str, Any]], inside: Link, index: int) -> None:
    """The anti-spoofing binding of the attachment is in the kernel; a missing one is restored,
    and reported (someone removed it: the pod could send from any address meanwhile)."""
    conf = inv.conf
    assert conf.prev_result is not None
    record = store.load(conf.data_dir, conf.name, inv.container_id, inv.ifname) or {}
    port = record.get("hostInterface") or (hosts[0].get("name") if hosts else None)
    if not isinstance(port, str) or not port:
        raise _mismatch("prevResult names no host interface: no anti-spoofing binding to check")
    ips = [check_cidr(e.get("address", ""), f"prevResult.ips[{i}].address")[0]
           for i, e in enumerate(conf.prev_result.get("ips") or ()) if e.get("interface", index) == index]
    binding = antispoof.Binding(port, inside.mac, ips)
    absent = antispoof.missing(binding)
    if absent:
        antispoof.restore([binding])
        raise _mismatch(f"anti-spoofing binding of {port} was incomplete (restored): "
                        f"missing {', '.join(absent)}")


def _mismatch(msg: str) -> CniError:
    return CniError(STATE_MISMATCH, msg)


def _check_inside(prev: dict[str, Any], index: int, inside: Link, rtnl: Rtnl) -> None:
    expected_mac = prev["interfaces"][index].get("mac")
    if expected_mac and expected_mac.lower() != inside.mac:
        raise _mismatch(f"interface {inside.name!r} has MAC {inside.mac}, prevResult says {expected_mac}")
    present = {(a.ip, a.prefixlen) for a in rtnl.addresses() if a.index == inside.index}
    for i, entry in enumerate(prev.get("ips") or ()):
        if entry.get("interface", index) != index:
            continue
        ip, prefixlen = check_cidr(entry.get("address", ""), f"prevResult.ips[{i}].address")
        if (_canonical(ip), prefixlen) not in present:
            raise _mismatch(f"address {ip}/{prefixlen} is missing on {inside.name!r}")
    tables: dict[int, set[tuple[str, int, str]]] = {}  # per family, dumped once: (dst, len, gateway)
    for i, route in enumerate(prev.get("routes") or ()):
        dst, dst_len = check_cidr(route.get("dst", ""), f"prevResult.routes[{i}].dst")
        family = family_of(dst)
        if family not in tables:
            tables[family] = {(r.dst or _zero(family), r.dst_len, r.gateway)
                              for r in rtnl.routes(family) if r.table == _MAIN_TABLE}
        gw = route.get("gw", "")
        key = (_canonical(dst), dst_len)
        if not any((d, n) == key and (not gw or g == gw) for d, n, g in tables[family]):
            raise _mismatch(f"route {route.get('dst')}{' via ' + gw if gw else ''} is missing in the pod")


def _canonical(ip: str) -> str:
    family = family_of(ip)
    return _socket.inet_ntop(family, _socket.inet_pton(family, ip))


def _zero(family: int) -> str:
    return "::" if family == AF_INET6 else "0.0.0.0"


def _check_host(bridge_name: str, hosts: list[dict[str, Any]], inside: Link) -> None:
    host = Rtnl()
    try:
        bridge = host.get_link(bridge_name)
        if bridge is None or bridge.kind != "bridge":
            raise _mismatch(f"bridge {bridge_name!r} is missing")
        if not hosts:
            return
        name = hosts[0].get("name", "")
        veth = host.get_link(name)
        if veth is None:
            raise _mismatch(f"host interface {name!r} is missing")
        if inside.peer_index != veth.index:
            raise _mismatch(f"host interface {name!r} is not the peer of {inside.name!r}")
        if veth.master != bridge.index:
            raise _mismatch(f"host interface {name!r} is not attached to bridge {bridge_name!r}")
    finally:
        host.close()


# ── STATUS and GC ───────────────────────────────────────────────────────────────────────────


def cmd_status(inv: Invocation, _unused: ipam.Delegation | None = None) -> None:
    """Ready for ADD: the IPAM plugin is installed, br_netfilter is (or can be) loaded, and the
    anti-spoofing table is there with our chain or can be made (`nft` is installed)."""
    try:
        ipam.find_plugin(inv.conf.ipam["type"], inv.cni_path)
    except CniError as exc:
        raise CniError(NOT_AVAILABLE, exc.msg) from None
    if not antispoof.chain_intact() and not antispoof.can_make_table():
        raise CniError(NOT_AVAILABLE, f"anti-spoofing: no table bridge {antispoof.TABLE} and no nft "
                       "to make it (Debian: apt-get install nftables)")
    if not bridge_netfilter_ready():
        try:
            ensure_forwarding(False, False)
        except CniError as exc:
            raise CniError(NOT_AVAILABLE, exc.msg) from None


def cmd_gc(inv: Invocation, _unused: ipam.Delegation | None = None) -> None:
    """Release every attachment of this network that is not in cni.dev/valid-attachments: its
    IPAM allocation (an IPAM DEL in its name), its host veth, its record. Records are claimed
    before the IPAM plugin allocates (see store), so this finds every address an ADD may have
    got, a killed ADD's too, whatever the IPAM plugin."""
    conf = inv.conf
    valid = set(conf.valid_attachments or ())
    failures = []
    for container_id, ifname in store.attachments(conf.data_dir, conf.name):
        if (container_id, ifname) in valid:
            continue
        try:
            ipam.delegate(inv, "DEL", container_id=container_id, ifname=ifname, netns="")
        except CniError as exc:
            failures.append(f"{container_id}/{ifname}: {exc.msg}")
            continue
        record = store.load(conf.data_dir, conf.name, container_id, ifname) or {}
        _delete_host_veth(record.get("hostInterface"), _alias(conf.name, container_id, ifname))
        store.remove(conf.data_dir, conf.name, container_id, ifname)
    host = Rtnl()
    try:
        prefix = f"{ALIAS_PREFIX} {conf.name} "
        for link in host.links():
            if link.alias.startswith(prefix):
                container_id, _, ifname = link.alias[len(prefix):].partition(" ")
                if (container_id, ifname) not in valid:
                    host.delete_link(link.index)
    finally:
        host.close()
    try:
        _reconcile_bindings(conf, valid)
    except CniError as exc:
        failures.append(f"anti-spoofing bindings: {exc.msg}")
    try:
        _forward_gc(inv)
    except CniError as exc:
        failures.append(f"ipam plugin GC: {exc.msg}")
    if failures:
        raise CniError(IO_FAILURE, f"GC could not release everything ({len(failures)} failure(s))",
                       "; ".join(failures))


def _reconcile_bindings(conf: Any, valid: set[tuple[str, str]]) -> None:
    """Anti-spoofing keys: those of the valid attachments restored as ADD recorded them (and the
    chain, if it is not ours any more), every other port's removed. A valid attachment whose
    record holds no binding (an ADD still at work, or one of a plugin version that did not
    record it) keeps whatever its port has: removing it would let that port send anything."""
    bindings, keep = [], set()
    for container_id, ifname in sorted(valid):
        record = store.load(conf.data_dir, conf.name, container_id, ifname) or {}
        port = record.get("hostInterface")
        if isinstance(port, str) and port:
            keep.add(port)
            binding = _recorded_binding(port, record)
            if binding is not None:
                bindings.append(binding)
    keep |= _ports_of(conf.name, valid)
    antispoof.restore(bindings)
    antispoof.unbind_ports(lambda key: antispoof.port_of(key) not in keep)


def _recorded_binding(port: str, record: dict[str, Any]) -> antispoof.Binding | None:
    """The binding ADD made, from the record; None when the record holds none (or a bad one)."""
    mac, ips = record.get("mac"), record.get("ips")
    if (not isinstance(mac, str) or len(mac.split(":")) != 6 or len(port.encode()) >= 16
            or not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips)):
        return None
    binding = antispoof.Binding(port, mac, ips)
    try:
        binding.keys()
    except (ValueError, OSError):  # a record someone edited: not something to bind
        return None
    return binding


def _ports_of(network: str, valid: set[tuple[str, str]]) -> set[str]:
    """The host veths whose alias names a valid attachment (one whose record was lost)."""
    prefix = f"{ALIAS_PREFIX} {network} "
    host = Rtnl()
    try:
        return {link.name for link in host.links() if link.alias.startswith(prefix)
                and tuple(link.alias[len(prefix):].partition(" ")[::2]) in valid}
    finally:
        host.close()


def _forward_gc(inv: Invocation) -> None:
    """GC for the IPAM plugin too, as the spec requires of a plugin that delegates: it then
    releases what it holds for attachments not in the list, also what no record of ours names
    (an ADD of an older version of this plugin, killed after the allocation). Only to an IPAM
    plugin that speaks 1.1.0, the version GC came with (asked with VERSION, one process):
    host-local 1.1.x speaks up to 1.0.0 and gets none."""
    if inv.conf.cni_version != CURRENT_VERSION:
        return
    versions = ipam.delegate(inv, "VERSION")
    if isinstance(versions, dict) and CURRENT_VERSION in (versions.get("supportedVersions") or ()):
        ipam.delegate(inv, "GC")


# ADD, DEL and CHECK get the IPAM plugin already at work on the same command (see main).
HANDLERS: dict[str, Callable[[Invocation, Any], object]] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc,
}
