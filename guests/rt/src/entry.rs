//! The arm64 Image header, the entry code of the boot vCPU and of secondaries, the stacks.
//!
//! A guest is linked at 0 as a PIE and booted like Linux: entered at its first byte at EL1
//! with the MMU off and x0 holding the DTB address, at any 2 MiB-aligned address. The boot
//! vCPU applies the R_AARCH64_RELATIVE relocations for that address, zeroes .bss, takes
//! stack 0, installs the EL1 vectors and calls [`crate::boot::start`]. A secondary started
//! by [`crate::smp::start_cpu`] arrives at `secondary_entry` with its CPU index (1 to
//! [`MAX_CPUS`] - 1) as the PSCI context ID and takes the stack of that index.
//!
//! The MMU stays off for the guest's whole life: every data access is Device-nGnRnE, so
//! nothing needs cache maintenance between vCPUs, and the target's `+strict-align` keeps
//! the compiler from emitting the unaligned accesses Device memory forbids.

use core::arch::global_asm;
use core::cell::UnsafeCell;

/// The most vCPUs a guest runs on: the boot vCPU plus up to 8 started with PSCI CPU_ON.
pub const MAX_CPUS: usize = 9;
/// log2 of a vCPU's stack size.
const STACK_SHIFT: usize = 14;
/// Each vCPU's stack.
pub const STACK_SIZE: usize = 1 << STACK_SHIFT;

/// Image header flags: little-endian (bit 0 clear), 4 KiB pages (bits 2:1 = 1), may be
/// placed anywhere in memory (bit 3).
const IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);
/// The only relocation type a PIE linked at 0 has (ELF for the Arm 64-bit Architecture).
const R_AARCH64_RELATIVE: u64 = 1027;

/// Memory reached only through raw pointers, never through a Rust reference.
#[repr(C, align(4096))]
pub struct Reserved<T>(pub(crate) UnsafeCell<T>);

// SAFETY: the contents are only reached through raw addresses by their single user (each
// stack by its vCPU, the heap by the allocator once it is handed over).
unsafe impl<T> Sync for Reserved<T> {}

impl<T> Reserved<T> {
    /// Address of the area.
    pub fn addr(&self) -> usize {
        self.0.get() as usize
    }
}

/// The vCPUs' stacks, indexed by CPU index: stack 0 belongs to the boot vCPU.
#[unsafe(link_section = ".stacks")]
pub static STACKS: Reserved<[[u8; STACK_SIZE]; MAX_CPUS]> =
    Reserved(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

unsafe extern "C" {
    /// Where a secondary vCPU starts (PSCI CPU_ON entry point); x0 = its CPU index.
    pub fn secondary_entry() -> !;
    /// The 16-entry EL1 vector table (VBAR_EL1).
    pub fn el1_vectors();
}

global_asm!(
    ".section .text.head, \"ax\"",
    ".global _start",
    "_start:",
    // The 64-byte arm64 Image header (Linux Documentation/arch/arm64/booting.rst):
    // code0 jumps over it; then code1, text_offset, image_size, flags, three reserved
    // words, the magic and a reserved PE header offset.
    "    b       10f",
    "    .long   0",
    "    .quad   0",
    "    .quad   __image_size",
    "    .quad   {flags}",
    "    .quad   0, 0, 0",
    "    .ascii  \"ARM\\x64\"",
    "    .long   0",
    // Keep the DTB in x19 and the load address in x20; no interrupts until Rust asks.
    "10: msr     daifset, #0xf",
    "    mov     x19, x0",
    "    adr     x20, _start",
    // Relocate: for each Elf64_Rela {offset, info, addend}, *(base + offset) = base + addend.
    "    adrp    x1, __rela_start",
    "    add     x1, x1, :lo12:__rela_start",
    "    adrp    x2, __rela_end",
    "    add     x2, x2, :lo12:__rela_end",
    "11: cmp     x1, x2",
    "    b.hs    13f",
    "    ldp     x3, x4, [x1], #16",
    "    ldr     x5, [x1], #8",
    "    cmp     x4, #{relative}",
    "    b.ne    12f",
    "    add     x5, x5, x20",
    "    str     x5, [x20, x3]",
    "    b       11b",
    // Another relocation type is a broken build, and there is no console yet: stop.
    "12: wfi",
    "    b       12b",
    // Relocations may have touched code (-znotext): discard stale instructions.
    "13: dsb     sy",
    "    ic      iallu",
    "    dsb     sy",
    "    isb",
    // Zero .bss, 16 bytes at a time (the linker script aligns both ends).
    "    adrp    x1, __bss_start",
    "    add     x1, x1, :lo12:__bss_start",
    "    adrp    x2, __bss_end",
    "    add     x2, x2, :lo12:__bss_end",
    "14: cmp     x1, x2",
    "    b.hs    15f",
    "    stp     xzr, xzr, [x1], #16",
    "    b       14b",
    // CPU index 0, its stack and the vectors, then Rust: start(dtb, load address).
    "15: mov     x0, #0",
    "    bl      {cpu_setup}",
    "    mov     x0, x19",
    "    mov     x1, x20",
    "    bl      {start}",
    "16: wfi",
    "    b       16b",
    flags = const IMAGE_FLAGS,
    relative = const R_AARCH64_RELATIVE,
    cpu_setup = sym cpu_setup,
    start = sym crate::boot::start,
);

unsafe extern "C" {
    /// Takes the stack of CPU index x0, installs the vectors, records the index in
    /// TPIDR_EL1. Called with `bl`; returns on the new stack.
    fn cpu_setup();
}

global_asm!(
    ".section .text.cpu_setup, \"ax\"",
    ".global {cpu_setup}",
    "{cpu_setup}:",
    // sp = STACKS + (index + 1) * STACK_SIZE: stacks grow down from the end of their slot.
    "    adrp    x1, {stacks}",
    "    add     x1, x1, :lo12:{stacks}",
    "    add     x2, x0, #1",
    "    add     x1, x1, x2, lsl #{stack_shift}",
    "    mov     sp, x1",
    "    msr     tpidr_el1, x0",
    "    adrp    x1, {vectors}",
    "    add     x1, x1, :lo12:{vectors}",
    "    msr     vbar_el1, x1",
    "    isb",
    "    ret",
    cpu_setup = sym cpu_setup,
    stacks = sym STACKS,
    stack_shift = const STACK_SHIFT,
    vectors = sym el1_vectors,
);

global_asm!(
    ".section .text.secondary, \"ax\"",
    ".global secondary_entry",
    "secondary_entry:",
    "    msr     daifset, #0xf",
    // Only indices 1..MAX_CPUS have a stack; anything else stops here.
    "    cbz     x0, 1f",
    "    cmp     x0, #{max_cpus}",
    "    b.hs    1f",
    "    mov     x19, x0",
    "    bl      {cpu_setup}",
    "    mov     x0, x19",
    "    bl      {secondary}",
    "1:  wfi",
    "    b       1b",
    max_cpus = const MAX_CPUS,
    cpu_setup = sym cpu_setup,
    secondary = sym crate::smp::secondary_main,
);

const _: () = assert!(STACK_SIZE.is_multiple_of(16));
