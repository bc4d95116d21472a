#!/usr/bin/env bash
# Builds a tiny Linux guest for vhost-user tests: Debian's kernel (taken from
# the linux-image package without installing it) and a busybox initramfs whose
# /init loads the virtio-net modules, configures eth0 from the kernel command
# line and then runs a traffic loop, printing one marker line per probe on the
# serial console:
#   bh.ip=10.0.0.2/24 bh.peer=10.0.0.1 bh.count=N bh.udp=PORT
#   -> "BH-PING <i> ok|fail" and, with bh.udp, one UDP datagram per round
#      to bh.peer:PORT ("BH-UDP <i> sent"; a TFTP read request).
# usage: tests/vm/build-guest.sh OUTDIR   (writes OUTDIR/vmlinuz, OUTDIR/initramfs.gz)
# Needs: apt-get install busybox-static cpio (run as root; downloads one .deb).
set -euo pipefail
out=${1:?usage: build-guest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Reused while this script is unchanged (the stamp is its checksum).
stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -s $out/vmlinuz && -s $out/initramfs.gz && "$(cat "$out/stamp" 2>/dev/null)" == "$stamp" ]]; then exit 0; fi

for p in busybox-static cpio; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The versioned kernel package linux-image-amd64 points at, downloaded and unpacked.
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $pkg ]] || { echo "build-guest: cannot resolve the kernel package behind linux-image-amd64" >&2; exit 1; }
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "build-guest: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
kver=$(ls "$work/k/lib/modules")
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz"

root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,mods}
cp /bin/busybox "$root/bin/busybox"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -1)
    [[ -n $f ]] || continue   # built in, or absent in this kernel
    cp "$f" "$root/mods/"
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    for f in /mods/$m.ko*; do [ -e "$f" ] && insmod "$f" 2>/dev/null; done
done
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
ip=$(arg bh.ip); peer=$(arg bh.peer); count=$(arg bh.count); udp=$(arg bh.udp)
mac=$(cat /sys/class/net/eth0/address 2>/dev/null)
if [ -n "$(arg bh.debug)" ]; then cat /proc/modules; dmesg | tail -25; fi
echo "BH-BOOT eth0=${mac:-none}"
if [ -n "$ip" ]; then
    ip link set lo up; ip link set eth0 up; ip addr add "$ip" dev eth0
    echo "BH-NET up $ip"
    i=1
    while [ "$i" -le "${count:-30}" ]; do
        if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then echo "BH-PING $i ok"; else echo "BH-PING $i fail"; fi
        # busybox nc has no UDP: a TFTP read request is one UDP datagram to
        # peer:PORT from a fresh source port (a new flow each round); nothing
        # answers it, so give up after a second.
        if [ -n "$udp" ]; then timeout 1 tftp -g -r "bh-udp-$i" -l /tmp/udp "$peer" "$udp" >/dev/null 2>&1; echo "BH-UDP $i sent"; fi
        i=$((i + 1))
    done
fi
echo "BH-DONE"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.gz")
echo "$stamp" > "$out/stamp"
echo "build-guest: kernel $kver, initramfs $(du -h "$out/initramfs.gz" | cut -f1) in $out"
