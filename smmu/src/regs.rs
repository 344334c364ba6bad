//! Register offsets and fields of the SMMUv3 programming interface (IHI 0070, chapter 6).
//!
//! Offsets are from the base of page 0; the event queue's producer and consumer indices
//! live in page 1, 64 KiB above.

/// SMMU_IDR0: features.
pub const IDR0: usize = 0x00;
/// SMMU_IDR1: table and queue sizes.
pub const IDR1: usize = 0x04;
/// SMMU_IDR5: output address size and granules.
pub const IDR5: usize = 0x14;
/// SMMU_CR0: enables.
pub const CR0: usize = 0x20;
/// SMMU_CR0ACK: the enables in force.
pub const CR0ACK: usize = 0x24;
/// SMMU_CR1: table and queue memory attributes.
pub const CR1: usize = 0x28;
/// SMMU_CR2: miscellaneous controls.
pub const CR2: usize = 0x2c;
/// SMMU_GBPA: what happens to transactions while the SMMU is disabled.
pub const GBPA: usize = 0x44;
/// SMMU_IRQ_CTRL: wired interrupt enables.
pub const IRQ_CTRL: usize = 0x50;
/// SMMU_IRQ_CTRLACK.
pub const IRQ_CTRLACK: usize = 0x54;
/// SMMU_GERROR: global errors (each bit toggles when raised).
pub const GERROR: usize = 0x60;
/// SMMU_GERRORN: acknowledged global errors (software toggles to match GERROR).
pub const GERRORN: usize = 0x64;
/// SMMU_GERROR_IRQ_CFG0: MSI address for global errors (0: wired interrupt).
pub const GERROR_IRQ_CFG0: usize = 0x68;
/// SMMU_STRTAB_BASE (64-bit).
pub const STRTAB_BASE: usize = 0x80;
/// SMMU_STRTAB_BASE_CFG.
pub const STRTAB_BASE_CFG: usize = 0x88;
/// SMMU_CMDQ_BASE (64-bit).
pub const CMDQ_BASE: usize = 0x90;
/// SMMU_CMDQ_PROD.
pub const CMDQ_PROD: usize = 0x98;
/// SMMU_CMDQ_CONS.
pub const CMDQ_CONS: usize = 0x9c;
/// SMMU_EVENTQ_BASE (64-bit).
pub const EVENTQ_BASE: usize = 0xa0;
/// SMMU_EVENTQ_IRQ_CFG0: MSI address for events (0: wired interrupt).
pub const EVENTQ_IRQ_CFG0: usize = 0xb0;
/// SMMU_EVENTQ_PROD, in page 1.
pub const EVENTQ_PROD: usize = 0x1_00a8;
/// SMMU_EVENTQ_CONS, in page 1.
pub const EVENTQ_CONS: usize = 0x1_00ac;
/// Bytes of register space the driver touches: pages 0 and 1.
pub const WINDOW: usize = 0x2_0000;

/// SMMU_CR0.SMMUEN: translation on.
pub const CR0_SMMUEN: u32 = 1 << 0;
/// SMMU_CR0.EVENTQEN.
pub const CR0_EVENTQEN: u32 = 1 << 2;
/// SMMU_CR0.CMDQEN.
pub const CR0_CMDQEN: u32 = 1 << 3;

/// SMMU_CR1 for tables and queues in Inner Shareable, Write-Back cacheable memory (what
/// the hypervisor's normal memory is): TABLE_SH, TABLE_OC, TABLE_IC, QUEUE_SH, QUEUE_OC,
/// QUEUE_IC. Used only when the SMMU is coherent (SMMU_IDR0.COHACC); otherwise 0
/// (non-cacheable, and the driver cleans what it writes to the point of coherency).
pub const CR1_CACHEABLE: u32 = 0b11 << 10 | 0b01 << 8 | 0b01 << 6 | 0b11 << 4 | 0b01 << 2 | 0b01;

/// SMMU_CR2.RECINVSID: record an event for a transaction with an out-of-range stream ID.
pub const CR2_RECINVSID: u32 = 1 << 1;

/// SMMU_GBPA.ABORT: abort transactions while the SMMU is disabled.
pub const GBPA_ABORT: u32 = 1 << 20;
/// SMMU_GBPA.Update: set with a new value; the SMMU clears it once the value is in force.
pub const GBPA_UPDATE: u32 = 1 << 31;

/// SMMU_IRQ_CTRL.GERROR_IRQEN.
pub const IRQ_CTRL_GERROR: u32 = 1 << 0;
/// SMMU_IRQ_CTRL.EVENTQ_IRQEN.
pub const IRQ_CTRL_EVENTQ: u32 = 1 << 2;

/// SMMU_STRTAB_BASE.RA: read-allocate hint for stream table walks.
pub const STRTAB_BASE_RA: u64 = 1 << 62;
/// SMMU_CMDQ_BASE.RA and SMMU_EVENTQ_BASE.WA share this bit.
pub const Q_BASE_ALLOCATE: u64 = 1 << 62;
/// The address field of the table and queue base registers: bits \[51:5\] (queues) or
/// \[51:6\] (stream table); the driver's tables are 64-byte aligned, so one mask serves.
pub const BASE_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x1f;

/// SMMU_STRTAB_BASE_CFG for a table covering `log2size` stream ID bits.
pub const fn strtab_base_cfg(two_level: bool, log2size: u32, split: u32) -> u32 {
    let fmt = if two_level { 1 } else { 0 };
    fmt << 16 | (split & 0x1f) << 6 | (log2size & 0x3f)
}

/// A queue base register value: address and log2 of the entry count.
pub const fn queue_base(addr: u64, log2size: u32) -> u64 {
    Q_BASE_ALLOCATE | (addr & BASE_ADDR_MASK) | (log2size as u64 & 0x1f)
}

/// SMMU_CMDQ_CONS.ERR: why the command at CONS was refused (0: none).
pub const fn cmdq_cons_err(cons: u32) -> u32 {
    (cons >> 24) & 0x7f
}

/// The position part of a queue index (index and wrap bit) for a queue of `2^log2size`
/// entries: everything else (SMMU_*_CONS.ERR, the overflow flags) is masked off.
pub const fn queue_index(reg: u32, log2size: u32) -> u32 {
    reg & ((2 << log2size) - 1)
}

/// SMMU_GERROR.EVENTQ_ABT_ERR: an event could not be written (the queue was full).
pub const GERROR_EVENTQ_ABT: u32 = 1 << 2;

/// SMMU_GERROR bits by name, for the log.
pub const GERROR_NAMES: [(u32, &str); 7] = [
    (1 << 0, "CMDQ_ERR"),
    (1 << 2, "EVENTQ_ABT_ERR"),
    (1 << 3, "PRIQ_ABT_ERR"),
    (1 << 4, "MSI_CMDQ_ABT_ERR"),
    (1 << 5, "MSI_EVENTQ_ABT_ERR"),
    (1 << 7, "MSI_GERROR_ABT_ERR"),
    (1 << 8, "SFM_ERR"),
];
