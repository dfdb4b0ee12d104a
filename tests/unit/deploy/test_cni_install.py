"""`netpol install-cni` and the file half of `netpol cleanup`: the conflist is the Node's
podCIDRs (one host-local range per family, in the Node's order); a Node without them, or with
two of a family, is refused naming the Node and the field, before anything is written; the
host's python3 is found through its symlinks inside the host root, and refused when missing or
too old; the install writes every file whole, twice is a no-op, keeps the node's own host-local;
cleanup removes exactly what install wrote and leaves foreign files alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netpol.deploy import cni_install
from netpol.deploy.cleanup import remove_files
from netpol.deploy.cni_install import (
    CONFLIST,
    CniLayout,
    check_host_python,
    install_cni,
    node_pod_cidrs,
    render_conflist,
    resolve_on_host,
)
from netpol.errors import DeployError, InputError
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import run_cli


def node_doc(*cidrs: str, name: str = "node-a", legacy: str = "") -> dict:
    spec: dict = {"podCIDRs": list(cidrs)} if cidrs else {}
    if legacy:
        spec["podCIDR"] = legacy
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}}


def ranges(*cidrs: str, legacy: str = "") -> list:
    conf = render_conflist(node_pod_cidrs(node_doc(*cidrs, legacy=legacy), "test"))
    return conf["plugins"][0]["ipam"]["ranges"]


# ── the conflist (pure) ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("cidrs", "legacy", "expected"), [
    (["10.244.1.0/24"], "", [[{"subnet": "10.244.1.0/24"}]]),
    (["10.244.1.0/24", "fd00:10:244:1::/64"], "", [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]),
    (["fd00:10:244:1::/64", "10.244.1.0/24"], "", [[{"subnet": "fd00:10:244:1::/64"}], [{"subnet": "10.244.1.0/24"}]]),
    (["fd00:10:244:1::/64"], "", [[{"subnet": "fd00:10:244:1::/64"}]]),
    ([], "10.244.7.0/24", [[{"subnet": "10.244.7.0/24"}]]),  # before dual-stack: spec.podCIDR only
])
def test_one_range_per_family_in_the_nodes_order(cidrs, legacy, expected):
    assert ranges(*cidrs, legacy=legacy) == expected


def test_the_conflist_is_the_plugins_documented_format():
    conf = render_conflist(node_pod_cidrs(node_doc("10.244.1.0/24"), "test"), bridge="br-pods")
    assert conf == {"cniVersion": "1.0.0", "name": "netpol", "plugins": [{
        "type": "netpol-cni", "bridge": "br-pods", "isGateway": True, "isDefaultGateway": True,
        "capabilities": {"mac": True},
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}}]}


@pytest.mark.parametrize(("doc", "field", "words"), [
    (node_doc(), "spec.podCIDRs", "no pod CIDR is allocated to this node"),
    (node_doc("10.244.1.0/24", "10.245.1.0/24"), "spec.podCIDRs[1]", "a second IPv4 range after 10.244.1.0/24"),
    (node_doc("10.244.1.0/33"), "spec.podCIDRs[0]", "10.244.1.0/33"),
])
def test_a_node_without_a_usable_range_is_refused_naming_it_and_the_field(doc, field, words):
    with pytest.raises(InputError) as refused:
        node_pod_cidrs(doc, "api")
    problem, = refused.value.problems
    assert (problem.obj, problem.path) == ("Node node-a", field)
    assert words in problem.message


# ── the host's python3 ──────────────────────────────────────────────────────────────────────


def fake_host(root: Path, python: str | None = "python3.11", link: str = "python3.11",
              tools: tuple[str, ...] = ("nft", "modprobe")) -> Path:
    """A host root with /usr/bin/python3 → LINK (an executable PYTHON), the Debian way, and
    /usr/sbin/TOOLS."""
    for directory, names in (("bin", [python] if python else []), ("sbin", tools)):
        (root / "usr" / directory).mkdir(parents=True)
        for name in names:
            (root / "usr" / directory / name).write_text("#!/bin/sh\n")
            (root / "usr" / directory / name).chmod(0o755)
    if python:
        (root / "usr/bin/python3").symlink_to(link)
    return root


def test_symlinks_resolve_inside_the_host_root(tmp_path):
    root = fake_host(tmp_path / "host", link="/usr/bin/../bin/python3.11")  # absolute: the host's /
    (root / "bin").symlink_to("usr/bin")  # merged /usr
    assert resolve_on_host(root, "/bin/python3") == root / "usr/bin/python3.11"
    (root / "loop").symlink_to("/loop")
    with pytest.raises(DeployError, match="too many levels"):
        resolve_on_host(root, "/loop")


@pytest.mark.parametrize(("python", "link", "outcome"), [
    ("python3.11", "python3.11", "python3.11"),
    ("python3.13", "python3.13", "python3.13"),
    ("python3-custom", "python3-custom", "/usr/bin/python3"),  # the name does not say: accepted
    ("python3.10", "python3.10", "is Python 3.10"),
    (None, "", "the node has no /usr/bin/python3"),
    ("python3.11", "python3.12", "the node has no /usr/bin/python3"),  # a dangling link
])
def test_the_hosts_python_is_found_or_refused_saying_what_to_install(tmp_path, python, link, outcome):
    layout = CniLayout(fake_host(tmp_path / "host", python, link))
    if outcome.startswith(("python", "/")):
        assert check_host_python(layout) == outcome
        return
    with pytest.raises(DeployError, match=outcome) as refused:
        check_host_python(layout)
    assert str(tmp_path / "host" / "usr/bin/python3") in str(refused.value) or "3.10" in outcome


# ── the install, into a host root made of temporary directories ────────────────────────────


@pytest.fixture
def host(tmp_path) -> CniLayout:
    return CniLayout(fake_host(tmp_path / "host"))


@pytest.fixture
def image_host_local(tmp_path) -> Path:
    binary = tmp_path / "image-host-local"
    binary.write_bytes(b"\x7fELF pretend host-local")
    return binary


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root → (inode, mtime): what a rename or a rewrite would change."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_install_writes_the_plugin_host_local_and_the_conflist_and_twice_changes_nothing(host, image_host_local):
    read = lambda: node_doc("10.244.1.0/24", "fd00:10:244:1::/64")  # noqa: E731
    out = install_cni(host, read, source="test", host_local=image_host_local)
    root = host.host_root
    launcher = (root / "opt/cni/bin/netpol-cni").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -IS\n")
    package, = [line.split("'")[1] for line in launcher.splitlines() if line.startswith("package = ")]
    assert package.startswith("/lib/netpol-cni/")  # below BIN/..: found from the launcher's own path
    assert (root / "opt/cni" / package.lstrip("/") / "netpol_cni" / "main.py").is_file()
    assert (root / "opt/cni/bin/host-local").read_bytes() == image_host_local.read_bytes()
    assert os.access(root / "opt/cni/bin/host-local", os.X_OK)
    conf = json.loads((root / "etc/cni/net.d" / CONFLIST).read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == ranges("10.244.1.0/24", "fd00:10:244:1::/64")
    assert out.done[-1] == "/etc/cni/net.d/10-netpol.conflist: written (10.244.1.0/24, fd00:10:244:1::/64)"
    assert not [p for p in root.rglob(".*") if p.is_file()], "temporary files left behind"
    before = files(root)
    again = install_cni(host, read, source="test", host_local=image_host_local)
    assert files(root) == before
    assert again.done[0].endswith("host-local: unchanged") and again.done[-1].endswith("unchanged (10.244.1.0/24, "
                                                                                         "fd00:10:244:1::/64)")


def test_a_changed_range_rewrites_the_conflist_by_rename(host, image_host_local):
    install_cni(host, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    path = host.host_root / "etc/cni/net.d" / CONFLIST
    inode = path.stat().st_ino
    install_cni(host, lambda: node_doc("10.244.9.0/24"), source="test", host_local=image_host_local)
    assert path.stat().st_ino != inode and "10.244.9.0/24" in path.read_text()


def test_the_nodes_own_host_local_is_kept_and_never_removed(host, image_host_local):
    own = host.host_root / "opt/cni/bin/host-local"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the node's package")
    out = install_cni(host, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    assert own.read_bytes() == b"the node's package"
    assert out.notes == ["/opt/cni/bin/host-local: the node's own, left as it is"]
    assert "/opt/cni/bin/host-local" not in remove_files(host)
    assert own.read_bytes() == b"the node's package"


def test_a_node_without_nft_or_modprobe_is_told_what_netpol_cni_needs_them_for(tmp_path, image_host_local):
    layout = CniLayout(fake_host(tmp_path / "host", tools=("modprobe",)))
    out = install_cni(layout, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    assert out.notes == ["the node has no /usr/sbin/nft or /usr/bin/nft: netpol-cni creates its anti-spoofing "
                         "table at the first ADD (install nftables on the node)"]


def test_another_configuration_first_in_name_order_is_pointed_out(host, image_host_local):
    other = host.host_root / "etc/cni/net.d/05-other.conflist"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    out = install_cni(host, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    assert any("05-other.conflist sorts before 10-netpol.conflist" in note for note in out.notes)


def test_nothing_is_written_for_a_node_without_pod_cidrs_or_a_host_without_python(tmp_path, image_host_local):
    layout = CniLayout(fake_host(tmp_path / "host"))
    with pytest.raises(InputError):
        install_cni(layout, node_doc, source="test", host_local=image_host_local)
    no_python = CniLayout(fake_host(tmp_path / "bare", python=None))
    with pytest.raises(DeployError):
        install_cni(no_python, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    assert not (tmp_path / "host" / "opt").exists() and not (tmp_path / "host" / "etc").exists()
    assert not (tmp_path / "bare" / "opt").exists()


def test_cleanup_removes_what_install_wrote_and_nothing_else(host, image_host_local):
    install_cni(host, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    root = host.host_root
    foreign = {root / "opt/cni/bin/bridge": "reference bridge", root / "opt/cni/lib/other/x": "another plugin's",
               root / "etc/cni/net.d/20-other.conflist": json.dumps({"name": "other", "plugins": [{"type": "bridge"}]}),
               root / "etc/cni/net.d/10-netpol.conf.bak": "a copy someone made"}
    for path, text in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert remove_files(host) == ["/etc/cni/net.d/10-netpol.conflist", "/opt/cni/bin/netpol-cni",
                                  "/opt/cni/bin/host-local", "/opt/cni/lib/netpol-cni/"]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "usr" not in p.parts) == \
        sorted(str(p.relative_to(root)) for p in foreign)
    assert remove_files(host) == []  # again: nothing left of ours


def test_cleanup_leaves_a_changed_host_local_and_a_foreign_file_under_our_names(host, image_host_local):
    install_cni(host, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    root = host.host_root
    (root / "opt/cni/bin/host-local").write_bytes(b"upgraded by the node's package manager since")
    (root / "etc/cni/net.d" / CONFLIST).write_text(json.dumps({"name": "someone-else", "plugins": []}))
    (root / "opt/cni/bin/netpol-cni").write_text("#!/bin/sh\necho not ours\n")
    assert remove_files(host) == ["/opt/cni/lib/netpol-cni/"]
    assert (root / "opt/cni/bin/host-local").exists() and (root / "etc/cni/net.d" / CONFLIST).exists()
    assert (root / "opt/cni/bin/netpol-cni").exists()


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3 (≥ 3.11)")
def test_the_installed_launcher_runs_the_plugin(tmp_path, image_host_local):
    """On the node itself (host root /): the launcher the runtime executes answers VERSION."""
    layout = CniLayout(Path("/"), str(tmp_path / "bin"), str(tmp_path / "net.d"))
    try:
        install_cni(layout, lambda: node_doc("10.244.1.0/24"), source="test", host_local=image_host_local)
    except DeployError as exc:
        pytest.skip(str(exc))  # this machine's python3 is older than 3.11
    done = subprocess.run([str(tmp_path / "bin" / "netpol-cni")], env={"CNI_COMMAND": "VERSION"},
                          input='{"cniVersion": "1.0.0"}', capture_output=True, text=True, check=False)
    assert json.loads(done.stdout)["cniVersion"] == "1.1.0", done.stderr


# ── the command, against the in-process API server ─────────────────────────────────────────


@pytest.fixture
def api(tmp_path):
    with FakeApiServer() as server:
        server.kubeconfig(tmp_path / "kubeconfig")
        yield server


def install_command(tmp_path: Path, node: str = "node-a", *extra: str) -> tuple[int, str, str]:
    return run_cli("install-cni", "--node", node, "--kubeconfig", str(tmp_path / "kubeconfig"),
                   "--host-root", str(tmp_path / "host"), "--host-local", str(tmp_path / "image-host-local"),
                   *extra)


def test_the_command_reads_the_node_from_the_api_server(api, tmp_path, image_host_local):
    fake_host(tmp_path / "host")
    api.apply(node_doc("10.244.3.0/24", name="node-b"))
    api.apply(node_doc("10.244.1.0/24", "fd00:10:244:1::/64"))
    code, out, err = install_command(tmp_path)
    assert code == 0, err
    assert "10-netpol.conflist: written (10.244.1.0/24, fd00:10:244:1::/64)" in out
    assert any(r.startswith("GET /api/v1/nodes?fieldSelector=metadata.name") for r in api.requests)


@pytest.mark.parametrize(("node", "message"), [
    (node_doc(), "Node node-a: spec.podCIDRs: no pod CIDR is allocated to this node"),
    (node_doc(name="node-z"), "Node node-a: not found"),
])
def test_a_node_without_pod_cidrs_is_a_clear_error_and_no_traceback(api, tmp_path, image_host_local, node, message):
    fake_host(tmp_path / "host")
    api.apply(node)
    code, out, err = install_command(tmp_path, "node-a", "--wait", "0")
    assert code == 1 and out == ""
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "host" / "etc").exists()


def test_the_command_waits_for_the_controller_manager_to_allocate_a_range(api, tmp_path, image_host_local,
                                                                         monkeypatch):
    monkeypatch.setattr(cni_install, "POLL", 0.05)
    fake_host(tmp_path / "host")
    api.apply(node_doc())
    later = threading.Timer(0.3, lambda: api.apply(node_doc("10.244.1.0/24")))
    later.start()
    started = time.monotonic()
    code, _, err = install_command(tmp_path, "node-a", "--wait", "30")
    later.join()
    assert code == 0, err
    assert time.monotonic() - started < 30


def test_an_unreachable_api_server_is_named(tmp_path, image_host_local):
    fake_host(tmp_path / "host")
    with FakeApiServer() as server:
        server.kubeconfig(tmp_path / "kubeconfig")
    code, _, err = install_command(tmp_path)  # the server is gone
    assert code == 1
    assert "netpol: install-cni: Node node-a: cannot read it from the API server" in err


def test_a_node_file_instead_of_the_api(tmp_path, image_host_local):
    fake_host(tmp_path / "host")
    (tmp_path / "node.json").write_text(json.dumps(node_doc("10.244.1.0/24")))
    code, out, err = run_cli("install-cni", "--node", "node-a", "--node-file", str(tmp_path / "node.json"),
                             "--host-root", str(tmp_path / "host"), "--host-local", str(image_host_local))
    assert code == 0, err
    assert "/opt/cni/bin/netpol-cni: installed (runs under the node's /usr/bin/python3, python3.11)" in out


def test_a_node_file_of_another_node_is_a_usage_error(tmp_path, image_host_local):
    fake_host(tmp_path / "host")
    (tmp_path / "node.json").write_text(json.dumps(node_doc("10.244.1.0/24", name="node-b")))
    code, _, err = run_cli("install-cni", "--node", "node-a", "--node-file", str(tmp_path / "node.json"),
                           "--host-root", str(tmp_path / "host"), "--host-local", str(image_host_local))
    assert code == 2 and "holds Node node-b, not --node node-a" in err


def test_it_runs_as_a_process_too(tmp_path, image_host_local):
    """What the init container runs: the console script, a clear error for a missing python3."""
    (tmp_path / "host").mkdir()
    (tmp_path / "node.json").write_text(json.dumps(node_doc("10.244.1.0/24")))
    done = subprocess.run([sys.executable, "-m", "netpol.cli", "install-cni", "--node", "node-a",
                           "--node-file", str(tmp_path / "node.json"), "--host-root", str(tmp_path / "host")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("netpol: install-cni: the node has no /usr/bin/python3 (looked at ")
    assert "apt-get install python3-minimal" in done.stderr
