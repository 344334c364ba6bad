//! Turns the hypervisor ELF into a flat arm64 `Image` and checks the Image header.
//!
//! The hypervisor is linked at address 0 as a position-independent executable, so the flat
//! image is simply its `PT_LOAD` segments laid out by address: byte 0 of the output is the
//! lowest segment address, gaps between segments are zero-filled, and the output stops at
//! the last byte a segment carries in the file (trailing `.bss` is not written; the Image
//! header's `image_size` tells the loader how much memory to reserve for it).

use std::fmt;

use object::elf::{FileHeader64, ProgramHeader64, EM_AARCH64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// Offset of the `ARM\x64` magic in the arm64 Image header (Linux `Documentation/arch/arm64/booting.rst`).
const MAGIC_OFFSET: usize = 56;
/// The arm64 Image magic.
const MAGIC: &[u8; 4] = b"ARM\x64";
/// The size of the arm64 Image header.
pub const HEADER_LEN: usize = 64;
/// Refuse to write a flat image larger than this: it means segments are linked far apart.
const MAX_FLAT_LEN: u64 = 64 << 20;

/// Why an ELF could not be turned into a flat image.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The file is not a 64-bit ELF that `object` can read.
    NotElf(String),
    /// The ELF is for another architecture (the value is `e_machine`).
    WrongMachine(u16),
    /// No `PT_LOAD` segment carries bytes from the file.
    NoLoadSegments,
    /// A segment's file range lies outside the ELF file.
    SegmentOutOfFile { index: usize },
    /// Two segments overlap in the address space.
    Overlap { first: u64, second: u64 },
    /// The flat image would be unreasonably large (segments linked far apart).
    TooLarge { len: u64 },
    /// The image does not start with an arm64 Image header.
    NoImageHeader,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotElf(e) => write!(f, "not a 64-bit ELF file ({e})"),
            ImageError::WrongMachine(m) => write!(
                f,
                "ELF machine is {m}, not AArch64 ({EM_AARCH64}): was it built for the wrong target?"
            ),
            ImageError::NoLoadSegments => write!(f, "the ELF has no PT_LOAD segment with file data"),
            ImageError::SegmentOutOfFile { index } => {
                write!(f, "program header {index} points outside the ELF file")
            }
            ImageError::Overlap { first, second } => write!(
                f,
                "PT_LOAD segments at {first:#x} and {second:#x} overlap: check the linker script"
            ),
            ImageError::TooLarge { len } => write!(
                f,
                "the flat image would be {len} bytes (limit {MAX_FLAT_LEN}): segments are linked far apart, check the linker script"
            ),
            ImageError::NoImageHeader => write!(
                f,
                "the image does not start with an arm64 Image header (magic \"ARM\\x64\" at offset {MAGIC_OFFSET}): \
                 the linker script must place the header section first"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// The fields of the arm64 Image header that the build reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from a 2 MiB-aligned base at which the image wants to be loaded.
    pub text_offset: u64,
    /// Bytes of memory the image needs from its start, `.bss` included.
    pub image_size: u64,
    /// Header flags (endianness, page size, placement).
    pub flags: u64,
}

/// Reads the arm64 Image header at the start of `image`.
pub fn parse_header(image: &[u8]) -> Result<ImageHeader, ImageError> {
    if image.len() < HEADER_LEN || &image[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Err(ImageError::NoImageHeader);
    }
    let word = |offset: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&image[offset..offset + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok(ImageHeader {
        text_offset: word(8),
        image_size: word(16),
        flags: word(24),
    })
}

/// Lays out the `PT_LOAD` segments of an AArch64 ELF as a flat binary.
pub fn elf_to_flat(elf: &[u8]) -> Result<Vec<u8>, ImageError> {
    let header =
        FileHeader64::<Endianness>::parse(elf).map_err(|e| ImageError::NotElf(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| ImageError::NotElf(e.to_string()))?;
    let machine = header.e_machine(endian);
    if machine != EM_AARCH64 {
        return Err(ImageError::WrongMachine(machine));
    }
    let phdrs: &[ProgramHeader64<Endianness>] = header
        .program_headers(endian, elf)
        .map_err(|e| ImageError::NotElf(e.to_string()))?;

    // (address, file bytes) of every loadable segment that carries data from the file.
    let mut segments = Vec::new();
    for (index, phdr) in phdrs.iter().enumerate() {
        if phdr.p_type(endian) != PT_LOAD || phdr.p_filesz(endian) == 0 {
            continue;
        }
        let data = phdr
            .data(endian, elf)
            .map_err(|_| ImageError::SegmentOutOfFile { index })?;
        segments.push((phdr.p_paddr(endian), data));
    }
    segments.sort_by_key(|&(addr, _)| addr);
    let (base, _) = *segments.first().ok_or(ImageError::NoLoadSegments)?;

    let mut end = base;
    for pair in segments.windows(2) {
        let (first, first_data) = pair[0];
        let (second, _) = pair[1];
        if first + first_data.len() as u64 > second {
            return Err(ImageError::Overlap { first, second });
        }
    }
    for &(addr, data) in &segments {
        end = end.max(addr + data.len() as u64);
    }
    let len = end - base;
    if len > MAX_FLAT_LEN {
        return Err(ImageError::TooLarge { len });
    }

    let mut flat = vec![0u8; len as usize];
    for (addr, data) in segments {
        let start = (addr - base) as usize;
        flat[start..start + data.len()].copy_from_slice(data);
    }
    Ok(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loadable segment for [`make_elf`]: address, file bytes, memory size.
    struct Seg {
        addr: u64,
        data: Vec<u8>,
        memsz: u64,
        kind: u32,
    }

    fn load(addr: u64, data: &[u8], memsz: u64) -> Seg {
        Seg {
            addr,
            data: data.to_vec(),
            memsz,
            kind: PT_LOAD,
        }
    }

    /// Writes a minimal little-endian ELF64 executable with the given program headers.
    fn make_elf(machine: u16, segs: &[Seg]) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut out = vec![0u8; EHDR];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN: a PIE
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut offset = (EHDR + PHDR * segs.len()) as u64;
        let mut bodies = Vec::new();
        for seg in segs {
            let mut ph = vec![0u8; PHDR];
            ph[0..4].copy_from_slice(&seg.kind.to_le_bytes());
            ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&seg.addr.to_le_bytes());
            ph[24..32].copy_from_slice(&seg.addr.to_le_bytes());
            ph[32..40].copy_from_slice(&(seg.data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&seg.memsz.to_le_bytes());
            ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
            out.extend_from_slice(&ph);
            bodies.extend_from_slice(&seg.data);
            offset += seg.data.len() as u64;
        }
        out.extend_from_slice(&bodies);
        out
    }

    fn image_header(image_size: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&0xau64.to_le_bytes());
        h[56..60].copy_from_slice(MAGIC);
        h
    }

    #[test]
    fn lays_out_segments_with_zero_filled_gaps() {
        let mut text = image_header(0x3000);
        text.extend_from_slice(&[0xaa; 16]);
        let elf = make_elf(
            EM_AARCH64,
            &[
                load(0x2000, &[1, 2, 3], 3),
                load(0, &text, text.len() as u64),
            ],
        );
        let flat = elf_to_flat(&elf).unwrap();
        assert_eq!(flat.len(), 0x2003);
        assert_eq!(&flat[..text.len()], &text[..]);
        assert!(flat[text.len()..0x2000].iter().all(|&b| b == 0));
        assert_eq!(&flat[0x2000..], &[1, 2, 3]);
        let header = parse_header(&flat).unwrap();
        assert_eq!(header.image_size, 0x3000);
        assert_eq!(header.flags, 0xa);
    }

    #[test]
    fn trailing_bss_is_not_written() {
        let elf = make_elf(
            EM_AARCH64,
            &[
                load(0, &image_header(0x9000), 0x100),
                load(0x1000, &[7; 8], 0x4000),
                load(0x8000, &[], 0x1000),
            ],
        );
        let flat = elf_to_flat(&elf).unwrap();
        assert_eq!(flat.len(), 0x1008);
    }

    #[test]
    fn byte_zero_is_the_lowest_segment() {
        let mut first = image_header(0);
        first[0] = 0x55;
        let elf = make_elf(
            EM_AARCH64,
            &[load(0x10000, &first, 64), load(0x10040, &[9], 1)],
        );
        let flat = elf_to_flat(&elf).unwrap();
        assert_eq!(flat.len(), 65);
        assert_eq!(flat[0], 0x55);
        assert_eq!(flat[64], 9);
    }

    #[test]
    fn non_load_segments_are_ignored() {
        let mut note = load(0x5000_0000, &[1; 4], 4);
        note.kind = 4; // PT_NOTE
        let elf = make_elf(EM_AARCH64, &[load(0, &image_header(64), 64), note]);
        assert_eq!(elf_to_flat(&elf).unwrap().len(), 64);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            elf_to_flat(b"not an elf"),
            Err(ImageError::NotElf(_))
        ));
        let x86 = make_elf(62, &[load(0, &[0; 64], 64)]);
        assert_eq!(elf_to_flat(&x86), Err(ImageError::WrongMachine(62)));
        assert_eq!(
            elf_to_flat(&make_elf(EM_AARCH64, &[])),
            Err(ImageError::NoLoadSegments)
        );
        let overlap = make_elf(EM_AARCH64, &[load(0, &[0; 64], 64), load(0x20, &[1], 1)]);
        assert_eq!(
            elf_to_flat(&overlap),
            Err(ImageError::Overlap {
                first: 0,
                second: 0x20
            })
        );
        let far = make_elf(EM_AARCH64, &[load(0, &[0; 64], 64), load(1 << 40, &[1], 1)]);
        assert!(matches!(
            elf_to_flat(&far),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_check() {
        assert_eq!(parse_header(&[0; 63]), Err(ImageError::NoImageHeader));
        assert_eq!(parse_header(&[0; 64]), Err(ImageError::NoImageHeader));
        assert!(parse_header(&image_header(1)).is_ok());
    }
}
