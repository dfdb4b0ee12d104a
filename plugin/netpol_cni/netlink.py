"""Netlink clients on raw AF_NETLINK sockets: just what a bridge plugin needs. rtnetlink for
links, addresses and routes (`Rtnl`); nf_tables for set elements (`NfTables`, at the end).

Links (get, dump, create a bridge or a veth pair whose peer lands in another namespace, set
master/up/mtu/alias, hairpin, delete), addresses and routes (add, dump). Every request carries
NLM_F_ACK and waits for the kernel's answer, so an error comes back as `NetlinkError` with the
errno of that very request. Callers decide which errnos mean "already so" (EEXIST on create,
ENODEV on delete) — that is what makes the plugin's `ensure_*` steps idempotent and race-safe.

Talking to the kernel directly, instead of running `ip` a dozen times, is most of why an ADD
costs a few milliseconds; `_socket` rather than `socket` keeps `enum` out of the start-up."""

from __future__ import annotations

import _socket
import struct

from netpol_cni import sysos as os

AF_UNSPEC = 0
AF_INET = 2
AF_BRIDGE = 7
AF_INET6 = 10
_AF_NETLINK = 16
_NETLINK_ROUTE = 0

_NLM_F_REQUEST = 0x1
_NLM_F_MULTI = 0x2
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLMSG_ERROR = 2
_NLMSG_DONE = 3

_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_SETLINK = 16, 17, 18, 19
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26

_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK, _IFLA_MASTER = 1, 3, 4, 5, 10
_IFLA_PROTINFO, _IFLA_LINKINFO, _IFLA_IFALIAS, _IFLA_NET_NS_FD = 12, 18, 20, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA = 1, 2
_VETH_INFO_PEER = 1
_IFLA_BRPORT_MODE = 4  # hairpin
_IFA_ADDRESS, _IFA_LOCAL, _IFA_FLAGS = 1, 2, 8
_IFA_F_NODAD = 0x2
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 1, 4, 5, 15
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
_RTN_UNICAST = 1
_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF
IFF_UP = 0x1
_ENODEV, _EEXIST, _ENOENT, _ESRCH = 19, 17, 2, 3

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")


class NetlinkError(OSError):
    """The kernel refused a request (errno as the kernel gave it)."""


class Link:
    """One interface as RTM_GETLINK describes it."""

    __slots__ = ("alias", "flags", "index", "kind", "mac", "master", "mtu", "name",
                 "peer_index")

    def __init__(self, index: int, flags: int, attrs: dict[int, bytes]) -> None:
        self.index = index
        self.flags = flags
        self.name = _text(attrs.get(_IFLA_IFNAME, b""))
        self.mac = ":".join(f"{b:02x}" for b in attrs.get(_IFLA_ADDRESS, b""))
        self.mtu = _U32.unpack(attrs[_IFLA_MTU])[0] if _IFLA_MTU in attrs else 0
        self.master = _U32.unpack(attrs[_IFLA_MASTER])[0] if _IFLA_MASTER in attrs else 0
        self.peer_index = _U32.unpack(attrs[_IFLA_LINK])[0] if _IFLA_LINK in attrs else 0
        self.alias = _text(attrs.get(_IFLA_IFALIAS, b""))
        info = _parse_attrs(attrs.get(_IFLA_LINKINFO, b""), 0)
        self.kind = _text(info.get(_IFLA_INFO_KIND, b""))

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class Address:
    __slots__ = ("family", "index", "ip", "prefixlen")

    def __init__(self, family: int, prefixlen: int, index: int, ip: str) -> None:
        self.family, self.prefixlen, self.index, self.ip = family, prefixlen, index, ip


class Route:
    __slots__ = ("dst", "dst_len", "family", "gateway", "oif", "table")

    def __init__(self, family: int, dst_len: int, table: int, attrs: dict[int, bytes]) -> None:
        self.family, self.dst_len = family, dst_len
        self.table = _U32.unpack(attrs[_RTA_TABLE])[0] if _RTA_TABLE in attrs else table
        self.dst = _socket.inet_ntop(family, attrs[_RTA_DST]) if _RTA_DST in attrs else ""
        self.gateway = _socket.inet_ntop(family, attrs[_RTA_GATEWAY]) if _RTA_GATEWAY in attrs else ""
        self.oif = _U32.unpack(attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else 0


def new_socket() -> _socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's current network namespace."""
    sock = _socket.socket(_AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


class Rtnl:
    """Requests over one netlink socket (which stays in the namespace it was opened in)."""

    def __init__(self, sock: _socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else new_socket()
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    # ── the protocol ──────────────────────────────────────────────────────────────────────

    def _request(self, msg_type: int, flags: int, payload: bytes) -> list[bytes]:
        """Send one request; return the payloads of the messages answering it (a dump's
        parts, or the one reply). Raises NetlinkError when the kernel says no."""
        self._seq += 1
        seq = self._seq
        flags |= _NLM_F_REQUEST | (0 if flags & _NLM_F_DUMP == _NLM_F_DUMP else _NLM_F_ACK)
        self.sock.send(_HEADER.pack(_HEADER.size + len(payload), msg_type, flags, seq, 0) + payload)
        replies: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 17)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, msg_flags, msg_seq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(0, "malformed netlink message")
                body = data[offset + _HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # an answer to an earlier request we stopped waiting for
                if kind == _NLMSG_DONE:
                    return replies
                if kind == _NLMSG_ERROR:
                    errno = -_ERRNO.unpack_from(body)[0]
                    if errno:
                        raise NetlinkError(errno, os.strerror(errno))
                    return replies  # the ACK
                replies.append(body)
                if not msg_flags & _NLM_F_MULTI and not flags & _NLM_F_ACK:
                    return replies

    # ── links ─────────────────────────────────────────────────────────────────────────────

    def get_link(self, name: str) -> Link | None:
        try:
            replies = self._request(_RTM_GETLINK, 0, _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0)
                                    + _attr_str(_IFLA_IFNAME, name))
        except NetlinkError as exc:
            if exc.errno in (_ENODEV, _ENOENT):
                return None
            raise
        return _link(replies[0]) if replies else None

    def get_link_by_index(self, index: int) -> Link | None:
        try:
            replies = self._request(_RTM_GETLINK, 0, _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0))
        except NetlinkError as exc:
            if exc.errno in (_ENODEV, _ENOENT):
                return None
            raise
        return _link(replies[0]) if replies else None

    def links(self) -> list[Link]:
        return [_link(body) for body in self._request(_RTM_GETLINK, _NLM_F_DUMP,
                                                      _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0))]

    def create_bridge(self, name: str, mtu: int = 0) -> bool:
        """Create bridge `name`; False when an interface of that name already exists."""
        attrs = _attr_str(_IFLA_IFNAME, name) + (_attr_u32(_IFLA_MTU, mtu) if mtu else b"")
        attrs += _nested(_IFLA_LINKINFO, _attr_str(_IFLA_INFO_KIND, "bridge"))
        return self._create_link(attrs)

    def create_veth(self, name: str, peer: str, peer_netns_fd: int, *, mtu: int = 0,
                    peer_mac: str = "") -> bool:
        """A veth pair: `name` here, `peer` created directly inside the namespace `peer_netns_fd`
        refers to (with `peer_mac` if given). False when `name` already exists here."""
        mtu_attr = _attr_u32(_IFLA_MTU, mtu) if mtu else b""
        peer_msg = (_IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _attr_str(_IFLA_IFNAME, peer) + mtu_attr
                    + _attr(_IFLA_NET_NS_FD, _U32.pack(peer_netns_fd)))
        if peer_mac:
            peer_msg += _attr(_IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
        info = _attr_str(_IFLA_INFO_KIND, "veth") + _nested(_IFLA_INFO_DATA,
                                                           _attr(_VETH_INFO_PEER, peer_msg))
        return self._create_link(_attr_str(_IFLA_IFNAME, name) + mtu_attr + _nested(_IFLA_LINKINFO, info))

    def _create_link(self, attrs: bytes) -> bool:
        try:
            self._request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL,
                          _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + attrs)
        except NetlinkError as exc:
            if exc.errno == _EEXIST:
                return False
            raise
        return True

    def set_link(self, index: int, *, up: bool | None = None, master: int | None = None,
                 mtu: int = 0, alias: str = "", mac: str = "") -> None:
        """Change a link in one request (the kernel ignores an alias given at creation)."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        attrs = (_attr_u32(_IFLA_MASTER, master) if master is not None else b"") + (
            _attr_u32(_IFLA_MTU, mtu) if mtu else b"") + (_attr_str(_IFLA_IFALIAS, alias) if alias else b"")
        if mac:
            attrs += _attr(_IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        self._request(_RTM_NEWLINK, 0, _IFINFO.pack(AF_UNSPEC, 0, index, flags, change) + attrs)

    def set_hairpin(self, index: int, on: bool) -> None:
        """Hairpin mode on a bridge port: frames may leave by the port they came in on."""
        protinfo = _attr(_IFLA_PROTINFO | _NLA_F_NESTED, _attr(_IFLA_BRPORT_MODE, bytes([int(on)])))
        self._request(_RTM_SETLINK, 0, _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + protinfo)

    def delete_link(self, index: int) -> bool:
        """Delete a link (a veth takes its peer with it); False when it was already gone."""
        try:
            self._request(_RTM_DELLINK, 0, _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0))
        except NetlinkError as exc:
            if exc.errno in (_ENODEV, _ENOENT):
                return False
            raise
        return True

    # ── addresses and routes ──────────────────────────────────────────────────────────────

    def add_address(self, index: int, ip: str, prefixlen: int) -> bool:
        """Add `ip/prefixlen` to a link (IPv6 without duplicate-address detection, so it is
        usable at once); False when it is already there."""
        family = family_of(ip)
        raw = _socket.inet_pton(family, ip)
        attrs = _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw)
        if family == AF_INET6:
            attrs += _attr_u32(_IFA_FLAGS, _IFA_F_NODAD)
        try:
            self._request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL,
                          _IFADDR.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + attrs)
        except NetlinkError as exc:
            if exc.errno == _EEXIST:
                return False
            raise
        return True

    def addresses(self, family: int = AF_UNSPEC) -> list[Address]:
        out = []
        for body in self._request(_RTM_GETADDR, _NLM_F_DUMP, _IFADDR.pack(family, 0, 0, 0, 0)):
            fam, prefixlen, _, _, index = _IFADDR.unpack_from(body)
            attrs = _parse_attrs(body, _IFADDR.size)
            raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
            if raw is not None and fam in (AF_INET, AF_INET6):
                out.append(Address(fam, prefixlen, index, _socket.inet_ntop(fam, raw)))
        return out

    def add_route(self, dst: str, dst_len: int, gateway: str, oif: int) -> bool:
        """A main-table route to dst/dst_len via `gateway` (or on-link when empty) out of `oif`;
        False when the same route exists."""
        family = family_of(dst)
        attrs = _attr_u32(_RTA_OIF, oif)
        if dst_len:
            attrs += _attr(_RTA_DST, _socket.inet_pton(family, dst))
        if gateway:
            attrs += _attr(_RTA_GATEWAY, _socket.inet_pton(family, gateway))
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        try:
            self._request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, _RTMSG.pack(
                family, dst_len, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT, scope, _RTN_UNICAST, 0) + attrs)
        except NetlinkError as exc:
            if exc.errno == _EEXIST:
                return False
            raise
        return True

    def routes(self, family: int) -> list[Route]:
        out = []
        for body in self._request(_RTM_GETROUTE, _NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(body)
            out.append(Route(fam, dst_len, table, _parse_attrs(body, _RTMSG.size)))
        return out


def family_of(ip: str) -> int:
    return AF_INET6 if ":" in ip else AF_INET


def _link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(body)
    return Link(index, flags, _parse_attrs(body, _IFINFO.size))


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _attr(kind: int, data: bytes) -> bytes:
    length = _ATTR.size + len(data)
    return _ATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def _attr_str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _attr_u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def _nested(kind: int, data: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, data)


def _parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        attrs[kind & _NLA_TYPE_MASK] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return attrs


# ── nf_tables: set elements ─────────────────────────────────────────────────────────────────
# What the anti-spoofing bindings (netpol_cni.antispoof) need on every ADD and DEL, without
# starting `nft` (a process, ~10 ms) or loading libnftables through ctypes (~5 ms of start-up):
# one NETLINK_NETFILTER socket, one batch, one round trip. Keys are the kernel's bytes: each
# field of a concatenation padded to 4 bytes (an interface name is 16 bytes, a MAC 6 + 2, an
# IPv4 address 4, an IPv6 address 16), as nft lays them out. Tables, sets and chains are made
# by `nft -f` (antispoof.ensure_table), once per node. Deleting elements leaves the kernel
# work to finish when the socket closes (an RCU grace period, ~10 ms): DEL pays it, ADD not.

NFPROTO_BRIDGE = 7
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFNL_MSG_BATCH_BEGIN, _NFNL_MSG_BATCH_END = 16, 17
_NFT_MSG_NEWSETELEM, _NFT_MSG_GETSETELEM, _NFT_MSG_DELSETELEM = 12, 13, 14
_NFT_MSG_GETRULE = 7
_NFTA_RULE_TABLE, _NFTA_RULE_CHAIN, _NFTA_RULE_USERDATA = 1, 2, 7
_NFTA_SET_ELEM_LIST_TABLE, _NFTA_SET_ELEM_LIST_SET, _NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
_NFTA_LIST_ELEM = 1
_NFTA_SET_ELEM_KEY = 1
_NFTA_DATA_VALUE = 1

_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big endian)

Changes = dict[str, list[bytes]]  # set name → keys


class NfTables:
    """Element requests for one table, over one socket (in the namespace it was opened in)."""

    def __init__(self, table: str, family: int = NFPROTO_BRIDGE) -> None:
        self.table, self.family = table, family
        self.sock = _socket.socket(16, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, _NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NfTables:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def change(self, add: Changes | None = None, delete: Changes | None = None) -> None:
        """Delete, then add, these keys in one transaction: all of it or (NetlinkError) none."""
        messages = [self._elements(_NFT_MSG_DELSETELEM, 0, name, keys)
                    for name, keys in (delete or {}).items() if keys]
        messages += [self._elements(_NFT_MSG_NEWSETELEM, _NLM_F_CREATE, name, keys)
                     for name, keys in (add or {}).items() if keys]
        if not messages:
            return
        batch = _NFGEN.pack(0, 0, _socket.htons(_NFNL_SUBSYS_NFTABLES))
        begin = self._message(_NFNL_MSG_BATCH_BEGIN, 0, batch, ack=False)
        end = self._message(_NFNL_MSG_BATCH_END, 0, batch, ack=False)
        waiting = {seq for seq, _ in messages}
        self.sock.send(begin[1] + b"".join(m for _, m in messages) + end[1])
        failure: NetlinkError | None = None
        while waiting:
            for kind, _, seq, body in self._receive():
                if kind == _NLMSG_ERROR and seq in waiting:
                    waiting.discard(seq)
                    errno = -_ERRNO.unpack_from(body)[0]
                    if errno and failure is None:
                        failure = NetlinkError(errno, os.strerror(errno))
        if failure is not None:
            raise failure

    def keys(self, set_name: str) -> list[bytes]:
        """Every key of the set (NetlinkError ENOENT when the table or the set is missing)."""
        return [key for body in self._dump(_NFT_MSG_GETSETELEM, self._head() + self._names(set_name))
                for key in _element_keys(body)]

    def rule_userdata(self, chain: str) -> list[bytes]:
        """The user data (where nft keeps a rule's comment) of every rule of the chain, in
        order (NetlinkError ENOENT when the table or the chain is missing)."""
        payload = self._head() + _attr_str(_NFTA_RULE_TABLE, self.table) + _attr_str(_NFTA_RULE_CHAIN, chain)
        return [_parse_attrs(body, _NFGEN.size).get(_NFTA_RULE_USERDATA, b"")
                for body in self._dump(_NFT_MSG_GETRULE, payload)]

    def _dump(self, command: int, payload: bytes) -> list[bytes]:
        seq, message = self._message(command | (_NFNL_SUBSYS_NFTABLES << 8), _NLM_F_DUMP, payload, ack=False)
        self.sock.send(message)
        found: list[bytes] = []
        while True:
            for kind, _, msg_seq, body in self._receive():
                if msg_seq != seq:
                    continue
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    errno = -_ERRNO.unpack_from(body)[0]
                    if errno:
                        raise NetlinkError(errno, os.strerror(errno))
                    return found
                found.append(body)

    # ── the protocol ──────────────────────────────────────────────────────────────────────

    def _head(self) -> bytes:
        return _NFGEN.pack(self.family, 0, 0)

    def _names(self, set_name: str) -> bytes:
        return _attr_str(_NFTA_SET_ELEM_LIST_TABLE, self.table) + _attr_str(_NFTA_SET_ELEM_LIST_SET, set_name)

    def _elements(self, command: int, flags: int, set_name: str, keys: list[bytes]) -> tuple[int, bytes]:
        elements = b"".join(_nested(_NFTA_LIST_ELEM, _key(key)) for key in keys)
        payload = self._head() + self._names(set_name) + _nested(_NFTA_SET_ELEM_LIST_ELEMENTS, elements)
        return self._message(command | (_NFNL_SUBSYS_NFTABLES << 8), flags, payload)

    def _message(self, kind: int, flags: int, payload: bytes, ack: bool = True) -> tuple[int, bytes]:
        self._seq += 1
        flags |= _NLM_F_REQUEST | (_NLM_F_ACK if ack else 0)
        return self._seq, _HEADER.pack(_HEADER.size + len(payload), kind, flags, self._seq, 0) + payload

    def _receive(self) -> list[tuple[int, int, int, bytes]]:
        """The messages of one datagram: (type, flags, seq, body)."""
        data = self.sock.recv(1 << 17)
        out = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, flags, seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise NetlinkError(0, "malformed netlink message")
            out.append((kind, flags, seq, data[offset + _HEADER.size:offset + length]))
            offset += (length + 3) & ~3
        return out


def _key(key: bytes) -> bytes:
    return _nested(_NFTA_SET_ELEM_KEY, _attr(_NFTA_DATA_VALUE, key))


def _element_keys(body: bytes) -> list[bytes]:
    """The keys in one NEWSETELEM message of a dump."""
    attrs = _parse_attrs(body, _NFGEN.size)
    listed = attrs.get(_NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    keys = []
    offset = 0
    while offset + 4 <= len(listed):
        length = struct.unpack_from("=H", listed, offset)[0]
        if length < 4:
            break
        element = _parse_attrs(listed[offset + 4:offset + length], 0)
        key = _parse_attrs(element.get(_NFTA_SET_ELEM_KEY, b""), 0).get(_NFTA_DATA_VALUE)
        if key is not None:
            keys.append(key)
        offset += (length + 3) & ~3
    return keys
