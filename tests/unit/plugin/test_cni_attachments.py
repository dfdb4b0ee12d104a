"""netpol-cni's bookkeeping of attachments, no root needed (issue 14, items 2, 10, 11): a record
is claimed exclusively before the IPAM plugin is asked for anything; a repeated ADD is refused
before the IPAM plugin runs; a rollback sends IPAM DEL only for an IPAM ADD that succeeded; DEL
succeeds for an attachment ADD refuses, and is lenient about the inputs it does not need.

The IPAM plugin here is a script that logs the commands it gets and answers as told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from netpol_cni import store
from netpol_cni.commands import _forward_gc, _release
from netpol_cni.config import load_invocation
from netpol_cni.errors import CniError
from netpol_cni.ipam import Delegation

from tests.conftest import REPO

BASE = {"cniVersion": "1.0.0", "name": "net", "type": "netpol-cni", "ipam": {"type": "logging-ipam"}}
ENV = {"CNI_CONTAINERID": "ctr", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x", "CNI_PATH": "/nonexistent"}


# ── what ADD refuses, DEL has nothing to undo for ───────────────────────────────────────────


@pytest.mark.parametrize("env", [
    {"CNI_CONTAINERID": "c" * 251},
    {"CNI_CONTAINERID": "c" * 241, "CNI_IFNAME": "a-15-byte-name1"},
    {"CNI_CONTAINERID": ""},
    {"CNI_CONTAINERID": "-ctr"},
    {"CNI_CONTAINERID": "ctr@x"},
    {"CNI_IFNAME": ""},
    {"CNI_IFNAME": "x" * 16},
    {"CNI_IFNAME": "a b"},
], ids=lambda env: ",".join(f"{k}={v[:12]}" for k, v in env.items()))
def test_an_attachment_add_refuses_is_nothing_to_undo_for_del(env):
    with pytest.raises(CniError) as refused:
        load_invocation("ADD", json.dumps(BASE), dict(ENV, **env))
    assert refused.value.code == 4
    inv = load_invocation("DEL", json.dumps(BASE), dict(ENV, CNI_PATH="", **env))  # nothing else matters
    assert inv.refused_by_add == refused.value.msg


def test_the_longest_container_id_is_what_fits_a_record_name():
    fits = load_invocation("ADD", json.dumps(BASE), dict(ENV, CNI_CONTAINERID="c" * 250))
    assert len(store.record_name(fits.container_id, fits.ifname)) == store.NAME_MAX
    with pytest.raises(CniError, match=r"CNI_CONTAINERID: 251 characters is too long: with CNI_IFNAME 'eth0' at most 250"):
        load_invocation("ADD", json.dumps(BASE), dict(ENV, CNI_CONTAINERID="c" * 251))


@pytest.mark.parametrize(("text", "args"), [
    ("", {}),
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "shop", "K8S_POD_NAME": "web-1"}),
    ("A=", {"A": ""}),
])
def test_cni_args_are_read_as_libcni_reads_them(text, args):
    assert load_invocation("ADD", json.dumps(BASE), dict(ENV, CNI_ARGS=text)).args == args


@pytest.mark.parametrize("text", ["K8S_POD_NAME", "A=1;", ";A=1", "A=1;;B=2", "A=b=c", "=1"])
def test_cni_args_add_refuses_are_dropped_by_del(text):
    with pytest.raises(CniError, match="CNI_ARGS") as refused:
        load_invocation("ADD", json.dumps(BASE), dict(ENV, CNI_ARGS=text))
    inv = load_invocation("DEL", json.dumps(BASE), dict(ENV, CNI_ARGS=text))
    assert inv.args_error == refused.value.msg and not inv.refused_by_add


def test_del_ignores_a_mac_only_add_uses():
    conf = json.dumps(dict(BASE, runtimeConfig={"mac": "zz"}))
    with pytest.raises(CniError, match="runtimeConfig.mac"):
        load_invocation("ADD", conf, ENV)
    assert load_invocation("DEL", conf, ENV).conf.mac == ""


# ── the record: claimed before the address, exclusive, completed atomically ─────────────────


def test_a_claim_is_exclusive_and_save_completes_it(tmp_path):
    data = str(tmp_path)
    assert store.claim(data, "net", "ctr", "eth0", {"containerID": "ctr"})
    assert not store.claim(data, "net", "ctr", "eth0", {"containerID": "other"})
    assert store.load(data, "net", "ctr", "eth0") == {"containerID": "ctr"}
    store.save(data, "net", "ctr", "eth0", {"containerID": "ctr", "hostInterface": "veth1"})
    assert store.load(data, "net", "ctr", "eth0") == {"containerID": "ctr", "hostInterface": "veth1"}
    assert os.listdir(tmp_path / "net") == ["ctr@eth0"]  # no temp file left


def test_every_record_is_an_attachment_an_empty_claim_too_and_a_temp_file_never(tmp_path):
    directory = tmp_path / "net"
    directory.mkdir()
    (directory / "killed@eth0").write_text("")  # an ADD killed between creating and writing its claim
    (directory / f".{os.getpid()}.tmp").write_text("{}")  # a save killed before its rename
    (directory / "ctr@x.tmp").write_text("{}")  # an interface may be called x.tmp
    assert store.attachments(str(tmp_path), "net") == [("ctr", "x.tmp"), ("killed", "eth0")]
    assert store.load(str(tmp_path), "net", "killed", "eth0") is None


def test_a_record_of_the_longest_name_saves(tmp_path):
    longest = "c" * 250
    store.save(str(tmp_path), "net", longest, "eth0", {"containerID": longest})
    assert store.attachments(str(tmp_path), "net") == [(longest, "eth0")]


# ── the executable: ADD refused before the IPAM plugin runs; rollback releases only its own ──


@pytest.fixture
def cni_path(tmp_path):
    """A CNI_PATH with `logging-ipam`: logs `COMMAND CONTAINERID IFNAME` to ipam.log, and
    answers ADD with an address and VERSION with `ipam.versions` (default 1.0.0 alone); the
    command named in `ipam.fail` fails (code 11)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "logging-ipam"
    script.write_text(f"""#!{sys.executable} -I
import json, os, sys
conf = json.load(sys.stdin)
with open({str(tmp_path / "ipam.log")!r}, "a") as log:
    log.write(" ".join(os.environ.get(k, "-") for k in ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME")) + "\\n")
if conf["ipam"].get("fail") == os.environ["CNI_COMMAND"]:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 11, "msg": "no"}}))
    sys.exit(1)
if os.environ["CNI_COMMAND"] == "ADD":
    print(json.dumps({{"cniVersion": "1.0.0", "ips": [{{"address": "10.1.0.2/24"}}]}}))
if os.environ["CNI_COMMAND"] == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": conf["ipam"].get("versions", ["1.0.0"])}}))
""")
    script.chmod(0o755)
    return bin_dir


def ipam_log(cni_path: Path) -> list[str]:
    log = cni_path.parent / "ipam.log"
    return log.read_text().splitlines() if log.exists() else []


def run_plugin(command: str, conf: dict, env: dict) -> subprocess.CompletedProcess[str]:
    """The plugin's `main` as an executable (no root: these never reach the kernel)."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); from netpol_cni.main import run; run()"
    return subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO / "plugin")], input=json.dumps(conf),
                          env=dict(env, CNI_COMMAND=command), capture_output=True, text=True, check=False)


def test_a_repeated_add_is_refused_before_the_ipam_plugin_runs(tmp_path, cni_path):
    conf = dict(BASE, dataDir=str(tmp_path / "state"))
    store.claim(conf["dataDir"], "net", "ctr", "eth0", {"containerID": "ctr", "hostInterface": "veth1"})
    again = run_plugin("ADD", conf, dict(ENV, CNI_PATH=str(cni_path)))
    error = json.loads(again.stdout)
    assert again.returncode == 1 and error["code"] == 4 and "already attached" in error["msg"], error
    assert ipam_log(cni_path) == []
    assert store.load(conf["dataDir"], "net", "ctr", "eth0") == {"containerID": "ctr", "hostInterface": "veth1"}


def test_an_add_whose_ipam_plugin_cannot_start_gives_its_claim_back(tmp_path, cni_path):
    conf = dict(BASE, dataDir=str(tmp_path / "state"), ipam={"type": "no-such-ipam"})
    call = run_plugin("ADD", conf, dict(ENV, CNI_PATH=str(cni_path)))
    assert call.returncode == 1 and json.loads(call.stdout)["code"] == 7
    assert store.attachments(conf["dataDir"], "net") == []


def test_del_of_an_attachment_add_refuses_runs_nothing_and_succeeds(cni_path):
    call = run_plugin("DEL", BASE, dict(ENV, CNI_PATH=str(cni_path), CNI_CONTAINERID="c" * 251))
    assert call.returncode == 0 and call.stdout == "", call
    assert ipam_log(cni_path) == []


@pytest.mark.parametrize(("fail", "log", "claimed"), [
    ("", ["ADD ctr eth0", "DEL ctr eth0"], False),  # it allocated: the rollback releases it, then the claim
    ("ADD", ["ADD ctr eth0"], False),  # it allocated nothing (e.g. host-local: "duplicate allocation")
    ("DEL", ["ADD ctr eth0", "DEL ctr eth0"], True),  # the address may still be held: GC must find it
])
def test_a_rollback_releases_only_an_allocation_that_succeeded(tmp_path, monkeypatch, cni_path, fail, log, claimed):
    for key, value in dict(ENV, CNI_PATH=str(cni_path)).items():
        monkeypatch.setenv(key, value)
    conf = dict(BASE, dataDir=str(tmp_path / "state"), ipam={"type": "logging-ipam", "fail": fail})
    inv = load_invocation("ADD", json.dumps(conf), os.environ)
    assert store.claim(conf["dataDir"], "net", "ctr", "eth0", {})
    adding = Delegation(inv, "ADD")
    if fail == "DEL":
        with pytest.raises(CniError, match="logging-ipam"):
            _release(inv, adding)
    else:
        _release(inv, adding)
    assert ipam_log(cni_path) == log
    assert store.attachments(conf["dataDir"], "net") == ([("ctr", "eth0")] if claimed else [])


def test_del_with_cni_args_add_refuses_gives_the_ipam_plugin_none(monkeypatch, cni_path):
    for key, value in dict(ENV, CNI_PATH=str(cni_path), CNI_ARGS="K8S_POD_NAME").items():
        monkeypatch.setenv(key, value)
    releasing = Delegation(load_invocation("DEL", json.dumps(BASE), os.environ), "DEL")
    releasing.settle()
    assert "CNI_ARGS" not in releasing.env and ipam_log(cni_path) == ["DEL ctr eth0"]


@pytest.mark.parametrize(("versions", "log"), [
    (["0.4.0", "1.0.0", "1.1.0"], ["VERSION - -", "GC - -"]),  # it can reconcile its own reservations
    (["0.4.0", "1.0.0"], ["VERSION - -"]),  # host-local 1.1.x: no GC verb, none sent
])
def test_gc_is_forwarded_to_an_ipam_plugin_that_speaks_1_1_0(monkeypatch, cni_path, versions, log):
    monkeypatch.setenv("CNI_PATH", str(cni_path))
    for key in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"):
        monkeypatch.delenv(key, raising=False)
    conf = dict(BASE, cniVersion="1.1.0", ipam={"type": "logging-ipam", "versions": versions},
                **{"cni.dev/valid-attachments": []})
    _forward_gc(load_invocation("GC", json.dumps(conf), os.environ))
    assert ipam_log(cni_path) == log
