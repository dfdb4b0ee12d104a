"""`netpol agent`: wire a source (Kubernetes or a directory), the sync loop, the applier and the
HTTP endpoints together, and run until SIGTERM/SIGINT."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from dataclasses import dataclass

from netpol.agent.coalesce import SyncTiming
from netpol.agent.http import serve
from netpol.agent.loop import Agent
from netpol.dataplane.nft import Applier
from netpol.dataplane.routes import RouteKeeper
from netpol.gc import PacedCollector
from netpol.sources.directory import DirectorySource
from netpol.sources.kube import KubeSource, new_api_client

log = logging.getLogger("netpol.agent")


@dataclass(frozen=True)
class AgentOptions:
    node: str
    kubeconfig: str | None = None
    directory: str | None = None
    netns: str | None = None  # load into this named namespace instead of our own
    listen: str = "127.0.0.1:9909"
    timing: SyncTiming = SyncTiming()
    replace_on_structure: bool = False


def run_agent(options: AgentOptions, stop: threading.Event | None = None) -> int:
    gc.enable()  # long-lived: the CLI turned the cyclic collector off for batch runs
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    applier = Applier(options.netns)
    collector = PacedCollector()
    agent = Agent(options.node, applier, options.timing, routes=RouteKeeper(options.netns),
                  replace_on_structure=options.replace_on_structure, collector=collector)
    host, _, port = options.listen.rpartition(":")
    http = serve(agent, host or "127.0.0.1", int(port))
    source: KubeSource | DirectorySource
    if options.directory:
        source = DirectorySource(options.directory, agent.submit).start()
    else:
        source = KubeSource(new_api_client(options.kubeconfig), agent.submit).start()
    log.info("agent started", extra={"node": options.node, "listen": options.listen,
                                     "source": options.directory or "kubernetes"})
    loop = threading.Thread(target=agent.run, args=(stop,), name="sync-loop", daemon=True)
    loop.start()
    try:
        while not stop.wait(0.5):  # (a timeout, so that signal handlers get to run)
            pass
    finally:
        source.stop()
        loop.join(5)
        collector.stop()
        http.shutdown()
        applier.close()
        log.info("agent stopped", extra={"node": options.node})
    return 0
