# `make run` and `make test` do all set-up on a fresh Debian 12 machine (as root).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
APT_STAMP := $(VENV)/.system-packages

.PHONY: run install test lint apikey system-packages test-packages clean

run: $(VENV)/.base-installed
	$(VENV_PYTHON) -m supervisor_site.launcher

# What a device needs: the system packages and the virtualenv (README "Run it on a device").
install: $(VENV)/.base-installed

test: $(VENV)/.dev-installed test-packages
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
# the unit in supervisor_site/deploy, ip (iproute2) for the firewall tests' network namespaces.
test-packages:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v dbus-daemon >/dev/null 2>&1 || missing="$$missing dbus-daemon"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
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
