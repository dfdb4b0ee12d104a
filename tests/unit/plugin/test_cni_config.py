"""netpol-cni's pure parts, no root needed: the JSON codec built on `_json` alone behaves like
the `json` package, and the config loader turns every bad field into a CniError that names it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netpol_cni.config import load_config, load_invocation
from netpol_cni.errors import CniError
from netpol_cni.jsonio import dumps, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@given(json_values)
def test_dumps_is_json_dumps_compact(value):
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


@given(json_values, st.sampled_from(["", " ", "\n\t "]))
def test_loads_reads_what_json_writes(value, pad):
    assert loads(pad + json.dumps(value, indent=1) + pad) == value


@pytest.mark.parametrize("text", ["", "{", "[1,]", "[1] 2", "NaN", "{\"a\": Infinity}", "tru"])
def test_loads_refuses_what_is_not_strict_json(text):
    with pytest.raises(ValueError):
        loads(text)


def test_dumps_refuses_what_json_cannot_encode():
    with pytest.raises(TypeError):
        dumps({"a": object()})


BASE = {"cniVersion": "1.1.0", "name": "net", "type": "netpol-cni", "ipam": {"type": "host-local"}}


def test_defaults_and_runtime_config():
    conf = load_config(json.dumps(dict(BASE, runtimeConfig={"mac": "02:00:00:00:00:01", "portMappings": []},
                                       capabilities={"mac": True}, args={"cni": {}})))
    assert (conf.bridge, conf.is_gateway, conf.mtu, conf.hairpin_mode) == ("cni0", False, 0, False)
    assert conf.mac == "02:00:00:00:00:01"
    assert load_config(json.dumps(dict(BASE, isDefaultGateway=True))).is_gateway  # implies it


@pytest.mark.parametrize(("fields", "code", "message"), [
    ({"mtu": 40}, 7, "mtu: 40 is below the minimum of 68"),
    ({"mtu": True}, 7, "mtu: expected an integer, got a boolean"),
    ({"name": "bad name"}, 7, "name: 'bad name' must start"),
    ({"dataDir": "relative"}, 7, "dataDir: 'relative' is not an absolute path"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/8", "gateway": "10.0.0.300"}]]}}, 7,
     "ipam.ranges[0][0].gateway: '10.0.0.300' is not an IP address"),
    ({"ipam": {"type": "host-local", "ranges": "10.0.0.0/8"}}, 7, "ipam.ranges: expected a list"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/\u00b2"}]]}}, 7,
     "ipam.ranges[0][0].subnet: '10.0.0.0/\u00b2' is not a CIDR"),  # a digit to isdigit(), not to int()
    ({"ipam": {"type": "../bin/sh"}}, 7, "ipam.type"),
    ({"prevResult": []}, 7, "prevResult: expected an object, got a list"),
    ({"cniVersion": 1}, 7, "cniVersion: expected a string, got a number"),
])
def test_a_bad_field_is_named(fields, code, message):
    with pytest.raises(CniError) as error:
        load_config(json.dumps(dict(BASE, **fields)))
    assert error.value.code == code and message in error.value.msg


def test_gc_needs_valid_attachments_and_reads_them():
    with pytest.raises(CniError, match="cni.dev/valid-attachments"):
        load_config(json.dumps(BASE), "GC")
    conf = load_config(json.dumps(dict(BASE, **{"cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}]})), "GC")
    assert conf.valid_attachments == [("a", "eth0")]


def test_version_needs_no_config_and_del_needs_no_netns():
    env = {"CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_NETNS": ""}
    assert load_invocation("DEL", json.dumps(BASE), env).netns == ""
    with pytest.raises(CniError, match="CNI_NETNS"):
        load_invocation("ADD", json.dumps(BASE), env)
