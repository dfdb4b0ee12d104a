"""The agent's local HTTP endpoints: `/healthz` (every thread the agent needs runs: 200, else
503 naming the one that died), `/readyz` (the kernel holds the program: 200, else 503 with the
error), `/metrics` (Prometheus text format)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from netpol.agent.loop import Agent


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(agent: Agent, host: str = "127.0.0.1", port: int = 9909,
          died: Callable[[], str] = lambda: "") -> ThreadingHTTPServer:
    """Start serving on a daemon thread; `shutdown()` the returned server to stop. `died` says
    which of the agent's threads died, and of what ('' while they all run)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            dead = died()
            if path == "/healthz":
                self._send(503 if dead else 200, f"dead: {dead}\n".encode() if dead else b"ok\n")
            elif path == "/readyz":
                if agent.ready and not dead:
                    self._send(200, b"ok\n")
                else:
                    why = f"dead: {dead}" if dead else agent.last_error or "no successful sync yet"
                    self._send(503, f"not ready: {why}\n".encode())
            elif path == "/metrics":
                self._send(200, agent.metrics.exposition(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server_class = _IPv6Server if ":" in host else ThreadingHTTPServer  # an IPv6 node's $(NODE_IP)
    server = server_class((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    return server
