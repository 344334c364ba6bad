//! Every distributor and redistributor register: reset values, read-back, RAZ/WI, byte
//! access, banking per vCPU, and defined answers for every offset and width.

use vgic::{
    AccessWidth, Effect, GicVersion, Ignored, Note, Region, Vgic, VgicConfig, GICD_SIZE_V2,
    GICD_SIZE_V3, GICR_STRIDE,
};

const SGI: u64 = 0x1_0000;

fn vgic(version: GicVersion, vcpus: usize, spis: u32) -> Vgic {
    Vgic::new(VgicConfig {
        version,
        vcpus,
        spis,
    })
    .expect("valid configuration")
}

fn rd(g: &Vgic, vcpu: usize, offset: u64) -> u64 {
    let mut fx = Vec::new();
    let value = g.dist_read(vcpu, offset, AccessWidth::Word, &mut fx);
    assert_eq!(fx, [], "read {offset:#x}");
    value
}

fn wr(g: &mut Vgic, vcpu: usize, offset: u64, value: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    g.dist_write(vcpu, offset, AccessWidth::Word, value, &mut fx);
    fx
}

fn rrd(g: &Vgic, vcpu: usize, offset: u64) -> u64 {
    let mut fx = Vec::new();
    let value = g.redist_read(vcpu, offset, AccessWidth::Word, &mut fx);
    assert_eq!(fx, [], "read {offset:#x}");
    value
}

fn rwr(g: &mut Vgic, vcpu: usize, offset: u64, value: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    g.redist_write(vcpu, offset, AccessWidth::Word, value, &mut fx);
    fx
}

fn ignored(region: Region, offset: u64, width: AccessWidth, write: bool, why: Ignored) -> Effect {
    Effect::Note(Note::Ignored {
        region,
        offset,
        width,
        write,
        why,
    })
}

#[test]
fn configurations_are_checked() {
    let cfg = |version, vcpus, spis| {
        Vgic::new(VgicConfig {
            version,
            vcpus,
            spis,
        })
        .is_ok()
    };
    assert!(cfg(GicVersion::V2, 8, 32));
    assert!(!cfg(GicVersion::V2, 9, 32));
    assert!(cfg(GicVersion::V3, 16, 988));
    assert!(!cfg(GicVersion::V3, 17, 32));
    assert!(!cfg(GicVersion::V3, 0, 32));
    assert!(!cfg(GicVersion::V3, 1, 33));
    assert!(!cfg(GicVersion::V3, 1, 1024));
    assert!(cfg(GicVersion::V3, 1, 0));
}

#[test]
fn v3_ctlr() {
    let mut g = vgic(GicVersion::V3, 2, 64);
    // ARE and DS are RAO/WI; RWP always reads 0.
    assert_eq!(rd(&g, 0, 0x0), 0x50);
    assert_eq!(wr(&mut g, 0, 0x0, 0x8000_0013), []);
    assert_eq!(rd(&g, 0, 0x0), 0x53);
    wr(&mut g, 0, 0x0, 0);
    assert_eq!(rd(&g, 0, 0x0), 0x50);
}

#[test]
fn v2_ctlr() {
    let mut g = vgic(GicVersion::V2, 2, 64);
    assert_eq!(rd(&g, 0, 0x0), 0);
    wr(&mut g, 1, 0x0, 0xffff_ffff);
    assert_eq!(rd(&g, 0, 0x0), 0x3);
}

#[test]
fn typer_iidr_pidr2() {
    let g = vgic(GicVersion::V3, 4, 64);
    // ITLinesNumber 2, IDbits 9, A3V.
    assert_eq!(rd(&g, 0, 0x4), 2 | (9 << 19) | (1 << 24));
    assert_eq!(rd(&g, 0, 0x8), 0x5400_043b);
    assert_eq!(rd(&g, 0, 0xffe8), 0x3b);
    let g = vgic(GicVersion::V3, 1, 988);
    assert_eq!(rd(&g, 0, 0x4) & 0x1f, 31);
    let g = vgic(GicVersion::V2, 4, 32);
    // ITLinesNumber 1, CPUNumber 3.
    assert_eq!(rd(&g, 0, 0x4), 1 | (3 << 5));
    assert_eq!(rd(&g, 0, 0xfe8), 0x2b);
}

#[test]
fn read_only_registers_ignore_writes() {
    let mut g = vgic(GicVersion::V3, 1, 32);
    let before = rd(&g, 0, 0x4);
    assert_eq!(
        wr(&mut g, 0, 0x4, 0),
        [ignored(
            Region::Distributor,
            0x4,
            AccessWidth::Word,
            true,
            Ignored::ReadOnly
        )]
    );
    assert_eq!(rd(&g, 0, 0x4), before);
}

#[test]
fn enable_pending_active_set_clear_pairs() {
    for version in [GicVersion::V2, GicVersion::V3] {
        let mut g = vgic(version, 2, 64);
        for (set, clear) in [(0x104, 0x184), (0x204, 0x284), (0x304, 0x384)] {
            wr(&mut g, 0, set, 0x5);
            assert_eq!(rd(&g, 0, set), 0x5);
            assert_eq!(rd(&g, 1, clear), 0x5);
            wr(&mut g, 0, clear, 0x1);
            assert_eq!(rd(&g, 0, set), 0x4);
            // Zero bits change nothing.
            wr(&mut g, 0, set, 0);
            assert_eq!(rd(&g, 0, set), 0x4);
        }
        // Beyond the implemented SPIs: RAZ/WI.
        wr(&mut g, 0, 0x10c, u64::MAX);
        assert_eq!(rd(&g, 0, 0x10c), 0);
    }
}

#[test]
fn v3_distributor_private_registers_are_raz_wi() {
    let mut g = vgic(GicVersion::V3, 1, 32);
    for offset in [
        0x80, 0x100, 0x200, 0x300, 0x400, 0x41c, 0xc00, 0xc04, 0x800, 0xf00,
    ] {
        assert_eq!(wr(&mut g, 0, offset, u64::MAX), [], "{offset:#x}");
        assert_eq!(rd(&g, 0, offset), 0, "{offset:#x}");
    }
    // The redistributor still sees nothing set.
    assert_eq!(rrd(&g, 0, SGI + 0x100), 0);
}

#[test]
fn v2_distributor_banks_sgis_and_ppis() {
    let mut g = vgic(GicVersion::V2, 2, 32);
    wr(&mut g, 0, 0x100, 0x0001_0002);
    assert_eq!(rd(&g, 0, 0x100), 0x0001_0002);
    assert_eq!(rd(&g, 1, 0x100), 0);
    // SGI pending bits are read-only in ISPENDR0/ICPENDR0; PPIs are not.
    wr(&mut g, 1, 0x200, 0x0001_0002);
    assert_eq!(rd(&g, 1, 0x200), 0x0001_0000);
    assert_eq!(rd(&g, 0, 0x200), 0);
}

#[test]
fn priorities_byte_and_word_keep_five_bits() {
    let mut g = vgic(GicVersion::V3, 1, 64);
    let mut fx = Vec::new();
    g.dist_write(0, 0x400 + 41, AccessWidth::Byte, 0xff, &mut fx);
    assert_eq!(g.dist_read(0, 0x400 + 41, AccessWidth::Byte, &mut fx), 0xf8);
    assert_eq!(rd(&g, 0, 0x428), 0xf800);
    wr(&mut g, 0, 0x420, 0x1234_5678);
    assert_eq!(rd(&g, 0, 0x420), 0x1030_5078);
    assert_eq!(g.dist_read(0, 0x423, AccessWidth::Byte, &mut fx), 0x10);
    assert_eq!(fx, []);
    // Halfword: not an allowed width for IPRIORITYR.
    g.dist_write(0, 0x420, AccessWidth::Half, 0, &mut fx);
    assert_eq!(
        fx,
        [ignored(
            Region::Distributor,
            0x420,
            AccessWidth::Half,
            true,
            Ignored::BadWidth
        )]
    );
    assert_eq!(rd(&g, 0, 0x420), 0x1030_5078);
}

#[test]
fn word_registers_refuse_other_widths() {
    let mut g = vgic(GicVersion::V3, 1, 32);
    let mut fx = Vec::new();
    g.dist_write(0, 0x104, AccessWidth::Byte, 0xff, &mut fx);
    assert_eq!(g.dist_read(0, 0x104, AccessWidth::Double, &mut fx), 0);
    g.dist_write(0, 0x106, AccessWidth::Word, 0xff, &mut fx);
    assert_eq!(
        fx,
        [
            ignored(
                Region::Distributor,
                0x104,
                AccessWidth::Byte,
                true,
                Ignored::BadWidth
            ),
            ignored(
                Region::Distributor,
                0x104,
                AccessWidth::Double,
                false,
                Ignored::BadWidth
            ),
            ignored(
                Region::Distributor,
                0x106,
                AccessWidth::Word,
                true,
                Ignored::Misaligned
            ),
        ]
    );
    assert_eq!(rd(&g, 0, 0x104), 0);
}

#[test]
fn unknown_offsets_note_and_read_zero() {
    let mut g = vgic(GicVersion::V3, 1, 32);
    let mut fx = Vec::new();
    assert_eq!(g.dist_read(0, 0x3000, AccessWidth::Word, &mut fx), 0);
    g.dist_write(0, 0x1_0000, AccessWidth::Word, 1, &mut fx);
    assert_eq!(
        fx,
        [
            ignored(
                Region::Distributor,
                0x3000,
                AccessWidth::Word,
                false,
                Ignored::Unimplemented
            ),
            ignored(
                Region::Distributor,
                0x1_0000,
                AccessWidth::Word,
                true,
                Ignored::OutsideFrame
            ),
        ]
    );
    // A vCPU index the VM does not have.
    fx.clear();
    assert_eq!(g.dist_read(3, 0x0, AccessWidth::Word, &mut fx), 0);
    assert_eq!(
        fx,
        [ignored(
            Region::Distributor,
            0x0,
            AccessWidth::Word,
            false,
            Ignored::NoSuchVcpu
        )]
    );
}

#[test]
fn icfgr() {
    let mut g = vgic(GicVersion::V3, 1, 64);
    assert_eq!(rd(&g, 0, 0xc08), 0);
    wr(&mut g, 0, 0xc08, 0xffff_ffff);
    assert_eq!(rd(&g, 0, 0xc08), 0xaaaa_aaaa);
    // SGIs: always edge, read-only; PPIs: as configured.
    assert_eq!(rrd(&g, 0, SGI + 0xc00), 0xaaaa_aaaa);
    rwr(&mut g, 0, SGI + 0xc00, 0);
    assert_eq!(rrd(&g, 0, SGI + 0xc00), 0xaaaa_aaaa);
    rwr(&mut g, 0, SGI + 0xc04, 0x0000_0008);
    assert_eq!(rrd(&g, 0, SGI + 0xc04), 0x0000_0008);

    let mut g = vgic(GicVersion::V2, 2, 32);
    assert_eq!(rd(&g, 0, 0xc00), 0xaaaa_aaaa);
    wr(&mut g, 0, 0xc00, 0);
    assert_eq!(rd(&g, 0, 0xc00), 0xaaaa_aaaa);
    wr(&mut g, 1, 0xc04, 0x8000_0000);
    assert_eq!(rd(&g, 1, 0xc04), 0x8000_0000);
    assert_eq!(rd(&g, 0, 0xc04), 0);
}

#[test]
fn igroupr() {
    let mut g = vgic(GicVersion::V3, 1, 32);
    assert_eq!(rd(&g, 0, 0x84), 0xffff_ffff);
    assert_eq!(rrd(&g, 0, SGI + 0x80), 0xffff_ffff);
    wr(&mut g, 0, 0x84, 0x0f0f_0f0f);
    assert_eq!(rd(&g, 0, 0x84), 0x0f0f_0f0f);
    let mut g = vgic(GicVersion::V2, 1, 32);
    assert_eq!(rd(&g, 0, 0x80), 0);
    wr(&mut g, 0, 0x80, 0x3);
    assert_eq!(rd(&g, 0, 0x80), 0x3);
}

#[test]
fn irouter_64_and_32_bit() {
    let mut g = vgic(GicVersion::V3, 4, 64);
    let mut fx = Vec::new();
    let at = 0x6000 + 8 * 40;
    assert_eq!(g.dist_read(0, at, AccessWidth::Double, &mut fx), 0);
    g.dist_write(0, at, AccessWidth::Double, u64::MAX, &mut fx);
    assert_eq!(
        g.dist_read(0, at, AccessWidth::Double, &mut fx),
        0xff_80ff_ffff
    );
    g.dist_write(0, at, AccessWidth::Word, 0x3, &mut fx);
    assert_eq!(
        g.dist_read(0, at, AccessWidth::Double, &mut fx),
        0xff_0000_0003
    );
    g.dist_write(0, at + 4, AccessWidth::Word, 0, &mut fx);
    assert_eq!(g.dist_read(0, at, AccessWidth::Double, &mut fx), 0x3);
    assert_eq!(g.dist_read(0, at + 4, AccessWidth::Word, &mut fx), 0);
    assert_eq!(fx, []);
    // IROUTER<0..31> do not exist; neither do unimplemented SPIs' routes.
    g.dist_write(0, 0x6000 + 8 * 5, AccessWidth::Double, 1, &mut fx);
    assert_eq!(
        g.dist_read(0, 0x6000 + 8 * 5, AccessWidth::Double, &mut fx),
        0
    );
    g.dist_write(0, 0x6000 + 8 * 200, AccessWidth::Double, 1, &mut fx);
    assert_eq!(
        g.dist_read(0, 0x6000 + 8 * 200, AccessWidth::Double, &mut fx),
        0
    );
    // Byte access: not allowed.
    g.dist_write(0, at, AccessWidth::Byte, 1, &mut fx);
    assert_eq!(fx.len(), 1);
    assert_eq!(g.dist_read(0, at, AccessWidth::Double, &mut fx), 0x3);
}

#[test]
fn v2_itargetsr() {
    let mut g = vgic(GicVersion::V2, 4, 32);
    let mut fx = Vec::new();
    // Banked, read-only: each byte names the reading CPU interface.
    assert_eq!(rd(&g, 0, 0x800), 0x0101_0101);
    assert_eq!(rd(&g, 2, 0x81c), 0x0404_0404);
    assert_eq!(g.dist_read(3, 0x803, AccessWidth::Byte, &mut fx), 0x08);
    wr(&mut g, 0, 0x800, 0);
    assert_eq!(rd(&g, 0, 0x800), 0x0101_0101);
    // SPIs reset to vCPU 0; bits for vCPUs that do not exist read as zero.
    assert_eq!(rd(&g, 0, 0x820), 0x0101_0101);
    g.dist_write(0, 0x821, AccessWidth::Byte, 0xff, &mut fx);
    assert_eq!(rd(&g, 0, 0x820), 0x0101_0f01);
    wr(&mut g, 0, 0x824, 0x0102_0408);
    assert_eq!(rd(&g, 0, 0x824), 0x0102_0408);
    assert_eq!(fx, []);
}

#[test]
fn v2_sgi_pending_registers_by_source() {
    let mut g = vgic(GicVersion::V2, 4, 32);
    let mut fx = Vec::new();
    // vCPU 2 sets SGI 5 pending from sources 0 and 3 (bytes per SGI, bits per source).
    g.dist_write(2, 0xf25, AccessWidth::Byte, 0x09, &mut fx);
    assert_eq!(rd(&g, 2, 0xf24), 0x0000_0900);
    assert_eq!(rd(&g, 2, 0xf14), 0x0000_0900);
    assert_eq!(rd(&g, 2, 0x200), 1 << 5);
    assert_eq!(rd(&g, 1, 0xf24), 0);
    g.dist_write(2, 0xf15, AccessWidth::Byte, 0x01, &mut fx);
    assert_eq!(rd(&g, 2, 0xf24), 0x0000_0800);
    // Sources beyond the vCPUs are ignored.
    g.dist_write(2, 0xf20, AccessWidth::Byte, 0xf0, &mut fx);
    assert_eq!(rd(&g, 2, 0xf20) & 0xff, 0);
    assert_eq!(fx, []);
}

#[test]
fn v2_sgir_is_write_only() {
    let g = vgic(GicVersion::V2, 1, 32);
    let mut fx = Vec::new();
    assert_eq!(g.dist_read(0, 0xf00, AccessWidth::Word, &mut fx), 0);
    assert_eq!(
        fx,
        [ignored(
            Region::Distributor,
            0xf00,
            AccessWidth::Word,
            false,
            Ignored::WriteOnly
        )]
    );
}

#[test]
fn gicr_typer_and_last() {
    let g = vgic(GicVersion::V3, 3, 32);
    let mut fx = Vec::new();
    for vcpu in 0..3u64 {
        let typer = g.redist_read(0, vcpu * GICR_STRIDE + 0x8, AccessWidth::Double, &mut fx);
        let last = if vcpu == 2 { 1 << 4 } else { 0 };
        assert_eq!(typer, (vcpu << 32) | (vcpu << 8) | last);
        let low = g.redist_read(1, vcpu * GICR_STRIDE + 0x8, AccessWidth::Word, &mut fx);
        let high = g.redist_read(1, vcpu * GICR_STRIDE + 0xc, AccessWidth::Word, &mut fx);
        assert_eq!((high << 32) | low, typer);
    }
    assert_eq!(rrd(&g, 0, 0x4), 0x5400_043b);
    assert_eq!(rrd(&g, 0, 0xffe8), 0x3b);
    assert_eq!(rrd(&g, 0, 2 * GICR_STRIDE + 0xffe8), 0x3b);
    assert_eq!(fx, []);
    // Past the last redistributor.
    assert_eq!(
        g.redist_read(0, 3 * GICR_STRIDE + 0x8, AccessWidth::Double, &mut fx),
        0
    );
    assert_eq!(
        fx,
        [ignored(
            Region::Redistributor,
            3 * GICR_STRIDE + 0x8,
            AccessWidth::Double,
            false,
            Ignored::OutsideFrame
        )]
    );
}

#[test]
fn gicr_waker_handshake() {
    let mut g = vgic(GicVersion::V3, 2, 32);
    // Reset: ProcessorSleep and ChildrenAsleep set.
    assert_eq!(rrd(&g, 1, GICR_STRIDE + 0x14), 0x6);
    rwr(&mut g, 1, GICR_STRIDE + 0x14, 0);
    assert_eq!(rrd(&g, 1, GICR_STRIDE + 0x14), 0);
    assert_eq!(rrd(&g, 1, 0x14), 0x6);
    rwr(&mut g, 1, GICR_STRIDE + 0x14, 0x2);
    assert_eq!(rrd(&g, 1, GICR_STRIDE + 0x14), 0x6);
    // CTLR: no LPIs, RWP 0.
    rwr(&mut g, 0, 0x0, u64::MAX);
    assert_eq!(rrd(&g, 0, 0x0), 0);
}

#[test]
fn gicr_sgi_frame_is_banked() {
    let mut g = vgic(GicVersion::V3, 2, 32);
    let frame1 = GICR_STRIDE + SGI;
    // vCPU 0 writes vCPU 1's frame.
    rwr(&mut g, 0, frame1 + 0x100, 0x8000_0001);
    assert_eq!(rrd(&g, 0, frame1 + 0x100), 0x8000_0001);
    assert_eq!(rrd(&g, 1, frame1 + 0x180), 0x8000_0001);
    assert_eq!(rrd(&g, 0, SGI + 0x100), 0);
    rwr(&mut g, 1, frame1 + 0x180, 0x1);
    assert_eq!(rrd(&g, 1, frame1 + 0x100), 0x8000_0000);
    for (set, clear) in [(0x200, 0x280), (0x300, 0x380)] {
        rwr(&mut g, 1, frame1 + set, 0x0001_0003);
        assert_eq!(rrd(&g, 1, frame1 + clear), 0x0001_0003);
        assert_eq!(rrd(&g, 1, SGI + set), 0);
        rwr(&mut g, 1, frame1 + clear, 0x0000_0001);
        assert_eq!(rrd(&g, 1, frame1 + set), 0x0001_0002);
    }
    let mut fx = Vec::new();
    g.redist_write(1, frame1 + 0x41b, AccessWidth::Byte, 0xa7, &mut fx);
    assert_eq!(rrd(&g, 1, frame1 + 0x418), 0xa000_0000);
    assert_eq!(
        g.redist_read(0, frame1 + 0x41b, AccessWidth::Byte, &mut fx),
        0xa0
    );
    assert_eq!(rrd(&g, 1, SGI + 0x418), 0);
    rwr(&mut g, 1, frame1 + 0x80, 0x0);
    assert_eq!(rrd(&g, 1, frame1 + 0x80), 0);
    assert_eq!(rrd(&g, 1, SGI + 0x80), 0xffff_ffff);
    assert_eq!(fx, []);
}

#[test]
fn redistributors_do_not_exist_on_v2() {
    let g = vgic(GicVersion::V2, 1, 32);
    let mut fx = Vec::new();
    assert_eq!(g.redist_read(0, 0x8, AccessWidth::Word, &mut fx), 0);
    assert_eq!(fx.len(), 1);
}

#[test]
fn every_offset_and_width_has_an_answer() {
    let widths = [
        AccessWidth::Byte,
        AccessWidth::Half,
        AccessWidth::Word,
        AccessWidth::Double,
    ];
    for (version, size) in [
        (GicVersion::V2, GICD_SIZE_V2),
        (GicVersion::V3, GICD_SIZE_V3),
    ] {
        let mut g = vgic(version, 2, 64);
        let mut fx = Vec::new();
        for offset in 0..size + 16 {
            for width in widths {
                let value = g.dist_read(1, offset, width, &mut fx);
                assert_eq!(value & !width_mask(width), 0);
                g.dist_write(1, offset, width, u64::MAX, &mut fx);
                fx.clear();
            }
        }
        for offset in 0..2 * GICR_STRIDE + 16 {
            for width in widths {
                let value = g.redist_read(0, offset, width, &mut fx);
                assert_eq!(value & !width_mask(width), 0);
                g.redist_write(0, offset, width, u64::MAX, &mut fx);
                fx.clear();
            }
        }
    }
}

fn width_mask(width: AccessWidth) -> u64 {
    match width.bytes() {
        8 => u64::MAX,
        n => (1 << (8 * n)) - 1,
    }
}
