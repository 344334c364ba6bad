//! Virtual machine identifiers: the tag that keeps each VM's TLB entries apart.
//!
//! Tandem uses 8-bit VMIDs (`VTCR_EL2.VS = 0`). VMID 0 is the hypervisor's own and never given
//! to a VM.
//!
//! The reuse rule: once a VMID has been in `VTTBR_EL2`, the TLBs may hold entries tagged with
//! it (hardware may walk and cache speculatively, so "the VM never touched that page" proves
//! nothing). A freed VMID therefore goes into quarantine, and [`VmidAllocator::free`] hands
//! back a [`NeedsTlbInvalidate`] token. Only after the hypervisor has run
//! `TLBI VMALLS12E1IS` with that VMID in `VTTBR_EL2`, then `DSB ISH`, does it give the token
//! to [`VmidAllocator::invalidated`], which makes the VMID available again. Dropping the
//! token instead keeps the VMID out of use forever, which is safe.

use core::fmt;

/// An 8-bit VMID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u8);

impl Vmid {
    /// The hypervisor's own VMID, never allocated to a VM.
    pub const HYPERVISOR: Self = Self(0);

    /// The VMID with value `raw`.
    pub const fn new(raw: u8) -> Self {
        Self(raw)
    }

    /// The VMID as a number, for `VTTBR_EL2.VMID` (bits \[55:48\]).
    pub const fn raw(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VMID {}", self.0)
    }
}

/// Why a VMID operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmidError {
    /// All 255 VM VMIDs are allocated or waiting for TLB invalidation.
    Exhausted {
        /// How many of them are freed but still wait for [`VmidAllocator::invalidated`].
        awaiting_invalidate: usize,
    },
    /// The VMID freed is not currently allocated (double free, or VMID 0).
    NotAllocated(Vmid),
}

impl fmt::Display for VmidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted {
                awaiting_invalidate,
            } => write!(
                f,
                "no VMID left ({awaiting_invalidate} freed but awaiting TLB invalidation)"
            ),
            Self::NotAllocated(vmid) => write!(f, "{vmid} is not allocated"),
        }
    }
}

/// Proof that a freed VMID must have its TLB entries invalidated before it is reused. Hand it
/// to [`VmidAllocator::invalidated`] after `TLBI VMALLS12E1IS; DSB ISH` for [`vmid`](Self::vmid).
#[must_use = "the VMID stays unusable until its TLB entries are invalidated and the token returned"]
#[derive(Debug, PartialEq, Eq)]
pub struct NeedsTlbInvalidate(Vmid);

impl NeedsTlbInvalidate {
    /// The VMID whose TLB entries must be invalidated.
    pub fn vmid(&self) -> Vmid {
        self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Allocated,
    AwaitingInvalidate,
}

/// Hands out VMIDs 1..=255, next-fit so a freed VMID is reused as late as possible.
#[derive(Clone, Debug)]
pub struct VmidAllocator {
    states: [State; 256],
    next: u8,
}

impl VmidAllocator {
    /// An allocator with every VM VMID free.
    pub const fn new() -> Self {
        let mut states = [State::Free; 256];
        states[0] = State::Allocated;
        Self { states, next: 1 }
    }

    fn state(&self, vmid: Vmid) -> State {
        self.states[usize::from(vmid.0)]
    }

    fn set(&mut self, vmid: Vmid, state: State) {
        self.states[usize::from(vmid.0)] = state;
    }

    /// Allocates a free VMID.
    pub fn allocate(&mut self) -> Result<Vmid, VmidError> {
        let mut candidate = self.next;
        for _ in 0..=u8::MAX {
            let vmid = Vmid(candidate);
            candidate = candidate.wrapping_add(1);
            if self.state(vmid) == State::Free {
                self.set(vmid, State::Allocated);
                self.next = candidate;
                return Ok(vmid);
            }
        }
        Err(VmidError::Exhausted {
            awaiting_invalidate: self.count(State::AwaitingInvalidate),
        })
    }

    /// Frees `vmid`. It is not reused until the returned token comes back through
    /// [`invalidated`](Self::invalidated).
    pub fn free(&mut self, vmid: Vmid) -> Result<NeedsTlbInvalidate, VmidError> {
        if vmid == Vmid::HYPERVISOR || self.state(vmid) != State::Allocated {
            return Err(VmidError::NotAllocated(vmid));
        }
        self.set(vmid, State::AwaitingInvalidate);
        Ok(NeedsTlbInvalidate(vmid))
    }

    /// Records that the TLB entries of the token's VMID have been invalidated, making it
    /// available again.
    pub fn invalidated(&mut self, token: NeedsTlbInvalidate) {
        self.set(token.0, State::Free);
    }

    /// Number of VMIDs [`allocate`](Self::allocate) can still hand out.
    pub fn available(&self) -> usize {
        self.count(State::Free)
    }

    fn count(&self, state: State) -> usize {
        self.states.iter().filter(|&&s| s == state).count()
    }
}

impl Default for VmidAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_255_then_exhausts() {
        let mut a = VmidAllocator::new();
        assert_eq!(a.available(), 255);
        let mut seen = [false; 256];
        for _ in 0..255 {
            let v = a.allocate().expect("free VMID");
            assert_ne!(v, Vmid::HYPERVISOR);
            assert!(!seen[usize::from(v.raw())]);
            seen[usize::from(v.raw())] = true;
        }
        assert_eq!(
            a.allocate(),
            Err(VmidError::Exhausted {
                awaiting_invalidate: 0
            })
        );
    }

    #[test]
    fn freed_vmid_waits_for_invalidation() {
        let mut a = VmidAllocator::new();
        let vmids: Vec<Vmid> = (0..255).map(|_| a.allocate().expect("free")).collect();
        let token = a.free(vmids[7]).expect("allocated");
        assert_eq!(token.vmid(), vmids[7]);
        assert_eq!(
            a.allocate(),
            Err(VmidError::Exhausted {
                awaiting_invalidate: 1
            })
        );
        a.invalidated(token);
        assert_eq!(a.allocate(), Ok(vmids[7]));
    }

    #[test]
    fn double_free_and_hypervisor_vmid_refused() {
        let mut a = VmidAllocator::new();
        let v = a.allocate().expect("free");
        let token = a.free(v).expect("allocated");
        assert_eq!(a.free(v), Err(VmidError::NotAllocated(v)));
        a.invalidated(token);
        assert_eq!(a.free(v), Err(VmidError::NotAllocated(v)));
        assert_eq!(
            a.free(Vmid::HYPERVISOR),
            Err(VmidError::NotAllocated(Vmid::HYPERVISOR))
        );
    }

    #[test]
    fn next_fit_delays_reuse() {
        let mut a = VmidAllocator::new();
        let first = a.allocate().expect("free");
        let token = a.free(first).expect("allocated");
        a.invalidated(token);
        assert_ne!(a.allocate().expect("free"), first);
    }
}
