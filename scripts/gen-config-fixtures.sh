#!/usr/bin/env bash
# Regenerates the /hypervisor config fixtures of platform/fixtures/config/: decompiles the
# board blobs of platform/fixtures/ into boards/*.dts (which the fixtures /include/), then
# compiles every fixture NAME.dts to NAME.dtb, and seeds the `config` fuzz target's corpus
# with the results. Needs dtc (device-tree-compiler). The tests read only the .dtb files,
# so they run without dtc.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/platform/fixtures/config"
corpus="$root/fuzz/corpus/config"
command -v dtc >/dev/null || { echo "gen-config-fixtures: dtc not found; run scripts/setup-host.sh (Debian package device-tree-compiler)" >&2; exit 1; }
mkdir -p "$dir/boards" "$corpus"

for board in virt-gicv3-4cpu-2g virt-gicv3-smmu-4cpu-2g virt-gicv2-4cpu-1g bcm2711-rpi-4-b-960m; do
    dtc -q -I dtb -O dts -o "$dir/boards/$board.dts" "$root/platform/fixtures/$board.dtb"
done

for dts in "$dir"/*.dts; do
    dtb="${dts%.dts}.dtb"
    # -q: QEMU's tree draws warnings of its own (unit names, missing reg); they are not ours.
    dtc -q -I dts -O dtb -o "$dtb" "$dts"
    cp "$dtb" "$corpus/"
    echo "wrote $dtb"
done
