//! The guest's command line (`/chosen/bootargs`): `key=value` words separated by spaces.

/// The value of the first `key=value` word of `bootargs`, if there is one.
pub fn value<'a>(bootargs: &'a str, key: &str) -> Option<&'a str> {
    bootargs.split_whitespace().find_map(|word| {
        word.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// A number written in decimal or as `0x` hexadecimal, with `_` allowed between digits.
pub fn parse_u64(text: &str) -> Option<u64> {
    let digits: alloc::string::String = text.chars().filter(|&c| c != '_').collect();
    match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    }
}

/// A range written `base,size` (both numbers as [`parse_u64`] reads them), as
/// `(base, size)`; `None` when malformed or when it wraps around.
pub fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (base, size) = text.split_once(',')?;
    let (base, size) = (parse_u64(base)?, parse_u64(size)?);
    base.checked_add(size).map(|_| (base, size))
}
