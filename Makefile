# `make run` and `make test` do all set-up on a fresh Debian 12 machine (as root).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
APT_STAMP := $(VENV)/.system-packages

.PHONY: run install test lint apikey bytecode system-packages test-packages test-node clean

run: $(VENV)/.base-installed bytecode
	$(VENV_PYTHON) -m supervisor_site.launcher

# What a device needs: the system packages, the virtualenv and the project's bytecode
# (README "Run it on a device").
install: $(VENV)/.base-installed bytecode

test: $(VENV)/.dev-installed test-packages test-node bytecode
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

apikey: $(VENV)/.base-installed
	@$(VENV_PYTHON) manage.py apikey

# The project's modules compiled once, where every agent start (and every manage.py) would
# compile them again: about 0.2 s of each start, and always where PYTHONDONTWRITEBYTECODE
# is set. Python still checks each file's date, so an edited module is never run stale.
bytecode: | $(VENV_PYTHON)
	@$(VENV_PYTHON) -m compileall -q -j 0 manage.py supervisor_site localmode apps_api hostcfg

# Debian packages the agent drives or the tests need; apt runs only when one is missing.
system-packages:
	@missing=""; \
	command -v dockerd >/dev/null 2>&1 || missing="$$missing docker.io"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v iptables-restore >/dev/null 2>&1 || missing="$$missing iptables"; \
	case "$$SUPERVISOR_EXPOSE_DOCKER_TCP" in 1|true|TRUE|True) \
		command -v socat >/dev/null 2>&1 || missing="$$missing socat";; esac; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# What only the tests use: a registry for real pulls, a private D-Bus for logind/systemd stand-ins,
# socat to expose the engine on 127.0.0.1:2375 to the balena CLI (which the tests get from npm),
# openssl to make the certificate of the fake cloud served over TLS, systemd-analyze to check
# the unit in supervisor_site/deploy, ip (iproute2) for the firewall tests' network namespaces,
# curl (and CA certificates) for test-node to fetch Node and npm from the npm registry.
test-packages:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v dbus-daemon >/dev/null 2>&1 || missing="$$missing dbus-daemon"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$$missing ca-certificates"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# The Node and npm of the balena CLI tests (tests/balena_cli.py), in .cache/node/bin:
# balena-cli 22.5.5 wants Node >= 20.6 and < 23, and Debian 12's nodejs is 18. `node` there
# is a link to the system's node when that one is in range, else the Node binary that the npm
# registry's node-linux-<arch> package ships; `npm` runs the registry's npm package with it.
# Both tarballs are pinned by version and sha512 (the registry's dist.integrity, in hex).
# Nothing is fetched again while the pins hold; `make test-node SYSTEM_NODE=` ignores the
# system's node.
NODE_DIR := .cache/node
NODE_VERSION := 22.23.5
NODE_SHA512_x64 := de3842fb07285b1299c5c46a176b144a5d1cf47117167babfe7b883f1e8ee8258a5748ce516426ec7b70e52b97aaa94c084862d1c26ac9b14f11be6185c06233
NODE_SHA512_arm64 := 7b52ce506295aee3c6b8b56eb67f3e0a09b9a48d403e6e0abe1fb36dbfea7bf6690fdb3e4d06f2e6252064e5a63e96d22a98f44ddf033f53743449d76ac1e2ce
NPM_VERSION := 10.9.9
NPM_SHA512 := d60fba8cb42f688b81e33c2f1cbef2ad7b977166700ec0ad057f1b6d60ea6ef2524abf673e20c35931cd8305d1dbb8887134d6eefdc0e7b8435bd458bf65b862
NPM_REGISTRY := https://registry.npmjs.org
SYSTEM_NODE ?= $(shell command -v node 2>/dev/null)
NODE_IN_RANGE := -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit((a === 20 && b >= 6) || a === 21 || a === 22 ? 0 : 1)'

test-node: test-packages
	@set -e; dir=$(NODE_DIR); mkdir -p $$dir/bin $$dir/lib/node_modules; \
	tmp=$$(mktemp -d $$dir/.fetch.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	fetch() { \
		curl -fsSL --retry 3 -o "$$tmp/$$1" "$(NPM_REGISTRY)/$$2"; \
		echo "$$3  $$tmp/$$1" | sha512sum --status -c - || { \
			echo "test-node: $(NPM_REGISTRY)/$$2 does not have the pinned sha512" >&2; exit 1; }; \
		echo "test-node: fetched $$2 ($$(du -k "$$tmp/$$1" | cut -f1) KiB)"; \
	}; \
	sys="$(SYSTEM_NODE)"; [ -z "$$sys" ] || sys=$$(readlink -f "$$sys" || true); \
	case "$$sys" in "$$(readlink -f $$dir)"/*) sys="";; esac; \
	if [ -n "$$sys" ] && "$$sys" $(NODE_IN_RANGE) 2>/dev/null; then \
		if [ "$$(readlink $$dir/bin/node)" != "$$sys" ]; then \
			ln -sfn "$$sys" "$$tmp/node" && mv -fT "$$tmp/node" $$dir/bin/node; \
			echo "test-node: using $$sys ($$("$$sys" --version))"; \
		fi; \
	elif [ -L $$dir/bin/node ] || [ "$$($$dir/bin/node --version 2>/dev/null)" != v$(NODE_VERSION) ]; then \
		case "$$(uname -m)" in \
			x86_64) arch=x64; sha=$(NODE_SHA512_x64);; \
			aarch64|arm64) arch=arm64; sha=$(NODE_SHA512_arm64);; \
			*) echo "test-node: no Node for $$(uname -m) on the npm registry; the balena CLI tests want Node >= 20.6 < 23 and npm on PATH" >&2; exit 0;; \
		esac; \
		fetch node.tgz node-linux-$$arch/-/node-linux-$$arch-$(NODE_VERSION).tgz $$sha; \
		tar -xzf "$$tmp/node.tgz" -C "$$tmp" --no-same-owner package/bin/node; \
		mv -fT "$$tmp/package/bin/node" $$dir/bin/node; \
		echo "test-node: using $$dir/bin/node ($$($$dir/bin/node --version))"; \
	fi; \
	if [ ! -x $$dir/bin/npm ] || ! grep -qs '"version": "$(NPM_VERSION)"' $$dir/lib/node_modules/npm/package.json; then \
		fetch npm.tgz npm/-/npm-$(NPM_VERSION).tgz $(NPM_SHA512); \
		mkdir "$$tmp/npm" && tar -xzf "$$tmp/npm.tgz" -C "$$tmp/npm" --no-same-owner --strip-components=1; \
		rm -rf $$dir/lib/node_modules/npm && mv "$$tmp/npm" $$dir/lib/node_modules/npm; \
		printf '%s\n' '#!/bin/sh' '# npm $(NPM_VERSION) run by the node beside this script (make test-node).' \
			'here=$$(dirname "$$(readlink -f "$$0")")' \
			'exec "$$here/node" "$$here/../lib/node_modules/npm/bin/npm-cli.js" "$$@"' > "$$tmp/npm-wrapper"; \
		chmod +x "$$tmp/npm-wrapper" && mv -fT "$$tmp/npm-wrapper" $$dir/bin/npm; \
		echo "test-node: npm $$($$dir/bin/npm --version) in $$dir/bin"; \
	fi

$(VENV_PYTHON): | system-packages
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -q --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(VENV_PYTHON) system-packages
	$(VENV_PYTHON) -m pip install -q -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/base.txt requirements/dev.txt | $(VENV_PYTHON) system-packages
	$(VENV_PYTHON) -m pip install -q -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
	find supervisor_site localmode apps_api hostcfg -name __pycache__ -prune -exec rm -rf {} +
