"""One small record per attachment (container ID + interface): `dataDir/<network>/<ID>@<ifname>`.

DEL needs it to find the host veth when the runtime sends no prevResult; GC needs it to know
every attachment this plugin may hold an address for, to release what is not in
`cni.dev/valid-attachments`. So the record exists *before* the IPAM plugin is asked for an
address (`claim`, exclusive: of two ADDs of one attachment exactly one gets it) and goes only
after the address is released: an ADD killed at any moment leaves a record that GC (or DEL)
finds. It names the host veth from the start, whose name is chosen before the claim
(`host_veth_name`). Once the address is known, ADD rewrites it atomically (`save`: a temp file
renamed over it) with the anti-spoofing binding — the pod's MAC and addresses — which GC
restores as ADD made it, whatever the pod has set on its interface since.

The record's name must fit a file name (`fits`: 255 bytes); ADD refuses an attachment whose
name does not, so such an attachment never has a record, an address or anything else."""

from __future__ import annotations

from netpol_cni import sysos as os
from netpol_cni.jsonio import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netpol_cni.config import Invocation

NAME_MAX = 255  # bytes in one file name (Linux)
_TEMP_PREFIX = "."  # temp files: never a record's name (a container ID starts with a letter or digit)


def host_veth_name() -> str:
    return f"veth{os.urandom(4).hex()}"  # as the reference bridge plugin names it


def attachment_record(inv: Invocation, host_veth: str, mac: str = "", ips: list[str] | None = None,
                      ) -> dict[str, Any]:
    """What DEL and GC need; `mac` and `ips` (the anti-spoofing binding) once ADD knows them."""
    record: dict[str, Any] = {"containerID": inv.container_id, "ifname": inv.ifname, "netns": inv.netns,
                              "hostInterface": host_veth, "bridge": inv.conf.bridge}
    if ips is not None:
        record.update(mac=mac, ips=ips)
    return record


def record_name(container_id: str, ifname: str) -> str:
    return f"{container_id}@{ifname}"  # '@' never occurs in a container ID


def fits(container_id: str, ifname: str) -> bool:
    """Whether the attachment's record name fits a file name."""
    return len(record_name(container_id, ifname).encode()) <= NAME_MAX


def _directory(data_dir: str, network: str) -> str:
    return os.path.join(data_dir, network)


def _path(data_dir: str, network: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, network, record_name(container_id, ifname))


def claim(data_dir: str, network: str, container_id: str, ifname: str, record: dict[str, Any]) -> bool:
    """Create the attachment's record unless it exists: True when this call created it (O_EXCL,
    so two ADDs of one attachment never both own it)."""
    path = _path(data_dir, network, container_id, ifname)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    except FileNotFoundError:  # the network's first attachment on this node
        os.makedirs(_directory(data_dir, network), mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return False
    try:
        data = dumps(record).encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return True


def save(data_dir: str, network: str, container_id: str, ifname: str, record: dict[str, Any]) -> str:
    """Write the record whole, over the claim: a reader sees the old one or the new one."""
    directory = _directory(data_dir, network)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = _path(data_dir, network, container_id, ifname)
    # named for the process, not the record: the record's own name may already be 255 bytes
    temp = os.path.join(directory, f"{_TEMP_PREFIX}{os.getpid()}.tmp")
    with open(temp, "w") as out:
        out.write(dumps(record))
    os.replace(temp, path)
    return path


def load(data_dir: str, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
    """The record, or None: absent, unreadable, or a claim whose ADD was killed before it wrote it."""
    try:
        with open(_path(data_dir, network, container_id, ifname)) as record:
            value = loads(record.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def remove(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(_path(data_dir, network, container_id, ifname))
    except FileNotFoundError:
        pass


def attachments(data_dir: str, network: str) -> list[tuple[str, str]]:
    """(container ID, ifname) of every record of `network`, claims of unfinished ADDs included."""
    try:
        names = os.listdir(_directory(data_dir, network))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        container_id, sep, ifname = name.partition("@")
        if sep and not name.startswith(_TEMP_PREFIX):
            out.append((container_id, ifname))
    return sorted(out)
