"""Host-gw routing between nodes: in the node's namespace, a route to every other node's
podCIDR via that node's address (its first InternalIP/ExternalIP of the same family), so pods
on different nodes reach each other without an overlay.

Our routes carry their own routing protocol number (`proto 199`, shown as 199 by `ip route`),
so the agent recognises them: it adds or replaces the ones that should exist and removes stale
ones of its own, and never touches a route anything else made. `ip` is run with argument lists
(never a shell); `desired_routes` is pure. A route the kernel refuses is logged and skipped; `ip`
missing, or a listing that cannot be read, is RouteError (the agent retries at its next check).
To remove them by hand (an uninstalled agent leaves them): `ip route flush proto 199` and
`ip -6 route flush proto 199`."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netpol.errors import RouteError
from netpol.model import IPAddress, IPNetwork, Node

log = logging.getLogger("netpol.dataplane.routes")
PROTO = "199"


def desired_routes(nodes: Iterable[Node], me: str) -> dict[IPNetwork, IPAddress]:
    """Other nodes' podCIDRs → the address to reach each through."""
    out: dict[IPNetwork, IPAddress] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name == me:
            continue
        for cidr in node.pod_cidrs:
            via = next((a for a in node.addresses if a.version == cidr.version), None)
            if via is not None:
                out[cidr] = via
    return out


@dataclass
class RouteKeeper:
    """Keeps the routes `proto 199` of one namespace equal to what it is told (`netns`: a named
    namespace to work in, or None for our own)."""

    netns: str | None = None
    _refused: dict[str, str] = field(default_factory=dict)  # destination → the kernel's last refusal

    def _ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ip ARGS` (in `netns`); RouteError when `ip` cannot be run at all."""
        prefix = ["ip", "-n", self.netns] if self.netns else ["ip"]
        try:
            return subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        except OSError as exc:
            raise RouteError(f"cannot run `ip`: {exc.strerror or exc}") from None

    def current(self) -> dict[str, str]:
        """Our routes now: destination → gateway. RouteError when `ip` cannot list them."""
        found: dict[str, str] = {}
        for family in ("-4", "-6"):
            listed = self._ip("-j", family, "route", "show", "proto", PROTO)
            if listed.returncode != 0 or not listed.stdout.strip():
                continue  # e.g. IPv6 disabled on this node: no routes of that family
            try:
                routes = json.loads(listed.stdout)
                found.update((route["dst"], route.get("gateway", "")) for route in routes)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise RouteError(f"ip {family} route show: unreadable answer ({type(exc).__name__}: {exc})") \
                    from None
        return found

    def sync(self, desired: Mapping[IPNetwork, IPAddress]) -> list[str]:
        """Add, replace and remove our routes; the changes made, as `ip route` words."""
        want = {str(cidr): str(via) for cidr, via in desired.items()}
        have = self.current()
        changes = []
        for dst, via in sorted(want.items()):
            if have.get(dst) != via:
                done = self._ip("route", "replace", dst, "via", via, "proto", PROTO)
                if done.returncode != 0:
                    error = done.stderr.strip()
                    level = logging.DEBUG if self._refused.get(dst) == error else logging.WARNING
                    self._refused[dst] = error  # said once, not at every periodic check
                    log.log(level, "cannot add route", extra={"dst": dst, "via": via, "error": error})
                    continue
                self._refused.pop(dst, None)
                changes.append(f"replace {dst} via {via}")
        for dst in sorted(set(have) - set(want)):
            self._ip("route", "del", dst, "proto", PROTO)
            changes.append(f"del {dst}")
        if changes:
            log.info("routes", extra={"changes": changes})
        return changes
