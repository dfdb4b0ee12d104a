"""The plugin's `os`: the functions of the built-in `posix` module it uses, plus the few
`os.path` helpers, without `import os`. That import costs ~1.3 ms of every call's start-up
(`os.environ` is a MutableMapping, which pulls in `_collections_abc`, 0.8 ms alone): more than
a tenth of the reference plugin's whole ADD. Modules import it as `os`, so they read as usual.
(`install` is not on any CNI call's path and uses the real `os`.)"""

from __future__ import annotations

import posix
from posix import (
    O_CLOEXEC,
    O_CREAT,
    O_EXCL,
    O_NONBLOCK,
    O_RDONLY,
    O_WRONLY,
    POSIX_SPAWN_DUP2,
    RTLD_NOW,
    X_OK,
    _exit,
    access,
    close,
    getpid,
    listdir,
    mkdir,
    open,
    pipe,
    posix_spawn,
    read,
    replace,
    stat,
    strerror,
    unlink,
    urandom,
    waitpid,
    waitstatus_to_exitcode,
    write,
)

__all__ = [
    "O_CLOEXEC",
    "O_CREAT",
    "O_EXCL",
    "O_NONBLOCK",
    "O_RDONLY",
    "O_WRONLY",
    "POSIX_SPAWN_DUP2",
    "RTLD_NOW",
    "X_OK",
    "_exit",
    "access",
    "close",
    "environ",
    "getpid",
    "listdir",
    "makedirs",
    "mkdir",
    "open",
    "path",
    "pipe",
    "posix_spawn",
    "read",
    "replace",
    "setns",
    "stat",
    "strerror",
    "unlink",
    "urandom",
    "waitpid",
    "waitstatus_to_exitcode",
    "write",
]

_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, 0o040000, 0o100000
_EEXIST = 17

# The process environment as str (what os.environ holds; undecodable bytes kept as surrogates).
environ: dict[str, str] = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                           for k, v in posix.environ.items()}

if hasattr(posix, "setns"):  # Python ≥ 3.12 (netns falls back to libc's through _ctypes)
    setns = posix.setns


class path:
    """`os.path.join`, `exists`, `isdir`, `isfile` for the plugin's absolute paths."""

    @staticmethod
    def join(first: str, *rest: str) -> str:
        joined = first
        for part in rest:
            if part.startswith("/"):
                joined = part
            elif not joined or joined.endswith("/"):
                joined += part
            else:
                joined += "/" + part
        return joined

    @staticmethod
    def _mode(where: str) -> int | None:
        try:
            return posix.stat(where).st_mode
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            return None

    @staticmethod
    def exists(where: str) -> bool:
        return path._mode(where) is not None

    @staticmethod
    def isdir(where: str) -> bool:
        mode = path._mode(where)
        return mode is not None and mode & _S_IFMT == _S_IFDIR

    @staticmethod
    def isfile(where: str) -> bool:
        mode = path._mode(where)
        return mode is not None and mode & _S_IFMT == _S_IFREG


def makedirs(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """`os.makedirs`: the missing parents first."""
    parent = name.rstrip("/").rpartition("/")[0]
    if parent and not path.isdir(parent):
        makedirs(parent, mode, exist_ok=True)
    try:
        posix.mkdir(name, mode)
    except FileExistsError:
        if not (exist_ok and path.isdir(name)):
            raise
