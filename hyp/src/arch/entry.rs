//! The arm64 Image header, the entry code of every CPU and the EL2 exception vectors.
//!
//! The image is linked at 0 as a PIE. The boot CPU's entry applies the R_AARCH64_RELATIVE
//! relocations for the address it was loaded at, zeroes .bss, takes the boot stack and
//! calls Rust with the MMU still off. Secondary CPUs arrive later, turn the MMU on with the
//! boot CPU's tables (VA == PA), take their own stack and call Rust.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::mem::offset_of;

use super::trap::{el2_exception, TrapFrame};
use crate::mm::pagetable::{Table, PAGE_SIZE};

/// The most CPUs one image supports.
pub const MAX_CPUS: usize = 16;
/// log2 of a CPU's stack size.
pub const STACK_SHIFT: usize = 15;
/// Stack of each CPU, not counting its guard.
pub const STACK_SIZE: usize = 1 << STACK_SHIFT;
/// A stack slot: an unmapped guard as large as the stack, then the stack. Slots are
/// aligned to their size, so bit STACK_SHIFT of SP is 1 inside a stack and 0 in its
/// guard: the vectors test that bit to catch an overflow before using the stack.
pub const STACK_SLOT: usize = 2 * STACK_SIZE;
/// Stack used to report an overflow, one page per CPU.
const EMERGENCY_STACK: usize = PAGE_SIZE as usize;
/// Tables available to the EL2 stage-1 mapping.
pub const PAGETABLE_POOL: usize = 48;
/// The EL2 heap: the `Platform`, the VMs' stage-2 tables, virtual GICs and device models,
/// the SMMU's tables and queues. The default layout (Linux and the secure guest, vsock,
/// shared memory) uses 84 KiB of it, 128 KiB with the SMMU and a PCI bridge; 2 MiB leaves room for
/// VMs mapped with 4 KiB pages (each GiB of those takes 2 MiB of tables, so such a VM
/// needs a larger heap) while EL2 as a whole stays under 4 MiB.
pub const HEAP_SIZE: usize = 2 * 1024 * 1024;

/// Image header flags: little-endian, 4 KiB pages, may be placed anywhere in memory.
const IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);
const R_AARCH64_RELATIVE: u64 = 1027;

/// Stacks are aligned to their slot size (see `STACK_SLOT`).
#[repr(C, align(65536))]
pub struct StackSlots(pub [[u8; STACK_SLOT]; MAX_CPUS + 1]);

const _: () = assert!(core::mem::align_of::<StackSlots>() == STACK_SLOT);

/// Memory that firmware placed nothing in and that no Rust reference ever covers whole:
/// stacks, table pool and heap are handed out as raw addresses.
#[repr(C, align(4096))]
pub struct Reserved<T>(UnsafeCell<T>);

// SAFETY: the contents are only reached through raw pointers by the code that owns each
// part (one stack per CPU, the table pool and heap handed over once by the boot CPU).
unsafe impl<T> Sync for Reserved<T> {}

impl<T> Reserved<T> {
    /// Address of the area.
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }

    /// Raw pointer to the area.
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// One stack slot per CPU index, plus the boot CPU's own slot at the end (it boots before
/// it knows its index).
#[unsafe(link_section = ".stacks")]
#[unsafe(no_mangle)]
pub static STACKS: Reserved<StackSlots> =
    Reserved(UnsafeCell::new(StackSlots([[0; STACK_SLOT]; MAX_CPUS + 1])));

/// Where a CPU whose stack overflowed reports it from.
pub static EMERGENCY_STACKS: Reserved<[[u8; EMERGENCY_STACK]; MAX_CPUS]> =
    Reserved(UnsafeCell::new([[0; EMERGENCY_STACK]; MAX_CPUS]));

/// Tables of the EL2 stage-1 mapping.
#[unsafe(link_section = ".pagetables")]
pub static PAGETABLES: Reserved<[Table; PAGETABLE_POOL]> =
    Reserved(UnsafeCell::new([[0; 512]; PAGETABLE_POOL]));

/// Heap memory, handed to the allocator once the MMU is on.
#[unsafe(link_section = ".heap")]
pub static HEAP: Reserved<[u8; HEAP_SIZE]> = Reserved(UnsafeCell::new([0; HEAP_SIZE]));

/// What a secondary CPU needs before it can run Rust: the boot CPU's MMU settings and,
/// for spin-table starts, which CPU index is being released. Written by the boot CPU and
/// cleaned to the point of coherency, since secondaries read it with the MMU off.
#[repr(C)]
pub struct SecondaryBoot {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr: u64,
    pub sctlr: u64,
    pub hcr: u64,
    /// CPU index for a spin-table release (PSCI passes it as the context ID instead).
    pub spin_index: u64,
}

/// The one `SecondaryBoot`, read by the secondary entry code.
#[unsafe(no_mangle)]
pub static SECONDARY_BOOT: Reserved<SecondaryBoot> = Reserved(UnsafeCell::new(SecondaryBoot {
    mair: 0,
    tcr: 0,
    ttbr: 0,
    sctlr: 0,
    hcr: 0,
    spin_index: 0,
}));

unsafe extern "C" {
    /// Entry of a CPU started by PSCI CPU_ON (context ID = CPU index in x0).
    pub fn secondary_entry_psci() -> !;
    /// Entry of a CPU released from a spin-table (index in `SECONDARY_BOOT.spin_index`).
    pub fn secondary_entry_spin() -> !;
}

global_asm!(
    ".section .text.head, \"ax\"",
    ".global _start",
    "_start:",
    // The arm64 Image header (Documentation/arch/arm64/booting.rst): two instruction
    // words, text_offset, image_size, flags, three reserved words, magic, PE offset.
    "    b       0f",
    "    .long   0",
    "    .quad   0",
    "    .quad   __image_size",
    "    .quad   {flags}",
    "    .quad   0, 0, 0",
    "    .ascii  \"ARM\\x64\"",
    "    .long   0",
    "0:",
    // x19 = DTB, x20 = counter at entry, x21 = load address.
    "    mov     x19, x0",
    "    mrs     x20, cntpct_el0",
    "    adr     x21, _start",
    // Apply the relative relocations: *(base + offset) = base + addend.
    "    adrp    x1, __rela_start",
    "    add     x1, x1, :lo12:__rela_start",
    "    adrp    x2, __rela_end",
    "    add     x2, x2, :lo12:__rela_end",
    "1:  cmp     x1, x2",
    "    b.hs    3f",
    "    ldp     x3, x4, [x1], #16",
    "    ldr     x5, [x1], #8",
    "    cmp     x4, #{rel}",
    "    b.ne    2f",
    "    add     x5, x5, x21",
    "    str     x5, [x21, x3]",
    "    b       1b",
    // Any other relocation type means a broken build: nothing can be printed yet.
    "2:  wfe",
    "    b       2b",
    // Zero .bss (16-byte aligned by the linker script).
    "3:  adrp    x1, __bss_start",
    "    add     x1, x1, :lo12:__bss_start",
    "    adrp    x2, __bss_end",
    "    add     x2, x2, :lo12:__bss_end",
    "4:  cmp     x1, x2",
    "    b.hs    5f",
    "    stp     xzr, xzr, [x1], #16",
    "    b       4b",
    // The boot stack: the last slot of STACKS.
    "5:  adrp    x1, {stacks}",
    "    add     x1, x1, :lo12:{stacks}",
    "    mov     x2, #{boot_stack_top_pages}",
    "    add     x1, x1, x2, lsl #12",
    // The top of every stack is kept for the CPU's trap frame (vcpu::enter).
    "    sub     sp, x1, #{frame_size}",
    "    mov     x0, x19",
    "    mov     x1, x20",
    "    mov     x2, x21",
    "    bl      {primary}",
    "6:  wfe",
    "    b       6b",
    flags = const IMAGE_FLAGS,
    rel = const R_AARCH64_RELATIVE,
    stacks = sym STACKS,
    boot_stack_top_pages = const ((MAX_CPUS + 1) * STACK_SLOT) / PAGE_SIZE as usize,
    primary = sym crate::boot::primary_main,
    frame_size = const core::mem::size_of::<TrapFrame>(),
);

global_asm!(
    ".section .text.boot, \"ax\"",
    ".global secondary_entry_spin",
    "secondary_entry_spin:",
    "    adrp    x1, {boot}",
    "    add     x1, x1, :lo12:{boot}",
    "    ldr     x0, [x1, #{spin_index}]",
    ".global secondary_entry_psci",
    "secondary_entry_psci:",
    // x19 = CPU index, checked against the slots before it is used.
    "    mov     x19, x0",
    "    cmp     x19, #{max_cpus}",
    "    b.hs    9f",
    // EL2 configuration and MMU exactly as the boot CPU has them.
    "    adrp    x1, {boot}",
    "    add     x1, x1, :lo12:{boot}",
    "    ldr     x2, [x1, #{hcr}]",
    "    msr     hcr_el2, x2",
    "    ldr     x2, [x1, #{mair}]",
    "    msr     mair_el2, x2",
    "    ldr     x2, [x1, #{tcr}]",
    "    msr     tcr_el2, x2",
    "    ldr     x2, [x1, #{ttbr}]",
    "    msr     ttbr0_el2, x2",
    "    isb",
    "    tlbi    alle2",
    "    ic      iallu",
    "    dsb     nsh",
    "    isb",
    "    ldr     x2, [x1, #{sctlr}]",
    "    msr     sctlr_el2, x2",
    "    isb",
    "    adrp    x2, {vectors}",
    "    add     x2, x2, :lo12:{vectors}",
    "    msr     vbar_el2, x2",
    "    msr     tpidr_el2, x19",
    // sp = STACKS + (index + 1) * STACK_SLOT
    "    adrp    x1, {stacks}",
    "    add     x1, x1, :lo12:{stacks}",
    "    add     x2, x19, #1",
    "    mov     x3, #{slot_pages}",
    "    mul     x2, x2, x3",
    "    add     x1, x1, x2, lsl #12",
    "    sub     sp, x1, #{frame_size}",
    "    mov     x0, x19",
    "    bl      {secondary}",
    "9:  wfe",
    "    b       9b",
    boot = sym SECONDARY_BOOT,
    spin_index = const offset_of!(SecondaryBoot, spin_index),
    hcr = const offset_of!(SecondaryBoot, hcr),
    mair = const offset_of!(SecondaryBoot, mair),
    tcr = const offset_of!(SecondaryBoot, tcr),
    ttbr = const offset_of!(SecondaryBoot, ttbr),
    sctlr = const offset_of!(SecondaryBoot, sctlr),
    max_cpus = const MAX_CPUS,
    vectors = sym el2_vectors,
    stacks = sym STACKS,
    slot_pages = const STACK_SLOT / PAGE_SIZE as usize,
    secondary = sym crate::boot::secondary_main,
    frame_size = const core::mem::size_of::<TrapFrame>(),
);

unsafe extern "C" {
    /// The 16-entry EL2 vector table (VBAR_EL2).
    pub fn el2_vectors();
}

/// One vector entry: make room for the frame; if that moved SP into a stack guard, go
/// report the overflow on the emergency stack; else free two registers, record the slot.
/// The test swaps SP and x0 through additions, so it needs no free register.
macro_rules! vector_entry {
    ($slot:literal) => {
        concat!(
            ".balign 0x80\n",
            "    sub     sp, sp, #{frame_size}\n",
            "    add     sp, sp, x0\n",
            "    sub     x0, sp, x0\n",
            "    tbz     x0, #{stack_shift}, el2_stack_overflow_entry\n",
            "    sub     x0, sp, x0\n",
            "    sub     sp, sp, x0\n",
            "    stp     x0, x1, [sp, #0]\n",
            "    mov     x0, #",
            $slot,
            "\n",
            "    b       el2_trap_common\n"
        )
    };
}

global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 0x800",
    ".global el2_vectors",
    "el2_vectors:",
    vector_entry!(0),
    vector_entry!(1),
    vector_entry!(2),
    vector_entry!(3),
    vector_entry!(4),
    vector_entry!(5),
    vector_entry!(6),
    vector_entry!(7),
    vector_entry!(8),
    vector_entry!(9),
    vector_entry!(10),
    vector_entry!(11),
    vector_entry!(12),
    vector_entry!(13),
    vector_entry!(14),
    vector_entry!(15),
    // SP (in x0) is in a guard: take this CPU's emergency stack and report.
    "el2_stack_overflow_entry:",
    "    mrs     x1, tpidr_el2",
    "    and     x1, x1, #{cpu_mask}",
    "    add     x1, x1, #1",
    "    adrp    x2, {emergency}",
    "    add     x2, x2, :lo12:{emergency}",
    "    add     x2, x2, x1, lsl #12",
    "    mov     sp, x2",
    "    mrs     x1, elr_el2",
    "    mrs     x2, far_el2",
    "    bl      {overflow}",
    "el2_trap_common:",
    // Save the remaining general-purpose registers and the exception registers.
    "    stp     x2, x3, [sp, #16]",
    "    stp     x4, x5, [sp, #32]",
    "    stp     x6, x7, [sp, #48]",
    "    stp     x8, x9, [sp, #64]",
    "    stp     x10, x11, [sp, #80]",
    "    stp     x12, x13, [sp, #96]",
    "    stp     x14, x15, [sp, #112]",
    "    stp     x16, x17, [sp, #128]",
    "    stp     x18, x19, [sp, #144]",
    "    stp     x20, x21, [sp, #160]",
    "    stp     x22, x23, [sp, #176]",
    "    stp     x24, x25, [sp, #192]",
    "    stp     x26, x27, [sp, #208]",
    "    stp     x28, x29, [sp, #224]",
    "    str     x30, [sp, #240]",
    "    mrs     x2, elr_el2",
    "    mrs     x3, spsr_el2",
    "    stp     x2, x3, [sp, #{elr}]",
    "    mrs     x2, esr_el2",
    "    mrs     x3, far_el2",
    "    stp     x2, x3, [sp, #{esr}]",
    // el2_exception(slot, frame)
    "    mov     x1, sp",
    "    bl      {handler}",
    // Restore what the handler may have changed and return. vCPUs also enter their guest
    // here, with SP at a frame they filled (vcpu::enter).
    ".global el2_return_to_frame",
    "el2_return_to_frame:",
    "    ldp     x2, x3, [sp, #{elr}]",
    "    msr     elr_el2, x2",
    "    msr     spsr_el2, x3",
    "    ldp     x0, x1, [sp, #0]",
    "    ldp     x2, x3, [sp, #16]",
    "    ldp     x4, x5, [sp, #32]",
    "    ldp     x6, x7, [sp, #48]",
    "    ldp     x8, x9, [sp, #64]",
    "    ldp     x10, x11, [sp, #80]",
    "    ldp     x12, x13, [sp, #96]",
    "    ldp     x14, x15, [sp, #112]",
    "    ldp     x16, x17, [sp, #128]",
    "    ldp     x18, x19, [sp, #144]",
    "    ldp     x20, x21, [sp, #160]",
    "    ldp     x22, x23, [sp, #176]",
    "    ldp     x24, x25, [sp, #192]",
    "    ldp     x26, x27, [sp, #208]",
    "    ldp     x28, x29, [sp, #224]",
    "    ldr     x30, [sp, #240]",
    "    add     sp, sp, #{frame_size}",
    "    eret",
    frame_size = const core::mem::size_of::<TrapFrame>(),
    elr = const offset_of!(TrapFrame, elr),
    esr = const offset_of!(TrapFrame, esr),
    handler = sym el2_exception,
    stack_shift = const STACK_SHIFT,
    cpu_mask = const MAX_CPUS - 1,
    emergency = sym EMERGENCY_STACKS,
    overflow = sym super::trap::el2_stack_overflow,
);

const _: () = assert!(MAX_CPUS.is_power_of_two() && EMERGENCY_STACK == 4096);
