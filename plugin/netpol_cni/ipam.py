"""Delegating address management to the IPAM plugin named in `ipam.type`, the CNI way.

The IPAM plugin gets our stdin (the whole network configuration) and our CNI_* environment with
CNI_COMMAND set to what we ask of it; it is found on CNI_PATH and started with posix_spawn (no
`subprocess`: its import alone costs more than the spawn). It runs while the plugin does its
own work (`Delegation`): an IPAM plugin's run is about half of an ADD, and nothing the veth
set-up does depends on the address until the very end. Its errors come back as ours, code
kept, message prefixed with the plugin's name.

IPAM plugins that only speak CNI 1.0.0 (host-local 1.1.x) refuse a 1.1.0 configuration with
code 1; 1.0.0 and 1.1.0 results have the same shape, so the request is repeated once as 1.0.0."""

from __future__ import annotations

from netpol_cni import sysos as os
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


class Running:
    """A started plugin: stdin written and closed, stdout still to be read."""

    def __init__(self, path: str, stdin: str, env: dict[str, str]) -> None:
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        try:
            self.pid = os.posix_spawn(path, [path], env, file_actions=[
                (os.POSIX_SPAWN_DUP2, in_read, 0), (os.POSIX_SPAWN_DUP2, out_write, 1)])
        except OSError as exc:
            for fd in (in_read, in_write, out_read, out_write):
                os.close(fd)
            raise CniError(IO_FAILURE, f"cannot run {path}: {exc.strerror}") from None
        os.close(in_read)
        os.close(out_write)
        self._out = out_read
        data = stdin.encode()
        try:
            while data:  # a config is far below the pipe's 64 KiB: this does not wait for the plugin
                data = data[os.write(in_write, data):]
        except BrokenPipeError:
            pass  # it exited without reading everything; its exit code says why
        finally:
            os.close(in_write)

    def finish(self) -> tuple[int, str]:
        """Wait for it: (exit code, stdout). Its stderr went to ours."""
        chunks = []
        while chunk := os.read(self._out, 65536):
            chunks.append(chunk)
        os.close(self._out)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def run_plugin(path: str, stdin: str, env: dict[str, str]) -> tuple[int, str]:
    """Run a plugin with `stdin` and `env` to the end; (exit code, stdout)."""
    return Running(path, stdin, env).finish()


class Delegation:
    """The IPAM plugin working on `command` while the caller does its own part (an ADD sets up
    the veth while host-local allocates; a DEL removes the interface while it releases).
    `result()` waits for it."""

    def __init__(self, inv: Invocation, command: str, *, container_id: str = "", ifname: str = "",
                 netns: str | None = None) -> None:
        self.inv = inv
        self.kind: str = inv.conf.ipam["type"]
        self.path = find_plugin(self.kind, inv.cni_path)
        env = dict(inv.env)
        env["CNI_COMMAND"] = command
        if inv.args_error:  # a DEL with CNI_ARGS that ADD refuses: releasing needs none (see config)
            env.pop("CNI_ARGS", None)
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if ifname:
            env["CNI_IFNAME"] = ifname
        if netns is not None:
            env["CNI_NETNS"] = netns
        self.env = env
        self._running: Running | None = Running(self.path, dumps(inv.conf.raw), env)
        self._outcome: tuple[int, str] | None = None
        self._retried = False

    def _finish(self) -> tuple[int, str]:
        if self._outcome is None:
            assert self._running is not None
            self._outcome, self._running = self._running.finish(), None
        return self._outcome

    def settle(self) -> None:
        """Wait for it, whatever it answers (used when undoing)."""
        self._finish()

    def succeeded(self) -> bool:
        """Whether its last answer (the 1.0.0 retry's, if `result` made one) was success. An
        ADD that failed allocated nothing: an IPAM plugin cleans up after its own failure."""
        return self._finish()[0] == 0

    def result(self) -> Any:
        """Its decoded stdout (None when empty); CniError when it failed."""
        code, out = self._finish()
        if code != 0:
            error = _error_of(self.kind, code, out)
            if error.code != INCOMPATIBLE_VERSION or self.inv.conf.cni_version == "1.0.0" or self._retried:
                raise error
            self._retried = True
            config = dumps(dict(self.inv.conf.raw, cniVersion="1.0.0"))
            self._outcome = code, out = run_plugin(self.path, config, self.env)
            if code != 0:
                raise _error_of(self.kind, code, out)
        if not out.strip():
            return None
        try:
            return loads(out)
        except ValueError:
            raise CniError(IO_FAILURE,
                           f"ipam plugin {self.kind!r}: its result is not JSON: {out[:200]!r}") from None


def delegate(inv: Invocation, command: str, *, container_id: str = "", ifname: str = "",
             netns: str | None = None) -> Any:
    """Run the IPAM plugin for `command` to the end; its decoded stdout (None when empty)."""
    return Delegation(inv, command, container_id=container_id, ifname=ifname, netns=netns).result()


def _error_of(kind: str, code: int, out: str) -> CniError:
    try:
        error = loads(out)
    except ValueError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return CniError(error["code"], f"ipam plugin {kind!r}: {error.get('msg', '')}",
                        str(error.get("details", "")))
    return CniError(IO_FAILURE, f"ipam plugin {kind!r} failed (exit {code}): {out.strip()[:200]}")


def allocation(inv: Invocation, adding: Delegation) -> dict[str, Any]:
    """The result of an IPAM ADD, checked to carry at least one address."""
    result = adding.result()
    ips = result.get("ips") if isinstance(result, dict) else None
    if not isinstance(ips, list) or not ips or not all(
            isinstance(ip, dict) and isinstance(ip.get("address"), str) for ip in ips):
        raise CniError(IO_FAILURE, f"ipam plugin {inv.conf.ipam['type']!r} returned no addresses: "
                       f"{dumps(result)[:200]}")
    assert isinstance(result, dict)
    return result
