#!/usr/bin/env bash
# Builds a stock Debian 12 dev image, the kind an organisation makes for
# itself and mvmctl must boot though nothing in it is ours:
#   vmlinux      Debian's cloud kernel (its bzImage's ELF payload, for QEMU's PVH entry)
#   initrd       made by Debian's own initramfs-tools inside the image
#   rootfs.ext4  debootstrap --variant=minbase bookworm with systemd as init
#                (/init is a link to it), udev, qemu-guest-agent (started by its
#                own udev rule when the virtio port appears) and DHCP by systemd-networkd
# No line of mvmctl's is printed by it: dev up must find it ready by its agent.
#
# Into .vm-cache/debian-image (or MVM_DEBIAN_IMAGE_DIR), cached: rebuilt only when the
# script or the package versions it would install change. Needs root (debootstrap,
# chroot), the debootstrap package and the network to Debian's mirror for the first
# build (MVM_DEBIAN_MIRROR, default http://deb.debian.org/debian).
# Prints what it built: paths, sizes and SHA-256 (also written to SHA256SUMS in the output).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${MVM_DEBIAN_IMAGE_DIR:-$repo/.vm-cache/debian-image}
mirror=${MVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs_size=${MVM_DEBIAN_ROOTFS_SIZE:-1G}
packages=systemd,systemd-sysv,udev,dbus,kmod,qemu-guest-agent,linux-image-cloud-amd64,initramfs-tools,e2fsprogs,coreutils,tar,iproute2

die() {
  echo "build-debian-image: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot)"
for tool in debootstrap chroot flock lz4 mkfs.ext4 sha256sum apt-cache; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y debootstrap lz4 e2fsprogs)"
done

# The cache key: this script and the versions apt would install of the packages that matter.
versions=
for p in linux-image-cloud-amd64 systemd qemu-guest-agent initramfs-tools; do
  versions="$versions $p=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
done
key="debootstrap=$(dpkg-query -W -f='${Version}' debootstrap)$versions rootfs=$rootfs_size script=$(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)"

report() {
  echo "Debian image in $out ($key)"
  local f
  for f in vmlinux initrd rootfs.ext4; do
    printf '  %-12s %10s bytes  sha256 %s\n' "$f" "$(stat -c %s "$out/$f")" "$(grep " $f\$" "$out/SHA256SUMS" | cut -d' ' -f1)"
  done
}

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if [ -f "$out/KEY" ] && [ "$(cat "$out/KEY")" = "$key" ] &&
  (cd "$out" && sha256sum --quiet --strict -c SHA256SUMS) >/dev/null 2>&1; then
  echo "up to date (nothing to build)"
  report
  exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
cleanup() {
  for m in proc sys dev; do umount "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"

echo "debootstrap bookworm into $root (a few minutes the first time)"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (network to $mirror?)"; }

# Debian's initramfs-tools, told (as any admin of a microVM image would) which drivers the root
# disk needs on QEMU's microvm machine: virtio-mmio and virtio-blk are modules in the cloud kernel.
printf '%s\n' virtio_mmio virtio_blk ext4 >>"$root/etc/initramfs-tools/modules"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$root/etc/fstab"
echo mvm-debian >"$root/etc/hostname"
chroot "$root" passwd -d root >/dev/null
ln -sf /lib/systemd/systemd "$root/init"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/80-dhcp.network"
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
# Nothing in a dev VM waits on a network that is not there.
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
for m in proc sys dev; do mount --bind "/$m" "$root/$m"; done
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 ||
  { tail -20 "$work/initramfs.log" >&2; die "update-initramfs failed"; }
for m in proc sys dev; do umount "$root/$m"; done

kver=$(ls "$root/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || die "expected one kernel, found: $kver"
bzimage="$root/boot/vmlinuz-$kver"
# vmlinux: the bzImage's payload is an LZ4 frame (magic 02 21 4c 18) holding the ELF.
found=
for offset in $(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$bzimage" | cut -d: -f1); do
  tail -c +$((offset + 1)) "$bzimage" | lz4 -dc >"$work/vmlinux" 2>/dev/null || true
  if [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
    found=1
    break
  fi
done
[ -n "$found" ] || die "no LZ4-compressed ELF found in $bzimage"
cp "$root/boot/initrd.img-$kver" "$work/initrd"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
mkfs.ext4 -q -F -L root -d "$root" "$work/rootfs.ext4" "$rootfs_size"

for f in vmlinux initrd rootfs.ext4; do mv "$work/$f" "$out/$f"; done
(cd "$out" && sha256sum vmlinux initrd rootfs.ext4 >SHA256SUMS)
echo "$key" >"$out/KEY"
report
