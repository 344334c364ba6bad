//! virtio-mmio devices for Tandem's VMs, as pure state machines: today the socket (vsock)
//! device through which Linux reaches the secure guest over `AF_VSOCK`, with the stock
//! `vmw_vsock_virtio_transport` driver.
//!
//! # Layers
//! - [`mmio::MmioTransport`]: the virtio-mmio version 2 register window (virtio 1.2
//!   §4.2.2). Guest accesses in, [`Effect`]s out; it never touches memory.
//! - [`queue::SplitQueue`]: split virtqueues walked over [`GuestMemory`], every index,
//!   address and length checked, chains bounded by the queue size.
//! - [`Vsock`]: the socket device (§5.10): stream connections between the driver's CID
//!   and the secure side's, with credit-based flow control both ways, bounded buffers and a
//!   bounded number of connections.
//!
//! # Device state machine
//! Reset → the driver sets `ACKNOWLEDGE`, `DRIVER`, writes its features, sets
//! `FEATURES_OK` (kept only if it accepted `VIRTIO_F_VERSION_1`, the one feature offered:
//! no indirect descriptors, no event index, no packed rings), sets up and enables the
//! queues (rx 0, tx 1, event 2), then sets `DRIVER_OK`: the device is live and
//! [`Vsock::process`] works the queues. Writing 0 to `Status` resets it. A driver that breaks
//! a queue's rules (an index, address or length out of bounds, a looping chain, an indirect
//! descriptor) puts the device in `DEVICE_NEEDS_RESET` with a configuration-change
//! interrupt; every connection is reset and nothing more is done until the driver resets
//! the device. No driver input panics or makes the device loop.
//!
//! A connection from Linux: REQUEST to a port the backend [`listen`](Vsock::listen)s on →
//! [`Event::Request`] → [`accept`](Vsock::accept) (RESPONSE) or [`refuse`](Vsock::refuse)
//! (RST) → data both ways with [`send`](Vsock::send)/[`recv`](Vsock::recv) and
//! [`Event::Readable`] → SHUTDOWN from one side, RST from the other. Packets for any other
//! CID or port, or breaking the protocol, are answered with RST.
//!
//! # What the EL2 glue does
//! - Leaves the device's [`mmio::WINDOW_SIZE`] window (registers and configuration)
//!   unmapped in the driver VM's stage 2 and passes each data abort there, with its offset
//!   and width, to [`Vsock::mmio_read`]/[`Vsock::mmio_write`]. The VM's device tree names it
//!   like QEMU does: `compatible = "virtio,mmio"`, that window in `reg`, one level-high SPI,
//!   `dma-coherent`.
//! - Implements [`GuestMemory`] over the driver VM's RAM only (identity-mapped: guest
//!   physical is host physical), refusing every range not wholly inside it, with
//!   single-copy-atomic 16-bit accesses for the ring indices.
//! - Acts on each [`Effect`]: `Notify` and `MoreWork` → call [`Vsock::process`] (at once
//!   or deferred); `Interrupt(level)` → set the level of the device's SPI in the vGIC;
//!   `NeedsReset` → log it. Per-VM statistics come from [`Vsock::stats`].
//! - Issues `dsb ishst` before signalling the interrupt to another CPU, so `used.idx` is
//!   visible before the interrupt is; the ring barriers themselves are in [`queue`].
//! - Drives the backend: [`Vsock::poll_event`] after each call, and calls such as
//!   [`Vsock::send`] and [`Vsock::recv`] as the secure guest's ring allows, followed by
//!   [`Vsock::process`].
//! - Holds one lock around the device: all calls take `&mut self`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod effect;
mod mem;
pub mod mmio;
pub mod queue;
mod ring;
pub mod vsock;

pub use effect::{AccessWidth, Effect, EffectSink};
pub use mem::{FakeMemory, GuestMemory, MemoryError};
pub use vsock::{ConfigError, ConnId, Event, Stats, Vsock, VsockConfig, VsockError};
