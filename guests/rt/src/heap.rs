//! The guest heap: a buddy allocator over a fixed area of the image, for the `platform`
//! crate's device-tree parser and for guests that want `alloc`.

use buddy_system_allocator::LockedHeap;
use core::cell::UnsafeCell;

use crate::entry::Reserved;

/// Bytes of heap every guest has.
pub const HEAP_SIZE: usize = 1 << 20;

#[unsafe(link_section = ".heap")]
static HEAP: Reserved<[u8; HEAP_SIZE]> = Reserved(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

/// Hands the heap area to the allocator. Called once, by the boot vCPU before `main`.
pub(crate) fn init() {
    // SAFETY: HEAP is a static area of HEAP_SIZE bytes that nothing else references, and
    // this runs once, before anything allocates.
    unsafe { ALLOCATOR.lock().init(HEAP.addr(), HEAP_SIZE) };
}
