#!/usr/bin/env bash
# Regenerates the guest device-tree goldens in platform/fixtures/guest_dt/: the
# `platform` crate's guest_dt test writes each generated DTB (TANDEM_BLESS=1), and dtc
# decompiles it next to it as .dts for review. The test then compares future output with
# the .dtb byte for byte, and with the .dts when dtc is installed. Needs dtc
# (Debian package device-tree-compiler).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/platform/fixtures/guest_dt"
command -v dtc >/dev/null || { echo "dtc not found: apt-get install device-tree-compiler" >&2; exit 1; }

mkdir -p "$out"
(cd "$root" && TANDEM_BLESS=1 cargo test -q -p platform --test guest_dt goldens)
for dtb in "$out"/*.dtb; do
    dtc -q -I dtb -O dts -o "${dtb%.dtb}.dts" "$dtb"
    echo "wrote ${dtb%.dtb}.dts"
done
