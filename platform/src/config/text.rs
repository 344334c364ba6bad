//! How messages spell addresses and ranges.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::board::MemRange;

/// `0x50000000`.
pub(crate) fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// `[0x50000000, 0x90000000)`; the end is computed in 128 bits so it never wraps.
pub(crate) fn range(r: MemRange) -> String {
    let end = u128::from(r.base) + u128::from(r.size);
    format!("[{:#x}, {end:#x})", r.base)
}

/// `[a, b), [c, d)`.
pub(crate) fn ranges(list: &[MemRange]) -> String {
    let parts: Vec<String> = list.iter().map(|&r| range(r)).collect();
    parts.join(", ")
}

/// "start at or above END or end at or below BASE": how to step clear of `other`.
pub(crate) fn clear_of(other: MemRange) -> String {
    let end = u128::from(other.base) + u128::from(other.size);
    format!(
        "start at or above {end:#x} or end at or below {:#x}",
        other.base
    )
}

/// `a`, `a and b`, `a, b and 3 more`.
pub(crate) fn some_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} more", rest.len()),
    }
}
