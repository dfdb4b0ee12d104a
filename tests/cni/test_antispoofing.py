"""netpol-cni's anti-spoofing (`table bridge netpol_cni`, plugin/netpol_cni/antispoof.py) against
real forged frames: Ethernet frames built here byte by byte (IPv4/UDP, IPv6/UDP, ARP, ICMPv6
neighbour advertisements, checksums included) and sent from an attacker pod through an
AF_PACKET socket or an IP_HDRINCL raw socket, counted where they would land (a UDP socket in the
victim pod, an AF_PACKET sniffer, the neighbour tables of a third pod and of the node).

Every exchange is decided by delivery order, never by time: the sender (pinned to one CPU, so
its frames stay in order through the veths and the bridge) sends the forged frames, then
honest ones, then an honest end marker on the same path; the receiver counts until it sees the
marker. Honest traffic must all arrive and forged traffic must not. Every packet test also
deletes the table and repeats the same exchange, which must then deliver the forged frames (or
poison the cache): the probe would have seen them. The lifecycle tests (ADD, DEL, CHECK, GC,
the table deleted, the agent's table replaced) show each removal opening the hole and each
repair closing it, with the same exchanges. The last section holds the holes found while
writing these tests, each fixed in the plugin since.

Everything lives in namespaces the harness (cni_runtime.CniNode) creates and deletes: the node
namespace, where the plugin, the bridge and the rules are, and one namespace per pod. Nothing
is sent to any address outside them; the "foreign" sources below are only ever *sources*."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from netpol_cni.antispoof import RULES

from netpol.backends.nftables import render
from netpol.compile.compiler import compile_cluster
from tests.cni.cni_runtime import CniNode, have_reference_plugins
from tests.conftest import cluster, pod_yaml, policy_yaml, wait_until

needs_cni = pytest.mark.skipif(os.geteuid() != 0 or not have_reference_plugins() or shutil.which("ip") is None
                               or shutil.which("nft") is None,
                               reason="needs root, nft and containernetworking-plugins (make test installs them)")
pytestmark = [pytest.mark.kernel, needs_cni]

N = 20  # forged and honest datagrams per kind and run
PORT = 9999
HANG = 30.0  # seconds a receiver waits for its end marker: a hang bound, delivery takes microseconds
TABLE = "netpol_cni"
DUAL = "10.88.0.0/24,fd88::/64"


# ── pods ────────────────────────────────────────────────────────────────────────────────────


@dataclass
class Pod:
    cid: str
    netns: str  # namespace name
    mac: str
    port: str  # the host veth
    ip4: str
    ip6: str
    result: dict[str, Any]


def attach(node: CniNode, cid: str, conf: dict[str, Any]) -> Pod:
    """ADD a new pod namespace; permissive reverse-path filtering in it, so that only the
    anti-spoofing rules can stop a forged datagram on its way to the pod's socket."""
    path = node.pod()
    result = node.add(path, cid, conf=conf)
    ips = [ip["address"].split("/")[0] for ip in result["ips"]]
    pod = Pod(cid, path.removeprefix("/run/netns/"), result["interfaces"][2]["mac"],
              result["interfaces"][1]["name"], next((i for i in ips if ":" not in i), ""),
              next((i for i in ips if ":" in i), ""), result)
    node.exec(pod.netns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
              "net.ipv4.conf.eth0.rp_filter=0")
    return pod


def neighbour(node: CniNode, pod: Pod, peer: Pod, ip: str) -> None:
    """A permanent neighbour entry in `pod` for `ip` at `peer`'s MAC: the pod's own sends never
    wait for (or send) an ARP or a neighbour solicitation."""
    node.ip("neigh", "replace", ip, "lladdr", peer.mac, "dev", "eth0", "nud", "permanent", netns=pod.netns)


def unprotect(node: CniNode) -> None:
    """The control: no anti-spoofing table at all."""
    node.exec(node.netns, "nft", "delete", "table", "bridge", TABLE)


# ── frames, built by hand ───────────────────────────────────────────────────────────────────

ETH_IP, ETH_ARP, ETH_IP6 = 0x0800, 0x0806, 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, pseudo_tail: bytes) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    checksum = _checksum(src + dst + pseudo_tail + header + payload) or 0xFFFF
    return header[:6] + struct.pack("!H", checksum) + payload


def ipv4_udp(src: str, dst: str, dport: int, payload: bytes, sport: int = 40000) -> bytes:
    """An IPv4 packet carrying a UDP datagram, both checksums right."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = _udp(s, d, sport, dport, payload, struct.pack("!BBH", 0, socket.IPPROTO_UDP, 8 + len(payload)))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64, socket.IPPROTO_UDP, 0, s, d)
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + udp


def _ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
                       socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)) + payload


def ipv6_udp(src: str, dst: str, dport: int, payload: bytes, sport: int = 40000) -> bytes:
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    udp = _udp(s, d, sport, dport, payload, struct.pack("!I3xB", 8 + len(payload), socket.IPPROTO_UDP))
    return _ipv6(src, dst, socket.IPPROTO_UDP, udp)


def arp(op: int, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    """An Ethernet/IPv4 ARP packet (op 1 request, 2 reply)."""
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, _mac(sender_mac), socket.inet_aton(sender_ip),
                       _mac(target_mac), socket.inet_aton(target_ip))


def neighbour_advert(src: str, dst: str, target: str, lladdr: str, flags: int = 0x20) -> bytes:
    """An IPv6 packet with an ICMPv6 neighbour advertisement (flags: 0x20 override, 0x40
    solicited) for `target` at `lladdr` (target link-layer address option), hop limit 255."""
    body = struct.pack("!BBHB3x16s", 136, 0, 0, flags, socket.inet_pton(socket.AF_INET6, target))
    body += struct.pack("!BB6s", 2, 1, _mac(lladdr))
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    checksum = _checksum(s + d + struct.pack("!I3xB", len(body), 58) + body)
    return _ipv6(src, dst, 58, body[:2] + struct.pack("!H", checksum) + body[4:], hop_limit=255)


# ── senders and receivers, in the pods' namespaces ──────────────────────────────────────────

# Steps from stdin (JSON): ["eth", hex frame] through an AF_PACKET socket on eth0; ["raw4", dst,
# hex IPv4 packet] through an IP_HDRINCL raw socket; ["udp", src, dst, port, text] through an
# ordinary UDP socket bound to src. AF_PACKET frames leave through the interface argv[1].
# One CPU (the same for every sender): the frames keep their order up to the receiver.
SENDER = """
import json, os, socket, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
eth = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
eth.bind((sys.argv[1], 0))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
bound = {}
for step in json.load(sys.stdin):
    if step[0] == "eth":
        eth.send(bytes.fromhex(step[1]))
    elif step[0] == "raw4":
        raw.sendto(bytes.fromhex(step[2]), (step[1], 0))
    else:
        _, src, dst, port, text = step
        if src not in bound:
            bound[src] = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
            bound[src].bind((src, 0))
        bound[src].sendto(text.encode(), (dst, port))
"""

# A UDP socket on ip:port; counts datagrams by label (payload "label:i") until one labelled
# "end"; prints the counts as JSON.
LISTENER = """
import json, socket, sys
ip, port, hang = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
s.settimeout(hang)
print("ready", flush=True)
counts = {}
while True:
    label = s.recv(2048).decode().rsplit(":", 1)[0]
    if label == "end":
        break
    counts[label] = counts.get(label, 0) + 1
print(json.dumps(counts), flush=True)
"""

# An AF_PACKET socket on eth0 that counts the ARP packets ("arp:op:sender MAC:sender IP") and
# neighbour advertisements ("na:source MAC:target") that arrive, until it sees the key argv[1].
SNIFFER = """
import json, socket, struct, sys
end, hang = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 3))
s.settimeout(hang)
print("ready", flush=True)
mac = lambda b: ":".join(f"{x:02x}" for x in b)
counts = {}
while True:
    frame, where = s.recvfrom(65535)
    if where[2] == socket.PACKET_OUTGOING:
        continue
    kind, key = struct.unpack("!H", frame[12:14])[0], None
    if kind == 0x0806:
        op = struct.unpack("!H", frame[20:22])[0]
        key = f"arp:{op}:{mac(frame[22:28])}:{socket.inet_ntoa(frame[28:32])}"
    elif kind == 0x86DD and frame[20] == 58 and frame[54] == 136:
        key = f"na:{mac(frame[6:12])}:{socket.inet_ntop(socket.AF_INET6, frame[62:78])}"
    if key is None:
        continue
    if key == end:
        break
    counts[key] = counts.get(key, 0) + 1
print(json.dumps(counts), flush=True)
"""


def _receiver(netns: str, script: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script, *args, str(HANG)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise AssertionError(f"receiver did not start: {process.communicate()[1]}")
    return process


def _send(netns: str, steps: list[list[Any]], ifname: str = "eth0") -> None:
    sent = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SENDER, ifname],
                          input=json.dumps(steps),
                          capture_output=True, text=True, timeout=HANG, check=False)
    assert sent.returncode == 0, sent.stderr


def _counts(receiver: subprocess.Popen[str]) -> Counter[str]:
    try:
        out, err = receiver.communicate(timeout=HANG + 10)
    except subprocess.TimeoutExpired:
        receiver.kill()
        receiver.communicate()
        raise
    assert receiver.returncode == 0, f"the end marker never arrived: {err}"
    return Counter(json.loads(out))


def exchange(sender: Pod, steps: list[list[Any]], receiver: Pod, ip: str, port: int = PORT,
             ifname: str = "eth0") -> Counter[str]:
    """Datagrams received on ip:port in `receiver`, by label, after `steps` were sent from
    `sender`; the last step must deliver the end marker (`end_udp`)."""
    listener = _receiver(receiver.netns, LISTENER, ip, str(port))
    try:
        _send(sender.netns, steps, ifname)
    except BaseException:
        listener.kill()
        listener.communicate()
        raise
    return _counts(listener)


def sniff(sender: Pod, steps: list[list[Any]], receiver: Pod, end: str) -> Counter[str]:
    """Frames (sniffer keys) that reached `receiver`'s eth0 after `steps`, until the key `end`."""
    sniffer = _receiver(receiver.netns, SNIFFER, end)
    try:
        _send(sender.netns, steps)
    except BaseException:
        sniffer.kill()
        sniffer.communicate()
        raise
    return _counts(sniffer)


def udp_frames(label: str, sender: Pod, dst: Pod, src_ip: str, dst_ip: str, src_mac: str | None = None,
               port: int = PORT, n: int = N) -> list[list[Any]]:
    """`n` Ethernet frames from `sender`'s eth0 to `dst`'s MAC, each a UDP datagram from
    src_ip (and src_mac, by default the sender's real MAC) to dst_ip:port."""
    build, kind = (ipv6_udp, ETH_IP6) if ":" in dst_ip else (ipv4_udp, ETH_IP)
    return [["eth", ether(dst.mac, src_mac or sender.mac, kind,
                          build(src_ip, dst_ip, port, f"{label}:{i}".encode())).hex()] for i in range(n)]


def raw_packets(label: str, src_ip: str, dst_ip: str, port: int = PORT, n: int = N) -> list[list[Any]]:
    """`n` IPv4/UDP packets through the IP_HDRINCL raw socket (the kernel routes them, keeping
    the source address we wrote)."""
    return [["raw4", dst_ip, ipv4_udp(src_ip, dst_ip, port, f"{label}:{i}".encode()).hex()] for i in range(n)]


def socket_datagrams(label: str, src_ip: str, dst_ip: str, port: int = PORT, n: int = N) -> list[list[Any]]:
    return [["udp", src_ip, dst_ip, port, f"{label}:{i}"] for i in range(n)]


def end_udp(sender: Pod, dst: Pod, dst_ip: str, port: int = PORT) -> list[list[Any]]:
    """The honest end marker, on the frame path (sender's real MAC and address)."""
    own = sender.ip6 if ":" in dst_ip else sender.ip4
    return udp_frames("end", sender, dst, own, dst_ip, port=port, n=1)


def lladdr(node: CniNode, netns: str, ip: str) -> str | None:
    """The MAC of `netns`'s neighbour entry for `ip` (None without one)."""
    entries = json.loads(node.exec(netns, "ip", "-j", "neigh", "show", ip).stdout or "[]")
    return entries[0].get("lladdr") if entries else None


# ── 1, 2. forged IPv4 sources ───────────────────────────────────────────────────────────────


def test_ipv4_from_another_pods_address_is_dropped_through_af_packet_and_ip_hdrincl(node):
    """The attacker forges the source address of a pod on the same node, towards a victim's
    UDP socket: as Ethernet frames with its real MAC, and as IP_HDRINCL raw packets the
    kernel routes. Its honest datagrams, the same way built, all arrive."""
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))
    neighbour(node, attacker, victim, victim.ip4)
    steps = (udp_frames("forged-frame", attacker, victim, other.ip4, victim.ip4)
             + raw_packets("forged-raw", other.ip4, victim.ip4)
             + udp_frames("honest-frame", attacker, victim, attacker.ip4, victim.ip4)
             + raw_packets("honest-raw", attacker.ip4, victim.ip4)
             + socket_datagrams("honest-socket", attacker.ip4, victim.ip4)
             + end_udp(attacker, victim, victim.ip4))
    honest = {"honest-frame": N, "honest-raw": N, "honest-socket": N}
    assert exchange(attacker, steps, victim, victim.ip4) == honest

    unprotect(node)
    assert exchange(attacker, steps, victim, victim.ip4) == dict(honest, **{"forged-frame": N, "forged-raw": N})


@pytest.mark.parametrize(("label", "source"), [
    ("another-node", "10.88.1.7"),  # a pod address of another node (outside this node's 10.88.0.0/24)
    ("gateway", "10.88.0.1"),  # the node's own address on the bridge
    ("ipblock", "192.168.50.7"),  # inside a range a policy could admit by ipBlock
    ("unused", "10.88.0.200"),  # this node's subnet, nobody's yet
])
def test_ipv4_from_addresses_of_no_pod_here_is_dropped(node, label, source):
    conf = node.conf(isDefaultGateway=True)
    attacker, victim = attach(node, "ctr-attacker", conf), attach(node, "ctr-victim", conf)
    neighbour(node, attacker, victim, victim.ip4)
    steps = (udp_frames(label, attacker, victim, source, victim.ip4)
             + raw_packets(label + "-raw", source, victim.ip4)
             + udp_frames("honest", attacker, victim, attacker.ip4, victim.ip4)
             + end_udp(attacker, victim, victim.ip4))
    assert exchange(attacker, steps, victim, victim.ip4) == {"honest": N}

    unprotect(node)
    assert exchange(attacker, steps, victim, victim.ip4) == {label: N, label + "-raw": N, "honest": N}


# ── 3. an address added to the attacker's own interface ────────────────────────────────────


def test_an_address_the_attacker_adds_to_its_own_interface_gets_nothing_through(node):
    """The attacker takes the victim's addresses (IPv4 and IPv6) onto its eth0 and sends from
    them with ordinary sockets to a third pod; from its own addresses, the same way, all
    arrives. (Permanent neighbour entries: the attacker's kernel never has to ARP from the
    stolen address, so the IP rules, not the ARP rule, are what is tested.)"""
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim, target = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "target"))
    node.ip("addr", "add", f"{victim.ip4}/32", "dev", "eth0", netns=attacker.netns)
    node.ip("addr", "add", f"{victim.ip6}/128", "dev", "eth0", "nodad", netns=attacker.netns)
    for ip in (target.ip4, target.ip6):
        neighbour(node, attacker, target, ip)
    for family, stolen, own, dst in (("4", victim.ip4, attacker.ip4, target.ip4),
                                     ("6", victim.ip6, attacker.ip6, target.ip6)):
        steps = (socket_datagrams("stolen", stolen, dst) + socket_datagrams("honest", own, dst)
                 + socket_datagrams("end", own, dst, n=1))
        assert exchange(attacker, steps, target, dst) == {"honest": N}, family

    unprotect(node)
    for stolen, own, dst in ((victim.ip4, attacker.ip4, target.ip4), (victim.ip6, attacker.ip6, target.ip6)):
        steps = (socket_datagrams("stolen", stolen, dst) + socket_datagrams("honest", own, dst)
                 + socket_datagrams("end", own, dst, n=1))
        assert exchange(attacker, steps, target, dst) == {"stolen": N, "honest": N}


# ── 4. a forged source MAC ──────────────────────────────────────────────────────────────────


def test_another_pods_mac_with_the_attackers_own_address_is_dropped_and_never_learned(node):
    """Frames from the attacker's own IPv4 address but another pod's MAC: none arrive, and the
    bridge never learns that MAC on the attacker's port (no FDB poisoning). The other pod's
    interface is down: its own frames (IPv6 DAD, router solicitations, MLD reports, sent when
    it comes up) would otherwise move its MAC back to its port whenever they happen to come
    after ours, and the control could not see the poisoning."""
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))
    node.ip("link", "set", "eth0", "down", netns=other.netns)
    steps = (udp_frames("forged-mac", attacker, victim, attacker.ip4, victim.ip4, src_mac=other.mac)
             + udp_frames("honest", attacker, victim, attacker.ip4, victim.ip4)
             + end_udp(attacker, victim, victim.ip4))

    def learned_on_attackers_port() -> bool:
        fdb = json.loads(node.exec(node.netns, "bridge", "-j", "fdb", "show", "br", "cni0").stdout)
        return any(e["mac"] == other.mac and e.get("ifname") == attacker.port for e in fdb)

    assert exchange(attacker, steps, victim, victim.ip4) == {"honest": N}
    assert not learned_on_attackers_port()

    unprotect(node)
    assert exchange(attacker, steps, victim, victim.ip4) == {"forged-mac": N, "honest": N}
    assert learned_on_attackers_port()  # the observable works


# ── 5. ARP ──────────────────────────────────────────────────────────────────────────────────


def claimed(node: CniNode, victim: Pod, who: str, version: int) -> tuple[str, str, list[str]]:
    """The address an attacker claims (the victim pod's, or the node's gateway address), the MAC
    it really has, and the namespaces whose neighbour entry for it we watch (the node has
    none for its own address)."""
    if who == "gateway":
        return ("10.88.0.1" if version == 4 else "fd88::1"), node.links()["cni0"]["address"], []
    return (victim.ip4 if version == 4 else victim.ip6), victim.mac, [node.netns]


def seed_neighbour(node: CniNode, netns: str, ip: str, mac: str) -> None:
    """A STALE entry: the kind a neighbour update may override."""
    node.ip("neigh", "replace", ip, "lladdr", mac, "dev", "cni0" if netns == node.netns else "eth0", "nud", "stale",
            netns=netns)


@pytest.mark.parametrize("who", ["victim", "gateway"])
def test_arp_claiming_an_address_not_the_pods_reaches_no_one_and_poisons_no_cache(node, who):
    """Gratuitous ARP (broadcast) and an unicast ARP reply, both claiming the victim pod's (or
    the gateway's) IPv4 address at the attacker's MAC. A third pod's sniffer counts what
    arrives; the third pod's neighbour entry for the address, and the node's, keep the true
    MAC (STALE entries, locktime 0: as easy to override as Linux allows). An ARP probe (sender
    0.0.0.0) arrives, and so does the attacker's gratuitous ARP for its own address: the end
    marker."""
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, third = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "third"))
    ip, true_mac, watched = claimed(node, victim, who, 4)
    watched = [third.netns, *watched]
    node.exec(third.netns, "sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")
    node.exec(node.netns, "sysctl", "-qw", "net.ipv4.neigh.cni0.locktime=0")

    garp = ether(BROADCAST, attacker.mac, ETH_ARP, arp(1, attacker.mac, ip, "00:00:00:00:00:00", ip))
    reply = ether(third.mac, attacker.mac, ETH_ARP, arp(2, attacker.mac, ip, third.mac, third.ip4))
    probe = ether(BROADCAST, attacker.mac, ETH_ARP, arp(1, attacker.mac, "0.0.0.0", "00:00:00:00:00:00", "10.88.0.77"))
    end = ether(BROADCAST, attacker.mac, ETH_ARP, arp(1, attacker.mac, attacker.ip4, "00:00:00:00:00:00", attacker.ip4))
    steps = [["eth", garp.hex()]] * N + [["eth", reply.hex()]] * N + [["eth", probe.hex()]] * N + [["eth", end.hex()]]
    claim_request, claim_reply = (f"arp:{op}:{attacker.mac}:{ip}" for op in (1, 2))
    probes, end_key = f"arp:1:{attacker.mac}:0.0.0.0", f"arp:1:{attacker.mac}:{attacker.ip4}"

    for netns in watched:
        seed_neighbour(node, netns, ip, true_mac)
    assert sniff(attacker, steps, third, end_key) == {probes: N}
    assert [lladdr(node, netns, ip) for netns in watched] == [true_mac] * len(watched)

    unprotect(node)
    for netns in watched:
        seed_neighbour(node, netns, ip, true_mac)
    assert sniff(attacker, steps, third, end_key) == {claim_request: N, claim_reply: N, probes: N}
    assert [lladdr(node, netns, ip) for netns in watched] == [attacker.mac] * len(watched)  # the observable works


# ── 6. IPv6 ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("label", "source"), [
    ("victim", None),  # the victim pod's IPv6 address
    ("another-node", "fd88:0:0:1::7"),
    ("gateway", "fd88::1"),
    ("unspecified", "::"),  # only for DAD, towards ff02::/16
    ("link-local", "fe80::bad"),  # only towards link-local and multicast destinations
])
def test_ipv6_from_an_address_not_the_pods_is_dropped(node, label, source):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim, target = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "target"))
    source = source or victim.ip6
    steps = (udp_frames(label, attacker, target, source, target.ip6)
             + udp_frames("honest", attacker, target, attacker.ip6, target.ip6)
             + end_udp(attacker, target, target.ip6))
    assert exchange(attacker, steps, target, target.ip6) == {"honest": N}

    unprotect(node)
    assert exchange(attacker, steps, target, target.ip6) == {label: N, "honest": N}


@pytest.mark.parametrize("who", ["victim", "gateway"])
def test_neighbour_advertisements_claiming_an_address_not_the_pods_are_dropped(node, who):
    """Unsolicited neighbour advertisements (override flag) from the attacker's own addresses,
    unicast to a third pod and to all-nodes, claiming the victim pod's (or the gateway's) IPv6
    address at the attacker's MAC: the third pod's sniffer sees none, its neighbour entry for
    the address (and the node's) keeps the true MAC. Its advertisement for its own address
    is the end marker."""
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim, third = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "third"))
    ip, true_mac, watched = claimed(node, victim, who, 6)
    watched = [third.netns, *watched]
    link_local = next(a["local"] for a in json.loads(node.ip("-j", "-6", "addr", "show", "dev", "eth0",
                                                             netns=attacker.netns))[0]["addr_info"]
                      if a["scope"] == "link")

    def na(src: str, dst: str, dst_mac: str, target: str) -> list[Any]:
        return ["eth", ether(dst_mac, attacker.mac, ETH_IP6, neighbour_advert(src, dst, target, attacker.mac)).hex()]

    steps = ([na(attacker.ip6, third.ip6, third.mac, ip)] * N
             + [na(link_local, "ff02::1", "33:33:00:00:00:01", ip)] * N
             + [na(attacker.ip6, third.ip6, third.mac, attacker.ip6)])
    claim, end = f"na:{attacker.mac}:{ip}", f"na:{attacker.mac}:{attacker.ip6}"

    for netns in watched:
        seed_neighbour(node, netns, ip, true_mac)
    assert sniff(attacker, steps, third, end) == {}
    assert [lladdr(node, netns, ip) for netns in watched] == [true_mac] * len(watched)

    unprotect(node)
    for netns in watched:
        seed_neighbour(node, netns, ip, true_mac)
    assert sniff(attacker, steps, third, end) == {claim: 2 * N}
    assert [lladdr(node, netns, ip) for netns in watched] == [attacker.mac] * len(watched)  # the observable works


# ── 7. with a NetworkPolicy ruleset loaded ─────────────────────────────────────────────────

DB_POLICY = ("{podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress], "
             "ingress: [{from: [{podSelector: {matchLabels: {app: admin}}}], ports: [{protocol: UDP, port: 5353}]}]}")


def load_policies(node: CniNode, pods: dict[str, Pod]) -> str:
    """The compiled ruleset of a cluster whose pods (namespace shop, label app=<name>, node
    node-a) have the addresses ADD gave, loaded in the node namespace; the script."""
    text = "".join(pod_yaml("shop", name, pod.ip4, f"{{app: {name}}}") for name, pod in pods.items())
    ruleset = render(compile_cluster(cluster(text + policy_yaml("shop", "db-in", DB_POLICY)))["node-a"])
    loaded = subprocess.run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], input=ruleset,
                            capture_output=True, text=True, check=False)
    assert loaded.returncode == 0, loaded.stderr
    return ruleset


def test_with_policies_loaded_a_forged_admin_address_does_not_pass_the_dbs_policy(node):
    """db admits UDP 5353 from admin only. admin → db: all; mallory → db from its own
    address: nothing (the policy); mallory → db from admin's address: nothing (the binding).
    Without the binding, the forged datagrams pass the policy: it trusts source addresses."""
    conf = node.conf(isDefaultGateway=True)
    pods = {name: attach(node, f"ctr-{name}", conf) for name in ("admin", "db", "mallory")}
    admin, db, mallory = pods["admin"], pods["db"], pods["mallory"]
    assert node.sysctl("net.bridge.bridge-nf-call-iptables") == "1"
    load_policies(node, pods)
    for pod in (admin, mallory):
        neighbour(node, pod, db, db.ip4)

    def run() -> Counter[str]:
        """mallory's datagrams (forged and its own), then admin's honest ones and its end
        marker: admin's marker cannot overtake mallory's frames, which were all sent first
        (every sender runs on the same CPU: admin's frames queue behind mallory's)."""
        listener = _receiver(db.netns, LISTENER, db.ip4, "5353")
        try:
            _send(mallory.netns, udp_frames("forged-admin", mallory, db, admin.ip4, db.ip4, port=5353)
                  + raw_packets("forged-admin-raw", admin.ip4, db.ip4, port=5353)
                  + socket_datagrams("mallory-own", mallory.ip4, db.ip4, port=5353))
            _send(admin.netns, socket_datagrams("admin", admin.ip4, db.ip4, port=5353)
                  + socket_datagrams("end", admin.ip4, db.ip4, port=5353, n=1))
        except BaseException:
            listener.kill()
            listener.communicate()
            raise
        return _counts(listener)

    assert run() == {"admin": N}
    unprotect(node)
    assert run() == {"admin": N, "forged-admin": N, "forged-admin-raw": N}


# ── other ethertypes ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("tpid", [0x8100, 0x88A8], ids=["802.1Q", "802.1ad"])
def test_a_forged_datagram_in_a_priority_tagged_frame_is_dropped(node, tpid):
    """VLAN 0 (a priority tag): the receiving kernel strips it and delivers the inner IPv4
    datagram as if untagged — unless the bridge drops every ethertype but IPv4, IPv6 and ARP."""
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))

    def tagged(label: str, src: str) -> list[list[Any]]:
        return [["eth", (_mac(victim.mac) + _mac(attacker.mac) + struct.pack("!HHH", tpid, 0, ETH_IP)
                         + ipv4_udp(src, victim.ip4, PORT, f"{label}:{i}".encode())).hex()] for i in range(N)]

    steps = (tagged("forged-tagged", other.ip4) + tagged("own-tagged", attacker.ip4)
             + udp_frames("honest", attacker, victim, attacker.ip4, victim.ip4) + end_udp(attacker, victim, victim.ip4))
    assert exchange(attacker, steps, victim, victim.ip4) == {"honest": N}

    unprotect(node)
    assert exchange(attacker, steps, victim, victim.ip4) == {"forged-tagged": N, "own-tagged": N, "honest": N}


# ── 8. the bindings' lifecycle: ADD, DEL, CHECK, GC, the table gone, the agent's table ───────

SETS = ("ports", "macs", "addr4", "addr6", "target6")


def keys(node: CniNode, pod: Pod) -> dict[str, list[Any]]:
    """Every key of the pod's host veth, by set ({} when the table is gone)."""
    listed = node.exec(node.netns, "nft", "-j", "list", "table", "bridge", TABLE, check=False)
    if listed.returncode != 0:
        return {}
    out: dict[str, list[Any]] = {name: [] for name in SETS}
    for entry in json.loads(listed.stdout)["nftables"]:
        if "set" in entry and entry["set"]["name"] in out:
            for elem in entry["set"].get("elem", []):
                key = elem["concat"] if isinstance(elem, dict) else [elem]
                if key[0] == pod.port:
                    out[entry["set"]["name"]].append(key)
    return out


def expected_keys(pod: Pod) -> dict[str, list[Any]]:
    target = "0x" + socket.inet_pton(socket.AF_INET6, pod.ip6).hex() if pod.ip6 else None
    return {"ports": [[pod.port]], "macs": [[pod.port, pod.mac]],
            "addr4": [[pod.port, pod.mac, pod.ip4]] if pod.ip4 else [],
            "addr6": [[pod.port, pod.mac, pod.ip6]] if pod.ip6 else [],
            "target6": [[pod.port, target]] if target else []}


def nft(node: CniNode, script: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"], input=script, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr


def remove_keys(node: CniNode, pod: Pod, sets: tuple[str, ...] = SETS) -> None:
    """Delete the pod's keys from these sets by hand (someone's `nft delete element`)."""
    held = keys(node, pod)
    nft(node, "".join(f"delete element bridge {TABLE} {name} {{ "
                      + ", ".join(" . ".join(f'"{part}"' if i == 0 else part for i, part in enumerate(key))
                                  for key in held[name]) + " }\n"
                      for name in sets if held[name]))


def forged_and_honest(attacker: Pod, victim: Pod, other: Pod) -> list[list[Any]]:
    """The attacker forges `other`'s address towards the victim, then sends honestly."""
    return (udp_frames("forged", attacker, victim, other.ip4, victim.ip4)
            + udp_frames("honest", attacker, victim, attacker.ip4, victim.ip4) + end_udp(attacker, victim, victim.ip4))


def check(node: CniNode, conf: dict[str, Any], pod: Pod) -> Any:
    return node.call("CHECK", dict(conf, prevResult=pod.result), pod.cid, f"/run/netns/{pod.netns}")


def gc(node: CniNode, conf: dict[str, Any], *valid: Pod) -> None:
    called = node.call("GC", dict(conf, **{"cni.dev/valid-attachments": [{"containerID": p.cid, "ifname": "eth0"}
                                                                         for p in valid]}))
    assert called.code == 0, called


def test_the_keys_exist_when_add_returns_and_go_with_del(node):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    first = attach(node, "ctr-first", conf)
    assert keys(node, first) == expected_keys(first)
    second = attach(node, "ctr-second", conf)
    assert keys(node, second) == expected_keys(second) and keys(node, first) == expected_keys(first)

    assert node.call("DEL", dict(conf, prevResult=first.result), first.cid, f"/run/netns/{first.netns}").code == 0
    assert keys(node, first) == {name: [] for name in SETS}
    assert keys(node, second) == expected_keys(second)
    assert node.call("DEL", conf, second.cid, f"/run/netns/{second.netns}").code == 0  # no prevResult
    assert keys(node, second) == {name: [] for name in SETS}


def test_parallel_adds_racing_to_make_the_table_all_get_bound_and_the_chain_once(node):
    """Ten ADDs on a node without the table: each may find it missing and make it (`nft -f`,
    which flushes and refills the chain): every pod ends up bound and the chain holds our
    rules exactly once."""
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    paths = [node.pod() for _ in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        calls = list(pool.map(lambda i: node.call("ADD", conf, f"ctr-{i}", paths[i]), range(10)))
    assert [c.code for c in calls] == [0] * 10, [c for c in calls if c.code]
    for i, call in enumerate(calls):
        result = call.result
        ips = [ip["address"].split("/")[0] for ip in result["ips"]]
        pod = Pod(f"ctr-{i}", paths[i], result["interfaces"][2]["mac"], result["interfaces"][1]["name"], ips[0], ips[1],
                  result)
        assert keys(node, pod) == expected_keys(pod), pod.cid
    chain = node.exec(node.netns, "nft", "list", "chain", "bridge", TABLE, "prerouting").stdout
    assert chain.count(" comment ") == len(RULES), chain


REMOVALS = {  # what someone removes → the script that does it (and whether it opens the port)
    "its addr4 key": (lambda node, pod: remove_keys(node, pod, ("addr4",)), False),
    "its ports key": (lambda node, pod: remove_keys(node, pod, ("ports",)), True),
    "all its keys": (remove_keys, True),
    "every set's elements": (lambda node, pod: nft(node, "".join(f"flush set bridge {TABLE} {name}\n"
                                                                 for name in SETS)), True),
    "the chain's rules": (lambda node, pod: nft(node, f"flush chain bridge {TABLE} prerouting\n"), True),
    "the table": (lambda node, pod: unprotect(node), True),
}


@pytest.mark.parametrize("removed", list(REMOVALS))
def test_check_reports_a_removed_binding_as_code_100_and_restores_it(node, removed):
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))
    assert check(node, conf, attacker).code == 0
    remove, opens = REMOVALS[removed]
    remove(node, attacker)
    if opens:  # the hole is real: the forged datagrams get through
        assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == \
            {"forged": N, "honest": N}

    checked = check(node, conf, attacker)
    assert checked.code == 1 and checked.result["code"] == 100, checked
    assert "anti-spoofing" in checked.result["msg"], checked.result
    assert keys(node, attacker) == expected_keys(attacker)
    assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == {"honest": N}
    assert check(node, conf, attacker).code == 0


@pytest.mark.parametrize("removed", ["all its keys", "the chain's rules", "every set's elements"])
def test_gc_restores_valid_attachments_bindings_and_removes_the_others(node, removed):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim, other, gone = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other", "gone"))
    REMOVALS[removed][0](node, attacker)
    assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == \
        {"forged": N, "honest": N}

    gc(node, conf, attacker, victim, other)
    for pod in (attacker, victim, other):
        assert keys(node, pod) == expected_keys(pod), pod.cid
    assert keys(node, gone) == {name: [] for name in SETS}
    assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == {"honest": N}


def test_gc_removes_the_bindings_of_attachments_it_is_not_given(node):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    kept, dropped = attach(node, "ctr-kept", conf), attach(node, "ctr-dropped", conf)
    gc(node, conf, kept)
    assert keys(node, kept) == expected_keys(kept)
    assert keys(node, dropped) == {name: [] for name in SETS}


def test_a_deleted_table_is_made_again_by_the_next_add(node):
    conf = node.conf(isDefaultGateway=True)
    attacker, victim = attach(node, "ctr-attacker", conf), attach(node, "ctr-victim", conf)
    unprotect(node)
    newcomer = attach(node, "ctr-newcomer", conf)
    assert keys(node, newcomer) == expected_keys(newcomer)
    assert exchange(newcomer, forged_and_honest(newcomer, victim, attacker), victim, victim.ip4) == {"honest": N}
    assert keys(node, attacker) == {name: [] for name in SETS}  # until its CHECK (or a GC) restores it
    assert check(node, conf, attacker).result["code"] == 100
    assert exchange(attacker, forged_and_honest(attacker, victim, newcomer), victim, victim.ip4) == {"honest": N}


def test_the_bindings_survive_the_agent_replacing_and_deleting_its_table(node):
    """The agent owns `table inet netpol`: it replaces it whole (`nft -f` of a script that
    deletes and recreates it) and deletes it when it stops. Our table is not touched."""
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))

    def ours() -> str:
        return node.exec(node.netns, "nft", "list", "table", "bridge", TABLE).stdout

    before = ours()
    text = "".join(pod_yaml("shop", p.cid, f"{p.ip4},{p.ip6}", "{app: x}") for p in (attacker, victim, other))
    ruleset = render(compile_cluster(cluster(text))["node-a"])
    nft(node, ruleset)
    nft(node, ruleset)  # replaced
    assert ours() == before
    assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == {"honest": N}
    node.exec(node.netns, "nft", "delete", "table", "inet", "netpol")
    assert ours() == before
    assert exchange(attacker, forged_and_honest(attacker, victim, other), victim, victim.ip4) == {"honest": N}


# ── holes found while writing these tests, fixed since ──────────────────────────────────────


@pytest.mark.parametrize("change", ["address", "mac"])
def test_gc_binds_what_add_gave_not_what_the_pod_has_set_since(node, change):
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))
    if change == "address":  # the attacker takes the other pod's address, as in case 3
        node.ip("addr", "add", f"{other.ip4}/32", "dev", "eth0", netns=attacker.netns)
        steps = forged_and_honest(attacker, victim, other)
    else:  # the attacker takes the other pod's MAC
        node.ip("link", "set", "eth0", "address", other.mac, netns=attacker.netns)
        steps = (udp_frames("forged", attacker, victim, attacker.ip4, victim.ip4, src_mac=other.mac)
                 + udp_frames("honest", attacker, victim, attacker.ip4, victim.ip4)
                 + end_udp(attacker, victim, victim.ip4))
    assert exchange(attacker, steps, victim, victim.ip4) == {"honest": N}
    gc(node, conf, attacker, victim, other)  # the runtime's periodic GC: every pod is valid
    assert exchange(attacker, steps, victim, victim.ip4) == {"honest": N}


def test_gc_keeps_judging_the_port_of_a_pod_that_renamed_its_interface(node):
    conf = node.conf(isDefaultGateway=True)
    attacker, victim, other = (attach(node, f"ctr-{n}", conf) for n in ("attacker", "victim", "other"))
    for change in (("down",), ("name", "eth1"), ("up",)):
        node.ip("link", "set", "eth0" if change[0] != "up" else "eth1", *change, netns=attacker.netns)
    steps = forged_and_honest(attacker, victim, other)
    assert exchange(attacker, steps, victim, victim.ip4, ifname="eth1") == {"honest": N}
    gc(node, conf, attacker, victim, other)
    assert exchange(attacker, steps, victim, victim.ip4, ifname="eth1") == {"honest": N}
    assert keys(node, attacker)["ports"] == [[attacker.port]]


def link_local(node: CniNode, pod: Pod) -> str:
    """The pod's fe80:: address, once its DAD is over (it cannot receive before)."""
    found: list[str] = []

    def ready() -> bool:
        infos = json.loads(node.ip("-j", "-6", "addr", "show", "dev", "eth0", netns=pod.netns))[0]["addr_info"]
        found[:] = [a["local"] for a in infos if a["scope"] == "link" and not a.get("tentative")]
        return bool(found)

    wait_until(ready, f"a link-local address on {pod.cid}'s eth0")
    return found[0]


@pytest.mark.parametrize("source", ["link-local", "global"])
def test_with_policies_loaded_link_local_addresses_carry_nothing_the_policy_denies(node, source):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    pods = {name: attach(node, f"ctr-{name}", conf) for name in ("admin", "db", "mallory")}
    admin, db, mallory = pods["admin"], pods["db"], pods["mallory"]
    text = "".join(pod_yaml("shop", name, f"{p.ip4},{p.ip6}", f"{{app: {name}}}") for name, p in pods.items())
    nft(node, render(compile_cluster(cluster(text + policy_yaml("shop", "db-in", DB_POLICY)))["node-a"]))
    db_link = link_local(node, db)
    mallory_src = link_local(node, mallory) if source == "link-local" else mallory.ip6
    listener = _receiver(db.netns, LISTENER, "::", "5353")
    try:
        _send(mallory.netns, [["eth", ether(db.mac, mallory.mac, ETH_IP6,
                                            ipv6_udp(mallory_src, db_link, 5353, f"link-local:{i}".encode())).hex()]
                              for i in range(N)]
              + udp_frames("mallory-own", mallory, db, mallory.ip6, db.ip6, port=5353))
        _send(admin.netns, udp_frames("admin", admin, db, admin.ip6, db.ip6, port=5353)
              + udp_frames("end", admin, db, admin.ip6, db.ip6, port=5353, n=1))
    except BaseException:
        listener.kill()
        listener.communicate()
        raise
    assert _counts(listener) == {"admin": N}


def router_advert(src: str, lladdr: str, hop_limit: int) -> bytes:
    """An ICMPv6 router advertisement to all-nodes: default router for 1800 s, a current hop
    limit, an MTU of 1280 and an autonomous on-link prefix fd66::/64."""
    body = struct.pack("!BBHBBHII", 134, 0, 0, hop_limit, 0, 1800, 0, 0) + struct.pack("!BB6s", 1, 1, _mac(lladdr))
    body += struct.pack("!BBHI", 5, 1, 0, 1280)
    body += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, socket.inet_pton(socket.AF_INET6, "fd66::"))
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, "ff02::1")
    checksum = _checksum(s + d + struct.pack("!I3xB", len(body), 58) + body)
    return _ipv6(src, "ff02::1", 58, body[:2] + struct.pack("!H", checksum) + body[4:], hop_limit=255)


def test_a_pods_router_advertisement_changes_no_other_pod(node):
    conf = node.conf(subnet=DUAL, isDefaultGateway=True)
    attacker, victim = attach(node, "ctr-attacker", conf), attach(node, "ctr-victim", conf)
    source = json.loads(node.ip("-j", "-6", "addr", "show", "dev", "eth0", netns=attacker.netns))[0]["addr_info"]
    attacker_link = next(a["local"] for a in source if a["scope"] == "link")
    advert = ether("33:33:00:00:00:01", attacker.mac, ETH_IP6, router_advert(attacker_link, attacker.mac, 1))
    steps = [["eth", advert.hex()], *end_udp(attacker, victim, victim.ip6)]
    assert exchange(attacker, steps, victim, victim.ip6) == {}
    assert node.sysctl("net.ipv6.conf.eth0.hop_limit", netns=victim.netns) == "64"
    assert "proto ra" not in node.ip("-6", "route", netns=victim.netns)

    unprotect(node)  # the control
    assert exchange(attacker, steps, victim, victim.ip6) == {}
    assert node.sysctl("net.ipv6.conf.eth0.hop_limit", netns=victim.netns) == "1"
