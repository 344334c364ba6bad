//! The ring glue: finds the vsock ring region in the device tree, takes records off the
//! ring to the service, pushes records on the ring to the hypervisor and rings its
//! doorbell.
//!
//! The region is zeroed by the hypervisor before every boot, so both rings start empty
//! with their counters at 0 and nothing here initialises them. The guest runs with its MMU
//! off, so every access to the region is Device-nGnRnE: each byte and counter reaches
//! memory as [`RawMemory`] issues it.

use alloc::format;
use alloc::string::String;

use tandem_guest_rt::psci;
use tandem_proto::ring::raw::RawMemory;
use tandem_proto::ring::{
    Consumer, Direction, Producer, Record, RingError, MAX_RECORD, MIN_REGION,
};

use tandem_service::{Outbox, Undelivered};

/// `TANDEM_DOORBELL` (docs/binding.md): x1 = the shared region's base. For the ring region
/// the hypervisor drains the whole ring to it before the call returns.
const TANDEM_DOORBELL: u32 = 0xc600_0001;
/// The `compatible` of the ring region's node, under `/reserved-memory`.
const COMPATIBLE: &str = "tandem,vsock-service";
/// Pushes of one record tried before giving up on it: each `Full` rings the doorbell
/// first, which empties the ring unless the hypervisor is not draining it.
const PUSH_TRIES: usize = 3;
/// The alignment [`RawMemory`] needs (its counters sit on their own 64-byte lines).
const REGION_ALIGN: u64 = 64;

/// The ring region as the device tree gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its base address (this guest's physical address; the MMU is off).
    pub base: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The SPI the hypervisor raises when it puts records on the ring to the service.
    pub doorbell_spi: u32,
}

impl Region {
    /// The region's node in `dtb`: `Ok(None)` when there is none (a VM that serves no
    /// vsock device), an error when the node is there but unusable.
    pub fn find(dtb: &[u8]) -> Result<Option<Self>, String> {
        let fdt = fdt::Fdt::new(dtb).map_err(|e| format!("bad DTB: {e:?}"))?;
        let Some(node) = fdt.all_nodes().find(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == COMPATIBLE))
        }) else {
            return Ok(None);
        };
        let name = node.name;
        let reg = node
            .reg()
            .and_then(|mut r| r.next())
            .ok_or_else(|| format!("{name}: no reg"))?;
        let base = reg.starting_address as u64;
        let size = reg.size.ok_or_else(|| format!("{name}: reg has no size"))? as u64;
        let doorbell_spi = node
            .property("tandem,doorbell")
            .and_then(|p| p.as_usize())
            .and_then(|spi| u32::try_from(spi).ok())
            .ok_or_else(|| format!("{name}: no tandem,doorbell"))?;
        if size < MIN_REGION as u64 || !base.is_multiple_of(REGION_ALIGN) {
            return Err(format!(
                "{name}: a ring region of {size:#x} bytes at {base:#x}: want at least \
                 {MIN_REGION:#x} bytes, {REGION_ALIGN}-byte aligned"
            ));
        }
        if base.checked_add(size).is_none() || usize::try_from(size).is_err() {
            return Err(format!("{name}: reg {base:#x}+{size:#x} overflows"));
        }
        Ok(Some(Self {
            base,
            size,
            doorbell_spi,
        }))
    }
}

/// Why the channel stopped: the hypervisor's side of it cannot be trusted any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// A ring's counters or records cannot be right.
    Ring(RingError),
    /// `TANDEM_DOORBELL` was refused with this SMCCC status.
    Doorbell(u64),
}

impl core::fmt::Display for Broken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ring(e) => write!(f, "{e}"),
            Self::Doorbell(status) => write!(f, "TANDEM_DOORBELL answered {status:#x}"),
        }
    }
}

/// Both rings of the region.
pub struct Channel {
    region: Region,
    memory: RawMemory,
    inbound: Consumer,
    outbound: Producer,
    /// Records pushed since the doorbell last rang.
    unannounced: bool,
    /// Set once the hypervisor's side broke: nothing more is read or written.
    broken: Option<Broken>,
}

impl Channel {
    /// The channel over `region`, found in this guest's device tree.
    ///
    /// # Safety
    /// `region` must be memory this guest may access (the device tree's `no-map` region
    /// shared only with the hypervisor), used by nothing else in this program, and only
    /// one `Channel` may exist for it.
    pub unsafe fn new(region: Region) -> Self {
        // `Region::find` checked the size fits a usize and is at least MIN_REGION.
        let size = region.size as usize;
        Self {
            region,
            // SAFETY: the caller vouches for the memory; `Region::find` checked its base is
            // 64-byte aligned.
            memory: unsafe { RawMemory::new(region.base as usize as *mut u8, size) },
            inbound: Consumer::new(size, Direction::ToService)
                .unwrap_or_else(|| unreachable!("the region is at least MIN_REGION")),
            outbound: Producer::new(size, Direction::ToHypervisor)
                .unwrap_or_else(|| unreachable!("the region is at least MIN_REGION")),
            unannounced: false,
            broken: None,
        }
    }

    /// Why the channel stopped, once it did.
    pub fn broken(&self) -> Option<&Broken> {
        self.broken.as_ref()
    }

    /// Whether a record waits on the ring to the service (true also when the ring is
    /// broken, so that the caller looks and finds out).
    pub fn pending(&self) -> bool {
        self.broken.is_none() && self.inbound.pending(&self.memory).unwrap_or(true)
    }

    /// Takes the next record into `buf` (this guest's memory) and returns it, checked;
    /// `None` when the ring is empty or broken.
    pub fn pop<'b>(&mut self, buf: &'b mut [u8; MAX_RECORD]) -> Option<(Record, &'b [u8])> {
        if self.broken.is_some() {
            return None;
        }
        match self.inbound.pop(&mut self.memory, buf) {
            Ok(record) => record,
            Err(e) => {
                self.broken = Some(Broken::Ring(e));
                None
            }
        }
    }

    /// Rings the hypervisor's doorbell if records were pushed since it last rang.
    pub fn announce(&mut self) {
        if self.unannounced && self.broken.is_none() {
            self.ring();
        }
    }

    fn ring(&mut self) {
        self.unannounced = false;
        let status = psci::call(TANDEM_DOORBELL, &[self.region.base])[0];
        if status != 0 {
            self.broken = Some(Broken::Doorbell(status));
        }
    }
}

impl Outbox for Channel {
    fn push(&mut self, record: Record, payload: &[u8]) -> Result<(), Undelivered> {
        for _ in 0..PUSH_TRIES {
            if self.broken.is_some() {
                return Err(Undelivered);
            }
            match self.outbound.push(&mut self.memory, record, payload) {
                Ok(()) => {
                    self.unannounced = true;
                    return Ok(());
                }
                // The hypervisor empties the ring before the doorbell call returns.
                Err(RingError::Full) => self.ring(),
                Err(e @ RingError::Corrupt(_)) => self.broken = Some(Broken::Ring(e)),
                // The service splits its answers; a longer payload is its own bug, and
                // dropping the connection is the answer to it too.
                Err(RingError::TooLong(_)) => return Err(Undelivered),
            }
        }
        Err(Undelivered)
    }
}
