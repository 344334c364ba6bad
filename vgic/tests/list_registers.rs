//! The list-register encoders against hand-computed `ICH_LR<n>_EL2` and `GICH_LR<n>` values.

use proptest::prelude::*;
use vgic::{ListRegister, LrState};

fn lr(state: LrState, group1: bool, priority: u8, vintid: u32) -> ListRegister {
    ListRegister {
        state,
        group1,
        priority,
        vintid,
        ..ListRegister::INVALID
    }
}

#[test]
fn ich_lr_software_interrupt() {
    let value = ListRegister {
        eoi_maintenance: true,
        ..lr(LrState::Pending, true, 0xa0, 27)
    };
    // State 0b01 << 62, Group << 60, 0xa0 << 48, EOI << 41, vINTID 27.
    assert_eq!(value.to_ich_lr(), 0x50a0_0200_0000_001b);
    assert_eq!(ListRegister::from_ich_lr(0x50a0_0200_0000_001b), value);
}

#[test]
fn ich_lr_hardware_interrupt() {
    let value = ListRegister {
        hw: true,
        pintid: 27,
        // Ignored when HW is set: the bit is part of pINTID's space then.
        eoi_maintenance: true,
        ..lr(LrState::Active, true, 0x80, 27)
    };
    // State 0b10 << 62, HW << 61, Group << 60, 0x80 << 48, pINTID 27 << 32, vINTID 27.
    assert_eq!(value.to_ich_lr(), 0xb080_001b_0000_001b);
    let back = ListRegister::from_ich_lr(0xb080_001b_0000_001b);
    assert_eq!(
        back,
        ListRegister {
            eoi_maintenance: false,
            ..value
        }
    );
}

#[test]
fn ich_lr_pending_active_group0() {
    let value = lr(LrState::PendingActive, false, 0xf8, 1019);
    assert_eq!(value.to_ich_lr(), 0xc0f8_0000_0000_03fb);
    assert_eq!(ListRegister::INVALID.to_ich_lr(), 0);
}

#[test]
fn gich_lr_sgi_with_source() {
    let value = ListRegister {
        source: 3,
        eoi_maintenance: true,
        ..lr(LrState::Pending, false, 0xa0, 5)
    };
    // State 0b01 << 28, (0xa0 >> 3) << 23, EOI << 19, CPUID 3 << 10, VirtualID 5.
    assert_eq!(value.to_gich_lr(), 0x1a08_0c05);
    assert_eq!(ListRegister::from_gich_lr(0x1a08_0c05), value);
}

#[test]
fn gich_lr_hardware_interrupt() {
    let value = ListRegister {
        hw: true,
        pintid: 40,
        ..lr(LrState::Active, true, 0x80, 40)
    };
    // HW << 31, Grp1 << 30, State 0b10 << 28, 0x10 << 23, PhysicalID 40 << 10, VirtualID 40.
    assert_eq!(value.to_gich_lr(), 0xe800_a028);
    assert_eq!(ListRegister::from_gich_lr(0xe800_a028), value);
}

#[test]
fn gich_lr_keeps_five_priority_bits() {
    let value = lr(LrState::Pending, true, 0xff, 32);
    assert_eq!(value.to_gich_lr(), 0x5000_0000 | (0x1f << 23) | 32);
    assert_eq!(
        ListRegister::from_gich_lr(value.to_gich_lr()).priority,
        0xf8
    );
}

fn state() -> impl Strategy<Value = LrState> {
    prop_oneof![
        Just(LrState::Invalid),
        Just(LrState::Pending),
        Just(LrState::Active),
        Just(LrState::PendingActive),
    ]
}

proptest! {
    #[test]
    fn ich_lr_round_trips(
        state in state(), hw: bool, group1: bool, priority: u8, vintid in 0u32..1020,
        pintid in 16u32..1020, eoi: bool,
    ) {
        let value = ListRegister {
            state, hw, group1, priority, vintid,
            pintid: if hw { pintid } else { 0 },
            source: 0,
            eoi_maintenance: eoi && !hw,
        };
        prop_assert_eq!(ListRegister::from_ich_lr(value.to_ich_lr()), value);
    }

    #[test]
    fn gich_lr_round_trips(
        state in state(), hw: bool, group1: bool, priority: u8, vintid in 0u32..1020,
        pintid in 16u32..1020, source in 0u8..8, eoi: bool,
    ) {
        let value = ListRegister {
            state, hw, group1,
            priority: priority & 0xf8,
            vintid,
            pintid: if hw { pintid } else { 0 },
            source: if hw { 0 } else { source },
            eoi_maintenance: eoi && !hw,
        };
        prop_assert_eq!(ListRegister::from_gich_lr(value.to_gich_lr()), value);
    }

    #[test]
    fn decoders_take_any_value(v3: u64, v2: u32) {
        let a = ListRegister::from_ich_lr(v3);
        let b = ListRegister::from_gich_lr(v2);
        prop_assert_eq!(ListRegister::from_ich_lr(a.to_ich_lr()), a);
        prop_assert_eq!(ListRegister::from_gich_lr(b.to_gich_lr()), b);
    }
}
