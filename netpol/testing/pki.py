"""A throwaway certificate authority for tests: a CA and a serving certificate it signed, whose
subjectAltNames name every address a client dials, as a cluster's API server certificate does.

Made with the `openssl` CLI (argument lists, each step's config in a file beside it; the
`cryptography` package is not a dependency): P-256 keys, ≈ 0.2 s for the CA and the server
certificate together. Both pass X.509 strict checks (CA with keyCertSign and a
subjectKeyIdentifier, server with authorityKeyIdentifier, serverAuth and SANs).
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What a cluster's API server certificate carries besides addresses (kubeadm's list).
API_SERVER_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local", "localhost")
LIFETIME_DAYS = "2"  # a test run's certificates never outlive the day after


@dataclass(frozen=True)
class ServingCertificate:
    """PEM files: `ca` is what clients trust (a service account's ca.crt); `cert` and `key` are
    what the server presents."""

    ca: Path
    cert: Path
    key: Path


def make_serving_certificate(directory: str | Path, addresses: Sequence[str] = ("127.0.0.1", "::1"),
                             dns_names: Sequence[str] = API_SERVER_NAMES,
                             ca_name: str = "netpol-test-ca") -> ServingCertificate:
    """A new CA in `directory` (created if need be) and a server certificate it signed, valid for
    every IP in `addresses` and every name in `dns_names`. Two calls make two unrelated CAs: a
    client trusting one rejects the other's server (the wrong-CA case)."""
    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key = (where / n for n in ("ca.crt", "ca.key", "tls.crt", "tls.key"))
    sans = [f"IP.{i} = {ipaddress.ip_address(a)}" for i, a in enumerate(addresses, 1)]
    sans += [f"DNS.{i} = {name}" for i, name in enumerate(dns_names, 1)]
    ca_config = _config(where / "ca.cnf", ca_name, [
        "basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign",
        "subjectKeyIdentifier = hash"])
    server_config = _config(where / "tls.cnf", "kube-apiserver", [
        "basicConstraints = critical, CA:FALSE", "keyUsage = critical, digitalSignature",
        "extendedKeyUsage = serverAuth", "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid",
        "subjectAltName = @alt", "[alt]", *sans])
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *new_key, "-keyout", ca_key, "-out", ca, "-days", LIFETIME_DAYS,
             "-config", ca_config, "-extensions", "ext")
    _openssl("req", "-new", *new_key, "-keyout", key, "-out", where / "tls.csr", "-config", server_config)
    _openssl("x509", "-req", "-in", where / "tls.csr", "-CA", ca, "-CAkey", ca_key,
             "-set_serial", f"0x{secrets.token_hex(8)}", "-days", LIFETIME_DAYS, "-out", cert,
             "-extfile", server_config, "-extensions", "ext")
    return ServingCertificate(ca, cert, key)


def _config(path: Path, common_name: str, extensions: list[str]) -> Path:
    path.write_text("\n".join(["[req]", "distinguished_name = dn", "prompt = no", "[dn]",
                               f"CN = {common_name}", "[ext]", *extensions, ""]))
    return path


def _openssl(*args: str | Path) -> None:
    argv = ["openssl", *map(str, args)]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError("the `openssl` command is not on PATH: test certificates need it") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv)} failed: {exc.stderr.strip()}") from None
