# wilo-backend: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two steps in one venv: `make run` needs only the runtime (seconds); `make test`/`lint`/... add
# the development tools (Ansible, Molecule, Playwright, mypy, pandas: minutes) on top.
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
PURELIB := import sysconfig; print(sysconfig.get_paths()['purelib'])
SOURCE_PTH := wilo_backend_source.pth
# Everything `make run` writes (readings/, features/, summaries/, exports/) goes under here; ignored.
DATA_DIR ?= data

# make dist / deploy (see README "Deployment")
DIST_DIR ?= dist
# Target CPU: DIST_PLATFORM=aarch64 (Raspberry Pi OS 64-bit) or x86_64 (test hosts);
# TARGET_PLATFORM=manylinux2014_<arch> says the same.
TARGET_PLATFORM ?= manylinux2014_aarch64
DIST_PLATFORM ?= $(patsubst manylinux2014_%,%,$(TARGET_PLATFORM))
TARGET_PYTHON ?= 3.11
# glibc of the target (bookworm: 2.36): wheels for any manylinux_2_17 .. 2_<this> are accepted.
TARGET_GLIBC_MINOR ?= 36
DIST_PIP_PLATFORMS = --platform manylinux2014_$(DIST_PLATFORM) \
	$(foreach minor,$(shell seq 17 $(TARGET_GLIBC_MINOR)),--platform manylinux_2_$(minor)_$(DIST_PLATFORM))
INVENTORY ?= ansible/inventory/production.yml
PLAYBOOK ?= ansible/deploy.yml
LIMIT ?=
# More ansible-playbook arguments for make deploy, e.g. ANSIBLE_ARGS="--check --diff".
ANSIBLE_ARGS ?=

.PHONY: help install install-runtime run test test-fast lint bench dist molecule molecule-arm64 molecule-locked deploy soak clean

# `## user:` and `## dev:` say which heading of `make help` a target goes under.
help: ## user: list the targets
	@for group in user dev; do \
	  [ $$group = user ] && echo "Use it:" || echo "Work on it (installs the dev tools first):"; \
	  grep -hE "^[a-z-]+:.*## $$group: " $(MAKEFILE_LIST) \
	    | awk -F':.*## [a-z]+: ' '{printf "  make %-16s %s\n", $$1, $$2}'; \
	done

$(RUNTIME_STAMP): pyproject.toml backend/requirements.txt
	@echo "Installing the runtime only (backend/requirements.txt: $$(grep -oE '^[a-z0-9_-]+' backend/requirements.txt | paste -sd' ')) into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar on --no-compile -r backend/requirements.txt
	@# This tree's package as an editable install provides it (a .pth naming backend/, the console
	@# script) without pip's setuptools build environment, and no .pyc for modules never imported:
	@# 9.1 s of CPU instead of 13.5 s on a fresh clone. `make install` puts pip's own in its place.
	echo "$(abspath backend)" > "$$($(BIN)/python -c "$(PURELIB)")/$(SOURCE_PTH)"
	@# the __main__ guard as in pip's scripts: the sampler's spawned process imports this file
	printf '#!%s\nimport sys\nfrom wilo_backend.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
	  "$(abspath $(BIN))/python" > $(BIN)/wilo-backend
	chmod +x $(BIN)/wilo-backend
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	@echo "Installing the development tools (requirements-dev.txt) into $(VENV): a few minutes the first time"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r backend/requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f "$$($(BIN)/python -c "$(PURELIB)")/$(SOURCE_PTH)"
	touch $@

install-runtime: $(RUNTIME_STAMP) ## user: create .venv with the package and its runtime dependencies only

install: $(DEV_STAMP) ## dev: .venv with the runtime and the dev tools (idempotent)

run: $(RUNTIME_STAMP) ## user: run with the simulated sensor; data in ./data, http://127.0.0.1:8765/
	$(BIN)/wilo-backend run --sensor sim --data-dir $(DATA_DIR)

test: install browser prometheus ## dev: the whole pytest suite (installs Debian's chromium and prometheus for its tests)
	$(BIN)/pytest

# test-fast: two workers (pytest-xdist, one a core); bytecode kept even where the environment
# says PYTHONDONTWRITEBYTECODE, since rewriting the tests' asserts anew took 10 s of every run.
test-fast: install ## dev: contributors' inner loop: all but slow/deploy/browser/prometheus tests
	env -u PYTHONDONTWRITEBYTECODE HYPOTHESIS_PROFILE=dev $(BIN)/pytest -q -n 2 \
	  -m "not slow and not deploy and not browser and not prometheus"

lint: install ## dev: ruff, mypy --strict and the deployment linters
	$(BIN)/ruff check backend tests bench image
	$(BIN)/ruff format --check backend tests bench image
	$(BIN)/mypy
	$(BIN)/yamllint --strict .
	ANSIBLE_HOME=$(abspath .ansible) $(BIN)/ansible-lint --offline --profile production ansible/
	$(BIN)/actionlint

bench: install ## dev: benchmarks; figures go in BENCHMARKS.md
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean: ## dev: remove the virtualenv and build output
	rm -rf $(VENV) $(DIST_DIR) build *.egg-info backend/*.egg-info

# make molecule: the real playbooks on throwaway systemd-nspawn test hosts (root; see README "Molecule").
# Ansible's and Molecule's own files go under MOLECULE_HOME, not /root.
# arm64 (the Pi's CPU under qemu user-mode emulation) is not among them: its every Python process
# is emulated, which takes it alone past make molecule's time budget; `make molecule-arm64` runs it.
MOLECULE_SCENARIOS ?= deploys default fleet legacy
# Scenarios run this many at a time (their test hosts, nets and run dirs are distinct). 2 on a
# 2-core machine: all four at once took 601 s against 698-780 s two at a time, but at that load
# default's restart lost 2.504 s of readings (bound 2.5 s); 2 at a time: 1.68 s (README
# "Molecule"). MOLECULE_JOBS=4 where there are more cores; 1 = one after the other.
MOLECULE_JOBS ?= 2
MOLECULE_HOME ?= /var/tmp/wilo-molecule
MOLECULE_DIST_DIR ?= $(DIST_DIR)/molecule-$(shell uname -m)
# the arm64 scenario's: exactly what `make dist` builds for the Pi (DIST_PLATFORM=aarch64)
MOLECULE_DIST_DIR_AARCH64 ?= $(DIST_DIR)/molecule-aarch64
# the scenarios' test hosts: what the final check looks for (other test hosts are not ours)
MOLECULE_HOSTS = $(shell sed -n 's/^  - name: \([a-z0-9-]*\).*/\1/p' $(MOLECULE_SCENARIOS:%=molecule/%/molecule.yml))

# The test hosts' names, addresses and run dirs are fixed per scenario: a second `make molecule`
# on the same machine waits for the first (MOLECULE_LOCK_WAIT seconds, then fails).
MOLECULE_LOCK ?= /var/tmp/wilo-molecule.lock
MOLECULE_LOCK_WAIT ?= 3600
# `make -n` runs lines that call $(MAKE): a dry run must not wait for the lock
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
define molecule_with_lock
@$(if $(DRY_RUN),,exec 9>>$(MOLECULE_LOCK); flock -n 9 || { \
  echo "make molecule: another run holds $(MOLECULE_LOCK); waiting up to $(MOLECULE_LOCK_WAIT) s"; \
  flock -w $(MOLECULE_LOCK_WAIT) 9 || { echo "make molecule: $(MOLECULE_LOCK) still held, giving up" >&2; exit 1; }; };) \
  $(MAKE) --no-print-directory molecule-locked $(1)
endef

molecule: install ## dev: Molecule scenarios deploys, default, fleet, legacy on nspawn test hosts (MOLECULE_JOBS at a time, 2); needs root
	$(call molecule_with_lock)

molecule-arm64: install ## dev: the arm64 Molecule scenario alone (the Pi's CPU under qemu); needs root
	$(call molecule_with_lock,MOLECULE_SCENARIOS=arm64)

# Each scenario's output is printed in one piece when it ends (-O); -k lets the others finish.
molecule-locked:
	$(if $(filter-out arm64,$(MOLECULE_SCENARIOS)),$(MAKE) dist DIST_DIR=$(MOLECULE_DIST_DIR) TARGET_PLATFORM=manylinux2014_$(shell uname -m) TARGET_PYTHON=3.11)
	$(if $(filter arm64,$(MOLECULE_SCENARIOS)),$(MAKE) dist DIST_DIR=$(MOLECULE_DIST_DIR_AARCH64))
	@set -o pipefail; t0=$$SECONDS; rc=0; \
	  $(MAKE) --no-print-directory -j$(MOLECULE_JOBS) -O -k $(MOLECULE_SCENARIOS:%=molecule-scenario-%) || rc=1; \
	  echo "make molecule: $(MOLECULE_SCENARIOS) in $$((SECONDS - t0)) s (-j$(MOLECULE_JOBS)), load average $$(cut -d' ' -f1-3 /proc/loadavg)"; \
	  molecule/testhost.sh leftovers $(MOLECULE_HOSTS) || rc=1; exit $$rc

# create.yml builds (or reuses) each platform's root filesystem; builds of one wait for each other
molecule-scenario-%:
	set -o pipefail; PATH=$(abspath $(BIN)):$$PATH ANSIBLE_HOME=$(MOLECULE_HOME)/ansible \
	  WILO_MOLECULE_DIST=$(abspath $(MOLECULE_DIST_DIR)) WILO_MOLECULE_DIST_AARCH64=$(abspath $(MOLECULE_DIST_DIR_AARCH64)) \
	  $(BIN)/molecule test -s $* 2>&1 | $(BIN)/python -u molecule/timings.py

# make dist / deploy: see README "Deployment". dist/ holds wheelhouse/ (the project wheel and every
# runtime dependency, binary wheels for DIST_PLATFORM / TARGET_PYTHON), build-info.json, SHA256SUMS.
dist: install ## user: wheel + wheelhouse for the target (DIST_PLATFORM=aarch64|x86_64, TARGET_PYTHON=3.11)
	rm -rf $(DIST_DIR)/wheelhouse $(DIST_DIR)/build-info.json $(DIST_DIR)/SHA256SUMS
	mkdir -p $(DIST_DIR)/wheelhouse
	# From a clean copy (no stale build/ files) with zip times from the last commit: the same
	# sources give a byte-identical wheel, so an unchanged deploy is the same release (no restart).
	set -e; src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	  tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml README.md backend/wilo_backend \
	    | tar -x -C "$$src"; \
	  SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) \
	    $(BIN)/pip wheel --quiet --no-deps --wheel-dir $(DIST_DIR)/wheelhouse "$$src"
	$(BIN)/pip download --quiet --only-binary=:all: $(DIST_PIP_PLATFORMS) \
	  --python-version $(TARGET_PYTHON) --implementation cp --abi cp$(subst .,,$(TARGET_PYTHON)) \
	  --dest $(DIST_DIR)/wheelhouse -r backend/requirements.txt
	cd $(DIST_DIR) && sha256sum wheelhouse/*.whl > SHA256SUMS
	set -e; wheel=$$(cd $(DIST_DIR)/wheelhouse && ls wilo_backend-*.whl); \
	  version=$$(echo "$$wheel" | cut -d- -f2); \
	  printf '{"version": "%s", "wheel": "%s", "platform": "%s", "python": "%s"}\n' \
	    "$$version" "$$wheel" "$(DIST_PLATFORM)" "$(TARGET_PYTHON)" > $(DIST_DIR)/build-info.json
	@echo "dist: $$(ls $(DIST_DIR)/wheelhouse | wc -l) wheels for $(DIST_PLATFORM) / CPython $(TARGET_PYTHON) in $(DIST_DIR)/"

# The only target that uses the production inventory (tests/deploy/test_no_production.py).
deploy: dist ## user: make dist + the deploy playbook (INVENTORY=, PLAYBOOK=, LIMIT= to override; needs the dev tools: Ansible)
	ANSIBLE_CONFIG=$(abspath ansible/ansible.cfg) $(BIN)/ansible-playbook -i $(INVENTORY) $(PLAYBOOK) \
	  -e wilo_backend_dist_dir=$(abspath $(DIST_DIR)) $(if $(LIMIT),--limit $(LIMIT)) $(ANSIBLE_ARGS)

.PHONY: prometheus
prometheus: ## dev: Debian's prometheus (brings promtool) for monitoring/'s checks and its integration test
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus; }

.PHONY: qemu-system
qemu-system: ## dev: Debian's qemu-system-arm (qemu-system-aarch64) and ssh for make image-test
	@command -v qemu-system-aarch64 >/dev/null && command -v ssh >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends qemu-system-arm openssh-client; }

.PHONY: browser
browser: ## dev: Debian's chromium for the live-page browser test (Playwright's own browser download fails here)
	@command -v chromium >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium; }

# make soak: the service under load with injected faults, every sample accounted (RELIABILITY.md).
# Needs root for the loop-mounted data filesystem (disk-full window); SOAK_DIR holds log and report.
SOAK_MINUTES ?= 30
SOAK_DIR ?= /var/tmp/wilo-soak
soak: install ## dev: soak test: faults, kills, disk full, clock step under load (SOAK_MINUTES=30)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --workdir $(SOAK_DIR) $(SOAK_ARGS)

# make image / image-test: the appliance SD image (README "The appliance image"; needs root).
# The arm64 base and the package layer are cached (/var/cache/wilo-testhost, /var/cache/wilo-image).
.PHONY: image image-test image-drill
image: ## user: the Raspberry Pi SD image dist/wilo-appliance-<version>-arm64.img.xz; needs root
	$(MAKE) dist DIST_DIR=$(DIST_DIR) TARGET_PLATFORM=manylinux2014_aarch64 TARGET_PYTHON=3.11
	DIST_DIR=$(DIST_DIR) BIN=$(abspath $(BIN)) image/build.sh

IMAGE_TEST_ARGS ?=
image-test: install qemu-system ## dev: boot the built image in qemu-system-aarch64: bad settings, first boot (SSH, /healthz, 800 rows/s), second boot
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m image.vmtest --dist-dir $(DIST_DIR) $(IMAGE_TEST_ARGS)

image-drill: install qemu-system ## dev: make image-test, then deploy.yml upgrades the booted image and rollback.yml goes back
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m image.vmtest --dist-dir $(DIST_DIR) --drill $(IMAGE_TEST_ARGS)
