#!/usr/bin/env bash
# Builds the test guest that the tests and the benchmark boot under QEMU, from Debian packages:
#   vmlinux      the Debian cloud kernel (linux-image-cloud-amd64), unpacked from its LZ4 bzImage
#                to the uncompressed ELF that QEMU boots through its PVH entry (-kernel, microvm)
#   initrd       a gzip'd cpio with busybox-static that loads the virtio, power-button and input
#                modules, mounts /dev/vda and switch_roots to it (scripts/test-image/initramfs-init)
#   rootfs.ext4  busybox-static, made with `mkfs.ext4 -d` (no loop mount, no root needed); its
#                /init is scripts/test-image/rootfs-init (boot with console=ttyS0 or hvc0 root=/dev/vda rw
#                init=/init): ready line `mvm-dev: ready`, HTTP on port 80, a shell on the console;
#                with a virtio-fs device (dev up --share) it loads fuse + virtiofs and mounts the
#                tag `workdir` on /mnt/workdir before the ready line; Debian's qemu-guest-agent
#                (qemu-ga and the libraries it links, from Debian's packages) runs on the
#                virtio-serial port org.qemu.guest_agent.0 when the VM has one
#
# The result is cached in $MVM_TEST_IMAGE_DIR (default: .vm-cache/test-image at the repository
# root), keyed on the kernel and busybox-static package versions, the rootfs size and the hash of
# this script and its helper files: a second run with nothing changed only checks the files.
# Needs: apt-get (the kernel package is fetched with `apt-get download` on the first build, never
# installed), busybox-static installed, dpkg-deb, lz4, cpio, gzip, mkfs.ext4 (e2fsprogs).
# Prints what it built: paths, sizes and SHA-256 (also written to SHA256SUMS in the output).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${MVM_TEST_IMAGE_DIR:-$repo/.vm-cache/test-image}
rootfs_size=${MVM_TEST_ROOTFS_SIZE:-32M}
kernel_meta=linux-image-cloud-amd64
# Load order matters (no modules.dep in an extracted package): each module after its dependencies.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio
  virtio_blk virtio_console failover net_failover virtio_net button evdev)
# Loaded by the rootfs's /init only when a virtio-fs device is present (dev up --share), in order.
share_modules=(fuse virtiofs)
# The guest agent: Debian's qemu-guest-agent and the packages of the libraries it links that a
# Debian 12 host may not have; the rest (libc, libudev, libpcre2) are copied from this host's own
# Debian packages, found with ldd.
agent_pkgs=(qemu-guest-agent libglib2.0-0 libnuma1 liburing2)

die() {
  echo "build-test-image: $*" >&2
  exit 1
}

for tool in apt-cache apt-get dpkg-query dpkg-deb flock lz4 cpio gzip mkfs.ext4 sha256sum; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y qemu-utils busybox-static e2fsprogs cpio lz4)"
done
busybox=$(dpkg-query -L busybox-static 2>/dev/null | awk '/\/busybox$/ && !f { print; f = 1 }' || true)
[ -n "$busybox" ] && [ -x "$busybox" ] || die "busybox-static is not installed (apt-get install -y busybox-static)"
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)

# The cloud meta-package depends on exactly one versioned kernel image package.
kernel_pkg=$(apt-cache depends "$kernel_meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' || true)
kernel_pkg=${kernel_pkg%%$'\n'*}
[ -n "$kernel_pkg" ] || die "apt does not know $kernel_meta (run apt-get update)"
kernel_version=$(apt-cache policy "$kernel_pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p' || true)
[ -n "$kernel_version" ] && [ "$kernel_version" != "(none)" ] || die "no candidate version of $kernel_pkg (run apt-get update)"

agent_versions=
for p in "${agent_pkgs[@]}"; do
  v=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p' || true)
  [ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate version of $p (run apt-get update)"
  agent_versions="$agent_versions $p=$v"
done

script_hash=$(cat "${BASH_SOURCE[0]}" "$here"/test-image/* | sha256sum | cut -d' ' -f1)
key="kernel=$kernel_pkg=$kernel_version busybox-static=$busybox_version${agent_versions} rootfs=$rootfs_size script=$script_hash"

report() {
  echo "test image in $out ($key)"
  local f
  for f in vmlinux initrd rootfs.ext4; do
    printf '  %-12s %10s bytes  sha256 %s\n' "$f" "$(stat -c %s "$out/$f")" "$(grep " $f\$" "$out/SHA256SUMS" | cut -d' ' -f1)"
  done
}

# One build at a time (tests may run in parallel); the loser of the race finds the cache fresh.
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
trap 'rm -rf "$work"' EXIT

# The kernel package: fetched once, kept beside the image so a rebuild works offline.
debs="$out/debs"
mkdir -p "$debs"
deb=$(find "$debs" -maxdepth 1 -name "${kernel_pkg}_*.deb" -print -quit)
if [ -z "$deb" ] || [ "$(dpkg-deb -f "$deb" Version)" != "$kernel_version" ]; then
  rm -f "$debs/${kernel_pkg}"_*.deb
  echo "fetching $kernel_pkg $kernel_version"
  # apt's sandbox user cannot write into a root-only directory; it then warns and downloads as root.
  (cd "$work" && apt-get download -q "$kernel_pkg=$kernel_version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(find "$work" -maxdepth 1 -name "${kernel_pkg}_*.deb" -print -quit)
  [ -n "$deb" ] || die "apt-get download $kernel_pkg=$kernel_version failed (network? apt-get update?)"
  mv "$deb" "$debs/"
  deb="$debs/$(basename "$deb")"
fi
dpkg-deb -x "$deb" "$work/kernel"

# The agent's packages, fetched once and kept beside the image as the kernel is.
for pv in $agent_versions; do
  p=${pv%%=*}
  v=${pv#*=}
  a=$(find "$debs" -maxdepth 1 -name "${p}_*.deb" -print -quit)
  if [ -z "$a" ] || [ "$(dpkg-deb -f "$a" Version)" != "$v" ]; then
    rm -f "$debs/${p}"_*.deb
    echo "fetching $p $v"
    (cd "$work" && apt-get download -q "$p=$v" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    a=$(find "$work" -maxdepth 1 -name "${p}_*.deb" -print -quit)
    [ -n "$a" ] || die "apt-get download $p=$v failed (network? apt-get update?)"
    mv "$a" "$debs/"
    a="$debs/$(basename "$a")"
  fi
  dpkg-deb -x "$a" "$work/agent"
done
kver=$(ls "$work/kernel/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || die "expected one kernel in $deb, found: $kver"
bzimage="$work/kernel/boot/vmlinuz-$kver"

# vmlinux: the bzImage's payload is an LZ4 frame (magic 02 21 4c 18) holding the ELF. lz4 stops
# with an error at the bzImage's trailing bytes after the frame, so judge by the ELF magic.
found=
for offset in $(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$bzimage" | cut -d: -f1); do
  tail -c +$((offset + 1)) "$bzimage" | lz4 -dc >"$work/vmlinux" 2>/dev/null || true
  if [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
    found=1
    break
  fi
done
[ -n "$found" ] || die "no LZ4-compressed ELF found in $bzimage"

# initrd: busybox-static plus the modules, in load order.
ird="$work/initramfs"
mkdir -p "$ird/bin" "$ird/etc" "$ird/lib/modules"
cp "$busybox" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
# copy_module NAME DIR: the module from the kernel package, uncompressed, as DIR/NAME.ko.
copy_module() {
  local ko
  ko=$(find "$work/kernel/lib/modules/$kver" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \) -print -quit)
  [ -n "$ko" ] || die "module $1 not found in $kernel_pkg"
  case "$ko" in
    *.xz) xz -dc "$ko" >"$2/$1.ko" ;;
    *.zst) zstd -qdc "$ko" >"$2/$1.ko" ;;
    *) cp "$ko" "$2/$1.ko" ;;
  esac
}
for m in "${modules[@]}"; do
  copy_module "$m" "$ird/lib/modules"
  echo "$m" >>"$ird/etc/modules"
done
install -m 0755 "$here/test-image/initramfs-init" "$ird/init"
(cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) | gzip -9n >"$work/initrd"

# rootfs: busybox with a link per applet, the init, a DHCP hook and the HTTP page.
rfs="$work/rootfs"
mkdir -p "$rfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,srv/www,lib/modules,mnt/workdir,var/run}
for m in "${share_modules[@]}"; do
  copy_module "$m" "$rfs/lib/modules"
  echo "$m" >>"$rfs/etc/share-modules"
done
cp "$busybox" "$rfs/bin/busybox"
for applet in $("$busybox" --list-full); do
  [ "$applet" = bin/busybox ] || [ -e "$rfs/$applet" ] || ln -s /bin/busybox "$rfs/$applet"
done
install -m 0755 "$here/test-image/rootfs-init" "$rfs/init"
# qemu-ga and every library it links (resolved with the agent packages' libraries first).
install -m 0755 "$work/agent/usr/sbin/qemu-ga" "$rfs/usr/sbin/qemu-ga"
agent_libs="$work/agent/usr/lib/x86_64-linux-gnu:$work/agent/lib/x86_64-linux-gnu"
mkdir -p "$rfs/lib/x86_64-linux-gnu" "$rfs/lib64"
for lib in $(LD_LIBRARY_PATH=$agent_libs ldd "$work/agent/usr/sbin/qemu-ga" | awk '/=> \// { print $3 } /^\t\/lib64\// { print $1 }'); do
  case "$lib" in
    /lib64/*) cp -L "$lib" "$rfs/lib64/" ;;
    *) cp -L "$lib" "$rfs/lib/x86_64-linux-gnu/" ;;
  esac
done
LD_LIBRARY_PATH=$rfs/lib/x86_64-linux-gnu ldd "$rfs/usr/sbin/qemu-ga" | grep -q 'not found' && die "qemu-ga misses a library"
# guest-shutdown runs /sbin/shutdown -h -P +0 (or -r for a reboot); busybox has poweroff and reboot.
rm -f "$rfs/sbin/shutdown" # never written through a busybox applet link (it points at /bin/busybox)
printf '#!/bin/sh\nsync\ncase " $* " in *" -r "*) exec reboot -f ;; *) exec poweroff -f ;; esac\n' >"$rfs/sbin/shutdown"
chmod 0755 "$rfs/sbin/shutdown"
install -m 0755 "$here/test-image/udhcpc.sh" "$rfs/etc/udhcpc.sh"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rfs/etc/passwd"
printf 'root:x:0:\n' >"$rfs/etc/group"
printf '<!doctype html>\n<title>mvm test guest</title>\n<p>mvm test guest\n' >"$rfs/srv/www/index.html"
chmod 1777 "$rfs/tmp"
mkfs.ext4 -q -F -L mvm-test -U 6d766d2d-7465-7374-2d67-756573740000 -E root_owner=0:0 \
  -d "$rfs" "$work/rootfs.ext4" "$rootfs_size" >/dev/null

(cd "$work" && sha256sum vmlinux initrd rootfs.ext4 >SHA256SUMS)
rm -f "$out/KEY"
for f in vmlinux initrd rootfs.ext4 SHA256SUMS; do mv -f "$work/$f" "$out/$f"; done
echo "$key" >"$out/KEY"
echo "built"
report
