# wilo-backend: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .

# make dist / deploy (see README "Deployment")
DIST_DIR ?= dist
TARGET_PLATFORM ?= manylinux2014_aarch64
TARGET_PYTHON ?= 3.11
INVENTORY ?= ansible/inventory/production.yml
PLAYBOOK ?= ansible/deploy.yml
LIMIT ?=

.PHONY: help install run test lint bench dist molecule deploy soak clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml backend/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r backend/requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv with the package and the dev tools (idempotent)

run: install ## run the service with the simulated sensor, data in ./readings
	$(BIN)/wilo-backend run --sensor sim --data-dir $(DATA_DIR)

test: install ## the whole pytest suite
	$(BIN)/pytest

lint: install ## ruff, mypy --strict and the deployment linters
	$(BIN)/ruff check backend tests bench
	$(BIN)/ruff format --check backend tests bench
	$(BIN)/mypy

bench: install ## benchmarks; figures go in BENCHMARKS.md
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) $(DIST_DIR) build *.egg-info backend/*.egg-info

# make molecule: the real playbooks on throwaway systemd-nspawn test hosts (root; see README "Molecule").
# Ansible's and Molecule's own files go under MOLECULE_HOME, not /root.
MOLECULE_SCENARIOS ?= default legacy fleet
MOLECULE_HOME ?= /var/tmp/wilo-molecule
MOLECULE_DIST_DIR ?= $(DIST_DIR)/molecule-$(shell uname -m)

molecule: install ## Molecule scenarios (default, legacy, fleet) on nspawn test hosts; needs root
	$(MAKE) dist DIST_DIR=$(MOLECULE_DIST_DIR) TARGET_PLATFORM=manylinux2014_$(shell uname -m) TARGET_PYTHON=3.11
	molecule/testhost.sh build
	set -o pipefail; rc=0; for s in $(MOLECULE_SCENARIOS); do \
	  PATH=$(abspath $(BIN)):$$PATH ANSIBLE_HOME=$(MOLECULE_HOME)/ansible \
	  WILO_MOLECULE_DIST=$(abspath $(MOLECULE_DIST_DIR)) \
	  $(BIN)/molecule test -s $$s | $(BIN)/python -u molecule/timings.py || { rc=1; break; }; \
	done; molecule/testhost.sh leftovers || rc=1; exit $$rc
