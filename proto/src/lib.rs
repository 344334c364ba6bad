//! The secure channel's wire formats, shared by the three programs that speak them: the
//! hypervisor (EL2), the secure guest, and `tandem-client` in Linux.
//!
//! - [`ring`]: the record rings in the memory the hypervisor shares with the secure guest.
//!   The hypervisor's vsock backend turns Linux's stream connections into records (open,
//!   data, shutdown, reset) on one ring; the secure guest answers on the other.
//! - [`service`]: the request protocol inside one vsock stream: framed requests with an id,
//!   and exactly one framed response to each.
//! - [`attest`]: measured launch and attestation: the derivations, the certificate the
//!   hypervisor signs for a VM, and the report the VM signs for a client.
//!
//! Everything here is pure and bounded: every length read from the other side is checked
//! before it is used, nothing allocates, and no input panics. `docs/secure-guest.md`
//! describes the channel as a whole.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod attest;
pub mod ring;
pub mod service;
