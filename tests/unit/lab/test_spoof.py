"""The demo's spoofing scenario without a kernel: the SYNs `netpol.lab.spoof` builds and parses,
which packets its sniffer counts as which kind, and how the demo reports and judges the counts.
With real packets: tests/kernel/test_demo.py."""

from __future__ import annotations

import ipaddress
import socket
import struct

from netpol.lab import spoof
from netpol.lab.demo import SPOOF_KINDS, SPOOFING, SpoofingResult, scenarios
from netpol.lab.spoof import MARKER_PORT, Expected, Syn, checksum, kind_of, parse_expected, parse_syn, tcp_syn
from netpol.load.manifests import load_state


def test_a_built_syn_has_valid_checksums_and_parses_back():
    packet = tcp_syn("10.244.0.20", "10.244.0.30", MARKER_PORT, 5432, spoof.MARKER_SEQ + 1)
    assert len(packet) == 40 and packet[0] == 0x45 and packet[9] == socket.IPPROTO_TCP
    assert checksum(packet[:20]) == 0  # a header with its checksum in sums to zero
    pseudo = packet[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    assert checksum(pseudo + packet[20:]) == 0
    assert parse_syn(packet) == Syn("10.244.0.20", "10.244.0.30", MARKER_PORT, 5432, spoof.MARKER_SEQ + 1)


def test_checksum_pads_odd_lengths_and_folds_carries():
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\x01") == checksum(b"\x01\x00") == 0xFEFF
    assert checksum(b"\xff\xff\x00\x01") == 0xFFFE  # 0xFFFF + 1 folds to 0x0001


def test_only_a_bare_syn_of_the_first_fragment_parses():
    packet = bytearray(tcp_syn("10.0.0.1", "10.0.0.2", MARKER_PORT, 5432, 7))
    rst = bytes(packet[:33]) + bytes([0x04]) + bytes(packet[34:])
    syn_ack = bytes(packet[:33]) + bytes([0x12]) + bytes(packet[34:])
    later_fragment = bytes(packet[:6]) + b"\x00\x10" + bytes(packet[8:])
    udp = bytes(packet[:9]) + bytes([socket.IPPROTO_UDP]) + bytes(packet[10:])
    for other in (rst, syn_ack, later_fragment, udp, bytes(packet[:30]), b"\x60" + bytes(packet[1:])):
        assert parse_syn(other) is None


def test_the_sniffer_tells_kinds_apart_by_source_and_sequence_number():
    expected = [Expected("forged", "10.244.0.20", 1), Expected("own", "10.244.0.10", 2),
                Expected("honest", "10.244.0.20", 3)]

    def kind(src: str, seq: int, sport: int = MARKER_PORT, dst: str = "10.244.0.30", dport: int = 5432):
        return kind_of(Syn(src, dst, sport, dport, seq), "10.244.0.30", 5432, expected)

    assert (kind("10.244.0.20", 1), kind("10.244.0.10", 2), kind("10.244.0.20", 3)) == ("forged", "own", "honest")
    assert kind("10.244.0.10", 1) is None  # a forged sequence number from another source
    assert kind("10.244.0.20", 1, sport=40000) is None  # not marked
    assert kind("10.244.0.20", 1, dst="10.244.1.30") is None and kind("10.244.0.20", 1, dport=5433) is None
    assert kind_of(None, "10.244.0.30", 5432, expected) is None
    assert parse_expected("honest,10.244.0.20,3") == expected[2]


def result(forged: int, own: int, honest: int, sent: int = 20) -> SpoofingResult:
    return SpoofingResult(SPOOFING, ipaddress.ip_address("10.244.0.20"), dict.fromkeys(SPOOF_KINDS, sent),
                          {"forged": forged, "own": own, "honest": honest})


def test_the_report_reads_as_two_lines_and_holds_only_when_nothing_got_through():
    held = result(0, 0, 20)
    assert held.held and held.lines() == [
        "spoofing: frontend/web-1 forged backend/api-1's address (10.244.0.20) → db/postgres-0:5432: "
        "20 sent, 0 arrived",
        "honest backend/api-1 → db/postgres-0:5432: 20 sent, 20 arrived; frontend/web-1 from its own "
        "address: 20 sent, 0 arrived"]
    assert result(1, 0, 20).problems == ["1 forged SYN(s) arrived"]
    assert result(0, 3, 20).problems == ["3 SYN(s) from frontend/web-1's own address arrived"]
    assert result(0, 0, 19).problems == ["19 of 20 honest SYNs arrived within 30 s"]
    assert not result(0, 0, 0, sent=0).held  # nothing sent proves nothing
    assert result(2, 0, 20).lines()[-1] == "SPOOFING FAILED: 2 forged SYN(s) arrived"


def test_the_spoofing_scenario_follows_the_postgres_policy_and_fits_the_example(example_path):
    titles = [s.title for s in scenarios(load_state([example_path]))]
    spoofing = next(i for i, t in enumerate(titles) if t.startswith("spoofing:"))
    assert titles[spoofing - 1].startswith("the rest of the example's policies")
