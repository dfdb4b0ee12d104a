"""Stdin and the CNI_* environment → a validated `Invocation` (pure: no I/O).

Defaults → decode → validate → merge: every field the plugin reads is checked here, once, and
a wrong one is a `CniError` whose message names it (`bridge: …`, `ipam.ranges[0][1].subnet: …`,
`CNI_IFNAME: …`). Fields that other plugins of a chain consume (`runtimeConfig.portMappings`,
`capabilities`, `cni.dev/*` keys we do not use) are accepted and left alone. Fields the plugin
does not know are ignored, as the reference plugins do.

DEL is lenient where ADD is strict about one attachment's own inputs (CNI_CONTAINERID,
CNI_IFNAME, CNI_ARGS, runtimeConfig.mac): ADD refuses them before it makes anything, so a DEL
with a container ID or ifname that ADD refuses has nothing to undo and succeeds
(`Invocation.refused_by_add`), and a DEL with CNI_ARGS that ADD refuses still releases the
attachment, handing the IPAM plugin no CNI_ARGS (`Invocation.args_error`). A runtime retries a
failing DEL for ever (and the pod never goes), so DEL must not fail on what it does not need."""

from __future__ import annotations

import _socket

from netpol_cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    CniError,
)
from netpol_cni.jsonio import loads
from netpol_cni.store import NAME_MAX, fits, record_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

CURRENT_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
DEFAULT_BRIDGE = "cni0"
DEFAULT_DATA_DIR = "/var/lib/cni/netpol-cni"
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
_IFNAMSIZ = 15
_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")
_NEEDS_CONTAINER = ("ADD", "DEL", "CHECK")


class NetConf:
    """The network configuration, as the plugin uses it."""

    __slots__ = ("bridge", "cni_version", "data_dir", "dns", "hairpin_mode", "ipam", "is_default_gateway",
                 "is_gateway", "mac", "mtu", "name", "prev_result", "raw", "valid_attachments")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw  # passed on, unchanged, to the IPAM plugin
        self.cni_version: str = raw["cniVersion"]
        self.name: str = raw["name"]
        self.bridge: str = DEFAULT_BRIDGE
        self.is_gateway = False
        self.is_default_gateway = False
        self.mtu = 0
        self.hairpin_mode = False
        self.mac = ""
        self.ipam: dict[str, Any] = {}
        self.dns: dict[str, Any] | None = None
        self.prev_result: dict[str, Any] | None = None
        self.data_dir = DEFAULT_DATA_DIR
        self.valid_attachments: list[tuple[str, str]] | None = None


class Invocation:
    """One run of the plugin: the command, the CNI_* variables and the config; `env`, the whole
    environment it was called with (what a delegated plugin is given)."""

    __slots__ = ("args", "args_error", "cni_path", "command", "conf", "container_id", "env", "host_veth",
                 "ifname", "netns", "refused_by_add")

    def __init__(self, command: str, conf: NetConf, env: Mapping[str, str]) -> None:
        self.command = command
        self.conf = conf
        self.env = env
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.cni_path = tuple(p for p in env.get("CNI_PATH", "").split(":") if p)
        self.args: dict[str, str] = {}
        self.args_error = ""  # DEL only: why ADD would refuse CNI_ARGS (the IPAM plugin gets none)
        self.refused_by_add = ""  # DEL only: why ADD refuses this attachment (nothing to undo)
        self.host_veth = ""  # ADD only: the host end's name, chosen before the record is claimed


def config_version(stdin: str) -> str:
    """The cniVersion stdin asks for, if it can be read at all (for the error object)."""
    try:
        raw = loads(stdin)
    except ValueError:
        return CURRENT_VERSION
    version = raw.get("cniVersion") if isinstance(raw, dict) else None
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else CURRENT_VERSION


def load_invocation(command: str, stdin: str, env: Mapping[str, str]) -> Invocation:
    """Everything a command needs, validated; CniError naming the field otherwise."""
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND: {command!r} is not one of {', '.join(COMMANDS)}"
                       if command else "CNI_COMMAND: not set")
    conf = load_config(stdin, command)
    inv = Invocation(command, conf, env)
    _check_environment(inv, env)
    return inv


def load_config(stdin: str, command: str = "ADD") -> NetConf:
    try:
        raw = loads(stdin)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, f"network configuration on stdin is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CniError(DECODE_FAILURE, "network configuration on stdin: expected a JSON object")
    version = _string(raw, "cniVersion", required=True)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion: {version!r} is not supported "
                       f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
    name = _string(raw, "name", required=True)
    _check_identifier(name, "name", INVALID_CONFIG)
    conf = NetConf(raw)
    conf.bridge = _string(raw, "bridge") or DEFAULT_BRIDGE
    _check_ifname(conf.bridge, "bridge", INVALID_CONFIG)
    conf.is_default_gateway = _bool(raw, "isDefaultGateway")
    conf.is_gateway = _bool(raw, "isGateway") or conf.is_default_gateway
    conf.hairpin_mode = _bool(raw, "hairpinMode")
    conf.mtu = _integer(raw, "mtu", 0, 65535)
    if conf.mtu and conf.mtu < 68:
        raise CniError(INVALID_CONFIG, f"mtu: {conf.mtu} is below the minimum of 68")
    conf.data_dir = _string(raw, "dataDir") or DEFAULT_DATA_DIR
    if not conf.data_dir.startswith("/"):
        raise CniError(INVALID_CONFIG, f"dataDir: {conf.data_dir!r} is not an absolute path")
    conf.dns = _object(raw, "dns")
    conf.prev_result = _object(raw, "prevResult")
    if command == "CHECK" and conf.prev_result is None:
        raise CniError(INVALID_CONFIG, "prevResult: required for CHECK")
    ipam = _object(raw, "ipam")
    if ipam is None:
        if command in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
            raise CniError(INVALID_CONFIG, "ipam: missing (an object naming the IPAM plugin in ipam.type)")
        ipam = {}
    else:
        _check_ipam(ipam)
    conf.ipam = ipam
    runtime = _object(raw, "runtimeConfig") or {}
    if command == "ADD":  # only ADD uses it (and a DEL must not fail on what ADD refused)
        # capability "mac"; merged last: it wins
        conf.mac = _string(runtime, "mac", where="runtimeConfig.mac")
        if conf.mac:
            _check_mac(conf.mac, "runtimeConfig.mac")
    if command == "GC":
        conf.valid_attachments = _attachments(raw)
    return conf


# ── the environment ───────────────────────────────────────────────────────────────────────


def _check_environment(inv: Invocation, env: Mapping[str, str]) -> None:
    if inv.command in _NEEDS_CONTAINER:
        try:
            _check_attachment(inv.container_id, inv.ifname)
        except CniError as exc:
            if inv.command != "DEL":
                raise
            inv.refused_by_add = exc.msg
            return  # nothing to undo: nothing else matters
        if inv.command != "DEL" and not inv.netns:
            raise CniError(INVALID_ENVIRONMENT, "CNI_NETNS: not set")
    if inv.command != "VERSION" and not inv.cni_path:
        raise CniError(INVALID_ENVIRONMENT, "CNI_PATH: not set (the directories to find the IPAM plugin in)")
    try:
        inv.args = _cni_args(env.get("CNI_ARGS", ""))
    except CniError as exc:
        if inv.command != "DEL":
            raise
        inv.args_error = exc.msg


def _check_attachment(container_id: str, ifname: str) -> None:
    """CNI_CONTAINERID and CNI_IFNAME: set, well-formed, and short enough together for the
    attachment's record (`<ID>@<ifname>` is a file name: 255 bytes)."""
    if not container_id:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID: not set")
    _check_identifier(container_id, "CNI_CONTAINERID", INVALID_ENVIRONMENT)
    if not ifname:
        raise CniError(INVALID_ENVIRONMENT, "CNI_IFNAME: not set")
    _check_ifname(ifname, "CNI_IFNAME", INVALID_ENVIRONMENT)
    if not fits(container_id, ifname):
        longest = NAME_MAX - len(record_name("", ifname).encode())
        raise CniError(INVALID_ENVIRONMENT, f"CNI_CONTAINERID: {len(container_id)} characters is too long: "
                       f"with CNI_IFNAME {ifname!r} at most {longest} (the attachment's record "
                       f"'<CNI_CONTAINERID>@<CNI_IFNAME>' is a file name of at most {NAME_MAX} bytes)")


def _cni_args(text: str) -> dict[str, str]:
    """`K=V;K=V`, exactly as libcni's LoadArgs reads it (which the IPAM plugins use): every
    `;`-separated piece, an empty one included, has exactly one `=` and a key."""
    args: dict[str, str] = {}
    if not text:
        return args
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or not key or "=" in value:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not KEY=VALUE (pairs separated by "
                           "';', one '=' each, as libcni reads them)")
        args[key] = value
    return args


# ── field checks ──────────────────────────────────────────────────────────────────────────


def _string(raw: dict[str, Any], key: str, required: bool = False, where: str = "") -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise CniError(INVALID_CONFIG, f"{where or key}: missing")
        return ""
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"{where or key}: expected a string, got {_kind(value)}")
    return value


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise CniError(INVALID_CONFIG, f"{key}: expected true or false, got {_kind(value)}")
    return value


def _integer(raw: dict[str, Any], key: str, low: int, high: int) -> int:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CniError(INVALID_CONFIG, f"{key}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise CniError(INVALID_CONFIG, f"{key}: {value} is outside {low}..{high}")
    return value


def _object(raw: dict[str, Any], key: str, where: str = "") -> dict[str, Any] | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, f"{where or key}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_identifier(value: str, where: str, code: int) -> None:
    if not value or value[0] not in _ID_FIRST or not set(value) <= _ID_REST:
        raise CniError(code, f"{where}: {value!r} must start with a letter or digit and contain only "
                       "letters, digits, '_', '.' and '-'")


def _check_ifname(value: str, where: str, code: int) -> None:
    if not value or len(value.encode()) > _IFNAMSIZ or value in (".", "..") or any(
            c in value for c in "/: \t\n\r\v\f"):
        raise CniError(code, f"{where}: {value!r} is not a valid interface name "
                       f"(1-{_IFNAMSIZ} bytes, no '/', ':' or whitespace)")


def _check_mac(value: str, where: str) -> None:
    parts = value.split(":")
    hex_digits = "0123456789abcdefABCDEF"
    if len(parts) != 6 or not all(len(p) == 2 and all(c in hex_digits for c in p) for p in parts):
        raise CniError(INVALID_CONFIG, f"{where}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")


def _check_ipam(ipam: dict[str, Any]) -> None:
    kind = _string(ipam, "type", required=True, where="ipam.type")
    if not kind or "/" in kind:
        raise CniError(INVALID_CONFIG, f"ipam.type: {kind!r} is not a plugin name")
    if "subnet" in ipam:
        check_cidr(_string(ipam, "subnet", where="ipam.subnet"), "ipam.subnet")
    ranges = ipam.get("ranges")
    if ranges is None:
        return
    if not isinstance(ranges, list):
        raise CniError(INVALID_CONFIG, f"ipam.ranges: expected a list of range sets, got {_kind(ranges)}")
    for i, range_set in enumerate(ranges):
        if not isinstance(range_set, list):
            raise CniError(INVALID_CONFIG,
                           f"ipam.ranges[{i}]: expected a list of ranges, got {_kind(range_set)}")
        for j, one in enumerate(range_set):
            where = f"ipam.ranges[{i}][{j}]"
            if not isinstance(one, dict):
                raise CniError(INVALID_CONFIG, f"{where}: expected an object, got {_kind(one)}")
            check_cidr(_string(one, "subnet", required=True, where=f"{where}.subnet"), f"{where}.subnet")
            for key in ("rangeStart", "rangeEnd", "gateway"):
                if key in one:
                    check_ip(_string(one, key, where=f"{where}.{key}"), f"{where}.{key}")


def check_ip(text: str, where: str) -> int:
    """The address family of `text`; CniError naming `where` when it is not an address."""
    family = _socket.AF_INET6 if ":" in text else _socket.AF_INET
    try:
        _socket.inet_pton(family, text)
    except (OSError, ValueError):
        raise CniError(INVALID_CONFIG, f"{where}: {text!r} is not an IP address") from None
    return family


def check_cidr(text: str, where: str) -> tuple[str, int]:
    """(address, prefix length) of `text`; CniError naming `where` when it is not a CIDR."""
    ip, sep, prefix = text.partition("/")
    if not sep or not (prefix.isascii() and prefix.isdigit()):
        raise CniError(INVALID_CONFIG, f"{where}: {text!r} is not a CIDR (address/prefix)")
    family = check_ip(ip, where)
    bits = 128 if family == _socket.AF_INET6 else 32
    if int(prefix) > bits:
        raise CniError(INVALID_CONFIG, f"{where}: {text!r}: the prefix length is more than {bits}")
    return ip, int(prefix)


def _attachments(raw: dict[str, Any]) -> list[tuple[str, str]]:
    value = raw.get(VALID_ATTACHMENTS)
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, f"{VALID_ATTACHMENTS}: expected a list of "
                       "{containerID, ifname} (required for GC)")
    out = []
    for i, item in enumerate(value):
        where = f"{VALID_ATTACHMENTS}[{i}]"
        if not isinstance(item, dict):
            raise CniError(INVALID_CONFIG, f"{where}: expected an object, got {_kind(item)}")
        out.append((_string(item, "containerID", required=True, where=f"{where}.containerID"),
                    _string(item, "ifname", required=True, where=f"{where}.ifname")))
    return out
