//! The stream table's shape: which stream IDs lead to which VM's entry, and how little
//! memory that takes.
//!
//! A PCI host bridge usually claims every requester ID (QEMU virt's `iommu-map` covers all
//! 65,536), and a linear table of that many 64-byte entries would take 4 MiB. With a
//! two-level table (SMMU_IDR0.ST_LEVEL) split at 8 bits, each level-1 descriptor covers 256
//! streams; a run of 256 streams owned by one VM points at that VM's one shared level-2
//! table, whose 256 entries are all the same stage-2 entry, and a run nobody owns has an
//! invalid descriptor. So the table costs 8 bytes per 256 stream IDs, plus 16 KiB per VM
//! and per mixed run.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Stream ID bits resolved by a level-2 table.
pub const SPLIT: u32 = 8;
/// Stream table entries in one level-2 table.
pub const L2_ENTRIES: usize = 1 << SPLIT;
/// Bytes of one stream table entry.
pub const STE_BYTES: usize = 64;
/// The largest linear table the plan builds when the SMMU has no two-level tables:
/// 2^12 entries, 256 KiB.
pub const MAX_LINEAR_LOG2: u32 = 12;

/// Stream IDs `[first, first + count)` belong to VM `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// First stream ID.
    pub first: u32,
    /// How many, at least 1.
    pub count: u32,
    /// The owning VM's index.
    pub owner: usize,
}

impl Claim {
    fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.count)
    }
}

/// What one level-1 descriptor points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Entry {
    /// Nothing: the streams are aborted (C_BAD_STREAMID).
    Invalid,
    /// The shared level-2 table of this VM (every entry its stage-2 entry).
    Shared(usize),
    /// Private level-2 table number `n` of [`StreamTablePlan::private`].
    Private(usize),
}

/// Why no stream table can be built for the claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A claim reaches beyond the SMMU's stream ID size.
    SidTooLarge {
        /// One past the claim's last ID.
        end: u64,
        /// SMMU_IDR1.SIDSIZE.
        sid_bits: u32,
    },
    /// Two claims share a stream ID (the config validator refuses this first).
    Overlap {
        /// The shared ID.
        sid: u32,
    },
    /// Without two-level tables, the linear table would be too large.
    LinearTooLarge {
        /// Bits of stream ID it would need.
        log2size: u32,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SidTooLarge { end, sid_bits } => write!(
                f,
                "stream IDs up to {:#x} are claimed, but the SMMU has {sid_bits}-bit stream IDs",
                end - 1
            ),
            Self::Overlap { sid } => write!(f, "stream ID {sid:#x} is claimed twice"),
            Self::LinearTooLarge { log2size } => write!(
                f,
                "the SMMU has no two-level stream tables and a linear one for {log2size}-bit stream IDs would exceed {} KiB",
                (STE_BYTES << MAX_LINEAR_LOG2) / 1024
            ),
        }
    }
}

/// The stream table to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTablePlan {
    /// Two levels (else linear).
    pub two_level: bool,
    /// SMMU_STRTAB_BASE_CFG.LOG2SIZE: stream IDs at or above `2^log2size` are out of range.
    pub log2size: u32,
    /// Two-level: one entry per 256 stream IDs.
    pub l1: Vec<L1Entry>,
    /// Two-level: the owner of each entry of each private level-2 table.
    pub private: Vec<Vec<Option<usize>>>,
    /// Two-level: VMs with a shared level-2 table, each once, in first-use order.
    pub shared: Vec<usize>,
    /// Linear: the owner of each entry.
    pub linear: Vec<Option<usize>>,
}

/// Bits needed to number `end` IDs (`end` ≥ 1).
fn bits_for(end: u64) -> u32 {
    64 - (end - 1).leading_zeros()
}

impl StreamTablePlan {
    /// The smallest table that gives every claimed stream its owner's entry, on an SMMU
    /// with `sid_bits`-bit stream IDs, two-level tables if `two_level` is supported.
    pub fn new(claims: &[Claim], sid_bits: u32, two_level: bool) -> Result<Self, PlanError> {
        let end = claims.iter().map(Claim::end).max().unwrap_or(1).max(1);
        if sid_bits < 64 && end > 1 << sid_bits {
            return Err(PlanError::SidTooLarge { end, sid_bits });
        }
        for (n, a) in claims.iter().enumerate() {
            if let Some(b) = claims[..n]
                .iter()
                .find(|b| u64::from(a.first) < b.end() && u64::from(b.first) < a.end())
            {
                return Err(PlanError::Overlap {
                    sid: a.first.max(b.first),
                });
            }
        }
        let owner = |sid: u64| {
            claims
                .iter()
                .find(|c| u64::from(c.first) <= sid && sid < c.end())
                .map(|c| c.owner)
        };
        let needed = bits_for(end);
        if !two_level || needed <= SPLIT {
            if needed > MAX_LINEAR_LOG2 {
                return Err(PlanError::LinearTooLarge { log2size: needed });
            }
            let linear = (0..1u64 << needed).map(owner).collect();
            return Ok(Self {
                two_level: false,
                log2size: needed,
                l1: Vec::new(),
                private: Vec::new(),
                shared: Vec::new(),
                linear,
            });
        }
        let mut plan = Self {
            two_level: true,
            log2size: needed,
            l1: Vec::new(),
            private: Vec::new(),
            shared: Vec::new(),
            linear: Vec::new(),
        };
        for span in 0..1u64 << (needed - SPLIT) {
            let base = span << SPLIT;
            let touching: Vec<&Claim> = claims
                .iter()
                .filter(|c| u64::from(c.first) < base + L2_ENTRIES as u64 && base < c.end())
                .collect();
            let whole = touching
                .iter()
                .find(|c| u64::from(c.first) <= base && base + L2_ENTRIES as u64 <= c.end());
            let entry = match (touching.is_empty(), whole) {
                (true, _) => L1Entry::Invalid,
                (false, Some(c)) => {
                    if !plan.shared.contains(&c.owner) {
                        plan.shared.push(c.owner);
                    }
                    L1Entry::Shared(c.owner)
                }
                (false, None) => {
                    let owners = (base..base + L2_ENTRIES as u64).map(owner).collect();
                    plan.private.push(owners);
                    L1Entry::Private(plan.private.len() - 1)
                }
            };
            plan.l1.push(entry);
        }
        Ok(plan)
    }

    /// The VM whose entry stream `sid` gets, if any.
    pub fn owner(&self, sid: u32) -> Option<usize> {
        let sid = sid as usize;
        if !self.two_level {
            return self.linear.get(sid).copied().flatten();
        }
        match self.l1.get(sid >> SPLIT)? {
            L1Entry::Invalid => None,
            L1Entry::Shared(vm) => Some(*vm),
            L1Entry::Private(n) => self
                .private
                .get(*n)?
                .get(sid % L2_ENTRIES)
                .copied()
                .flatten(),
        }
    }

    /// Bytes of memory the tables take: level 1 (or the linear table) and every level-2
    /// table, shared or private.
    pub fn bytes(&self) -> usize {
        if self.two_level {
            self.l1.len() * 8 + (self.shared.len() + self.private.len()) * L2_ENTRIES * STE_BYTES
        } else {
            self.linear.len() * STE_BYTES
        }
    }

    /// The alignment the level-1 (or linear) table needs: its size, at least 64 bytes.
    pub fn base_align(&self) -> usize {
        let bytes = if self.two_level {
            self.l1.len() * 8
        } else {
            self.linear.len() * STE_BYTES
        };
        bytes.next_power_of_two().max(64)
    }
}

/// A level-1 descriptor pointing at a level-2 table of [`L2_ENTRIES`] entries at `l2`
/// (aligned to its 16 KiB): L2Ptr and Span = SPLIT + 1.
pub fn l1_descriptor(l2: u64) -> u64 {
    (l2 & (((1 << 52) - 1) & !0x3f)) | u64::from(SPLIT + 1)
}

/// The level-2 tables of `plan` as the driver allocates them: every shared
/// table, then every private one, each as its owners; the driver turns owners into entries.
pub fn level2_owners(plan: &StreamTablePlan) -> Vec<Vec<Option<usize>>> {
    let mut out: Vec<Vec<Option<usize>>> = plan
        .shared
        .iter()
        .map(|&vm| vec![Some(vm); L2_ENTRIES])
        .collect();
    out.extend(plan.private.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(first: u32, count: u32, owner: usize) -> Claim {
        Claim {
            first,
            count,
            owner,
        }
    }

    #[test]
    fn qemu_pci_bridge_takes_a_few_kib() {
        let plan = StreamTablePlan::new(&[claim(0, 0x1_0000, 0)], 16, true).expect("plan");
        assert!(plan.two_level);
        assert_eq!(plan.log2size, 16);
        assert_eq!(plan.l1.len(), 256);
        assert!(plan.l1.iter().all(|e| *e == L1Entry::Shared(0)));
        assert_eq!(plan.shared, vec![0]);
        assert!(plan.private.is_empty());
        assert_eq!(plan.bytes(), 2048 + 16384);
        assert_eq!(plan.base_align(), 2048);
        assert_eq!(plan.owner(0x1234), Some(0));
    }

    #[test]
    fn mixed_runs_get_private_tables() {
        let claims = [
            claim(0x100, 0x200, 1),
            claim(0x310, 1, 2),
            claim(0x400, 0x10, 2),
        ];
        let plan = StreamTablePlan::new(&claims, 16, true).expect("plan");
        assert_eq!(plan.log2size, 11);
        assert_eq!(
            plan.l1,
            vec![
                L1Entry::Invalid,
                L1Entry::Shared(1),
                L1Entry::Shared(1),
                L1Entry::Private(0),
                L1Entry::Private(1),
                L1Entry::Invalid,
                L1Entry::Invalid,
                L1Entry::Invalid,
            ]
        );
        assert_eq!(plan.owner(0x310), Some(2));
        assert_eq!(plan.owner(0x311), None);
        assert_eq!(plan.owner(0x40f), Some(2));
        assert_eq!(plan.owner(0x410), None);
        assert_eq!(plan.owner(0x800), None, "beyond the table");
        assert_eq!(level2_owners(&plan).len(), 3);
    }

    #[test]
    fn small_or_linear_only() {
        let plan = StreamTablePlan::new(&[claim(3, 1, 0)], 16, true).expect("plan");
        assert!(!plan.two_level);
        assert_eq!((plan.log2size, plan.linear.len()), (2, 4));
        assert_eq!(plan.owner(3), Some(0));
        assert_eq!(
            StreamTablePlan::new(&[claim(0, 0x1_0000, 0)], 16, false),
            Err(PlanError::LinearTooLarge { log2size: 16 })
        );
        let empty = StreamTablePlan::new(&[], 16, true).expect("plan");
        assert_eq!(empty.owner(0), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            StreamTablePlan::new(&[claim(0, 0x1_0000, 0)], 8, true),
            Err(PlanError::SidTooLarge {
                end: 0x1_0000,
                sid_bits: 8
            })
        );
        assert_eq!(
            StreamTablePlan::new(&[claim(0, 0x10, 0), claim(8, 1, 1)], 16, true),
            Err(PlanError::Overlap { sid: 8 })
        );
        assert_eq!(l1_descriptor(0x4000_4000), 0x4000_4009);
    }

    proptest! {
        /// Every stream ID gets exactly the owner its claim gives it, or none.
        #[test]
        fn owners_match_claims(
            runs in proptest::collection::vec((0u32..0x3000, 1u32..0x400), 0..6),
            two_level in any::<bool>(),
        ) {
            let mut claims: Vec<Claim> = Vec::new();
            for (n, (first, count)) in runs.into_iter().enumerate() {
                let c = claim(first, count, n);
                if claims.iter().all(|b| c.end() <= u64::from(b.first) || b.end() <= u64::from(c.first)) {
                    claims.push(c);
                }
            }
            let Ok(plan) = StreamTablePlan::new(&claims, 16, two_level) else {
                prop_assert!(!two_level);
                return Ok(());
            };
            for sid in 0..0x3400u32 {
                let want = claims
                    .iter()
                    .find(|c| u64::from(c.first) <= u64::from(sid) && u64::from(sid) < c.end())
                    .map(|c| c.owner);
                prop_assert_eq!(plan.owner(sid), want, "sid {:#x}", sid);
            }
        }
    }
}
