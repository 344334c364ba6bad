//! The rich OS's side of the Linux tests: what the initramfs (xtask/src/initramfs.rs) prints
//! with `tandem.test=checks`, read back from one boot's console output and judged, and a
//! tiny cpio writer for tests that bring their own initrd.

use std::fmt::Write as _;

use crate::DISK_FILE;

/// The console lines of one Linux boot with `tandem.test=checks`, in order (other lines
/// come between them).
pub const CHECKS_IN_ORDER: [&str; 12] = [
    "Booting Linux on physical CPU 0x0000000000",
    "psci: PSCIv1.1 detected in firmware.",
    "arch_timer: cp15 timer(s) running at",
    "smp: Brought up 1 node, 3 CPUs",
    "Run /init as init process",
    "tandem-init: user space up on 3 CPUs",
    "tandem-init: loaded ",
    "tandem-init: /dev/vda mounted on /mnt",
    "tandem-init: eth0 leased 10.0.2.15/",
    "tandem-check: nproc 3",
    "tandem-check: timer interrupts ",
    "tandem-check: done",
];

/// What one boot must have shown.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// The VM's RAM, `[start, end)`: every `System RAM` range of /proc/iomem lies in it.
    pub ram: (u64, u64),
}

/// Judges the output of one boot (from its first line to `tandem-check: done`): every
/// `tandem-check:` line as expected, the disk and network devices on the transports the
/// config assigns, and every module loaded. The error lists every problem.
pub fn check_boot(output: &str, expected: &Expected) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = crate::lines_in_order(output, &CHECKS_IN_ORDER) {
        problems.push(e);
    }
    let checks: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("tandem-check: ").map(|(_, rest)| rest.trim()))
        .collect();
    let find = |prefix: &str| checks.iter().find_map(|c| c.strip_prefix(prefix));

    let ram: Vec<&str> = checks
        .iter()
        .filter_map(|c| c.strip_prefix("ram "))
        .collect();
    if ram.is_empty() {
        problems.push("no `tandem-check: ram` line: /proc/iomem has no System RAM".into());
    }
    for range in &ram {
        let parsed = range.split_once('-').and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        });
        match parsed {
            Some((start, last)) if start >= expected.ram.0 && last < expected.ram.1 => {}
            _ => problems.push(format!(
                "/proc/iomem has System RAM {range}, outside the VM's [{:#x}, {:#x})",
                expected.ram.0, expected.ram.1
            )),
        }
    }
    for what in ["timer interrupts ", "IPIs "] {
        match find(what) {
            Some(v) if v.ends_with(" rising") && !v.ends_with("NOT rising") => {}
            Some(v) => problems.push(format!("{what}did not rise: {v}")),
            None => problems.push(format!("no `tandem-check: {what}` line")),
        }
    }
    let (file, text) = DISK_FILE;
    match find(&format!("disk {file}: ")) {
        Some(t) if t == text => {}
        other => problems.push(format!("the disk's {file} reads {other:?}, not {text:?}")),
    }
    match find("lease eth0 ") {
        Some(l) if l.starts_with("10.0.2.15/24 router 10.0.2.2") => {}
        other => problems.push(format!(
            "no DHCP lease from QEMU's user network on eth0: {other:?}"
        )),
    }
    for device in [
        "block device on a003e00.virtio_mmio",
        "network device on a003c00.virtio_mmio",
    ] {
        if !output.contains(device) {
            problems.push(format!("no virtio {device}"));
        }
    }
    for bad in [
        "insmod ",
        "Kernel panic",
        "initramfs unpacking failed",
        "Oops",
    ] {
        if let Some(line) = output.lines().find(|l| l.contains(bad)) {
            problems.push(format!("Linux reported a problem: {line}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let mut text = String::from("the Linux boot's checks failed:");
        for p in &problems {
            let _ = write!(text, "\n  - {p}");
        }
        Err(text)
    }
}

/// An uncompressed `newc` cpio archive of regular files: `(path, mode, contents)`. Linux
/// unpacks archives one after the other, a later file replacing an earlier one, so this
/// appended to an initramfs overrides some of its files.
pub fn cpio_newc(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    for (i, (path, mode, data)) in files.iter().enumerate() {
        entry(&mut out, i as u32 + 1, path, 0o100000 | mode, data);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_boot() -> String {
        let mut out = String::new();
        for line in CHECKS_IN_ORDER {
            out.push_str("[linux] ");
            out.push_str(line);
            out.push('\n');
            if line.starts_with("tandem-init: loaded") {
                out.push_str("[linux] tandem-init: virtio0: block device on a003e00.virtio_mmio\n");
                out.push_str(
                    "[linux] tandem-init: virtio1: network device on a003c00.virtio_mmio\n",
                );
            }
            if line.starts_with("tandem-check: nproc") {
                out.push_str("[linux] tandem-check: ram 50000000-8fffffff\n");
            }
            if line.starts_with("tandem-check: timer") {
                out.push_str("[linux] tandem-check: IPIs 5 -> 9 rising\n");
                out.push_str(
                    "[linux] tandem-check: disk tandem.txt: tandem disk: hello from ext4 on virtio-blk\n",
                );
                out.push_str("[linux] tandem-check: lease eth0 10.0.2.15/24 router 10.0.2.2\n");
            }
        }
        out.replace("interrupts \n", "interrupts 1 -> 2 rising\n")
    }

    const VM: Expected = Expected {
        ram: (0x5000_0000, 0x9000_0000),
    };

    #[test]
    fn a_good_boot_passes() {
        check_boot(&good_boot(), &VM).unwrap();
    }

    #[test]
    fn each_problem_is_named() {
        let bad = good_boot()
            .replace("ram 50000000-8fffffff", "ram 90000000-93ffffff")
            .replace("IPIs 5 -> 9 rising", "IPIs 5 -> 5 NOT rising")
            .replace("hello from ext4", "hullo");
        let err = check_boot(&bad, &VM).unwrap_err();
        assert!(
            err.contains("System RAM 90000000-93ffffff, outside"),
            "{err}"
        );
        assert!(err.contains("IPIs did not rise"), "{err}");
        assert!(err.contains("the disk's tandem.txt reads"), "{err}");
        assert!(!err.contains("timer interrupts did not rise"), "{err}");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let a = cpio_newc(&[("init", 0o755, b"#!/bin/sh\n")]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
