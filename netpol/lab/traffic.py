"""The two small programs `netpol verify` runs inside pod namespaces: a server and a prober.

Standard library only, run as a script by path (`python lab_traffic.py serve|probe …`) so each
process starts in a few milliseconds without importing netpol.

* `serve --ips IP,… --tcp PORT,… --udp PORT,…` listens on every (IP, port): TCP accepts and closes,
  UDP echoes each datagram. It prints `ready` once bound and exits when its stdin closes.
* `probe` reads `{"timeout": s, "targets": [[id, ip, port, "TCP"|"UDP"], ...]}` on stdin, probes
  every target concurrently (non-blocking sockets, one selector) and prints `{"id": outcome}`:
  `open` (TCP handshake done, or a UDP reply), `blocked` (nothing before the timeout),
  `refused` (RST or ICMP port unreachable) or `error: …`.
* `watch` reads the same request as one line (plus `"interval": s`), then probes every target
  again and again — each anew once its last attempt settled and `interval` passed since it
  began, the first attempts spread over one timeout — until its stdin closes. It prints
  `watching` as it begins, and at the end `[[id, started, outcome], ...]`, one per attempt,
  `started` on the system's monotonic clock (CLOCK_MONOTONIC: the parent's `time.monotonic()`),
  so the parent can tell which attempts fell inside a window it measured itself.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

MAX_IN_FLIGHT = 256  # sockets open at once per prober; far below the default fd limit
UDP_PAYLOAD = b"netpol-verify"


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _listen(sel: selectors.BaseSelector, ip: str, port: int, kind: socket.SocketKind) -> None:
    sock = socket.socket(_family(ip), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(512)
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, kind)


def _answer(sock: socket.socket, kind: socket.SocketKind) -> None:
    try:
        if kind == socket.SOCK_STREAM:
            sock.accept()[0].close()
        else:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
    except OSError:
        pass  # the client gave up first; nothing to answer


def serve(ips: list[str], tcp: list[int], udp: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for ip in ips:
        for port in tcp:
            _listen(sel, ip, port, socket.SOCK_STREAM)
        for port in udp:
            _listen(sel, ip, port, socket.SOCK_DGRAM)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            if key.data is None:  # stdin: the parent closed it or went away
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            else:
                _answer(key.fileobj, key.data)  # type: ignore[arg-type]


@dataclass
class _Attempt:
    ident: str
    sock: socket.socket
    protocol: str
    deadline: float
    started: float


@dataclass
class _Prober:
    timeout: float
    pending: list[list[str | int]]
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    results: dict[str, str] = field(default_factory=dict)
    in_flight: dict[int, _Attempt] = field(default_factory=dict)
    attempts: list[list[str | float]] = field(default_factory=list)  # [id, started, outcome], in order

    def start(self, target: list[str | int]) -> None:
        ident, ip, port, protocol = str(target[0]), str(target[1]), int(target[2]), str(target[3])
        kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
        sock = socket.socket(_family(ip), kind)
        sock.setblocking(False)
        started = time.monotonic()
        code = sock.connect_ex((ip, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.record(ident, started, _outcome(code))
            return
        if protocol == "UDP":
            try:
                sock.send(UDP_PAYLOAD)
            except OSError as exc:
                sock.close()
                self.record(ident, started, _outcome(exc.errno or 0))
                return
        event = selectors.EVENT_WRITE if protocol == "TCP" else selectors.EVENT_READ
        self.sel.register(sock, event)
        self.in_flight[sock.fileno()] = _Attempt(ident, sock, protocol, started + self.timeout, started)

    def record(self, ident: str, started: float, outcome: str) -> None:
        self.results[ident] = outcome
        self.attempts.append([ident, started, outcome])

    def finish(self, attempt: _Attempt, outcome: str) -> None:
        self.sel.unregister(attempt.sock)
        del self.in_flight[attempt.sock.fileno()]
        attempt.sock.close()
        self.record(attempt.ident, attempt.started, outcome)

    def settle(self, attempt: _Attempt) -> None:
        if attempt.protocol == "TCP":
            self.finish(attempt, _outcome(attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
            return
        try:
            attempt.sock.recv(2048)
            self.finish(attempt, "open")
        except OSError as exc:
            self.finish(attempt, _outcome(exc.errno or 0))

    def run(self) -> dict[str, str]:
        while self.pending or self.in_flight:
            while self.pending and len(self.in_flight) < MAX_IN_FLIGHT:
                self.start(self.pending.pop())
            if not self.in_flight:
                continue
            wait = max(0.0, min(a.deadline for a in self.in_flight.values()) - time.monotonic())
            for key, _ in self.sel.select(wait):
                self.settle(self.in_flight[key.fd])
            now = time.monotonic()
            for attempt in [a for a in self.in_flight.values() if a.deadline <= now]:
                self.finish(attempt, "blocked")
        return self.results


def _watch(prober: _Prober, targets: list[list[str | int]], interval: float) -> None:
    """`watch` (see the module): until stdin closes, then until the attempts in flight settle."""
    by_ident = {str(t[0]): t for t in targets}
    now = time.monotonic()
    spread = prober.timeout / max(1, len(targets))
    due = {str(t[0]): now + k * spread for k, t in enumerate(targets)}  # idle targets: next start
    stdin = sys.stdin.fileno()
    prober.sel.register(stdin, selectors.EVENT_READ, "stdin")
    watching = True
    while watching or prober.in_flight:
        now = time.monotonic()
        for ident in [i for i, at in due.items() if at <= now] if watching else ():
            del due[ident]
            seen = len(prober.attempts)
            prober.start(by_ident[ident])
            if len(prober.attempts) > seen:  # settled at once (refused, an error)
                due[ident] = max(now + interval, time.monotonic())
        deadlines = [a.deadline for a in prober.in_flight.values()] + (list(due.values()) if watching else [])
        wait = max(0.0, min(deadlines, default=now + 1.0) - now)
        seen = len(prober.attempts)
        for key, _ in prober.sel.select(wait):
            if key.data == "stdin":
                if not os.read(stdin, 4096):
                    prober.sel.unregister(stdin)
                    watching = False
            else:
                prober.settle(prober.in_flight[key.fd])
        now = time.monotonic()
        for attempt in [a for a in prober.in_flight.values() if a.deadline <= now]:
            prober.finish(attempt, "blocked")
        for settled, started, _ in prober.attempts[seen:]:
            due[str(settled)] = max(float(started) + interval, now)


def watch() -> None:
    request = json.loads(sys.stdin.readline())
    prober = _Prober(float(request["timeout"]), [])
    sys.stdout.write("watching\n")
    sys.stdout.flush()
    _watch(prober, list(request["targets"]), float(request.get("interval", 0.05)))
    json.dump(prober.attempts, sys.stdout)


def _outcome(code: int) -> str:
    if code == 0:
        return "open"
    if code == errno.ECONNREFUSED:
        return "refused"
    return f"error: {errno.errorcode.get(code, str(code))}"


def probe() -> None:
    request = json.load(sys.stdin)
    results = _Prober(float(request["timeout"]), list(request["targets"])).run()
    json.dump(results, sys.stdout)


def _numbers(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="lab_traffic.py")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="listen on every (ip, port); exit when stdin closes")
    server.add_argument("--ips", required=True, help="comma-separated addresses")
    server.add_argument("--tcp", type=_numbers, default=[], help="comma-separated TCP ports")
    server.add_argument("--udp", type=_numbers, default=[], help="comma-separated UDP ports")
    commands.add_parser("probe", help="probe the targets given as JSON on stdin")
    commands.add_parser("watch", help="probe the targets given as one JSON line on stdin, again and "
                                      "again, until stdin closes")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.ips.split(","), args.tcp, args.udp)
    elif args.command == "watch":
        watch()
    else:
        probe()


if __name__ == "__main__":
    main(sys.argv[1:])
