#!/bin/bash
# build.sh - `make image`: dist/wilo-appliance-<version>-arm64.img.xz (+ .sha256, .bmap) from
#   1. the arm64 base root filesystem (molecule/testhost.sh, cached; the arm64 Molecule host's too)
#   2. the package layer (image/layer.sh: kernel, Pi firmware, ...; cached by its inputs)
#   3. the roles, in image mode, through Ansible's chroot connection (ansible/image.yml) with
#      the aarch64 release of `make dist` (DIST_DIR), and the image's own files (image/rootfs/)
#   4. an MBR disk: FAT /boot/firmware + ext4 root, written as files (mkfs.vfat + mtools,
#      mkfs.ext4 -d, sfdisk, dd): no loop device, no mount, works in any root container.
# Needs root. See README "The appliance image".
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/.venv/bin}
DIST_DIR=$(cd "${DIST_DIR:-$REPO/dist}" && pwd)
OUT_DIR=${IMAGE_OUT_DIR:-$DIST_DIR}
CACHE=${IMAGE_CACHE:-/var/cache/wilo-image}
WORK=${IMAGE_WORK:-/var/tmp/wilo-image-build}
# FAT boot partition: kernel + initrd + device trees + firmware take ~60 MiB.
BOOT_MIB=256
ROOT_LABEL=wilo-root
BOOT_LABEL=WILO-BOOT
# community.general (for its chroot connection) and ansible.posix (profile_tasks: each task's time
# in the build log) are not in ansible-core: taken from the `ansible` package of the same release
# line, pinned by hash, unpacked into the repo's .ansible/.
COLLECTIONS=$REPO/.ansible/image-collections
ANSIBLE_WHEEL="ansible==12.3.0 --hash=sha256:cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414"

log() { echo "image: $*" >&2; }
die() { log "$*"; exit 1; }
step() { log "$1 ($((SECONDS - t_step)) s)"; t_step=$SECONDS; }
[ "$(id -u)" = 0 ] || die "needs root (chroot, binfmt_misc, the roles' file owners)"
[ -f "$DIST_DIR/build-info.json" ] || die "no $DIST_DIR/build-info.json: run make dist (aarch64) first"
VERSION=$("$BIN/python" -c 'import json,sys; b=json.load(open(sys.argv[1])); assert b["platform"] == "aarch64", "the dist is for " + b["platform"] + ", not aarch64"; print(b["version"])' "$DIST_DIR/build-info.json")
NAME=wilo-appliance-$VERSION-arm64
for cmd in sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs xz:xz-utils bmaptool:bmap-tools unzip:unzip; do
  command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd##*:}")
done
if [ -n "${missing[*]:-}" ]; then
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
t0=$SECONDS
t_step=$SECONDS

# 1. the base (waits for a build already under way: testhost.sh takes a lock)
TESTHOST_ARCH=arm64 "$REPO/molecule/testhost.sh" build
LOWER=$(TESTHOST_ARCH=arm64 "$REPO/molecule/testhost.sh" lower)
step "base root filesystem: $LOWER"

# 2. the package layer, keyed by the base and everything layer.sh does
mkdir -p "$CACHE"
KEY=$(cat <(basename "$LOWER") "$REPO/image/layer.sh" | sha256sum | cut -c1-12)
LAYER=$CACHE/layer-$KEY

# The image is keyed by everything that goes into it: the layer's key, this script, the image's
# own files (content and modes), the roles and playbooks, the dist, Ansible's and the
# collections' versions, the xz level. The same inputs again: the image already built is kept
# (its checksum verified) and nothing is rebuilt.
XZ_LEVEL=${IMAGE_XZ_LEVEL:-1}
INPUTS=$(
  cd "$REPO"
  {
    echo "$KEY $ANSIBLE_WHEEL xz-$XZ_LEVEL $NAME"
    "$BIN/ansible-playbook" --version | head -1
    cat image/build.sh "$DIST_DIR/build-info.json" "$DIST_DIR/SHA256SUMS"
    find image/rootfs ansible -path '*/__pycache__' -prune -o \( -type f -o -type l \) \
      -printf '%p %m %l\n' | LC_ALL=C sort
    find image/rootfs ansible -path '*/__pycache__' -prune -o -type f -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)
if [ "${IMAGE_REBUILD:-0}" != 1 ] && [ "$(cat "$OUT_DIR/$NAME.img.inputs" 2>/dev/null)" = "$INPUTS" ] &&
  (cd "$OUT_DIR" && sha256sum --check --quiet "$NAME.img.xz.sha256"); then
  log "$OUT_DIR/$NAME.img.xz is up to date (inputs $INPUTS; IMAGE_REBUILD=1 builds it again)"
  exit 0
fi
rm -f "$OUT_DIR/$NAME.img.inputs"
exec 8>"$CACHE/.lock"
flock 8
if [ ! -f "$LAYER/.complete" ]; then
  log "building the package layer $LAYER (kernel, firmware: minutes under emulation)"
  "$REPO/image/layer.sh" "$LOWER" "$LAYER"
  for old in "$CACHE"/layer-*; do [ "$old" = "$LAYER" ] || rm -rf "$old"; done
fi
step "package layer: $LAYER"

# 3. the image's root: a copy of the layer, the image's files, then the roles
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  mounted=()
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"
ROOT=$WORK/root
cp -a "$LAYER" "$ROOT"
flock -u 8
rm -f "$ROOT/.complete"
cp -a "$REPO/image/rootfs/." "$ROOT/"
echo wilo-appliance >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\twilo-appliance\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# Nothing that must be unique per card ships: SSH host keys (first boot makes them), machine id.
rm -f "$ROOT"/etc/ssh/ssh_host_* "$ROOT/var/lib/dbus/machine-id"
: >"$ROOT/etc/machine-id"
for fs in proc sys dev dev/pts; do
  mount --bind "/$fs" "$ROOT/$fs"
  mounted+=("$ROOT/$fs")
done
chroot "$ROOT" systemctl enable --quiet systemd-networkd.service systemd-resolved.service wilo-firstboot.service

if [ ! -f "$COLLECTIONS/ansible_collections/community/general/plugins/connection/chroot.py" ] ||
  [ ! -f "$COLLECTIONS/ansible_collections/ansible/posix/plugins/callback/profile_tasks.py" ]; then
  log "unpacking community.general and ansible.posix from the pinned ansible package into $COLLECTIONS"
  dl=$(mktemp -d)
  echo "$ANSIBLE_WHEEL" >"$dl/requirements.txt"
  "$BIN/pip" download --quiet --no-deps --require-hashes -r "$dl/requirements.txt" -d "$dl"
  rm -rf "$COLLECTIONS.part"
  mkdir -p "$(dirname "$COLLECTIONS")"
  unzip -q "$dl"/ansible-*.whl 'ansible_collections/community/general/*' \
    'ansible_collections/ansible/posix/*' -d "$COLLECTIONS.part"
  rm -rf "$COLLECTIONS" "$dl"
  mv "$COLLECTIONS.part" "$COLLECTIONS"
fi
# Every module is an emulated Python (seconds each): pipelining feeds it on stdin, one emulated
# process per task instead of a copy, a chmod, a run and a cleanup.
# The chroot connection is the image host's own variable, in an inventory, not an extra var:
# extra vars win over everything, so tasks the roles delegate to the controller (the release's
# tar is packed there) ran inside the chroot too, where the dist is not.
log "applying pi_tuning and wilo_backend (image mode) to $ROOT"
printf 'wilo_image ansible_connection=community.general.chroot ansible_host=%s ansible_python_interpreter=/usr/bin/python3\n' \
  "$ROOT" >"$WORK/inventory"
ANSIBLE_CONFIG=$REPO/ansible/ansible.cfg ANSIBLE_HOME=$WORK/ansible-home \
  ANSIBLE_COLLECTIONS_PATH=$COLLECTIONS ANSIBLE_NOCOLOR=1 ANSIBLE_PIPELINING=1 \
  ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks PROFILE_TASKS_SORT_ORDER=none \
  PROFILE_TASKS_TASK_OUTPUT_LIMIT=all PATH=$BIN:$PATH \
  "$BIN/ansible-playbook" -i "$WORK/inventory" "$REPO/ansible/image.yml" \
  -e "wilo_backend_dist_dir=$DIST_DIR"
cleanup
rm -rf "${ROOT:?}"/tmp/* "$ROOT"/var/tmp/* "$ROOT/root/.ansible" "$ROOT/root/.cache"
find "$ROOT/var/log" -type f -size +0 -exec truncate -s 0 {} +
step "roles applied"

# 4. the disk: 4 MiB gap, FAT boot partition, ext4 root (used + 25 % + 256 MiB; first boot
#    grows it to the card)
mkfs.vfat -F 32 -n "$BOOT_LABEL" -C "$WORK/boot.img" $((BOOT_MIB * 1024)) >/dev/null
mcopy -s -p -m -i "$WORK/boot.img" "$ROOT"/boot/firmware/* ::
rm -rf "${ROOT:?}"/boot/firmware/*
used=$(du -sm "$ROOT" | cut -f1)
ROOT_MIB=$((used * 5 / 4 + 256))
mkfs.ext4 -q -F -L "$ROOT_LABEL" -E root_owner=0:0 -d "$ROOT" "$WORK/root.img" "${ROOT_MIB}M"
RAW=$WORK/$NAME.img
truncate -s $(((4 + BOOT_MIB + ROOT_MIB) * 1024 * 1024)) "$RAW"
sfdisk --quiet "$RAW" <<TABLE
label: dos
unit: sectors
start=$((4 * 2048)), size=$((BOOT_MIB * 2048)), type=c, bootable
start=$(((4 + BOOT_MIB) * 2048)), size=$((ROOT_MIB * 2048)), type=83
TABLE
dd if="$WORK/boot.img" of="$RAW" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$RAW" bs=1M seek=$((4 + BOOT_MIB)) conv=notrunc,sparse status=none
rm -f "$WORK/boot.img" "$WORK/root.img"
step "disk image $RAW: $((4 + BOOT_MIB + ROOT_MIB)) MiB (root $ROOT_MIB MiB, $used MiB used)"

mkdir -p "$OUT_DIR"
bmaptool -q create -o "$OUT_DIR/$NAME.img.bmap" "$RAW"
xz -T0 -"$XZ_LEVEL" -c "$RAW" >"$OUT_DIR/$NAME.img.xz.part"
mv "$OUT_DIR/$NAME.img.xz.part" "$OUT_DIR/$NAME.img.xz"
(cd "$OUT_DIR" && sha256sum "$NAME.img.xz" "$NAME.img.bmap" >"$NAME.img.xz.sha256")
echo "$INPUTS" >"$OUT_DIR/$NAME.img.inputs"
rm -rf "$WORK"
step "compressed"
log "$OUT_DIR/$NAME.img.xz: $(du -m "$OUT_DIR/$NAME.img.xz" | cut -f1) MiB (raw $((4 + BOOT_MIB + ROOT_MIB)) MiB) in $((SECONDS - t0)) s"
