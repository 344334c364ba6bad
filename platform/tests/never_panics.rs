//! Whatever the bytes, parsing returns (and the two readers agree on the console):
//! arbitrary input, and fixtures with random bytes changed, cut short, or spliced. A fixture
//! cut short still gives its own console, a UART it has, or none.

mod common;

use common::{build, edit, ALL};
use platform::{blob_size, early_console, EarlyUart, Platform};
use proptest::prelude::*;

/// Parses `bytes` every way; when the whole board parses, both readers must agree on the
/// console.
fn run(bytes: &[u8]) {
    let parsed = Platform::parse(bytes);
    let early = early_console(bytes);
    let _ = blob_size(bytes);
    if let Ok(p) = parsed {
        assert_eq!(
            p.console.map(|u| (u.kind, u.base)),
            early.map(|u| (u.kind, u.base))
        );
    }
}

fn fixture() -> impl Strategy<Value = Vec<u8>> {
    (0..ALL.len()).prop_map(|i| ALL[i].1.to_vec())
}

/// The consoles a prefix of `blob`'s tree can give: its own, and the first enabled PL011
/// that is the fallback once stdout-path is lost.
fn consoles(blob: &[u8]) -> [Option<EarlyUart>; 3] {
    let (mut root, rsv) = edit(blob);
    root.at("/chosen").unset("stdout-path");
    [
        None,
        early_console(blob),
        early_console(&build(&root, &rsv, false)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        run(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header(
        words in proptest::collection::vec(any::<u32>(), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut b = 0xd00d_feedu32.to_be_bytes().to_vec();
        b.extend_from_slice(&((40 + tail.len()) as u32).to_be_bytes());
        for w in &words { b.extend_from_slice(&w.to_be_bytes()); }
        b.resize(40, 0);
        b[20..24].copy_from_slice(&17u32.to_be_bytes());
        b.extend_from_slice(&tail);
        run(&b);
    }

    #[test]
    fn mutated_fixtures(
        mut blob in fixture(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        for (at, value) in edits {
            let i = at.index(blob.len());
            blob[i] = value;
        }
        run(&blob);
    }

    #[test]
    fn mutated_fixture_words(
        mut blob in fixture(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u32..16), 1..8),
    ) {
        // Small values at word boundaries hit tokens, lengths and cell counts.
        for (at, value) in edits {
            let i = at.index(blob.len() / 4) * 4;
            blob[i..i + 4].copy_from_slice(&value.to_be_bytes());
        }
        run(&blob);
    }

    #[test]
    fn truncated_fixtures(blob in fixture(), cut in any::<prop::sample::Index>(), patch in any::<bool>()) {
        let mut b = blob[..cut.index(blob.len())].to_vec();
        if patch && b.len() >= 8 {
            // Make the header agree with the cut, so parsing goes past the size check.
            let len = b.len() as u32;
            b[4..8].copy_from_slice(&len.to_be_bytes());
        }
        run(&b);
    }

    #[test]
    fn spliced_fixtures(a in fixture(), b in fixture(), x in any::<prop::sample::Index>(), y in any::<prop::sample::Index>()) {
        let mut out = a[..x.index(a.len())].to_vec();
        out.extend_from_slice(&b[y.index(b.len())..]);
        run(&out);
    }

    #[test]
    fn fixtures_cut_short_give_a_uart_they_have(
        i in 0..ALL.len(),
        cut in any::<prop::sample::Index>(),
    ) {
        // As the hypervisor sees a blob whose totalsize was lowered: the slice ends there.
        let blob = ALL[i].1;
        let len = cut.index(blob.len() - 40) + 40;
        let mut b = blob[..len].to_vec();
        b[4..8].copy_from_slice(&(len as u32).to_be_bytes());
        run(&b);
        let found = early_console(&b);
        prop_assert!(consoles(blob).contains(&found), "{} cut at {len}: {found:?}", ALL[i].0);
    }

    #[test]
    fn mutated_header_words(
        mut blob in fixture(),
        edits in proptest::collection::vec((1usize..10, -64i64..64), 1..4),
    ) {
        // Sizes and offsets a little off, in both directions.
        for (index, delta) in edits {
            let at = index * 4;
            let old = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap());
            let new = (i64::from(old) + delta).clamp(0, i64::from(u32::MAX)) as u32;
            blob[at..at + 4].copy_from_slice(&new.to_be_bytes());
        }
        run(&blob);
    }
}
