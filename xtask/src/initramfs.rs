//! The rich OS's initramfs, `target/initramfs.cpio`: an uncompressed `newc` cpio archive
//! holding Debian's static busybox (`busybox-static:arm64`), `tandem-client` (built from
//! `client/`, see [`crate::client`]), a `/init` shell script, a `udhcpc` hook, and the
//! kernel modules of Debian's arm64 kernel that the virtio-mmio disk, network and vsock
//! devices and the disk's ext4 need.
//!
//! The modules are named by what they are for ([`WANTED`]); what they need in turn comes
//! from each module's own `.modinfo` (`depends=`, and the `softdep=` modules, found by name
//! or alias), since Debian's package ships no `modules.dep`.
//!
//! The archive is written here (no host `cpio` needed), with every timestamp 0 so the same
//! inputs give the same bytes. It is rewritten only when its inputs change: a stamp file
//! beside it holds a hash of the busybox and tandem-client binaries, the scripts and every
//! module it carries. The client is rebuilt by cargo first, so a change in `client/` (or
//! `proto/`) changes its bytes and the archive follows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cmd::{self, bail, Error, Result};
use crate::{client, debian, disk};

/// The kernel modules /init loads, by name: the virtio-mmio and virtio-pci transports (the
/// latter for devices behind a PCI host bridge passed through to Linux), the block, network
/// and vsock drivers on it (`AF_VSOCK` itself, and the virtio transport for it that
/// `tandem-client` needs), and ext4 for the disk. Their dependencies are added from their
/// `.modinfo`, and everything is loaded dependencies first.
const WANTED: [&str; 8] = [
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "ext4",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// Bumped when the archive layout changes, so old archives are rebuilt.
const FORMAT: &str = "tandem-initramfs 3";

/// Where the client goes in the archive (on /init's PATH).
const CLIENT_PATH: &str = "bin/tandem-client";

/// Whether a `/dev/mem` probe reads or writes.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
}

/// Memory Linux must not reach, which `tandem.test=vsock` touches through `/dev/mem` with
/// busybox `devmem`: Linux's stage 2 maps nothing there, so the access must end in SIGBUS.
struct DevmemProbe {
    access: Access,
    /// A physical address, 4-byte aligned.
    address: u64,
    /// What is there.
    what: &'static str,
}

/// The probes, at the addresses of the default layout on QEMU virt (`configs/virt.dtsi`,
/// booted by QEMU's loader as the tests do).
const DEVMEM_PROBES: [DevmemProbe; 4] = [
    DevmemProbe {
        access: Access::Read,
        address: 0x9000_0000,
        what: "the secure guest's memory",
    },
    DevmemProbe {
        access: Access::Write,
        address: 0x9000_0000,
        what: "the secure guest's memory",
    },
    DevmemProbe {
        access: Access::Read,
        address: 0x4020_0000,
        what: "the hypervisor's image",
    },
    DevmemProbe {
        access: Access::Read,
        address: 0x9410_0000,
        what: "the vsock rings shared by the hypervisor and the secure guest",
    },
];

/// `tandem.test=memwork`: how many MiB `dd` streams from `/dev/zero` to `/dev/null` (the
/// kernel clears and copies out every page), then the size of the file written to, read back
/// from and removed from `/tmp` (tmpfs, which gets half of RAM by default: the file must fit
/// in the 1 GiB VM of `configs/virt.dtsi` beside everything else).
pub const MEMWORK_STREAM_MIB: u32 = 2000;
pub const MEMWORK_FILE_MIB: u32 = 256;

/// Where Debian's busybox `udhcpc` looks for its hook by default.
const UDHCPC_SCRIPT: &str = "etc/udhcpc/default.script";

/// The archive, `target/initramfs.cpio`.
pub fn output() -> PathBuf {
    cmd::target_dir().join("initramfs.cpio")
}

/// Builds `target/initramfs.cpio` if its inputs changed, fetching busybox once.
pub fn build() -> Result<PathBuf> {
    let kernel = debian::kernel()?;
    let busybox_root = debian::unpacked("busybox-static", || Ok("busybox-static".into()))?;
    let busybox_path = busybox_root.join("bin/busybox");
    let busybox = read(&busybox_path)?;
    if busybox.len() < 4 || &busybox[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF binary: remove {} and retry",
            busybox_path.display(),
            busybox_root.display()
        );
    }

    let client_path = client::build()?;
    let client = read(&client_path)?;
    if client.len() < 4 || &client[..4] != b"\x7fELF" {
        bail!("{} is not an ELF binary", client_path.display());
    }

    let modules_dir = kernel.root.join("lib/modules").join(&kernel.release);
    let tree = ModuleTree::open(&modules_dir)?;
    let modules = tree.resolve(&WANTED)?;
    let order = load_order(&modules)?;
    let script = init_script(&order);
    let udhcpc = udhcpc_script();

    let mut stamp = Fnv::new();
    stamp.add(FORMAT.as_bytes());
    stamp.add(&busybox);
    stamp.add(&client);
    stamp.add(script.as_bytes());
    stamp.add(udhcpc.as_bytes());
    stamp.add(kernel.release.as_bytes());
    for m in &modules {
        stamp.add(m.rel.as_bytes());
        stamp.add(&m.data);
    }
    let stamp = format!("{:016x}\n", stamp.0);
    let out = output();
    let stamp_file = out.with_extension("cpio.stamp");
    if out.is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(out);
    }

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "mnt",
        "root",
        "etc",
        "etc/udhcpc",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    // /init's first line goes to the kernel log (for its timestamp) before /dev is mounted.
    cpio.char_device("dev/kmsg", 0o644, 1, 11);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file(CLIENT_PATH, 0o755, &client);
    cpio.file("init", 0o755, script.as_bytes());
    cpio.file(UDHCPC_SCRIPT, 0o755, udhcpc.as_bytes());
    let release_dir = format!("lib/modules/{}", kernel.release);
    cpio.dir(&release_dir, 0o755);
    let mut made = BTreeSet::new();
    for m in &modules {
        // Each parent directory once, outermost first: the kernel creates no parents.
        let dirs = m.rel.match_indices('/').map(|(i, _)| &m.rel[..i]);
        for dir in dirs {
            if made.insert(dir) {
                cpio.dir(&format!("{release_dir}/{dir}"), 0o755);
            }
        }
        cpio.file(&format!("{release_dir}/{}", m.rel), 0o644, &m.data);
    }
    let bytes = cpio.finish();

    // A per-process name: two xtask runs may build at once; the rename is atomic.
    let partial = out.with_extension(format!("cpio.{}.partial", std::process::id()));
    fs::write(&partial, &bytes)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", partial.display())))?;
    fs::rename(&partial, &out)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    fs::write(&stamp_file, stamp)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", stamp_file.display())))?;
    let names: Vec<&str> = order.iter().map(|rel| module_name(rel)).collect();
    eprintln!(
        "xtask: wrote {} ({} KiB: busybox, tandem-client, /init, {} modules for {}: {})",
        cmd::pretty(&out),
        bytes.len() / 1024,
        modules.len(),
        kernel.release,
        names.join(" ")
    );
    Ok(out)
}

/// The `/init` script: busybox sh as PID 1. `modules` are paths under
/// `/lib/modules/<release>/`, in load order.
///
/// Every boot loads the modules, mounts the virtio disk on /mnt and asks QEMU's user
/// network for a DHCP lease on eth0. `tandem.test=` on the kernel command line, a comma
/// list, then decides what follows, in this order:
///
/// - `checks` prints `tandem-check:` lines for the tests (CPUs, RAM, interrupt counts, the
///   disk's file, the lease) and then powers off unless `reboot` is also given;
/// - `memwork` times a memory-heavy job with the guest's own clock (`cargo xtask bench`
///   reads it): `dd` of [`MEMWORK_STREAM_MIB`] MiB from `/dev/zero` to `/dev/null`, then a
///   [`MEMWORK_FILE_MIB`] MiB tmpfs file written, read back and removed, and prints
///   `tandem-test: memwork <N> us (...)` with each step's time in the brackets, or
///   `tandem-test: memwork FAILED: <step>: <output>`;
/// - `vsock` exercises the secure guest's service with `tandem-client`, printing
///   `tandem-test:` lines (`tests/tests/vsock.rs` reads them): it waits up to 60 s for
///   `tandem-test: vsock service up` (or `... DOWN`, which ends the sequence); signs
///   `/tmp/msg` (`sign <tag>  /tmp/msg`), verifies it (`verify good: ...`) and a copy with
///   one byte changed (`verify tampered: ...`); runs every `tandem-client attack` (`attack
///   KIND ok` or `FAILED`); touches each of [`DEVMEM_PROBES`] (or the comma list of
///   `access:address` that `tandem.devmem=` gives, for another layout) through `/dev/mem` (`devmem
///   read 0x90000000: SIGBUS`, or `NOT BLOCKED (...)`); floods the service from 4
///   connections for 5 s (`flood <client's line>`) while timing a `sleep 1` (`responsive
///   during flood` when it took at most 3 s); prints `bench ...` for 200 requests and
///   `stats <name>: <value>`; with `tandem.crash=1` also on the command line, makes the
///   secure guest crash (`crash ...`) and signs every second for up to 60 s (`after crash
///   first error: ...` for the first failure, then `recovered after crash: ...` or `NOT
///   recovered after crash`); and ends with `tandem-test: vsock done`. Every wait is
///   bounded. Alone, it leaves a shell afterwards;
/// - `attest` checks the secure guest's attestation as a relying party: it waits for the
///   service like `vsock`, runs `tandem-client attest --save /tmp/report`, with `--expect`
///   and `--root` when the command line has `tandem.expect=<64 hex>` (the image digest,
///   `cargo xtask measure`) and `tandem.root=<64 hex>` (the pinned device key), and prints
///   each line of its output (`tandem-test: attest: verified ...`, `tandem-test: image:
///   ...`) and then `attest exit <status>`; checks the saved report against a fresh nonce
///   (`tandem-client attest --replay-from`: its lines, then `replay exit <status>`, where 1
///   is the replay refused); with `tandem.wrong-expect=1`, runs it once more expecting an
///   image of 64 zeros (`wrong expect exit <status>`); and ends with `tandem-test: attest
///   done`. Every wait is bounded;
/// - `midstream` waits for the service, signs `/tmp/msg` once, then leaves two connections
///   flooding it in the background (`mid-stream: 2 connections busy`), so a `reboot` after
///   it takes Linux down mid-stream;
/// - `poweroff` and `reboot` end the boot that way.
///
/// Without `tandem.test=`, a shell.
fn init_script(modules: &[String]) -> String {
    let (known_file, _) = disk::KNOWN_FILE;
    let mut s = String::from(
        r#"#!/bin/sh
# Tandem's initramfs /init (generated by xtask/src/initramfs.rs): busybox sh as PID 1.
# The kernel log gives this line a timestamp: the first user-space line, for boot times.
echo "tandem-init: first user-space line" > /dev/kmsg
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
mount -t sysfs sysfs /sys
# Debian's kernel has no DEVTMPFS_MOUNT.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "tandem-init: user space up on $(nproc) CPUs, uptime $(cut -d ' ' -f 1 /proc/uptime) s"
echo "tandem-init: kernel $(uname -r)"
echo "tandem-init: $(grep MemTotal /proc/meminfo)"

# tandem.test=<list>: checks, memwork, vsock, attest, midstream, poweroff, reboot;
# tandem.crash=1 makes the vsock test crash the secure guest; tandem.expect=, tandem.root= and
# tandem.wrong-expect=1 are for the attest test (see xtask/src/initramfs.rs).
checks=
memwork=
vsock=
attest=
attest_expect=
attest_root=
wrong_expect=
midstream=
devmem=
crash=
finish=
for word in $(cat /proc/cmdline); do
    case "$word" in
    tandem.test=*)
        for t in $(echo "${word#tandem.test=}" | tr , ' '); do
            case "$t" in
            checks) checks=1 ;;
            memwork) memwork=1 ;;
            vsock) vsock=1 ;;
            attest) attest=1 ;;
            midstream) midstream=1 ;;
            poweroff | reboot) finish=$t ;;
            *) echo "tandem-init: tandem.test: unknown '$t' (known: checks, memwork, vsock, attest, midstream, poweroff, reboot)" ;;
            esac
        done
        ;;
    tandem.crash=1) crash=1 ;;
    tandem.expect=*) attest_expect=${word#tandem.expect=} ;;
    tandem.root=*) attest_root=${word#tandem.root=} ;;
    tandem.wrong-expect=1) wrong_expect=1 ;;
    tandem.devmem=*) devmem=$(echo "${word#tandem.devmem=}" | tr , ' ') ;;
    esac
done
if [ -n "$checks" ] && [ -z "$finish" ]; then
    finish=poweroff
fi

"#,
    );
    s.push_str("MODULES=\"");
    s.push_str(&modules.join(" "));
    s.push_str("\"\n");
    s.push_str(&format!("KNOWN_FILE={known_file}\n"));
    s.push_str(&format!(
        "MEMWORK_STREAM_MIB={MEMWORK_STREAM_MIB}\nMEMWORK_FILE_MIB={MEMWORK_FILE_MIB}\n"
    ));
    s.push_str(
        "# /dev/mem probes of tandem.test=vsock, access:address; each must end in SIGBUS.\n",
    );
    s.push_str("DEVMEM_PROBES=\"");
    let probes: Vec<String> = DEVMEM_PROBES
        .iter()
        .map(|p| {
            let access = match p.access {
                Access::Read => "read",
                Access::Write => "write",
            };
            format!("{access}:{:#x}", p.address)
        })
        .collect();
    s.push_str(&probes.join(" "));
    s.push_str("\"\n");
    for (word, p) in probes.iter().zip(&DEVMEM_PROBES) {
        s.push_str(&format!("#   {word}: {}\n", p.what));
    }
    s.push_str(
        r#"dir=/lib/modules/$(uname -r)
if [ -d "$dir" ]; then
    loaded=0
    for m in $MODULES; do
        if insmod "$dir/$m"; then
            loaded=$((loaded + 1))
        else
            echo "tandem-init: insmod $m failed"
        fi
    done
    echo "tandem-init: loaded $loaded modules"
else
    echo "tandem-init: no modules for kernel $(uname -r) in this initramfs"
fi

# Which virtio device sits on which transport (a virtio_mmio node of the DT).
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d" ] || continue
    id=$(cat "$d/device")
    case "$id" in
    0x0001) kind=network ;;
    0x0002) kind=block ;;
    0x0013) kind=vsock ;;
    *) kind="type $id" ;;
    esac
    echo "tandem-init: ${d##*/}: $kind device on $(basename "$(dirname "$(readlink -f "$d")")")"
done

# The first virtio disk (virtio_blk has probed by now: insmod returns after the probe).
disk=
for d in /sys/block/vd*; do
    if [ -e "$d" ]; then
        disk=/dev/${d##*/}
        break
    fi
done
if [ -z "$disk" ]; then
    echo "tandem-init: no virtio disk"
elif mount -t ext4 "$disk" /mnt; then
    echo "tandem-init: $disk mounted on /mnt"
else
    echo "tandem-init: $disk: cannot mount it as ext4"
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    # The hook (/etc/udhcpc/default.script) configures eth0 and prints the lease.
    # busybox udhcpc can retry for ever on a link that is down: bound it.
    ip link set eth0 up
    timeout 15 udhcpc -i eth0 -f -q -n -t 5 -T 1 -s /etc/udhcpc/default.script || echo "tandem-init: eth0: no DHCP lease"
else
    echo "tandem-init: no network device"
fi

irqs() {
    awk -v n="$(nproc)" -v pat="$1" '
        $0 ~ pat { for (i = 2; i <= n + 1; i++) s += $i }
        END { print s + 0 }' /proc/interrupts
}
rising() {
    if [ "$2" -gt "$1" ]; then echo rising; else echo "NOT rising"; fi
}
if [ -n "$checks" ]; then
    echo "tandem-check: nproc $(nproc)"
    grep ': System RAM$' /proc/iomem | while read -r range rest; do
        echo "tandem-check: ram $range"
    done
    timer0=$(irqs 'arch_timer$')
    ipi0=$(irqs '^ *IPI[0-9]+:')
    # A task on every CPU in turn: waking and migrating it takes IPIs.
    cpu=0
    while [ "$cpu" -lt "$(nproc)" ]; do
        taskset -c "$cpu" true
        cpu=$((cpu + 1))
    done
    sleep 1
    timer1=$(irqs 'arch_timer$')
    ipi1=$(irqs '^ *IPI[0-9]+:')
    echo "tandem-check: timer interrupts $timer0 -> $timer1 $(rising "$timer0" "$timer1")"
    echo "tandem-check: IPIs $ipi0 -> $ipi1 $(rising "$ipi0" "$ipi1")"
    if [ -r "/mnt/$KNOWN_FILE" ]; then
        echo "tandem-check: disk $KNOWN_FILE: $(cat "/mnt/$KNOWN_FILE")"
    else
        echo "tandem-check: disk $KNOWN_FILE: unreadable"
    fi
    if [ -r /run/eth0.lease ]; then
        echo "tandem-check: lease eth0 $(cat /run/eth0.lease)"
    else
        echo "tandem-check: lease eth0 none"
    fi
    echo "tandem-check: done"
fi

# tandem.test=memwork: a memory-heavy job, timed by the guest's own clock (with -icount,
# in instructions): the kernel stamps a marker written to its log before and after each
# step, at debug level so that it stays off the console. Busybox's date has no %N, and
# the kernel log's clock is the one the boot figure reads.
memwork_mark() {
    echo "<7>tandem-memwork: $1" > /dev/kmsg
}
# The kernel log's stamp of marker $1, in microseconds.
memwork_us() {
    dmesg | awk -v mark="] tandem-memwork: $1" '
        index($0, mark) { sub(/^\[ */, ""); split($0, t, "]"); printf "%.0f\n", t[1] * 1000000; exit }'
}
memwork_step() {
    what=$1
    shift
    if ! out=$("$@" 2>&1); then
        echo "tandem-test: memwork FAILED: $what: $out"
        return 1
    fi
}
memwork_test() {
    memwork_mark start
    memwork_step "dd to /dev/null" \
        dd if=/dev/zero of=/dev/null bs=1M count="$MEMWORK_STREAM_MIB" || return
    memwork_mark streamed
    memwork_step "write /tmp/memwork" \
        dd if=/dev/zero of=/tmp/memwork bs=1M count="$MEMWORK_FILE_MIB" || return
    memwork_mark written
    memwork_step "read /tmp/memwork" dd if=/tmp/memwork of=/dev/null bs=1M || return
    memwork_mark read
    memwork_step "remove /tmp/memwork" rm /tmp/memwork || return
    memwork_mark end
    start=$(memwork_us start)
    streamed=$(memwork_us streamed)
    written=$(memwork_us written)
    read_back=$(memwork_us read)
    end=$(memwork_us end)
    echo "tandem-test: memwork $((end - start)) us (stream $MEMWORK_STREAM_MIB MiB" \
        "$((streamed - start)) us; tmpfs file $MEMWORK_FILE_MIB MiB: write" \
        "$((written - streamed)) us, read $((read_back - written)) us, remove" \
        "$((end - read_back)) us)"
}
if [ -n "$memwork" ]; then
    memwork_test
fi

# Hundredths of a second since boot: the clock of the bounded waits below.
now_cs() {
    awk '{ printf "%d\n", $1 * 100 }' /proc/uptime
}

# tandem.test=vsock: the secure guest's service through tandem-client. Each client call
# has its own 5 s timeouts; `timeout` bounds it once more, so nothing here can hang.
# Waits up to 60 s for the secure guest's service; false when it never answers.
vsock_wait() {
    deadline=$(($(now_cs) + 6000))
    until out=$(timeout 10 tandem-client --timeout 2 stats 2>&1); do
        if [ "$(now_cs)" -ge "$deadline" ]; then
            echo "tandem-test: vsock service DOWN: $out"
            return 1
        fi
        sleep 1
    done
    echo "tandem-test: vsock service up"
}

# tandem.test=midstream: one signature, then connections busy in the background when the
# boot's finish (reboot) comes, so Linux goes down mid-stream.
vsock_midstream() {
    vsock_wait || return
    printf 'tandem says hello\n' > /tmp/msg
    echo "tandem-test: sign $(timeout 30 tandem-client sign /tmp/msg 2>&1)"
    tandem-client flood 60 2 > /dev/null 2>&1 &
    sleep 2
    echo "tandem-test: mid-stream: 2 connections busy"
}

vsock_test() {
    # 1. The service, within 60 s.
    vsock_wait || return

    # 2. Sign, verify, and verify a copy with one byte changed.
    printf 'tandem says hello\n' > /tmp/msg
    printf 'tandem says hellO\n' > /tmp/bad
    out=$(timeout 30 tandem-client sign /tmp/msg 2>&1)
    echo "tandem-test: sign $out"
    tag=${out%% *}
    echo "tandem-test: verify good: $(timeout 30 tandem-client verify /tmp/msg "$tag" 2>&1)"
    echo "tandem-test: verify tampered: $(timeout 30 tandem-client verify /tmp/bad "$tag" 2>&1)"

    # 3. Malformed input: each refused as it should be, and the service goes on.
    for kind in garbage badlen short-verify unknown-op replay truncated; do
        if timeout 60 tandem-client attack "$kind"; then
            echo "tandem-test: attack $kind ok"
        else
            echo "tandem-test: attack $kind FAILED"
        fi
    done

    # 4. Memory Linux must not reach: the access dies of SIGBUS (status 128 + 7).
    for probe in ${devmem:-$DEVMEM_PROBES}; do
        access=${probe%%:*}
        addr=${probe#*:}
        if [ "$access" = write ]; then
            out=$(timeout 10 devmem "$addr" 32 0x5a5a5a5a 2>&1)
        else
            out=$(timeout 10 devmem "$addr" 2>&1)
        fi
        status=$?
        if [ "$status" -eq 135 ]; then
            echo "tandem-test: devmem $access $addr: SIGBUS"
        else
            echo "tandem-test: devmem $access $addr: NOT BLOCKED (status $status, output $out)"
        fi
    done

    # 5. A flood from 4 connections for 5 s; meanwhile a `sleep 1` must not take 3 s.
    timeout 60 tandem-client flood 5 4 > /tmp/flood.out &
    flood=$!
    sleep 1
    t0=$(now_cs)
    sleep 1
    took=$(($(now_cs) - t0))
    wait "$flood"
    echo "tandem-test: flood $(cat /tmp/flood.out)"
    if [ "$took" -le 300 ]; then
        echo "tandem-test: responsive during flood (sleep 1 took ${took}0 ms)"
    else
        echo "tandem-test: NOT responsive during flood (sleep 1 took ${took}0 ms)"
    fi

    # 6. Latency, and the service's counters.
    echo "tandem-test: $(timeout 120 tandem-client bench 200 2>&1)"
    timeout 30 tandem-client stats 2>&1 | while read -r line; do
        echo "tandem-test: stats $line"
    done

    # 7. tandem.crash=1: the secure guest faults on purpose, and must come back.
    if [ -n "$crash" ]; then
        if out=$(timeout 30 tandem-client crash 2>&1); then
            echo "$out" | while read -r line; do echo "tandem-test: $line"; done
            # The request that was in flight on another connection when it went down.
            failed=
            inflight=$(echo "$out" | sed -n 's/^crash: a request in flight on another connection failed: //p')
            if [ -n "$inflight" ]; then
                failed=1
                echo "tandem-test: after crash first error: $inflight"
            fi
            deadline=$(($(now_cs) + 6000))
            while :; do
                if out=$(timeout 30 tandem-client sign /tmp/msg 2>&1); then
                    echo "tandem-test: recovered after crash: $out"
                    break
                fi
                if [ -z "$failed" ]; then
                    failed=1
                    echo "tandem-test: after crash first error: $out"
                fi
                if [ "$(now_cs)" -ge "$deadline" ]; then
                    echo "tandem-test: NOT recovered after crash"
                    break
                fi
                sleep 1
            done
        else
            echo "tandem-test: crash FAILED: $out"
        fi
    fi
}
if [ -n "$vsock" ]; then
    vsock_test
    echo "tandem-test: vsock done"
fi

# Prints each line of $1 as a tandem-test: line.
test_lines() {
    [ -n "$1" ] || return 0
    printf '%s\n' "$1" | while IFS= read -r line; do
        echo "tandem-test: $line"
    done
}

# tandem.test=attest: the secure guest's attestation report, checked as a relying party
# checks it (the chain, the pinned device key, the expected image), then replayed.
attest_test() {
    vsock_wait || return
    set --
    if [ -n "$attest_expect" ]; then
        set -- "$@" --expect "$attest_expect"
    fi
    if [ -n "$attest_root" ]; then
        set -- "$@" --root "$attest_root"
    fi
    rm -f /tmp/report
    out=$(timeout 30 tandem-client attest --save /tmp/report "$@" 2>&1)
    status=$?
    test_lines "$out"
    echo "tandem-test: attest exit $status"

    # The saved report against a fresh nonce: a replay, which must be refused (exit 1).
    out=$(timeout 30 tandem-client attest --replay-from /tmp/report 2>&1)
    status=$?
    test_lines "$out"
    echo "tandem-test: replay exit $status"

    if [ -n "$wrong_expect" ]; then
        zeros=0000000000000000000000000000000000000000000000000000000000000000
        out=$(timeout 30 tandem-client attest --expect "$zeros" 2>&1)
        status=$?
        test_lines "$out"
        echo "tandem-test: wrong expect exit $status"
    fi
}
if [ -n "$attest" ]; then
    attest_test
    echo "tandem-test: attest done"
fi
if [ -n "$midstream" ]; then
    vsock_midstream
fi

case "$finish" in
poweroff)
    echo "tandem-init: powering off"
    umount /mnt 2>/dev/null
    poweroff -f
    ;;
reboot)
    echo "tandem-init: rebooting"
    umount /mnt 2>/dev/null
    reboot -f
    ;;
esac
echo "tandem-init: the disk is on /mnt; 'poweroff -f' stops this VM, 'reboot -f' restarts it"
# PID 1 must never exit: start another shell when one ends.
while :; do
    setsid cttyhack sh
    echo "tandem-init: the shell exited; starting another"
    sleep 1
done
"#,
    );
    s
}

/// busybox `udhcpc`'s hook: configures the interface from the lease and says what it got.
fn udhcpc_script() -> String {
    r#"#!/bin/sh
# udhcpc hook (generated by xtask/src/initramfs.rs): $1 is the event, the lease is in $ip,
# $mask (prefix length), $router and $dns.
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    gateway=${router%% *}
    if [ -n "$gateway" ]; then
        ip route add default via "$gateway" dev "$interface"
    fi
    : > /etc/resolv.conf
    for server in $dns; do
        echo "nameserver $server" >> /etc/resolv.conf
    done
    echo "$ip/${mask:-24} router ${gateway:-none}" > "/run/$interface.lease"
    echo "tandem-init: $interface leased $ip/${mask:-24}, router ${gateway:-none}, dns ${dns:-none}"
    ;;
esac
exit 0
"#
    .to_string()
}

/// A kernel module to carry.
struct Module {
    /// The path under `lib/modules/<release>/`.
    rel: String,
    /// Names of the modules that must be loaded before it: its `depends=` and the `pre:`
    /// modules of its `softdep=`.
    depends: Vec<String>,
    data: Vec<u8>,
}

/// The module's name as `depends=` spells it: the file name without `.ko`, `-` as `_`.
fn module_name(rel: &str) -> &str {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.strip_suffix(".ko").unwrap_or(file)
}

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// What a module's `.modinfo` says about other modules.
#[derive(Debug, Default, PartialEq, Eq)]
struct Modinfo {
    /// `depends=`: modules whose symbols it uses.
    depends: Vec<String>,
    /// `softdep=` `pre:`: modules (or aliases) to load before it.
    pre: Vec<String>,
    /// `softdep=` `post:`: modules (or aliases) to load after it.
    post: Vec<String>,
    /// `alias=`: other names it answers to.
    aliases: Vec<String>,
}

fn parse_modinfo(modinfo: &[u8]) -> Modinfo {
    let mut info = Modinfo::default();
    for entry in modinfo.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some(list) = entry.strip_prefix("depends=") {
            info.depends
                .extend(list.split(',').filter(|d| !d.is_empty()).map(canonical));
        } else if let Some(list) = entry.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut into_pre = true;
            for word in list.split_whitespace() {
                match word {
                    "pre:" => into_pre = true,
                    "post:" => into_pre = false,
                    name if into_pre => info.pre.push(name.to_string()),
                    name => info.post.push(name.to_string()),
                }
            }
        } else if let Some(alias) = entry.strip_prefix("alias=") {
            info.aliases.push(alias.to_string());
        }
    }
    info
}

/// The `.modinfo` section of the ELF kernel module at `path`, read without reading the
/// whole file (the alias index reads every module of the kernel).
fn read_modinfo(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let at = |offset: u64, len: usize| -> std::result::Result<Vec<u8>, String> {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| format!("{len} bytes at {offset:#x}: {e}"))?;
        Ok(buf)
    };
    let ehdr = at(0, 64).unwrap_or_default();
    if ehdr.len() < 64 || &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err("not a little-endian ELF64 file: not an arm64 kernel module".into());
    }
    let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u32_at =
        |b: &[u8], o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0; 8];
        v.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(v)
    };
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&ehdr, 0x28),
        u16_at(&ehdr, 0x3a),
        u16_at(&ehdr, 0x3c),
        u16_at(&ehdr, 0x3e),
    );
    if shentsize < 64 || shstrndx >= shnum {
        return Err("malformed section header table".into());
    }
    let table = at(shoff, (shentsize * shnum) as usize)?;
    let section = |i: u64| {
        let h = &table[(i * shentsize) as usize..];
        (u32_at(h, 0), u64_at(h, 0x18), u64_at(h, 0x20)) // name, offset, size
    };
    let (_, names_at, names_len) = section(shstrndx);
    let names = at(names_at, names_len as usize)?;
    for i in 0..shnum {
        let (name, offset, size) = section(i);
        let name = names.get(name as usize..).unwrap_or_default();
        if name.starts_with(b".modinfo\0") {
            return at(offset, size as usize);
        }
    }
    Err("no .modinfo section: not a kernel module".into())
}

/// The modules of one kernel release, `lib/modules/<release>/`.
struct ModuleTree {
    dir: PathBuf,
    /// Module name (`_` for `-`) -> path under `dir`.
    by_name: BTreeMap<String, String>,
    /// Names of the modules built into the kernel (`modules.builtin`).
    builtin: BTreeSet<String>,
    /// Alias -> module names, read from every module when first needed.
    aliases: Option<BTreeMap<String, Vec<String>>>,
}

impl ModuleTree {
    fn open(dir: &Path) -> Result<ModuleTree> {
        let mut by_name = BTreeMap::new();
        let mut compressed = None;
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            let entries = fs::read_dir(&d)
                .map_err(|e| Error::new(format!("cannot read {}: {e}", d.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let file = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    stack.push(path);
                } else if file.ends_with(".ko") {
                    let rel = path
                        .strip_prefix(dir)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned();
                    by_name.insert(canonical(module_name(&rel)), rel);
                } else if [".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .any(|x| file.ends_with(x))
                {
                    compressed = Some(path);
                }
            }
        }
        if by_name.is_empty() {
            match compressed {
                Some(path) => bail!(
                    "{}: the kernel's modules are compressed; the initramfs builder reads only plain .ko files",
                    path.display()
                ),
                None => bail!("no kernel modules (*.ko) under {}", dir.display()),
            }
        }
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(|rel| canonical(module_name(rel)))
            .collect();
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            by_name,
            builtin,
            aliases: None,
        })
    }

    /// The module names that `name` (a module name or an alias) stands for: none when it
    /// is built into the kernel.
    fn lookup(&mut self, name: &str) -> Result<Option<Vec<String>>> {
        let canon = canonical(name);
        if self.by_name.contains_key(&canon) {
            return Ok(Some(vec![canon]));
        }
        if self.builtin.contains(&canon) {
            return Ok(Some(Vec::new()));
        }
        if self.aliases.is_none() {
            let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (module, rel) in &self.by_name {
                let path = self.dir.join(rel);
                let info = read_modinfo(&path)
                    .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
                for alias in parse_modinfo(&info).aliases {
                    aliases.entry(alias).or_default().push(module.clone());
                }
            }
            self.aliases = Some(aliases);
        }
        Ok(self.aliases.as_ref().and_then(|a| a.get(name)).cloned())
    }

    /// `wanted` and every module they need, each read once.
    fn resolve(mut self, wanted: &[&str]) -> Result<Vec<Module>> {
        let mut modules: BTreeMap<String, Module> = BTreeMap::new();
        let mut queue: Vec<(String, String)> = wanted
            .iter()
            .map(|w| (w.to_string(), "the initramfs (WANTED)".to_string()))
            .collect();
        while let Some((name, needed_by)) = queue.pop() {
            let canon = canonical(&name);
            if modules.contains_key(&canon) {
                continue;
            }
            let Some(rel) = self.by_name.get(&canon).cloned() else {
                bail!(
                    "kernel module {name} (needed by {needed_by}) is not in {}",
                    self.dir.display()
                );
            };
            let path = self.dir.join(&rel);
            let data = read(&path)?;
            let info = parse_modinfo(
                &read_modinfo(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?,
            );
            let mut depends = Vec::new();
            for dep in &info.depends {
                if !self.builtin.contains(dep) {
                    depends.push(dep.clone());
                    queue.push((dep.clone(), canon.clone()));
                }
            }
            // Soft dependencies are optional: one the kernel does not have is skipped, as
            // modprobe does.
            for (soft, before) in info
                .pre
                .iter()
                .map(|p| (p, true))
                .chain(info.post.iter().map(|p| (p, false)))
            {
                for found in self.lookup(soft)?.unwrap_or_default() {
                    if before {
                        depends.push(found.clone());
                    }
                    queue.push((found, canon.clone()));
                }
            }
            modules.insert(canon, Module { rel, depends, data });
        }
        Ok(modules.into_values().collect())
    }
}

/// The modules' paths ordered so each comes after what it depends on (stable otherwise).
fn load_order(modules: &[Module]) -> Result<Vec<String>> {
    let by_name: BTreeMap<String, &Module> = modules
        .iter()
        .map(|m| (canonical(module_name(&m.rel)), m))
        .collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<&str, bool> = BTreeMap::new(); // false: visiting, true: done
    fn visit<'a>(
        m: &'a Module,
        by_name: &BTreeMap<String, &'a Module>,
        state: &mut BTreeMap<&'a str, bool>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        match state.get(m.rel.as_str()) {
            Some(true) => return Ok(()),
            Some(false) => bail!("kernel modules: a dependency cycle through {}", m.rel),
            None => {}
        }
        state.insert(&m.rel, false);
        for dep in &m.depends {
            let Some(d) = by_name.get(dep) else {
                bail!(
                    "kernel module {} depends on {dep}, which the initramfs does not include",
                    m.rel
                );
            };
            visit(d, by_name, state, order)?;
        }
        state.insert(&m.rel, true);
        order.push(m.rel.clone());
        Ok(())
    }
    for m in modules {
        visit(m, &by_name, &mut state, &mut order)?;
    }
    Ok(order)
}

/// An uncompressed `newc` cpio archive (what the kernel's initramfs unpacker reads).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" {
            0
        } else {
            self.next_ino
        };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio newc entries are below 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // with its NUL
            0,                     // check (unused by newc)
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }
}

/// 64-bit FNV-1a over length-prefixed pieces: enough to notice a changed input.
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn add(&mut self, data: &[u8]) {
        for &b in (data.len() as u64).to_le_bytes().iter().chain(data) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, nlink, rdev, data) of one archive entry.
    type Entry = (String, u32, u32, (u32, u32), Vec<u8>);

    /// Walks a newc archive: its entries, trailer excluded.
    fn entries(mut bytes: &[u8]) -> Vec<Entry> {
        let total = bytes.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((total - bytes.len()) % 4, 0, "entry not 4-byte aligned");
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, nlink, size, namesize) = (field(1), field(4), field(6), field(11));
            let rdev = (field(9), field(10));
            let name_end = 110 + namesize as usize;
            assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_string();
            let data_at = name_end.next_multiple_of(4);
            let data = bytes[data_at..data_at + size as usize].to_vec();
            bytes = &bytes[(data_at + size as usize).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return out;
            }
            out.push((name, mode, nlink, rdev, data));
        }
    }

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::default();
        c.dir("bin", 0o755);
        c.file("bin/busybox", 0o755, b"12345");
        c.symlink("bin/sh", "busybox");
        c.char_device("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        // The first header, field by field.
        assert_eq!(
            std::str::from_utf8(&bytes[..110]).unwrap(),
            "070701\
             00000001000041ed000000000000000000000002000000000000000000000000\
             00000000000000000000000000000004\
             00000000"
        );
        assert_eq!(&bytes[110..114], b"bin\0");
        let e = entries(&bytes);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].0, "bin/busybox");
        assert_eq!(e[1].1, 0o100755);
        assert_eq!(e[1].4, b"12345");
        assert_eq!((e[2].1, e[2].4.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!((e[3].1, e[3].3), (0o020600, (5, 1)));
    }

    #[test]
    fn what_modinfo_says() {
        let info = b"license=GPL\0depends=vmw_vsock_virtio_transport_common,vsock\0\
                     softdep=pre: crypto-crc32c post: a-b\0alias=fs-ext4\0alias=ext3\0name=x\0";
        assert_eq!(
            parse_modinfo(info),
            Modinfo {
                depends: vec!["vmw_vsock_virtio_transport_common".into(), "vsock".into()],
                pre: vec!["crypto-crc32c".into()],
                post: vec!["a-b".into()],
                aliases: vec!["fs-ext4".into(), "ext3".into()],
            }
        );
        assert_eq!(
            parse_modinfo(b"depends=\0name=virtio_mmio\0"),
            Modinfo::default()
        );
    }

    /// A minimal ELF64 kernel module: section headers for NULL, .shstrtab and .modinfo.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_at = f.len() as u64;
        f.extend_from_slice(names);
        let info_at = f.len() as u64;
        f.extend_from_slice(modinfo.as_bytes());
        let shoff = f.len() as u64;
        for (name, offset, size) in [
            (0u32, 0u64, 0u64),
            (1, names_at, names.len() as u64),
            (11, info_at, modinfo.len() as u64),
        ] {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&h);
        }
        f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn dependencies_from_the_modules_themselves() {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let put = |rel: &str, modinfo: &str| {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, fake_ko(modinfo)).unwrap();
        };
        put(
            "kernel/fs/ext4/ext4.ko",
            "depends=jbd2,crc16\0softdep=pre: crypto-crc32c\0",
        );
        put("kernel/fs/jbd2/jbd2.ko", "depends=\0");
        put("kernel/lib/crc16.ko", "depends=\0");
        put(
            "kernel/crypto/crc32c_generic.ko",
            "alias=crypto-crc32c\0alias=crc32c\0",
        );
        put(
            "kernel/drivers/net/virtio_net.ko",
            "depends=net_failover,virtio\0",
        );
        put(
            "kernel/drivers/net/net_failover.ko",
            "depends=failover\0softdep=pre: nothing-here\0",
        );
        put("kernel/net/core/failover.ko", "");
        put("kernel/unrelated.ko", "alias=crc32c-other\0");
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\n",
        )
        .unwrap();

        let tree = ModuleTree::open(&dir).unwrap();
        let modules = tree.resolve(&["ext4", "virtio_net"]).unwrap();
        let order = load_order(&modules).unwrap();
        let names: Vec<&str> = order.iter().map(|r| module_name(r)).collect();
        assert_eq!(
            names,
            [
                "crc16",
                "crc32c_generic",
                "jbd2",
                "ext4",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let tree = ModuleTree::open(&dir).unwrap();
        let err = tree.resolve(&["vsock"]).err().unwrap().to_string();
        assert!(
            err.contains("kernel module vsock (needed by the initramfs"),
            "{err}"
        );
        assert!(read_modinfo(&dir.join("modules.builtin"))
            .unwrap_err()
            .contains("not a little-endian ELF64"));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn module(rel: &str, deps: &[&str]) -> Module {
        Module {
            rel: rel.into(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            data: Vec::new(),
        }
    }

    #[test]
    fn dependencies_load_first() {
        let mods = [
            module("kernel/a/virtio_net.ko", &["net_failover"]),
            module("kernel/b/net_failover.ko", &["failover"]),
            module("kernel/c/failover.ko", &[]),
            module("kernel/d/virtio_mmio.ko", &[]),
        ];
        assert_eq!(
            load_order(&mods).unwrap(),
            [
                "kernel/c/failover.ko",
                "kernel/b/net_failover.ko",
                "kernel/a/virtio_net.ko",
                "kernel/d/virtio_mmio.ko"
            ]
        );
        let missing = [module("kernel/a/virtio_net.ko", &["net_failover"])];
        assert!(load_order(&missing)
            .unwrap_err()
            .to_string()
            .contains("depends on net_failover"));
        let cycle = [module("a.ko", &["b"]), module("b.ko", &["a"])];
        assert!(load_order(&cycle)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
    }

    #[test]
    fn init_script_markers() {
        let s = init_script(&["kernel/x.ko".into(), "kernel/y.ko".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("mount -t devtmpfs devtmpfs /dev"));
        assert!(s.contains("tandem-init: user space up on $(nproc) CPUs"));
        assert!(s.contains("MODULES=\"kernel/x.ko kernel/y.ko\"\n"));
        assert!(s.contains("tandem.test=*)"));
        assert!(s.contains("poweroff -f") && s.contains("reboot -f"));
        assert!(s.contains("KNOWN_FILE=tandem.txt\n"));
        assert!(s.contains("MEMWORK_STREAM_MIB=2000\nMEMWORK_FILE_MIB=256\n"));
        assert!(s.contains("tandem-check: done"));
        assert!(s.contains(
            "DEVMEM_PROBES=\"read:0x90000000 write:0x90000000 read:0x40200000 read:0x94100000\"\n"
        ));
        for marker in [
            "vsock) vsock=1 ;;",
            "memwork) memwork=1 ;;",
            "tandem-test: memwork $((end - start)) us (stream",
            "tandem-test: memwork FAILED: $what: $out",
            "tandem.crash=1) crash=1 ;;",
            "tandem-test: vsock service up",
            "tandem-test: attack $kind ok",
            "tandem-test: devmem $access $addr: SIGBUS",
            "tandem-test: responsive during flood",
            "tandem-test: recovered after crash: ",
            "tandem-test: vsock done",
            "attest) attest=1 ;;",
            "tandem.expect=*) attest_expect=${word#tandem.expect=} ;;",
            "tandem.root=*) attest_root=${word#tandem.root=} ;;",
            "tandem.wrong-expect=1) wrong_expect=1 ;;",
            "tandem-client attest --save /tmp/report \"$@\"",
            "tandem-test: attest exit $status",
            "tandem-client attest --replay-from /tmp/report",
            "tandem-test: replay exit $status",
            "tandem-test: wrong expect exit $status",
            "tandem-test: attest done",
        ] {
            assert!(s.contains(marker), "{marker}");
        }
        assert!(udhcpc_script().contains("> \"/run/$interface.lease\""));
    }
}
