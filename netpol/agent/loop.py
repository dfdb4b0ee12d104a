"""The node agent's sync loop: source events in, one nftables transaction per sync out.

    events ──► Intake (Mirror: a relist becomes the changes it implies; decode: invalid objects
               logged and counted, an invalid NetworkPolicy fails closed; the node's
               IncrementalCompiler, started once every kind has been listed)
           ──► Coalescer (min / max interval; backoff after a failure)
           ──► render_update or render ──► the loader (netpol.dataplane.nft.Applier)

Nothing is written before every kind has been listed once. The first sync, and any sync after a
failed apply, replaces the whole table in one transaction ("full"); a sync in which only set
membership changed sends element updates ("elements"); one in which pods' chains changed sends
those chains, their map elements and the set changes ("chains") — all `render_update` against
the program the agent last applied, which it keeps in memory instead of reading the kernel
back, and all one transaction. (`replace_on_structure` makes structural changes full
replaces instead: at 1,000 pods that is ~140 ms per sync against ~15 ms.) A failed
apply keeps the last good ruleset in the kernel (the transaction is atomic), marks the agent
not ready, and retries with backoff. A restarted agent finds its previous table in the kernel
and leaves it alone until its first full sync replaces it atomically: nothing is opened in
between. Between syncs the loop keeps the host-gw routes current and runs the paced garbage
collector (netpol.gc). Each sync's "synced" log record says how far every kind's event stream
had been taken (`resource_versions`), so a writer can tell which sync enforces its change.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from netpol.agent.coalesce import IDLE_WAIT, Coalescer, SyncTiming
from netpol.agent.intake import Intake
from netpol.agent.metrics import AgentMetrics
from netpol.backends.nftables import render, render_update
from netpol.compile.incremental import IncrementalCompiler
from netpol.compile.ir import NodeProgram
from netpol.dataplane.routes import RouteKeeper, desired_routes
from netpol.gc import PacedCollector
from netpol.sources.events import SourceEvent

log = logging.getLogger("netpol.agent")


class RulesetLoader(Protocol):
    """What the agent applies rulesets with: netpol.dataplane.nft.Applier."""

    def apply(self, ruleset: str, force: bool = False) -> Any: ...


@dataclass
class Agent:
    """The sync loop of one node. `submit` is the sources' sink; `run` the loop (one thread)."""

    node: str
    loader: RulesetLoader
    timing: SyncTiming = field(default_factory=SyncTiming)
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    clock: Callable[[], float] = time.monotonic
    on_sync: Callable[[NodeProgram], None] | None = None  # tests and the demo hook in here
    routes: RouteKeeper | None = None  # host-gw routes to the other nodes' podCIDRs
    replace_on_structure: bool = False
    collector: PacedCollector | None = None  # the cyclic GC, run between syncs (netpol.gc)

    def __post_init__(self) -> None:
        self.events: queue.Queue[SourceEvent] = queue.Queue()
        self.intake = Intake(self.node, self.metrics)
        self.coalescer = Coalescer(self.timing, self.clock)
        self.applied: NodeProgram | None = None  # what the kernel holds (updates are diffs to it)
        self.ready = False
        self.last_error = ""
        self.syncs = 0
        self._needs_full = True  # the first sync, and the one after a failure, replace the table
        self._synced = threading.Event()
        self._routes_dirty = True

    @property
    def compiler(self) -> IncrementalCompiler | None:
        """The node's compiler; None until every kind has been listed."""
        return self.intake.compiler

    @property
    def pending(self) -> bool:
        """Whether a change is waiting to be synced."""
        return self.coalescer.pending

    # ── input ─────────────────────────────────────────────────────────────────────────────

    def submit(self, event: SourceEvent) -> None:
        self.events.put(event)

    def take(self, event: SourceEvent) -> None:
        """Fold one source event into the state (no I/O)."""
        taken = self.intake.take(event)
        self._routes_dirty = self._routes_dirty or taken.nodes_changed
        if taken.changed:
            self.coalescer.note(taken.structural)

    # ── output ────────────────────────────────────────────────────────────────────────────

    def sync_due(self) -> bool:
        return self.compiler is not None and self.coalescer.due()

    def seconds_to_sync(self) -> float:
        return self.coalescer.wait()

    def sync(self) -> bool:
        """Apply this node's current program; True when the kernel now holds it."""
        assert self.compiler is not None
        program = self.compiler.program(self.node)
        structural = self.coalescer.structural
        full = self.applied is None or self._needs_full or (structural and self.replace_on_structure)
        mode = "full" if full else "chains" if structural else "elements"
        started = time.perf_counter()
        text = render(program) if full else render_update(self.applied, program)  # type: ignore[arg-type]
        try:
            if text:
                self.loader.apply(text)
        except Exception as exc:  # ApplyError, or libnftables missing: keep the last good one
            self._failed(str(exc))
            return False
        elapsed = time.perf_counter() - started
        self.applied = program
        self.ready = True
        self.last_error = ""
        self.syncs += 1
        self._needs_full = False
        self.coalescer.synced()
        self.metrics.observe_sync(program, mode, elapsed)
        log.info("synced", extra={"node": self.node, "mode": mode, "pods": len(program.pods),
                                  "seconds": round(elapsed, 4),
                                  "resource_versions": dict(self.intake.versions)})
        self._synced.set()
        if self.collector is not None and not self.collector.started:
            self.collector.start()  # the initial state is built: out of the collector's sight
        if self.on_sync is not None:
            self.on_sync(program)
        return True

    def _failed(self, error: str) -> None:
        self.last_error = error
        self.ready = False
        self._needs_full = True  # after a failure, replace the whole table
        delay = self.coalescer.failed()
        self.metrics.apply_errors.inc()
        self.metrics.ready.set(0)
        log.error("apply failed; the last good ruleset stays", extra={
            "node": self.node, "error": error, "retry_in_s": round(delay, 3)})

    # ── the loop ──────────────────────────────────────────────────────────────────────────

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._drain(min(IDLE_WAIT, self.seconds_to_sync()) or 0.001)
            if self.sync_due():
                self.sync()
            if self._routes_dirty and self.routes is not None and self.compiler is not None:
                self._routes_dirty = False
                self.routes.sync(desired_routes(self.compiler.resolver.nodes.values(), self.node))
            if self.collector is not None:
                self.collector.collect_if_due(idle=not self.pending)

    def _drain(self, wait: float) -> None:
        """Take every queued event, waiting up to `wait` for the first."""
        try:
            event: SourceEvent | None = self.events.get(timeout=wait)
        except queue.Empty:
            return
        while event is not None:
            self.take(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)
