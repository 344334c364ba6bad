//! The state the model keeps for one interrupt.

/// Priority bits kept: 5 (see the crate documentation).
pub(crate) const PRIORITY_MASK: u8 = 0xf8;

/// `GICD_IROUTER<n>.Interrupt_Routing_Mode`: 1 = any participating PE (IHI 0069, GICD_IROUTER).
pub(crate) const IROUTER_IRM: u64 = 1 << 31;
/// The writable bits of `GICD_IROUTER<n>`: Aff3 \[39:32\], IRM \[31\], Aff2..Aff0 \[23:0\].
pub(crate) const IROUTER_MASK: u64 = 0x0000_00ff_80ff_ffff;

/// One interrupt: an SGI or PPI of one vCPU, or an SPI.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Irq {
    pub(crate) enabled: bool,
    /// Edge latch: set by an edge, `ISPENDR`, `raise` or `hw_arrived`; consumed when the
    /// interrupt is handed to a list register as pending.
    pub(crate) latch: bool,
    /// The level of the input line (level-sensitive sources driven with `set_level`).
    pub(crate) line: bool,
    pub(crate) active: bool,
    pub(crate) group1: bool,
    /// Edge-triggered (`ICFGR` Int_config\[1\] = 1); level-sensitive otherwise.
    pub(crate) edge: bool,
    pub(crate) priority: u8,
    /// v2 SPI: `GICD_ITARGETSR` byte.
    pub(crate) targets: u8,
    /// v3 SPI: `GICD_IROUTER` value.
    pub(crate) route: u64,
    /// The vCPU a 1-of-N SPI goes to: the hint of the input that made it pending.
    pub(crate) hint: u8,
    /// The physical INTID of a forwarded hardware interrupt.
    pub(crate) hw: Option<u16>,
    /// v2 SGI: one pending bit per sending vCPU (the latch is unused for v2 SGIs).
    pub(crate) sources: u8,
    /// v2 SGI: the sender whose instance is active.
    pub(crate) active_source: u8,
    /// The vCPU an SPI is active on (it acknowledged it): an active SPI stays there until
    /// it is deactivated, whatever its routing says.
    pub(crate) owner: Option<u8>,
    /// The vCPU whose list registers hold this interrupt, between `flush` and `sync`.
    pub(crate) loaded_on: Option<u8>,
    /// While loaded: the v2 SGI sender written into the list register.
    pub(crate) lr_source: u8,
    /// While loaded: whether it was handed over pending.
    pub(crate) lr_pending: bool,
    /// While loaded: the guest cleared its pending state through the distributor.
    pub(crate) lr_pending_cleared: bool,
    /// While loaded: the guest set or cleared its active state through the distributor.
    pub(crate) lr_active_override: Option<bool>,
}

impl Irq {
    /// Whether the model holds it pending (not counting a list register's copy).
    pub(crate) fn pending(&self) -> bool {
        self.latch || self.sources != 0 || (!self.edge && self.line)
    }

    /// Pending or active in the model: what a list register or a wake-up can be for.
    pub(crate) fn live(&self) -> bool {
        self.active || self.pending()
    }

    /// Whether the guest sees it pending: the model's state or the list register's.
    pub(crate) fn pending_view(&self) -> bool {
        self.pending() || (self.loaded_on.is_some() && self.lr_pending && !self.lr_pending_cleared)
    }

    /// Whether the guest sees it active.
    pub(crate) fn active_view(&self) -> bool {
        match (self.loaded_on, self.lr_active_override) {
            (Some(_), Some(active)) => active,
            _ => self.active,
        }
    }

    /// Whether it is pending or active as the guest sees it. For a forwarded interrupt this
    /// is whether the physical GIC still holds it: from its arrival until the guest
    /// deactivates it.
    pub(crate) fn holds_physical(&self) -> bool {
        self.pending_view() || self.active_view()
    }
}
