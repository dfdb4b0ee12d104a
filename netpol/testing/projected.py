"""A projected service-account volume as the kubelet writes it (its AtomicWriter): the files
live in a timestamped directory, `..data` points at the current one and `token`, `ca.crt`,
`namespace` are symlinks through it, so an update — a rotated token — is one rename of `..data`
and a reader never sees a half-written or missing file."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


def project_files(directory: str | Path, files: Mapping[str, bytes]) -> Path:
    """Make `directory` hold exactly `files` (name → content), replacing what an earlier call
    put there in one atomic step."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + secrets.token_hex(4)
    (target / stamp).mkdir(mode=0o755)
    for name, content in files.items():
        (target / stamp / name).write_bytes(content)
    link = target / f"{DATA}_tmp"
    link.unlink(missing_ok=True)
    os.symlink(stamp, link)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else None
    os.replace(link, target / DATA)
    for name in files:
        if not (target / name).is_symlink():
            os.symlink(f"{DATA}/{name}", target / name)
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
    return target
