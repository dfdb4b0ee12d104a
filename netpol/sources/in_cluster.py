"""In-cluster config: reach the API server as a pod does — `https://$KUBERNETES_SERVICE_HOST:
$KUBERNETES_SERVICE_PORT`, trusting the service account's `ca.crt`, authenticating with its
`token` — and follow the token as the kubelet rotates it.

A projected service-account token expires (an hour by default); the kubelet writes the new one
into the same file at 80% of its life. The client's own loader re-reads the file at most once a
minute, whatever happened; here the file is read before every request (a few per watch
timeout, microseconds each), so the request after a rotation carries the new token, and a 401
met with an old one is followed, at the next retry, by a request with whatever the file holds
then. No timer, no restart.

The files are looked for in `$NETPOL_SERVICE_ACCOUNT_DIR`, else in
/var/run/secrets/kubernetes.io/serviceaccount (where the kubelet mounts them): tests and the
lab point the variable elsewhere. Anything unusable at start — variable unset, a file
missing, empty or not PEM — is a `SourceError` naming the file.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client

from netpol.errors import SourceError

log = logging.getLogger("netpol.sources.kube")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DIR_VARIABLE = "NETPOL_SERVICE_ACCOUNT_DIR"


class ProjectedToken:
    """The token file, read again for every request (`refresh_api_key_hook`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.token = self.read()  # the one last put into the configuration

    def read(self) -> str:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            raise SourceError(f"service-account token {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SourceError(f"service-account token {self.path}: not text") from None
        if not token:
            raise SourceError(f"service-account token {self.path}: the file is empty")
        return token

    def refresh(self, configuration: client.Configuration) -> None:
        """Put the file's token into `configuration` (called by the client before each request)."""
        token = self.read()
        with self._lock:
            if token != self.token:
                log.info("the service-account token changed; using the new one",
                         extra={"file": str(self.path)})
                self.token = token
            configuration.api_key["BearerToken"] = token


def in_cluster_configuration(environ: Mapping[str, str] = os.environ) -> client.Configuration:
    """A client configuration from the pod's environment and service-account files."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise SourceError(f"KUBERNETES_SERVICE_HOST={host!r}, KUBERNETES_SERVICE_PORT={port!r}: both are "
                          "needed (outside a pod, pass --kubeconfig)")
    directory = Path(environ.get(DIR_VARIABLE) or SERVICE_ACCOUNT_DIR)
    token = ProjectedToken(directory / "token")
    ca = directory / "ca.crt"
    _check_ca(ca)
    configuration = client.Configuration()
    configuration.host = f"https://{join_host_port(host, port)}"
    configuration.ssl_ca_cert = str(ca)
    configuration.api_key["BearerToken"] = token.token
    configuration.api_key_prefix["BearerToken"] = "Bearer"
    configuration.refresh_api_key_hook = token.refresh
    return configuration


def join_host_port(host: str, port: str) -> str:
    """host:port, an IPv6 address in brackets (Go's net.JoinHostPort, as client-go builds it)."""
    bracket = (":" in host or "%" in host) and not host.startswith("[")
    return f"[{host}]:{port}" if bracket else f"{host}:{port}"


def _check_ca(path: Path) -> None:
    """The CA file holds at least one PEM certificate (else every request would fail later, far
    from the cause)."""
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:  # (an OSError too: first)
        raise SourceError(f"service-account CA {path}: no PEM certificate in it") from None
    except OSError as exc:
        raise SourceError(f"service-account CA {path}: {exc.strerror or exc}") from None
