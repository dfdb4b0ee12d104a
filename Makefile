# Two commands on a fresh Debian machine, as root:  `make demo`  and  `make test`.
# Each sets everything up first (apt packages, .venv, the package in editable mode).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := netpol/examples/shop
APT_PACKAGES := python3 python3-venv python3-pip iproute2 nftables libnftables1 \
                containernetworking-plugins iptables ipset podman mmdebstrap runc graphviz
IMAGE ?= localhost/netpol:dev
PYTEST_ARGS ?=

.PHONY: setup apt demo demo-image test image lint typecheck unit unit-unprivileged bench rulesets clean

setup: apt $(VENV)/.installed

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: setup
	@echo "== netpol reach: every port the shop's policies and pods name =="
	$(BIN)/netpol reach -f $(EXAMPLE) -o groups
	$(BIN)/netpol reach -f $(EXAMPLE) --port 8443/TCP --port 9187/TCP
	@echo "== netpol explain: why the web tier cannot reach the database =="
	$(BIN)/netpol explain -f $(EXAMPLE) --from frontend/web-1 --to db/postgres-0 --port 5432/TCP
	@echo "== netpol explain: Prometheus scrapes postgres on its named port 'metrics' =="
	$(BIN)/netpol explain -f $(EXAMPLE) --from monitoring/prometheus-0 --to db/postgres-1 --port 9187/TCP
	@echo "== netpol lint: what in the shop's policies is dead, redundant or risky =="
	$(BIN)/netpol lint -f $(EXAMPLE)
	@echo "== netpol check: what the shop's owners expect, checked =="
	$(BIN)/netpol check -f $(EXAMPLE) --expect netpol/examples/shop-expectations.yaml
	@echo "== netpol diff: what a pull request (netpol/examples/shop-change.yaml) opens =="
	$(BIN)/netpol diff -f $(EXAMPLE) --to $(EXAMPLE) netpol/examples/shop-change.yaml
	$(BIN)/netpol reach -f $(EXAMPLE) -o html > reach.html
	@echo "wrote reach.html (colour matrix, one table per port)"
	@echo "== netpol compile: node-a's nftables ruleset (excerpt; full file in rulesets/shop/node-a.nft) =="
	$(BIN)/netpol compile -f $(EXAMPLE) --node node-a -o node-a.nft
	@grep -A9 -E 'map ingress-v4|chain forward|chain ingress-.*postgres-0' node-a.nft | head -40
	@echo "== netpol verify: both nodes built in network namespaces, rulesets loaded, every cell probed =="
	$(BIN)/netpol verify -f $(EXAMPLE)
	@echo "== netpol demo: 3 live nodes, pods attached by netpol-cni, one agent per node, scenarios =="
	$(BIN)/netpol demo -f $(EXAMPLE)

# The live demo with the image on the nodes, as `netpol manifests --image $(IMAGE)`'s DaemonSet runs
# it (podman: install-cni, then the agent), plus a rolling update of one node's agent.
demo-image: setup image
	$(BIN)/netpol demo -f $(EXAMPLE) --image $(IMAGE)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	NETPOL_IMAGE=$(IMAGE) $(BIN)/pytest -n 2 $(PYTEST_ARGS)

# The container image, from Debian packages (mmdebstrap) and this checkout; tests/image runs it.
image: setup
	$(BIN)/python -m netpol.deploy.image --tag $(IMAGE)

test: setup image lint typecheck unit

unit-unprivileged: apt  # tests/unit as user nobody, in a copy of the checkout: no root needed
	.ci/unit-unprivileged

rulesets: setup
	for d in netpol/examples/*/; do \
	  $(BIN)/netpol compile -f $$d --all-nodes --out-dir rulesets/$$(basename $$d); done

bench: setup
	$(BIN)/python benchmarks/reach_scale.py --vs-nca

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis reach.html node-a.nft
