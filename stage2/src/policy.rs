//! Which stage-2 mappings a VM gets: its RAM and device windows, minus excluded memory.
//!
//! [`plan`] is pure: it checks the VM's regions, carves the excluded physical ranges (the
//! hypervisor's image, other VMs' private memory, `no-map` reserved memory) out of its RAM,
//! and returns the [`Mapping`]s to give [`Stage2Tables::map`](crate::Stage2Tables::map).

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{is_aligned, IntermediatePhysAddr, PhysAddr, PAGE_SIZE};
use crate::descriptor::Stage2Attrs;
use crate::tables::Mapping;

/// A guest-physical range and the host-physical range behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First IPA.
    pub ipa: IntermediatePhysAddr,
    /// First PA.
    pub pa: PhysAddr,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// A region the guest sees at its physical address (IPA == PA), Tandem's layout.
    pub const fn identity(pa: PhysAddr, size: u64) -> Self {
        Self {
            ipa: IntermediatePhysAddr(pa.0),
            pa,
            size,
        }
    }
}

/// A physical range no VM mapping may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excluded {
    /// First PA; rounded down to 4 KiB.
    pub start: PhysAddr,
    /// Size in bytes; the end is rounded up to 4 KiB.
    pub size: u64,
}

/// Which input a [`PolicyError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionRef {
    /// `memory[n]`.
    Memory(usize),
    /// `devices[n]`.
    Device(usize),
    /// `exclude[n]`.
    Exclude(usize),
}

impl fmt::Display for RegionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(i) => write!(f, "memory region {i}"),
            Self::Device(i) => write!(f, "device window {i}"),
            Self::Exclude(i) => write!(f, "excluded range {i}"),
        }
    }
}

/// Why [`plan`] refused a VM's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// A region has size 0.
    Empty(RegionRef),
    /// A region's IPA, PA or size is not a multiple of 4 KiB.
    Unaligned(RegionRef),
    /// A range wraps around the end of the 64-bit address space.
    Overflow(RegionRef),
    /// Two regions share guest-physical addresses.
    IpaOverlap(RegionRef, RegionRef),
    /// Two regions share host-physical addresses (the guest would see the same memory twice).
    PaOverlap(RegionRef, RegionRef),
    /// A device window reaches excluded memory; device windows are never carved.
    DeviceExcluded {
        /// The device window.
        device: RegionRef,
        /// The excluded range it touches.
        exclude: RegionRef,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty(r) => write!(f, "{r} is empty"),
            Self::Unaligned(r) => write!(f, "{r} is not 4 KiB aligned"),
            Self::Overflow(r) => write!(f, "{r} wraps around the address space"),
            Self::IpaOverlap(a, b) => write!(f, "{a} and {b} overlap in guest addresses"),
            Self::PaOverlap(a, b) => write!(f, "{a} and {b} overlap in physical addresses"),
            Self::DeviceExcluded { device, exclude } => {
                write!(f, "{device} reaches {exclude}, which no VM may map")
            }
        }
    }
}

/// The mappings for a VM: each `memory` region as Normal read-write executable memory
/// ([`Stage2Attrs::NORMAL_RWX`]) minus the `exclude` ranges, and each `devices` window as
/// Device-nGnRE read-write execute-never ([`Stage2Attrs::DEVICE_RW`]), sorted by IPA.
///
/// Refuses empty, unaligned or wrapping regions, any two regions overlapping in IPA or in PA,
/// and device windows touching excluded memory.
pub fn plan(
    memory: &[Region],
    devices: &[Region],
    exclude: &[Excluded],
) -> Result<Vec<Mapping>, PolicyError> {
    let mut all: Vec<(RegionRef, Region)> = Vec::new();
    all.extend(
        memory
            .iter()
            .enumerate()
            .map(|(i, r)| (RegionRef::Memory(i), *r)),
    );
    all.extend(
        devices
            .iter()
            .enumerate()
            .map(|(i, r)| (RegionRef::Device(i), *r)),
    );
    for (id, r) in &all {
        check_region(*id, r)?;
    }
    let excluded = exclude
        .iter()
        .enumerate()
        .map(|(i, e)| rounded(i, e))
        .collect::<Result<Vec<_>, _>>()?;

    check_disjoint(&all, |r| r.ipa.0, PolicyError::IpaOverlap)?;
    check_disjoint(&all, |r| r.pa.0, PolicyError::PaOverlap)?;

    let mut out = Vec::new();
    for (id, r) in &all {
        match id {
            RegionRef::Device(_) => {
                if let Some(&(ex, _, _)) = excluded
                    .iter()
                    .find(|&&(_, s, e)| s < e && s < r.pa.0 + r.size && r.pa.0 < e)
                {
                    return Err(PolicyError::DeviceExcluded {
                        device: *id,
                        exclude: ex,
                    });
                }
                out.push(Mapping {
                    ipa: r.ipa,
                    pa: r.pa,
                    size: r.size,
                    attrs: Stage2Attrs::DEVICE_RW,
                });
            }
            _ => carve(r, &excluded, &mut out),
        }
    }
    out.sort_by_key(|m| m.ipa);
    Ok(out)
}

fn check_region(id: RegionRef, r: &Region) -> Result<(), PolicyError> {
    if r.size == 0 {
        return Err(PolicyError::Empty(id));
    }
    if !is_aligned(r.ipa.0 | r.pa.0 | r.size, PAGE_SIZE) {
        return Err(PolicyError::Unaligned(id));
    }
    if r.ipa.0.checked_add(r.size).is_none() || r.pa.0.checked_add(r.size).is_none() {
        return Err(PolicyError::Overflow(id));
    }
    Ok(())
}

/// An excluded range as `[start, end)` widened to 4 KiB boundaries.
fn rounded(index: usize, e: &Excluded) -> Result<(RegionRef, u64, u64), PolicyError> {
    let id = RegionRef::Exclude(index);
    let end = e
        .start
        .0
        .checked_add(e.size)
        .and_then(|end| end.checked_add(PAGE_SIZE - 1))
        .ok_or(PolicyError::Overflow(id))?;
    Ok((id, e.start.0 & !(PAGE_SIZE - 1), end & !(PAGE_SIZE - 1)))
}

/// Refuses any two regions whose `[key, key + size)` ranges intersect.
fn check_disjoint(
    all: &[(RegionRef, Region)],
    key: impl Fn(&Region) -> u64,
    error: impl Fn(RegionRef, RegionRef) -> PolicyError,
) -> Result<(), PolicyError> {
    let mut sorted: Vec<&(RegionRef, Region)> = all.iter().collect();
    sorted.sort_by_key(|(_, r)| key(r));
    for pair in sorted.windows(2) {
        if let [(a, ra), (b, rb)] = pair {
            if key(ra) + ra.size > key(rb) {
                return Err(error(*a, *b));
            }
        }
    }
    Ok(())
}

/// Pushes the parts of memory region `r` that no excluded range covers.
fn carve(r: &Region, excluded: &[(RegionRef, u64, u64)], out: &mut Vec<Mapping>) {
    let mut holes: Vec<(u64, u64)> = excluded
        .iter()
        .map(|&(_, s, e)| (s.max(r.pa.0), e.min(r.pa.0 + r.size)))
        .filter(|(s, e)| s < e)
        .collect();
    holes.sort_unstable();
    let mut next = r.pa.0;
    let end = r.pa.0 + r.size;
    for (hole_start, hole_end) in holes.into_iter().chain([(end, end)]) {
        if hole_start > next {
            out.push(Mapping {
                ipa: IntermediatePhysAddr(r.ipa.0 + (next - r.pa.0)),
                pa: PhysAddr(next),
                size: hole_start - next,
                attrs: Stage2Attrs::NORMAL_RWX,
            });
        }
        next = next.max(hole_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn ram(pa: u64, size: u64) -> Region {
        Region::identity(PhysAddr(pa), size)
    }

    #[test]
    fn memory_and_devices_get_their_attributes() {
        let plan =
            plan(&[ram(0x4000_0000, GIB)], &[ram(0x0900_0000, 0x1000)], &[]).expect("valid layout");
        assert_eq!(
            plan,
            vec![
                Mapping {
                    ipa: IntermediatePhysAddr(0x0900_0000),
                    pa: PhysAddr(0x0900_0000),
                    size: 0x1000,
                    attrs: Stage2Attrs::DEVICE_RW,
                },
                Mapping {
                    ipa: IntermediatePhysAddr(0x4000_0000),
                    pa: PhysAddr(0x4000_0000),
                    size: GIB,
                    attrs: Stage2Attrs::NORMAL_RWX,
                },
            ]
        );
    }

    #[test]
    fn excluded_ranges_are_carved_out_of_memory() {
        let memory = [Region {
            ipa: IntermediatePhysAddr(0x8000_0000),
            pa: PhysAddr(0x4000_0000),
            size: GIB,
        }];
        // Unaligned exclusion widened to whole pages: [0x4010_0000, 0x4020_1000).
        let exclude = [
            Excluded {
                start: PhysAddr(0x4010_0000),
                size: 0x10_0800,
            },
            Excluded {
                start: PhysAddr(0x7fff_f000),
                size: 0x10_0000,
            },
        ];
        let plan = plan(&memory, &[], &exclude).expect("valid layout");
        let got: Vec<(u64, u64, u64)> = plan.iter().map(|m| (m.ipa.0, m.pa.0, m.size)).collect();
        assert_eq!(
            got,
            vec![
                (0x8000_0000, 0x4000_0000, 0x10_0000),
                (0x8020_1000, 0x4020_1000, 0x3fdf_e000),
            ]
        );
    }

    #[test]
    fn overlaps_are_refused() {
        let a = ram(0x4000_0000, GIB);
        let b = ram(0x4000_0000 + GIB - 0x1000, 0x2000);
        assert_eq!(
            plan(&[a, b], &[], &[]),
            Err(PolicyError::IpaOverlap(
                RegionRef::Memory(0),
                RegionRef::Memory(1)
            ))
        );
        let aliased = Region {
            ipa: IntermediatePhysAddr(0x1_0000_0000),
            pa: PhysAddr(0x4000_0000),
            size: 0x1000,
        };
        assert_eq!(
            plan(&[a], &[aliased], &[]),
            Err(PolicyError::PaOverlap(
                RegionRef::Memory(0),
                RegionRef::Device(0)
            ))
        );
    }

    #[test]
    fn devices_touching_excluded_memory_are_refused() {
        let exclude = [Excluded {
            start: PhysAddr(0x0900_0000),
            size: 1,
        }];
        assert_eq!(
            plan(&[], &[ram(0x0900_0000, 0x1000)], &exclude),
            Err(PolicyError::DeviceExcluded {
                device: RegionRef::Device(0),
                exclude: RegionRef::Exclude(0),
            })
        );
    }

    #[test]
    fn bad_regions_are_refused() {
        assert_eq!(
            plan(&[ram(0x1000, 0)], &[], &[]),
            Err(PolicyError::Empty(RegionRef::Memory(0)))
        );
        assert_eq!(
            plan(&[], &[ram(0x1800, 0x1000)], &[]),
            Err(PolicyError::Unaligned(RegionRef::Device(0)))
        );
        assert_eq!(
            plan(&[ram(!0xfff, 0x2000)], &[], &[]),
            Err(PolicyError::Overflow(RegionRef::Memory(0)))
        );
    }
}
