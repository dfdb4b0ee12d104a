"""A netlink socket inside another network namespace.

A netlink socket belongs to the namespace it was created in, whatever the process does later.
So the plugin enters the pod's namespace (setns), opens one socket there and returns at once:
every later step talks to the right namespace through the right socket, and no code ever runs
"inside" the pod's namespace. The namespace file stays open for the caller, who passes it to
the kernel when it creates the veth peer there (IFLA_NET_NS_FD)."""

from __future__ import annotations

import _socket

from netpol_cni import sysos as os
from netpol_cni.netlink import Rtnl, new_socket

_CLONE_NEWNET = 0x40000000
_OWN_NETNS = "/proc/thread-self/ns/net"


class NetnsError(OSError):
    """The path is not a network namespace we can enter."""


class Netns:
    """An open network namespace: `fd` for IFLA_NET_NS_FD, `rtnl` talking inside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # O_NONBLOCK: opening a FIFO named in CNI_NETNS would otherwise wait for a writer
            # for ever (a DEL that never ends); setns then refuses it as it refuses any non-netns.
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise NetnsError(exc.errno, f"cannot open {path}: {exc.strerror}") from None
        try:
            self.rtnl = Rtnl(_socket_inside(self.fd, path))
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        self.rtnl.close()
        os.close(self.fd)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python ≥ 3.12
        os.setns(fd, _CLONE_NEWNET)
        return
    # Python 3.11 (Debian 12) has no os.setns. `ctypes` costs ~3.5 ms to import, a third of a
    # whole ADD; its C core `_ctypes` (0.6 ms) can look the libc function up and call it.
    import _ctypes  # noqa: PLC0415 - only on the paths that enter a namespace

    # dlopen(NULL): the program itself, with libc in it (typeshed wants a path)
    libc = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]
    setns = _ctypes.dlsym(libc, "setns")
    if _ctypes.call_function(setns, (fd, _CLONE_NEWNET)) != 0:
        raise OSError(*_setns_error(fd))


def _setns_error(fd: int) -> tuple[int, str]:
    """errno of a failed setns: asked again through ctypes proper (the error path only)."""
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) == 0:  # it worked this time (the caller goes home again)
        return 0, "setns failed once"
    errno = ctypes.get_errno()
    return errno, os.strerror(errno)


def _socket_inside(fd: int, path: str) -> _socket.socket:
    home = os.open(_OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(fd)
        except OSError as exc:
            _go_home(home)  # normally still home; not if asking for the errno got us in after all
            raise NetnsError(exc.errno, f"{path} is not a network namespace ({exc.strerror})") from None
        try:
            return new_socket()
        finally:
            _go_home(home)
    finally:
        os.close(home)


def _go_home(home: int) -> None:
    try:
        _setns(home)
    except OSError:  # cannot happen short of a kernel bug; never go on in the pod's namespace
        os.write(2, b"netpol-cni: cannot return to the node's network namespace\n")
        os._exit(70)
