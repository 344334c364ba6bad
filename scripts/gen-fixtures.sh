#!/usr/bin/env bash
# Regenerates the device-tree fixtures in platform/fixtures/ that the `platform` crate's
# tests load with include_bytes!. Needs qemu-system-aarch64 (>= 9), dtc and fdtput
# (device-tree-compiler), and for the Raspberry Pi 4 blob dpkg/apt-get with network access
# to Debian's archive. Run as root (it may add the arm64 architecture to dpkg).
#
# QEMU writes a 1 MiB blob padded with free space; each blob is round-tripped through dtc
# to drop the padding, and the per-boot random /chosen properties (rng-seed, kaslr-seed)
# are deleted so that regenerating gives byte-identical files.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/platform/fixtures"
corpus="$root/fuzz/corpus/dt_parse"
mkdir -p "$out" "$corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# virt NAME GIC CPUS MEM [extra QEMU arguments...]; $machine_extra adds -M options.
virt() {
    local name=$1 gic=$2 cpus=$3 mem=$4
    shift 4
    qemu-system-aarch64 -M "virt,virtualization=on,gic-version=$gic${machine_extra:-},dumpdtb=$tmp/$name.raw" \
        -cpu max -smp "$cpus" -m "$mem" -display none "$@" >/dev/null
    fdtput -d "$tmp/$name.raw" /chosen rng-seed
    fdtput -d "$tmp/$name.raw" /chosen kaslr-seed
    dtc -q -I dtb -O dtb -o "$out/$name.dtb" "$tmp/$name.raw"
    echo "wrote $out/$name.dtb"
}

virt virt-gicv2-1cpu-512m 2 1 512M
virt virt-gicv2-4cpu-1g 2 4 1G
virt virt-gicv3-4cpu-2g 3 4 2G
virt virt-gicv3-8cpu-6g 3 8 6G
# The SMMUv3 in front of the PCIe host bridge (node smmuv3@9050000, the bridge's iommu-map).
machine_extra=,iommu=smmuv3 virt virt-gicv3-smmu-4cpu-2g 3 4 2G
# Two NUMA nodes: two memory nodes, memory@40000000 and memory@80000000.
virt virt-gicv3-4cpu-numa 3 4,sockets=2,cores=2 2G \
    -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G \
    -numa node,nodeid=0,memdev=m0,cpus=0-1 -numa node,nodeid=1,memdev=m1,cpus=2-3

# Raspberry Pi 4 Model B: the DTB that Debian's arm64 kernel package ships.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
fi
abi=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: linux-image-\(.*\)-arm64:arm64$/\1/p' | head -n1)
[ -n "$abi" ] || { echo "gen-fixtures: cannot find the kernel ABI of linux-image-arm64:arm64" >&2; exit 1; }
(cd "$tmp" && apt-get download -qq "linux-image-$abi-arm64:arm64")
dpkg-deb -x "$tmp"/linux-image-"$abi"-arm64_*_arm64.deb "$tmp/kernel"
rpi=$(find "$tmp/kernel/usr/lib" -path '*/broadcom/bcm2711-rpi-4-b.dtb' | head -n1)
[ -n "$rpi" ] || { echo "gen-fixtures: bcm2711-rpi-4-b.dtb not found in the kernel package" >&2; exit 1; }
cp "$rpi" "$out/bcm2711-rpi-4-b.dtb"
echo "wrote $out/bcm2711-rpi-4-b.dtb (from linux-image-$abi-arm64)"

# The file's memory node is reg = <0 0 0>; QEMU's raspi4b machine patches it to 960 MiB at 0.
# This copy carries that patch (#address-cells = 2, #size-cells = 1 at the root).
cp "$out/bcm2711-rpi-4-b.dtb" "$out/bcm2711-rpi-4-b-960m.dtb"
fdtput -t x "$out/bcm2711-rpi-4-b-960m.dtb" /memory@0 reg 0 0 0x3c000000
echo "wrote $out/bcm2711-rpi-4-b-960m.dtb"

# The fuzzer starts from the same blobs.
cp "$out"/*.dtb "$corpus/"
echo "copied the fixtures to $corpus"
