//! The FDT container: header, structure-block tokens, and the checks that make the blob safe
//! to hand to the `fdt` crate.
//!
//! `fdt` 0.1.5 trusts its input: it slices with header offsets, `unwrap`s tokens and asserts
//! on node ends, so a corrupt or merely unusual blob (an `FDT_NOP` between two properties, as
//! libfdt's `fdt_nop_property` leaves) makes it panic. [`Blob::check`] walks the whole
//! structure block first with bounds-checked reads and refuses anything `fdt` could trip
//! on; [`Blob::without_nops`] rewrites a blob without `FDT_NOP` tokens. [`Blocks::salvage`]
//! keeps what the early console can still read of a blob the check refuses.

use alloc::vec::Vec;

use crate::DtError;

const FDT_MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
// `fdt` 0.1.5 spells this 5; the Devicetree Specification (5.4.1) and dtc use 9. Any
// other tag, 5 included, is refused here.
const FDT_END: u32 = 9;

/// Deepest node nesting accepted. Real trees stay under 8; the bound keeps the recursion in
/// `fdt` and in [`crate::Platform::parse`], and the early walker's fixed stack, small.
pub(crate) const MAX_DEPTH: usize = 16;

/// Most properties accepted in one node (real nodes have a few dozen). Bounds the
/// duplicate-name check, which is quadratic in it.
const MAX_PROPS: usize = 256;

/// Reads a big-endian `u32` at `off`, if the bytes are there.
pub(crate) fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a big-endian `u64` at `off`, if the bytes are there.
fn be64(bytes: &[u8], off: usize) -> Option<u64> {
    let hi = be32(bytes, off)?;
    let lo = be32(bytes, off.checked_add(4)?)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// The blob's size from its header (`totalsize`), if the magic is right: lets the caller
/// bound the slice before calling [`crate::Platform::parse`].
///
/// `header` needs at least the first 8 bytes of the blob. A `totalsize` smaller than the
/// header itself gives `None`.
pub fn blob_size(header: &[u8]) -> Option<usize> {
    if be32(header, 0)? != FDT_MAGIC {
        return None;
    }
    let size = usize::try_from(be32(header, 4)?).ok()?;
    (size >= HEADER_LEN).then_some(size)
}

/// One structure-block token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// `FDT_BEGIN_NODE` with the node's name (unit address included).
    Begin(&'a str),
    /// `FDT_PROP`: name and value.
    Prop(&'a str, &'a [u8]),
    /// `FDT_END_NODE`.
    End,
    /// `FDT_NOP`.
    Nop,
    /// `FDT_END`.
    Finish,
}

/// A blob whose header and structure block have been checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blob<'a> {
    /// The blob, cut to `totalsize`.
    pub data: &'a [u8],
    structs: &'a [u8],
    struct_off: usize,
    strings: &'a [u8],
    rsvmap_off: usize,
    boot_cpuid: u32,
    /// How many `FDT_NOP` tokens the structure block holds.
    pub nops: usize,
}

/// A token as the structure block holds it: a property's name is still an offset into the
/// strings block.
#[derive(Debug, Clone, Copy)]
enum RawToken<'a> {
    /// Any token but `FDT_PROP`.
    Other(Token<'a>),
    /// `FDT_PROP`: the name's offset into the strings block, and the value.
    Prop(u32, &'a [u8]),
}

/// Reads one token at `pos` of a structure block, without looking up a property's name;
/// returns it and the next position, which is always past `pos`.
fn read_raw_token(structs: &[u8], pos: usize) -> Result<(RawToken<'_>, usize), &'static str> {
    let tag = be32(structs, pos).ok_or("structure block ends without FDT_END")?;
    let body = pos + 4;
    match tag {
        FDT_BEGIN_NODE => {
            let rest = structs.get(body..).unwrap_or_default();
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("node name runs past the structure block")?;
            let name = core::str::from_utf8(&rest[..len]).map_err(|_| "node name is not UTF-8")?;
            Ok((RawToken::Other(Token::Begin(name)), align4(body + len + 1)))
        }
        FDT_PROP => {
            let len = be32(structs, body).ok_or("property header runs past the block")?;
            let nameoff = be32(structs, body + 4).ok_or("property header runs past the block")?;
            let start = body + 8;
            let end = start
                .checked_add(len as usize)
                .filter(|&e| e <= structs.len())
                .ok_or("property value runs past the structure block")?;
            Ok((RawToken::Prop(nameoff, &structs[start..end]), align4(end)))
        }
        FDT_END_NODE => Ok((RawToken::Other(Token::End), body)),
        FDT_NOP => Ok((RawToken::Other(Token::Nop), body)),
        FDT_END => Ok((RawToken::Other(Token::Finish), body)),
        _ => Err("unknown token"),
    }
}

/// The property name at `nameoff` of the strings block, NUL terminator included in the block.
fn prop_name(strings: &[u8], nameoff: u32) -> Result<&str, &'static str> {
    let name_bytes = strings
        .get(nameoff as usize..)
        .ok_or("property name offset is outside the strings block")?;
    let nlen = name_bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or("property name runs past the strings block")?;
    core::str::from_utf8(&name_bytes[..nlen]).map_err(|_| "property name is not UTF-8")
}

/// Reads one token at `pos` of a structure block; returns it and the next position.
fn read_token<'a>(
    structs: &'a [u8],
    strings: &'a [u8],
    pos: usize,
) -> Result<(Token<'a>, usize), &'static str> {
    let (raw, next) = read_raw_token(structs, pos)?;
    let token = match raw {
        RawToken::Other(token) => token,
        RawToken::Prop(nameoff, value) => Token::Prop(prop_name(strings, nameoff)?, value),
    };
    Ok((token, next))
}

/// The structure block and the strings block its property names point into: all a walk
/// over the tree's tokens reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocks<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Blocks<'a> {
    /// What can still be read of a blob that fails [`Blob::check`]: both blocks where the
    /// header puts them, cut at the end of `bytes` (a blob cut short, or whose `totalsize`
    /// is too small, loses their tails). `None` without the FDT magic and a whole header.
    pub fn salvage(bytes: &'a [u8]) -> Option<Self> {
        if be32(bytes, 0)? != FDT_MAGIC {
            return None;
        }
        let block = |offset_word: usize, size_word: usize| -> Option<&'a [u8]> {
            let start = usize::try_from(be32(bytes, offset_word * 4)?).ok()?;
            let size = usize::try_from(be32(bytes, size_word * 4)?).ok()?;
            let end = start.saturating_add(size).min(bytes.len());
            Some(bytes.get(start..end).unwrap_or_default())
        };
        Some(Self {
            structs: block(2, 9)?,
            strings: block(3, 8)?,
        })
    }

    /// The structure block's tokens, in order, for as long as they are well-formed: the
    /// walk ends after `FDT_END`, or before the first token that cannot be read inside the
    /// block, that closes a node none opened, opens a second root or nests deeper than
    /// [`MAX_DEPTH`], or that is a property outside any node. A property whose name is not
    /// a whole UTF-8 string inside the strings block is skipped.
    ///
    /// On a blob [`Blob::check`] accepts, none of this happens: the walk gives every token.
    /// Each token read moves forward, so the walk ends within a quarter of the block's
    /// length in tokens.
    pub fn tokens(self) -> impl Iterator<Item = Token<'a>> + 'a {
        let mut pos = Some(0);
        let mut depth = 0usize;
        let mut root_done = false;
        core::iter::from_fn(move || loop {
            let (raw, next) = read_raw_token(self.structs, pos?).ok()?;
            pos = Some(next);
            let token = match raw {
                RawToken::Other(token) => token,
                RawToken::Prop(nameoff, value) => match prop_name(self.strings, nameoff) {
                    Ok(name) => Token::Prop(name, value),
                    Err(_) => continue,
                },
            };
            let well_formed = match token {
                Token::Begin(_) if !root_done && depth < MAX_DEPTH => {
                    depth += 1;
                    true
                }
                Token::Prop(..) => depth > 0,
                Token::End if depth > 0 => {
                    depth -= 1;
                    root_done = depth == 0;
                    true
                }
                Token::Nop => true,
                Token::Finish => {
                    pos = None;
                    true
                }
                Token::Begin(_) | Token::End => false,
            };
            if !well_formed {
                pos = None;
                return None;
            }
            return Some(token);
        })
    }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

impl<'a> Blob<'a> {
    /// Checks the header and every token of the structure block.
    pub fn check(bytes: &'a [u8]) -> Result<Self, DtError> {
        if bytes.len() < HEADER_LEN {
            return Err(DtError::TooShort { len: bytes.len() });
        }
        let word = |i: usize| be32(bytes, i * 4).unwrap_or(0);
        if word(0) != FDT_MAGIC {
            return Err(DtError::BadMagic { found: word(0) });
        }
        let totalsize = word(1) as usize;
        if totalsize > bytes.len() {
            return Err(DtError::Truncated {
                totalsize,
                given: bytes.len(),
            });
        }
        let (version, last_comp_version) = (word(5), word(6));
        if version < 17 || last_comp_version > 17 {
            return Err(DtError::UnsupportedVersion {
                version,
                last_comp_version,
            });
        }
        let data = &bytes[..totalsize];
        let block = |name: &'static str, off: u32, size: u32, align: usize| {
            let (offset, size) = (off as usize, size as usize);
            match offset.checked_add(size) {
                Some(end) if end <= totalsize && offset >= HEADER_LEN && offset % align == 0 => {
                    Ok(&data[offset..end])
                }
                _ => Err(DtError::BadBlock {
                    block: name,
                    offset,
                    size,
                    totalsize,
                }),
            }
        };
        let struct_off = word(2) as usize;
        let structs = block("structure", word(2), word(9), 4)?;
        let strings = block("strings", word(3), word(8), 1)?;
        let rsvmap_off = word(4) as usize;
        block("memory reservation", word(4), 0, 8)?;
        let mut blob = Blob {
            data,
            structs,
            struct_off,
            strings,
            rsvmap_off,
            boot_cpuid: word(7),
            nops: 0,
        };
        blob.check_rsvmap()?;
        blob.nops = blob.check_structure()?;
        Ok(blob)
    }

    /// The memory reservation map must end with its (0, 0) entry inside the blob.
    fn check_rsvmap(&self) -> Result<(), DtError> {
        let mut off = self.rsvmap_off;
        loop {
            match (be64(self.data, off), be64(self.data, off + 8)) {
                (Some(0), Some(0)) => return Ok(()),
                (Some(_), Some(_)) => off += 16,
                _ => {
                    return Err(DtError::BadStructure {
                        offset: off,
                        problem: "memory reservation map has no terminating (0, 0) entry",
                    })
                }
            }
        }
    }

    /// Walks the structure block: one root with an empty name, properties before child
    /// nodes, no property named twice in a node, balanced nesting at most [`MAX_DEPTH`] deep,
    /// then `FDT_END`. Returns the number of `FDT_NOP` tokens.
    ///
    /// Duplicate names are refused because readers disagree on them (`fdt`'s `property()`
    /// returns the first, its `compatible()` the last), and dtc refuses them too.
    fn check_structure(&self) -> Result<usize, DtError> {
        let err = |pos: usize, problem| DtError::BadStructure {
            offset: self.struct_off + pos,
            problem,
        };
        let mut pos = 0;
        let mut depth = 0usize;
        let mut seen_child = [false; MAX_DEPTH + 1];
        // Where the open node's properties start, and how many it has so far.
        let mut props_start = [0usize; MAX_DEPTH + 1];
        let mut props = [0usize; MAX_DEPTH + 1];
        let mut root_done = false;
        let mut nops = 0;
        loop {
            let (token, next) =
                read_token(self.structs, self.strings, pos).map_err(|p| err(pos, p))?;
            match token {
                Token::Nop => nops += 1,
                Token::Begin(name) => {
                    if root_done {
                        return Err(err(pos, "a second root node"));
                    }
                    if depth == 0 && !name.is_empty() {
                        return Err(err(pos, "the root node's name is not empty"));
                    }
                    if depth >= MAX_DEPTH {
                        return Err(err(pos, "nodes nested deeper than 16 levels"));
                    }
                    seen_child[depth] = true;
                    depth += 1;
                    seen_child[depth] = false;
                    props_start[depth] = next;
                    props[depth] = 0;
                }
                Token::Prop(name, _) => {
                    if depth == 0 {
                        return Err(err(pos, "a property outside any node"));
                    }
                    if seen_child[depth] {
                        return Err(err(pos, "a property after a child node"));
                    }
                    props[depth] += 1;
                    if props[depth] > MAX_PROPS {
                        return Err(err(pos, "more than 256 properties in one node"));
                    }
                    if self.named_before(props_start[depth], pos, name) {
                        return Err(err(pos, "a property name appears twice in one node"));
                    }
                }
                Token::End => {
                    if depth == 0 {
                        return Err(err(pos, "FDT_END_NODE without a node to end"));
                    }
                    depth -= 1;
                    root_done = depth == 0;
                }
                Token::Finish => {
                    return if root_done {
                        Ok(nops)
                    } else {
                        Err(err(pos, "FDT_END before the root node is closed"))
                    };
                }
            }
            pos = next;
        }
    }

    /// Whether a property called `name` lies between `start` and `end` of the structure
    /// block (both token boundaries, with only properties and NOPs between them).
    fn named_before(&self, start: usize, end: usize, name: &str) -> bool {
        let mut pos = start;
        while pos < end {
            match read_token(self.structs, self.strings, pos) {
                Ok((Token::Prop(other, _), _)) if other == name => return true,
                Ok((_, next)) => pos = next,
                Err(_) => return false,
            }
        }
        false
    }

    /// The structure and strings blocks, whose [`Blocks::tokens`] walk reads every token
    /// since the blob is checked.
    pub fn blocks(&self) -> Blocks<'a> {
        Blocks {
            structs: self.structs,
            strings: self.strings,
        }
    }

    /// The `/memreserve/` entries, in blob order, including zero-sized ones.
    pub fn reservations(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let data = self.data;
        let mut off = self.rsvmap_off;
        core::iter::from_fn(move || {
            let entry = (be64(data, off)?, be64(data, off + 8)?);
            off += 16;
            (entry != (0, 0)).then_some(entry)
        })
    }

    /// A copy of the blob without `FDT_NOP` tokens, laid out header, reservation map,
    /// structure block, strings block.
    pub fn without_nops(&self) -> Vec<u8> {
        let mut rsv = Vec::new();
        for (addr, size) in self.reservations() {
            rsv.extend_from_slice(&addr.to_be_bytes());
            rsv.extend_from_slice(&size.to_be_bytes());
        }
        rsv.extend_from_slice(&[0; 16]);

        let mut structs = Vec::with_capacity(self.structs.len());
        let mut pos = 0;
        while let Ok((token, next)) = read_token(self.structs, self.strings, pos) {
            if token != Token::Nop {
                structs.extend_from_slice(self.structs.get(pos..next).unwrap_or_default());
            }
            if token == Token::Finish {
                break;
            }
            pos = next;
        }

        let off_rsv = HEADER_LEN;
        let off_struct = off_rsv + rsv.len();
        let off_strings = off_struct + structs.len();
        let total = off_strings + self.strings.len();
        let mut out = Vec::with_capacity(total);
        for word in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            self.boot_cpuid,
            self.strings.len() as u32,
            structs.len() as u32,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&rsv);
        out.extend_from_slice(&structs);
        out.extend_from_slice(self.strings);
        out
    }
}
