"""`netpol agent`: wire a source (Kubernetes or a directory), the sync loop, the applier, the
drift watch and the HTTP endpoints together, and run until SIGTERM/SIGINT — or until one of
its threads dies.

Exit codes: 0 after SIGTERM/SIGINT. 1 when the node cannot run the agent (AgentError, raised
before anything is written): no `ip` on PATH, no libnftables, a `--netns` that cannot be
entered, a `--listen` address that cannot be bound, an unreadable kubeconfig or `--dir`, or (no
kubeconfig, in a pod) a service-account token or CA that is missing or unusable.
70 (EXIT_DIED) when a thread died of an unexpected error — the sync loop, a watch or folder
thread, the nftables monitor: a bug, logged with its traceback. From that moment /healthz and
/readyz answer 503 naming it; the other threads are stopped (the loop may finish its step for
up to STOP_GRACE) and the process exits, so that the kubelet starts it again on a clean state.
Whatever table is in force stays: dying opens nothing.
"""

from __future__ import annotations

import gc
import logging
import shutil
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from netpol.agent.coalesce import SyncTiming
from netpol.agent.http import serve
from netpol.agent.loop import VERIFY_INTERVAL, Agent
from netpol.dataplane.nft import Applier
from netpol.dataplane.nft_monitor import TableWatch
from netpol.dataplane.routes import RouteKeeper
from netpol.errors import AgentError, ApplyError, NamespaceError, SourceError
from netpol.gc import PacedCollector
from netpol.sources.directory import DirectorySource
from netpol.sources.events import run_reporting_death

log = logging.getLogger("netpol.agent")
EXIT_DIED = 70  # a thread died: EX_SOFTWARE, as the CLI's other internal errors
STOP_GRACE = 30.0  # s the loop may take to finish its step when stopping: the kubelet's default grace


@dataclass(frozen=True)
class AgentOptions:
    node: str
    kubeconfig: str | None = None
    directory: str | None = None
    netns: str | None = None  # load into this named namespace instead of our own
    listen: str = "127.0.0.1:9909"
    timing: SyncTiming = SyncTiming()
    replace_on_structure: bool = False
    verify_interval: float = VERIFY_INTERVAL


class Health:
    """Which of the agent's threads died, and of what: /healthz's answer and the exit code. A
    death stops the agent (`stop` is set)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._deaths: list[str] = []
        self._lock = threading.Lock()

    def died(self, thread: str, error: BaseException) -> None:
        with self._lock:
            self._deaths.append(f"{thread}: {type(error).__name__}: {error}")
        log.critical("a thread of the agent died; the agent exits", extra={
            "thread_name": thread, "error": f"{type(error).__name__}: {error}", "exit_code": EXIT_DIED})
        self.stop.set()

    def problem(self) -> str:
        """'' while every thread runs, else which died of what."""
        with self._lock:
            return "; ".join(self._deaths)


@dataclass
class Parts:
    """What `run_agent` started, closed in reverse order of need (also after a failed start)."""

    applier: Applier | None = None
    watch: TableWatch | None = None
    http: Any = None
    source: Any = None
    collector: PacedCollector = field(default_factory=PacedCollector)

    def close(self, loop: threading.Thread | None) -> None:
        if self.source is not None:
            self.source.stop()
        if loop is not None:
            loop.join(STOP_GRACE)
        if self.watch is not None:
            self.watch.stop()
        self.collector.stop()
        if self.http is not None:
            self.http.shutdown()
        if self.applier is not None:
            if loop is not None and loop.is_alive():  # closing under a running apply: a use after free
                log.error("the sync loop did not stop; exiting without closing libnftables",
                          extra={"grace_s": STOP_GRACE})
            else:
                self.applier.close()


def run_agent(options: AgentOptions, stop: threading.Event | None = None) -> int:
    """Run until stopped; the exit code (see the module). AgentError when it cannot start."""
    gc.enable()  # long-lived: the CLI turned the cyclic collector off for batch runs
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    health = Health(stop)
    parts = Parts()
    loop: threading.Thread | None = None
    try:
        agent = _start(options, health, parts)
        loop = threading.Thread(target=run_reporting_death, name="sync-loop", daemon=True,
                                args=("sync-loop", lambda: agent.run(stop), health.died, stop.is_set))
        loop.start()
        while not stop.wait(0.5):  # (a timeout, so that signal handlers get to run)
            pass
    finally:
        parts.close(loop)
        log.info("agent stopped", extra={"node": options.node, "died": health.problem() or None})
    return EXIT_DIED if health.problem() else 0


def _start(options: AgentOptions, health: Health, parts: Parts) -> Agent:
    """Check what the node must offer, then start every part but the loop (AgentError if not)."""
    if shutil.which("ip") is None:
        raise AgentError("`ip` (iproute2) is not on PATH: the agent needs it for the host-gw routes")
    parts.applier = Applier(options.netns)
    try:
        parts.applier.check_ready()
        own = parts.applier.committer_id()
        parts.watch = TableWatch(options.netns, frozenset({own}), on_death=health.died).start()
    except (ApplyError, NamespaceError, OSError) as exc:
        raise AgentError(f"cannot load rulesets{f' into {options.netns}' if options.netns else ''}: {exc}") \
            from None
    agent = Agent(options.node, parts.applier, options.timing, routes=RouteKeeper(options.netns),
                  replace_on_structure=options.replace_on_structure, collector=parts.collector,
                  watch=parts.watch, verify_interval=options.verify_interval)
    host, _, port = options.listen.rpartition(":")
    try:
        parts.http = serve(agent, host.strip("[]") or "127.0.0.1", int(port), health.problem)
    except (OSError, ValueError) as exc:
        raise AgentError(f"--listen {options.listen}: {exc}") from None
    parts.source = _source(options, agent, health)
    bound = parts.http.server_address
    log.info("agent started", extra={"node": options.node, "listen": f"{bound[0]}:{bound[1]}",
                                     "source": options.directory or "kubernetes"})
    return agent


def _source(options: AgentOptions, agent: Agent, health: Health) -> Any:
    if options.directory:
        try:
            return DirectorySource(options.directory, agent.submit, on_death=health.died).start()
        except SourceError as exc:
            raise AgentError(f"--dir {exc}") from None
    from netpol.sources.kube import KubeSource, new_api_client  # noqa: PLC0415 - `--dir` never loads kubernetes

    try:
        client = new_api_client(options.kubeconfig)
    except SourceError as exc:  # in-cluster config: it names the variable or file
        raise AgentError(f"in-cluster config: {exc}") from None
    except Exception as exc:  # the client's ConfigException, OSError, YAML errors: all "unreadable"
        where = options.kubeconfig or "(default)"
        raise AgentError(f"kubeconfig {where}: {type(exc).__name__}: {exc}") from None
    return KubeSource(client, agent.submit, on_death=health.died).start()
