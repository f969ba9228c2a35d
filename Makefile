# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests use: the browser, Janus (the benchmark baseline), coturn and
# nginx (started by the deployment tests themselves), openssl (their test certificates),
# redis-server and postgresql (the cluster and store tests start their own), the
# network-namespace tools that keep every test on loopback, and nftables (the weak-link
# test drops packets with it). Never a system service.
SYSTEM_PACKAGES = chromium janus coturn nginx openssl redis-server postgresql iproute2 util-linux nftables

.PHONY: run test system-packages

run: $(VENV)/.run-installed
	$(VENV)/bin/meetnow serve $(if $(CONFIG),--config $(CONFIG))

test: $(VENV)/.test-installed system-packages
	tests/netns.sh $(VENV)/bin/pytest $(PYTEST_ARGS)

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml $(VENV)/bin/pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/bin/pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-installed

# From Debian's archive only: never a browser download.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
