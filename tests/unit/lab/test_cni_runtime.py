"""The lab's container runtime side of CNI (`netpol.lab.cni_runtime`), as libcni builds a plugin's
stdin: the first configuration in name order, `name` and `cniVersion` from the list,
`runtimeConfig` only for declared capabilities, prevResult chained — and the one deviation,
every state directory moved under the node's root, a plugin whose state it does not know refused.
No kernel: the calls themselves run in tests/image/test_demo_image.py."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from netpol.deploy.cni_install import CONFLIST, conflist_text, render_conflist
from netpol.errors import LabError
from netpol.lab.cni_runtime import NodeRuntime, Sandbox, plugin_config, relocate_state
from netpol.model import Node


def installed(root: Path) -> dict:
    """The conflist install-cni writes for a node with one podCIDR, written where it writes it."""
    conflist = render_conflist(Node("node-a", pod_cidrs=(ipaddress.ip_network("10.244.0.0/24"),)))
    (root / "etc/cni/net.d").mkdir(parents=True)
    (root / "etc/cni/net.d" / CONFLIST).write_text(conflist_text(conflist))
    return conflist


def test_the_installed_conflist_reaches_the_plugin_as_libcni_builds_it_state_under_the_node_root(tmp_path):
    root = tmp_path / "node-a" / "root"
    conflist = installed(root)
    network = NodeRuntime("node-a", root, "np-abcdef-n0").network()
    plugin, = network["plugins"]
    conf = plugin_config(network, plugin, root, {"ips": ["10.244.0.7/24"], "mac": "0a:58:0a:f4:00:07"})
    assert (conf["name"], conf["cniVersion"], conf["type"]) == ("netpol", "1.0.0", "netpol-cni")
    assert conf["runtimeConfig"] == {"mac": "0a:58:0a:f4:00:07"}  # `ips` is not declared: dropped, as libcni does
    assert conf["dataDir"] == str(root / "var/lib/cni/netpol-cni")
    assert conf["ipam"]["dataDir"] == str(root / "var/lib/cni/networks")
    assert conf["ipam"]["ranges"] == conflist["plugins"][0]["ipam"]["ranges"]
    assert json.loads((root / "etc/cni/net.d" / CONFLIST).read_text()) == conflist  # the file stays as written
    assert "prevResult" not in conf and "prevResult" in plugin_config(network, plugin, root, {}, {"ips": []})


def test_a_given_state_directory_moves_under_the_root_too_and_an_unknown_plugin_is_refused(tmp_path):
    moved = relocate_state({"type": "netpol-cni", "dataDir": "/srv/state", "ipam": {"type": "host-local"}}, tmp_path)
    assert (moved["dataDir"], moved["ipam"]["dataDir"]) == (str(tmp_path / "srv/state"),
                                                            str(tmp_path / "var/lib/cni/networks"))
    with pytest.raises(LabError, match="'dhcp'"):
        relocate_state({"type": "netpol-cni", "ipam": {"type": "dhcp"}}, tmp_path)
    with pytest.raises(LabError, match="'bridge'"):
        relocate_state({"type": "bridge"}, tmp_path)


def test_the_network_is_the_first_configuration_in_name_order_a_single_plugin_made_a_list(tmp_path):
    runtime = NodeRuntime("node-a", tmp_path, "np-abcdef-n0")
    with pytest.raises(LabError, match="no CNI configuration in /etc/cni/net.d"):
        runtime.network()
    conf_dir = tmp_path / "etc/cni/net.d"
    conf_dir.mkdir(parents=True)
    (conf_dir / "20-other.conflist").write_text('{"cniVersion": "1.0.0", "name": "other", "plugins": []}')
    (conf_dir / "05-single.conf").write_text('{"cniVersion": "0.4.0", "name": "one", "type": "netpol-cni"}')
    (conf_dir / "00-notes.txt").write_text("not a configuration")
    assert runtime.network() == {"cniVersion": "0.4.0", "name": "one",
                                 "plugins": [{"cniVersion": "0.4.0", "name": "one", "type": "netpol-cni"}]}


def test_a_sandbox_is_named_as_containerd_names_it():
    sandbox = Sandbox("shop", "web-1", "/run/netns/np-abcdef-p0")
    assert len(sandbox.container_id) == 64 and sandbox.container_id == Sandbox("shop", "web-1", "x").container_id
    args = dict(pair.split("=") for pair in sandbox.cni_args.split(";"))
    assert args["IgnoreUnknown"] == "1" and args["K8S_POD_NAMESPACE"] == "shop" and args["K8S_POD_NAME"] == "web-1"
    assert args["K8S_POD_INFRA_CONTAINER_ID"] == sandbox.container_id
