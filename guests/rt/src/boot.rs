//! From the entry code to the guest's `main`: the DTB, the console, the heap, the verdict.

use core::fmt;

use aarch64_cpu::registers::{CurrentEL, Readable, MPIDR_EL1};

use crate::heap::{self, HeapArea};
use crate::{console, psci, Guest};

/// The largest DTB the arm64 boot protocol allows.
const MAX_DTB_SIZE: usize = 2 << 20;

/// What a guest learns at boot.
#[derive(Debug, Clone, Copy)]
pub struct Boot {
    dtb: &'static [u8],
    load_address: u64,
}

impl Boot {
    /// The device tree the loader passed (bounded by its header's `totalsize`).
    pub fn dtb(&self) -> &'static [u8] {
        self.dtb
    }

    /// Where the image was loaded (the address of its first byte).
    pub fn load_address(&self) -> u64 {
        self.load_address
    }

    /// Where the image ends: the first byte after it, its .bss, stacks and heap included
    /// (`image_size` of its header). The image occupies `load_address()..image_end()`.
    pub fn image_end(&self) -> u64 {
        (&raw const __image_end) as u64
    }

    /// The board as the device tree describes it.
    pub fn platform(&self) -> Result<platform::Platform, platform::DtError> {
        platform::Platform::parse(self.dtb)
    }
}

/// The boot vCPU's first Rust code, called by `_start` with the DTB address from x0.
pub(crate) extern "C" fn start(dtb_addr: usize, load_address: u64) -> ! {
    let dtb = dtb_slice(dtb_addr);
    console::init(dtb);
    // SAFETY: `__tandem_guest_main` is defined by the `guest!` macro, whose expansion has
    // exactly this signature; the linker refuses a guest that lacks it.
    unsafe { __tandem_guest_main(&Boot { dtb, load_address }) }
}

unsafe extern "C" {
    /// The first byte after the image, from the linker script (`linker/guest.ld`).
    static __image_end: u8;
}

unsafe extern "Rust" {
    /// The guest's entry, defined by [`crate::guest!`].
    fn __tandem_guest_main(boot: &Boot) -> !;
}

/// The device tree at `addr`, or an empty slice when there is none (the console then
/// stays silent and `Boot::platform` says why).
fn dtb_slice(addr: usize) -> &'static [u8] {
    if addr == 0 || !addr.is_multiple_of(8) {
        return &[];
    }
    // SAFETY: the boot protocol puts the DTB at x0, 8-byte aligned, in memory the image
    // does not overlap; its 40-byte header is read first to learn its size.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
    let size = platform::blob_size(header).unwrap_or(0).min(MAX_DTB_SIZE);
    // SAFETY: as above; `size` is the blob's own `totalsize`, at most the protocol's 2 MiB,
    // and nothing in the guest writes to the DTB.
    unsafe { core::slice::from_raw_parts(addr as *const u8, size) }
}

/// Runs guest `G` on the boot vCPU with `heap` as its heap, and reports its verdict. Used
/// by [`crate::guest!`].
pub fn run<G: Guest, const N: usize>(boot: &Boot, heap: &'static HeapArea<N>) -> ! {
    heap::init(heap);
    crate::set_name(G::NAME);
    if CurrentEL.read(CurrentEL::EL) != 1 {
        crate::fail(format_args!(
            "entered at EL{}, guests run at EL1",
            CurrentEL.read(CurrentEL::EL)
        ));
    }
    match G::main(boot) {
        Ok(()) => crate::pass(),
        Err(failure) => crate::fail(format_args!("{failure}")),
    }
}

/// This vCPU's MPIDR_EL1 affinity fields (Aff3, Aff2, Aff1, Aff0), as CPU_ON wants them.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Why a guest's test failed, printed after `TEST FAIL <name>: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(alloc::string::String);

impl From<alloc::string::String> for Failure {
    fn from(message: alloc::string::String) -> Self {
        Failure(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Powers off; if even that fails, says so and waits forever.
pub(crate) fn power_off() -> ! {
    let error = psci::system_off();
    crate::println!("SYSTEM_OFF failed: {error:?}");
    loop {
        aarch64_cpu::asm::wfi();
    }
}
