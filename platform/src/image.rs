//! Guest image formats (arm64 Linux `Image`, ELF64 for AArch64, raw binary) and where their
//! pieces go in a VM's memory.
//!
//! [`probe`] reads only the image's headers and checks that every piece it names lies inside
//! the file; [`plan`] places the pieces in the VM's memory and checks that all of them, and
//! the entry point, lie inside it. Neither copies anything: the hypervisor carries out the
//! [`LoadPlan`]. Neither panics, whatever the bytes.

use alloc::vec::Vec;
use core::fmt;

use crate::board::MemRange;

/// Offset of the arm64 `Image` magic (`ARM\x64`), Linux `Documentation/arch/arm64/booting.rst`.
const IMAGE_MAGIC_OFFSET: usize = 56;
/// The arm64 `Image` magic.
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
/// The arm64 `Image` header length.
const IMAGE_HEADER_LEN: usize = 64;
/// `text_offset` assumed for a kernel older than 3.17 (header `image_size` is 0).
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// An `Image` is loaded at a 2 MiB-aligned base plus `text_offset`.
const IMAGE_ALIGN: u64 = 2 << 20;

/// `ELFCLASS64`.
const ELFCLASS64: u8 = 2;
/// `ELFDATA2LSB`.
const ELFDATA2LSB: u8 = 1;
/// `ET_EXEC`.
const ET_EXEC: u16 = 2;
/// `ET_DYN`.
const ET_DYN: u16 = 3;
/// `EM_AARCH64`.
const EM_AARCH64: u16 = 183;
/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `PN_XNUM`: the real program header count is elsewhere (not supported).
const PN_XNUM: u16 = 0xffff;
/// Length of an ELF64 file header.
const ELF64_EHDR_LEN: usize = 64;
/// Length of an ELF64 program header.
const ELF64_PHDR_LEN: usize = 56;

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestImage {
    /// An arm64 Linux `Image`, entered at its first byte with x0 = the DTB's address.
    LinuxImage {
        /// `text_offset`: the image goes this far above a 2 MiB-aligned base
        /// (0x80000 for a legacy header).
        text_offset: u64,
        /// `image_size`: bytes of memory the kernel needs from its load address, including
        /// its BSS; the file's length for a legacy header (which gives 0).
        image_size: u64,
        /// `flags`: bit 0 big-endian kernel, bits 1-2 page size, bit 3 placement.
        flags: u64,
        /// The header's `image_size` was 0 (a kernel older than Linux 3.17).
        legacy: bool,
    },
    /// An ELF64 AArch64 executable, loaded by physical address (`p_paddr`).
    Elf {
        /// The entry point as a physical address (`e_entry` moved from the virtual to the
        /// physical address of the segment that holds it).
        entry: u64,
        /// `PT_LOAD` segments with a non-zero `p_memsz`, in program header order.
        segments: Vec<Segment>,
    },
    /// A raw binary, loaded whole and entered at its first byte.
    Raw,
}

/// One `PT_LOAD` segment of an ELF image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// `p_paddr`: where the segment goes.
    pub paddr: u64,
    /// `p_offset`: where its bytes start in the file.
    pub offset: u64,
    /// `p_filesz`: bytes copied from the file.
    pub filesz: u64,
    /// `p_memsz`: bytes of memory; those past `filesz` are zeroed.
    pub memsz: u64,
}

/// One copy from the image file into VM memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadCopy {
    /// Offset in the image file.
    pub src_offset: u64,
    /// Guest physical address of the first byte.
    pub dst: u64,
    /// Bytes to copy.
    pub len: u64,
}

/// Where an image's pieces go in the VM and where the VM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Copies from the file, in order; their destinations never overlap.
    pub copies: Vec<LoadCopy>,
    /// Ranges to fill with zeros after the copies (ELF BSS).
    pub zero: Vec<MemRange>,
    /// Memory the image owns once loaded (for an `Image`, all of `image_size`, whose BSS the
    /// kernel clears itself). The DTB and initrd must be placed outside these ranges.
    pub footprint: Vec<MemRange>,
    /// Guest physical address of the first instruction.
    pub entry: u64,
}

/// Why an image cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Neither an arm64 `Image` nor an ELF64, and not declared raw.
    Unrecognized,
    /// The file ends inside a header.
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes the header needs.
        needed: u64,
        /// Bytes the file has.
        len: usize,
    },
    /// An ELF file of class ELFCLASS32.
    Elf32,
    /// A big-endian ELF file.
    BigEndian,
    /// An ELF file for another architecture.
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// An ELF file that is neither `ET_EXEC` nor `ET_DYN`.
    WrongType {
        /// `e_type`.
        e_type: u16,
    },
    /// An `ET_DYN` file linked at address 0: it needs relocating, which the loader does not do.
    PositionIndependent,
    /// `e_phentsize` is smaller than an ELF64 program header, or `e_phnum` is `PN_XNUM`.
    BadProgramHeaders {
        /// `e_phentsize`.
        entsize: u16,
        /// `e_phnum`.
        count: u16,
    },
    /// No `PT_LOAD` segment with a non-zero size.
    NoLoadSegments,
    /// A segment's file bytes run past the end of the file.
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// File length.
        len: usize,
    },
    /// A segment has more file bytes than memory bytes.
    FileszExceedsMemsz {
        /// Program header index.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment's memory range ends beyond 2^64.
    SegmentOverflows {
        /// Program header index.
        index: usize,
    },
    /// Two segments claim the same physical memory.
    OverlappingSegments {
        /// Program header index of one.
        first: usize,
        /// Program header index of the other.
        second: usize,
    },
    /// `e_entry` lies in no loaded segment.
    EntryOutsideSegments {
        /// `e_entry`.
        entry: u64,
    },
    /// A raw image of zero bytes.
    Empty,
    /// The image length given to [`plan`] is not the one [`probe`] saw.
    LengthMismatch {
        /// Length [`plan`] was given.
        len: usize,
    },
    /// The VM has no memory.
    NoMemory,
    /// A piece of the image does not fit in the VM's memory.
    OutsideMemory {
        /// Which piece.
        what: &'static str,
        /// Where it would go.
        range: MemRange,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unrecognized => write!(
                f,
                "not an arm64 Image (no ARM\\x64 magic at offset 56), not an ELF64 for AArch64, and not marked tandem,format = \"raw\"; pass the kernel's Image (not vmlinuz.efi or a compressed Image.gz), an ELF, or mark a bare binary raw"
            ),
            Self::Truncated { what, needed, len } => write!(
                f,
                "the file ends inside the {what} ({needed} bytes needed, {len} present); the image is truncated, load all of it"
            ),
            Self::Elf32 => write!(f, "a 32-bit ELF; guests must be ELF64 for AArch64 (build for aarch64)"),
            Self::BigEndian => write!(f, "a big-endian ELF; build the guest little-endian (aarch64, not aarch64_be)"),
            Self::WrongMachine { machine } => write!(
                f,
                "an ELF for machine {machine}, not AArch64 (183); build the guest for aarch64"
            ),
            Self::WrongType { e_type } => write!(
                f,
                "ELF type {e_type} is not an executable (ET_EXEC) or a fixed-address ET_DYN; link the guest as an executable"
            ),
            Self::PositionIndependent => write!(
                f,
                "a position-independent ELF linked at address 0; link it at its load address (e.g. -no-pie and a linker script)"
            ),
            Self::BadProgramHeaders { entsize, count } => write!(
                f,
                "ELF program headers of {entsize} bytes each, {count} of them, cannot be read; relink the guest with a standard linker"
            ),
            Self::NoLoadSegments => write!(f, "the ELF has no loadable (PT_LOAD) segment; link the guest's code into one"),
            Self::SegmentOutsideFile { index, offset, filesz, len } => write!(
                f,
                "ELF segment {index} (file bytes {offset:#x}+{filesz:#x}) runs past the end of the {len:#x}-byte file; the file is truncated"
            ),
            Self::FileszExceedsMemsz { index, filesz, memsz } => write!(
                f,
                "ELF segment {index} has more file bytes ({filesz:#x}) than memory ({memsz:#x}); the file is corrupt, relink it"
            ),
            Self::SegmentOverflows { index } => write!(
                f,
                "ELF segment {index} ends beyond the 64-bit address space; the file is corrupt, relink it"
            ),
            Self::OverlappingSegments { first, second } => write!(
                f,
                "ELF segments {first} and {second} overlap in physical memory; fix the linker script"
            ),
            Self::EntryOutsideSegments { entry } => write!(
                f,
                "the ELF entry point {entry:#x} is in no loadable segment; fix the linker script's ENTRY"
            ),
            Self::Empty => write!(f, "the raw image is empty; load the guest binary"),
            Self::LengthMismatch { len } => write!(
                f,
                "plan was given an image of {len} bytes, not the one that was probed; probe and plan the same bytes"
            ),
            Self::NoMemory => write!(f, "the VM has no memory to load the image into; give the VM a memory range"),
            Self::OutsideMemory { what, range } => write!(
                f,
                "the {what} ({:#x}+{:#x}) does not fit inside one of the VM's memory ranges; give the VM more memory there{}",
                range.base,
                range.size,
                if *what == "raw image" { ", or change tandem,load-address" } else { "" }
            ),
        }
    }
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads the format of a guest image from its headers.
///
/// `raw` is the module's `tandem,format = "raw"`: the image is then taken as a raw binary,
/// whatever its bytes look like. Otherwise it must be an arm64 `Image` or an ELF64 for
/// AArch64.
pub fn probe(bytes: &[u8], raw: bool) -> Result<GuestImage, ImageError> {
    if raw {
        return if bytes.is_empty() {
            Err(ImageError::Empty)
        } else {
            Ok(GuestImage::Raw)
        };
    }
    if bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + IMAGE_MAGIC.len()) == Some(IMAGE_MAGIC) {
        return linux_image(bytes);
    }
    if bytes.starts_with(b"\x7fELF") {
        return elf(bytes);
    }
    Err(ImageError::Unrecognized)
}

fn linux_image(bytes: &[u8]) -> Result<GuestImage, ImageError> {
    let truncated = ImageError::Truncated {
        what: "arm64 Image header",
        needed: IMAGE_HEADER_LEN as u64,
        len: bytes.len(),
    };
    let (Some(text_offset), Some(image_size), Some(flags)) =
        (le64(bytes, 8), le64(bytes, 16), le64(bytes, 24))
    else {
        return Err(truncated);
    };
    if bytes.len() < IMAGE_HEADER_LEN {
        return Err(truncated);
    }
    Ok(if image_size == 0 {
        GuestImage::LinuxImage {
            text_offset: LEGACY_TEXT_OFFSET,
            image_size: bytes.len() as u64,
            flags: 0,
            legacy: true,
        }
    } else {
        GuestImage::LinuxImage {
            text_offset,
            image_size,
            flags,
            legacy: false,
        }
    })
}

/// A program header as read from the file.
struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn elf(bytes: &[u8]) -> Result<GuestImage, ImageError> {
    let truncated = |what, needed: u64| ImageError::Truncated {
        what,
        needed,
        len: bytes.len(),
    };
    match bytes.get(4) {
        Some(&ELFCLASS64) => {}
        Some(_) => return Err(ImageError::Elf32),
        None => return Err(truncated("ELF header", ELF64_EHDR_LEN as u64)),
    }
    match bytes.get(5) {
        Some(&ELFDATA2LSB) => {}
        Some(_) => return Err(ImageError::BigEndian),
        None => return Err(truncated("ELF header", ELF64_EHDR_LEN as u64)),
    }
    if bytes.len() < ELF64_EHDR_LEN {
        return Err(truncated("ELF header", ELF64_EHDR_LEN as u64));
    }
    let field16 = |off| le16(bytes, off).unwrap_or(0);
    let (e_type, machine) = (field16(16), field16(18));
    if machine != EM_AARCH64 {
        return Err(ImageError::WrongMachine { machine });
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ImageError::WrongType { e_type });
    }
    let entry = le64(bytes, 24).unwrap_or(0);
    let phoff = le64(bytes, 32).unwrap_or(0);
    let (entsize, count) = (field16(54), field16(56));
    if usize::from(entsize) < ELF64_PHDR_LEN || count == PN_XNUM {
        return Err(ImageError::BadProgramHeaders { entsize, count });
    }
    let table_len = u64::from(entsize) * u64::from(count);
    let table_end = phoff.saturating_add(table_len);
    if table_end > bytes.len() as u64 {
        return Err(truncated("ELF program header table", table_end));
    }

    // Every header lies inside the file (checked just above), so these reads succeed.
    let phdrs = (0..u64::from(count)).map(|i| {
        let at = phoff
            .checked_add(i * u64::from(entsize))
            .and_then(|a| usize::try_from(a).ok())
            .unwrap_or(usize::MAX);
        let f = |off: usize| le64(bytes, at.saturating_add(off)).unwrap_or(0);
        Phdr {
            kind: le32(bytes, at).unwrap_or(0),
            offset: f(8),
            vaddr: f(16),
            paddr: f(24),
            filesz: f(32),
            memsz: f(40),
        }
    });

    let mut segments: Vec<(usize, Segment)> = Vec::new();
    let mut entry_paddr = None;
    for (index, p) in phdrs.enumerate() {
        if p.kind != PT_LOAD || p.memsz == 0 {
            continue;
        }
        if p.filesz > p.memsz {
            return Err(ImageError::FileszExceedsMemsz {
                index,
                filesz: p.filesz,
                memsz: p.memsz,
            });
        }
        if p.offset
            .checked_add(p.filesz)
            .is_none_or(|end| end > bytes.len() as u64)
        {
            return Err(ImageError::SegmentOutsideFile {
                index,
                offset: p.offset,
                filesz: p.filesz,
                len: bytes.len(),
            });
        }
        if p.paddr.checked_add(p.memsz).is_none() || p.vaddr.checked_add(p.memsz).is_none() {
            return Err(ImageError::SegmentOverflows { index });
        }
        let seg = Segment {
            paddr: p.paddr,
            offset: p.offset,
            filesz: p.filesz,
            memsz: p.memsz,
        };
        if let Some((first, _)) = segments
            .iter()
            .find(|(_, s)| s.range().overlaps(&seg.range()))
        {
            return Err(ImageError::OverlappingSegments {
                first: *first,
                second: index,
            });
        }
        if entry_paddr.is_none() {
            if let Some(off) = entry.checked_sub(p.vaddr).filter(|&o| o < p.memsz) {
                entry_paddr = Some(p.paddr + off);
            }
        }
        segments.push((index, seg));
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadSegments);
    }
    if e_type == ET_DYN && segments.iter().map(|(_, s)| s.paddr).min() == Some(0) {
        return Err(ImageError::PositionIndependent);
    }
    let entry = entry_paddr.ok_or(ImageError::EntryOutsideSegments { entry })?;
    Ok(GuestImage::Elf {
        entry,
        segments: segments.into_iter().map(|(_, s)| s).collect(),
    })
}

impl Segment {
    /// The memory the segment occupies.
    pub fn range(&self) -> MemRange {
        MemRange {
            base: self.paddr,
            size: self.memsz,
        }
    }
}

/// Whether `range` lies wholly inside one bank of `memory`.
fn inside(memory: &[MemRange], range: &MemRange) -> bool {
    let end = u128::from(range.base) + u128::from(range.size);
    range.end().is_some()
        && memory.iter().any(|bank| {
            bank.contains(range.base) && end <= u128::from(bank.base) + u128::from(bank.size)
        })
}

fn check_inside(
    memory: &[MemRange],
    what: &'static str,
    range: MemRange,
) -> Result<(), ImageError> {
    if inside(memory, &range) {
        Ok(())
    } else {
        Err(ImageError::OutsideMemory { what, range })
    }
}

/// Places a probed image in the VM's memory.
///
/// `image_len` is the file's length (the one [`probe`] saw); `vm_memory` the VM's memory
/// ranges (guest physical); `load_address` the module's `tandem,load-address`, used for raw
/// images only. An `Image` goes at the lowest 2 MiB-aligned address of the lowest bank plus
/// its `text_offset`, with `image_size` bytes of room in that bank; ELF segments go at their
/// physical addresses; a raw image at `load_address` or else the start of the lowest bank.
/// Every destination, zero range and footprint lies inside one bank of `vm_memory`, and
/// so does the entry point.
pub fn plan(
    image: &GuestImage,
    image_len: usize,
    vm_memory: &[MemRange],
    load_address: Option<u64>,
) -> Result<LoadPlan, ImageError> {
    let lowest = vm_memory
        .iter()
        .filter(|b| b.size != 0)
        .min_by_key(|b| b.base)
        .ok_or(ImageError::NoMemory)?;
    let file_len = image_len as u64;
    match image {
        GuestImage::LinuxImage {
            text_offset,
            image_size,
            legacy,
            ..
        } => {
            if *legacy && *image_size != file_len {
                return Err(ImageError::LengthMismatch { len: image_len });
            }
            if file_len < IMAGE_HEADER_LEN as u64 {
                return Err(ImageError::LengthMismatch { len: image_len });
            }
            let base = lowest
                .base
                .checked_next_multiple_of(IMAGE_ALIGN)
                .and_then(|b| b.checked_add(*text_offset));
            let Some(load) = base else {
                return Err(ImageError::OutsideMemory {
                    what: "kernel Image",
                    range: MemRange {
                        base: lowest.base,
                        size: *image_size,
                    },
                });
            };
            let footprint = MemRange {
                base: load,
                size: *image_size,
            };
            check_inside(vm_memory, "kernel Image", footprint)?;
            Ok(LoadPlan {
                copies: alloc::vec![LoadCopy {
                    src_offset: 0,
                    dst: load,
                    len: file_len.min(*image_size),
                }],
                zero: Vec::new(),
                footprint: alloc::vec![footprint],
                entry: load,
            })
        }
        GuestImage::Elf { entry, segments } => {
            let mut out = LoadPlan {
                copies: Vec::new(),
                zero: Vec::new(),
                footprint: Vec::new(),
                entry: *entry,
            };
            for (index, s) in segments.iter().enumerate() {
                if s.offset
                    .checked_add(s.filesz)
                    .is_none_or(|end| end > file_len)
                {
                    return Err(ImageError::SegmentOutsideFile {
                        index,
                        offset: s.offset,
                        filesz: s.filesz,
                        len: image_len,
                    });
                }
                if s.filesz > s.memsz {
                    return Err(ImageError::FileszExceedsMemsz {
                        index,
                        filesz: s.filesz,
                        memsz: s.memsz,
                    });
                }
                check_inside(vm_memory, "ELF segment", s.range())?;
                if let Some(other) = out.footprint.iter().position(|f| f.overlaps(&s.range())) {
                    return Err(ImageError::OverlappingSegments {
                        first: other,
                        second: index,
                    });
                }
                if s.filesz > 0 {
                    out.copies.push(LoadCopy {
                        src_offset: s.offset,
                        dst: s.paddr,
                        len: s.filesz,
                    });
                }
                if s.memsz > s.filesz {
                    out.zero.push(MemRange {
                        base: s.paddr + s.filesz,
                        size: s.memsz - s.filesz,
                    });
                }
                out.footprint.push(s.range());
            }
            if !out.footprint.iter().any(|f| f.contains(*entry)) {
                return Err(ImageError::EntryOutsideSegments { entry: *entry });
            }
            Ok(out)
        }
        GuestImage::Raw => {
            if image_len == 0 {
                return Err(ImageError::Empty);
            }
            let dst = load_address.unwrap_or(lowest.base);
            let footprint = MemRange {
                base: dst,
                size: file_len,
            };
            check_inside(vm_memory, "raw image", footprint)?;
            Ok(LoadPlan {
                copies: alloc::vec![LoadCopy {
                    src_offset: 0,
                    dst,
                    len: file_len,
                }],
                zero: Vec::new(),
                footprint: alloc::vec![footprint],
                entry: dst,
            })
        }
    }
}
