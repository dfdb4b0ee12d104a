"""Delegating address management to the IPAM plugin named in `ipam.type`, the CNI way.

The IPAM plugin gets our stdin (the whole network configuration) and our CNI_* environment with
CNI_COMMAND set to what we ask of it; it is found on CNI_PATH and started with posix_spawn (no
`subprocess`: its import alone costs more than the spawn). Its errors come back as ours, code
kept, message prefixed with the plugin's name.

IPAM plugins that only speak CNI 1.0.0 (host-local 1.1.x) refuse a 1.1.0 configuration with
code 1; 1.0.0 and 1.1.0 results have the same shape, so the request is repeated once as 1.0.0."""

from __future__ import annotations

import os

from netpol_cni.errors import INCOMPATIBLE_VERSION, INVALID_CONFIG, IO_FAILURE, CniError
from netpol_cni.jsonio import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netpol_cni.config import Invocation


def find_plugin(kind: str, cni_path: tuple[str, ...]) -> str:
    """The executable `kind` in the first CNI_PATH directory that has it."""
    for directory in cni_path:
        path = os.path.join(directory, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CniError(INVALID_CONFIG, f"ipam.type: no plugin {kind!r} in CNI_PATH ({':'.join(cni_path)})")


def run_plugin(path: str, stdin: str, env: dict[str, str]) -> tuple[int, str]:
    """Run a plugin with `stdin` and `env`; (exit code, stdout). Its stderr is ours."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        pid = os.posix_spawn(path, [path], env, file_actions=[
            (os.POSIX_SPAWN_DUP2, in_read, 0), (os.POSIX_SPAWN_DUP2, out_write, 1)])
    except OSError as exc:
        for fd in (in_read, in_write, out_read, out_write):
            os.close(fd)
        raise CniError(IO_FAILURE, f"cannot run {path}: {exc.strerror}") from None
    os.close(in_read)
    os.close(out_write)
    data = stdin.encode()
    try:
        while data:
            data = data[os.write(in_write, data):]
    except BrokenPipeError:
        pass  # it exited without reading everything; its exit code says why
    finally:
        os.close(in_write)
    chunks = []
    while chunk := os.read(out_read, 65536):
        chunks.append(chunk)
    os.close(out_read)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def delegate(inv: Invocation, command: str, *, container_id: str = "", ifname: str = "",
             netns: str | None = None) -> Any:
    """Run the IPAM plugin for `command`; its decoded stdout (None when empty)."""
    kind = inv.conf.ipam["type"]
    path = find_plugin(kind, inv.cni_path)
    env = dict(os.environ)
    env["CNI_COMMAND"] = command
    if container_id:
        env["CNI_CONTAINERID"] = container_id
    if ifname:
        env["CNI_IFNAME"] = ifname
    if netns is not None:
        env["CNI_NETNS"] = netns
    stdin = dumps(inv.conf.raw)
    code, out = run_plugin(path, stdin, env)
    if code != 0:
        error = _error_of(kind, code, out)
        if error.code != INCOMPATIBLE_VERSION or inv.conf.cni_version == "1.0.0":
            raise error
        code, out = run_plugin(path, dumps(dict(inv.conf.raw, cniVersion="1.0.0")), env)
        if code != 0:
            raise _error_of(kind, code, out)
    if not out.strip():
        return None
    try:
        return loads(out)
    except ValueError:
        raise CniError(IO_FAILURE, f"ipam plugin {kind!r}: its result is not JSON: {out[:200]!r}") from None


def _error_of(kind: str, code: int, out: str) -> CniError:
    try:
        error = loads(out)
    except ValueError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return CniError(error["code"], f"ipam plugin {kind!r}: {error.get('msg', '')}",
                        str(error.get("details", "")))
    return CniError(IO_FAILURE, f"ipam plugin {kind!r} failed (exit {code}): {out.strip()[:200]}")


def allocate(inv: Invocation) -> dict[str, Any]:
    """IPAM ADD: the result, checked to carry at least one address."""
    result = delegate(inv, "ADD")
    ips = result.get("ips") if isinstance(result, dict) else None
    if not isinstance(ips, list) or not ips or not all(
            isinstance(ip, dict) and isinstance(ip.get("address"), str) for ip in ips):
        raise CniError(IO_FAILURE, f"ipam plugin {inv.conf.ipam['type']!r} returned no addresses: "
                       f"{dumps(result)[:200]}")
    assert isinstance(result, dict)
    return result
