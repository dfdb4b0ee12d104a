"""TableWatch reads nftables notifications as the kernel sends them (built here byte for byte,
no kernel needed; tests/kernel/test_agent_process.py has the real ones): a transaction that
touches `inet netpol` committed by another thread is drift, named by what it did; our own
transactions are not, and one of ours that replaced the table ends the drift seen before it;
other tables and families are none of our business."""

from __future__ import annotations

import struct
from collections import Counter

from netpol.dataplane.nft_monitor import NFPROTO_INET, SUBSYS_NFTABLES, TableChanges, TableWatch

OURS, THEIRS = 4242, 777
INET, IP = NFPROTO_INET, 2


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _message(message: int, family: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), SUBSYS_NFTABLES << 8 | message, 0, 0, 0) + body


def change(message: int, table: str = "netpol", name: str = "", family: int = INET, name_attr: int = 2) -> bytes:
    attrs = [_attr(1, table.encode() + b"\0")]
    if name:
        attrs.append(_attr(name_attr, name.encode() + b"\0"))
    return _message(message, family, *attrs)


def committed(pid: int, process: str = "nft") -> bytes:
    return _message(15, 0, _attr(1, struct.pack(">I", 9)), _attr(2, struct.pack(">I", pid)),
                    _attr(3, process.encode() + b"\0"))


def fed(*batches: bytes) -> TableWatch:
    watch = TableWatch(None, frozenset({OURS}))
    transaction: Counter[str] = Counter()
    for data in batches:  # each batch is what one recv() returns: several messages
        watch._take_messages(data, transaction)
    return watch


def test_a_rule_inserted_by_someone_else_is_drift_naming_the_chain_and_who():
    watch = fed(change(6, name="forward") + committed(THEIRS))
    assert watch.take() == TableChanges(("rule added to chain forward (×1)",), ("nft (thread 777)",))
    assert not watch.take()  # taken once


def test_our_own_transactions_are_not_drift_and_a_table_we_replaced_ends_the_drift_before_it():
    watch = fed(change(12, name="node-pods-v4") + committed(THEIRS),
                change(2) + change(0) + change(3, name="forward", name_attr=3) + committed(OURS, "python"))
    assert not watch.take()  # we replaced the whole table after their element: nothing left
    watch = fed(change(12, name="node-pods-v4") + committed(THEIRS), change(12, name="x") + committed(OURS))
    assert watch.take().changes == ("element added to set node-pods-v4 (×1)",)


def test_other_tables_and_families_are_not_ours():
    watch = fed(change(6, table="other", name="forward") + change(6, family=IP, name="forward") + committed(THEIRS))
    assert not watch.take()


def test_a_deleted_table_is_said_first_and_long_lists_are_cut():
    deletions = b"".join(change(8, name=f"chain-{i}") for i in range(15)) + change(11, name="s") + change(2)
    found = fed(deletions + committed(THEIRS)).take()
    assert found.changes[0] == "table deleted netpol (×1)"
    assert len(found.changes) == 11 and found.changes[-1] == "… and 7 more"
