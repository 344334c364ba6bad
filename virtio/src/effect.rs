//! What the device asks of the hypervisor: effects of a register access or of processing.

use alloc::vec::Vec;

use crate::queue::QueueError;

/// The width of a guest's MMIO access, from the data abort's `ESR_EL2.ISS.SAS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

impl AccessWidth {
    /// The width of an access of `bytes` bytes, if it is 1, 2, 4 or 8.
    pub fn from_bytes(bytes: usize) -> Option<Self> {
        match bytes {
            1 => Some(Self::Byte),
            2 => Some(Self::Half),
            4 => Some(Self::Word),
            8 => Some(Self::Double),
            _ => None,
        }
    }

    /// The number of bytes accessed.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Half => 2,
            Self::Word => 4,
            Self::Double => 8,
        }
    }
}

/// Something the hypervisor must do after a call into the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The driver wrote this queue's index to `QueueNotify`: call
    /// [`Vsock::process`](crate::Vsock::process), now or after the trap returns.
    Notify(u16),
    /// The device's interrupt line changed to this level (`true`: asserted). Set the
    /// level of the device's SPI in the vGIC.
    Interrupt(bool),
    /// [`Vsock::process`](crate::Vsock::process) stopped at its per-call budget (one ring's
    /// worth of buffers per queue) with work left: call it again, e.g. after letting the
    /// guest run, so a driver that keeps refilling its ring cannot hold EL2.
    MoreWork,
    /// The driver broke a virtqueue's rules; the device has set `DEVICE_NEEDS_RESET`, raised
    /// the configuration-change interrupt if `DRIVER_OK` was set, and reset every
    /// connection. For the log: the device does nothing more until the driver resets it.
    NeedsReset(QueueError),
}

/// Where effects go: the hypervisor's per-trap buffer, or a `Vec` in tests.
pub trait EffectSink {
    /// Records one effect.
    fn push(&mut self, effect: Effect);
}

impl EffectSink for Vec<Effect> {
    fn push(&mut self, effect: Effect) {
        Vec::push(self, effect);
    }
}
