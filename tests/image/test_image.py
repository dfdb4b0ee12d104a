"""The image, run for real: netpol and every tool it calls are in it, of the CNI plugins only
host-local, it stays within its size target, and libnftables in a container (CAP_NET_ADMIN,
the network namespace a test gives it) loads rules there — and only there."""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.image.podman import Container, run_container

SIZE_TARGET = 250 * 1000 * 1000  # bytes, as podman counts them (issue 16); 181 MB measured

WHICH = "import json, shutil, sys; print(json.dumps({t: shutil.which(t) for t in sys.argv[1:]}))"
TOOLS = ("netpol", "netpol-cni", "python3", "nft", "ip", "iptables-restore", "ip6tables-restore", "ip6tables",
         "iptables-legacy-restore", "ip6tables-legacy-restore", "ipset")
IMPORTS = ("import ssl, http.client, http.server, json, urllib.request, ctypes, nftables, orjson, yaml, "
           "networkx, prometheus_client, kubernetes.client, netpol_cni.main, netpol.cli, "
           "netpol.sources.kube, netpol.agent.runner, netpol.dataplane.nft, netpol.testing.strategies; "
           "print(ssl.OPENSSL_VERSION)")


def run_ok(image: str, spec: Container) -> str:
    done = run_container(image, spec)
    assert done.returncode == 0, f"{spec.command} exited with {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_netpol_runs_on_a_read_only_root(image: str):
    assert "enforce policy on one node" in run_ok(image, Container(("netpol", "--help"), read_only=True))


def test_every_tool_netpol_calls_is_on_path(image: str):
    found = json.loads(run_ok(image, Container(("python3", "-c", WHICH, *TOOLS))))
    assert found["netpol"] == "/usr/local/bin/netpol"
    assert [tool for tool, path in found.items() if path is None] == []
    assert "nftables v1." in run_ok(image, Container(("nft", "--version")))


def test_netpol_and_its_dependencies_import(image: str):
    assert "OpenSSL" in run_ok(image, Container(("python3", "-c", IMPORTS)))


def test_host_local_is_the_only_cni_plugin_and_it_runs(image: str):
    listing = run_ok(image, Container(("python3", "-c", "import os; print(os.listdir('/usr/lib/cni'))")))
    assert listing.strip() == "['host-local']"
    version = run_ok(image, Container(("/usr/lib/cni/host-local",), env={"CNI_COMMAND": "VERSION"}))
    assert "1.0.0" in json.loads(version)["supportedVersions"]


def test_image_size_within_target(image: str):
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image],
                          capture_output=True, text=True, check=True).stdout
    assert int(size) <= SIZE_TARGET, f"{image} is {int(size) / 1e6:.0f} MB"


def load_table(table: str) -> tuple[str, ...]:
    """python3 in the container: a table, a base chain and a rule, through libnftables."""
    commands = (f"add table inet {table}; "
                f"add chain inet {table} input {{ type filter hook input priority 0; policy accept; }}; "
                f'add rule inet {table} input tcp dport 4242 counter accept comment "from the image"')
    script = ("import sys, nftables; rc, _, err = nftables.Nftables().cmd(sys.argv[1]); "
              "print(err, file=sys.stderr); sys.exit(rc)")
    return ("python3", "-c", script, commands)


def nft_list(table: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    inside = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*inside, "nft", "list", "table", "inet", table], capture_output=True, text=True,
                          check=False)


def test_libnftables_loads_rules_into_the_given_network_namespace_only(image: str, netns: str):
    table = f"np_img_{uuid.uuid4().hex[:8]}"
    run_ok(image, Container(load_table(table), cap_add=("NET_ADMIN",), netns=f"/run/netns/{netns}"))
    listed = nft_list(table, netns)
    assert listed.returncode == 0, listed.stderr
    assert 'tcp dport 4242 counter packets 0 bytes 0 accept comment "from the image"' in listed.stdout
    assert nft_list(table).returncode != 0, "the table reached the machine's own network namespace"


def test_without_net_admin_the_kernel_refuses(image: str, netns: str):
    table = f"np_img_{uuid.uuid4().hex[:8]}"
    refused = run_container(image, Container(load_table(table), netns=f"/run/netns/{netns}"))
    assert refused.returncode != 0
    assert "Operation not permitted" in refused.stderr
    assert nft_list(table, netns).returncode != 0
