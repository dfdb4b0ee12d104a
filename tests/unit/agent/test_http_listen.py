"""The agent's endpoints bind where the DaemonSet tells them to — `$(NODE_IP):PORT`, which on an
IPv6-first node is a bare IPv6 address — and answer there."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any, cast

import pytest

from netpol.agent.http import serve


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_healthz_answers_on_the_address_family_of_the_listen_host(host):
    try:
        server = serve(cast(Any, None), host, 0)
    except OSError as exc:  # no IPv6 on this machine
        pytest.skip(f"cannot bind {host}: {exc}")
    try:
        assert server.address_family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
        port = server.server_address[1]
        url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read() == b"ok\n"
    finally:
        server.shutdown()
        server.server_close()
