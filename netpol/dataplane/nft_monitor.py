"""Noticing what others change in our table, from the kernel's own nftables notifications.

Every nftables transaction in a network namespace is announced on the netlink multicast group
NFNLGRP_NFTABLES (what `nft monitor` prints): one message per table, chain, rule, set or
element added or deleted, each naming its table, then a NEWGEN message naming the thread that
committed (its kernel thread id, `NFTA_GEN_PROC_PID`, and name). `TableWatch` reads that group
on a thread of its own and keeps, per transaction, what touched `inet netpol`; a transaction
committed by any thread but ours (the Applier's worker, whose kernel id `kernel_thread_id`
learns from a GETGEN answer, so it is right inside a container's PID namespace too) is drift:
`take()` hands it to the agent, which restores the program it last applied.

Why notifications and not a periodic listing: at 10k pods / 10k policies a node's table holds
~3,000 sets and ~70,000 elements; `nft list table inet netpol` takes 0.60 s and a raw netlink
dump of it 0.45 s (0.40 s of it the kernel answering one element dump per set), so checking
every few seconds would cost a tenth of a core, and a fingerprint taken after every apply would
add half a second to every sync. Notifications cost nothing while nobody changes anything, and
tell at once, naming what changed and who changed it. Reading our own commits' notifications
is the price: a full replace at 10k pods announces ~75,000 objects, read in ~0.1 s by this
thread while the loop goes on. When the receive buffer overflows anyway (ENOBUFS), what
happened is unknown: `take()` says so (`lost`), and the agent restores its table to be sure.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from netpol.dataplane.netns import enter_netns

log = logging.getLogger("netpol.dataplane.nft_monitor")

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max
RECEIVE_BUFFER = 64 << 20  # a 10k-pod full replace announces ~10 MB (skb sizes included)
NFPROTO_INET = 1
SUBSYS_NFTABLES = 10
MSG_NEWGEN, MSG_GETGEN = 15, 16
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id
ATTR = struct.Struct("=HH")
BE32 = struct.Struct(">I")
NLA_TYPE_MASK = 0x3FFF

# message type → (what happened, the attribute naming the object, what the object is). The
# table's name is attribute 1 in every one of them.
CHANGES: dict[int, tuple[str, int, str]] = {
    0: ("added", 0, "table"), 2: ("deleted", 0, "table"),
    3: ("added", 3, "chain"), 5: ("deleted", 3, "chain"),
    6: ("added to chain", 2, "rule"), 8: ("deleted from chain", 2, "rule"),
    9: ("added", 2, "set"), 11: ("deleted", 2, "set"),
    12: ("added to set", 2, "element"), 14: ("deleted from set", 2, "element"),
    18: ("added", 2, "object"), 20: ("deleted", 2, "object"),
    22: ("added", 2, "flowtable"), 24: ("deleted", 2, "flowtable"),
}
TABLE_DELETED = 2


def _attributes(payload: bytes, offset: int, wanted: int) -> dict[int, bytes]:
    """The attributes up to type `wanted` of one message (enough to name table and object)."""
    found: dict[int, bytes] = {}
    while offset + ATTR.size <= len(payload):
        length, kind = ATTR.unpack_from(payload, offset)
        if length < ATTR.size:
            break
        kind &= NLA_TYPE_MASK
        if kind <= wanted:
            found[kind] = payload[offset + ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _summary(changes: Counter[str], most: int = 10) -> tuple[str, ...]:
    """What changed, table-level changes first, then the most frequent: `rule added to chain
    forward (×1)` (× counts notifications; one may carry several set elements)."""
    ordered = sorted(changes.items(), key=lambda item: (not item[0].startswith("table "), -item[1], item[0]))
    shown = [f"{what} (×{count})" for what, count in ordered[:most]]
    return (*shown, f"… and {len(ordered) - most} more") if len(ordered) > most else tuple(shown)


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)


def kernel_thread_id() -> int:
    """The calling thread's id as the kernel names committers in NEWGEN notifications: the
    process id field of a GETGEN answer, which describes the asking thread."""
    with _socket() as sock:
        sock.bind((0, 0))
        body = NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
        sock.send(HEADER.pack(HEADER.size + len(body), SUBSYS_NFTABLES << 8 | MSG_GETGEN, NLM_F_REQUEST, 1, 0)
                  + body)
        answer = sock.recv(65536)
    length, kind, *_ = HEADER.unpack_from(answer)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", answer, HEADER.size)[0]
        raise OSError(code, f"nftables GETGEN: {errno.errorcode.get(code, code)}")
    pid = _attributes(answer[:length], HEADER.size + NFGENMSG.size, 2).get(2)
    if pid is None:
        raise OSError(errno.EPROTO, "nftables GETGEN: this kernel does not name committing threads")
    return int(BE32.unpack(pid)[0])


@dataclass(frozen=True)
class TableChanges:
    """What others changed in our table since the last `take()`: `changes` (e.g. "rule added to
    chain forward (×1)"), who (`by`: "nft (thread 1234)"), and `lost`: notifications were
    dropped (receive buffer overflow), so anything may have changed."""

    changes: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    lost: bool = False

    def __bool__(self) -> bool:
        return bool(self.changes) or self.lost


@dataclass
class TableWatch:
    """Follows the nftables notifications of one network namespace (`netns`, or our own) for
    changes to `family`/`table` committed by threads other than `own` (kernel thread ids)."""

    netns: str | None
    own: frozenset[int]
    family: int = NFPROTO_INET
    table: str = "netpol"
    on_death: Callable[[str, BaseException], None] | None = None
    _changes: Counter[str] = field(default_factory=Counter)
    _by: dict[str, None] = field(default_factory=dict)
    _lost: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def start(self) -> TableWatch:
        """Subscribe (inside `netns`: the socket belongs to the namespace of the thread that makes
        it), then read on a daemon thread. Raises OSError when netlink refuses."""
        opened = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if self.netns:
                    enter_netns(self.netns)
                self._sock = self._subscribe()
            except BaseException as exc:  # reported to start(), which raises it
                failure.append(exc)
                return
            finally:
                opened.set()
            self._guarded_read()

        self._thread = threading.Thread(target=run, name="nft-monitor", daemon=True)
        self._thread.start()
        opened.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def take(self) -> TableChanges:
        """What others changed since the last call (and forget it)."""
        with self._lock:
            if not self._changes and not self._lost:
                return TableChanges()
            found = TableChanges(_summary(self._changes), tuple(self._by), self._lost)
            self._changes.clear()
            self._by.clear()
            self._lost = False
            return found

    # ── the reading thread ────────────────────────────────────────────────────────────────

    def _subscribe(self) -> socket.socket:
        sock = _socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:  # not root: as much as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        sock.settimeout(0.5)  # to notice stop()
        return sock

    def _guarded_read(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            if self.on_death is None:
                raise
            self.on_death("nft-monitor", exc)
        finally:
            if self._sock is not None:
                self._sock.close()

    def _read(self) -> None:
        assert self._sock is not None
        transaction: Counter[str] = Counter()  # what the transaction being announced did to our table
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("nftables notifications lost (receive buffer overflow)")
                transaction.clear()
                with self._lock:
                    self._lost = True
                continue
            self._take_messages(data, transaction)

    def _take_messages(self, data: bytes, transaction: Counter[str]) -> None:
        offset = 0
        table = self.table
        while offset + HEADER.size <= len(data):
            length, kind = HEADER.unpack_from(data, offset)[:2]
            if length < HEADER.size:
                break
            message = data[offset:offset + length]
            offset += (length + 3) & ~3
            if kind >> 8 != SUBSYS_NFTABLES or len(message) < HEADER.size + NFGENMSG.size:
                continue
            if kind & 0xFF == MSG_NEWGEN:
                self._committed(message, transaction)
                transaction.clear()
                continue
            change = CHANGES.get(kind & 0xFF)
            if change is None or message[HEADER.size] != self.family:
                continue
            attrs = _attributes(message, HEADER.size + NFGENMSG.size, 3)
            if _text(attrs.get(1, b"")) != table:
                continue
            what, name_attr, noun = change
            name = _text(attrs.get(name_attr, b"")) if name_attr else table
            transaction[f"{noun} {what} {name}"] += 1

    def _committed(self, message: bytes, transaction: Counter[str]) -> None:
        """A transaction ended: keep what it did to our table unless it was ours. One of ours
        that deleted the table (a full replace) also ends any drift noticed before it."""
        attrs = _attributes(message, HEADER.size + NFGENMSG.size, 3)
        pid = int(BE32.unpack(attrs[2])[0]) if len(attrs.get(2, b"")) == 4 else -1
        ours = pid in self.own
        with self._lock:
            if ours:
                if any(what.startswith("table deleted") for what in transaction):
                    self._changes.clear()
                    self._by.clear()
                return
            if transaction:
                self._changes.update(transaction)
                self._by[f"{_text(attrs.get(3, b'?'))} (thread {pid})"] = None
