"""The CNI error codes (spec §"Error") and the plugin's one exception type.

`CniError` is raised anywhere in the plugin; `main` prints it as the spec's error object
(`{"cniVersion", "code", "msg", "details"}`) on stdout and exits non-zero."""

from __future__ import annotations

INCOMPATIBLE_VERSION = 1  # the config's cniVersion is not one we speak
UNSUPPORTED_FIELD = 2  # a field we understand but whose value we do not support
UNKNOWN_CONTAINER = 3  # the container (its network namespace) does not exist
INVALID_ENVIRONMENT = 4  # a CNI_* variable is missing or malformed
IO_FAILURE = 5  # reading stdin, files, netlink, exec of a delegate failed
DECODE_FAILURE = 6  # stdin is not JSON
INVALID_CONFIG = 7  # the network configuration is wrong (field named in the message)
TRY_AGAIN_LATER = 11  # a transient condition; the runtime should retry
NOT_AVAILABLE = 50  # STATUS: cannot service ADD
LIMITED_CONNECTIVITY = 51  # STATUS: cannot service ADD, and existing pods are affected
STATE_MISMATCH = 100  # CHECK: the real state differs from prevResult (plugin-specific code)


class CniError(Exception):
    """A failure the runtime gets as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_result(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
