//! Hexadecimal text for tags: lower case out, either case in.

use std::fmt;

/// Why a hex string was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HexError {
    /// It has `got` characters where `want` were needed.
    Length {
        /// Characters given.
        got: usize,
        /// Characters needed: two per byte.
        want: usize,
    },
    /// The character at `at` (counting from 0) is not a hex digit.
    Digit {
        /// Where it is.
        at: usize,
        /// What it is.
        found: char,
    },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { got, want } => {
                write!(f, "{got} characters, not {want} hex digits")
            }
            Self::Digit { at, found } => {
                write!(f, "{found:?} at position {} is not a hex digit", at + 1)
            }
        }
    }
}

/// `bytes` as lower-case hex digits, two per byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// Exactly `N` bytes from `2 * N` hex digits of either case.
pub fn decode<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() != 2 * N {
        return Err(HexError::Length {
            got: chars.len(),
            want: 2 * N,
        });
    }
    let digit = |at: usize| {
        let found = chars[at];
        found
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(HexError::Digit { at, found })
    };
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = digit(2 * i)? << 4 | digit(2 * i + 1)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = encode(&bytes);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 4..], "feff");
        assert_eq!(decode::<256>(&text).unwrap().to_vec(), bytes);
    }

    #[test]
    fn either_case_in() {
        assert_eq!(decode::<2>("aBcD"), Ok([0xab, 0xcd]));
        assert_eq!(decode::<0>(""), Ok([]));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            decode::<2>("abc"),
            Err(HexError::Length { got: 3, want: 4 })
        );
        assert_eq!(
            decode::<2>("ab0g"),
            Err(HexError::Digit { at: 3, found: 'g' })
        );
        // Multi-byte characters are counted as characters, not bytes.
        assert_eq!(
            decode::<1>("é0"),
            Err(HexError::Digit { at: 0, found: 'é' })
        );
        assert_eq!(
            HexError::Digit { at: 3, found: 'g' }.to_string(),
            "'g' at position 4 is not a hex digit"
        );
        assert_eq!(
            HexError::Length { got: 3, want: 64 }.to_string(),
            "3 characters, not 64 hex digits"
        );
    }
}
