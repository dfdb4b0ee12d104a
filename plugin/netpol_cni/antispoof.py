"""Anti-spoofing: a pod sends only from its own addresses and its own MAC.

Pods are identified by their IP addresses in every ruleset the agent writes, so a pod that could
send from another pod's address would pass that pod's policies. The plugin knows each
attachment — host veth, the pod's MAC and addresses — at ADD, so it binds them here, in a table
of its own that the agent never touches (`table bridge netpol_cni`; the agent owns
`inet netpol`): frames entering the bridge from one of our ports are checked before anything
else sees them (bridge prerouting, priority -200, before br_netfilter hands them to the inet
hooks at 0). Per packet: a handful of set lookups keyed by the input port, whatever the number
of pods.

    ports     the host veths netpol-cni attached: frames from other ports are not ours to judge
    macs      port . MAC           the only source MAC a port may use (no FDB poisoning)
    addr4     port . MAC . IPv4    IPv4 sources, and ARP sender (MAC, IPv4): no stealing an address
    addr6     port . MAC . IPv6    IPv6 sources other than :: (DAD) and link-local
    target6   port . IPv6          what a neighbour advertisement from the port may claim

IPv6 from a pod's own global address goes on to the agent's policies; everything else IPv6 a
pod sends — from its link-local or the unspecified address, or to a link-local address — may
only be neighbour discovery or MLD: the agent knows pods by their addresses, so link-local
unicast would carry what their policies deny past them. Router advertisements and redirects
are dropped whatever their source: a pod is no router, and other pods would take its word.
Anything but IPv4, IPv6 and ARP from a pod is dropped (VLAN tags, PPPoE: frames br_netfilter
would not show the agent).

The table and its chain are made by `nft -f` the first time an ADD finds them missing (once per
node, or after someone deleted them); the bindings themselves are written with one nfnetlink
batch (netpol_cni.netlink.NfTables) before the host veth joins the bridge, so a pod never has a moment
unchecked. DEL removes every key of the port, GC those of ports it does not know, CHECK and GC
restore missing ones (and the chain, when its rules are not ours)."""

from __future__ import annotations

import _socket

from netpol_cni import sysos as os
from netpol_cni.errors import IO_FAILURE, CniError
from netpol_cni.netlink import Changes, NetlinkError, NfTables

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

TABLE = "netpol_cni"
SETS = ("ports", "macs", "addr4", "addr6", "target6")
_ENOENT = 2
_IFNAMSIZ = 16

# ICMPv6 a pod needs on the link: router solicitation, neighbour solicitation and
# advertisement, MLD reports and done. Not router advertisements or redirects: a pod is no router.
_LINK_ICMPV6 = ("nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, "
                "mld-listener-report, mld-listener-done, mld2-listener-report")

RULES = (
    "iifname != @ports accept comment \"not a port of netpol-cni\"",
    "iifname . ether saddr != @macs drop comment \"source MAC is not the pod's\"",
    "ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ether . arp saddr ip != @addr4 drop "
    "comment \"ARP claims an address that is not the pod's\"",
    "ether type ip iifname . ether saddr . ip saddr != @addr4 drop comment \"IPv4 source is not the pod's\"",
    "ether type ip6 ip6 saddr :: ip6 daddr != ff02::/16 drop comment \"unspecified source beyond DAD\"",
    "ether type ip6 ip6 saddr != { ::, fe80::/10 } iifname . ether saddr . ip6 saddr != @addr6 drop "
    "comment \"IPv6 source is not the pod's\"",
    "icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80 iifname . @th,64,128 != @target6 drop "
    "comment \"neighbour advertisement for an address that is not the pod's\"",
    "icmpv6 type { nd-router-advert, nd-redirect } drop "
    "comment \"router advertisement or redirect from a pod\"",
    "ether type ip6 ip6 saddr != { ::, fe80::/10 } ip6 daddr != fe80::/10 accept "
    "comment \"the pod's own IPv6 address, beyond the link\"",
    f"icmpv6 type {{ {_LINK_ICMPV6} }} accept comment \"neighbour discovery and MLD\"",
    "ether type ip6 drop comment \"link-local IPv6 carries neighbour discovery and MLD only\"",
    "ether type != { ip, ip6, arp } drop comment \"only IPv4, IPv6 and ARP from a pod\"",
)

SCRIPT = f"""table bridge {TABLE} {{
\tset ports {{ type ifname; comment "host veths attached by netpol-cni"; }}
\tset macs {{ type ifname . ether_addr; }}
\tset addr4 {{ type ifname . ether_addr . ipv4_addr; }}
\tset addr6 {{ type ifname . ether_addr . ipv6_addr; }}
\tset target6 {{ typeof iifname . @th,64,128; }}
\tchain prerouting {{ type filter hook prerouting priority -200; policy accept; }}
}}
flush chain bridge {TABLE} prerouting
table bridge {TABLE} {{
\tchain prerouting {{
{"".join(f"{chr(9) * 2}{rule}{chr(10)}" for rule in RULES)}\t}}
}}
"""


class Binding:
    """One attachment: its host veth, the pod interface's MAC and its addresses."""

    def __init__(self, port: str, mac: str, ips: list[str]) -> None:
        self.port, self.mac, self.ips = port, mac, ips

    def keys(self) -> Changes:
        port = _port(self.port)
        mac = bytes.fromhex(self.mac.replace(":", "")) + b"\0\0"
        v4 = [_socket.inet_pton(_socket.AF_INET, ip) for ip in self.ips if ":" not in ip]
        v6 = [_socket.inet_pton(_socket.AF_INET6, ip) for ip in self.ips if ":" in ip]
        return {"ports": [port], "macs": [port + mac], "addr4": [port + mac + a for a in v4],
                "addr6": [port + mac + a for a in v6], "target6": [port + a for a in v6]}


def _port(name: str) -> bytes:
    raw = name.encode()
    return raw + b"\0" * (_IFNAMSIZ - len(raw))


_NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft")


def _nft() -> str:
    return next((path for path in _NFT_PATHS if os.path.exists(path)), "nft")


def can_make_table() -> bool:
    """Whether `nft` is installed where a runtime's PATH-less environment finds it."""
    return any(os.path.exists(path) for path in _NFT_PATHS)


def ensure_table() -> None:
    """The table, its sets and its chain with exactly our rules (idempotent; keeps elements).
    A process, but only when an ADD finds the table missing (`subprocess` imported here: its
    import alone would cost every ADD more than the nfnetlink batch)."""
    import subprocess  # noqa: PLC0415 - off ADD's path

    try:
        done = subprocess.run([_nft(), "-f", "-"], input=SCRIPT.encode(), capture_output=True, check=False)
    except OSError as exc:
        raise CniError(IO_FAILURE, f"anti-spoofing table: cannot run nft: {exc.strerror}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace")
        raise CniError(IO_FAILURE, "anti-spoofing table: nft refused it", why)


def bind(binding: Binding) -> None:
    """Add the attachment's keys; make the table first when it is missing."""
    keys = binding.keys()
    try:
        _change(add=keys)
    except NetlinkError as exc:
        if exc.errno != _ENOENT:
            raise CniError(IO_FAILURE, f"anti-spoofing binding of {binding.port}: {exc.strerror}") from None
        ensure_table()
        try:
            _change(add=keys)
        except NetlinkError as again:
            raise CniError(IO_FAILURE, f"anti-spoofing binding of {binding.port}: {again.strerror}") from None


def unbind(port: str, live: set[str] | None = None) -> None:
    """Remove every key of the port — and, given the names of the links that exist (`live`),
    of every port that is gone (a DEL whose record was lost). No table: nothing to do."""
    mine = _port(port) if port else None
    alive = None if live is None else {_port(name) for name in live if len(name.encode()) < _IFNAMSIZ}
    unbind_ports(lambda key: key[:_IFNAMSIZ] == mine or (alive is not None and key[:_IFNAMSIZ] not in alive))


def port_of(key: bytes) -> str:
    return key[:_IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")


def unbind_ports(doomed: Callable[[bytes], bool]) -> None:
    """Remove every key for which `doomed(key)` says so (its first 16 bytes are the port)."""
    try:
        with NfTables(TABLE) as nf:
            stale = {name: [k for k in nf.keys(name) if doomed(k)] for name in SETS}
            nf.change(delete=stale)
    except NetlinkError as exc:
        if exc.errno != _ENOENT:
            raise CniError(IO_FAILURE, f"anti-spoofing bindings: {exc.strerror}") from None


def missing(binding: Binding) -> list[str]:
    """What of the binding (and of the table) is not in the kernel, in words; [] when whole."""
    try:
        with NfTables(TABLE) as nf:
            held = {name: set(nf.keys(name)) for name in SETS}
    except NetlinkError as exc:
        if exc.errno == _ENOENT:
            return [f"table bridge {TABLE}"]
        raise CniError(IO_FAILURE, f"anti-spoofing bindings: {exc.strerror}") from None
    absent = [f"{name} element of {binding.port}" for name, keys in binding.keys().items()
              for key in keys if key not in held[name]]
    return absent + ([f"chain bridge {TABLE} prerouting"] if not chain_intact() else [])


def chain_intact() -> bool:
    """Whether the chain holds our rules, in order (each carries its comment in its user data)."""
    try:
        with NfTables(TABLE) as nf:
            held = nf.rule_userdata("prerouting")
    except NetlinkError as exc:
        if exc.errno == _ENOENT:
            return False
        raise CniError(IO_FAILURE, f"anti-spoofing chain: {exc.strerror}") from None
    comments = [rule.rpartition(' comment "')[2].rstrip('"').encode() for rule in RULES]
    return len(held) == len(comments) and all(c in data for c, data in zip(comments, held, strict=True))


def restore(bindings: list[Binding]) -> None:
    """The table with our chain, and these bindings (CHECK and GC: someone removed them)."""
    if not chain_intact():
        ensure_table()
    for binding in bindings:
        bind(binding)


def _change(add: Changes) -> None:
    with NfTables(TABLE) as nf:
        nf.change(add=add)
