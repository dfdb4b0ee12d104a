"""Follow a FakeApiServer with a KubeSource until what the source's events add up to (a Mirror)
equals what the server holds: the harness of the kube source's tests."""

from __future__ import annotations

import queue
import time

from netpol.sources.events import KIND_NAMES, Mirror, object_key
from netpol.sources.kube import KubeSource, new_api_client
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import HANG

KINDS = KIND_NAMES


class Follower:
    """Runs a KubeSource into a queue and a Mirror; waits until the mirror equals the server."""

    def __init__(self, api: FakeApiServer, tmp_path, client=None, **options):
        """`client`: how to reach `api` (default: through a kubeconfig written into tmp_path)."""
        self.api = api
        self.events: queue.Queue = queue.Queue()
        self.mirror = Mirror()
        self.seen: list = []
        options.setdefault("backoff_initial", 0.02)
        options.setdefault("backoff_cap", 0.2)
        client = client or new_api_client(str(api.kubeconfig(tmp_path / "kubeconfig")))
        self.source = KubeSource(client, self.events.put, **options)

    def __enter__(self):
        self.source.start()
        return self

    def __exit__(self, *exc):
        self.source.stop()

    def drain(self, seconds=0.05):
        deadline = time.monotonic() + seconds
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            self.seen.append(event)
            self.mirror.apply(event)

    def state(self):
        return {kind: {object_key(o): _strip(o) for o in self.mirror.objects.get(kind, {}).values()}
                for kind in KINDS}

    def server_state(self):
        return {kind: {object_key(o): _strip(o) for o in self.api.objects(kind)} for kind in KINDS}

    def converge(self, timeout=HANG):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain(0.05)
            if self.mirror.listed == set(KINDS) and self.state() == self.server_state():
                return
        assert self.state() == self.server_state()


def _strip(obj):
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
