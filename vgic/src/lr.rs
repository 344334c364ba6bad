//! The list-register format, neutral, with its GICv3 and GICv2 bit layouts.

/// The most list registers a CPU interface can have: `GICH_VTR.ListRegs` is 6 bits (GICv2,
/// IHI 0048B §5.3); GICv3 has at most 16 (`ICH_VTR_EL2.ListRegs`, IHI 0069).
pub const MAX_LIST_REGISTERS: usize = 64;

/// The state field of a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LrState {
    /// Invalid: nothing in this list register (or the guest has deactivated it).
    #[default]
    Invalid,
    /// Pending.
    Pending,
    /// Active: the guest acknowledged it and has not deactivated it yet.
    Active,
    /// Pending and active.
    PendingActive,
}

impl LrState {
    /// The state with these pending and active flags.
    pub fn from_flags(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => Self::Invalid,
            (true, false) => Self::Pending,
            (false, true) => Self::Active,
            (true, true) => Self::PendingActive,
        }
    }

    /// Whether the pending bit is set.
    pub fn pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingActive)
    }

    /// Whether the active bit is set.
    pub fn active(self) -> bool {
        matches!(self, Self::Active | Self::PendingActive)
    }

    fn bits(self) -> u64 {
        match self {
            Self::Invalid => 0b00,
            Self::Pending => 0b01,
            Self::Active => 0b10,
            Self::PendingActive => 0b11,
        }
    }

    fn from_bits(bits: u64) -> Self {
        Self::from_flags(bits & 0b01 != 0, bits & 0b10 != 0)
    }
}

/// One list register's content, independent of the GIC version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ListRegister {
    /// Pending / active state.
    pub state: LrState,
    /// A hardware interrupt: deactivating the virtual one deactivates `pintid` too.
    pub hw: bool,
    /// Group 1 (signalled as vIRQ); Group 0 otherwise.
    pub group1: bool,
    /// The priority, 8 bits of which GICv2 keeps the top 5.
    pub priority: u8,
    /// The virtual INTID the guest acknowledges.
    pub vintid: u32,
    /// The physical INTID, used only when `hw` is set.
    pub pintid: u32,
    /// For a GICv2 SGI: the sending vCPU (`GICH_LR.CPUID`), as the guest's `GICC_IAR`
    /// reports it. Zero otherwise; GICv3 has no such field.
    pub source: u8,
    /// Ask for a maintenance interrupt when the guest deactivates this interrupt (the `EOI`
    /// bit); only possible when `hw` is clear.
    pub eoi_maintenance: bool,
}

// ICH_LR<n>_EL2 bit positions (IHI 0069).
const ICH_LR_STATE_SHIFT: u32 = 62;
const ICH_LR_HW: u64 = 1 << 61;
const ICH_LR_GROUP: u64 = 1 << 60;
const ICH_LR_PRIORITY_SHIFT: u32 = 48;
const ICH_LR_EOI: u64 = 1 << 41;
const ICH_LR_PINTID_SHIFT: u32 = 32;
const ICH_LR_PINTID_MASK: u64 = 0x1fff;

// GICH_LRn bit positions (IHI 0048B §5.3).
const GICH_LR_HW: u32 = 1 << 31;
const GICH_LR_GRP1: u32 = 1 << 30;
const GICH_LR_STATE_SHIFT: u32 = 28;
const GICH_LR_PRIORITY_SHIFT: u32 = 23;
const GICH_LR_EOI: u32 = 1 << 19;
const GICH_LR_PHYSICAL_SHIFT: u32 = 10;
const GICH_LR_ID_MASK: u32 = 0x3ff;
const GICH_LR_CPUID_MASK: u32 = 0x7;

impl ListRegister {
    /// An empty list register.
    pub const INVALID: Self = Self {
        state: LrState::Invalid,
        hw: false,
        group1: false,
        priority: 0,
        vintid: 0,
        pintid: 0,
        source: 0,
        eoi_maintenance: false,
    };

    /// The `ICH_LR<n>_EL2` value (IHI 0069): State \[63:62\], HW \[61\], Group \[60\],
    /// Priority \[55:48\], pINTID \[44:32\] when HW = 1, else EOI \[41\], vINTID \[31:0\].
    pub fn to_ich_lr(&self) -> u64 {
        let mut value = (self.state.bits() << ICH_LR_STATE_SHIFT)
            | (u64::from(self.priority) << ICH_LR_PRIORITY_SHIFT)
            | u64::from(self.vintid);
        if self.group1 {
            value |= ICH_LR_GROUP;
        }
        if self.hw {
            value |=
                ICH_LR_HW | ((u64::from(self.pintid) & ICH_LR_PINTID_MASK) << ICH_LR_PINTID_SHIFT);
        } else if self.eoi_maintenance {
            value |= ICH_LR_EOI;
        }
        value
    }

    /// Decodes an `ICH_LR<n>_EL2` value; `source` is always zero.
    pub fn from_ich_lr(value: u64) -> Self {
        let hw = value & ICH_LR_HW != 0;
        Self {
            state: LrState::from_bits(value >> ICH_LR_STATE_SHIFT),
            hw,
            group1: value & ICH_LR_GROUP != 0,
            priority: (value >> ICH_LR_PRIORITY_SHIFT) as u8,
            vintid: value as u32,
            pintid: if hw {
                ((value >> ICH_LR_PINTID_SHIFT) & ICH_LR_PINTID_MASK) as u32
            } else {
                0
            },
            source: 0,
            eoi_maintenance: !hw && value & ICH_LR_EOI != 0,
        }
    }

    /// The `GICH_LR<n>` value (IHI 0048B §5.3, GICH_LRn): HW \[31\], Grp1 \[30\], State \[29:28\],
    /// Priority \[27:23\] (the top 5 bits), PhysicalID \[19:10\] when HW = 1, else EOI \[19\]
    /// and CPUID \[12:10\], VirtualID \[9:0\].
    pub fn to_gich_lr(&self) -> u32 {
        let mut value = ((self.state.bits() as u32) << GICH_LR_STATE_SHIFT)
            | (u32::from(self.priority >> 3) << GICH_LR_PRIORITY_SHIFT)
            | (self.vintid & GICH_LR_ID_MASK);
        if self.group1 {
            value |= GICH_LR_GRP1;
        }
        if self.hw {
            value |= GICH_LR_HW | ((self.pintid & GICH_LR_ID_MASK) << GICH_LR_PHYSICAL_SHIFT);
        } else {
            value |= (u32::from(self.source) & GICH_LR_CPUID_MASK) << GICH_LR_PHYSICAL_SHIFT;
            if self.eoi_maintenance {
                value |= GICH_LR_EOI;
            }
        }
        value
    }

    /// Decodes a `GICH_LR<n>` value; the priority comes back with its low 3 bits zero.
    pub fn from_gich_lr(value: u32) -> Self {
        let hw = value & GICH_LR_HW != 0;
        let field = (value >> GICH_LR_PHYSICAL_SHIFT) & GICH_LR_ID_MASK;
        Self {
            state: LrState::from_bits(u64::from(value >> GICH_LR_STATE_SHIFT)),
            hw,
            group1: value & GICH_LR_GRP1 != 0,
            priority: (((value >> GICH_LR_PRIORITY_SHIFT) & 0x1f) << 3) as u8,
            vintid: value & GICH_LR_ID_MASK,
            pintid: if hw { field } else { 0 },
            source: if hw {
                0
            } else {
                (field & GICH_LR_CPUID_MASK) as u8
            },
            eoi_maintenance: !hw && value & GICH_LR_EOI != 0,
        }
    }
}
