"""The executable: read stdin and the CNI_* variables, dispatch on CNI_COMMAND, print the
result (or the CNI error object) on stdout. Never a traceback: an unexpected failure is still
an error object (code 999, the exception in `details`).

Before the IPAM plugin is started, an ADD claims its attachment's record (`store.claim`): a
record already there means the attachment exists (an ADD without DEL, or one still running),
and the ADD is refused before anything is asked of the IPAM plugin, so nothing of the running
attachment can be released by it. A DEL of an attachment ADD refuses succeeds at once."""

from __future__ import annotations

import sys

from netpol_cni import store
from netpol_cni import sysos as os
from netpol_cni.config import CURRENT_VERSION, SUPPORTED_VERSIONS, config_version, load_invocation
from netpol_cni.errors import DECODE_FAILURE, INVALID_ENVIRONMENT, IO_FAILURE, CniError
from netpol_cni.ipam import Delegation
from netpol_cni.jsonio import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from netpol_cni.config import Invocation

_INTERNAL_ERROR = 999
IPAM_FIRST = ("ADD", "DEL", "CHECK")


def main(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        _write({"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)})
        return 0
    stdin = ""
    try:
        stdin = _read_stdin()
        inv = load_invocation(command, stdin, env)
        if inv.refused_by_add:  # a DEL (see config): ADD made nothing, there is nothing to undo
            sys.stderr.write(f"netpol-cni: DEL: nothing to undo, ADD refuses this attachment: "
                             f"{inv.refused_by_add}\n")
            return 0
        delegation = _start_ipam(inv, command)
        from netpol_cni.commands import HANDLERS  # noqa: PLC0415 - only once the input is valid

        result = HANDLERS[command](inv, delegation)
    except CniError as exc:
        return _fail(exc, stdin)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(CniError(IO_FAILURE, f"{exc.strerror or exc}{where}"), stdin)
    except Exception as exc:  # a bug of ours: still an error object, never a traceback
        return _fail(CniError(_INTERNAL_ERROR, f"internal error in netpol-cni {command}",
                              f"{type(exc).__name__}: {exc}"), stdin)
    if result is not None:
        _write(result)
    return 0


def _start_ipam(inv: Invocation, command: str) -> Delegation | None:
    """The IPAM plugin at work on ADD/DEL/CHECK, started now: it runs while the rest of the
    plugin loads and does its part (an exec'd Go IPAM plugin costs about what our imports do).
    An ADD claims its record first; if the IPAM plugin cannot even be started, it gives the
    claim back (cmd_add's rollback does from then on)."""
    if command not in IPAM_FIRST:
        return None
    if command != "ADD":
        return Delegation(inv, command)
    conf = inv.conf
    inv.host_veth = store.host_veth_name()  # chosen now, so that the record names it from the start
    if not store.claim(conf.data_dir, conf.name, inv.container_id, inv.ifname,
                       store.attachment_record(inv, inv.host_veth)):
        raise CniError(INVALID_ENVIRONMENT, f"CNI_CONTAINERID, CNI_IFNAME: {inv.container_id}/{inv.ifname} "
                       f"is already attached to network {conf.name!r} (ADD again without DEL); its record: "
                       f"{conf.data_dir}/{conf.name}/{store.record_name(inv.container_id, inv.ifname)}")
    try:
        return Delegation(inv, command)
    except BaseException:
        store.remove(conf.data_dir, conf.name, inv.container_id, inv.ifname)
        raise


def _read_stdin() -> str:
    chunks = []
    while chunk := os.read(0, 65536):
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode()
    except UnicodeDecodeError as exc:
        raise CniError(DECODE_FAILURE, f"network configuration on stdin is not UTF-8: {exc}") from None


def _fail(error: CniError, stdin: str) -> int:
    _write(error.as_result(config_version(stdin)))
    return 1


def _write(value: object) -> None:
    data = dumps(value).encode()
    while data:
        data = data[os.write(1, data):]


def run() -> None:
    """Entry point. Everything is written (os.write) by the time main returns, so the process
    ends at once: skipping the interpreter's teardown is ~1 ms of a CNI call."""
    code = main()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
