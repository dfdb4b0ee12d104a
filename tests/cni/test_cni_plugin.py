"""netpol-cni against the real kernel and the real IPAM plugin (Debian's host-local): ADD /
CHECK / DEL / STATUS / GC / VERSION in network namespaces, the result's shape, connectivity
with real packets, idempotent DEL, CHECK catching drift, GC, rollback of a failed ADD, 20
parallel ADDs racing to create the bridge, and bad input. Nothing is created outside the
namespaces and the temporary directory each test makes (see cni_runtime)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cni.cni_runtime import CniNode, have_reference_plugins
from tests.conftest import REPO

PLUGIN_DIR = REPO / "plugin"

needs_cni = pytest.mark.skipif(os.geteuid() != 0 or not have_reference_plugins() or shutil.which("ip") is None,
                               reason="needs root and containernetworking-plugins (make test installs them)")
pytestmark = [pytest.mark.kernel, needs_cni]


def ipam_files(node: CniNode) -> list[str]:
    directory = node.ipam_dir / "testnet"
    return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit() or ":" in p.name) \
        if directory.exists() else []


def veths(node: CniNode) -> list[str]:
    return sorted(name for name, link in node.links().items() if link.get("linkinfo", {}).get("info_kind") == "veth")


# ── ADD, CHECK, DEL ─────────────────────────────────────────────────────────────────────────


def test_add_wires_the_pod_to_the_bridge_and_reports_it_as_the_spec_says(node):
    pod = node.pod()
    result = node.add(pod, conf=node.conf(isDefaultGateway=True))
    bridge, host, inside = result["interfaces"]
    assert result["cniVersion"] == "1.1.0"
    assert bridge["name"] == "cni0" and "sandbox" not in bridge
    assert host["name"].startswith("veth") and "sandbox" not in host  # chained plugins look for it so
    assert inside == {"name": "eth0", "mac": inside["mac"], "sandbox": pod}
    assert result["ips"] == [{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 2}]
    assert {"dst": "0.0.0.0/0", "gw": "10.88.0.1"} in result["routes"]

    links = node.links()
    assert links[host["name"]]["master"] == "cni0" and "UP" in links[host["name"]]["flags"]
    assert links["cni0"]["linkinfo"]["info_kind"] == "bridge"
    assert node.addresses("cni0") == {"10.88.0.1/24"}
    assert node.addresses("eth0", netns=pod) == {"10.88.0.2/24"}
    pod_links = node.links(netns=pod)
    assert pod_links["eth0"]["address"] == inside["mac"] and "UP" in pod_links["eth0"]["flags"]
    assert "default via 10.88.0.1 dev eth0" in node.ip("route", netns=pod)
    # what the compiled ruleset relies on
    assert node.sysctl("net.ipv4.ip_forward") == "1"
    assert node.sysctl("net.bridge.bridge-nf-call-iptables") == "1"
    assert node.sysctl("net.bridge.bridge-nf-call-ip6tables") == "1"


def test_pods_reach_each_other_and_the_gateway_with_real_packets(node):
    conf = node.conf(subnet="10.88.0.0/24,fd88::/64", isDefaultGateway=True)
    a, b = node.pod(), node.pod()
    ra = node.add(a, "ctr-a", conf=conf)
    rb = node.add(b, "ctr-b", conf=conf)
    b4, b6 = (ip["address"].split("/")[0] for ip in rb["ips"])
    assert node.tcp_reaches(a, b, b4) and node.tcp_reaches(a, b, b6)
    assert node.tcp_reaches(b, node.netns, "10.88.0.1") and node.tcp_reaches(b, node.netns, "fd88::1")
    assert node.tcp_reaches(node.netns, a, ra["ips"][0]["address"].split("/")[0])


def test_check_passes_on_what_add_made_and_del_leaves_nothing(node):
    pod = node.pod()
    conf = node.conf(subnet="10.88.0.0/24,fd88::/64", isDefaultGateway=True)
    result = node.add(pod, conf=conf)
    assert node.call("CHECK", dict(conf, prevResult=result), netns=pod).code == 0
    assert len(ipam_files(node)) == 2 and len(veths(node)) == 1
    assert list((node.state_dir / "testnet").iterdir())

    deleted = node.call("DEL", dict(conf, prevResult=result), netns=pod)
    assert deleted.code == 0 and deleted.stdout == ""
    assert ipam_files(node) == [] and veths(node) == []
    assert "eth0" not in node.links(netns=pod)
    assert node.ip("route", netns=pod) == "" and node.ip("-6", "route", netns=pod) == ""
    assert list((node.state_dir / "testnet").iterdir()) == []


def test_a_1_0_0_config_works_and_the_result_speaks_1_0_0(node):
    result = node.add(node.pod(), conf=node.conf(version="1.0.0"))
    assert result["cniVersion"] == "1.0.0"


def test_del_is_idempotent_without_netns_without_prev_result_and_when_repeated(node):
    conf = node.conf()
    pod = node.pod()
    node.add(pod, conf=conf)
    assert node.call("DEL", conf, netns=pod).code == 0  # no prevResult
    assert node.call("DEL", conf, netns=pod).code == 0  # again
    assert node.call("DEL", conf, netns="").code == 0  # empty CNI_NETNS (kubernetes#43014)

    other = node.pod()
    node.add(other, "ctr-2", conf=conf)
    subprocess.run(["ip", "netns", "delete", other.removeprefix("/run/netns/")], check=True)
    gone = node.call("DEL", conf, "ctr-2", netns=other)  # the namespace is already gone
    assert gone.code == 0, gone
    assert ipam_files(node) == [] and veths(node) == []


@pytest.mark.parametrize("drift", ["missing interface", "wrong address", "wrong master", "wrong mac"])
def test_check_reports_drift_from_prev_result(node, drift):
    pod = node.pod()
    conf = node.conf()
    result = node.add(pod, conf=conf)
    host = result["interfaces"][1]["name"]
    if drift == "missing interface":
        node.ip("link", "del", "eth0", netns=pod)
        expected = "'eth0' is missing"
    elif drift == "wrong address":
        node.ip("addr", "flush", "dev", "eth0", netns=pod)
        expected = "address 10.88.0.2/24 is missing"
    elif drift == "wrong master":
        node.ip("link", "set", host, "nomaster")
        expected = "not attached to bridge 'cni0'"
    else:
        node.ip("link", "set", "eth0", "address", "02:00:00:00:00:01", netns=pod)
        expected = "has MAC 02:00:00:00:00:01"
    check = node.call("CHECK", dict(conf, prevResult=result), netns=pod)
    assert check.code == 1, check
    error = check.result
    assert error["code"] == 100 and expected in error["msg"], error


def test_check_without_prev_result_or_with_the_netns_gone(node):
    pod = node.pod()
    conf = node.conf()
    result = node.add(pod, conf=conf)
    assert node.call("CHECK", conf, netns=pod).result["msg"] == "prevResult: required for CHECK"
    subprocess.run(["ip", "netns", "delete", pod.removeprefix("/run/netns/")], check=True)
    gone = node.call("CHECK", dict(conf, prevResult=result), netns=pod).result
    assert gone["code"] == 3 and "CNI_NETNS" in gone["msg"]


# ── the node ────────────────────────────────────────────────────────────────────────────────


def test_hairpin_mtu_and_a_requested_mac_are_applied(node):
    pod = node.pod()
    result = node.add(pod, conf=node.conf(hairpinMode=True, mtu=1400,
                                          runtimeConfig={"mac": "02:42:ac:11:00:07"}))
    host = result["interfaces"][1]["name"]
    links = node.links()
    assert links[host]["mtu"] == 1400 and links[host]["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert node.links(netns=pod)["eth0"]["address"] == "02:42:ac:11:00:07" == result["interfaces"][2]["mac"]


def test_an_interface_named_like_the_bridge_that_is_no_bridge_is_a_config_error(node):
    node.ip("link", "add", "cni0", "type", "veth", "peer", "name", "cni0-peer")
    call = node.call("ADD", node.conf(), netns=node.pod())
    assert call.code == 1 and call.result["code"] == 7 and "bridge: 'cni0'" in call.result["msg"]
    assert ipam_files(node) == []  # nothing allocated: the bridge is checked first


@pytest.mark.parametrize("round_", range(8))
def test_twenty_parallel_adds_race_to_create_the_bridge_and_all_succeed(node, round_):
    pods = [node.pod() for _ in range(20)]
    assert "cni0" not in node.links()
    with ThreadPoolExecutor(max_workers=20) as pool:
        calls = list(pool.map(lambda i: node.call("ADD", node.conf(), f"ctr-{i}", pods[i]), range(20)))
    assert [c.code for c in calls] == [0] * 20, [c for c in calls if c.code]
    addresses = [c.result["ips"][0]["address"] for c in calls]
    assert len(set(addresses)) == 20
    links = node.links()
    assert sum(1 for link in links.values() if link.get("master") == "cni0") == 20
    assert node.addresses("cni0") == {"10.88.0.1/24"}


# ── rollback ────────────────────────────────────────────────────────────────────────────────


def test_a_failed_add_rolls_back_the_veth_the_address_and_the_record(node):
    pod = node.pod()
    # IPAM hands out a route whose gateway is not on any link: adding it fails after the veth,
    # the addresses and the IPAM allocation exist
    conf = node.conf()
    conf["ipam"]["routes"] = [{"dst": "192.168.77.0/24", "gw": "10.99.99.1"}]
    call = node.call("ADD", conf, netns=pod)
    assert call.code == 1 and call.result["code"] in (5, 999), call
    assert veths(node) == [] and ipam_files(node) == []
    assert "eth0" not in node.links(netns=pod)
    assert not (node.state_dir / "testnet").exists() or list((node.state_dir / "testnet").iterdir()) == []


def test_an_existing_pod_interface_fails_the_add_without_leaking_the_allocation(node):
    pod = node.pod()
    node.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer", netns=pod)
    call = node.call("ADD", node.conf(), netns=pod)
    assert call.result["code"] == 4 and "CNI_IFNAME" in call.result["msg"]
    assert ipam_files(node) == [] and veths(node) == []


# ── STATUS, GC, VERSION ─────────────────────────────────────────────────────────────────────


def test_version_lists_what_we_speak(node):
    call = node.call("VERSION", "")
    assert call.code == 0 and call.result == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}


def test_status_is_ready_and_says_why_not(node):
    ready = node.call("STATUS", node.conf())
    assert ready.code == 0 and ready.stdout == ""
    conf = node.conf()
    conf["ipam"]["type"] = "no-such-ipam"
    unavailable = node.call("STATUS", conf)
    assert unavailable.code == 1 and unavailable.result["code"] == 50
    assert "ipam.type" in unavailable.result["msg"]


def test_gc_releases_what_is_not_in_valid_attachments(node):
    conf = node.conf()
    pods = {f"ctr-{i}": node.pod() for i in range(3)}
    results = {cid: node.add(pod, cid, conf=conf) for cid, pod in pods.items()}
    keep = {"containerID": "ctr-1", "ifname": "eth0"}
    call = node.call("GC", dict(conf, **{"cni.dev/valid-attachments": [keep]}))
    assert call.code == 0, call
    assert ipam_files(node) == ["10.88.0.3"]  # ctr-1's address
    assert veths(node) == [results["ctr-1"]["interfaces"][1]["name"]]
    assert [p.name for p in (node.state_dir / "testnet").iterdir()] == ["ctr-1@eth0"]
    assert node.call("CHECK", dict(conf, prevResult=results["ctr-1"]), "ctr-1", pods["ctr-1"]).code == 0


# ── bad input: the right code, the field named, nothing half-made ───────────────────────────


def _bad(node, conf=None, **env):
    return node.call("ADD", node.conf() if conf is None else conf, netns=node.pod(),
                     env={k: v for k, v in env.items()})


@pytest.mark.parametrize(("change", "code", "names"), [
    (lambda c: c.pop("name"), 7, "name: missing"),
    (lambda c: c.update(mtu="1500"), 7, "mtu: expected an integer"),
    (lambda c: c.update(isGateway="yes"), 7, "isGateway: expected true or false"),
    (lambda c: c.update(bridge="a-bridge-name-too-long"), 7, "bridge:"),
    (lambda c: c.update(cniVersion="0.3.1"), 1, "cniVersion: '0.3.1' is not supported"),
    (lambda c: c.update(cniVersion="2.0.0"), 1, "cniVersion"),
    (lambda c: c["ipam"]["ranges"][0][0].update(subnet="10.0.0.0/33"), 7, "ipam.ranges[0][0].subnet"),
    (lambda c: c["ipam"].update(subnet="not-a-subnet"), 7, "ipam.subnet"),
    (lambda c: c["ipam"].update(type="no-such-ipam"), 7, "ipam.type"),
    (lambda c: c.pop("ipam"), 7, "ipam: missing"),
    (lambda c: c.update(runtimeConfig={"mac": "zz"}), 7, "runtimeConfig.mac"),
])
def test_a_bad_config_gets_the_right_code_and_names_the_field(node, change, code, names):
    conf = node.conf()
    change(conf)
    call = _bad(node, conf)
    assert call.code == 1 and "Traceback" not in call.stderr
    assert call.result["code"] == code and names in call.result["msg"], call.result
    assert ipam_files(node) == [] and veths(node) == []


@pytest.mark.parametrize(("env", "code", "names"), [
    ({"CNI_COMMAND": ""}, 4, "CNI_COMMAND"),
    ({"CNI_COMMAND": "FROB"}, 4, "CNI_COMMAND"),
    ({"CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "-bad"}, 4, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": ""}, 4, "CNI_IFNAME"),
    ({"CNI_IFNAME": "x" * 16}, 4, "CNI_IFNAME"),
    ({"CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ({"CNI_NETNS": "/run/netns/netpol-test-cni-absent"}, 4, "CNI_NETNS"),
    ({"CNI_NETNS": "/etc/hostname"}, 4, "CNI_NETNS"),
    ({"CNI_PATH": ""}, 4, "CNI_PATH"),
    ({"CNI_ARGS": "K8S_POD_NAME"}, 4, "CNI_ARGS"),
])
def test_a_bad_environment_gets_code_4_and_names_the_variable(node, env, code, names):
    call = _bad(node, **env)
    assert call.code == 1 and call.result["code"] == code and names in call.result["msg"], call.result
    assert ipam_files(node) == [] and veths(node) == []


@pytest.mark.parametrize("stdin", ["", "{", "[1, 2]", "\"text\""])
def test_stdin_that_is_not_a_config_object_is_a_decode_error(node, stdin):
    call = _bad(node, stdin)
    assert call.result["code"] == 6 and call.result["cniVersion"] == "1.1.0"


def test_cni_args_are_accepted(node):
    pod = node.pod()
    call = node.call("ADD", node.conf(), netns=pod,
                     env={"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"})
    assert call.code == 0, call


# ── start-up: the hot path imports the standard library's C pieces only ───────────────────


# ── chained: reference plugins consume our result as prevResult ────────────────────────────


def test_reference_plugins_chain_after_ours_and_del_unwinds_them(node):
    """tuning, bandwidth, firewall and portmap (Debian's containernetworking-plugins) find the
    host veth (no sandbox) and the pod's addresses (ips[].interface) in our result; ADD in
    order, CHECK, DEL in reverse; a port mapping carries real packets."""
    ours = {k: v for k, v in node.conf(version="1.0.0").items() if k not in ("name", "cniVersion")}
    conflist = {"cniVersion": "1.0.0", "name": "testnet", "plugins": [
        ours,
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}},
        {"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
         "egressRate": 100_000_000, "egressBurst": 1_000_000},
        {"type": "firewall", "backend": "iptables"},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True,
         "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}},
    ]}
    pod = node.pod()
    result = node.run_list("ADD", conflist, "ctr-chain", pod)
    assert result is not None
    host = result["interfaces"][1]["name"]
    pod_ip = result["ips"][0]["address"].split("/")[0]

    assert node.sysctl("net.core.somaxconn", netns=pod) == "512"  # tuning, inside the pod
    qdiscs = subprocess.run(["ip", "netns", "exec", node.netns, "tc", "qdisc", "show", "dev", host],
                            capture_output=True, text=True, check=True).stdout
    assert "tbf" in qdiscs and "ingress" in qdiscs  # bandwidth, on our host veth
    assert any(name.startswith("bwp") for name in node.links())  # its ifb device
    assert pod_ip in node.exec(node.netns, "iptables", "-S").stdout  # firewall
    assert "18080" in node.exec(node.netns, "iptables", "-t", "nat", "-S").stdout  # portmap
    assert node.tcp_reaches(node.netns, pod, pod_ip, 8080, via=("10.88.0.1", 18080))

    # portmap 1.1.1's CHECK fails for IPv4-only pods (containernetworking/plugins#819): not ours
    without_portmap = dict(conflist, plugins=conflist["plugins"][:-1])
    node.run_list("CHECK", without_portmap, "ctr-chain", pod, prev_result=result)

    node.run_list("DEL", conflist, "ctr-chain", pod, prev_result=result)
    assert pod_ip not in node.exec(node.netns, "iptables", "-S").stdout
    assert "18080" not in node.exec(node.netns, "iptables", "-t", "nat", "-S").stdout
    assert not any(name.startswith("bwp") for name in node.links()) and veths(node) == []
    assert ipam_files(node) == []


# ── cnitool: the CNI project's own libcni client (built by .ci/build-cnitool) ──────────────

CNITOOL = shutil.which("cnitool")


@pytest.mark.skipif(CNITOOL is None, reason="cnitool not installed (.ci/build-cnitool builds it)")
@pytest.mark.parametrize("chained", [False, True], ids=["alone", "with-tuning-and-firewall"])
def test_cnitool_adds_checks_and_deletes_through_libcni(node, tmp_path, chained):
    """libcni builds the stdin (name, cniVersion, runtimeConfig from CAP_ARGS), caches our
    result under /var/lib/cni/results and hands it back as prevResult to CHECK and DEL."""
    assert CNITOOL is not None
    network = f"netpol-test-{os.getpid()}-{int(chained)}"
    ours = {k: v for k, v in node.conf(version="1.0.0", isDefaultGateway=True).items()
            if k not in ("name", "cniVersion")}
    ours["capabilities"] = {"mac": True}  # libcni copies CAP_ARGS' "mac" into our runtimeConfig
    plugins = [ours]
    if chained:  # (not portmap: its 1.1.1 CHECK is broken, containernetworking/plugins#819)
        plugins += [{"type": "tuning", "sysctl": {"net.core.somaxconn": "600"}},
                    {"type": "firewall", "backend": "iptables"}]
    confdir = tmp_path / "net.d"
    confdir.mkdir()
    (confdir / "10-netpol.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": network, "plugins": plugins}))
    pod = node.pod()
    env = {"PATH": os.environ["PATH"], "NETCONFPATH": str(confdir), "CNI_PATH": str(node.bin_dir),
           "CAP_ARGS": json.dumps({"mac": "02:42:0a:58:00:63"})}

    def cnitool(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", node.netns, CNITOOL, command, network, pod],
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    cache = [Path("/var/lib/cni/results") / name for name in os.listdir("/var/lib/cni/results")
             if name.startswith(network)] if Path("/var/lib/cni/results").exists() else []
    assert cache == []
    added = cnitool("add")
    try:
        assert added.returncode == 0, added.stderr + added.stdout
        result = json.loads(added.stdout)
        assert result["interfaces"][2] == {"name": "eth0", "mac": "02:42:0a:58:00:63", "sandbox": pod}
        assert result["ips"][0]["interface"] == 2
        pod_ip = result["ips"][0]["address"].split("/")[0]
        assert node.tcp_reaches(pod, node.netns, "10.88.0.1")
        assert node.tcp_reaches(node.netns, pod, pod_ip)
        if chained:
            assert node.sysctl("net.core.somaxconn", netns=pod) == "600"
            assert pod_ip in node.exec(node.netns, "iptables", "-S").stdout
        checked = cnitool("check")
        assert checked.returncode == 0, checked.stderr + checked.stdout
    finally:
        deleted = cnitool("del")
    assert deleted.returncode == 0, deleted.stderr + deleted.stdout
    assert veths(node) == [] and ipam_files(node) == []
    assert "eth0" not in node.links(netns=pod) and node.ip("route", netns=pod) == ""
    assert not [n for n in os.listdir("/var/lib/cni/results") if n.startswith(network)]


def test_the_bridge_mac_is_pinned_so_pods_keep_their_gateway_when_ports_leave(node):
    """A bridge whose MAC was never set follows its lowest port MAC; when that port's pod goes,
    the gateway's MAC changes under the other pods' neighbour caches and their routed traffic
    is flooded away (seen in the live demo). The plugin pins the bridge's address."""
    conf = node.conf()
    pods = {f"ctr-{i}": node.pod() for i in range(4)}
    for cid, pod in pods.items():
        node.add(pod, cid, conf=conf)
    mac = node.links()["cni0"]["address"]
    assert node.exec(node.netns, "cat", "/sys/class/net/cni0/addr_assign_type").stdout.strip() == "3"  # set
    for cid, pod in pods.items():
        assert node.call("DEL", conf, cid, pod).code == 0
        assert node.links()["cni0"]["address"] == mac
