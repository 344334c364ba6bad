//! The board as this guest needs it: the vCPUs, the GIC, the EL1 timers' INTIDs and the
//! command line, read by `platform` where it accepts the device tree, and otherwise by a
//! plain reader of those few nodes.
//!
//! `platform` reads a DT as a hypervisor does, so it wants the timer node to name the EL2
//! timer's PPI too. A guest's DT need not: Xen gives its dom0less domUs a timer node with
//! the secure, non-secure and virtual PPIs only (the binding makes the rest optional), and
//! this guest must run there to be measured against Xen.

use alloc::string::String;
use alloc::vec::Vec;

use platform::{Gic, MemRange};

/// What the checks need from the DT.
pub struct Board {
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: String,
    /// The MPIDR affinity fields of every vCPU, in DT order.
    pub mpidrs: Vec<u64>,
    /// The interrupt controller.
    pub gic: Gic,
    /// The virtual and the EL1 physical timer's INTIDs.
    pub vtimer_intid: u32,
    pub ptimer_intid: u32,
}

impl Board {
    /// Reads `dtb`: with `platform` first; if that refuses it, with [`Board::read_plain`].
    pub fn read(dtb: &[u8]) -> Result<Board, String> {
        let refused = match platform::Platform::parse(dtb) {
            Ok(board) => {
                let timer = board.timer.ok_or("the device tree has no timer node")?;
                return Ok(Board {
                    bootargs: board.bootargs.unwrap_or_default(),
                    mpidrs: board.cpus.iter().map(|c| c.mpidr).collect(),
                    gic: board.gic,
                    vtimer_intid: timer.virt.intid(),
                    ptimer_intid: timer.phys.intid(),
                });
            }
            Err(e) => e,
        };
        Board::read_plain(dtb)
            .map_err(|why| alloc::format!("cannot read the device tree: {refused}; {why}"))
    }

    /// Reads the nodes this guest needs and nothing else: `/chosen/bootargs`, the `cpu`
    /// nodes' `reg`, the GIC's `reg` (`arm,gic-v3`: the distributor, then the
    /// redistributor regions; `arm,gic-400` or `arm,cortex-a15-gic`: the distributor, then
    /// the CPU interface) and the timer's second and third `interrupts` (the non-secure
    /// physical and the virtual timer, both PPIs).
    fn read_plain(dtb: &[u8]) -> Result<Board, String> {
        let fdt = fdt::Fdt::new(dtb).map_err(|e| alloc::format!("{e:?}"))?;
        let bootargs = fdt
            .find_node("/chosen")
            .and_then(|c| c.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .into();
        let mpidrs: Vec<u64> = fdt
            .find_node("/cpus")
            .ok_or("no /cpus")?
            .children()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
            .map(|n| {
                n.property("reg")
                    .and_then(|p| be_cells(p.value))
                    .ok_or_else(|| alloc::format!("/cpus/{}: bad reg", n.name))
            })
            .collect::<Result<_, _>>()?;
        if mpidrs.is_empty() {
            return Err("no cpu nodes".into());
        }

        let regs = |compatible: &[&str]| -> Option<Vec<MemRange>> {
            let node = fdt.find_compatible(compatible)?;
            Some(
                node.reg()?
                    .map(|r| MemRange {
                        base: r.starting_address as u64,
                        size: r.size.unwrap_or(0) as u64,
                    })
                    .collect(),
            )
        };
        let gic = if let Some(regs) = regs(&["arm,gic-v3"]) {
            match regs.split_first() {
                Some((&gicd, redistributors)) if !redistributors.is_empty() => Gic::V3 {
                    gicd,
                    redistributors: redistributors.to_vec(),
                    redistributor_stride: None,
                    maintenance: None,
                },
                _ => return Err("the GICv3 node's reg lacks the redistributors".into()),
            }
        } else if let Some(regs) = regs(&["arm,gic-400", "arm,cortex-a15-gic"]) {
            match regs.as_slice() {
                [gicd, gicc, ..] => Gic::V2 {
                    gicd: *gicd,
                    gicc: *gicc,
                    gich: None,
                    gicv: None,
                    maintenance: None,
                },
                _ => return Err("the GICv2 node's reg lacks the CPU interface".into()),
            }
        } else {
            return Err("no GIC node".into());
        };

        let timer = fdt
            .find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])
            .ok_or("no timer node")?;
        let cells = interrupt_cells(&timer);
        /// The first cell of a GIC interrupt specifier for a PPI.
        const PPI: u32 = 1;
        let ppi = |index: usize| match cells.get(index * 3..index * 3 + 3) {
            Some(&[PPI, number, _flags]) if number < 16 => Ok(16 + number),
            _ => Err(alloc::format!(
                "the timer's interrupts {cells:?} lack PPI number {index}"
            )),
        };
        Ok(Board {
            bootargs,
            mpidrs,
            gic,
            ptimer_intid: ppi(1)?,
            vtimer_intid: ppi(2)?,
        })
    }
}

/// A `reg` of one or two big-endian cells as a number.
fn be_cells(value: &[u8]) -> Option<u64> {
    match value.len() {
        4 => Some(u64::from(u32::from_be_bytes(value.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

/// A node's `interrupts` property as its big-endian cells (none when it has none).
pub fn interrupt_cells(node: &fdt::node::FdtNode) -> Vec<u32> {
    node.property("interrupts")
        .map(|p| {
            p.value
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default()
}
