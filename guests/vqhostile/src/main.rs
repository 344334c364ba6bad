//! Hostile virtqueue test guest: in Linux's place, it drives the vsock device the
//! hypervisor emulates (the `virtio,mmio` node of its DTB) the way no driver should, and
//! checks that each abuse ends with the device in `DEVICE_NEEDS_RESET` and working again
//! after a reset, while nothing else is harmed (the test watches the secure guest's
//! heartbeat and the hypervisor).
//!
//! Each attack brings the device up (features, three queues in this VM's memory,
//! `DRIVER_OK`), breaks the transmit queue one way, notifies, and reads `Status`:
//!
//! - `wild-address`: a descriptor pointing at the secure guest's memory;
//! - `hypervisor-address`: a descriptor pointing at the hypervisor's image;
//! - `loop`: two descriptors chained to each other;
//! - `huge-length`: a 4 GiB buffer;
//! - `indirect`: an indirect descriptor (not offered);
//! - `index-jump`: the available index 1000 ahead of the ring;
//! - `ring-outside`: the descriptor table itself outside this VM's memory;
//! - `rx-into-hypervisor`: a receive buffer in the hypervisor's image, then a packet the
//!   device must answer (a request to a port nobody listens on), so it writes there.
//!
//! Prints `vqhostile: <attack>: needs reset, reset OK` for each, then `TEST PASS
//! vqhostile`. Any attack the device takes without complaint fails the test.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use tandem_guest_rt::{println, Boot, Failure, Guest};

/// virtio-mmio registers (virtio 1.2, 4.2.2).
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC: u64 = 0x080;
    pub const QUEUE_DRIVER: u64 = 0x090;
    pub const QUEUE_DEVICE: u64 = 0x0a0;
}

const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;
const VSOCK_DEVICE_ID: u32 = 19;
const QUEUE_SIZE: u64 = 16;
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
const DESC_INDIRECT: u16 = 4;
/// The vsock header: 44 bytes.
const HEADER_LEN: u32 = 44;

/// Where the secure guest and the hypervisor live in the test's layout.
const SECURE_RAM: u64 = 0x9000_0000;
const HYPERVISOR: u64 = 0x4020_0000;

struct Device {
    base: u64,
}

impl Device {
    fn read(&self, off: u64) -> u32 {
        // SAFETY: a register of the device window the DTB names; the hypervisor traps it.
        unsafe { ((self.base + off) as *const u32).read_volatile() }
    }

    fn write(&self, off: u64, value: u32) {
        // SAFETY: as for `read`.
        unsafe { ((self.base + off) as *mut u32).write_volatile(value) }
    }

    fn write64(&self, off: u64, value: u64) {
        self.write(off, value as u32);
        self.write(off + 4, (value >> 32) as u32);
    }
}

/// This VM's memory for the queues: three rings, each a descriptor table, an available
/// ring and a used ring, then buffers.
#[derive(Clone, Copy)]
struct Queues {
    base: u64,
}

impl Queues {
    fn desc(&self, q: u64) -> u64 {
        self.base + q * 0x1000
    }
    fn avail(&self, q: u64) -> u64 {
        self.desc(q) + 16 * QUEUE_SIZE
    }
    fn used(&self, q: u64) -> u64 {
        self.desc(q) + 0x800
    }
    fn buffer(&self, n: u64) -> u64 {
        self.base + 0x4000 + n * 0x1000
    }

    fn zero(&self) {
        for addr in (self.base..self.base + 0x8000).step_by(8) {
            poke64(addr, 0);
        }
    }

    /// Writes descriptor `i` of queue `q`.
    fn set_desc(&self, q: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc(q) + 16 * i;
        poke64(at, addr);
        poke32(at + 8, len);
        poke32(at + 12, u32::from(flags) | (u32::from(next) << 16));
    }

    /// Puts head `head` in the available ring at `slot` and sets the index to `idx`.
    fn offer(&self, q: u64, slot: u64, head: u16, idx: u16) {
        poke16(self.avail(q) + 4 + 2 * slot, head);
        poke16(self.avail(q) + 2, idx);
    }
}

fn poke16(addr: u64, v: u16) {
    // SAFETY: `addr` is in the queue area of this VM's memory, used by nothing else.
    unsafe { (addr as *mut u16).write_volatile(v) }
}
fn poke32(addr: u64, v: u32) {
    // SAFETY: as for `poke16`.
    unsafe { (addr as *mut u32).write_volatile(v) }
}
fn poke64(addr: u64, v: u64) {
    // SAFETY: as for `poke16`.
    unsafe { (addr as *mut u64).write_volatile(v) }
}

/// Resets the device and brings it up with all three queues in `queues`; `desc_override`
/// replaces the transmit queue's table address.
fn bring_up(dev: &Device, queues: Queues, desc_override: Option<u64>) -> Result<(), String> {
    dev.write(reg::STATUS, 0);
    if dev.read(reg::STATUS) != 0 {
        return Err("the device did not reset".into());
    }
    queues.zero();
    dev.write(reg::STATUS, ACKNOWLEDGE | DRIVER);
    dev.write(reg::DEVICE_FEATURES_SEL, 1);
    let high = dev.read(reg::DEVICE_FEATURES);
    dev.write(reg::DRIVER_FEATURES_SEL, 1);
    dev.write(reg::DRIVER_FEATURES, high & 1);
    dev.write(reg::DRIVER_FEATURES_SEL, 0);
    dev.write(reg::DRIVER_FEATURES, 0);
    dev.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if dev.read(reg::STATUS) & FEATURES_OK == 0 {
        return Err("FEATURES_OK refused".into());
    }
    for q in 0..3 {
        dev.write(reg::QUEUE_SEL, q as u32);
        if u64::from(dev.read(reg::QUEUE_NUM_MAX)) < QUEUE_SIZE {
            return Err(format!("queue {q} is smaller than {QUEUE_SIZE}"));
        }
        dev.write(reg::QUEUE_NUM, QUEUE_SIZE as u32);
        let desc = match (q, desc_override) {
            (1, Some(at)) => at,
            _ => queues.desc(q),
        };
        dev.write64(reg::QUEUE_DESC, desc);
        dev.write64(reg::QUEUE_DRIVER, queues.avail(q));
        dev.write64(reg::QUEUE_DEVICE, queues.used(q));
        dev.write(reg::QUEUE_READY, 1);
    }
    dev.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    Ok(())
}

/// A REQUEST from this VM (CID 4) to the secure guest (CID 3) on a port nobody listens
/// on: the device must answer it with a reset.
fn request_header(at: u64) {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&4u64.to_le_bytes()); // src_cid
    h[8..16].copy_from_slice(&3u64.to_le_bytes()); // dst_cid
    h[16..20].copy_from_slice(&1000u32.to_le_bytes()); // src_port
    h[20..24].copy_from_slice(&4242u32.to_le_bytes()); // dst_port
    h[28..30].copy_from_slice(&1u16.to_le_bytes()); // type: stream
    h[30..32].copy_from_slice(&1u16.to_le_bytes()); // op: request
    h[36..40].copy_from_slice(&65536u32.to_le_bytes()); // buf_alloc
    for (i, b) in h.iter().enumerate() {
        // SAFETY: a buffer in the queue area of this VM's memory.
        unsafe { ((at + i as u64) as *mut u8).write_volatile(*b) }
    }
}

struct VqHostile;

impl Guest for VqHostile {
    const NAME: &'static str = "vqhostile";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let fdt = fdt::Fdt::new(boot.dtb()).map_err(|e| format!("bad DTB: {e:?}"))?;
        let base = fdt
            .all_nodes()
            .filter(|n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"))
            })
            .filter_map(|n| n.reg().and_then(|mut r| r.next()))
            .map(|r| r.starting_address as u64)
            .find(|&b| {
                let d = Device { base: b };
                d.read(reg::MAGIC) == 0x7472_6976 && d.read(reg::DEVICE_ID) == VSOCK_DEVICE_ID
            })
            .ok_or("the DTB has no virtio,mmio vsock device")?;
        let dev = Device { base };
        let ram = board.memory.first().ok_or("no memory")?;
        // Well above the image, its stacks and heap; below the DTB at the top.
        let queues = Queues {
            base: ram.base + ram.size / 2,
        };
        println!(
            "vqhostile: vsock device at {base:#x}, queues at {:#x}",
            queues.base
        );

        let attacks: [(&str, &dyn Fn() -> Option<u64>); 8] = [
            ("wild-address", &|| {
                queues.set_desc(1, 0, SECURE_RAM, HEADER_LEN, 0, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
            ("hypervisor-address", &|| {
                queues.set_desc(1, 0, HYPERVISOR, HEADER_LEN, 0, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
            ("loop", &|| {
                queues.set_desc(1, 0, queues.buffer(0), 8, DESC_NEXT, 1);
                queues.set_desc(1, 1, queues.buffer(1), 8, DESC_NEXT, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
            ("huge-length", &|| {
                queues.set_desc(1, 0, queues.buffer(0), u32::MAX, 0, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
            ("indirect", &|| {
                queues.set_desc(1, 0, queues.buffer(0), 16, DESC_INDIRECT, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
            ("index-jump", &|| {
                request_header(queues.buffer(0));
                queues.set_desc(1, 0, queues.buffer(0), HEADER_LEN, 0, 0);
                queues.offer(1, 0, 0, 1000);
                None
            }),
            ("ring-outside", &|| {
                request_header(queues.buffer(0));
                Some(SECURE_RAM)
            }),
            ("rx-into-hypervisor", &|| {
                for slot in 0..QUEUE_SIZE {
                    queues.set_desc(0, slot, HYPERVISOR, 4096, DESC_WRITE, 0);
                    queues.offer(0, slot, slot as u16, slot as u16 + 1);
                }
                request_header(queues.buffer(0));
                queues.set_desc(1, 0, queues.buffer(0), HEADER_LEN, 0, 0);
                queues.offer(1, 0, 0, 1);
                None
            }),
        ];
        for (name, attack) in attacks {
            bring_up(&dev, queues, None).map_err(|e| format!("{name}: {e}"))?;
            if let Some(table) = attack() {
                // This one needs the table address changed before DRIVER_OK.
                bring_up(&dev, queues, Some(table)).map_err(|e| format!("{name}: {e}"))?;
                request_header(queues.buffer(0));
                queues.offer(1, 0, 0, 1);
            }
            // Receive buffers for the rx attack were posted: tell the device about them.
            dev.write(reg::QUEUE_NOTIFY, 0);
            dev.write(reg::QUEUE_NOTIFY, 1);
            let status = dev.read(reg::STATUS);
            if status & NEEDS_RESET == 0 {
                return Err(format!(
                    "{name}: the device took it (status {status:#x}, no DEVICE_NEEDS_RESET)"
                )
                .into());
            }
            dev.write(reg::STATUS, 0);
            if dev.read(reg::STATUS) != 0 {
                return Err(format!("{name}: the device did not reset").into());
            }
            println!("vqhostile: {name}: needs reset, reset OK");
        }
        // After all of it, the device still comes up cleanly.
        bring_up(&dev, queues, None)?;
        if dev.read(reg::STATUS) & NEEDS_RESET != 0 {
            return Err("a fresh bring-up needs a reset".into());
        }
        Ok(())
    }
}

tandem_guest_rt::guest!(VqHostile);
