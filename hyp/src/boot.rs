//! The boot path: from the entry code to every CPU online and the banner printed.
//!
//! Boot CPU: check EL2 -> find the console in the DTB -> build the EL2 tables, MMU on ->
//! heap, logger -> parse the board -> map RAM and devices -> banner -> start the other
//! CPUs -> idle. Secondary CPUs: entry code (MMU on) -> `secondary_main` -> idle.

use alloc::string::String;
use core::fmt::Write;

use log::{info, warn};
use platform::{Gic, Platform};

use crate::arch::entry::{SecondaryBoot, SECONDARY_BOOT};
use crate::arch::{self, cache, mmu, sysreg};
use crate::bootargs;
use crate::console;
use crate::drivers::uart::ConsoleUart;
use crate::heap;
use crate::mm::pagetable::{subtract, Attrs, MapError, PAGE_SIZE};
use crate::mm::Region;
use crate::smp;
use crate::vmm;
use crate::vms;

/// The version in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the image was built from.
pub const GIT_SHA: &str = env!("TANDEM_GIT_SHA");

/// Stops the boot with a message naming what is wrong.
fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    console::emergency(format_args!("tandem: fatal: {args}"));
    arch::halt()
}

/// The counter when the boot CPU entered the image.
static ENTRY_COUNTER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Microseconds of counter time since the boot CPU entered the image.
pub fn micros_since_entry() -> u128 {
    let t0 = ENTRY_COUNTER.load(core::sync::atomic::Ordering::Relaxed);
    let freq = sysreg::counter_frequency().max(1);
    u128::from(sysreg::counter().wrapping_sub(t0)) * 1_000_000 / u128::from(freq)
}

/// The boot CPU's Rust entry, called by `_start` with the MMU off.
///
/// `dtb` is x0 at entry, `t0` the counter at entry, `load` the image's load address.
pub extern "C" fn primary_main(dtb: u64, t0: u64, load: u64) -> ! {
    ENTRY_COUNTER.store(t0, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: x0 is the DTB pointer of the boot protocol, the only CPU runs, and the MMU
    // is off, so the header is read straight from memory.
    let blob = unsafe { arch::firmware_blob(dtb) };
    let early_uart = blob.and_then(platform::early_console);
    if let Some(uart) = &early_uart {
        // SAFETY: the MMU is off, so the UART's window is reachable at its physical
        // address; it is mapped as device memory before the MMU goes on (below).
        if let Some(console) = unsafe { ConsoleUart::new(uart) } {
            console::install(console);
        }
    }

    let el = sysreg::current_el();
    if el != 2 {
        console::emergency(format_args!(
            "tandem: must be entered at EL2, but firmware started it at EL{el}. \
             Boot it from EL2 (QEMU: -M virt,virtualization=on; TF-A: hand over at EL2)."
        ));
        arch::park()
    }
    arch::install_vectors();
    sysreg::set_cpu_index(0);
    sysreg::enable_event_stream();

    let Some(blob) = blob else {
        // Without a DTB there is no console to say so on, unless the board had one at
        // a known place; the counter below at least stops in a defined state.
        fatal(format_args!(
            "x0 = {dtb:#x} does not point at a device tree blob (bad magic)"
        ))
    };
    let layout = mmu::image_layout();
    let dtb_region = Region::new(dtb, dtb + blob.len() as u64);
    let config = match mmu::build_boot_map(&layout, dtb_region, early_uart.as_ref().map(|u| u.base))
    {
        Ok(config) => config,
        Err(e) => fatal(format_args!("cannot map {}: {}", e.what, e.error)),
    };
    // Everything written with the MMU off must not be shadowed by stale cache lines once
    // the caches are on: .data (relocated), .bss, the tables, the boot stack.
    let boot_stack = mmu::stack_of(arch::entry::MAX_CPUS);
    // SAFETY: the data cache is off, so nothing in these ranges lives only in the cache.
    unsafe {
        cache::invalidate_to_poc(layout.data.start as usize, layout.data.len() as usize);
        cache::invalidate_to_poc(boot_stack.start as usize, boot_stack.len() as usize);
    }
    // SAFETY: the boot map covers the image (code, data, this stack), the DTB and the
    // console; stale lines were just invalidated.
    unsafe { mmu::enable(&config) };
    console::enable_locking();
    publish_secondary_boot(&config);
    // SAFETY: the heap is part of the image, mapped read-write, and handed over once.
    unsafe { heap::init(layout.heap) };
    console::init_logger(log::LevelFilter::Info);
    let t_mmu = sysreg::counter();

    let platform = match Platform::parse(blob) {
        Ok(p) => p,
        Err(e) => fatal(format_args!("{e}")),
    };
    let t_parsed = sysreg::counter();
    let options = bootargs::parse(platform.bootargs.as_deref().unwrap_or(""), &mut |e| {
        warn!("bootargs: {e}");
    });
    log::set_max_level(options.log_level);

    let boot_mpidr = sysreg::mpidr();
    let Some(boot_index) = platform.cpus.iter().position(|c| c.mpidr == boot_mpidr) else {
        fatal(format_args!(
            "the boot CPU (MPIDR {boot_mpidr:#x}) is not among the /cpus nodes; \
             add a cpu node with reg = <{boot_mpidr:#x}>"
        ))
    };
    sysreg::set_cpu_index(boot_index);

    info!("tandem {VERSION} ({GIT_SHA}) on {}", platform.model);
    info!(
        "image: loaded at {load:#x}, EL2 owns {:#x}-{:#x} ({} KiB: text {} KiB, rodata {} KiB, \
         data+tables {} KiB, stacks {} KiB, heap {} KiB), never given to a guest",
        layout.image.start,
        layout.image.end - 1,
        layout.image.len() / 1024,
        layout.text.len() / 1024,
        layout.rodata.len() / 1024,
        layout.data.len() / 1024,
        layout.stacks.len() / 1024,
        layout.heap.len() / 1024,
    );
    check_placement(&platform, layout.image);
    map_board(&platform, &[layout.image, dtb_region.page_aligned()]);
    init_gic(&platform, boot_index);
    info!("gic: {}", describe_gic(&platform.gic));
    info!("memory: {}", describe_memory(&platform));
    if let Some(timer) = &platform.timer {
        let khz = sysreg::counter_frequency() / 1000;
        info!(
            "timer: {}.{:03} MHz, PPIs phys {} virt {} hyp {}",
            khz / 1000,
            khz % 1000,
            timer.phys.intid(),
            timer.virt.intid(),
            timer.hyp_phys.intid()
        );
    } else {
        warn!("timer: no arm,armv8-timer node; guests will not get timer interrupts");
    }
    if let Some(uart) = &platform.console {
        info!("console: {} at {:#x}", uart.node, uart.base);
    }

    let el2_owned = [
        platform::MemRange {
            base: layout.image.start,
            size: layout.image.len(),
        },
        platform::MemRange {
            base: dtb_region.page_aligned().start,
            size: dtb_region.page_aligned().len(),
        },
    ];
    let config = vms::load(blob, &platform, &el2_owned);

    let online = smp::start_secondaries(&platform, boot_index);
    info!("cpus: {online}/{} online", platform.cpus.len());
    let t_online = sysreg::counter();
    let micros = |t: u64| {
        let freq = sysreg::counter_frequency().max(1);
        u128::from(t.wrapping_sub(t0)) * 1_000_000 / u128::from(freq)
    };
    info!("boot: entry to banner {} us", micros(sysreg::counter()));
    log::debug!(
        "boot: MMU on at {} us, DT parsed at {} us, CPUs started at {} us",
        micros(t_mmu),
        micros(t_parsed),
        micros(t_online)
    );
    log::debug!(
        "boot: EL2 tables {} of {}, heap {} bytes in use",
        mmu::tables_used(),
        arch::entry::PAGETABLE_POOL,
        heap::used()
    );
    if let Some(test) = options.self_test {
        self_test(test);
    }
    match config {
        Some(config) => vmm::setup(config, platform, blob, &el2_owned),
        None => vmm::setup_none(),
    }
    vmm::run_cpu(boot_index)
}

/// Fails on purpose, as `tandem.selftest=` asked.
fn self_test(test: bootargs::SelfTest) {
    warn!("selftest: {test:?}, on purpose");
    match test {
        bootargs::SelfTest::Panic => {
            panic!("self-test panic requested on the command line") // ok: asked for
        }
        bootargs::SelfTest::Abort => arch::read_unmapped(),
        bootargs::SelfTest::StackOverflow => {
            recurse(0);
        }
    }
}

/// Recursion the optimizer cannot flatten: each frame keeps a live array.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    if frame[0] == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[(depth % 32) as usize])
}

/// Hands the MMU settings to the CPUs that start later (they read them with the MMU off).
fn publish_secondary_boot(config: &mmu::MmuConfig) {
    let boot = SecondaryBoot {
        mair: config.mair,
        tcr: config.tcr,
        ttbr: config.ttbr,
        sctlr: config.sctlr,
        hcr: config.hcr,
        spin_index: 0,
    };
    // SAFETY: no secondary CPU runs yet, so nothing else reads or writes the block.
    unsafe { SECONDARY_BOOT.get().write(boot) };
    cache::clean_to_poc(
        SECONDARY_BOOT.addr() as usize,
        core::mem::size_of::<SecondaryBoot>(),
    );
}

/// Warns when firmware put the image where the DT says there is no RAM or where memory
/// is reserved: it then runs, but a guest could one day be given the same memory.
fn check_placement(platform: &Platform, image: Region) {
    let in_ram = platform
        .memory
        .iter()
        .any(|m| m.base <= image.start && m.end().is_some_and(|e| image.end <= e));
    if !in_ram {
        warn!(
            "image: {:#x}-{:#x} is not inside one memory bank of the DT; check the load address",
            image.start, image.end
        );
    }
    for r in &platform.reserved {
        let end = r.range.end().unwrap_or(u64::MAX);
        if r.range.base < image.end && image.start < end {
            warn!(
                "image: {:#x}-{:#x} overlaps reserved memory {} ({:#x}-{:#x}); load it elsewhere",
                image.start, image.end, r.name, r.range.base, end
            );
        }
    }
}

/// Maps all RAM (around what is mapped already), the GIC and the SMMUs for EL2.
fn map_board(platform: &Platform, mapped: &[Region]) {
    let holes: heapless_holes::Holes = mapped.iter().map(|r| (r.start, r.end)).collect();
    for bank in &platform.memory {
        let Some(end) = bank.end() else { continue };
        let region = Region::new(bank.base, end).page_aligned();
        subtract((region.start, region.end), holes.as_slice(), &mut |s, e| {
            if let Err(err) = mmu::map(s, e - s, Attrs::ReadWrite) {
                warn!("memory: cannot map {s:#x}-{e:#x} for EL2: {err}");
            }
        });
    }
    let gic_regions: alloc::vec::Vec<platform::MemRange> = match &platform.gic {
        Gic::V2 {
            gicd, gicc, gich, ..
        } => [Some(*gicd), Some(*gicc), *gich]
            .into_iter()
            .flatten()
            .collect(),
        Gic::V3 {
            gicd,
            redistributors,
            ..
        } => core::iter::once(*gicd)
            .chain(redistributors.iter().copied())
            .collect(),
    };
    // The SMMUs: the hypervisor's alone (the config refuses them as VM devices).
    let smmu_regions = platform.smmus.iter().map(|s| (s.regs, "smmu"));
    for (r, what) in gic_regions
        .into_iter()
        .map(|r| (r, "gic"))
        .chain(smmu_regions)
    {
        let region = Region::new(r.base, r.base.saturating_add(r.size)).page_aligned();
        match mmu::map(region.start, region.len(), Attrs::Device) {
            Ok(()) => {}
            // Something in the window is mapped already (a UART sharing the frame, say):
            // map the rest page by page.
            Err(MapError::AlreadyMapped { .. }) => {
                let mut page = region.start;
                while page < region.end {
                    if mmu::translate(page).is_none() {
                        if let Err(err) = mmu::map(page, PAGE_SIZE, Attrs::Device) {
                            warn!("{what}: cannot map {page:#x} for EL2: {err}");
                        }
                    }
                    page += PAGE_SIZE;
                }
            }
            Err(err) => warn!(
                "{what}: cannot map {:#x}-{:#x} for EL2: {err}",
                region.start, region.end
            ),
        }
    }
}

/// Sets up the physical GIC (GICv3 only so far; on a GICv2 board CPUs wait by polling).
fn init_gic(platform: &Platform, boot_index: usize) {
    match &platform.gic {
        Gic::V3 {
            gicd,
            redistributors,
            ..
        } => {
            let Some(gicr) = redistributors.first() else {
                return;
            };
            let mpidr = platform.cpus.get(boot_index).map_or(0, |c| c.mpidr);
            // SAFETY: map_board mapped both windows as device memory at EL2; guests never
            // get them (their GIC is emulated).
            if let Err(why) = unsafe { crate::drivers::gic::init(gicd.base, gicr.base, mpidr) } {
                warn!("gic: cannot drive the GICv3: {why}; CPUs will poll instead of sleeping");
            }
        }
        Gic::V2 {
            gicd,
            gicc,
            gich: Some(gich),
            gicv: Some(_),
            ..
        } => {
            // SAFETY: map_board mapped GICD, GICC and GICH as device memory at EL2; guests
            // get an emulated distributor and the hardware GICV, never these.
            unsafe { crate::drivers::gic::init_v2(gicd.base, gicc.base, gich.base, boot_index) };
        }
        Gic::V2 { .. } => warn!("gic: GICv2 without GICH/GICV: guests get no virtual GIC"),
    }
}

/// Tiny fixed-capacity list of ranges, so mapping needs no allocation per bank.
mod heapless_holes {
    /// Up to eight ranges.
    #[derive(Default)]
    pub struct Holes {
        items: [(u64, u64); 8],
        len: usize,
    }

    impl Holes {
        pub fn as_slice(&self) -> &[(u64, u64)] {
            &self.items[..self.len]
        }
    }

    impl FromIterator<(u64, u64)> for Holes {
        fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
            let mut h = Holes::default();
            for item in iter.into_iter().take(8) {
                h.items[h.len] = item;
                h.len += 1;
            }
            h
        }
    }
}

fn describe_gic(gic: &Gic) -> String {
    let mut s = String::new();
    match gic {
        Gic::V2 {
            gicd,
            gicc,
            gich,
            gicv,
            maintenance,
        } => {
            let _ = write!(s, "v2, GICD {:#x}, GICC {:#x}", gicd.base, gicc.base);
            if let (Some(h), Some(v)) = (gich, gicv) {
                let _ = write!(s, ", GICH {:#x}, GICV {:#x}", h.base, v.base);
            } else {
                let _ = write!(
                    s,
                    ", no GICH/GICV (guests cannot get a virtual CPU interface)"
                );
            }
            if let Some(m) = maintenance {
                let _ = write!(s, ", maintenance INTID {}", m.intid());
            }
        }
        Gic::V3 {
            gicd,
            redistributors,
            redistributor_stride,
            maintenance,
        } => {
            let _ = write!(s, "v3, GICD {:#x}, GICR", gicd.base);
            for r in redistributors {
                let _ = write!(s, " {:#x}+{:#x}", r.base, r.size);
            }
            if let Some(stride) = redistributor_stride {
                let _ = write!(s, " (stride {stride:#x})");
            }
            if let Some(m) = maintenance {
                let _ = write!(s, ", maintenance INTID {}", m.intid());
            }
        }
    }
    s
}

fn describe_memory(platform: &Platform) -> String {
    let total: u64 = platform.memory.iter().map(|m| m.size).sum();
    let mut s = String::new();
    let banks = platform.memory.len();
    let _ = write!(
        s,
        "{} MiB in {banks} bank{}:",
        total >> 20,
        if banks == 1 { "" } else { "s" }
    );
    for m in &platform.memory {
        let _ = write!(
            s,
            " {:#x}-{:#x}",
            m.base,
            m.base.saturating_add(m.size).saturating_sub(1)
        );
    }
    if !platform.reserved.is_empty() {
        let _ = write!(s, "; reserved:");
        for r in &platform.reserved {
            let _ = write!(s, " {} {:#x}+{:#x}", r.name, r.range.base, r.range.size);
        }
    }
    s
}

/// A secondary CPU's Rust entry, called with the MMU on and its own stack.
pub extern "C" fn secondary_main(index: u64) -> ! {
    let index = index as usize;
    sysreg::set_cpu_index(index);
    sysreg::enable_event_stream();
    crate::drivers::gic::init_this_cpu(index, sysreg::mpidr());
    let stack = mmu::stack_of(index);
    info!("online (stack {:#x}-{:#x})", stack.start, stack.end);
    smp::mark_online(index);
    vmm::run_cpu(index)
}

/// Reports a panic as `tandem: panic: <message> at <file>:<line>` and stops this CPU.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => console::emergency(format_args!(
            "tandem: panic: {} at {}:{}",
            info.message(),
            l.file(),
            l.line()
        )),
        None => console::emergency(format_args!("tandem: panic: {}", info.message())),
    }
    arch::halt()
}
