//! What a guest sees of the hypervisor, as pure logic: its PSCI/SMCCC calls, its stage-2 data
//! aborts and the exceptions injected into it.
//!
//! Nothing here touches a register or memory: the trap handlers read the syndrome and the
//! guest's registers, call into these modules, and apply the answer. Every input comes from a
//! guest, so every function has a defined result for every value and never panics.

pub mod abort;
pub mod hypercall;
pub mod inject;
pub mod psci;
pub mod ptimer;
