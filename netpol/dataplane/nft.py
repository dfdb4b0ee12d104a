"""Loading a compiled ruleset into the kernel through libnftables (the `nftables` Python binding,
PyPI `pip-nftables`, over Debian's libnftables1).

Every apply is: a check pass (libnftables dry run: parsed and evaluated, nothing committed), then
the same input as one transaction. The script itself starts with `table inet netpol {}` and
`delete table inet netpol`, so the kernel swaps our whole table atomically or not at all: a
failure leaves the last good ruleset in place, and `ApplyError` carries nft's own messages with
the offending line of our input. Other tables in the namespace are never touched.

`Applier(netns="NAME")` works in a named network namespace (`ip netns add NAME`) from a worker
thread that entered it with setns(2), so tests and `netpol verify` never load anything into the
namespace the process runs in. Without `netns`, it loads into the current namespace (the agent's
case: it runs inside the node's namespace).

Errors: `netpol.errors.ApplyError` when nft rejects the input or libnftables is missing.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from typing import Any, TypeVar

from netpol.dataplane.netns import enter_netns
from netpol.dataplane.nft_monitor import kernel_thread_id
from netpol.errors import ApplyError, NamespaceError, NftMessage

try:
    import nftables  # PyPI pip-nftables: the binding Debian ships as python3-nftables
except ImportError:  # pragma: no cover - reported by Applier as an ApplyError
    nftables = None

LIBRARY = "libnftables.so.1"
NFT_LOCATION = re.compile(r"^(?P<file>[^:]*):(?P<line>\d+):(?P<first>\d+)-(?P<last>\d+): Error: (?P<msg>.*)$")
T = TypeVar("T")


@dataclass(frozen=True)
class ApplyOutcome:
    changed: bool  # False: identical to what this applier loaded last, nothing sent to the kernel
    seconds: float


def parse_messages(stderr: str, source: list[str]) -> list[NftMessage]:
    """nft's error text → messages, with the offending line taken from our own input."""
    messages = []
    for raw in stderr.splitlines():
        found = NFT_LOCATION.match(raw)
        if found:
            line = int(found["line"])
            text = source[line - 1] if 0 < line <= len(source) else ""
            messages.append(NftMessage(found["msg"], line if source else 0, text))
        elif raw.startswith("Error:"):
            messages.append(NftMessage(raw.removeprefix("Error:").strip()))
    return messages


class _Libnftables:
    """One libnftables context; buffer output; text input read as a file so errors name lines."""

    def __init__(self) -> None:
        if nftables is None:
            raise ApplyError("load libnftables", [NftMessage("the nftables binding is missing: pip install "
                                                             "pip-nftables (and apt install nftables)")])
        try:
            self.binding = nftables.Nftables(sofile=LIBRARY)
            self.lib = ctypes.CDLL(LIBRARY)
        except OSError as exc:
            raise ApplyError("load libnftables", [NftMessage(f"{exc} (apt install nftables)")]) from None
        self.ctx = self.binding._Nftables__ctx  # the binding keeps its context private
        self.lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        self.lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib.nft_run_cmd_from_filename.restype = ctypes.c_int
        self.lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p

    def run(self, ruleset: str | dict[str, Any], dry_run: bool) -> tuple[int, str]:
        self.lib.nft_ctx_set_dry_run(self.ctx, dry_run)
        try:
            if isinstance(ruleset, dict):
                rc, _, error = self.binding.json_cmd(ruleset)
                return rc, error
            fd = os.memfd_create("netpol.nft")
            try:
                os.write(fd, ruleset.encode())
                rc = self.lib.nft_run_cmd_from_filename(self.ctx, f"/proc/self/fd/{fd}".encode())
            finally:
                os.close(fd)
            return rc, (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode("utf-8", "replace")
        finally:
            self.lib.nft_ctx_set_dry_run(self.ctx, False)

    def command(self, text: str) -> tuple[int, str, str]:
        rc, out, err = self.binding.cmd(text)
        return int(rc), str(out), str(err)


def _runner(ruleset: str | dict[str, Any], dry_run: bool) -> Callable[[_Libnftables], tuple[int, str]]:
    return lambda nft: nft.run(ruleset, dry_run)


class Applier:
    """Loads rulesets into one network namespace and remembers the last good one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.last_good: str | dict[str, Any] | None = None
        self._entry_error: NamespaceError | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, initializer=self._enter,
                                          thread_name_prefix=f"nft-{netns or 'self'}")

    def _enter(self) -> None:
        """The worker's first step: into the namespace (remembering why not, for `_submit`)."""
        if self.netns:
            try:
                enter_netns(self.netns)
            except NamespaceError as exc:
                self._entry_error = exc
                raise

    def _submit(self, fn: Callable[[], T]) -> T:
        """Run on the worker; NamespaceError if it could not enter the namespace."""
        try:
            return self._worker.submit(fn).result()
        except BrokenThreadPool:
            raise self._entry_error or NamespaceError(f"network namespace {self.netns}: the worker "
                                                      "thread did not start") from None

    def _call(self, fn: Callable[[_Libnftables], T]) -> T:
        def run() -> T:
            # A fresh context per call, created inside the namespace's thread. A context reused
            # after a commit kept a stale cache in libnftables 1.0.6: the next check of an update
            # that deletes and re-adds a chain failed, and its error message pointed into the
            # freed input of an earlier call (garbage, or an assertion in erec_print that kills
            # the process). A context costs well under a millisecond.
            return fn(_Libnftables())
        return self._submit(run)

    def check_ready(self) -> None:
        """Raise now what every apply would raise: ApplyError without libnftables,
        NamespaceError when the namespace cannot be entered (the agent refuses to start)."""
        self._call(lambda nft: None)

    def committer_id(self) -> int:
        """The kernel's id of the thread that commits for this applier: what nftables'
        notifications name it by (`netpol.dataplane.nft_monitor`). OSError if netlink refuses."""
        return self._submit(kernel_thread_id)

    def apply(self, ruleset: str | dict[str, Any], force: bool = False) -> ApplyOutcome:
        """Check, then load in one transaction; raises ApplyError and keeps the last good one."""
        started = time.perf_counter()
        if ruleset == self.last_good and not force:
            return ApplyOutcome(False, time.perf_counter() - started)
        source = ruleset.splitlines() if isinstance(ruleset, str) else []
        for stage, dry_run in (("check", True), ("commit", False)):
            rc, error = self._call(_runner(ruleset, dry_run))
            if rc != 0:
                raise ApplyError(stage, parse_messages(error, source) or [NftMessage(error.strip())])
        self.last_good = ruleset
        return ApplyOutcome(True, time.perf_counter() - started)

    def list_table(self, family: str = "inet", name: str = "netpol") -> str:
        """Our table as the kernel holds it ('' if absent)."""
        rc, out, _ = self._call(lambda nft: nft.command(f"list table {family} {name}"))
        return out if rc == 0 else ""

    def delete_tables(self, tables: Sequence[tuple[str, str]]) -> list[str]:
        """Delete those of `tables` ((family, name) pairs) that exist, in one transaction, and
        nothing else; the deleted ones (`inet netpol`). ApplyError if the kernel refuses."""
        rc, out, err = self._call(lambda nft: nft.command("list tables"))
        if rc != 0:
            raise ApplyError("list tables", [NftMessage(err.strip())])
        present = {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("table ")}
        doomed = [f"{family} {name}" for family, name in tables if (family, name) in present]
        if doomed:
            script = "".join(f"delete table {table}\n" for table in doomed)
            rc, error = self._call(_runner(script, False))
            if rc != 0:
                raise ApplyError("delete", parse_messages(error, script.splitlines()) or [NftMessage(error)])
        return doomed

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def __enter__(self) -> Applier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
