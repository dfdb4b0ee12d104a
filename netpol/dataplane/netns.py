"""Entering a named network namespace from one thread, so that a process can load rulesets into
(or listen inside) a namespace it does not run in.

Network namespaces are per thread: `enter_netns(name)` moves the calling thread only (setns(2)
on `/run/netns/NAME`, where `ip netns add` pins it). Callers give it a thread of its own — the
Applier's worker, the in-process API server's listener — and never call it on a thread that
does anything else afterwards.
"""

from __future__ import annotations

import ctypes
import os

from netpol.errors import NamespaceError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"  # iproute2's NETNS_RUN_DIR


def enter_netns(name: str) -> None:
    """setns(2) for the calling thread only; NamespaceError naming the namespace when it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(f"{NETNS_RUN_DIR}/{name}", os.O_RDONLY)
    except OSError as exc:
        raise NamespaceError(f"network namespace {name}: {exc.strerror or exc}") from None
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NamespaceError(f"network namespace {name}: setns: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
