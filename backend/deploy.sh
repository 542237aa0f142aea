#!/usr/bin/env bash
# Deploy wilo-backend with the playbook `make deploy` runs (ansible/deploy.yml by default).
#
#   backend/deploy.sh [local]          on the Pi itself: connection local, dist for this machine
#   SERVER_HOST=10.0.0.5 SERVER_USER=pi [SERVER_PORT=2121] backend/deploy.sh remote
#                                      over SSH to one Pi (dist for DIST_PLATFORM, default aarch64)
#
# PLAYBOOK=ansible/site.yml also tunes the Pi (boot files, governor; see README "Deployment").
# ANSIBLE_ARGS="-e wilo_backend_sensor_driver=sim" passes arguments on to ansible-playbook.
# DRY_RUN=1 prints the inventory and the command instead of running them.
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
}

cd "$(dirname "$0")/.."
mode=${1:-local}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
inventory=$workdir/hosts.yml

case $mode in
  local)
    platform=$(uname -m)
    cat > "$inventory" <<YAML
wilo_pis:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
YAML
    ;;
  remote)
    : "${SERVER_HOST:?set SERVER_HOST (the Pi to deploy to) and SERVER_USER for a remote deploy}"
    : "${SERVER_USER:?set SERVER_USER (the SSH user on ${SERVER_HOST}, with sudo)}"
    port=${SERVER_PORT:-2121}
    if ! [[ $port =~ ^[0-9]+$ ]]; then
      echo "deploy.sh: SERVER_PORT must be a number, got '$port'" >&2
      exit 2
    fi
    if ! [[ $SERVER_HOST =~ ^[A-Za-z0-9._:-]+$ && $SERVER_USER =~ ^[A-Za-z0-9._-]+$ ]]; then
      echo "deploy.sh: SERVER_HOST '$SERVER_HOST' or SERVER_USER '$SERVER_USER' has odd characters" >&2
      exit 2
    fi
    platform=${DIST_PLATFORM:-aarch64}
    cat > "$inventory" <<YAML
wilo_pis:
  hosts:
    target:
      ansible_host: "${SERVER_HOST}"
      ansible_port: ${port}
      ansible_user: "${SERVER_USER}"
YAML
    ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  *)
    echo "deploy.sh: unknown mode '$mode' (local or remote)" >&2
    usage
    exit 2
    ;;
esac

cmd=(make deploy "INVENTORY=$inventory" "PLAYBOOK=${PLAYBOOK:-ansible/deploy.yml}"
  "DIST_PLATFORM=$platform")
if [[ -n ${DRY_RUN:-} ]]; then
  cat "$inventory"
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
"${cmd[@]}"
