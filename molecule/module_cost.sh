#!/bin/bash
# module_cost.sh - what one Ansible module run costs on an arm64 test host (the Pi's CPU under
# qemu-user) against an x86_64 one: the figure that bounds `make molecule-arm64` (README
# "Molecule"). Boots wilo-a64 and wilo-dr (the arm64 and deploys scenarios' names, so it takes
# make molecule's lock), runs `ping`, `stat` and `command true` RUNS times on each with a warm
# SSH master and pipelining, prints one line per run, and takes both hosts down. Needs root.
#
#   molecule/module_cost.sh [RUNS]      (default 5; the virtualenv from `make install`)
set -euo pipefail
export LC_ALL=C.UTF-8  # Ansible wants UTF-8; printf's %f then reads "1234e-9" with a decimal point
cd "$(dirname "$0")/.."
runs=${1:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "module_cost.sh: RUNS must be a positive integer, not '$runs'" >&2; exit 2; }
[ -x .venv/bin/ansible ] || { echo "module_cost.sh: no .venv/bin/ansible; run make install first" >&2; exit 1; }
exec 9>>"${MOLECULE_LOCK:-/var/tmp/wilo-molecule.lock}"
flock -w 3600 9 || { echo "module_cost.sh: the molecule lock is still held" >&2; exit 1; }
export PATH=$PWD/.venv/bin:$PATH ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PIPELINING=True ANSIBLE_DEPRECATION_WARNINGS=False
ANSIBLE_SSH_CONTROL_PATH_DIR=$(mktemp -d)
export ANSIBLE_SSH_CONTROL_PATH_DIR
host_up=""
trap '[ -z "$host_up" ] || molecule/testhost.sh down "$host_up" >/dev/null; rm -rf "$ANSIBLE_SSH_CONTROL_PATH_DIR"' EXIT
state=${TESTHOST_STATE:-/var/tmp/wilo-testhost}
echo "module_cost.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
for spec in arm64:wilo-a64:41 native:wilo-dr:23; do
  IFS=: read -r arch name net <<<"$spec"
  host_up=$name  # before `up`: a host that fails half-way up is taken down too
  TESTHOST_ARCH=${arch/native/} molecule/testhost.sh up "$name" "$net" bookworm >/dev/null
  adhoc=(ansible all -i "10.200.$net.2," -u root -e ansible_port=2121
         -e ansible_python_interpreter=/usr/bin/python3 --private-key "$state/run-$name/id_ed25519")
  "${adhoc[@]}" -m ping >/dev/null  # opens the SSH master: not counted
  for module in "ping" "stat -a path=/etc" "command -a true"; do
    for run in $(seq "$runs"); do
      t0=$(date +%s%N)
      # shellcheck disable=SC2086 # the module and its arguments are words on purpose
      "${adhoc[@]}" -m $module >/dev/null
      printf '%-7s %-18s run %d: %5.2f s (load %s)\n' "$arch" "$module" "$run" \
        "$(( $(date +%s%N) - t0 ))e-9" "$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
  molecule/testhost.sh down "$name" >/dev/null
  host_up=""
done
