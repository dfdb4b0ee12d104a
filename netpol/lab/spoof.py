"""The two small programs `netpol demo`'s spoofing scenario runs inside pod namespaces: a sender of
TCP SYNs with any source address, and a sniffer that counts the ones that arrive.

Standard library only, run as a script by path (`python spoof.py send|sniff …`), like
`netpol.lab.traffic`. Every packet carries the marker source port `MARKER_PORT`; the kinds of
packet a sniffer tells apart (forged, honest, …) differ by source address or by sequence number,
so a forged packet and an honest one from the same address are still counted apart.

* `send --src IP --dst IP --dport P --seq N --count N` sends `count` identical TCP SYNs from a raw
  socket (IPPROTO_RAW: the IP header is ours, so the source is whatever `--src` says; the kernel
  only routes it towards `--dst`) and prints how many it sent.
* `sniff --ifname IF --dst IP --dport P --expect KIND,SRC,SEQ … --until KIND --count N --timeout S`
  listens on the interface with an AF_PACKET socket (every IPv4 packet that reaches it, before the
  pod's own stack), prints `ready` once bound, and counts the marked SYNs to `--dst`:`--dport` of
  each expected kind. It stops once it has seen `count` of kind `--until` (sent last, on a path
  the policies allow: so whatever was sent before it has had its chance to arrive), or after
  `timeout` seconds (a hang bound), reads what is already queued, and prints `{"KIND": count}`.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MARKER_PORT = 31415  # source port of every packet sent here: below the ephemeral range, nobody else's
MARKER_SEQ = 0x6E700000  # sequence numbers of marked SYNs start here (b"np\0\0")
ETH_P_IP = 0x0800
SYN = 0x02
WINDOW = 64240
TTL = 64
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")  # version+IHL, TOS, length, ID, fragment, TTL, proto, sum, addrs
TCP_HEADER = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, data offset, flags, window, sum, urgent


@dataclass(frozen=True)
class Syn:
    """What a sniffer reads of a TCP SYN."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int


@dataclass(frozen=True)
class Expected:
    """One kind of packet a sniffer counts: the SYNs from `src` with sequence number `seq`."""

    kind: str
    src: str
    seq: int


# ── packets (pure) ──────────────────────────────────────────────────────────────────────────


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum of 16-bit words."""
    padded = data + b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """An IPv4 packet holding a TCP SYN, both checksums set (the kernel fills in the IP ID)."""
    source, destination = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = TCP_HEADER.pack(sport, dport, seq, 0, 5 << 4, SYN, WINDOW, 0, 0)
    pseudo = source + destination + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    header = IPV4_HEADER.pack(0x45, 0, IPV4_HEADER.size + len(tcp), 0, 0, TTL, socket.IPPROTO_TCP, 0,
                              source, destination)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + tcp


def parse_syn(packet: bytes) -> Syn | None:
    """The SYN an IPv4 packet holds (flags exactly SYN, first fragment), or None."""
    if len(packet) < IPV4_HEADER.size or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    fragment = struct.unpack("!H", packet[6:8])[0] & 0x1FFF
    if packet[9] != socket.IPPROTO_TCP or fragment or len(packet) < ihl + TCP_HEADER.size:
        return None
    sport, dport, seq = struct.unpack("!HHI", packet[ihl:ihl + 8])
    if packet[ihl + 13] != SYN:
        return None
    return Syn(socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]), sport, dport, seq)


def kind_of(syn: Syn | None, dst: str, dport: int, expected: Sequence[Expected]) -> str | None:
    """Which expected kind a packet is: a marked SYN to (`dst`, `dport`) from a kind's source
    with its sequence number; None for anything else."""
    if syn is None or (syn.dst, syn.dport, syn.sport) != (dst, dport, MARKER_PORT):
        return None
    return next((e.kind for e in expected if (e.src, e.seq) == (syn.src, syn.seq)), None)


def parse_expected(text: str) -> Expected:
    """`KIND,SRC,SEQ` (a command-line argument)."""
    kind, src, seq = text.split(",")
    return Expected(kind, src, int(seq))


# ── the programs (I/O) ──────────────────────────────────────────────────────────────────────


def send(src: str, dst: str, dport: int, seq: int, count: int) -> int:
    """`count` SYNs from (`src`, MARKER_PORT) to (`dst`, `dport`), from a raw socket."""
    packet = tcp_syn(src, dst, MARKER_PORT, dport, seq)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for _ in range(count):
            sock.sendto(packet, (dst, 0))
    return count


def _arrivals(sock: socket.socket, deadline: float | None) -> Iterator[bytes]:
    """Packets that reach the interface (not those it sends): until `deadline`, or, without one,
    those already queued."""
    while True:
        if deadline is None:
            sock.setblocking(False)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
        try:
            packet, address = sock.recvfrom(65535)
        except (TimeoutError, BlockingIOError):
            return
        if address[2] != socket.PACKET_OUTGOING:
            yield packet


def sniff(ifname: str, dst: str, dport: int, expected: Sequence[Expected], *, until: str, count: int,
          timeout: float) -> dict[str, int]:
    """Count the expected SYNs reaching `ifname` until `count` of kind `until` have (see above)."""
    counts = {e.kind: 0 for e in expected}
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP)) as sock:
        sock.bind((ifname, ETH_P_IP))
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        deadline = time.monotonic() + timeout
        for queued_only in (False, True):
            for packet in _arrivals(sock, None if queued_only else deadline):
                kind = kind_of(parse_syn(packet), dst, dport, expected)
                if kind is not None:
                    counts[kind] += 1
                if not queued_only and counts[until] >= count:
                    break
    return counts


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spoof.py")
    commands = parser.add_subparsers(dest="command", required=True)
    sender = commands.add_parser("send", help="send marked TCP SYNs from any source address")
    sender.add_argument("--src", required=True)
    sender.add_argument("--dst", required=True)
    sender.add_argument("--dport", type=int, required=True)
    sender.add_argument("--seq", type=int, required=True)
    sender.add_argument("--count", type=int, required=True)
    sniffer = commands.add_parser("sniff", help="count the marked SYNs that reach an interface")
    sniffer.add_argument("--ifname", required=True)
    sniffer.add_argument("--dst", required=True)
    sniffer.add_argument("--dport", type=int, required=True)
    sniffer.add_argument("--expect", type=parse_expected, action="append", required=True,
                         help="KIND,SRC,SEQ (repeated)")
    sniffer.add_argument("--until", required=True, help="the kind whose arrivals end the count")
    sniffer.add_argument("--count", type=int, required=True)
    sniffer.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "sniff" and args.until not in {e.kind for e in args.expect}:
        parser.error(f"--until {args.until}: no --expect of that kind")
    if args.command == "send":
        print(send(args.src, args.dst, args.dport, args.seq, args.count))
    else:
        counts = sniff(args.ifname, args.dst, args.dport, args.expect, until=args.until, count=args.count,
                       timeout=args.timeout)
        json.dump(counts, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
