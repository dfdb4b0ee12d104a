"""Kernel tests: real network namespaces, nftables, iptables and packets. This conftest marks
every test below it `kernel` and skips it unless we are root with `ip` and `nft` on PATH (make
test installs them); tests that need more (ipset, containernetworking-plugins) say so
themselves. Helpers for namespaces the tests create and always delete live here too."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from netpol.compile.incremental import KubeObject
from netpol.compile.resolver import EventType
from tests.conftest import mark_kernel_folder
from tests.incremental_world import World

HERE = Path(__file__).resolve().parent
MISSING = ("not root" if os.geteuid() != 0 else
           next((f"no {tool} on PATH" for tool in ("ip", "nft") if shutil.which(tool) is None), ""))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_kernel_folder(items, HERE, MISSING, "root, iproute2 and nftables")


def fresh_netns(prefix: str = "netpol-test") -> Iterator[str]:
    """A network namespace created for one test (or module) and always deleted."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


LAB_LOCK = os.path.join(tempfile.gettempdir(), "netpol-tests-lab.lock")
# Every namespace `netpol verify` (netpol.lab.cluster) and test_nftables_packets create; other tests'
# `netpol-test-*` and benchmarks' `np-dp-*` namespaces come and go concurrently and are not ours.
LAB_NAME = re.compile(r"^np-[0-9a-f]{6}-(fab|node|n\d+|p\d+)$")


def lab_namespaces() -> list[str]:
    """`ip netns list` (names only), restricted to lab namespaces."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(name for line in listed.splitlines() if LAB_NAME.match(name := line.split()[0]))


@pytest.fixture
def netns_guard() -> Iterator[None]:
    """Lab tests one at a time across xdist workers (a file lock), and `ip netns list` after the
    test exactly as before it: nothing a lab created may outlive the test, even when it fails."""
    import fcntl

    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = lab_namespaces()
        yield
        assert lab_namespaces() == before, "network namespaces leaked"


# ── holding a subprocess inside a phase: an `ip` shim first on its PATH ────────────────────

# The first `ip` whose arguments contain $NETPOL_TEST_HOLD_ON writes its PID to
# $NETPOL_TEST_HOLD/pid and becomes a `sleep` (same PID) that only the program's own cleanup
# ends; every other `ip` is the real one. Nothing is created: the shim lives in the test's
# tmp_path and holds a process, so a test can signal a program while it is provably inside a
# phase instead of guessing when that phase runs.
HOLD_SHIM = """#!/bin/sh
case "$*" in
  *"$NETPOL_TEST_HOLD_ON"*)
    if mkdir "$NETPOL_TEST_HOLD" 2>/dev/null; then
      echo $$ > "$NETPOL_TEST_HOLD/pid.tmp" && mv "$NETPOL_TEST_HOLD/pid.tmp" "$NETPOL_TEST_HOLD/pid"
      exec sleep 600
    fi;;
esac
exec {ip} "$@"
"""
HELD_ARGV = b"sleep\x00600\x00"
HOLD_HANG = 120.0  # seconds to reach the held phase: a hang bound only


def ip_holding(tmp_path: Path, arguments: str) -> tuple[dict[str, str], Path]:
    """The environment for a subprocess whose first `ip … ARGUMENTS …` is held, and the file
    the shim writes the held PID to once it holds it."""
    shim = tmp_path / "hold-bin" / "ip"
    shim.parent.mkdir()
    shim.write_text(HOLD_SHIM.format(ip=shutil.which("ip")))
    shim.chmod(0o755)
    held = tmp_path / "held"
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}", NETPOL_TEST_HOLD=str(held),
               NETPOL_TEST_HOLD_ON=arguments)
    return env, held / "pid"


def wait_held(proc: subprocess.Popen[str], pid_file: Path) -> int | None:
    """The held PID once the shim reports it (the program is now inside the phase); None if
    the program ended first, or never got there within the hang bound."""
    deadline = time.monotonic() + HOLD_HANG
    while not pid_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return int(pid_file.read_text())


def still_held(pid: int | None) -> bool:
    """Whether the held `sleep` still runs (a killed one is gone, or a zombie without argv)."""
    try:
        return pid is not None and Path(f"/proc/{pid}/cmdline").read_bytes() == HELD_ARGV
    except OSError:
        return False


def kill_if_held(pid: int | None) -> None:
    """The held `sleep`, should the program have left it running: killed by PID, so that a
    failing test leaves no process behind either."""
    if pid is not None and still_held(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# ── our table in a namespace, compared order-insensitively ──────────────────────────────────


def nft_table(netns: str) -> object:
    """The table as JSON, in an order of its own: hash sets list elements, and tables chains,
    in the order they were added."""
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "netpol"],
                            capture_output=True, text=True, check=True).stdout
    items = json.loads(listed)["nftables"]
    for item in items:
        for kind in ("set", "map"):
            if kind in item:
                item[kind].pop("handle", None)
                if "elem" in item[kind]:
                    item[kind]["elem"] = sorted(item[kind]["elem"], key=json.dumps)
        for kind in ("chain", "rule", "table"):
            if kind in item:
                item[kind].pop("handle", None)

    def place(item: dict) -> tuple[str, str]:  # chains list in creation order; rules keep theirs
        kind = next(iter(item))
        return kind, str(item[kind].get("chain", item[kind].get("name", "")))
    return sorted(items, key=place)


def nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nft ARGS` inside the namespace, never checked: tests look at the return code."""
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=stdin, text=True,
                          capture_output=True, check=False)


def nft_load(netns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=text, text=True, check=True)


def replay_in_kernel(world: World, events: Iterable[tuple[EventType, KubeObject]], left: str, right: str,
                     node: str = "node-a") -> None:
    """Send each event to `world`; after each that changes `node`'s program, apply the update in
    `left` and load the whole new table in `right`: both kernels must then hold the same table."""
    from netpol.backends.nftables import render, render_update

    current = world.compiler.program(node)
    nft_load(left, render(current))
    for event, obj in events:
        if node not in world.send(event, obj).programs:
            continue
        new = world.compiler.program(node)
        nft_load(left, render_update(current, new) or "")
        nft_load(right, render(new))
        assert nft_table(left) == nft_table(right), render_update(current, new)
        current = new
