#!/bin/bash
# layer.sh LOWER OUT - the image's package layer on top of the arm64 base root filesystem
# (molecule/testhost.sh's, shared with the arm64 Molecule host): the Pi's boot chain (Debian's
# raspi-firmware and linux-image-arm64), time sync, DNS, and sfdisk for growing the root at first
# boot. Runs arm64 maintainer scripts through qemu-user (binfmt_misc), so it is slow (~10 min);
# build.sh caches OUT by the base's key, PACKAGES and this file's content.
set -euo pipefail

LOWER=$1
OUT=$2
# Installed in this order: raspi-firmware first, so the kernel's own postinst hooks copy the
# kernel, initrd and device trees to /boot/firmware and write config.txt/cmdline.txt once.
FIRMWARE_PACKAGES=(raspi-firmware)
PACKAGES=(linux-image-arm64 systemd-timesyncd systemd-resolved fdisk)
# The initramfs holds only what finds and mounts the root: the Pi 3/4 SD (and USB) controllers,
# QEMU virt's virtio disk (image-test), ext4. MODULES=most took ~10 min per run under emulation.
INITRD_MODULES=(ext4 mmc_block sdhci_iproc bcm2835 sdhci_pltfm dwc2 xhci_pci pcie_brcmstb
  reset_raspberrypi usb_storage virtio_pci virtio_mmio virtio_blk)
ROOT_LABEL=wilo-root
BOOT_LABEL=WILO-BOOT

log() { echo "image/layer: $*" >&2; }
[ -f "$LOWER/.complete" ] || { log "no complete base root filesystem in $LOWER"; exit 1; }

tmp=$OUT.part
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$tmp"
cp -a "$LOWER" "$tmp"
rm -f "$tmp/.complete"
for fs in proc sys dev dev/pts; do
  mount --bind "/$fs" "$tmp/$fs"
  mounted+=("$tmp/$fs")
done
in_root() { chroot "$tmp" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
# the files written below are ours where a package ships its own (no conffile prompt)
APT_INSTALL=(apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold)

# The builder's mirror (it may be a nearer one than deb.debian.org) while building; the image
# itself gets Debian's own, written at the end.
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
write_sources() {
  cat >"$tmp/etc/apt/sources.list" <<SOURCES
deb $1 bookworm main non-free-firmware
deb $1 bookworm-updates main non-free-firmware
deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware
SOURCES
}
write_sources "$mirror"
cp --remove-destination /etc/resolv.conf "$tmp/etc/resolv.conf"
# No service starts inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 0755 "$tmp/usr/sbin/policy-rc.d"

mkdir -p "$tmp/boot/firmware" "$tmp/etc/initramfs-tools/conf.d"
printf 'MODULES=list\n' >"$tmp/etc/initramfs-tools/conf.d/wilo-image.conf"
printf '%s\n' "${INITRD_MODULES[@]}" >>"$tmp/etc/initramfs-tools/modules"
# The kernel's postinst builds the initramfs once; the initramfs-tools trigger would rebuild it
# (another run of minutes): off while installing, on again at the end for the Pi's own updates.
mkdir -p "$tmp/etc/initramfs-tools"
[ -f "$tmp/etc/initramfs-tools/update-initramfs.conf" ] ||
  printf 'update_initramfs=yes\nbackup_initramfs=no\n' >"$tmp/etc/initramfs-tools/update-initramfs.conf"
# raspi-firmware's cmdline.txt names the root by label (the card may be mmcblk0 or sda), and the
# Pi 3/4 consoles explicitly: "auto" would probe the build host's /dev.
cat >"$tmp/etc/default/raspi-firmware" <<DEFAULTS
# wilo appliance image (image/layer.sh): root and consoles for /boot/firmware/cmdline.txt
ROOTPART=LABEL=$ROOT_LABEL
CONSOLES="tty0 ttyS1,115200"
DEFAULTS
# The boot partition is nofail: a card whose FAT partition is missing or slow to show still boots
# its root (SSH, the journal); only what needs /boot/firmware (first boot) waits for it. Its
# device shows in a second on a Pi; under emulation the real root's udev coldplug alone took
# more than systemd's default 90 s, hence the longer device timeout.
cat >"$tmp/etc/fstab" <<FSTAB
# wilo appliance image: noatime (fewer writes to the card), no swap
LABEL=$ROOT_LABEL	/	ext4	defaults,noatime,commit=60	0	1
LABEL=$BOOT_LABEL	/boot/firmware	vfat	defaults,noatime,umask=0077,nofail,x-systemd.device-timeout=10min	0	2
FSTAB

t0=$SECONDS
in_root apt-get update -qq
in_root "${APT_INSTALL[@]}" "${FIRMWARE_PACKAGES[@]}" >/dev/null
sed -i 's/^#\?update_initramfs=.*/update_initramfs=no/' "$tmp/etc/initramfs-tools/update-initramfs.conf"
log "installing ${PACKAGES[*]} (the initramfs is built once, under emulation)"
in_root "${APT_INSTALL[@]}" "${PACKAGES[@]}" >/dev/null
sed -i 's/^update_initramfs=.*/update_initramfs=yes/' "$tmp/etc/initramfs-tools/update-initramfs.conf"
log "packages installed in $((SECONDS - t0)) s"
ls "$tmp/boot/firmware/initrd.img"* >/dev/null 2>&1 || { log "no initrd in /boot/firmware"; exit 1; }

in_root apt-get clean
rm -rf "$tmp"/var/lib/apt/lists/* "$tmp/usr/sbin/policy-rc.d"
write_sources http://deb.debian.org/debian
# systemd-resolved made /etc/resolv.conf its stub link; keep that (the builder's copy must go).
[ -L "$tmp/etc/resolv.conf" ] || rm -f "$tmp/etc/resolv.conf"
cleanup
mounted=()
rm -rf "$OUT"
mv "$tmp" "$OUT"
touch "$OUT/.complete"
