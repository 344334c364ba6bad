//! The guest heap: a buddy allocator over a fixed area of the image, for the `platform`
//! crate's device-tree parser and for guests that want `alloc`.
//!
//! Each guest sizes its own area ([`crate::Guest::HEAP_SIZE`]): [`crate::guest!`] defines
//! it as a static in the image's `.heap` section, so a guest that needs more heap makes
//! only its own image larger.

use buddy_system_allocator::LockedHeap;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Bytes of heap a guest has unless it asks for more.
pub const DEFAULT_HEAP_SIZE: usize = 1 << 20;

/// A guest's heap area, `N` bytes. Its bytes are never reachable from Rust: the only use
/// of it is to be handed to the allocator, once, by [`crate::run`].
#[repr(C, align(4096))]
pub struct HeapArea<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the bytes are never reached through the `HeapArea` itself; once handed over,
// only the allocator (behind its lock) hands out parts of them.
unsafe impl<const N: usize> Sync for HeapArea<N> {}

impl<const N: usize> HeapArea<N> {
    /// An area for the `.heap` section (not loaded, so never really zeroed). For
    /// [`crate::guest!`].
    #[doc(hidden)]
    pub const fn new() -> Self {
        HeapArea(UnsafeCell::new([0; N]))
    }
}

#[global_allocator]
static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

/// Whether an area was handed to the allocator.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Hands `area` to the allocator. Only the first call does anything: the boot vCPU makes
/// it, before the guest's `main` allocates.
pub(crate) fn init<const N: usize>(area: &'static HeapArea<N>) {
    if HANDED_OVER.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: `area` is a static of N bytes whose contents nothing reaches but the
    // allocator (its field is private and never borrowed), and this runs once.
    unsafe { ALLOCATOR.lock().init(area.0.get() as usize, N) };
}
