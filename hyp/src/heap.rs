//! The EL2 heap: a buddy allocator over the `.heap` part of the image, which belongs to
//! EL2 like the rest of the image and so can never be given to a guest.

use buddy_system_allocator::LockedHeap;

use crate::mm::Region;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the heap region to the allocator. Boot CPU only, once, with the MMU on.
///
/// # Safety
/// `region` must be mapped read-write, unused by anything else, and handed over once.
pub unsafe fn init(region: Region) {
    // SAFETY: the caller guarantees the region is ours alone and mapped.
    unsafe {
        HEAP.lock()
            .init(region.start as usize, region.len() as usize)
    };
}

/// Bytes the heap has handed out and not yet taken back.
pub fn used() -> usize {
    HEAP.lock().stats_alloc_actual()
}
