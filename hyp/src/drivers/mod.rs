//! Device drivers of the hypervisor itself. Every MMIO access of the hypervisor lives here.

pub mod gic;
pub mod gicv2;
pub mod smmuv3;
pub mod uart;
