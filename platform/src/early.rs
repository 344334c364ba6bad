//! The console, found without a heap: used before the hypervisor's MMU and allocator exist,
//! to know where to print errors.
//!
//! A single walker over the token stream keeps a fixed stack of the open nodes (name, bus
//! cells, `ranges`, and the properties a UART needs) and evaluates each node when it closes,
//! when its properties and all its ancestors' are known. The stream is the checked blob's
//! when it passes [`Blob::check`], else whatever [`Blocks::salvage`] can still read: the
//! hypervisor must find its console to report that the device tree is damaged.

use crate::blob::{Blob, Blocks, Token, MAX_DEPTH};
use crate::board::{name_matches, prop_str, status_ok, strip_options, UartKind};
use crate::cells::{reg_entries, translate, Bus};

/// A UART usable before the heap exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyUart {
    /// Programming model.
    pub kind: UartKind,
    /// CPU physical address of its registers.
    pub base: u64,
}

/// The console: the UART `/chosen/stdout-path` names (a path or an alias, `:options`
/// ignored) if its kind is known, else the first enabled PL011. `None` for bytes without
/// the FDT magic and header, or a tree that has neither.
///
/// Best effort on a damaged blob (cut short, or with a `totalsize` that ends inside the
/// structure or strings block): it reads the tree only as far as the tokens are well-formed
/// and inside `blob`, and skips properties whose names lie past its end, so the console is
/// found if the nodes and names it needs survived.
///
/// Allocates nothing, and every walk only moves forward through the blob. Agrees with
/// [`crate::Platform::parse`]'s `console` on every blob that parses.
pub fn early_console(blob: &[u8]) -> Option<EarlyUart> {
    let blocks = match Blob::check(blob) {
        Ok(checked) => checked.blocks(),
        Err(_) => Blocks::salvage(blob)?,
    };
    let target = stdout_target(blocks);
    find_uart(blocks, target)
}

/// The value of property `prop` of the root's child `node`.
fn root_child_prop<'a>(blocks: Blocks<'a>, node: &str, prop: &str) -> Option<&'a [u8]> {
    let mut depth = 0usize;
    let mut inside = false;
    for token in blocks.tokens() {
        match token {
            Token::Begin(name) => {
                depth += 1;
                if depth == 2 {
                    inside = name == node;
                }
            }
            Token::Prop(name, value) if inside && depth == 2 && name == prop => return Some(value),
            Token::End => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The path of the node `stdout-path` names, aliases resolved.
fn stdout_target<'a>(blocks: Blocks<'a>) -> Option<&'a str> {
    let value = root_child_prop(blocks, "chosen", "stdout-path")
        .or_else(|| root_child_prop(blocks, "chosen", "linux,stdout-path"))?;
    let path = strip_options(prop_str(value)?);
    if path.starts_with('/') {
        Some(path)
    } else {
        prop_str(root_child_prop(blocks, "aliases", path)?)
    }
}

/// What the walker remembers about one open node.
#[derive(Debug, Clone, Copy, Default)]
struct Frame<'a> {
    compatible: &'a [u8],
    reg: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    reg_shift: Option<u32>,
    reg_io_width: Option<u32>,
    on_path: bool,
}

fn u32_prop(value: &[u8]) -> Option<u32> {
    (value.len() == 4)
        .then(|| crate::blob::be32(value, 0))
        .flatten()
}

/// Finds the node at `target`, or failing that the first enabled PL011.
fn find_uart(blocks: Blocks<'_>, target: Option<&str>) -> Option<EarlyUart> {
    let components = target.map_or(0, |t| t.split('/').filter(|c| !c.is_empty()).count());
    let component = |i: usize| target.and_then(|t| t.split('/').filter(|c| !c.is_empty()).nth(i));
    let mut frames = [Frame::default(); MAX_DEPTH + 1];
    let mut buses = [Bus::default(); MAX_DEPTH + 1];
    // Like `Platform::parse`, only the first node matching each path component counts:
    // once it closes, later namesakes at that depth are off the path.
    let mut consumed = [false; MAX_DEPTH + 1];
    let mut fallback = None;
    let mut depth = 0usize;
    for token in blocks.tokens() {
        match token {
            Token::Begin(name) => {
                if depth > MAX_DEPTH {
                    return None;
                }
                let on_path = match depth {
                    0 => target.is_some(),
                    d => {
                        frames[d - 1].on_path
                            && !consumed[d]
                            && component(d - 1).is_some_and(|c| name_matches(c, name))
                    }
                };
                frames[depth] = Frame {
                    on_path,
                    ..Frame::default()
                };
                buses[depth] = Bus::default();
                depth += 1;
            }
            Token::Prop(name, value) => {
                let Some(d) = depth.checked_sub(1) else {
                    continue;
                };
                buses[d].apply(name, value);
                let frame = &mut frames[d];
                match name {
                    "compatible" => frame.compatible = value,
                    "reg" => frame.reg = Some(value),
                    "status" => frame.status = Some(value),
                    "reg-shift" => frame.reg_shift = u32_prop(value),
                    "reg-io-width" => frame.reg_io_width = u32_prop(value),
                    _ => {}
                }
            }
            Token::End => {
                let Some(d) = depth.checked_sub(1) else {
                    continue;
                };
                depth = d;
                let frame = frames[d];
                if frame.on_path {
                    consumed[d] = true;
                }
                let Some(kind) =
                    UartKind::from_node(frame.compatible, frame.reg_shift, frame.reg_io_width)
                else {
                    continue;
                };
                let (Some(reg), Some(parent)) = (frame.reg, d.checked_sub(1)) else {
                    continue;
                };
                let Some((addr, size)) = reg_entries(reg, &buses[parent])
                    .ok()
                    .and_then(|mut r| r.next())
                else {
                    continue;
                };
                let Ok(base) = translate(addr, size, &buses[..d]) else {
                    continue;
                };
                let uart = EarlyUart { kind, base };
                if frame.on_path && d == components {
                    return Some(uart);
                }
                if fallback.is_none() && kind == UartKind::Pl011 && status_ok(frame.status) {
                    if target.is_none() {
                        return Some(uart);
                    }
                    fallback = Some(uart);
                }
            }
            Token::Nop | Token::Finish => {}
        }
    }
    fallback
}
