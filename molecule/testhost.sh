#!/bin/bash
# testhost.sh - throwaway Debian bookworm test hosts for Molecule: real systemd as PID 1 inside
# systemd-nspawn, each in its own network namespace, sshd on TCP 2121 with key login.
#
#   testhost.sh build                      deps + cached root filesystem (fast when cached)
#   testhost.sh up NAME NET LAYOUT         boot NAME on an overlay; NET = 1..254 picks
#                                          10.200.NET.1 (host) <-> 10.200.NET.2 (guest);
#                                          LAYOUT = bookworm (/boot/firmware/*.txt) | legacy (/boot/*.txt)
#   testhost.sh ssh NAME CMD...            run CMD on the test host as root
#   testhost.sh down NAME                  stop by PID, remove cgroups, unmount, delete veth + run dir
#   testhost.sh leftovers [NAME...]        list what is left of (these) test hosts; rc 1 if any
#
# TESTHOST_ARCH=arm64 (build and up): the Pi's architecture, run through Debian's qemu-user-static
# with binfmt_misc (FACTS.md "The Pi's architecture under emulation"); default: this machine's.
#
# Works without systemd as the host's init and with hybrid cgroup v1 (hence --register=no
# --keep-unit and a cgroup of our own), as on the CI machines. Needs root.
set -euo pipefail

CACHE=${TESTHOST_CACHE:-/var/cache/wilo-testhost}   # rootfs tarball + its unpacked lower layer
STATE=${TESTHOST_STATE:-/var/tmp/wilo-testhost}     # one run dir per live test host
PORT=2121
SUITE=bookworm
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
ARCH=${TESTHOST_ARCH:-$HOST_ARCH}
[[ $ARCH =~ ^(amd64|arm64)$ ]] || { echo "testhost: bad TESTHOST_ARCH '$ARCH': amd64 or arm64" >&2; exit 1; }
# What the roles would install must be here: the test hosts have no route to a package mirror.
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,python3,python3-venv,python3-apt,sudo,iproute2,kmod,acl,procps,ca-certificates
# The cache key: a different include list (or suite, or this layout version) builds a new rootfs.
# The host's own architecture keeps its old key (caches built before arm64 stay valid).
if [ "$ARCH" = "$HOST_ARCH" ]; then
  KEY=$(printf '%s|%s|minbase|v1' "$SUITE" "$INCLUDE" | sha256sum | cut -c1-12)
else
  KEY=$ARCH-$(printf '%s|%s|%s|minbase|v1' "$SUITE" "$ARCH" "$INCLUDE" | sha256sum | cut -c1-12)
fi
TARBALL=$CACHE/rootfs-$SUITE-$KEY.tar
LOWER=$CACHE/rootfs-$SUITE-$KEY

die() { echo "testhost: $*" >&2; exit 1; }
log() { echo "testhost: $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn, mounts, cgroups, veth)"

valid_name() {
  # ve-NAME must fit the 15-character interface name limit; NAME also names the cgroup and run dir
  [[ $1 =~ ^[a-z][a-z0-9-]{0,11}$ ]] || die "bad NAME '$1': 1-12 chars of [a-z0-9-], starting with a letter"
}

set_instance() {
  valid_name "$1"
  NAME=$1
  RUN=$STATE/run-$NAME
  if [ -d /sys/fs/cgroup/systemd ]; then   # hybrid v1 (this project's CI machines): both hierarchies
    CG=(/sys/fs/cgroup/systemd/wilo-testhost-"$NAME" /sys/fs/cgroup/unified/wilo-testhost-"$NAME")
  else                                     # pure cgroup v2 (e.g. a systemd-booted runner; untested)
    CG=(/sys/fs/cgroup/wilo-testhost-"$NAME")
  fi
}

ssh_cmd() {
  local addr
  addr=$(cat "$RUN/address" 2>/dev/null) || die "$NAME is not up (no $RUN/address)"
  SSH=(ssh -p "$PORT" -i "$RUN/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
       -o LogLevel=ERROR -o ConnectTimeout=2 -o BatchMode=yes root@"$addr")
}

install_deps() {
  local missing=() cmd pkg
  for cmd in debootstrap:debootstrap systemd-nspawn:systemd-container ip:iproute2 \
             ssh:openssh-client ssh-keygen:openssh-client nsenter:util-linux \
             /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring; do
    command -v "${cmd%%:*}" >/dev/null || [ -e "${cmd%%:*}" ] || missing+=("${cmd##*:}")
  done
  if [ "$ARCH" != "$HOST_ARCH" ]; then
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  fi
  [ ${#missing[@]} = 0 ] || {
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
  for pkg in "${missing[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || die "could not install $pkg"; done
  }
  [ "$ARCH" = "$HOST_ARCH" ] || enable_binfmt
}

# arm64 binaries run through qemu-aarch64 (F flag: no emulator copied into the rootfs). The
# binfmt_misc filesystem is not mounted by default on these machines.
enable_binfmt() {
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 ||
    die "cannot register qemu-aarch64 with binfmt_misc"
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    die "qemu-aarch64 is registered without the F flag: arm64 binaries would not run in a chroot"
}

build() {
  install_deps
  mkdir -p "$CACHE"
  # two builds of one rootfs at once would debootstrap into one dir; the other architecture's
  # build may run beside this one (make molecule starts both)
  exec 9>"$CACHE/.lock-$KEY"
  flock 9
  if [ ! -f "$TARBALL" ]; then
    local mirror tmp t0=$SECONDS
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$CACHE/.build-$KEY
    rm -rf "$tmp"
    log "debootstrap $SUITE $ARCH from $mirror (include: $INCLUDE)"
    debootstrap --arch="$ARCH" --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" >"$CACHE/debootstrap-$KEY.log" 2>&1 ||
      { tail -20 "$CACHE/debootstrap-$KEY.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap-$KEY.log)"; }
    chroot "$tmp" apt-get clean            # ~50 MB of cached .debs nobody needs
    tar -C "$tmp" --numeric-owner -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$tmp"
    log "rootfs built in $((SECONDS - t0)) s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
    prune
  fi
  if [ ! -f "$LOWER/.complete" ]; then   # the pristine lower layer, never booted directly
    rm -rf "$LOWER"
    mkdir -p "$LOWER"
    tar -C "$LOWER" --numeric-owner -xpf "$TARBALL"
    touch "$LOWER/.complete"
  fi
  flock -u 9
}

# Drop this architecture's rootfs caches of older include lists, unless a live overlay still
# uses them. The other architecture's are left alone: the amd64 Molecule hosts and the arm64
# image build (and arm64 scenario) share this cache, and each needs its own.
prune() {
  local old name
  for old in "$CACHE"/rootfs-*; do
    [ -e "$old" ] || continue
    [ "$old" = "$TARBALL" ] || [ "$old" = "$LOWER" ] && continue
    name=${old#"$CACHE"/rootfs-"$SUITE"-}
    if [ "$ARCH" = "$HOST_ARCH" ]; then
      [[ $name =~ ^[0-9a-f]{12}(\.tar)?$ ]] || continue
    else
      [[ $name == "$ARCH"-* ]] || continue
    fi
    grep -q "lowerdir=$old" /proc/mounts || rm -rf "$old"
  done
}

write_boot_files() {
  local m=$1 layout=$2 fw
  case $layout in
    bookworm)
      fw=$m/boot/firmware
      mkdir -p "$fw"
      # as on Raspberry Pi OS bookworm: the old path is a do-not-edit stub
      printf '%s\n' 'DO NOT EDIT THIS FILE' '' \
        'The file you are looking for has moved to /boot/firmware/config.txt' > "$m/boot/config.txt"
      ;;
    legacy) fw=$m/boot; mkdir -p "$fw" ;;
    *) die "bad LAYOUT '$layout': bookworm or legacy" ;;
  esac
  # Pi OS-like config.txt: I2C commented out, model filters, and (legacy) a [pi4] section last,
  # so the role has to add its own [all] section.
  {
    printf '%s\n' '# imitation of Raspberry Pi OS config.txt (wilo-backend test host)' \
      '#dtparam=i2c_arm=on' '#dtparam=i2s=on' '#dtparam=spi=on' 'dtparam=audio=on' \
      'camera_auto_detect=1' 'display_auto_detect=1' 'dtoverlay=vc4-kms-v3d' 'max_framebuffers=2' \
      'arm_64bit=1' '' '[cm4]' 'otg_mode=1' ''
    if [ "$layout" = legacy ]; then printf '%s\n' '[pi4]' 'arm_boost=1'
    else printf '%s\n' '[all]'; fi
  } > "$fw/config.txt"
  # legacy carries an isolcpus of another value: the role must replace it, keeping the rest
  local extra=""
  [ "$layout" = legacy ] && extra=" isolcpus=2"
  echo "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait${extra} quiet splash" \
    > "$fw/cmdline.txt"
}

# Units of the test host itself (in its overlay, not in the cached rootfs):
# - testhost-net: eth0's address at every boot (a reboot makes a new veth pair);
# - testhost-kernel: what a Pi's firmware does at boot, pass cmdline.txt to the kernel: it is
#   bind-mounted over /proc/cmdline, and its isolcpus= over /sys/devices/system/cpu/isolated,
#   so the roles see the parameters of the boot files the test host last booted with.
write_guest_units() {
  local m=$1 layout=$2 guest_ip=$3 host_ip=$4 boot=/boot/firmware u=$1/etc/systemd/system
  [ "$layout" = legacy ] && boot=/boot
  cat > "$u/testhost-net.service" <<UNIT
[Unit]
Description=test host network: eth0 $guest_ip/24 via $host_ip
DefaultDependencies=no
Before=network.target ssh.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for i in \$\$(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done; ip link set lo up; ip addr add $guest_ip/24 dev eth0; ip link set eth0 up; ip route add default via $host_ip'
[Install]
WantedBy=sysinit.target
UNIT
  cat > "$u/testhost-kernel.service" <<UNIT
[Unit]
Description=test host kernel parameters from $boot/cmdline.txt (as the Pi's firmware passes them)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'cp $boot/cmdline.txt /run/testhost-cmdline && mount --bind /run/testhost-cmdline /proc/cmdline'
ExecStart=/bin/sh -c 'tr " " "\\\\n" < /run/testhost-cmdline | sed -n "s/^isolcpus=//p" | tail -1 > /run/testhost-isolated && mount --bind /run/testhost-isolated /sys/devices/system/cpu/isolated'
[Install]
WantedBy=sysinit.target
UNIT
  mkdir -p "$u/sysinit.target.wants"
  ln -sf ../testhost-net.service "$u/sysinit.target.wants/testhost-net.service"
  ln -sf ../testhost-kernel.service "$u/sysinit.target.wants/testhost-kernel.service"
}

# Emulated test hosts only (FACTS.md "The Pi's architecture under emulation"): under qemu
# user-mode emulation systemd cannot set up a unit's credentials directory, and every unit with a
# LoadCredential= fails with 243/CREDENTIALS (systemd-sysusers, systemd-tmpfiles-setup, -setup-dev,
# systemd-sysctl: the system would be `degraded`). Nobody passes this test host credentials, so
# those units get a drop-in clearing LoadCredential= and run for real, and `up` still requires
# the state `running`, as for the host's own architecture.
write_emulation_dropins() {
  local m=$1 unit d
  for unit in $(grep -l '^LoadCredential=' "$m"/lib/systemd/system/*.service); do
    d=$m/etc/systemd/system/$(basename "$unit").d
    mkdir -p "$d"
    printf '%s\n' '# testhost.sh: no credentials under qemu user-mode emulation (243/CREDENTIALS)' \
      '[Service]' 'LoadCredential=' > "$d/testhost-qemu-user.conf"
  done
}

# The test host's supervisor (run by `up` with setsid): boots it with systemd-nspawn, gives the
# host end of each new veth its address, and boots it again when it rebooted (nspawn exit 133)
# unless `down` is stopping it.
supervise() {
  set_instance "$1"
  local host_ip=$2 np rc i
  for c in "${CG[@]}"; do echo $$ > "$c/cgroup.procs"; done
  while :; do
    systemd-nspawn -b -D "$RUN/merged" -M "$NAME" --register=no --keep-unit \
      --network-veth-extra="ve-$NAME:eth0" --resolv-conf=off --timezone=off --console=read-only &
    np=$!
    echo "$np" > "$RUN/nspawn.pid"
    for i in $(seq 200); do ip link show "ve-$NAME" >/dev/null 2>&1 && break; sleep 0.1; done
    ip addr add "$host_ip/24" dev "ve-$NAME"
    ip link set "ve-$NAME" up
    rc=0
    wait "$np" || rc=$?
    if [ "$rc" != 133 ] || [ -e "$RUN/stopping" ]; then exit "$rc"; fi
    log "$NAME rebooted: booting it again"
  done
}

up() {
  set_instance "$1"
  local net=$2 layout=$3
  [[ $net =~ ^[0-9]+$ ]] && [ "$net" -ge 1 ] && [ "$net" -le 254 ] || die "bad NET '$net': 1..254"
  local host_ip=10.200.$net.1 guest_ip=10.200.$net.2
  # a leftover of an earlier run would be booted over, or hide a host that never went down
  [ -e "$RUN" ] && die "stale run dir $RUN exists: run '$0 down $NAME' first"
  ip link show "ve-$NAME" >/dev/null 2>&1 && die "interface ve-$NAME already exists"
  if ip -4 addr show | grep -q " $host_ip/"; then die "address $host_ip already in use on this host"; fi
  [ -f "$LOWER/.complete" ] || die "no $ARCH root filesystem: run 'TESTHOST_ARCH=$ARCH $0 build' first"
  [ "$ARCH" = "$HOST_ARCH" ] || enable_binfmt

  local t0=$SECONDS m=$RUN/merged np init="" i
  mkdir -p "$RUN"/{upper,work,merged}
  echo "$layout" > "$RUN/layout"
  echo "$ARCH" > "$RUN/arch"
  ssh-keygen -q -t ed25519 -N '' -C "molecule@$NAME" -f "$RUN/id_ed25519"

  # 1. writable throwaway layer over the pristine rootfs, plus this instance's files
  mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RUN/upper,workdir=$RUN/work" "$m"
  echo "$NAME" > "$m/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$NAME" > "$m/etc/hosts"
  echo 'nameserver 127.0.0.1' > "$m/etc/resolv.conf"  # no DNS in the netns: fail fast, not 20 s timeouts
  install -d -m 700 "$m/root/.ssh"
  install -m 600 "$RUN/id_ed25519.pub" "$m/root/.ssh/authorized_keys"
  printf 'Port %s\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' "$PORT" \
    > "$m/etc/ssh/sshd_config.d/10-testhost.conf"
  write_boot_files "$m" "$layout"

  write_guest_units "$m" "$layout" "$guest_ip" "$host_ip"
  [ "$ARCH" = "$HOST_ARCH" ] || write_emulation_dropins "$m"

  # 2. a cgroup of our own, so nspawn's payload/supervisor cgroups land below it and can be removed
  mkdir -p "${CG[@]}"
  # 3. boot under a supervisor that boots the host again when it reboots (the Pi's reboot)
  setsid "$0" supervise "$NAME" "$host_ip" > "$RUN/console.log" 2>&1 < /dev/null &
  echo $! > "$RUN/supervisor.pid"
  for i in $(seq 200); do
    np=$(cat "$RUN/nspawn.pid" 2>/dev/null || true)
    init=$(awk '{print $1}' /proc/"$np"/task/"$np"/children 2>/dev/null || true)
    [ -n "$init" ] && break
    kill -0 "$(cat "$RUN/supervisor.pid")" 2>/dev/null || { cat "$RUN/console.log" >&2; die "systemd-nspawn for $NAME exited"; }
    sleep 0.1
  done
  [ -n "$init" ] || die "$NAME: no container init after 20 s (console: $RUN/console.log)"
  echo "$guest_ip" > "$RUN/address"

  # 6. sshd, then systemd done booting
  ssh_cmd
  for i in $(seq 300); do "${SSH[@]}" true 2>/dev/null && break; sleep 0.1; done
  "${SSH[@]}" true || die "$NAME: no ssh on $guest_ip:$PORT after 30 s (console: $RUN/console.log)"
  local st
  st=$("${SSH[@]}" 'systemctl is-system-running --wait' || true)
  if [ "$st" != running ]; then
    "${SSH[@]}" 'systemctl --failed --no-legend' >&2 || true
    die "$NAME: system state '$st', not running"
  fi
  log "$NAME up at $guest_ip:$PORT ($layout) in $((SECONDS - t0)) s; nspawn pid $np, init pid $init"
}

down() {
  set_instance "$1"
  local np init sup c i
  [ -d "$RUN" ] && touch "$RUN/stopping"   # the supervisor must not boot it again
  sup=$(cat "$RUN/supervisor.pid" 2>/dev/null || true)
  np=$(cat "$RUN/nspawn.pid" 2>/dev/null || true)
  init=$(awk '{print $1}' /proc/"$np"/task/"$np"/children 2>/dev/null || true)
  if [ -n "$np" ] && kill -0 "$np" 2>/dev/null; then
    # An emulated systemd does not act on nspawn's power-off signal (SIGRTMIN+4; measured: nothing
    # within 30 s), but powers off in ~5 s when asked over SSH.
    if [ "$(cat "$RUN/arch" 2>/dev/null || echo "$HOST_ARCH")" != "$HOST_ARCH" ]; then
      ssh_cmd; "${SSH[@]}" 'systemctl poweroff --no-block' || log "$NAME: no poweroff over SSH"
    fi
    kill -TERM "$np"                      # nspawn asks the container's systemd to power off
    for i in $(seq 300); do kill -0 "$np" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$np" 2>/dev/null && { log "$NAME: nspawn ignored SIGTERM for 30 s, killing"; kill -KILL "$np"; }
  fi
  # container PID 1 gone => its whole PID namespace is gone
  if [ -n "$init" ] && kill -0 "$init" 2>/dev/null; then kill -KILL "$init"; fi
  if [ -n "$sup" ]; then
    for i in $(seq 50); do kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$sup" 2>/dev/null && kill -KILL "$sup"
  fi
  for c in "${CG[@]}"; do
    [ -d "$c" ] || continue
    for i in $(seq 50); do
      [ -z "$(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
      sleep 0.1
    done
    [ -z "$(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] || die "processes left in $c"
    find "$c" -depth -type d -exec rmdir {} \;
  done
  if mountpoint -q "$RUN/merged" 2>/dev/null; then umount "$RUN/merged"; fi
  # normally gone with the netns; an address of ours left on it would block the next run
  if ip link show "ve-$NAME" >/dev/null 2>&1; then ip link del "ve-$NAME"; fi
  rm -rf "$RUN"
  log "$NAME down"
}

leftovers() {
  # no NAME: any test host of this script; with NAMEs: only those (others may be someone else's)
  local found=0 pat='[a-z0-9-]+' n
  if [ $# -gt 0 ]; then
    for n in "$@"; do valid_name "$n"; done
    pat="($(IFS='|'; echo "$*"))"
  fi
  if ls "$STATE" 2>/dev/null | grep -Ex "run-$pat" >&2; then found=1; fi
  if grep -E "$STATE/run-$pat/" /proc/mounts >&2; then found=1; fi
  if ls /sys/fs/cgroup/ /sys/fs/cgroup/*/ 2>/dev/null | grep -Ex "wilo-testhost-$pat" >&2; then found=1; fi
  if ip -o link show | grep -E " ve-$pat[:@]" >&2; then found=1; fi
  if pgrep -a -x systemd-nspawn | grep -E " -M $pat " >&2; then found=1; fi
  # a network namespace lives as long as a process in it (or a bind mount, listed above)
  if [ "$found" = 0 ]; then log "nothing left behind (processes, mounts, cgroups, veths, netns)"; fi
  return $found
}

case "${1:-}" in
  build) build ;;
  up) [ $# = 4 ] || die "usage: $0 up NAME NET LAYOUT"; up "$2" "$3" "$4" ;;
  down) [ $# = 2 ] || die "usage: $0 down NAME"; down "$2" ;;
  ssh) [ $# -ge 3 ] || die "usage: $0 ssh NAME CMD..."; set_instance "$2"; shift 2; ssh_cmd; "${SSH[@]}" "$@" ;;
  leftovers) shift; leftovers "$@" ;;
  supervise) [ $# = 3 ] || die "usage: $0 supervise NAME HOST_IP (run by up)"; supervise "$2" "$3" ;;
  prune) prune ;;           # (build does this after a new rootfs; tests/deploy/test_testhost_cache.py)
  lower) echo "$LOWER" ;;   # the cached root filesystem of TESTHOST_ARCH (for the image build)
  *) echo "usage: $0 build | lower | up NAME NET bookworm|legacy | ssh NAME CMD... | down NAME | leftovers [NAME...]" >&2; exit 2 ;;
esac
