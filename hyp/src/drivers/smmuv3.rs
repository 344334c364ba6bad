//! The Arm SMMUv3 (IHI 0070): stream table, command queue, event queue and global errors.
//!
//! The layouts (entries, commands, events, the table's shape) come from the pure `smmu`
//! crate; this driver only allocates the memory the SMMU reads and writes, moves those words
//! and talks to the registers. Tables and queues come from the EL2 heap, which no guest is
//! ever given, and live as long as the hypervisor.

use alloc::vec::Vec;
use core::alloc::Layout;

use aarch64_cpu::asm::barrier;
use smmu::cmd::{self, Command};
use smmu::regs::*;
use smmu::strtab::{self, L1Entry, StreamTablePlan, L2_ENTRIES, STE_BYTES};
use smmu::{Event, Features, Ste, Unsupported};

use crate::arch::cache;

/// Polls of a register before the driver gives up on the SMMU answering.
const POLLS: usize = 1_000_000;
/// log2 of the command queue's entries: 256 (4 KiB). The driver waits for each batch, so
/// it never has more than a handful in flight.
const CMDQ_LOG2: u32 = 8;
/// log2 of the event queue's entries: 256 (8 KiB). A device keeps faulting for as long as
/// it keeps trying (QEMU's edu records more than 512 events for one refused 4 KiB
/// transfer), so no size holds every record of a faulting device; a full queue only drops
/// records (SMMU_GERROR.EVENTQ_ABT_ERR, logged), the transactions are aborted all the same,
/// and the log groups what it got by page anyway.
const EVENTQ_LOG2: u32 = 8;
const CMD_BYTES: usize = 16;
const EVENT_BYTES: usize = 32;
/// SMMU_GERROR.CMDQ_ERR.
const GERROR_CMDQ_ERR: u32 = 1;
/// SMMU_EVENTQ_PROD.OVFLG and SMMU_EVENTQ_CONS.OVACKFLG.
const EVENTQ_OVERFLOW: u32 = 1 << 31;

/// Why the SMMU could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// The EL2 heap has no room for its tables or queues.
    OutOfMemory,
    /// A register change was not acknowledged.
    Timeout(&'static str),
    /// A command was refused (SMMU_CMDQ_CONS.ERR).
    Command(&'static str),
}

impl core::fmt::Display for SmmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory => write!(f, "the EL2 heap has no room for its tables"),
            Self::Timeout(what) => write!(f, "it did not acknowledge {what}"),
            Self::Command(why) => write!(f, "it refused a command: {why}"),
        }
    }
}

/// Zeroed memory for the SMMU, from the EL2 heap, never freed.
fn dma_alloc(bytes: usize, align: usize) -> Result<u64, SmmuError> {
    let layout = Layout::from_size_align(bytes, align).map_err(|_| SmmuError::OutOfMemory)?;
    if layout.size() == 0 {
        return Err(SmmuError::OutOfMemory);
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(SmmuError::OutOfMemory);
    }
    Ok(ptr as u64)
}

/// One SMMU in use.
pub struct Smmuv3 {
    base: u64,
    features: Features,
    plan: StreamTablePlan,
    /// The entry each VM's streams get, by VM index.
    entries: Vec<Ste>,
    /// The level-1 table (two-level) or the linear table.
    table: u64,
    /// Level-2 tables, in [`strtab::level2_owners`] order.
    level2: Vec<u64>,
    cmdq: u64,
    /// SMMU_CMDQ_PROD as last written (index and wrap bit).
    cmdq_prod: u32,
    eventq: u64,
    /// SMMU_EVENTQ_CONS as last written.
    eventq_cons: u32,
}

/// Reads the ID registers of the SMMU at `base`.
///
/// # Safety
/// `base` must be an SMMUv3's register window (pages 0 and 1), mapped at EL2 as device
/// memory.
pub unsafe fn probe(base: u64) -> Result<Features, Unsupported> {
    // SAFETY: the caller vouches for the window; the ID registers have no side effects.
    let (idr0, idr1, idr5) =
        unsafe { (read32(base, IDR0), read32(base, IDR1), read32(base, IDR5)) };
    Features::decode(idr0, idr1, idr5)
}

/// Disables the SMMU at `base` and makes it abort every transaction: what a board gets
/// when the hypervisor cannot use its SMMU, so that no device behind it reaches memory.
///
/// # Safety
/// As for [`probe`], and nothing else may drive the SMMU.
pub unsafe fn block(base: u64) -> Result<(), SmmuError> {
    // SAFETY: as the caller promises.
    unsafe {
        write32(base, CR0, 0);
        wait32(base, CR0ACK, u32::MAX, 0, "SMMU_CR0 = 0")?;
        write32(base, GBPA, GBPA_ABORT | GBPA_UPDATE);
        wait32(base, GBPA, GBPA_UPDATE, 0, "SMMU_GBPA.ABORT")
    }
}

/// # Safety
/// `base + offset` must be a register of an SMMU mapped at EL2.
unsafe fn read32(base: u64, offset: usize) -> u32 {
    // SAFETY: as the caller promises; device memory is only accessed volatilely.
    unsafe { ((base as usize + offset) as *const u32).read_volatile() }
}

/// # Safety
/// As for [`read32`].
unsafe fn write32(base: u64, offset: usize, value: u32) {
    // SAFETY: as the caller promises.
    unsafe { ((base as usize + offset) as *mut u32).write_volatile(value) }
}

/// # Safety
/// As for [`read32`], for a 64-bit register.
unsafe fn write64(base: u64, offset: usize, value: u64) {
    // SAFETY: as the caller promises.
    unsafe { ((base as usize + offset) as *mut u64).write_volatile(value) }
}

/// Polls until `(reg & mask) == want`.
///
/// # Safety
/// As for [`read32`].
unsafe fn wait32(
    base: u64,
    offset: usize,
    mask: u32,
    want: u32,
    what: &'static str,
) -> Result<(), SmmuError> {
    for _ in 0..POLLS {
        // SAFETY: as the caller promises.
        if unsafe { read32(base, offset) } & mask == want {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(SmmuError::Timeout(what))
}

impl Smmuv3 {
    /// Takes the SMMU at `base` and turns translation on: stream `sid` translates through
    /// `entry(owner)` where `plan` gives it an owner, and is aborted otherwise. Faults are
    /// signalled on the wired interrupts (the caller enables them at the GIC).
    ///
    /// # Safety
    /// As for [`block`].
    pub unsafe fn new(
        base: u64,
        features: Features,
        plan: StreamTablePlan,
        entry: impl Fn(usize) -> Ste,
    ) -> Result<Self, SmmuError> {
        let table_bytes = if plan.two_level {
            plan.l1.len() * 8
        } else {
            plan.linear.len() * STE_BYTES
        };
        let table = dma_alloc(table_bytes, plan.base_align())?;
        let l2_bytes = L2_ENTRIES * STE_BYTES;
        let mut level2 = Vec::new();
        for _ in strtab::level2_owners(&plan) {
            level2.push(dma_alloc(l2_bytes, l2_bytes)?);
        }
        let cmdq = dma_alloc(CMD_BYTES << CMDQ_LOG2, CMD_BYTES << CMDQ_LOG2)?;
        let eventq = dma_alloc(EVENT_BYTES << EVENTQ_LOG2, EVENT_BYTES << EVENTQ_LOG2)?;
        let owners = plan
            .linear
            .iter()
            .flatten()
            .chain(plan.shared.iter())
            .chain(plan.private.iter().flatten().flatten())
            .max()
            .map_or(0, |&m| m + 1);
        let entries = (0..owners).map(&entry).collect();
        let mut smmu = Self {
            base,
            features,
            plan,
            entries,
            table,
            level2,
            cmdq,
            cmdq_prod: 0,
            eventq,
            eventq_cons: 0,
        };
        smmu.write_tables();
        // SAFETY: as the caller promises.
        unsafe { smmu.enable()? };
        Ok(smmu)
    }

    /// The SMMU's features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The stream table's plan (who owns which stream).
    pub fn plan(&self) -> &StreamTablePlan {
        &self.plan
    }

    /// Writes every entry and level-1 descriptor from `entries` (the SMMU is off, or the
    /// entries are invalidated right after).
    fn write_tables(&self) {
        let owned = |owner: Option<usize>| {
            owner
                .and_then(|vm| self.entries.get(vm).copied())
                .unwrap_or(Ste::INVALID)
        };
        if !self.plan.two_level {
            for (sid, owner) in self.plan.linear.iter().enumerate() {
                self.write_ste(self.table + (sid * STE_BYTES) as u64, &owned(*owner));
            }
            self.publish(self.table, self.plan.linear.len() * STE_BYTES);
            return;
        }
        for (table, owners) in self.level2.iter().zip(strtab::level2_owners(&self.plan)) {
            for (n, owner) in owners.iter().enumerate() {
                self.write_ste(table + (n * STE_BYTES) as u64, &owned(*owner));
            }
            self.publish(*table, L2_ENTRIES * STE_BYTES);
        }
        let shared = self.plan.shared.len();
        for (n, l1) in self.plan.l1.iter().enumerate() {
            let descriptor = match *l1 {
                L1Entry::Invalid => 0,
                L1Entry::Shared(vm) => self
                    .plan
                    .shared
                    .iter()
                    .position(|&v| v == vm)
                    .and_then(|i| self.level2.get(i))
                    .map_or(0, |&t| strtab::l1_descriptor(t)),
                L1Entry::Private(i) => self
                    .level2
                    .get(shared + i)
                    .map_or(0, |&t| strtab::l1_descriptor(t)),
            };
            // SAFETY: `table` holds one 8-byte descriptor per level-1 entry (allocated in
            // `new` from the plan), inside the EL2 heap.
            unsafe { ((self.table + n as u64 * 8) as *mut u64).write_volatile(descriptor) };
        }
        self.publish(self.table, self.plan.l1.len() * 8);
    }

    /// Writes one entry: word 0 (which holds V) last, so the SMMU never sees a valid
    /// entry with stale words.
    fn write_ste(&self, at: u64, ste: &Ste) {
        let words = at as *mut u64;
        for (i, w) in ste.0.iter().enumerate().skip(1) {
            // SAFETY: `at` is a 64-byte entry of a table this driver allocated.
            unsafe { words.add(i).write_volatile(*w) };
        }
        barrier::dmb(barrier::ISHST);
        // SAFETY: as above.
        unsafe { words.write_volatile(ste.0[0]) };
    }

    /// Makes what the CPU wrote at `[at, at + len)` visible to the SMMU: a barrier when it
    /// snoops the CPUs' caches, a clean to the point of coherency when it does not.
    fn publish(&self, at: u64, len: usize) {
        if self.features.coherent {
            barrier::dsb(barrier::ISHST);
        } else {
            cache::clean_to_poc(at as usize, len);
        }
    }

    /// The enable sequence of IHI 0070 6.3.9: tables and queues, the command queue on,
    /// every cached configuration and TLB entry forgotten, the event queue and the
    /// interrupts on, then translation.
    ///
    /// # Safety
    /// As for [`block`].
    unsafe fn enable(&mut self) -> Result<(), SmmuError> {
        let base = self.base;
        let cr1 = if self.features.coherent {
            CR1_CACHEABLE
        } else {
            0
        };
        let strtab_cfg = strtab_base_cfg(self.plan.two_level, self.plan.log2size, strtab::SPLIT);
        // SAFETY: as the caller promises; the tables and queues are heap memory the SMMU
        // may read and write for good.
        unsafe {
            block(base)?;
            write32(base, IRQ_CTRL, 0);
            wait32(base, IRQ_CTRLACK, u32::MAX, 0, "SMMU_IRQ_CTRL = 0")?;
            write32(base, CR1, cr1);
            write32(base, CR2, CR2_RECINVSID);
            write64(
                base,
                STRTAB_BASE,
                STRTAB_BASE_RA | (self.table & BASE_ADDR_MASK),
            );
            write32(base, STRTAB_BASE_CFG, strtab_cfg);
            write64(base, CMDQ_BASE, queue_base(self.cmdq, CMDQ_LOG2));
            write32(base, CMDQ_PROD, 0);
            write32(base, CMDQ_CONS, 0);
            write64(base, EVENTQ_BASE, queue_base(self.eventq, EVENTQ_LOG2));
            write32(base, EVENTQ_PROD, 0);
            write32(base, EVENTQ_CONS, 0);
            write32(base, CR0, CR0_CMDQEN);
            wait32(base, CR0ACK, CR0_CMDQEN, CR0_CMDQEN, "SMMU_CR0.CMDQEN")?;
        }
        self.submit(&[
            Command::CfgiAll,
            Command::Sync,
            Command::TlbiNsnhAll,
            Command::Sync,
        ])?;
        let queues = CR0_CMDQEN | CR0_EVENTQEN;
        // SAFETY: as above.
        unsafe {
            write32(base, CR0, queues);
            wait32(base, CR0ACK, queues, queues, "SMMU_CR0.EVENTQEN")?;
            // Address 0: signal on the wired interrupts, not by MSI.
            write64(base, GERROR_IRQ_CFG0, 0);
            write64(base, EVENTQ_IRQ_CFG0, 0);
            let irqs = IRQ_CTRL_GERROR | IRQ_CTRL_EVENTQ;
            write32(base, IRQ_CTRL, irqs);
            wait32(base, IRQ_CTRLACK, irqs, irqs, "SMMU_IRQ_CTRL")?;
            let all = queues | CR0_SMMUEN;
            write32(base, CR0, all);
            wait32(base, CR0ACK, all, all, "SMMU_CR0.SMMUEN")
        }
    }

    /// Queues `commands` and waits until the SMMU has consumed all of them (the caller
    /// ends with a CMD_SYNC, so they have also taken effect).
    fn submit(&mut self, commands: &[Command]) -> Result<(), SmmuError> {
        let mask = (1u32 << CMDQ_LOG2) - 1;
        for command in commands {
            let slot = self.cmdq + u64::from(self.cmdq_prod & mask) * CMD_BYTES as u64;
            let words = command.encode();
            // SAFETY: `slot` is an entry of the command queue this driver allocated; the
            // SMMU reads it only once PROD passes it.
            unsafe {
                (slot as *mut u64).write_volatile(words[0]);
                (slot as *mut u64).add(1).write_volatile(words[1]);
            }
            self.publish(slot, CMD_BYTES);
            self.cmdq_prod = queue_index(self.cmdq_prod + 1, CMDQ_LOG2);
        }
        barrier::dsb(barrier::SY);
        // SAFETY: the SMMU's registers, mapped by the caller of `new`.
        unsafe { write32(self.base, CMDQ_PROD, self.cmdq_prod) };
        for _ in 0..POLLS {
            // SAFETY: as above.
            let cons = unsafe { read32(self.base, CMDQ_CONS) };
            if queue_index(cons, CMDQ_LOG2) == self.cmdq_prod {
                return Ok(());
            }
            // SAFETY: as above.
            let gerror = unsafe { read32(self.base, GERROR) ^ read32(self.base, GERRORN) };
            if gerror & GERROR_CMDQ_ERR != 0 {
                return Err(self.skip_bad_command(cons));
            }
            core::hint::spin_loop();
        }
        Err(SmmuError::Timeout("a command (SMMU_CMDQ_CONS)"))
    }

    /// The command at `cons` was refused and the queue stopped: turn it into a CMD_SYNC,
    /// acknowledge the error so that the SMMU goes on, and report why.
    fn skip_bad_command(&mut self, cons: u32) -> SmmuError {
        let mask = (1u32 << CMDQ_LOG2) - 1;
        let slot = self.cmdq + u64::from(cons & mask) * CMD_BYTES as u64;
        let sync = Command::Sync.encode();
        // SAFETY: an entry of the command queue, which the SMMU does not read while the
        // error is pending.
        unsafe {
            (slot as *mut u64).write_volatile(sync[0]);
            (slot as *mut u64).add(1).write_volatile(sync[1]);
        }
        self.publish(slot, CMD_BYTES);
        // SAFETY: the SMMU's registers.
        unsafe {
            let gerrorn = read32(self.base, GERRORN);
            write32(self.base, GERRORN, gerrorn ^ GERROR_CMDQ_ERR);
        }
        SmmuError::Command(cmd::error_name(cmdq_cons_err(cons)))
    }

    /// Points every stream `owner` owns at `ste` (its stage-2 entry again, or
    /// [`Ste::INVALID`] to cut its devices off) and forgets what the SMMU cached for it:
    /// the configurations, and the TLB entries of `vmid`.
    pub fn set_owner(&mut self, owner: usize, vmid: u16, ste: &Ste) -> Result<(), SmmuError> {
        let Some(slot) = self.entries.get_mut(owner) else {
            return Ok(());
        };
        // Invalidate first, so that the SMMU never walks a half-written entry.
        *slot = Ste::INVALID;
        self.write_tables();
        self.submit(&[Command::CfgiAll, Command::Sync])?;
        if let Some(slot) = self.entries.get_mut(owner) {
            *slot = *ste;
        }
        self.write_tables();
        self.submit(&[
            Command::CfgiAll,
            Command::TlbiS12Vmall { vmid },
            Command::Sync,
        ])
    }

    /// Hands every event the SMMU has recorded to `each`, oldest first, and says whether
    /// the queue overflowed (events were lost) since the last call.
    pub fn events(&mut self, mut each: impl FnMut(Event)) -> bool {
        let mask = (1u32 << EVENTQ_LOG2) - 1;
        // SAFETY: the SMMU's registers.
        let prod = unsafe { read32(self.base, EVENTQ_PROD) };
        let overflowed = (prod ^ self.eventq_cons) & EVENTQ_OVERFLOW != 0;
        let target = queue_index(prod, EVENTQ_LOG2);
        for _ in 0..=mask {
            if queue_index(self.eventq_cons, EVENTQ_LOG2) == target {
                break;
            }
            let slot = self.eventq + u64::from(self.eventq_cons & mask) * EVENT_BYTES as u64;
            if !self.features.coherent {
                cache::clean_invalidate_to_poc(slot as usize, EVENT_BYTES);
            }
            let mut words = [0u64; 4];
            for (i, w) in words.iter_mut().enumerate() {
                // SAFETY: an entry of the event queue this driver allocated, which the SMMU
                // has finished writing (PROD is past it).
                *w = unsafe { (slot as *const u64).add(i).read_volatile() };
            }
            each(Event::decode(words));
            let next = queue_index(self.eventq_cons + 1, EVENTQ_LOG2);
            self.eventq_cons = next | (self.eventq_cons & EVENTQ_OVERFLOW);
        }
        if overflowed {
            self.eventq_cons ^= EVENTQ_OVERFLOW;
        }
        // SAFETY: the SMMU's registers.
        unsafe { write32(self.base, EVENTQ_CONS, self.eventq_cons) };
        overflowed
    }

    /// The global errors raised since the last call, acknowledged.
    pub fn global_errors(&mut self) -> u32 {
        // SAFETY: the SMMU's registers.
        unsafe {
            let gerrorn = read32(self.base, GERRORN);
            let active = read32(self.base, GERROR) ^ gerrorn;
            if active != 0 {
                write32(self.base, GERRORN, gerrorn ^ active);
            }
            active
        }
    }
}
