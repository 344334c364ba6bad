//! The VM monitor: builds each VM (stage-2 tables, images, its own DTB), runs its vCPUs on
//! their physical CPUs, and answers every trap. Each answer ends in one of three ways:
//! done, an exception injected into the guest, or the VM stopped with a logged reason.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};

use log::{error, info, warn};
use platform::config::{
    Attestation, HypervisorConfig, ModuleKind, OnCrash, ShmemConfig, VmConfig, VsockDevice,
};
use platform::guest_dt::{self, GuestLayout};
use platform::{image, MemRange, Platform};
use spin::{Mutex, Once};
use stage2::{
    IntermediatePhysAddr, PaRange, PhysAddr, Stage2Attrs, Stage2Config, Stage2Tables, Vmid,
};
use tandem_proto::attest::{self, Digest, Handover};

use crate::arch::entry::MAX_CPUS;
use crate::arch::trap::TrapFrame;
use crate::arch::vcpu::{self, El2Tables, SPSR_EL1H_MASKED};
use crate::arch::{self, sysreg};
use crate::devices::vpl011::{self, VirtualPl011};
use crate::drivers::gic;
use crate::esr::{self, VectorSlot};
use crate::guest::abort::{self, NotMmio};
use crate::guest::hypercall::{self, Hypercall};
use crate::guest::inject::{self, EntryFeatures, Exception, GuestContext};
use crate::guest::psci::{self, Effect, FirmwareMitigations, VmPsci};
use crate::guest::ptimer::{self, PhysTimer};
use crate::measure::{self, BootLog};
use vgic::{
    AccessWidth, Effect as VgicEffect, EffectSink, GicVersion, ListRegister, LrState, Vgic,
    VgicConfig,
};

mod iommu;
mod vsock;

/// The SPI of each VM's virtual console in its DTB (no interrupt is delivered yet).
const CONSOLE_SPI: u32 = guest_dt::CONSOLE_SPI;
/// Where a VM's DTB goes: this far below the end of its last memory bank.
const DTB_ROOM: u64 = 2 << 20;

/// Why a vCPU left the guest, counted per VM.
#[derive(Clone, Copy)]
enum Exit {
    Hvc,
    Smc,
    Mmio,
    Abort,
    Wfi,
    Sysreg,
    Irq,
    Other,
}

const EXIT_NAMES: [&str; 8] = [
    "hvc", "smc", "mmio", "abort", "wfi", "sysreg", "irq", "other",
];

/// One VM while the hypervisor runs.
pub struct Vm {
    config: VmConfig,
    /// Its stage-2 tables; kept for the VM's life (restarts reuse them).
    stage2: Mutex<Stage2Tables<El2Tables>>,
    vtcr: u64,
    vttbr: u64,
    psci: Mutex<VmPsci>,
    console: Mutex<VirtualPl011>,
    /// The console's interrupt level the virtual GIC was last given (see `console_irq`).
    console_level: AtomicBool,
    console_base: u64,
    /// The virtual GIC, where the hypervisor drives the physical one (GICv3 so far).
    vgic: Option<VirtualGic>,
    /// Per vCPU: where to start it when it is next woken (entry, x0).
    starts: Vec<Mutex<Option<(u64, u64)>>>,
    stopped: AtomicBool,
    /// Bumped by every restart: a vCPU still running the previous run parks on its next exit.
    generation: AtomicU64,
    /// The physical counter when the VM (re)started: its CNTVOFF_EL2, so its virtual
    /// counter starts at 0 each time.
    cntvoff: AtomicU64,
    exits: [AtomicU64; 8],
    /// Doorbells this VM rang.
    doorbells_rung: AtomicU64,
    /// Doorbell interrupts raised in this VM by its peers.
    interrupts_injected: AtomicU64,
    /// Its CDI and certificate, made at each load when it has `tandem,attestation`.
    handover: Mutex<Option<Handover>>,
    /// What the VM is loaded from (the board DT, for its DTB).
    host_blob: &'static [u8],
}

/// A VM's virtual GIC and where its guest sees the distributor and redistributors.
struct VirtualGic {
    model: Mutex<Vgic>,
    gicd: MemRange,
    gicr: MemRange,
}

/// SPIs each virtual GIC offers (INTIDs 32..160).
const VGIC_SPIS: u32 = 128;
/// The virtual timer's PPI, forwarded to the vCPU with the hardware bit.
const TIMER_PPIS: [u32; 1] = [gic::VTIMER_PPI];
/// The EL1 physical timer's PPI: emulated (guest::ptimer), injected as a level.
const PTIMER_PPI: u32 = 30;
/// Each CPU's vCPU's emulated EL1 physical timer.
static PTIMERS: [Mutex<PhysTimer>; MAX_CPUS] = [const { Mutex::new(PhysTimer::new()) }; MAX_CPUS];

static VMS: Once<Vec<Vm>> = Once::new();
/// Which (VM, vCPU) each physical CPU runs: `vm << 16 | vcpu`, or `usize::MAX`.
static ASSIGNED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
/// The VM generation each CPU's vCPU was started in.
static RUNNING: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The VM (index + 1) each physical SPI is passed through to; 0 for none.
static SPI_OWNER: [AtomicU16; 1020] = [const { AtomicU16::new(0) }; 1020];
/// Set by the first vCPU to enter its guest, which reports the boot's cost.
static FIRST_ENTRY: AtomicBool = AtomicBool::new(false);
/// Set once every VM is built: secondary CPUs wait for it.
static READY: AtomicBool = AtomicBool::new(false);
/// What the boot CPU learned about the board, for restarts.
static BOARD: Once<Board> = Once::new();

struct Board {
    platform: Platform,
    el2_owned: Vec<MemRange>,
    labels: Vec<String>,
    /// Every shared-memory region; `vms` index `HypervisorConfig::vms` (so `labels`).
    shmem: Vec<ShmemConfig>,
    /// Every vsock device, indexed the same way.
    vsock: Vec<VsockDevice>,
    /// What attestation needs, when the board has a device secret.
    identity: Option<Identity>,
}

/// The device secret and the VMs that may attest, with the hypervisor's own code digest
/// (hashed once, and only when some VM may attest).
struct Identity {
    config: Attestation,
    hyp_digest: Digest,
    /// The device key pair, derived once from the device secret.
    device_key: attest::KeyPair,
}

impl Board {
    /// What VM `index`'s attestation is made from, when it may attest.
    fn identity_for(&self, index: usize) -> Option<&Identity> {
        self.identity
            .as_ref()
            .filter(|i| i.config.vms.contains(&index))
    }
}

/// What the hypervisor loaded, since the board started (`TANDEM_BOOT_LOG`).
static BOOT_LOG: Mutex<BootLog> = Mutex::new(BootLog::new());
/// What attestation certificates name as the hypervisor's version.
const HYP_VERSION: &str = concat!("tandem ", env!("CARGO_PKG_VERSION"));

/// Builds every VM of `config` and loads its images. Boot CPU only. A VM that cannot be
/// built is reported and left out; the others run.
pub fn setup(
    config: HypervisorConfig,
    platform: Platform,
    blob: &'static [u8],
    el2_owned: &[MemRange],
) {
    let labels: Vec<String> = config.vms.iter().map(|v| v.label.clone()).collect();
    log::debug!(
        "boot: VM setup from {} us",
        crate::boot::micros_since_entry()
    );
    let board = BOARD.call_once(|| Board {
        platform,
        el2_owned: el2_owned.to_vec(),
        labels,
        shmem: config.shmem.clone(),
        vsock: config.vsock.clone(),
        identity: config.attestation.clone().map(|config| Identity {
            device_key: attest::device_key(&config.device_secret),
            config,
            hyp_digest: hyp_digest(),
        }),
    });
    if let Some(i) = &board.identity {
        info!(
            "attestation: {HYP_VERSION}, code {}, device key {}",
            measure::hex(&i.hyp_digest),
            measure::hex(&*i.device_key.pk)
        );
    }
    log::debug!("boot: identity at {} us", crate::boot::micros_since_entry());
    vsock::setup(&board.vsock);
    log::debug!("boot: vsock at {} us", crate::boot::micros_since_entry());
    let mut vms = Vec::new();
    let mut vmids = stage2::VmidAllocator::new();
    let unclean: Vec<Vec<MemRange>> = config
        .vms
        .iter()
        .map(|vm| config.unclean_parts(vm))
        .collect();
    for (vm_config, unclean) in config.vms.into_iter().zip(unclean) {
        let label = vm_config.label.clone();
        match build(vm_config, board, blob, &mut vmids) {
            Ok(vm) => vms.push((vm, unclean)),
            Err(why) => error!("vm {label}: not started: {why}"),
        }
    }
    // Before anything of a VM loads: zero what the board says may hold old data.
    for (vm, unclean) in &vms {
        let bytes: u64 = unclean.iter().map(|r| r.size).sum();
        for r in unclean {
            // Parts of the VM's memory or shared memory, both checked against RAM and
            // the hypervisor's own ranges by the config check.
            if arch::zero_physical(r.base, r.size) {
                vcpu::publish_to_guest(r.base, r.size);
            } else {
                warn!(
                    "vm {}: tandem,unclean-memory: cannot zero {:#x}+{:#x}",
                    vm.config.label, r.base, r.size
                );
            }
        }
        if bytes > 0 {
            info!(
                "vm {}: zeroed {} KiB that tandem,unclean-memory marks",
                vm.config.label,
                bytes / 1024
            );
        }
    }
    let vms: Vec<Vm> = vms.into_iter().map(|(vm, _)| vm).collect();
    for (index, vm) in vms.iter().enumerate() {
        for (vcpu, &cpu) in vm.config.cpus.iter().enumerate() {
            if let Some(slot) = ASSIGNED.get(cpu) {
                slot.store(index << 16 | vcpu, Ordering::Relaxed);
            }
        }
        if vm.vgic.is_some() {
            for (intid, _) in device_spis(&vm.config) {
                if let Some(owner) = SPI_OWNER.get(intid as usize) {
                    owner.store(index as u16 + 1, Ordering::Relaxed);
                }
            }
        }
    }
    for vm in &vms {
        log::debug!(
            "vm {}: stage-2 tables use {} pages",
            vm.config.label,
            vm.stage2.lock().table_pages()
        );
    }
    VMS.call_once(|| vms);
    iommu::setup(&board.platform, VMS.get().map_or(&[], Vec::as_slice));
    vsock::report();
    log::debug!(
        "boot: VMs built at {} us",
        crate::boot::micros_since_entry()
    );
    for vm in VMS.get().into_iter().flatten() {
        let result = load(vm);
        log::debug!(
            "boot: vm {} loaded at {} us",
            vm.config.label,
            crate::boot::micros_since_entry()
        );
        if let Err(why) = result {
            error!("vm {}: not started: {why}", vm.config.label);
            vm.stopped.store(true, Ordering::Release);
        }
    }
    enable_console_input(&board.platform);
    READY.store(true, Ordering::Release);
    kick_all();
}

/// No VM to run: CPUs just idle.
pub fn setup_none() {
    READY.store(true, Ordering::Release);
    kick_all();
}

/// Waits for something to do: in WFI when the GIC can wake this CPU with a kick (so an
/// idle CPU costs nothing, which under QEMU's -icount is every other CPU's time), else
/// in WFE. Kicks that arrived are taken and retired.
fn idle() {
    if gic::version() != 0 {
        aarch64_cpu::asm::wfi();
        retire_interrupts();
    } else {
        aarch64_cpu::asm::wfe();
    }
}

/// Takes every pending interrupt while no guest runs here: kicks have done their job by
/// waking the CPU; a stopped guest's timer has nobody to go to.
fn retire_interrupts() {
    for _ in 0..64 {
        let intid = gic::acknowledge();
        if intid >= 1020 {
            break;
        }
        gic::end_of_interrupt(intid);
        // A passed-through SPI that arrived here (its VM's vCPU waits on this CPU, or
        // the guest has just moved it) still goes to its VM.
        if intid >= 32 && forward_device_spi(intid, None) {
            continue;
        }
        gic::deactivate(intid);
        if intid == CONSOLE_INTID.load(Ordering::Relaxed) {
            console_input();
        }
        iommu::irq(intid);
    }
}

/// The physical console's interrupt, once input is enabled (0: none).
static CONSOLE_INTID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// The VM (index) that console input goes to.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
/// Ctrl-A presses in a row; three switch the focus, as on Xen.
static CTRL_A: AtomicUsize = AtomicUsize::new(0);
const CTRL_A_BYTE: u8 = 0x01;
/// After a Ctrl-A: print every VM's exit statistics.
const STATS_KEY: u8 = b's';

/// Turns on console input when the board's console can interrupt through the GIC: its
/// SPI goes to this CPU (the boot CPU), which hands what was typed to the focused VM.
fn enable_console_input(platform: &Platform) {
    let Some(irq) = platform.console.as_ref().and_then(|u| u.interrupt) else {
        return;
    };
    if gic::version() == 0
        || irq.kind != platform::IrqKind::Spi
        || !crate::console::enable_input_interrupt()
    {
        return;
    }
    let cpu = sysreg::cpu_index();
    let mpidr = platform.cpus.get(cpu).map_or(0, |c| c.mpidr);
    CONSOLE_INTID.store(irq.intid(), Ordering::Relaxed);
    gic::assign_spi(irq.intid(), irq.flags & 0x3 != 0, cpu, mpidr);
    if let Some(vm) = VMS.get().and_then(|v| v.first()) {
        info!(
            "console: input goes to vm {} (Ctrl-A three times switches, Ctrl-A s shows exit counts)",
            vm.config.label
        );
    }
}

/// Reads what was typed and hands it to the VM with the focus.
fn console_input() {
    let mut buf = [0u8; 32];
    let n = crate::console::read_input(&mut buf);
    let Some(vms) = VMS.get().filter(|v| !v.is_empty()) else {
        return;
    };
    for &byte in &buf[..n] {
        if byte == CTRL_A_BYTE {
            if CTRL_A.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                CTRL_A.store(0, Ordering::Relaxed);
                let next = (FOCUS.load(Ordering::Relaxed) + 1) % vms.len();
                FOCUS.store(next, Ordering::Relaxed);
                info!("console: input goes to vm {}", vms[next].config.label);
            }
            continue;
        }
        // Ctrl-A then `s`: every VM's exit counts so far, for whoever watches the console.
        let held = CTRL_A.swap(0, Ordering::Relaxed);
        if held > 0 && byte == STATS_KEY {
            for vm in vms {
                report_exits(vm);
            }
            continue;
        }
        // One or two Ctrl-A followed by something else were meant for the guest.
        let vm = &vms[FOCUS.load(Ordering::Relaxed) % vms.len()];
        {
            let mut console = vm.console.lock();
            // Someone is typing to this VM: show the half line it is waiting behind (a
            // shell prompt, the echo of the last key). Output is otherwise shown by whole
            // lines, so that vCPUs printing at once never cut into each other's lines.
            let partial = console.take_pending();
            if !partial.is_empty() {
                print_line(vm, partial);
            }
            for _ in 0..held {
                console.push_input(CTRL_A_BYTE);
            }
            console.push_input(byte);
        }
        console_irq(vm, 0, usize::MAX);
    }
}

/// Sets the VM's console interrupt line to what its virtual PL011 says; `me` is the vCPU
/// handling this (not kicked), `usize::MAX` for none.
fn console_irq(vm: &Vm, vcpu: usize, me: usize) {
    let Some(vgic) = &vm.vgic else { return };
    let mut effects = Effects::new();
    {
        // Under the console's lock, so that the levels reach the virtual GIC in order.
        let console = vm.console.lock();
        let level = console.irq_level();
        // Unchanged, as after most accesses (a console writes a character at a time):
        // the virtual GIC has it already, and its lock is not taken.
        if vm.console_level.swap(level, Ordering::Relaxed) == level {
            return;
        }
        let _ = vgic
            .model
            .lock()
            .set_level(32 + CONSOLE_SPI, vcpu, level, &mut effects);
    }
    apply(vm, me, &effects);
}

/// The affinity (MPIDR) of DT CPU `cpu`, once the board is known.
fn mpidr_of(cpu: usize) -> Option<u64> {
    BOARD
        .get()
        .and_then(|b| b.platform.cpus.get(cpu))
        .map(|c| c.mpidr)
}

/// Wakes physical CPU `cpu` (an SGI, or an event when there is no GICv3 to send one).
fn kick(cpu: usize) {
    if !mpidr_of(cpu).is_some_and(|mpidr| gic::kick(cpu, mpidr)) {
        aarch64_cpu::asm::sev();
    }
}

/// Makes every other vCPU of `vm` exit (they then see the VM stopped or restarted and
/// park), so a multi-vCPU VM stops as a whole even while its other vCPUs never trap.
fn kick_vcpus(vm: &Vm) {
    let me = sysreg::cpu_index();
    for &cpu in vm.config.cpus.iter().filter(|&&c| c != me) {
        kick(cpu);
    }
}

fn kick_all() {
    aarch64_cpu::asm::sev();
    let count = BOARD.get().map_or(0, |b| b.platform.cpus.len());
    let me = sysreg::cpu_index();
    for cpu in (0..count).filter(|&c| c != me) {
        kick(cpu);
    }
}

fn build(
    config: VmConfig,
    board: &Board,
    blob: &'static [u8],
    vmids: &mut stage2::VmidAllocator,
) -> Result<Vm, String> {
    let vmid: Vmid = vmids.allocate().map_err(|e| format!("{e}"))?;
    let pa_range = PaRange::from_parange(sysreg::pa_range() as u8).map_err(|e| format!("{e}"))?;
    let ipa_bits = pa_range.bits().min(48);
    let s2config = Stage2Config::new(ipa_bits, pa_range, vmid).map_err(|e| format!("{e}"))?;
    let mut tables =
        Stage2Tables::new(El2Tables, s2config).map_err(|e| format!("stage-2 tables: {e}"))?;
    let mut map = |range: &MemRange, attrs: Stage2Attrs, what: &str| {
        let start = range.base & !0xfff;
        let end = range.base.saturating_add(range.size).saturating_add(0xfff) & !0xfff;
        tables
            .map(
                IntermediatePhysAddr(start),
                PhysAddr(start),
                end - start,
                attrs,
            )
            .map_err(|e| format!("cannot map {what} {start:#x}-{end:#x}: {e}"))
    };
    for m in &config.memory {
        map(m, Stage2Attrs::NORMAL_RWX, "memory")?;
    }
    // Devices by whole pages, merged: two devices may share a page (QEMU virt packs eight
    // virtio-mmio transports into each 4 KiB), and stage 2 maps each page once.
    let mut pages: Vec<(u64, u64, &str)> = config
        .devices
        .iter()
        .flat_map(|d| d.regs.iter().map(move |r| (r, d.node.as_str())))
        .map(|(r, node)| {
            let start = r.base & !0xfff;
            let end = r.base.saturating_add(r.size).saturating_add(0xfff) & !0xfff;
            (start, end, node)
        })
        .collect();
    pages.sort_unstable_by_key(|&(start, _, _)| start);
    let mut merged: Vec<(u64, u64, &str)> = Vec::new();
    for (start, end, node) in pages {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end, node)),
        }
    }
    for (start, end, node) in merged {
        let window = MemRange {
            base: start,
            size: end - start,
        };
        map(&window, Stage2Attrs::DEVICE_RW, node)?;
    }
    for shmem in board.shmem.iter().filter(|s| s.vms.contains(&config.index)) {
        map(&shmem.memory, Stage2Attrs::NORMAL_RWX, &shmem.node)?;
    }
    // The vsock rings the VM serves; the driver's register window stays unmapped (trapped).
    for v in board.vsock.iter().filter(|v| v.service == config.index) {
        map(&v.memory, Stage2Attrs::NORMAL_RWX, &v.node)?;
    }
    let console_base = console_address(&board.platform, &config);
    let vgic = virtual_gic(board, &config)?;
    if let (
        Some(_),
        platform::Gic::V2 {
            gicc,
            gicv: Some(gicv),
            ..
        },
    ) = (&vgic, &board.platform.gic)
    {
        // GICC_DIR sits at 0x1000: the guest needs both pages of its CPU interface.
        tables
            .map(
                IntermediatePhysAddr(gicc.base),
                PhysAddr(gicv.base),
                0x2000,
                Stage2Attrs::DEVICE_RW,
            )
            .map_err(|e| format!("cannot map the virtual CPU interface: {e}"))?;
    }
    let psci = VmPsci::new(config.cpus.len(), FirmwareMitigations::default())
        .map_err(|e| format!("{e}"))?;
    let starts = config.cpus.iter().map(|_| Mutex::new(None)).collect();
    Ok(Vm {
        vtcr: tables.vtcr(),
        vttbr: tables.vttbr(),
        stage2: Mutex::new(tables),
        psci: Mutex::new(psci),
        console: Mutex::new(VirtualPl011::new()),
        console_level: AtomicBool::new(false),
        console_base,
        vgic,
        starts,
        stopped: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        cntvoff: AtomicU64::new(0),
        exits: [const { AtomicU64::new(0) }; 8],
        doorbells_rung: AtomicU64::new(0),
        interrupts_injected: AtomicU64::new(0),
        handover: Mutex::new(None),
        host_blob: blob,
        config,
    })
}

/// A virtual GIC of the board's version at the host GIC's addresses, with the timers
/// forwarded to each vCPU and the SPIs of the VM's devices forwarded to it (routed to
/// vCPU 0 until the guest routes them). None when the hypervisor drives no GIC.
fn virtual_gic(board: &Board, config: &VmConfig) -> Result<Option<VirtualGic>, String> {
    let platform = &board.platform;
    let vcpus = config.cpus.len();
    let (version, gicd, gicr) = match (&platform.gic, gic::version()) {
        (
            platform::Gic::V3 {
                gicd,
                redistributors,
                ..
            },
            3,
        ) => {
            let base = redistributors.first().map_or(gicd.base, |r| r.base);
            let gicr = MemRange {
                base,
                size: vcpus as u64 * guest_dt::GICR_FRAME_PAIR,
            };
            (
                GicVersion::V3,
                MemRange {
                    base: gicd.base,
                    size: 0x1_0000,
                },
                gicr,
            )
        }
        (
            platform::Gic::V2 {
                gicd,
                gicv: Some(_),
                ..
            },
            2,
        ) => {
            // The guest's CPU interface is the hardware GICV, mapped at its GICC address.
            (
                GicVersion::V2,
                MemRange {
                    base: gicd.base,
                    size: 0x1000,
                },
                MemRange { base: 0, size: 0 },
            )
        }
        _ => return Ok(None),
    };
    // Enough SPIs for the VM's devices and doorbells, in whole registers of 32.
    let highest = device_spis(config)
        .map(|(intid, _)| intid)
        .chain(doorbells_of(config.index, &board.shmem).map(|(_, intid)| intid))
        .chain(vsock::spis_of(config.index, &board.vsock))
        .map(|intid| intid + 1)
        .max();
    let spis = highest.map_or(VGIC_SPIS, |h| (h - 32).next_multiple_of(32).max(VGIC_SPIS));
    let vgic_config = VgicConfig {
        version,
        vcpus,
        spis,
    };
    let mut model = Vgic::new(vgic_config).map_err(|e| format!("virtual GIC: {e:?}"))?;
    let mut effects = Effects::new();
    for vcpu in 0..vcpus {
        for ppi in TIMER_PPIS {
            model
                .set_forwarded(ppi, vcpu, Some(ppi), &mut effects)
                .map_err(|e| format!("virtual GIC: {e:?}"))?;
        }
    }
    for (intid, _) in device_spis(config) {
        model
            .set_forwarded(intid, 0, Some(intid), &mut effects)
            .map_err(|e| format!("cannot pass SPI {} through: {e:?}", intid - 32))?;
    }
    Ok(Some(VirtualGic {
        model: Mutex::new(model),
        gicd,
        gicr,
    }))
}

/// The SPIs of the VM's passed-through devices: (INTID, edge-triggered). A device's
/// interrupt keeps its number in the VM (its node is copied into the guest's DTB).
fn device_spis(config: &VmConfig) -> impl Iterator<Item = (u32, bool)> + '_ {
    config
        .devices
        .iter()
        .flat_map(|d| &d.interrupts)
        .filter(|irq| irq.kind == platform::IrqKind::Spi && irq.intid() < 1020)
        .map(|irq| (irq.intid(), irq.flags & 0x3 != 0))
}

/// The doorbells VM `index` receives: (shared region, the INTID raised in it).
fn doorbells_of(index: usize, shmem: &[ShmemConfig]) -> impl Iterator<Item = (&ShmemConfig, u32)> {
    shmem.iter().filter_map(move |s| {
        let at = s.vms.iter().position(|&v| v == index)?;
        let spi = *s.doorbells.get(at)?;
        Some((s, spi.saturating_add(32)))
    })
}

/// Takes the VM's device SPIs back at the physical GIC as it (re)starts: active state
/// cleared (a previous run may have left one unacknowledged for good) and routed to
/// vCPU 0's CPU, as the fresh virtual GIC routes them.
fn claim_device_spis(vm: &Vm) {
    let Some(&cpu) = vm.config.cpus.first() else {
        return;
    };
    let Some(mpidr) = mpidr_of(cpu) else { return };
    for (intid, edge) in device_spis(&vm.config) {
        gic::enable_spi(intid, false);
        gic::clear_active_spi(intid);
        gic::assign_spi(intid, edge, cpu, mpidr);
    }
}

/// The VM's console sits where the board's console is (a device address no VM has as
/// memory), or at 0x09000000 when that is the VM's memory.
fn console_address(platform: &Platform, config: &VmConfig) -> u64 {
    let candidate = platform
        .console
        .as_ref()
        .map_or(0x0900_0000, |u| u.base & !0xfff);
    let window = MemRange {
        base: candidate,
        size: vpl011::WINDOW,
    };
    if config.memory.iter().any(|m| m.overlaps(&window)) {
        0x0900_0000
    } else {
        candidate
    }
}

/// Copies the VM's images into its memory, writes its DTB and arms vCPU 0.
fn load(vm: &Vm) -> Result<(), String> {
    let board = BOARD.get().ok_or("the board is not known")?;
    let ram = &board.platform.memory;
    let config = &vm.config;
    let kernel = config
        .module(ModuleKind::Kernel)
        .ok_or("no kernel module")?;
    let bytes = arch::physical_bytes(ram, kernel.range.base, kernel.range.size)
        .ok_or("the kernel module is not in RAM")?;
    // Images are hashed for the VMs that attest: SHA-256 in software costs about 20
    // instructions a byte, 0.7 s of CPU for Linux's 37 MB, which every boot would pay.
    let attests = board.identity_for(config.index).is_some();
    let mut measured = Vec::new();
    if attests {
        measured.push(("kernel", crate::arch::sha256::sha256(bytes)));
    }
    let image = image::probe(bytes, kernel.raw).map_err(|e| format!("{}: {e}", kernel.node))?;
    let plan = image::plan(&image, bytes.len(), &config.memory, kernel.load_address)
        .map_err(|e| format!("{}: {e}", kernel.node))?;
    for copy in &plan.copies {
        let src = bytes
            .get(copy.src_offset as usize..(copy.src_offset + copy.len) as usize)
            .ok_or("image copy outside the module")?;
        write_guest_image(vm, copy.dst, src)?;
    }
    for z in &plan.zero {
        zero_guest(vm, z.base, z.size)?;
    }

    let last = config
        .memory
        .iter()
        .max_by_key(|m| m.base)
        .ok_or("no memory")?;
    let top = last.base.saturating_add(last.size);
    let dtb_at = top
        .checked_sub(DTB_ROOM)
        .filter(|&a| a >= last.base)
        .ok_or("the last memory bank is smaller than 2 MiB")?;
    let mut initrd = None;
    let mut below = dtb_at;
    if let Some(ramdisk) = config.module(ModuleKind::Ramdisk) {
        let rd = arch::physical_bytes(ram, ramdisk.range.base, ramdisk.range.size)
            .ok_or("the ramdisk module is not in RAM")?;
        if attests {
            measured.push(("ramdisk", crate::arch::sha256::sha256(rd)));
        }
        let size = (rd.len() as u64 + 0xfff) & !0xfff;
        let at = below
            .checked_sub(size)
            .map(|a| a & !0x1f_ffff)
            .filter(|&a| a >= last.base)
            .ok_or("no room for the ramdisk below the DTB")?;
        write_guest_image(vm, at, rd)?;
        initrd = Some(MemRange {
            base: at,
            size: rd.len() as u64,
        });
        below = at;
    }
    let placed = MemRange {
        base: below,
        size: top - below,
    };
    if let Some(f) = plan.footprint.iter().find(|f| f.overlaps(&placed)) {
        return Err(format!(
            "the image ({:#x}+{:#x}) leaves no room for the DTB and ramdisk at the top of memory; give the VM more memory",
            f.base, f.size
        ));
    }

    let dtb = match config.module(ModuleKind::DeviceTree) {
        Some(m) => {
            let user = arch::physical_bytes(ram, m.range.base, m.range.size)
                .ok_or("the device-tree module is not in RAM")?;
            if attests {
                measured.push(("device-tree", crate::arch::sha256::sha256(user)));
            }
            let layout = layout_for(vm, board, initrd);
            if let Err(errors) = guest_dt::check_user_dtb(user, config, &board.shmem, &layout) {
                let list: Vec<String> = errors.iter().map(|e| format!("{e}")).collect();
                return Err(format!("{}: {}", m.node, list.join("; ")));
            }
            user.to_vec()
        }
        None => {
            let layout = layout_for(vm, board, initrd);
            guest_dt::generate(vm.host_blob, &board.platform, config, &board.shmem, &layout)
                .map_err(|e| format!("guest DTB: {e}"))?
        }
    };
    if dtb.len() as u64 > DTB_ROOM {
        return Err("the guest DTB is larger than 2 MiB".into());
    }
    write_guest(vm, dtb_at, &dtb)?;

    vm.psci.lock().reset();
    if let Some(vgic) = &vm.vgic {
        // A restarted VM finds its interrupt controller as after reset.
        if let Ok(Some(fresh)) = BOARD.get().map_or(Ok(None), |b| virtual_gic(b, &vm.config)) {
            *vgic.model.lock() = fresh.model.into_inner();
            // Its console line starts low, like every line of a fresh model.
            vm.console_level.store(false, Ordering::Relaxed);
        }
        claim_device_spis(vm);
    }
    measured.push(("config", attest::sha256(config.canonical().as_bytes())));
    record_launch(vm, board, &measured);
    vsock::vm_loading(vm);
    vm.cntvoff.store(sysreg::counter(), Ordering::Release);
    if let Some(slot) = vm.starts.first() {
        *slot.lock() = Some((plan.entry, dtb_at));
    }
    Ok(())
}

/// SHA-256 of the hypervisor's code as it runs (`.text` is position independent, so the
/// same build gives the same digest wherever it was loaded).
fn hyp_digest() -> Digest {
    let text = crate::arch::mmu::image_layout().text;
    // SAFETY: the hypervisor's own .text, mapped read-only and executable, never written.
    let code = unsafe {
        core::slice::from_raw_parts(
            text.start as usize as *const u8,
            (text.end - text.start) as usize,
        )
    };
    crate::arch::sha256::sha256(code)
}

/// Logs what was measured at this load of `vm`, and makes its attestation handover when
/// it may attest.
fn record_launch(vm: &Vm, board: &Board, measured: &[(&str, Digest)]) {
    let label = &vm.config.label;
    {
        let mut log = BOOT_LOG.lock();
        for (what, digest) in measured {
            log.append(label, what, digest);
            log::debug!("vm {label}: measured {what} {}", measure::hex(digest));
        }
    }
    let digest = |what: &str| {
        measured
            .iter()
            .find(|(w, _)| *w == what)
            .map_or([0; 32], |(_, d)| *d)
    };
    let handover = board.identity_for(vm.config.index).map(|i| {
        Handover::make_with(
            &i.device_key,
            &i.config.device_secret,
            label,
            digest("kernel"),
            digest("config"),
            HYP_VERSION,
            i.hyp_digest,
        )
    });
    if handover.is_some() {
        info!(
            "vm {label}: measured image {}, config {}: its identity is ready",
            measure::hex(&digest("kernel")),
            measure::hex(&digest("config"))
        );
    }
    *vm.handover.lock() = handover;
}

fn layout_for(vm: &Vm, board: &Board, initrd: Option<MemRange>) -> GuestLayout {
    let mut layout = GuestLayout::like_host(&board.platform, vm.console_base, CONSOLE_SPI);
    layout.initrd = initrd;
    layout.vm_labels = board.labels.clone();
    vsock::add_to_layout(vm, &mut layout);
    layout
}

/// Writes `data` at guest physical `dst` (IPA == PA) after checking it lies in the VM's
/// own memory, then makes it visible to a guest running with its caches off.
fn write_guest(vm: &Vm, dst: u64, data: &[u8]) -> Result<(), String> {
    write_guest_by(vm, dst, data, arch::write_physical)
}

/// [`write_guest`] for an image of `vm` being loaded (at start-up, or on one of its own
/// CPUs as it restarts): copied with the SIMD registers (`arch::write_physical_image`).
fn write_guest_image(vm: &Vm, dst: u64, data: &[u8]) -> Result<(), String> {
    write_guest_by(vm, dst, data, arch::write_physical_image)
}

fn write_guest_by(
    vm: &Vm,
    dst: u64,
    data: &[u8],
    copy: fn(u64, &[u8]) -> bool,
) -> Result<(), String> {
    let len = data.len() as u64;
    guest_range(vm, dst, len)?;
    if !copy(dst, data) {
        return Err(format!(
            "{dst:#x}+{len:#x} is not RAM the hypervisor may write"
        ));
    }
    vcpu::publish_to_guest(dst, len);
    Ok(())
}

fn zero_guest(vm: &Vm, dst: u64, len: u64) -> Result<(), String> {
    guest_range(vm, dst, len)?;
    if !arch::zero_physical(dst, len) {
        return Err(format!(
            "{dst:#x}+{len:#x} is not RAM the hypervisor may write"
        ));
    }
    vcpu::publish_to_guest(dst, len);
    Ok(())
}

fn guest_range(vm: &Vm, dst: u64, len: u64) -> Result<(), String> {
    let end = dst.checked_add(len).ok_or("address overflow")?;
    let inside = vm
        .config
        .memory
        .iter()
        .any(|m| m.base <= dst && m.end().is_some_and(|e| end <= e));
    let board = BOARD.get().ok_or("the board is not known")?;
    let hits_el2 = board.el2_owned.iter().any(|r| {
        r.overlaps(&MemRange {
            base: dst,
            size: len,
        })
    });
    if !inside || hits_el2 {
        return Err(format!("{dst:#x}+{len:#x} is not inside the VM's memory"));
    }
    Ok(())
}

fn vm_of(cpu: usize) -> Option<(&'static Vm, usize)> {
    let code = ASSIGNED.get(cpu)?.load(Ordering::Relaxed);
    let vm = VMS.get()?.get(code >> 16)?;
    Some((vm, code & 0xffff))
}

/// Runs this CPU's vCPU, if it has one; otherwise idles. Never returns.
pub fn run_cpu(cpu: usize) -> ! {
    while !READY.load(Ordering::Acquire) {
        idle();
    }
    let Some((vm, vcpu)) = vm_of(cpu) else {
        // No vCPU here: idle, taking what interrupts come (console input on the boot CPU).
        loop {
            idle();
        }
    };
    let top = arch::current_stack_top();
    let frame = (top - core::mem::size_of::<TrapFrame>() as u64) as usize as *mut TrapFrame;
    // SAFETY: the frame is the top of this CPU's stack, below which everything runs; the
    // caller's frames above it are never returned to.
    let frame_ref = unsafe { &mut *frame };
    *frame_ref = TrapFrame::new(0, SPSR_EL1H_MASKED, [0; 4]);
    wait_for_start(vm, vcpu, frame_ref);
    flush_lrs(vm, vcpu);
    if !FIRST_ENTRY.swap(true, Ordering::AcqRel) {
        let image = crate::arch::mmu::image_layout().image.len() / 1024;
        info!(
            "boot: entry to first guest instruction {} us; EL2 memory {image} KiB (the image with its stacks and heap), heap {} KiB in use of {}",
            crate::boot::micros_since_entry(),
            crate::heap::used() / 1024,
            crate::arch::entry::HEAP_SIZE / 1024
        );
    }
    // SAFETY: `frame` is at the top of this CPU's stack and the CPU is in the VM's context
    // (`wait_for_start` loaded it).
    unsafe { vcpu::enter(frame) }
}

/// Parks this vCPU until it is asked to start, then loads the VM's context and sets up the
/// frame so that returning from the trap enters the guest there.
fn wait_for_start(vm: &Vm, vcpu: usize, frame: &mut TrapFrame) {
    let Some(slot) = vm.starts.get(vcpu) else {
        arch::park()
    };
    let (entry, x0) = loop {
        if let Some(start) = slot.lock().take() {
            break start;
        }
        idle();
    };
    if let Some(running) = RUNNING.get(sysreg::cpu_index()) {
        running.store(vm.generation.load(Ordering::Acquire), Ordering::Relaxed);
    }
    vcpu::load_vm_context(vm.vtcr, vm.vttbr, vcpu, vm.cntvoff.load(Ordering::Acquire));
    vcpu::reset_el1();
    if vm.vgic.is_some() {
        gic::reset_virtual_interface();
        // A timer interrupt the previous run took and never deactivated (its list
        // register is gone) would stay active in the GIC and silence that timer for good.
        for ppi in TIMER_PPIS {
            gic::deactivate(ppi);
        }
    }
    if let Some(timer) = PTIMERS.get(sysreg::cpu_index()) {
        *timer.lock() = PhysTimer::new();
    }
    sysreg::set_hyp_timer(None);
    vm.psci.lock().vcpu_started(vcpu);
    *frame = TrapFrame::new(entry, SPSR_EL1H_MASKED, [x0, 0, 0, 0]);
}

/// Answers an exception taken from a guest (vector slots 8-15).
pub fn trap(slot: VectorSlot, frame: &mut TrapFrame) {
    let cpu = sysreg::cpu_index();
    let Some((vm, vcpu)) = vm_of(cpu) else {
        crate::console::emergency(format_args!(
            "tandem: exception from a lower EL on cpu{cpu}, which runs no vCPU"
        ));
        arch::halt()
    };
    // Nothing changed since the last entry (the guest took no interrupt, nothing was
    // raised): skip the virtual GIC's sync and flush, the bulk of a quiet trap's cost.
    let mut quiet = enter_vgic(vm, vcpu, cpu);
    match slot.0 & 3 {
        0 => sync(vm, vcpu, frame),
        1 | 2 => {
            count(vm, Exit::Irq);
            take_interrupts(vm, vcpu);
        }
        _ => crash(vm, vcpu, frame, format!("SError, ESR {:#x}", frame.esr)),
    }
    let restarted = RUNNING
        .get(cpu)
        .is_some_and(|r| r.load(Ordering::Relaxed) != vm.generation.load(Ordering::Acquire));
    if vm.stopped.load(Ordering::Acquire) || restarted {
        // The VM stopped or restarted (here or on another vCPU): this vCPU waits until it
        // is started again.
        wait_for_start(vm, vcpu, frame);
        // Its list registers were reset.
        quiet = false;
    }
    // The list registers are as the guest left them: only the model can have changed.
    if !(quiet && untouched_since_flush(vm, vcpu)) {
        flush_lrs(vm, vcpu);
    }
}

/// List registers used per CPU, at most.
const LRS: usize = 16;

/// What each CPU's last flush wrote to its list registers, raw.
static FLUSHED: [[AtomicU64; LRS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; LRS] }; MAX_CPUS];

/// How many list registers each CPU's last flush filled, from index 0. The others hold 0
/// (invalid in both GIC versions: a flush clears the ones it no longer uses), and nothing
/// but the hypervisor makes an invalid list register valid, so a trap reads only these.
static LOADED: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// Whether the first `loaded` list registers of this `cpu` hold exactly what its last flush
/// wrote (the guest neither acknowledged nor ended anything), and none of them holds the
/// virtual timer's interrupt pending while the timer's line has dropped (a sync would let
/// the resample take it back).
fn as_flushed(cpu: usize, loaded: usize) -> bool {
    let Some(flushed) = FLUSHED.get(cpu) else {
        return false;
    };
    let mut line = None;
    flushed.iter().take(loaded).enumerate().all(|(i, f)| {
        let raw = gic::read_lr_raw(i);
        if raw != f.load(Ordering::Relaxed) {
            return false;
        }
        let lr = gic::decode_lr(raw);
        let timer_waits = lr.vintid == gic::VTIMER_PPI && lr.state.pending();
        !timer_waits || *line.get_or_insert_with(vcpu::guest_vtimer_line)
    })
}

/// Whether `vcpu`'s virtual GIC has not changed since its last flush
/// (`Vgic::untouched_since_flush`); never for a VM without one, which has nothing to skip.
fn untouched_since_flush(vm: &Vm, vcpu: usize) -> bool {
    vm.vgic
        .as_ref()
        .is_some_and(|vgic| vgic.model.lock().untouched_since_flush(vcpu))
}

/// At the start of a trap: hands this vCPU's list registers back to its virtual GIC, unless
/// they and the model are exactly as the last flush left them, and drops the virtual
/// timer's interrupt if it waits for the guest but its condition went away (the guest
/// stopped or re-armed the timer with interrupts masked), as on hardware, releasing the
/// physical PPI for the next deadline. Returns whether nothing changed, so that the flush
/// at the end may be skipped too. One lock of the model for all of it.
fn enter_vgic(vm: &Vm, vcpu: usize, cpu: usize) -> bool {
    let Some(vgic) = &vm.vgic else { return false };
    let loaded = LOADED.get(cpu).map_or(0, |n| n.load(Ordering::Relaxed));
    let lrs_as_flushed = as_flushed(cpu, loaded);
    let line = vcpu::guest_vtimer_line();
    let mut effects = Effects::new();
    let quiet = {
        let mut model = vgic.model.lock();
        if !(lrs_as_flushed && model.untouched_since_flush(vcpu)) {
            let mut states = [LrState::Invalid; LRS];
            for (i, state) in states.iter_mut().enumerate().take(loaded) {
                *state = gic::decode_lr(gic::read_lr_raw(i)).state;
            }
            model.sync_states(vcpu, &states[..loaded.min(LRS)], &mut effects);
        }
        if !line {
            model.resample_forwarded(gic::VTIMER_PPI, vcpu, line, &mut effects);
        }
        lrs_as_flushed && model.untouched_since_flush(vcpu)
    };
    apply(vm, vcpu, &effects);
    quiet
}

/// Loads this vCPU's list registers with what it should see next, before it runs.
fn flush_lrs(vm: &Vm, vcpu: usize) {
    let Some(vgic) = &vm.vgic else { return };
    let cpu = sysreg::cpu_index();
    let (Some(flushed), Some(count)) = (FLUSHED.get(cpu), LOADED.get(cpu)) else {
        return;
    };
    let n = gic::list_register_count().min(LRS);
    let mut effects = Effects::new();
    let outcome = vgic
        .model
        .lock()
        .flush_with(vcpu, n, &mut effects, |i, lr| {
            if let Some(slot) = flushed.get(i) {
                slot.store(gic::write_lr(i, lr), Ordering::Relaxed);
            }
        });
    // Those the last flush filled and this one did not: cleared.
    let before = count.load(Ordering::Relaxed);
    for i in outcome.loaded..before.min(n) {
        gic::write_lr(i, &ListRegister::INVALID);
    }
    count.store(outcome.loaded.min(n), Ordering::Relaxed);
    gic::enable_virtual_interface(outcome.hcr_bits());
    apply(vm, vcpu, &effects);
}

/// What one call into a virtual GIC asks of the hardware, carried out by [`apply`] once its
/// lock is released. On the stack: a call asks for a few things at most (kicks, a
/// deactivation), and the heap is only for a distributor write that reroutes many
/// forwarded SPIs at once. A `Vec` would cost an allocation on every trap that has any.
pub(crate) struct Effects {
    /// The first ones; those below `len` are written. Not an initialised array: the
    /// compiler builds one of those on the stack and copies it in, on every trap.
    few: [MaybeUninit<VgicEffect>; 4],
    len: usize,
    more: Option<Vec<VgicEffect>>,
}

impl Effects {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            few: [const { MaybeUninit::uninit() }; 4],
            len: 0,
            more: None,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &VgicEffect> {
        let written = self.few.get(..self.len).unwrap_or_default();
        // SAFETY: `push` wrote every entry below `len` before it raised `len`.
        let few = written.iter().map(|e| unsafe { e.assume_init_ref() });
        few.chain(self.more.iter().flatten())
    }
}

impl vgic::EffectSink for Effects {
    fn push(&mut self, effect: VgicEffect) {
        if let Some(slot) = self.few.get_mut(self.len) {
            slot.write(effect);
            self.len += 1;
        } else {
            self.more.get_or_insert_with(Vec::new).push(effect);
        }
    }
}

/// Carries out what the virtual GIC asks of the hardware.
#[inline(always)]
fn apply(vm: &Vm, me: usize, effects: &Effects) {
    if effects.len != 0 {
        apply_all(vm, me, effects);
    }
}

fn apply_all(vm: &Vm, me: usize, effects: &Effects) {
    for effect in effects.iter() {
        match *effect {
            VgicEffect::Kick(target) if target != me => {
                if let Some(&cpu) = vm.config.cpus.get(target) {
                    kick(cpu);
                }
            }
            VgicEffect::DeactivatePhysical(intid) if intid >= 32 => gic::clear_active_spi(intid),
            VgicEffect::DeactivatePhysical(intid) => gic::deactivate(intid),
            VgicEffect::Route { pintid, vcpu } => route_device_spi(vm, pintid, vcpu),
            VgicEffect::Note(note) => log::trace!("vm {}: vgic: {note:?}", vm.config.label),
            VgicEffect::Kick(_) => {}
        }
    }
}

/// The guest routed a passed-through SPI to `vcpu`: the physical one follows to that
/// vCPU's CPU. Routed to no vCPU, it stays where it was, and the virtual GIC holds it
/// pending until the guest routes it somewhere.
fn route_device_spi(vm: &Vm, pintid: u32, vcpu: Option<usize>) {
    let Some(cpu) = vcpu.and_then(|v| vm.config.cpus.get(v).copied()) else {
        return;
    };
    let Some(mpidr) = mpidr_of(cpu) else { return };
    gic::route_spi(pintid, cpu, mpidr);
}

/// A passed-through SPI fired (acknowledged, priority dropped, still active): the virtual
/// GIC of the VM that owns it makes it pending with the hardware bit, so the guest's
/// deactivation deactivates it. False when no VM owns `intid`. `here` is the vCPU this
/// CPU runs, if any: the owner's other vCPUs are kicked.
fn forward_device_spi(intid: u32, here: Option<(&Vm, usize)>) -> bool {
    let owner = SPI_OWNER
        .get(intid as usize)
        .map_or(0, |o| o.load(Ordering::Relaxed));
    let Some(vm) = owner
        .checked_sub(1)
        .and_then(|i| VMS.get()?.get(usize::from(i)))
    else {
        return false;
    };
    let Some(vgic) = &vm.vgic else { return false };
    let me = match here {
        Some((running, vcpu)) if core::ptr::eq(running, vm) => vcpu,
        _ => usize::MAX,
    };
    let mut effects = Effects::new();
    let mut model = vgic.model.lock();
    let target = model.spi_route(intid).unwrap_or(0);
    let taken = if target == me {
        arrived_here(&mut model, intid, me, &mut effects)
    } else {
        model.hw_arrived(intid, target, &mut effects).is_ok()
    };
    drop(model);
    apply(vm, me, &effects);
    taken
}

/// A forwarded interrupt for `vcpu`, the vCPU this CPU runs, arrived during its exit: it
/// goes straight into the next free list register when the virtual GIC allows
/// (`Vgic::hw_arrived_loaded`: the list registers hold everything live for the vCPU and
/// nothing else changed), which spares the flush at the end of the trap; otherwise it
/// waits in the model for that flush. False if `intid` is not forwarded to `vcpu`.
fn arrived_here(model: &mut Vgic, intid: u32, vcpu: usize, effects: &mut Effects) -> bool {
    let capacity = gic::list_register_count().min(LRS);
    match model.hw_arrived_loaded(intid, vcpu, capacity, effects) {
        Ok(Some((index, lr))) => {
            write_loaded(index, &lr);
            true
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Writes list register `index`, which the virtual GIC just loaded after the ones the last
/// flush on this CPU filled (`Vgic::load_now`), and counts it with them.
fn write_loaded(index: usize, lr: &ListRegister) {
    let cpu = sysreg::cpu_index();
    if let (Some(slot), Some(count)) =
        (FLUSHED.get(cpu).and_then(|f| f.get(index)), LOADED.get(cpu))
    {
        slot.store(gic::write_lr(index, lr), Ordering::Relaxed);
        count.store(index + 1, Ordering::Relaxed);
    }
}

/// Takes every pending physical interrupt on this vCPU's CPU: the timers go to the vCPU
/// (forwarded: the guest's deactivation deactivates them), kicks and maintenance
/// interrupts have done their job by making the vCPU exit.
fn take_interrupts(vm: &Vm, vcpu: usize) {
    let Some(vgic) = &vm.vgic else {
        retire_interrupts();
        return;
    };
    for _ in 0..64 {
        let intid = gic::acknowledge();
        if intid >= 1020 {
            break;
        }
        gic::end_of_interrupt(intid);
        let mut effects = Effects::new();
        let forwarded = if intid >= 32 {
            forward_device_spi(intid, Some((vm, vcpu)))
        } else {
            TIMER_PPIS.contains(&intid)
                && arrived_here(&mut vgic.model.lock(), intid, vcpu, &mut effects)
        };
        if !forwarded {
            gic::deactivate(intid);
        }
        apply(vm, vcpu, &effects);
        if intid == gic::HYP_TIMER_PPI {
            update_ptimer(vm, vcpu);
        }
        if intid == CONSOLE_INTID.load(Ordering::Relaxed) {
            console_input();
        }
        iommu::irq(intid);
    }
}

fn count(vm: &Vm, exit: Exit) {
    vm.exits[exit as usize].fetch_add(1, Ordering::Relaxed);
}

fn sync(vm: &Vm, vcpu: usize, frame: &mut TrapFrame) {
    let ec = esr::exception_class(frame.esr);
    match ec {
        0x16 => {
            count(vm, Exit::Hvc);
            psci_call(vm, vcpu, frame);
        }
        0x17 => {
            count(vm, Exit::Smc);
            // A trapped SMC returns to itself: step over it (Arm ARM D1.10.2).
            frame.elr = frame.elr.wrapping_add(4);
            psci_call(vm, vcpu, frame);
        }
        0x24 => data_abort(vm, vcpu, frame),
        0x20 => {
            count(vm, Exit::Abort);
            let far = frame.far;
            // The fetch that failed is of the guest's own exception vectors: nothing it
            // could be told would ever run. That is a crash, not an abort to reflect.
            let vbar = vcpu::guest_vbar();
            if frame.elr.wrapping_sub(vbar) < 0x800 {
                let why = format!("its exception vectors at {vbar:#x} cannot be fetched");
                return crash(vm, vcpu, frame, why);
            }
            inject_into(
                vm,
                vcpu,
                frame,
                Exception::SyncExternalAbort {
                    far,
                    data: false,
                    write: false,
                },
            );
        }
        0x01 => {
            // WFI and WFE do not trap (HCR_GUEST): should one arrive all the same, it
            // completes at once, which the architecture allows of both.
            count(vm, Exit::Wfi);
            frame.elr = frame.elr.wrapping_add(4);
        }
        0x18 => {
            count(vm, Exit::Sysreg);
            if let Some(access) = ptimer::decode(esr::iss(frame.esr)) {
                ptimer_access(vm, vcpu, frame, access);
                frame.elr = frame.elr.wrapping_add(4);
            } else if let Some(value) = sgi_write(frame) {
                if let Some(vgic) = &vm.vgic {
                    let mut effects = Effects::new();
                    vgic.model.lock().sgi1r(vcpu, value, &mut effects);
                    apply(vm, vcpu, &effects);
                }
                frame.elr = frame.elr.wrapping_add(4);
            } else if is_set_way_maintenance(frame.esr) {
                // DC ISW/CSW/CISW: answered without effect (HCR_EL2.TSW): by-set/way
                // maintenance on a shared cache could discard other VMs' data.
                frame.elr = frame.elr.wrapping_add(4);
            } else {
                inject_into(vm, vcpu, frame, Exception::Undefined);
            }
        }
        _ => {
            count(vm, Exit::Other);
            inject_into(vm, vcpu, frame, Exception::Undefined);
        }
    }
}

/// A trapped access to the EL1 physical timer, answered by this CPU's emulated one.
fn ptimer_access(vm: &Vm, vcpu: usize, frame: &mut TrapFrame, access: ptimer::Access) {
    let Some(timer) = PTIMERS.get(sysreg::cpu_index()) else {
        return;
    };
    let now = sysreg::counter();
    {
        let mut timer = timer.lock();
        if access.read {
            let value = timer.read(access.register, now);
            if let Some(x) = frame.x.get_mut(access.rt) {
                *x = value;
            }
        } else {
            let value = frame.x.get(access.rt).copied().unwrap_or(0);
            timer.write(access.register, value, now);
        }
    }
    update_ptimer(vm, vcpu);
}

/// Brings the vCPU's physical-timer interrupt line up to date and arms the EL2 timer for
/// the next rise: after the guest touched the timer, and when the EL2 timer fired.
fn update_ptimer(vm: &Vm, vcpu: usize) {
    let Some(timer) = PTIMERS.get(sysreg::cpu_index()) else {
        return;
    };
    let now = sysreg::counter();
    let (line, deadline) = {
        let timer = timer.lock();
        (timer.line(now), timer.deadline(now))
    };
    sysreg::set_hyp_timer(deadline);
    let Some(vgic) = &vm.vgic else { return };
    let mut effects = Effects::new();
    {
        let mut model = vgic.model.lock();
        let capacity = gic::list_register_count().min(LRS);
        let ready = model.can_load_now(vcpu, capacity);
        if model
            .set_level(PTIMER_PPI, vcpu, line, &mut effects)
            .is_ok()
            && ready
            && line
        {
            if let Some((index, lr)) = model.load_now(PTIMER_PPI, vcpu) {
                write_loaded(index, &lr);
            }
        }
    }
    apply(vm, vcpu, &effects);
}

/// A trapped write to ICC_SGI1R_EL1 or ICC_ASGI1R_EL1 (Op0 3, Op1 0, CRn 12, CRm 11,
/// Op2 5 or 6; HCR_EL2.IMO traps them): the value written.
fn sgi_write(frame: &TrapFrame) -> Option<u64> {
    let access = esr::SysregAccess::decode(esr::iss(frame.esr));
    let sgi = access.is(3, 0, 12, 11) && matches!(access.op2, 5 | 6);
    (sgi && !access.read).then(|| frame.x.get(access.rt).copied().unwrap_or(0))
}

/// ESR_EL2 ISS for a trapped system instruction: Op0 = 1, Op1 = 0, CRn = 7,
/// CRm = 6/10/14, Op2 = 2 are DC ISW, DC CSW and DC CISW.
fn is_set_way_maintenance(esr: u64) -> bool {
    let access = esr::SysregAccess::decode(esr::iss(esr));
    access.op0 == 1
        && access.op1 == 0
        && access.crn == 7
        && matches!(access.crm, 6 | 10 | 14)
        && access.op2 == 2
}

fn data_abort(vm: &Vm, vcpu: usize, frame: &mut TrapFrame) {
    let abort = abort::decode_data_abort(frame.esr, frame.far, vcpu::hpfar());
    let mmio = abort.mmio();
    if let (Ok(access), Some(vgic)) = (&mmio, &vm.vgic) {
        let window = |r: &MemRange| access.ipa >= r.base && access.ipa < r.base + r.size;
        let distributor = window(&vgic.gicd);
        if distributor || window(&vgic.gicr) {
            count(vm, Exit::Mmio);
            let width =
                AccessWidth::from_bytes(access.size.bytes() as usize).unwrap_or(AccessWidth::Word);
            type Read = fn(&Vgic, usize, u64, AccessWidth, &mut dyn EffectSink) -> u64;
            type Write = fn(&mut Vgic, usize, u64, AccessWidth, u64, &mut dyn EffectSink);
            let (base, read, write): (u64, Read, Write) = if distributor {
                (vgic.gicd.base, Vgic::dist_read, Vgic::dist_write)
            } else {
                (vgic.gicr.base, Vgic::redist_read, Vgic::redist_write)
            };
            let offset = access.ipa - base;
            let mut effects = Effects::new();
            {
                let mut model = vgic.model.lock();
                if access.write {
                    let value = access.write_value(&frame.x);
                    write(&mut model, vcpu, offset, width, value, &mut effects);
                } else {
                    let value = read(&model, vcpu, offset, width, &mut effects);
                    access.apply_read(&mut frame.x, value);
                }
            }
            apply(vm, vcpu, &effects);
            frame.elr = frame.elr.wrapping_add(abort.instruction_len());
            return;
        }
    }
    // Then the console, where most of a rich OS's MMIO exits go.
    if let Ok(access) = &mmio {
        if access.ipa >= vm.console_base && access.ipa < vm.console_base + vpl011::WINDOW {
            count(vm, Exit::Mmio);
            let offset = access.ipa - vm.console_base;
            if access.write {
                let value = access.write_value(&frame.x) as u32;
                let mut console = vm.console.lock();
                if let vpl011::Effect::Line(line) = console.write(offset, value) {
                    print_line(vm, line);
                }
            } else {
                let value = vm.console.lock().read(offset);
                access.apply_read(&mut frame.x, u64::from(value));
            }
            frame.elr = frame.elr.wrapping_add(abort.instruction_len());
            console_irq(vm, vcpu, vcpu);
            return;
        }
    }
    if let Ok(access) = &mmio {
        let value = access.write.then(|| access.write_value(&frame.x));
        let width = access.size.bytes() as usize;
        if let Some(read) = vsock::mmio(vm, access.ipa, width, value) {
            count(vm, Exit::Mmio);
            if !access.write {
                access.apply_read(&mut frame.x, read);
            }
            frame.elr = frame.elr.wrapping_add(abort.instruction_len());
            return;
        }
    }
    match mmio {
        Err(NotMmio::CacheMaintenance) => {
            // Cache maintenance by VA on an address with no memory: nothing to maintain.
            count(vm, Exit::Mmio);
            frame.elr = frame.elr.wrapping_add(abort.instruction_len());
        }
        Ok(access) => {
            count(vm, Exit::Abort);
            log::debug!(
                "vm {}: vcpu{vcpu}: no device at IPA {:#x}: abort injected",
                vm.config.label,
                access.ipa
            );
            inject_into(
                vm,
                vcpu,
                frame,
                Exception::SyncExternalAbort {
                    far: frame.far,
                    data: true,
                    write: access.write,
                },
            );
        }
        Err(why) => {
            count(vm, Exit::Abort);
            log::debug!(
                "vm {}: vcpu{vcpu}: data abort at IPA {:#x} ({why}): abort injected",
                vm.config.label,
                abort.ipa
            );
            let write = abort.write;
            inject_into(
                vm,
                vcpu,
                frame,
                Exception::SyncExternalAbort {
                    far: frame.far,
                    data: true,
                    write,
                },
            );
        }
    }
}

fn print_line(vm: &Vm, line: &[u8]) {
    let text = core::str::from_utf8(line).unwrap_or("<not UTF-8>");
    crate::console::tagged(&vm.config.label, format_args!("{text}"));
}

fn inject_into(vm: &Vm, vcpu: usize, frame: &mut TrapFrame, exception: Exception) {
    let guest = GuestContext {
        spsr_el2: frame.spsr,
        elr_el2: frame.elr,
        vbar_el1: vcpu::guest_vbar(),
        sctlr_el1: vcpu::guest_sctlr(),
        features: EntryFeatures::default(),
    };
    match inject::inject(&guest, exception) {
        Ok(i) => {
            vcpu::set_guest_exception_regs(i.esr_el1, i.far_el1, i.elr_el1, i.spsr_el1);
            frame.elr = i.elr_el2;
            frame.spsr = i.spsr_el2;
        }
        Err(why) => crash(
            vm,
            vcpu,
            frame,
            format!("cannot inject {exception:?}: {why}"),
        ),
    }
}

fn psci_call(vm: &Vm, vcpu: usize, frame: &mut TrapFrame) {
    let mut x = [0u64; 8];
    x.copy_from_slice(&frame.x[..8]);
    if let Some(call) = hypercall::decode(x) {
        frame.x[..4].copy_from_slice(&tandem_call(vm, call));
        return;
    }
    let call = psci::decode(x);
    let memory = &vm.config.memory;
    let outcome = vm
        .psci
        .lock()
        .handle(vcpu, call, |a| memory.iter().any(|m| m.contains(a)));
    frame.x[..4].copy_from_slice(&outcome.x);
    match outcome.effect {
        Effect::Return | Effect::Suspend | Effect::FirmwareWorkaround { .. } => {}
        Effect::StartVcpu {
            vcpu: target,
            entry,
            context_id,
        } => {
            if let Some(slot) = vm.starts.get(target) {
                *slot.lock() = Some((entry, context_id));
                if let Some(&cpu) = vm.config.cpus.get(target) {
                    kick(cpu);
                }
            }
        }
        Effect::StopCaller => {
            let all_off = {
                let mut p = vm.psci.lock();
                p.vcpu_stopped(vcpu);
                p.all_off()
            };
            if all_off {
                stop(vm, "every vCPU called CPU_OFF");
            }
            wait_for_start(vm, vcpu, frame);
        }
        Effect::SystemOff => stop(vm, "system-off"),
        Effect::SystemReset => restart(vm, "system-reset"),
    }
}

/// Answers one of Tandem's own hypercalls: x0..x3 to return.
fn tandem_call(vm: &Vm, call: Hypercall) -> [u64; 4] {
    match call {
        Hypercall::Uid => hypercall::uid_registers(),
        Hypercall::Doorbell { base } => {
            if ring(vm, base) || vsock::service_rang(vm, base) {
                [0; 4]
            } else {
                [hypercall::INVALID_PARAMETERS as u64, 0, 0, 0]
            }
        }
        Hypercall::BootLog { buf, len } => {
            let log = BOOT_LOG.lock().encode();
            let n = (log.len() as u64).min(len);
            match write_guest(vm, buf, &log[..n as usize]) {
                Ok(()) => [log.len() as u64, 0, 0, 0],
                Err(_) => [hypercall::INVALID_PARAMETERS as u64, 0, 0, 0],
            }
        }
        Hypercall::Attestation { buf, len } => {
            let Some(handover) = *vm.handover.lock() else {
                return [hypercall::NOT_SUPPORTED as u64, 0, 0, 0];
            };
            let bytes = handover.encode();
            if len < bytes.len() as u64 || write_guest(vm, buf, &bytes).is_err() {
                return [hypercall::INVALID_PARAMETERS as u64, 0, 0, 0];
            }
            [0; 4]
        }
    }
}

/// Rings the doorbell of the shared region at `base` from `vm`: every other member gets
/// its doorbell SPI. False when `vm` shares no region at `base`.
fn ring(vm: &Vm, base: u64) -> bool {
    let (Some(board), Some(vms)) = (BOARD.get(), VMS.get()) else {
        return false;
    };
    let Some(region) = board
        .shmem
        .iter()
        .find(|s| s.memory.base == base && s.vms.contains(&vm.config.index))
    else {
        return false;
    };
    vm.doorbells_rung.fetch_add(1, Ordering::Relaxed);
    for peer in vms.iter().filter(|p| p.config.index != vm.config.index) {
        let Some((_, intid)) =
            doorbells_of(peer.config.index, core::slice::from_ref(region)).next()
        else {
            continue;
        };
        if peer.stopped.load(Ordering::Acquire) {
            continue;
        }
        let Some(vgic) = &peer.vgic else { continue };
        let mut effects = Effects::new();
        let raised = vgic.model.lock().raise(intid, 0, &mut effects).is_ok();
        if raised {
            peer.interrupts_injected.fetch_add(1, Ordering::Relaxed);
        }
        apply(peer, usize::MAX, &effects);
    }
    true
}

/// A guest fault that cannot be reflected to it: stop or restart the VM as its config says.
fn crash(vm: &Vm, vcpu: usize, frame: &TrapFrame, why: String) {
    error!(
        "vm {}: crashed (vcpu{vcpu}: {why}; ELR {:#x}, ESR {:#x}, FAR {:#x})",
        vm.config.label, frame.elr, frame.esr, frame.far
    );
    match vm.config.on_crash {
        OnCrash::Stop => stop(vm, "crashed"),
        OnCrash::Restart => restart(vm, "crashed"),
    }
}

fn report_exits(vm: &Vm) {
    let mut s = String::new();
    for (name, n) in EXIT_NAMES.iter().zip(&vm.exits) {
        s.push_str(&format!(" {name} {}", n.load(Ordering::Relaxed)));
    }
    info!(
        "vm {}: exits:{s}; doorbells rung {} received {}",
        vm.config.label,
        vm.doorbells_rung.load(Ordering::Relaxed),
        vm.interrupts_injected.load(Ordering::Relaxed)
    );
    if let Some(line) = vsock::stats_of(vm) {
        info!("vm {}: {line}", vm.config.label);
    }
    if iommu::has_streams(vm) {
        info!(
            "vm {}: smmu faults {}",
            vm.config.label,
            iommu::faults_of(vm.config.index)
        );
    }
}

fn flush_console(vm: &Vm) {
    let console = vm.console.lock();
    if !console.pending().is_empty() {
        print_line(vm, console.pending());
    }
}

/// Stops the VM alone; when every VM has stopped, powers the machine off.
fn stop(vm: &Vm, reason: &str) {
    if vm.stopped.swap(true, Ordering::AcqRel) {
        return;
    }
    flush_console(vm);
    info!("vm {}: stopped ({reason})", vm.config.label);
    iommu::cut_off(vm);
    vsock::vm_stopped(vm);
    report_exits(vm);
    kick_vcpus(vm);
    let all = VMS
        .get()
        .into_iter()
        .flatten()
        .all(|v| v.stopped.load(Ordering::Acquire));
    if all {
        info!("all VMs have stopped: powering off");
        arch::system_off();
    }
}

/// Restarts the VM alone from pristine copies of its images. Its other vCPUs park on
/// their next exit; a vCPU that never exits cannot be stopped before the virtual GIC can
/// interrupt it, so only the restarting vCPU's own CPU is guaranteed to be reused.
fn restart(vm: &Vm, reason: &str) {
    vm.stopped.store(true, Ordering::Release);
    vm.generation.fetch_add(1, Ordering::AcqRel);
    kick_vcpus(vm);
    flush_console(vm);
    // Its devices may be in the middle of DMA into the memory about to be reloaded.
    iommu::cut_off(vm);
    report_exits(vm);
    for m in &vm.config.memory {
        if let Err(why) = zero_guest(vm, m.base, m.size) {
            warn!("vm {}: restart: {why}", vm.config.label);
        }
    }
    for slot in &vm.starts {
        *slot.lock() = None;
    }
    match load(vm) {
        Ok(()) => {
            iommu::restore(vm);
            vm.stopped.store(false, Ordering::Release);
            info!("vm {}: restarted ({reason})", vm.config.label);
            if let Some(&cpu) = vm.config.cpus.first() {
                kick(cpu);
            }
        }
        Err(why) => {
            error!("vm {}: cannot restart: {why}", vm.config.label);
            vm.stopped.store(false, Ordering::Release);
            stop(vm, "restart failed");
        }
    }
}
