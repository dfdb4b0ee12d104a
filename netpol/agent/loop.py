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

Drift. What others change in our table is announced by the kernel (`watch`:
netpol.dataplane.nft_monitor.TableWatch); the loop looks at every turn (at least every
IDLE_WAIT, 0.5 s) and restores the program it last applied as a full table ("repair",
`netpol_repairs_total{what="table"}`), which at 10k pods takes ~1.3 s: restored within ~2 s.
A tool that keeps changing our table gets it back at most every 4-8 s (REPAIR_PACE), never in
a tight loop. The host-gw routes are compared with the kernel every `verify_interval` (two `ip`
listings, a few ms) and re-added when someone removed them (`what="routes"`); `ip` failing is
logged and counted (`netpol_route_errors_total`), never fatal.
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
from netpol.dataplane.nft_monitor import TableChanges
from netpol.dataplane.routes import RouteKeeper, desired_routes
from netpol.errors import RouteError
from netpol.gc import PacedCollector
from netpol.sources.backoff import Backoff
from netpol.sources.events import SourceEvent

log = logging.getLogger("netpol.agent")
VERIFY_INTERVAL = 5.0  # s between route checks (two `ip` listings, ~5 ms): a lost route cuts node to node
REPAIR_QUIET = 60.0  # s without drift after which the next repair is immediate again
REPAIR_PACE = (1.0, 8.0)  # repeated drift: repairs spaced by a backoff from 1 s (jittered) to at most 8 s


class RulesetLoader(Protocol):
    """What the agent applies rulesets with: netpol.dataplane.nft.Applier."""

    def apply(self, ruleset: str, force: bool = False) -> Any: ...


class ChangeFeed(Protocol):
    """What others changed in our table since the last look: netpol.dataplane.nft_monitor.TableWatch."""

    def take(self) -> TableChanges: ...


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
    watch: ChangeFeed | None = None  # what others change in our table (drift)
    verify_interval: float = VERIFY_INTERVAL  # s between checks of the routes against the kernel

    def __post_init__(self) -> None:
        self.events: queue.Queue[SourceEvent] = queue.Queue()
        self.intake = Intake(self.node, self.metrics)
        self.coalescer = Coalescer(self.timing, self.clock)
        self.applied: NodeProgram | None = None  # what the kernel holds (updates are diffs to it)
        self.syncs = 0
        self.repairs = 0
        self._sync_error = ""  # why the last sync failed ('' after a success)
        self._repair_error = ""  # why the last repair failed ('' after a success)
        self._needs_full = True  # the first sync, and the one after a failure, replace the table
        self._synced = threading.Event()
        self._routes_dirty = True
        self._routes_check_at = 0.0
        self._repair_at: float | None = None  # when to restore the table (drift found)
        self._last_repair: float | None = None
        self._repair_pace = Backoff(initial=REPAIR_PACE[0], cap=REPAIR_PACE[1])

    @property
    def ready(self) -> bool:
        """The kernel holds the program: a sync succeeded, none failed since, no repair failed."""
        return self.applied is not None and not self._sync_error and not self._repair_error

    @property
    def last_error(self) -> str:
        return "; ".join(e for e in (self._sync_error, self._repair_error) if e)

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
        self._sync_error = ""
        self.syncs += 1
        self._needs_full = False
        self.coalescer.synced()
        self.metrics.observe_sync(program, mode, elapsed)
        log.info("synced", extra={"node": self.node, "mode": mode, "pods": len(program.pods),
                                  "seconds": round(elapsed, 4),
                                  "resource_versions": dict(self.intake.versions)})
        if full and self._repair_at is not None:  # a whole new table: the drift is gone with the old one
            self._repaired(elapsed)
        self._synced.set()
        if self.collector is not None and not self.collector.started:
            self.collector.start()  # the initial state is built: out of the collector's sight
        if self.on_sync is not None:
            self.on_sync(program)
        return True

    def _failed(self, error: str) -> None:
        self._sync_error = error
        self._needs_full = True  # after a failure, replace the whole table
        delay = self.coalescer.failed()
        self.metrics.apply_errors.inc()
        self.metrics.ready.set(0)
        log.error("apply failed; the last good ruleset stays", extra={
            "node": self.node, "error": error, "retry_in_s": round(delay, 3)})

    # ── drift: our table and routes, changed from outside ─────────────────────────────────

    def look_for_drift(self) -> None:
        """Take what others changed in our table; schedule a repair if anything."""
        found = self.watch.take() if self.watch is not None else TableChanges()
        if not found:
            return
        if self.applied is None:
            return  # nothing applied yet: the first sync replaces the whole table anyway
        log.warning("drift: our table was changed from outside; restoring the program last applied", extra={
            "node": self.node, "found": list(found.changes) or ["unknown: nftables notifications were lost"],
            "by": list(found.by)})
        if self._repair_at is None:
            self._repair_at = self._next_repair_time()

    def _next_repair_time(self) -> float:
        """At once, unless drift keeps coming back: then spaced by REPAIR_PACE."""
        now = self.clock()
        if self._last_repair is None or now - self._last_repair >= REPAIR_QUIET:
            self._repair_pace.reset()
            return now
        return max(now, self._last_repair + self._repair_pace.next_delay())

    def repair_due(self) -> bool:
        return self._repair_at is not None and self.applied is not None and self.clock() >= self._repair_at

    def repair(self) -> bool:
        """Load the program last applied again, as a whole table; True when the kernel holds it."""
        assert self.applied is not None
        started = time.perf_counter()
        try:
            self.loader.apply(render(self.applied), force=True)
        except Exception as exc:  # ApplyError: the table stays as it was found; try again later
            self._repair_error = f"cannot restore the table: {exc}"
            self._repair_at = self.clock() + self._repair_pace.next_delay()
            self.metrics.apply_errors.inc()
            self.metrics.ready.set(0)
            log.error("repair failed", extra={"node": self.node, "error": str(exc),
                                              "retry_at_s": round(self._repair_at, 3)})
            return False
        self._repaired(time.perf_counter() - started)
        return True

    def _repaired(self, seconds: float) -> None:
        self._repair_at = None
        self._repair_error = ""
        self._last_repair = self.clock()
        self.repairs += 1
        self.metrics.repairs.labels("table").inc()
        self.metrics.ready.set(1 if self.ready else 0)
        log.info("repaired: the table is the program last applied", extra={
            "node": self.node, "seconds": round(seconds, 4)})

    def keep_routes(self) -> None:
        """Routes to the other nodes' podCIDRs: after a Node changed, and every verify_interval
        (a route someone removed is re-added, and counted as a repair)."""
        if self.routes is None or self.compiler is None:
            return
        now = self.clock()
        if not self._routes_dirty and now < self._routes_check_at:
            return
        periodic, self._routes_dirty = not self._routes_dirty, False
        self._routes_check_at = now + self.verify_interval
        try:
            changes = self.routes.sync(desired_routes(self.compiler.resolver.nodes.values(), self.node))
        except RouteError as exc:
            self.metrics.route_errors.inc()
            log.warning("cannot keep the routes", extra={"node": self.node, "error": str(exc),
                                                         "retry_in_s": self.verify_interval})
            return
        if periodic and changes:
            self.metrics.repairs.labels("routes").inc()
            log.warning("drift: our routes were changed from outside; repaired", extra={
                "node": self.node, "changes": changes})

    # ── the loop ──────────────────────────────────────────────────────────────────────────

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._drain(min(IDLE_WAIT, self.seconds_to_sync(), self._seconds_to_repair()) or 0.001)
            if self.sync_due():
                self.sync()
            self.look_for_drift()
            if self.repair_due():
                self.repair()
            self.keep_routes()
            if self.collector is not None:
                self.collector.collect_if_due(idle=not self.pending)

    def _seconds_to_repair(self) -> float:
        return IDLE_WAIT if self._repair_at is None else max(0.0, self._repair_at - self.clock())

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
