"""The executable: read stdin and the CNI_* variables, dispatch on CNI_COMMAND, print the
result (or the CNI error object) on stdout. Never a traceback: an unexpected failure is still
an error object (code 999, the exception in `details`)."""

from __future__ import annotations

import os
import sys

from netpol_cni.config import CURRENT_VERSION, SUPPORTED_VERSIONS, config_version, load_invocation
from netpol_cni.errors import DECODE_FAILURE, IO_FAILURE, CniError
from netpol_cni.ipam import Delegation
from netpol_cni.jsonio import dumps

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
        # The IPAM plugin starts on ADD/DEL/CHECK now, and runs while the rest of the plugin
        # loads and does its part: an exec'd Go IPAM plugin costs about what our imports do.
        delegation = Delegation(inv, command) if command in IPAM_FIRST else None
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
