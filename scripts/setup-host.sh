#!/usr/bin/env bash
# Installs what Tandem's build and tests need on a Debian/Ubuntu host: QEMU >= 9,
# dtc, Debian's U-Boot for QEMU, gdb-multiarch, e2fsprogs (mke2fs, for the rich OS's disk
# image), apt's arm64 architecture and the rustup targets. Idempotent: a machine that
# already has everything gets no apt traffic at all.
set -euo pipefail

need_apt=()
qemu_ok() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 1
    local v
    v=$(qemu-system-aarch64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1)
    [ -n "$v" ] && [ "$v" -ge 9 ]
}
qemu_ok || need_apt+=(qemu)
command -v dtc >/dev/null 2>&1 || need_apt+=(dtc)
[ -f /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || need_apt+=(uboot)
command -v gdb-multiarch >/dev/null 2>&1 || need_apt+=(gdb)
# Debian keeps mke2fs in /sbin, which a user's PATH may lack.
{ command -v mke2fs || [ -x /sbin/mke2fs ] || [ -x /usr/sbin/mke2fs ]; } >/dev/null 2>&1 || need_apt+=(e2fsprogs)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "tandem setup: missing: ${need_apt[*]}. As root, run:" >&2
        echo "  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list" >&2
        echo "  apt-get update && apt-get install -y -t bookworm-backports qemu-system-arm" >&2
        echo "  apt-get install -y device-tree-compiler u-boot-qemu gdb-multiarch e2fsprogs" >&2
        exit 1
    fi
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/tandem-backports.list
    fi
    apt-get update -qq
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        apt-get install -y -qq -t bookworm-backports qemu-system-arm
    else
        apt-get install -y -qq qemu-system-arm
    fi
    apt-get install -y -qq device-tree-compiler u-boot-qemu gdb-multiarch e2fsprogs
    qemu_ok || { echo "tandem setup: qemu-system-aarch64 >= 9 is still missing" >&2; exit 1; }
fi

# xtask fetches Debian's arm64 kernel package (guest kernel, raspi4b DTB) with apt-get
# download; apt must know the arm64 architecture for that.
if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null 2>&1 \
    && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
fi

# The toolchain itself is pinned in rust-toolchain.toml; make sure its targets are present.
cd "$(dirname "$0")/.."
rustup target add aarch64-unknown-none-softfloat aarch64-unknown-none aarch64-unknown-linux-musl >/dev/null
rustup component add rustfmt clippy llvm-tools >/dev/null 2>&1 || rustup component add rustfmt clippy >/dev/null
