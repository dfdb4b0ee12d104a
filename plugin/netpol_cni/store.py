"""One small record per attachment (container ID + interface) under `dataDir/<network>/`.

DEL needs to find the host veth when the runtime sends no prevResult, and GC needs to know
every attachment this plugin made, to release what is not in `cni.dev/valid-attachments`.
Records are written atomically (temp file, rename) and removed by DEL."""

from __future__ import annotations

import os

from netpol_cni.jsonio import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _directory(data_dir: str, network: str) -> str:
    return os.path.join(data_dir, network)


def _path(data_dir: str, network: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, network, f"{container_id}@{ifname}")  # '@' never occurs in an ID


def save(data_dir: str, network: str, container_id: str, ifname: str, record: dict[str, Any]) -> str:
    directory = _directory(data_dir, network)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = _path(data_dir, network, container_id, ifname)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as out:
        out.write(dumps(record))
    os.replace(temp, path)
    return path


def load(data_dir: str, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
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
    """(container ID, ifname) of every record of `network`."""
    try:
        names = os.listdir(_directory(data_dir, network))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        container_id, sep, ifname = name.partition("@")
        if sep and not name.endswith(".tmp"):
            out.append((container_id, ifname))
    return sorted(out)
