"""Field-level checks that mirror the API server's (k8s.io/apimachinery validation).

Each check returns None when the value is fine, else a message in the API server's words.
Patterns match the whole value (`fullmatch`): Go's regexp `$` is the end of the text, Python's
also matches before a final newline, so `re.match` with `…$` took "web\n" for a valid name (and
nft then refused the ruleset it was written into).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

from netpol.model import IPAddress, IPNetwork

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DECIMAL_OCTETS = re.compile(r"[0-9.]+")


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def check_dns1123_label(value: str) -> str | None:
    if len(value) > 63:
        return f"{value!r}: must be no more than 63 characters"
    if not _DNS1123_LABEL.fullmatch(value):
        return (
            f"{value!r}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
            "characters or '-', and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def check_dns1123_subdomain(value: str) -> str | None:
    if len(value) > 253:
        return f"{value!r}: must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return (
            f"{value!r}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def check_label_key(key: str) -> str | None:
    """A qualified name: optional DNS-subdomain prefix and '/', then a name of ≤ 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"{key!r}: prefix part must be non-empty"
        problem = check_dns1123_subdomain(prefix)
        if problem:
            return f"{key!r}: prefix part {problem}"
    if not name:
        return f"{key!r}: name part must be non-empty"
    if len(name) > 63:
        return f"{key!r}: name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"{key!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def check_label_value(value: str) -> str | None:
    if len(value) > 63:
        return f"{value!r}: must be no more than 63 characters"
    if not _LABEL_VALUE.fullmatch(value):
        return (
            f"{value!r}: a valid label must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def check_port_name(value: str) -> str | None:
    """IANA_SVC_NAME (RFC 6335): ≤ 15 characters, a-z0-9 and '-', one letter, no '--'."""
    if len(value) > 15:
        return f"{value!r}: must be no more than 15 characters"
    if not _IANA_SVC_NAME.fullmatch(value):
        return (
            f"{value!r}: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), "
            "and must not start or end with a hyphen"
        )
    if "--" in value:
        return f"{value!r}: must not contain consecutive hyphens"
    if not any(c.isalpha() for c in value):
        return f"{value!r}: must contain at least one letter (a-z)"
    return None


def check_port_number(value: int) -> str | None:
    if not 1 <= value <= 65535:
        return f"{value}: must be between 1 and 65535, inclusive"
    return None


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def parse_ip(value: str) -> IPAddress | str:
    """The address, or a message. Leading zeros and IPv6 zones are rejected as Go's parser does."""
    try:  # a strict dotted quad (no leading zeros either): the common case, 4x faster this way
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
    except (OSError, ValueError):
        return parse_ip_by_rules(value)


def parse_ip_by_rules(value: str) -> IPAddress | str:
    """`parse_ip` without its IPv4 shortcut (and without its cache)."""
    if "%" in value:
        return f"{value!r}: must be a valid IP address without a zone (e.g. 10.9.8.7 or 2001:db8::ffff)"
    if _DECIMAL_OCTETS.fullmatch(value) and any(
        len(o) > 1 and o.startswith("0") for o in value.split(".")
    ):
        return f"{value!r}: must not have leading zeros in an IPv4 octet"
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


@functools.lru_cache(maxsize=1 << 16)  # labels, names and addresses recur across objects
def parse_cidr(value: str) -> IPNetwork | str:
    """The network (host bits cleared, as Go's ParseCIDR returns it), or a message."""
    address, slash, prefix = value.partition("/")
    decimal = prefix.isascii() and prefix.isdigit()  # str.isdigit alone takes "²"
    if not slash or not decimal or (len(prefix) > 1 and prefix.startswith("0")):
        return f"{value!r}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    ip = parse_ip(address)
    if isinstance(ip, str):
        return f"{value!r}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def check_masked_cidr(text: str, network: IPNetwork) -> str | None:
    """A ClusterNetworkPolicy CIDR (v1beta1, v1alpha2): its host bits must be zero
    (`cidr(self) == cidr(self).masked()`), where a NetworkPolicy's ipBlock allows them."""
    if ipaddress.ip_address(text.partition("/")[0]) != network.network_address:
        return f"{text!r}: host bits set: the network is {network} (Invalid CIDR format provided)"
    return None
