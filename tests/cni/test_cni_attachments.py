"""An attachment's address belongs to it until its DEL or a GC that does not list it — never less,
never for ever (issue 14, items 2, 10 and 11):

* a repeated ADD of a running attachment is refused and frees nothing of it (whatever the IPAM
  plugin answers a repeated ADD: host-local refuses it, others hand back the reservation);
* an ADD killed after the IPAM plugin allocated, before the plugin wrote anything after it,
  leaves a record, so GC frees its address unless `cni.dev/valid-attachments` lists it;
* DEL of an attachment whose CNI_* inputs ADD refuses succeeds: ADD made nothing to undo.

The plugin runs as a runtime runs it, in namespaces each test creates (see cni_runtime)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.cni.cni_runtime import CniNode, have_reference_plugins
from tests.conftest import wait_until

needs_cni = pytest.mark.skipif(os.geteuid() != 0 or not have_reference_plugins() or shutil.which("ip") is None,
                               reason="needs root and containernetworking-plugins (make test installs them)")
pytestmark = [pytest.mark.kernel, needs_cni]


@pytest.fixture
def node(tmp_path):
    cni = CniNode(tmp_path / "cni")
    cni.install_ipam("held-ipam", "held")
    cni.install_ipam("sticky-ipam", "sticky")
    try:
        yield cni
    finally:
        cni.close()


def veths(node: CniNode) -> list[str]:
    return sorted(name for name, link in node.links().items() if link.get("linkinfo", {}).get("info_kind") == "veth")


def labelled(node: CniNode, container_id: str) -> bool:
    """Whether the ADD of `container_id` has labelled its host veth: the last thing it makes
    before it needs the address (the alias names the attachment, for GC)."""
    alias = f"netpol-cni testnet {container_id} eth0"
    return any(link.get("ifalias") == alias for link in node.links().values())


def address_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


# ── item 2: a repeated ADD never frees the running pod's address ───────────────────────────


@pytest.mark.parametrize(("ipam", "retry"), [
    ("host-local", "same netns"),  # the case: refused for eth0, its rollback sent IPAM DEL
    ("host-local", "another netns"),  # host-local refuses the duplicate; the rollback sent IPAM DEL
    ("host-local", "record lost"),  # our record is gone (another dataDir): only host-local knows
    ("sticky-ipam", "same netns"),  # the IPAM hands back the reservation: this ADD did not make it
    ("sticky-ipam", "another netns"),  # … and a second pod would have got the same address
])
def test_a_repeated_add_is_refused_and_keeps_the_running_pods_address(node, ipam, retry):
    conf = node.conf()
    conf["ipam"]["type"] = ipam
    pod = node.pod()
    running = node.add(pod, "ctr-a", conf=conf)
    ip = address_of(running)
    record = (node.state_dir / "testnet" / "ctr-a@eth0").read_text()
    assert json.loads(record)["hostInterface"] == running["interfaces"][1]["name"]  # named before it existed

    again = node.call("ADD", dict(conf, dataDir=str(node.root / "other-state")) if retry == "record lost" else conf,
                      "ctr-a", node.pod() if retry == "another netns" else pod)

    assert again.code == 1, again
    assert node.reservations() == {ip: ("ctr-a", "eth0")}, again
    if retry != "record lost":
        assert again.result["code"] == 4 and "already attached" in again.result["msg"], again.result
        assert (node.state_dir / "testnet" / "ctr-a@eth0").read_text() == record
    assert address_of(node.add(node.pod(), "ctr-b", conf=conf)) != ip
    assert node.call("CHECK", dict(conf, prevResult=running), "ctr-a", pod).code == 0
    assert node.call("DEL", conf, "ctr-a", pod).code == 0
    assert ip not in node.reservations() and "ctr-a@eth0" not in node.records()


def test_a_failed_add_of_a_new_attachment_still_releases_what_it_allocated(node):
    """The other side of item 2: what this ADD did allocate goes (a foreign eth0 is in the way)."""
    pod = node.pod()
    node.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer", netns=pod)
    call = node.call("ADD", node.conf(), "ctr-new", pod)
    assert call.code == 1 and call.result["code"] == 4 and "CNI_IFNAME" in call.result["msg"], call
    assert node.reservations() == {} and node.records() == [] and veths(node) == []
    assert node.add(node.pod(), "ctr-new", conf=node.conf())  # nothing of it is left to refuse it


# ── item 10: GC frees what an ADD killed between allocation and record allocated ─────────────


def test_gc_frees_the_addresses_of_adds_killed_right_after_the_allocation(node, tmp_path):
    """Each killed ADD is SIGKILLed while its IPAM plugin (held-ipam: host-local, then a wait)
    holds the reservation it made and has not answered: the plugin is provably past the
    allocation and before anything it would do with the address (the old code wrote its
    record only then). GC must free every such address that valid-attachments does not list,
    and keep the listed ones."""
    held = tmp_path / "held"
    held.mkdir()
    conf = node.conf()
    holding = node.conf()
    holding["ipam"].update(type="held-ipam", heldDir=str(held))

    live = {f"live-{i}": node.pod() for i in range(3)}
    results = {cid: node.add(pod, cid, conf=conf) for cid, pod in live.items()}
    killed = [f"killed-{i}" for i in range(12)]
    plugins = {cid: node.start("ADD", holding, cid, node.pod()) for cid in killed}
    for cid, plugin in plugins.items():
        report = held / f"{cid}@eth0"
        wait_until(report.exists, f"held-ipam holding {cid}'s reservation")
        wait_until(lambda cid=cid: labelled(node, cid), f"{cid}'s host veth, labelled")
        pids = json.loads(report.read_text())
        assert pids["plugin"] == plugin.pid and pids["code"] == 0, pids  # host-local allocated
        os.kill(plugin.pid, signal.SIGKILL)
        os.kill(pids["ipam"], signal.SIGKILL)
        assert plugin.wait() == -signal.SIGKILL
    owners = sorted(cid for cid, _ in node.reservations().values())
    assert owners == sorted([*live, *killed])  # every killed ADD holds an address nobody answered for

    valid = [*live, "killed-0"]  # a runtime may still count a killed ADD's attachment: it is kept
    gc = node.call("GC", dict(conf, **{"cni.dev/valid-attachments": [
        {"containerID": cid, "ifname": "eth0"} for cid in valid]}))

    assert gc.code == 0, gc
    assert sorted(cid for cid, _ in node.reservations().values()) == sorted(valid)
    assert node.records() == sorted(f"{cid}@eth0" for cid in valid)
    kept = {name for name, link in node.links().items() if link.get("ifalias", "").startswith("netpol-cni ")}
    assert kept == {*(r["interfaces"][1]["name"] for r in results.values()),
                    *(name for name, link in node.links().items()
                      if link.get("ifalias") == "netpol-cni testnet killed-0 eth0")}
    assert len(kept) == len(valid)
    for cid, pod in live.items():
        assert node.call("CHECK", dict(conf, prevResult=results[cid]), cid, pod).code == 0


# ── item 11: DEL of what ADD refuses succeeds (nothing to undo) ─────────────────────────────

LONG_ID = "c" * 251  # with "@eth0", one byte over a file name's 255


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(("env", "change", "names"), [
    ({"CNI_CONTAINERID": LONG_ID}, None, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "c" * 245, "CNI_IFNAME": "net1-long-name"}, None, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "-bad"}, None, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": ""}, None, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": "x" * 16}, None, "CNI_IFNAME"),
    ({"CNI_IFNAME": "a/b"}, None, "CNI_IFNAME"),
    ({"CNI_IFNAME": ""}, None, "CNI_IFNAME"),
    ({"CNI_ARGS": "K8S_POD_NAME"}, None, "CNI_ARGS"),
    ({"CNI_ARGS": "IgnoreUnknown=1;"}, None, "CNI_ARGS"),  # libcni's LoadArgs refuses the empty pair
    ({"CNI_ARGS": "K8S_POD_NAME=a=b"}, None, "CNI_ARGS"),
    ({"CNI_NETNS": "fifo"}, None, "CNI_NETNS"),  # opening it blocked for ever
    ({}, {"runtimeConfig": {"mac": "zz"}}, "runtimeConfig.mac"),
], ids=["id-251", "id-and-ifname-256", "id-dash", "id-empty", "ifname-16", "ifname-slash", "ifname-empty",
        "args-no-equals", "args-empty-pair", "args-two-equals", "netns-fifo", "mac"])
def test_del_succeeds_for_what_add_refuses(node, tmp_path, env, change, names):
    env = {k: _fifo(tmp_path) if v == "fifo" else v for k, v in env.items()}
    conf = dict(node.conf(), **(change or {}))
    node.add(node.pod(), "neighbour")  # the network has records on this node
    before = (node.reservations(), node.records(), veths(node))
    pod = node.pod()

    deleted = node.call("DEL", conf, netns=pod, env=env)  # e.g. the runtime cleaning up a failed ADD
    assert deleted.code == 0, deleted

    added = node.call("ADD", conf, netns=pod, env=env)
    assert added.code == 1 and names in added.result["msg"], added
    assert added.result["code"] == (7 if change else 4), added.result
    assert (node.reservations(), node.records(), veths(node)) == before  # nothing made, nothing left
    assert node.call("DEL", conf, netns=pod, env=env).code == 0


def test_the_longest_container_id_that_fits_a_record_is_an_ordinary_attachment(node):
    longest = "c" * 250  # "<id>@eth0" is 255 bytes
    pod = node.pod()
    result = node.add(pod, longest)
    assert node.records() == [f"{longest}@eth0"]
    assert node.call("CHECK", dict(node.conf(), prevResult=result), longest, pod).code == 0
    assert node.call("DEL", node.conf(), longest, pod).code == 0
    assert node.reservations() == {} and node.records() == [] and veths(node) == []


@pytest.mark.parametrize("args", ["K8S_POD_NAME", "IgnoreUnknown=1;"])
def test_del_with_malformed_cni_args_still_releases_the_attachment(node, args):
    """ADD refuses such CNI_ARGS; if DEL's differ from ADD's, the attachment is real: DEL still
    releases it, and gives the IPAM plugin no CNI_ARGS (host-local refuses them too)."""
    pod = node.pod()
    node.add(pod, "ctr-a", env={"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"})
    deleted = node.call("DEL", node.conf(), "ctr-a", pod, env={"CNI_ARGS": args})
    assert deleted.code == 0, deleted
    assert node.reservations() == {} and node.records() == [] and veths(node) == []
    assert "eth0" not in node.links(netns=pod)


def test_del_with_a_malformed_mac_still_releases_the_attachment(node):
    pod = node.pod()
    node.add(pod, "ctr-a")
    deleted = node.call("DEL", dict(node.conf(), runtimeConfig={"mac": "zz"}), "ctr-a", pod)
    assert deleted.code == 0, deleted
    assert node.reservations() == {} and node.records() == [] and veths(node) == []
