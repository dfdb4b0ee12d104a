"""IPAM plugins for tests, each a thin wrapper around Debian's host-local (found on CNI_PATH), so
the reservations stay host-local's own files, which the tests read:

* `held` — ADD runs host-local, then, once host-local has made its reservation, writes a report
  (its parent's PID: the CNI plugin that called it, and its own) to `ipam.heldDir` and waits
  for a signal without answering. While it waits, the calling plugin is provably between
  the allocation and anything it does with the result, so a test can kill it exactly there
  (no sleeps, no timing). Every other command is host-local's.
* `sticky` — an IPAM plugin that answers a repeated ADD of one (container ID, ifname) with the
  reservation it already holds, as some IPAM plugins do (host-local refuses it instead).

`CniNode.install_ipam(name, mode)` installs one of them on the node's CNI_PATH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def host_local() -> str:
    for directory in os.environ.get("CNI_PATH", "").split(":"):
        path = Path(directory) / "host-local"
        if path.exists():
            return str(path)
    raise SystemExit("fake ipam: no host-local on CNI_PATH")


def main(mode: str) -> None:
    if os.environ.get("CNI_COMMAND") != "ADD":
        os.execv(host_local(), [host_local()])  # stdin untouched: host-local reads it
    conf = json.loads(sys.stdin.read())
    # host-local 1.1.x speaks up to 1.0.0; the results of 1.0.0 and 1.1.0 have the same shape
    done = subprocess.run([host_local()], input=json.dumps(dict(conf, cniVersion="1.0.0")),
                          capture_output=True, text=True, check=False)
    if mode == "held":
        _hold(conf, done)
    elif done.returncode != 0 and (address := _existing(conf)) is not None:
        sys.stdout.write(json.dumps({"cniVersion": conf["cniVersion"], "ips": [{"address": address}]}))
        return
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)


def _hold(conf: dict, done: subprocess.CompletedProcess[str]) -> None:
    """Report, then wait until killed, never answering the plugin that called us."""
    held = Path(conf["ipam"]["heldDir"])
    name = f"{os.environ['CNI_CONTAINERID']}@{os.environ['CNI_IFNAME']}"
    report = {"plugin": os.getppid(), "ipam": os.getpid(), "code": done.returncode}
    (held / f".{name}").write_text(json.dumps(report))
    (held / f".{name}").rename(held / name)  # appears complete or not at all
    while True:
        signal.pause()


def _existing(conf: dict) -> str | None:
    """host-local's reservation for this container ID and ifname, as `address/prefix`."""
    directory = Path(conf["ipam"]["dataDir"]) / conf["name"]
    owner = [os.environ["CNI_CONTAINERID"], os.environ["CNI_IFNAME"]]
    prefix = conf["ipam"]["ranges"][0][0]["subnet"].split("/")[1]
    for path in directory.iterdir():
        if path.name[0].isdigit() and path.read_text().split() == owner:
            return f"{path.name}/{prefix}"
    return None


if __name__ == "__main__":
    main(sys.argv[1])
