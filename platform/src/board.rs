//! The board description: plain data the rest of the hypervisor reads.

use alloc::string::String;
use alloc::vec::Vec;

/// A range of CPU physical addresses, `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRange {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl MemRange {
    /// One past the last address, or `None` if that does not fit in 64 bits.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// Whether the two ranges share at least one address (empty ranges share none).
    pub fn overlaps(&self, other: &MemRange) -> bool {
        let end = |r: &MemRange| u128::from(r.base) + u128::from(r.size);
        self.size != 0
            && other.size != 0
            && u128::from(self.base) < end(other)
            && u128::from(other.base) < end(self)
    }

    /// Whether `addr` lies inside the range.
    pub fn contains(&self, addr: u64) -> bool {
        addr.checked_sub(self.base)
            .is_some_and(|off| off < self.size)
    }
}

/// Memory the hypervisor must not hand to a guest as ordinary RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The reserved range.
    pub range: MemRange,
    /// The `/reserved-memory` child's node name, or `"/memreserve/"` for an entry of the
    /// blob's memory reservation map.
    pub name: String,
    /// The node has `no-map`: not even a cacheable mapping may cover it.
    pub no_map: bool,
}

/// How a secondary CPU is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON`.
    Psci,
    /// The CPU polls `release_addr`; write the entry point there, then `SEV`.
    SpinTable {
        /// `cpu-release-addr`, a CPU physical address.
        release_addr: u64,
    },
}

/// One CPU node of `/cpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// `reg`: the affinity fields of MPIDR_EL1.
    pub mpidr: u64,
    /// Full node path, e.g. `/cpus/cpu@1`.
    pub node: String,
    /// How to start it.
    pub enable_method: EnableMethod,
}

/// The instruction used to call PSCI firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduit {
    /// `SMC`, firmware at EL3.
    Smc,
    /// `HVC`, firmware at EL2 (never the case under Tandem, which is at EL2 itself).
    Hvc,
}

/// The PSCI version the node claims, from its most recent `compatible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PsciCompat {
    /// `"arm,psci"`: function IDs come from the node's properties.
    V0_1,
    /// `"arm,psci-0.2"`.
    V0_2,
    /// `"arm,psci-1.0"`.
    V1_0,
}

/// The PSCI firmware interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psci {
    /// `method`.
    pub conduit: Conduit,
    /// The best `compatible`.
    pub version: PsciCompat,
}

/// Shared or private peripheral interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqKind {
    /// Shared peripheral interrupt (specifier type 0).
    Spi,
    /// Private peripheral interrupt (specifier type 1).
    Ppi,
}

/// A GIC interrupt specifier: `<type number flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    /// SPI or PPI.
    pub kind: IrqKind,
    /// Number within its kind.
    pub number: u32,
    /// Third cell: trigger type in bits [3:0]; for a GICv2 PPI, the CPU mask in [15:8].
    pub flags: u32,
}

impl Irq {
    /// The GIC INTID: 32 + n for an SPI, 16 + n for a PPI.
    pub fn intid(&self) -> u32 {
        match self.kind {
            IrqKind::Spi => self.number.saturating_add(32),
            IrqKind::Ppi => self.number.saturating_add(16),
        }
    }
}

/// The interrupt controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (GIC-400 and friends).
    V2 {
        /// Distributor.
        gicd: MemRange,
        /// CPU interface.
        gicc: MemRange,
        /// Virtual interface control (the hypervisor's), if the node lists it.
        gich: Option<MemRange>,
        /// Virtual CPU interface (the guest's GICC), if the node lists it.
        gicv: Option<MemRange>,
        /// Maintenance interrupt, from the node's `interrupts`.
        maintenance: Option<Irq>,
    },
    /// GICv3.
    V3 {
        /// Distributor.
        gicd: MemRange,
        /// Redistributor regions (`#redistributor-regions` of them, 1 by default).
        redistributors: Vec<MemRange>,
        /// `redistributor-stride`, if given.
        redistributor_stride: Option<u64>,
        /// Maintenance interrupt, from the node's `interrupts`.
        maintenance: Option<Irq>,
    },
}

impl Gic {
    /// 2 or 3.
    pub fn version(&self) -> u8 {
        match self {
            Gic::V2 { .. } => 2,
            Gic::V3 { .. } => 3,
        }
    }

    /// The distributor.
    pub fn gicd(&self) -> MemRange {
        match self {
            Gic::V2 { gicd, .. } | Gic::V3 { gicd, .. } => *gicd,
        }
    }

    /// The maintenance interrupt, if the node gives one.
    pub fn maintenance(&self) -> Option<Irq> {
        match self {
            Gic::V2 { maintenance, .. } | Gic::V3 { maintenance, .. } => *maintenance,
        }
    }
}

/// The architected generic timer's interrupts, in the binding's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Secure EL1 physical timer.
    pub secure_phys: Irq,
    /// Non-secure EL1 physical timer.
    pub phys: Irq,
    /// Virtual timer.
    pub virt: Irq,
    /// EL2 physical timer (CNTHP).
    pub hyp_phys: Irq,
    /// EL2 virtual timer (CNTHV), present with VHE.
    pub hyp_virt: Option<Irq>,
}

/// Which UART programming model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011 (`"arm,pl011"`), or the SBSA generic UART (`"arm,sbsa-uart"`): a subset
    /// of the PL011's registers at the same offsets (Arm Server Base System Architecture,
    /// the Generic UART appendix), which is what Xen gives its domUs (`vpl011`).
    Pl011,
    /// Broadcom BCM2835 mini-UART (`"brcm,bcm2835-aux-uart"`).
    Bcm2835Aux,
    /// 16550-compatible (`"ns16550a"`, `"ns16550"`, `"snps,dw-apb-uart"`).
    Ns16550 {
        /// `reg-shift`: registers are `1 << reg_shift` bytes apart (0 when absent).
        reg_shift: u32,
        /// `reg-io-width`: access width in bytes (1 when absent).
        reg_io_width: u32,
    },
}

impl UartKind {
    /// The kind a node with these properties is, if one this crate knows. `compatible` is
    /// the raw string list; the first known entry wins.
    pub(crate) fn from_node(
        compatible: &[u8],
        reg_shift: Option<u32>,
        reg_io_width: Option<u32>,
    ) -> Option<Self> {
        compatible.split(|&b| b == 0).find_map(|c| match c {
            b"arm,pl011" | b"arm,sbsa-uart" => Some(Self::Pl011),
            b"brcm,bcm2835-aux-uart" => Some(Self::Bcm2835Aux),
            b"ns16550a" | b"ns16550" | b"snps,dw-apb-uart" => Some(Self::Ns16550 {
                reg_shift: reg_shift.unwrap_or(0),
                reg_io_width: reg_io_width.unwrap_or(1),
            }),
            _ => None,
        })
    }
}

/// A serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    /// Programming model.
    pub kind: UartKind,
    /// CPU physical address of the registers.
    pub base: u64,
    /// Size of the register window.
    pub size: u64,
    /// Full node path.
    pub node: String,
    /// Its first interrupt, when it goes straight to the GIC (for console input).
    pub interrupt: Option<Irq>,
}

/// An Arm SMMUv3 (`compatible = "arm,smmu-v3"`): the IOMMU the hypervisor drives so that
/// devices reach only the memory of the VM they are assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smmu {
    /// Full node path.
    pub node: String,
    /// Its phandle, which `iommus` and `iommu-map` of the devices behind it name.
    pub phandle: Option<u32>,
    /// The register window (two 64 KiB pages on every SMMUv3).
    pub regs: MemRange,
    /// The event queue's wired interrupt (`interrupt-names` "eventq"), if it has one.
    pub eventq_irq: Option<Irq>,
    /// The global error interrupt ("gerror"), if it has one.
    pub gerror_irq: Option<Irq>,
}

/// The board: everything the hypervisor needs from the device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Root `model` (empty when absent).
    pub model: String,
    /// Root `compatible`, in order.
    pub compatible: Vec<String>,
    /// RAM banks from every `device_type = "memory"` node, sorted by base, zero-sized
    /// entries dropped; never empty and never overlapping.
    pub memory: Vec<MemRange>,
    /// `/memreserve/` entries, then `/reserved-memory` children with a non-empty `reg`.
    pub reserved: Vec<Reserved>,
    /// CPUs in device-tree order.
    pub cpus: Vec<Cpu>,
    /// PSCI firmware, if the tree has a PSCI node.
    pub psci: Option<Psci>,
    /// The interrupt controller.
    pub gic: Gic,
    /// The generic timer's interrupts, if the tree has a timer node.
    pub timer: Option<Timer>,
    /// The console: `/chosen/stdout-path` if it names a UART of a known kind, else the first
    /// enabled PL011.
    pub console: Option<Uart>,
    /// `/chosen/bootargs`.
    pub bootargs: Option<String>,
    /// The enabled SMMUv3s, in tree order.
    pub smmus: Vec<Smmu>,
}

/// The most CPUs a [`Platform`] may have.
pub const MAX_CPUS: usize = 64;

/// Whether a `status` value leaves the node usable (`"okay"`, `"ok"`, or no status).
pub(crate) fn status_ok(status: Option<&[u8]>) -> bool {
    match status {
        None => true,
        Some(v) => matches!(trim_nul(v), b"okay" | b"ok"),
    }
}

/// A string property's bytes without the trailing NUL(s).
pub(crate) fn trim_nul(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &v[..end]
}

/// A string property as `&str` (first string of a list), if it is UTF-8.
pub(crate) fn prop_str(v: &[u8]) -> Option<&str> {
    let first = v.split(|&b| b == 0).next().unwrap_or_default();
    core::str::from_utf8(first).ok()
}

/// The path `stdout-path` names, without its `:options` suffix.
pub(crate) fn strip_options(path: &str) -> &str {
    path.split(':').next().unwrap_or(path)
}

/// Whether a node called `name` matches the path component `component` (whose unit
/// address may be left out when it is unambiguous).
pub(crate) fn name_matches(component: &str, name: &str) -> bool {
    component == name || (!component.contains('@') && name.split('@').next() == Some(component))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sbsa_generic_uart_is_driven_as_a_pl011() {
        // Xen's vpl011 node in a domU's device tree.
        assert_eq!(
            UartKind::from_node(b"arm,sbsa-uart\0", None, None),
            Some(UartKind::Pl011)
        );
        assert_eq!(
            UartKind::from_node(b"vendor,uart\0arm,sbsa-uart\0", None, None),
            Some(UartKind::Pl011)
        );
        assert_eq!(UartKind::from_node(b"arm,sbsa-uart-2\0", None, None), None);
    }
}
