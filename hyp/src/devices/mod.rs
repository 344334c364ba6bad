//! Device models the hypervisor emulates for guests. Pure: guest accesses in, effects out.

pub mod bridge;
pub mod vpl011;
