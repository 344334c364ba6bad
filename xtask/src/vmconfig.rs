//! `cargo xtask run --config FILE.dtsi`: builds the DT QEMU boots, the way Xen's ImageBuilder
//! does for dom0less. The board's own DTB (dumped from QEMU for the chosen machine, or
//! Debian's for raspi4b) gets the `/hypervisor` fragment of FILE; each module node that
//! names its file with the xtask-only property `xtask,file` gets its `reg` (its unit
//! address, the file's size) and is placed there with QEMU's `-device loader`; the result
//! is checked with `check-config` before QEMU starts.
//!
//! `xtask,file` values: `@guest:<name>` (a test guest, `target/guests/<name>.bin`), `@linux`
//! (Debian's arm64 kernel `Image`), `@initramfs` (the busybox initramfs,
//! `target/initramfs.cpio`, built when needed), or a path relative to FILE. The property is
//! removed before boot: the hypervisor never sees it.
//!
//! The rich-OS options (`--kernel`, `--initrd`, `--dtb`, `--bootargs`) change the VM
//! labelled `linux` (or else the first VM that boots `@linux`): its kernel and ramdisk
//! modules get the user's files, `--dtb` adds (or replaces) its `multiboot,device-tree`
//! module, `--bootargs` replaces its `bootargs`. A user's file that does not fit where the
//! config puts that module, or a module the config does not have, is placed in free RAM
//! above the other modules. All of it is written as a second DTS fragment merged after
//! FILE, so `board+config.dts` in the run directory shows exactly what boots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use platform::config::{self as binding, ModuleKind};
use platform::{MemRange, Platform};

use crate::check_config::{self, CheckConfigArgs};
use crate::cmd::{self, bail, Error, Result};
use crate::debian;
use crate::qemu::{Board, Machine};

const MIB: u64 = 1 << 20;
/// Modules xtask places start on 2 MiB boundaries.
const ALIGN: u64 = 2 * MIB;
/// QEMU's direct boot puts the DTB at RAM base + 128 MiB (for RAM of 256 MiB or more);
/// the DTB takes far less than this.
const QEMU_DTB_OFFSET: u64 = 128 * MIB;
const QEMU_DTB_ROOM: u64 = 2 * MIB;
/// Modules xtask places keep clear of the top of RAM, where U-Boot relocates itself and
/// the DTB and initrd it hands over.
const FIRMWARE_TOP: u64 = 256 * MIB;

/// The rich-OS options of `cargo xtask run`, already checked (files exist and look right).
#[derive(Debug, Clone, Default)]
pub struct RichOsOptions {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub bootargs: Option<String>,
}

impl RichOsOptions {
    pub fn any(&self) -> bool {
        self.kernel.is_some()
            || self.initrd.is_some()
            || self.dtb.is_some()
            || self.bootargs.is_some()
    }
}

/// The DTB to boot and the files to load.
pub struct Composed {
    pub dtb: PathBuf,
    /// (file, physical address) pairs for `-device loader`.
    pub modules: Vec<(PathBuf, u64)>,
    /// The rich-OS VM, if the config has one.
    pub rich_os: Option<RichOs>,
}

/// The rich-OS VM as configured: what `--native` boots straight on QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RichOs {
    /// Its node, e.g. `/hypervisor/vm@0`.
    pub node: String,
    pub label: String,
    pub cpus: usize,
    /// The sum of its memory ranges.
    pub memory: u64,
    /// Its images' files (`None` for a module placed by the config itself, without
    /// `xtask,file`).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub bootargs: Option<String>,
}

fn tool(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    cmd::output(&mut command)
}

/// The machine's DTB as QEMU would generate it.
pub fn base_dtb(machine: &Machine, out: &Path) -> Result<()> {
    match machine.board {
        Board::Virt => {
            let gic = match machine.gic {
                crate::qemu::Gic::V2 => 2,
                crate::qemu::Gic::V3 => 3,
            };
            let iommu = if machine.smmu { ",iommu=smmuv3" } else { "" };
            let m = format!(
                "virt,virtualization=on,gic-version={gic}{iommu},dumpdtb={}",
                out.display()
            );
            let cpus = machine.cpus.to_string();
            let mem = machine.mem.to_string();
            tool(
                "qemu-system-aarch64",
                &[
                    "-M", &m, "-cpu", "max", "-smp", &cpus, "-m", &mem, "-display", "none",
                ],
            )?;
        }
        Board::Raspi4b => {
            let dtb = debian::kernel()?.rpi4_dtb();
            std::fs::copy(&dtb, out)
                .map_err(|e| cmd::Error::new(format!("{}: {e}", dtb.display())))?;
            // The file's memory node is zero-sized; QEMU writes 960 MiB into it at boot.
            // Do the same here, so the config is checked against the RAM the board has.
            let file = out.to_string_lossy();
            tool(
                "fdtput",
                &["-t", "x", &file, "/memory@0", "reg", "0", "0", "0x3c000000"],
            )?;
        }
    }
    Ok(())
}

/// Resolves an `xtask,file` value.
fn resolve(value: &str, config_dir: &Path) -> Result<PathBuf> {
    let path = if let Some(name) = value.strip_prefix("@guest:") {
        cmd::target_dir().join("guests").join(format!("{name}.bin"))
    } else if value == "@linux" {
        debian::kernel()?.image
    } else if value == "@initramfs" {
        crate::initramfs::build()?
    } else if value.starts_with('@') {
        bail!("xtask,file = \"{value}\": unknown; use @guest:<name>, @linux, @initramfs or a path");
    } else {
        config_dir.join(value)
    };
    if !path.is_file() {
        bail!(
            "xtask,file = \"{value}\": {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Child node names of `node` in `dtb`.
fn children(dtb: &str, node: &str) -> Result<Vec<String>> {
    let out = tool("fdtget", &["-l", dtb, node])?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// A string property, or `None` when the node lacks it.
fn string_prop(dtb: &str, node: &str, prop: &str) -> Option<String> {
    tool("fdtget", &["-ts", dtb, node, prop])
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// A property as 32-bit cells, or `None` when the node lacks it.
fn cells_prop(dtb: &str, node: &str, prop: &str) -> Result<Option<Vec<u64>>> {
    let Ok(text) = tool("fdtget", &["-tx", dtb, node, prop]) else {
        return Ok(None);
    };
    text.split_whitespace()
        .map(|c| {
            u64::from_str_radix(c, 16)
                .map_err(|_| Error::new(format!("{node}: {prop}: cannot read cell {c:?}")))
        })
        .collect::<Result<Vec<u64>>>()
        .map(Some)
}

/// `(address, size)` pairs from cells in the given counts.
fn pairs(cells: &[u64], address_cells: usize, size_cells: usize) -> Vec<MemRange> {
    let join = |c: &[u64]| c.iter().fold(0u64, |v, &x| (v << 32) | x);
    let step = address_cells + size_cells;
    if step == 0 {
        return Vec::new();
    }
    cells
        .chunks_exact(step)
        .map(|c| MemRange {
            base: join(&c[..address_cells]),
            size: join(&c[address_cells..]),
        })
        .collect()
}

/// What kind of module a `compatible` list names.
fn kind_of(compatible: &str) -> Option<ModuleKind> {
    let words: Vec<&str> = compatible.split([' ', '\0']).collect();
    if words.contains(&"multiboot,kernel") {
        Some(ModuleKind::Kernel)
    } else if words.contains(&"multiboot,ramdisk") {
        Some(ModuleKind::Ramdisk)
    } else if words.contains(&"multiboot,device-tree") {
        Some(ModuleKind::DeviceTree)
    } else {
        None
    }
}

/// A module node as the config wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModuleNode {
    /// The node name, e.g. `kernel@49000000`.
    name: String,
    kind: Option<ModuleKind>,
    /// Its `xtask,file`.
    file: Option<String>,
}

impl ModuleNode {
    fn unit_address(&self) -> Option<u64> {
        self.name
            .split_once('@')
            .and_then(|(_, a)| u64::from_str_radix(a, 16).ok())
    }
}

/// A `vm@N` node as the config wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VmNode {
    /// The node name, e.g. `vm@0`.
    name: String,
    label: Option<String>,
    memory: Vec<MemRange>,
    /// `#address-cells` and `#size-cells` of its modules' `reg`.
    cells: (usize, usize),
    modules: Vec<ModuleNode>,
}

impl VmNode {
    fn module(&self, kind: ModuleKind) -> Option<&ModuleNode> {
        self.modules.iter().find(|m| m.kind == Some(kind))
    }
}

/// Reads the `/hypervisor` node's VMs and the memory ranges VMs and shared memory own.
fn read_hypervisor(dtb: &str) -> Result<(Vec<VmNode>, Vec<MemRange>)> {
    let top_cells = |prop: &str| -> Result<usize> {
        Ok(cells_prop(dtb, "/hypervisor", prop)?
            .and_then(|c| c.first().copied())
            .unwrap_or(2) as usize)
    };
    let (ac, sc) = (top_cells("#address-cells")?, top_cells("#size-cells")?);
    let mut vms = Vec::new();
    let mut owned = Vec::new();
    for child in children(dtb, "/hypervisor")? {
        let node = format!("/hypervisor/{child}");
        let memory = pairs(
            &cells_prop(dtb, &node, "memory")?.unwrap_or_default(),
            ac,
            sc,
        );
        owned.extend(memory.iter().copied());
        if !child.starts_with("vm@") {
            continue;
        }
        let cell = |prop: &str| -> Result<usize> {
            Ok(cells_prop(dtb, &node, prop)?
                .and_then(|c| c.first().copied())
                .unwrap_or(2) as usize)
        };
        let cells = (cell("#address-cells")?, cell("#size-cells")?);
        let mut modules = Vec::new();
        for name in children(dtb, &node)? {
            let path = format!("{node}/{name}");
            modules.push(ModuleNode {
                kind: string_prop(dtb, &path, "compatible").and_then(|c| kind_of(&c)),
                file: string_prop(dtb, &path, "xtask,file"),
                name,
            });
        }
        vms.push(VmNode {
            name: child,
            label: string_prop(dtb, &node, "label"),
            memory,
            cells,
            modules,
        });
    }
    Ok((vms, owned))
}

/// The rich-OS VM: labelled `linux`, or else the first that boots `@linux`.
fn rich_os_index(vms: &[VmNode]) -> Option<usize> {
    vms.iter()
        .position(|vm| vm.label.as_deref() == Some("linux"))
        .or_else(|| {
            vms.iter().position(|vm| {
                vm.module(ModuleKind::Kernel)
                    .is_some_and(|k| k.file.as_deref() == Some("@linux"))
            })
        })
}

/// One module as it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    /// Index into the VMs.
    vm: usize,
    /// Its node name in the config, if it has one there.
    config_name: Option<String>,
    kind: Option<ModuleKind>,
    file: PathBuf,
    size: u64,
    address: u64,
    /// Set by a rich-OS option (so xtask may move it).
    from_option: bool,
}

impl Placed {
    fn range(&self) -> MemRange {
        MemRange {
            base: self.address,
            size: self.size,
        }
    }

    fn node_name(&self) -> String {
        let kind = match self.kind {
            Some(ModuleKind::Kernel) => "kernel",
            Some(ModuleKind::Ramdisk) => "ramdisk",
            Some(ModuleKind::DeviceTree) => "device-tree",
            None => "module",
        };
        format!("{kind}@{:x}", self.address)
    }

    /// Whether it is no longer the config's node of that name.
    fn renamed(&self) -> bool {
        self.config_name.as_deref() != Some(self.node_name().as_str())
    }
}

fn overlaps(a: &MemRange, b: &MemRange) -> bool {
    let (a_end, b_end) = (
        u128::from(a.base) + u128::from(a.size),
        u128::from(b.base) + u128::from(b.size),
    );
    u128::from(a.base) < b_end && u128::from(b.base) < a_end
}

/// Where modules may go, besides clear of each other.
struct Occupied {
    /// RAM banks.
    ram: Vec<MemRange>,
    /// The hypervisor, QEMU's DTB, reserved memory, VMs' and shared memory.
    taken: Vec<MemRange>,
    /// Modules xtask places start at or above this: below it are the firmware's, the
    /// hypervisor's and QEMU's DTB's places.
    floor: u64,
    /// ... and end at or below this: above it firmware (U-Boot) relocates itself.
    top: u64,
}

impl Occupied {
    fn new(ram: Vec<MemRange>, taken: Vec<MemRange>, floor: u64) -> Occupied {
        let top = ram
            .iter()
            .map(|b| b.base.saturating_add(b.size))
            .max()
            .unwrap_or(0)
            .saturating_sub(FIRMWARE_TOP);
        Occupied {
            ram,
            taken,
            floor,
            top,
        }
    }

    /// Whether `r` lies in RAM below `top`, clear of everything taken and of `modules`.
    fn fits(&self, r: &MemRange, modules: &[MemRange]) -> bool {
        let end = u128::from(r.base) + u128::from(r.size);
        let in_ram = self.ram.iter().any(|bank| {
            r.base >= bank.base && end <= u128::from(bank.base) + u128::from(bank.size)
        });
        in_ram
            && end <= u128::from(self.top)
            && !self.taken.iter().chain(modules).any(|t| overlaps(t, r))
    }

    /// The lowest 2 MiB-aligned place at or above `floor` where `size` bytes fit.
    fn find(&self, size: u64, modules: &[MemRange]) -> Option<u64> {
        let mut at = self.floor.next_multiple_of(ALIGN);
        while at.checked_add(size)? <= self.top {
            let r = MemRange { base: at, size };
            if self.fits(&r, modules) {
                return Some(at);
            }
            // Skip past whatever is in the way (or out of a RAM hole).
            let next = self
                .taken
                .iter()
                .chain(modules)
                .filter(|t| overlaps(t, &r))
                .map(|t| t.base.saturating_add(t.size))
                .max()
                .unwrap_or(at + ALIGN);
            at = next.max(at + 1).next_multiple_of(ALIGN);
        }
        None
    }
}

/// Places every module that names its file: the config's at their unit addresses, the
/// rich-OS options' there too when they fit, else (and new ones) above all other modules.
fn place(
    vms: &[VmNode],
    rich: Option<usize>,
    options: &RichOsOptions,
    occupied: &Occupied,
    mut file_for: impl FnMut(&str) -> Result<PathBuf>,
    mut size_of: impl FnMut(&Path) -> Result<u64>,
) -> Result<Vec<Placed>> {
    let option_file = |kind: ModuleKind| match kind {
        ModuleKind::Kernel => options.kernel.clone(),
        ModuleKind::Ramdisk => options.initrd.clone(),
        ModuleKind::DeviceTree => options.dtb.clone(),
    };
    let mut placed = Vec::new();
    let mut pending = Vec::new();
    for (v, vm) in vms.iter().enumerate() {
        for m in &vm.modules {
            let from_option = (Some(v) == rich)
                .then_some(m.kind)
                .flatten()
                .and_then(option_file);
            let file = match (&from_option, &m.file) {
                (Some(f), _) => f.clone(),
                (None, Some(value)) => file_for(value)?,
                (None, None) => continue,
            };
            let Some(address) = m.unit_address() else {
                bail!(
                    "/hypervisor/{}/{}: xtask,file needs the node's unit address to say where to load it (e.g. kernel@49000000)",
                    vm.name,
                    m.name
                );
            };
            let p = Placed {
                vm: v,
                config_name: Some(m.name.clone()),
                kind: m.kind,
                size: size_of(&file)?,
                file,
                address,
                from_option: from_option.is_some(),
            };
            if p.from_option {
                pending.push(p);
            } else {
                placed.push(p);
            }
        }
    }
    if let Some(v) = rich {
        for kind in [
            ModuleKind::Kernel,
            ModuleKind::Ramdisk,
            ModuleKind::DeviceTree,
        ] {
            if vms[v].module(kind).is_none() {
                if let Some(file) = option_file(kind) {
                    pending.push(Placed {
                        vm: v,
                        config_name: None,
                        kind: Some(kind),
                        size: size_of(&file)?,
                        file,
                        address: 0,
                        from_option: true,
                    });
                }
            }
        }
    }
    for mut p in pending {
        let others: Vec<MemRange> = placed.iter().map(Placed::range).collect();
        if p.config_name.is_some() && occupied.fits(&p.range(), &others) {
            placed.push(p);
            continue;
        }
        let Some(at) = occupied.find(p.size, &others) else {
            bail!(
                "{} ({} MiB) fits nowhere in free RAM; give the machine more memory (--mem) or place the modules yourself in a --config",
                p.file.display(),
                p.size.div_ceil(MIB)
            );
        };
        p.address = at;
        placed.push(p);
    }
    Ok(placed)
}

/// Quotes a string for DTS source.
pub fn dts_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `(address, size)` as DTS cells in the given counts.
pub fn reg_cells(r: &MemRange, (ac, sc): (usize, usize)) -> Result<String> {
    let mut cells = Vec::new();
    for (value, count) in [(r.base, ac), (r.size, sc)] {
        if count == 1 && value > u64::from(u32::MAX) {
            bail!("{value:#x} does not fit in one cell; set #address-cells and #size-cells of the VM to 2");
        }
        if count == 2 {
            cells.push(value >> 32);
        }
        cells.push(value & 0xffff_ffff);
    }
    Ok(cells
        .iter()
        .map(|c| format!("{c:#x}"))
        .collect::<Vec<_>>()
        .join(" "))
}

/// The second fragment: every placed module's `reg` (and new or moved nodes), the rich
/// OS's `bootargs`, and no `xtask,file` left.
fn overrides(
    vms: &[VmNode],
    rich: Option<usize>,
    placed: &[Placed],
    bootargs: Option<&str>,
) -> Result<String> {
    let mut out = String::from(
        "\n// Added by cargo xtask run: where each module is loaded, and the rich-OS options.\n/ {\n    hypervisor {\n",
    );
    for (v, vm) in vms.iter().enumerate() {
        let mine: Vec<&Placed> = placed.iter().filter(|p| p.vm == v).collect();
        let args = bootargs.filter(|_| Some(v) == rich);
        if mine.is_empty() && args.is_none() {
            continue;
        }
        let _ = writeln!(out, "        {} {{", vm.name);
        if let Some(args) = args {
            let _ = writeln!(out, "            bootargs = {};", dts_string(args));
        }
        for p in &mine {
            let reg = reg_cells(&p.range(), vm.cells)?;
            if p.renamed() {
                if let Some(old) = &p.config_name {
                    let _ = writeln!(out, "            /delete-node/ {old};");
                }
                let compatible = match p.kind {
                    Some(ModuleKind::Kernel) => "\"multiboot,kernel\", \"multiboot,module\"",
                    Some(ModuleKind::Ramdisk) => "\"multiboot,ramdisk\", \"multiboot,module\"",
                    Some(ModuleKind::DeviceTree) => {
                        "\"multiboot,device-tree\", \"multiboot,module\""
                    }
                    None => bail!(
                        "/hypervisor/{}: a module without a multiboot compatible cannot be moved",
                        vm.name
                    ),
                };
                let _ = writeln!(out, "            {} {{", p.node_name());
                let _ = writeln!(out, "                compatible = {compatible};");
            } else {
                let _ = writeln!(out, "            {} {{", p.node_name());
                let _ = writeln!(out, "                /delete-property/ xtask,file;");
                if p.from_option && p.kind == Some(ModuleKind::Kernel) {
                    // The options give an Image or an ELF file, which say where they go.
                    let _ = writeln!(out, "                /delete-property/ tandem,format;");
                    let _ = writeln!(
                        out,
                        "                /delete-property/ tandem,load-address;"
                    );
                }
            }
            let _ = writeln!(out, "                reg = <{reg}>;");
            let _ = writeln!(out, "            }};");
        }
        let _ = writeln!(out, "        }};");
    }
    out.push_str("    };\n};\n");
    Ok(out)
}

/// Compiles DTS source to a DTB; `include` is where `/include/` looks.
pub fn compile(dts: &Path, dtb: &Path, include: &Path) -> Result<()> {
    tool(
        "dtc",
        &[
            "-q",
            "-i",
            &include.to_string_lossy(),
            "-I",
            "dts",
            "-O",
            "dtb",
            "-o",
            &dtb.to_string_lossy(),
            &dts.to_string_lossy(),
        ],
    )
    .map(|_| ())
}

/// Merges `config` into the machine's DT in `work` (a directory of this run), places the
/// modules and checks the result.
pub fn compose(
    machine: &Machine,
    config: &Path,
    options: &RichOsOptions,
    work: &Path,
) -> Result<Composed> {
    let base = work.join("board.dtb");
    base_dtb(machine, &base)?;
    let mut dts = tool(
        "dtc",
        &["-q", "-I", "dtb", "-O", "dts", &base.to_string_lossy()],
    )?;
    let fragment = std::fs::read_to_string(config)
        .map_err(|e| cmd::Error::new(format!("--config {}: {e}", config.display())))?;
    dts.push('\n');
    dts.push_str(&fragment);
    let config_dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();

    // Pass 1: the config as written, to read its VMs and modules.
    let first_dts = work.join("board+config-as-written.dts");
    let first = work.join("board+config-as-written.dtb");
    write(&first_dts, &dts)?;
    compile(&first_dts, &first, &config_dir)?;
    let first_name = first.to_string_lossy().to_string();
    let (vms, owned) = read_hypervisor(&first_name)?;
    let rich = rich_os_index(&vms);
    if options.any() && rich.is_none() {
        bail!(
            "--kernel, --initrd, --dtb and --bootargs change the rich-OS VM, but {} has no VM \
             labelled \"linux\" and none boots xtask,file = \"@linux\"",
            config.display()
        );
    }

    let blob = std::fs::read(&first)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", first.display())))?;
    let board = Platform::parse(&blob)
        .map_err(|e| Error::new(format!("{}: the board's DT: {e}", first.display())))?;
    let hyp = check_config::placement(
        &board,
        Some(machine.load_address()),
        None,
        &cmd::target_dir().join("hyp.bin"),
    )
    .range;
    let qemu_dtb = MemRange {
        base: board.memory.first().map_or(0, |bank| bank.base) + QEMU_DTB_OFFSET,
        size: QEMU_DTB_ROOM,
    };
    let floor = (hyp.base + hyp.size).max(qemu_dtb.base + qemu_dtb.size);
    let mut taken = vec![hyp, qemu_dtb];
    taken.extend(board.reserved.iter().map(|r| r.range));
    taken.extend(owned);
    let occupied = Occupied::new(board.memory.clone(), taken, floor);

    // The user's DTB gets --bootargs in its /chosen: the hypervisor passes it on as it is.
    let mut options = options.clone();
    if let (Some(dtb), Some(args)) = (&options.dtb, &options.bootargs) {
        let copy = work.join("user-guest.dtb");
        std::fs::copy(dtb, &copy)
            .map_err(|e| Error::new(format!("cannot copy {}: {e}", dtb.display())))?;
        tool(
            "fdtput",
            &[
                "-p",
                "-ts",
                &copy.to_string_lossy(),
                "/chosen",
                "bootargs",
                args,
            ],
        )?;
        options.dtb = Some(copy);
    }

    let placed = place(
        &vms,
        rich,
        &options,
        &occupied,
        |value| resolve(value, &config_dir),
        |path| {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))
        },
    )?;
    dts.push_str(&overrides(
        &vms,
        rich,
        &placed,
        options.bootargs.as_deref(),
    )?);
    let merged_dts = work.join("board+config.dts");
    let dtb = work.join("board+config.dtb");
    write(&merged_dts, &dts)?;
    compile(&merged_dts, &dtb, &config_dir)?;

    let check = CheckConfigArgs {
        file: dtb.clone(),
        hypervisor_at: Some(machine.load_address()),
        hypervisor_size: None,
    };
    let code = check_config::check_config(&check)?;
    if code != std::process::ExitCode::SUCCESS {
        bail!(
            "--config {}: the configuration is refused (see the errors above; the merged source is {})",
            config.display(),
            merged_dts.display()
        );
    }

    let rich_os = match rich {
        Some(v) => Some(rich_os(&dtb, &board, hyp, &vms[v], &placed, v)?),
        None => None,
    };
    let modules = placed.into_iter().map(|p| (p.file, p.address)).collect();
    Ok(Composed {
        dtb,
        modules,
        rich_os,
    })
}

/// The rich-OS VM as the hypervisor will read it.
fn rich_os(
    dtb: &Path,
    board: &Platform,
    hyp: MemRange,
    vm: &VmNode,
    placed: &[Placed],
    v: usize,
) -> Result<RichOs> {
    let blob = std::fs::read(dtb)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", dtb.display())))?;
    let report = binding::check(&blob, board, &[hyp]);
    let node = format!("/hypervisor/{}", vm.name);
    let Some(config) = report
        .config
        .as_ref()
        .and_then(|c| c.vms.iter().find(|cfg| cfg.node == node))
    else {
        bail!("{node}: not in the checked configuration");
    };
    let file = |kind| {
        placed
            .iter()
            .find(|p| p.vm == v && p.kind == Some(kind))
            .map(|p| p.file.clone())
    };
    Ok(RichOs {
        node,
        label: config.label.clone(),
        cpus: config.cpus.len(),
        memory: config.memory.iter().map(|r| r.size).sum(),
        kernel: file(ModuleKind::Kernel),
        initrd: file(ModuleKind::Ramdisk),
        dtb: file(ModuleKind::DeviceTree),
        bootargs: config.bootargs.clone(),
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// What a kernel file is, judged from its first bytes: `Ok` with a description for what
/// the hypervisor boots (an arm64 Image, an AArch64 ELF), else what it is instead.
pub fn kernel_kind(head: &[u8]) -> std::result::Result<&'static str, String> {
    if head.len() >= 64 && &head[56..60] == b"ARM\x64" {
        return Ok("arm64 Image");
    }
    if head.starts_with(b"\x7fELF") {
        return match (head.get(4), head.get(18..20)) {
            (Some(2), Some(&[183, 0])) => Ok("AArch64 ELF"),
            _ => Err("an ELF file for another machine (not AArch64, 64-bit)".into()),
        };
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err("gzip-compressed (an Image.gz?); unpack it first: zcat FILE > Image".into());
    }
    if head.starts_with(b"MZ") && head.get(4..8) == Some(b"zimg") {
        return Err("an EFI zboot (compressed) image, which only EFI firmware unpacks; use the plain Image from the kernel build (arch/arm64/boot/Image)".into());
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Err("an x86 kernel (bzImage)".into());
    }
    Err("neither an arm64 Image (no \"ARM\\x64\" magic at byte 56) nor an AArch64 ELF".into())
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn head(path: &Path, n: usize) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(n as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

/// An existing, non-empty regular file, made absolute.
fn existing_file(text: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{text}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{text}: not a regular file"));
    }
    if meta.len() == 0 {
        return Err(format!("{text}: the file is empty"));
    }
    std::path::absolute(&path).map_err(|e| format!("{text}: {e}"))
}

/// `--kernel FILE`: an arm64 Image or an AArch64 ELF.
pub fn parse_kernel(text: &str) -> std::result::Result<PathBuf, String> {
    let path = existing_file(text)?;
    let bytes = head(&path, 0x240).map_err(|e| format!("{text}: {e}"))?;
    kernel_kind(&bytes).map(|_| path).map_err(|why| {
        format!("{text} is {why}; give an uncompressed arm64 Image or an AArch64 ELF")
    })
}

/// `--initrd FILE`: any non-empty file (Linux unpacks cpio archives, compressed or not).
pub fn parse_initrd(text: &str) -> std::result::Result<PathBuf, String> {
    existing_file(text)
}

/// `--dtb FILE`: a flattened device tree blob.
pub fn parse_dtb(text: &str) -> std::result::Result<PathBuf, String> {
    let path = existing_file(text)?;
    let bytes = head(&path, 4).map_err(|e| format!("{text}: {e}"))?;
    if bytes != [0xd0, 0x0d, 0xfe, 0xed] {
        let hint = if text.ends_with(".dts") || text.ends_with(".dtsi") {
            format!("; compile it first: dtc -I dts -O dtb -o guest.dtb {text}")
        } else {
            String::new()
        };
        return Err(format!(
            "{text} is not a device tree blob (no 0xd00dfeed magic){hint}"
        ));
    }
    Ok(path)
}

/// `--bootargs STRING`: one line of text.
pub fn parse_bootargs(text: &str) -> std::result::Result<String, String> {
    if text.contains(['\n', '\0']) {
        return Err("the kernel command line is one line: no newlines or NUL bytes".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, kind: ModuleKind, file: Option<&str>) -> ModuleNode {
        ModuleNode {
            name: name.into(),
            kind: Some(kind),
            file: file.map(str::to_string),
        }
    }

    /// configs/virt.dtsi as `read_hypervisor` sees it.
    fn virt_layout() -> Vec<VmNode> {
        vec![
            VmNode {
                name: "vm@0".into(),
                label: Some("linux".into()),
                memory: vec![MemRange {
                    base: 0x5000_0000,
                    size: 0x4000_0000,
                }],
                cells: (2, 2),
                modules: vec![
                    module("kernel@a0000000", ModuleKind::Kernel, Some("@linux")),
                    module("ramdisk@a4000000", ModuleKind::Ramdisk, Some("@initramfs")),
                ],
            },
            VmNode {
                name: "vm@1".into(),
                label: Some("secure".into()),
                memory: vec![MemRange {
                    base: 0x9000_0000,
                    size: 0x400_0000,
                }],
                cells: (2, 2),
                modules: vec![module(
                    "kernel@49000000",
                    ModuleKind::Kernel,
                    Some("@guest:secure"),
                )],
            },
        ]
    }

    fn occupied() -> Occupied {
        let r = |base, size| MemRange { base, size };
        Occupied::new(
            vec![r(0x4000_0000, 0x8000_0000)],
            vec![
                r(0x4020_0000, 0x80_0000),
                r(0x4800_0000, 0x20_0000),
                r(0x5000_0000, 0x4000_0000),
                r(0x9000_0000, 0x410_0000),
            ],
            0x4820_0000,
        )
    }

    /// Places with files named after their `xtask,file` and the sizes given per file name.
    fn place_with(options: &RichOsOptions, sizes: &[(&str, u64)]) -> Result<Vec<Placed>> {
        let vms = virt_layout();
        place(
            &vms,
            rich_os_index(&vms),
            options,
            &occupied(),
            |value| Ok(PathBuf::from(value)),
            |path| {
                let name = path.to_string_lossy();
                Ok(sizes
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0x10_0000, |&(_, s)| s))
            },
        )
    }

    fn at(placed: &[Placed]) -> Vec<(String, u64)> {
        placed
            .iter()
            .map(|p| (p.file.to_string_lossy().into_owned(), p.address))
            .collect()
    }

    #[test]
    fn the_config_places_its_modules() {
        let placed = place_with(&RichOsOptions::default(), &[("@linux", 0x200_0000)]).unwrap();
        assert_eq!(
            at(&placed),
            [
                ("@linux".into(), 0xa000_0000),
                ("@initramfs".into(), 0xa400_0000),
                ("@guest:secure".into(), 0x4900_0000)
            ]
        );
        assert!(placed.iter().all(|p| !p.renamed()));
    }

    #[test]
    fn options_replace_the_rich_os_files() {
        let options = RichOsOptions {
            kernel: Some("/u/Image".into()),
            initrd: Some("/u/big.cpio".into()),
            dtb: Some("/u/guest.dtb".into()),
            bootargs: None,
        };
        // The kernel fits its slot; the 200 MiB initrd would reach into the top 256 MiB
        // of RAM (U-Boot's) from its slot, so it moves to the lowest free place where it
        // fits, after the kernel; the DTB, which the config does not have, goes to the
        // lowest free place, above QEMU's DTB.
        let placed = place_with(
            &options,
            &[("/u/Image", 0x300_0000), ("/u/big.cpio", 200 * MIB)],
        )
        .unwrap();
        assert_eq!(
            at(&placed),
            [
                ("@guest:secure".into(), 0x4900_0000),
                ("/u/Image".into(), 0xa000_0000),
                ("/u/big.cpio".into(), 0xa300_0000),
                ("/u/guest.dtb".into(), 0x4820_0000),
            ]
        );
        let text = overrides(
            &virt_layout(),
            Some(0),
            &placed,
            Some("console=ttyAMA0 x=\"a b\""),
        )
        .unwrap();
        assert!(
            text.contains(
                "        vm@0 {\n            bootargs = \"console=ttyAMA0 x=\\\"a b\\\"\";\n"
            ),
            "{text}"
        );
        assert!(text.contains("            kernel@a0000000 {\n                /delete-property/ xtask,file;\n                /delete-property/ tandem,format;\n"), "{text}");
        assert!(
            text.contains("                reg = <0x0 0xa0000000 0x0 0x3000000>;\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "            /delete-node/ ramdisk@a4000000;\n            ramdisk@a3000000 {\n"
            ),
            "{text}"
        );
        assert!(text.contains("            device-tree@48200000 {\n                compatible = \"multiboot,device-tree\", \"multiboot,module\";\n                reg = <0x0 0x48200000 0x0 0x100000>;\n"), "{text}");
        assert!(text.contains("        vm@1 {\n            kernel@49000000 {\n                /delete-property/ xtask,file;\n                reg = <0x0 0x49000000 0x0 0x100000>;\n"), "{text}");
    }

    #[test]
    fn a_file_too_big_for_free_ram_is_refused() {
        let options = RichOsOptions {
            initrd: Some("/u/huge".into()),
            ..RichOsOptions::default()
        };
        let err = place_with(&options, &[("/u/huge", 0x8000_0000)]).unwrap_err();
        assert!(
            err.to_string().contains("/u/huge (2048 MiB) fits nowhere"),
            "{err}"
        );
    }

    #[test]
    fn a_moved_module_is_renamed() {
        let options = RichOsOptions {
            kernel: Some("/u/Image".into()),
            ..RichOsOptions::default()
        };
        // 80 MiB: more than the 64 MiB slot before the initramfs; it fits between the
        // secure guest's image and the VMs' memory.
        let placed = place_with(&options, &[("/u/Image", 80 * MIB)]).unwrap();
        let kernel = placed.iter().find(|p| p.from_option).unwrap();
        assert_eq!(kernel.address, 0x4920_0000);
        let text = overrides(&virt_layout(), Some(0), &placed, None).unwrap();
        assert!(text.contains("            /delete-node/ kernel@a0000000;\n            kernel@49200000 {\n                compatible = \"multiboot,kernel\", \"multiboot,module\";\n"), "{text}");
    }

    #[test]
    fn the_rich_os_is_linux_or_boots_linux() {
        let mut vms = virt_layout();
        assert_eq!(rich_os_index(&vms), Some(0));
        vms[0].label = Some("android".into());
        assert_eq!(rich_os_index(&vms), Some(0));
        vms[0].modules[0].file = Some("Image".into());
        assert_eq!(rich_os_index(&vms), None);
        vms[1].label = Some("linux".into());
        assert_eq!(rich_os_index(&vms), Some(1));
    }

    #[test]
    fn reg_in_the_vm_cells() {
        let r = MemRange {
            base: 0x4900_0000,
            size: 0x10,
        };
        assert_eq!(reg_cells(&r, (2, 2)).unwrap(), "0x0 0x49000000 0x0 0x10");
        assert_eq!(reg_cells(&r, (1, 1)).unwrap(), "0x49000000 0x10");
        let high = MemRange {
            base: 0x1_0000_0000,
            size: 1,
        };
        assert!(reg_cells(&high, (1, 1)).is_err());
        assert_eq!(
            pairs(&[0, 0x5000_0000, 0, 0x4000_0000, 0x1, 0x2], 2, 2)[0],
            MemRange {
                base: 0x5000_0000,
                size: 0x4000_0000
            }
        );
        assert_eq!(
            kind_of("multiboot,ramdisk multiboot,module"),
            Some(ModuleKind::Ramdisk)
        );
        assert_eq!(kind_of("vendor,blob"), None);
    }

    #[test]
    fn kernel_files_say_what_they_are() {
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(kernel_kind(&image), Ok("arm64 Image"));
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[18] = 183;
        assert_eq!(kernel_kind(&elf), Ok("AArch64 ELF"));
        elf[18] = 62;
        assert!(kernel_kind(&elf).unwrap_err().contains("another machine"));
        assert!(kernel_kind(&[0x1f, 0x8b, 8, 0])
            .unwrap_err()
            .contains("zcat"));
        assert!(kernel_kind(b"MZ\0\0zimg").unwrap_err().contains("zboot"));
        assert!(kernel_kind(b"hello").unwrap_err().contains("ARM\\x64"));
    }

    #[test]
    fn bad_option_values_say_what_is_allowed() {
        let dir = std::env::temp_dir().join(format!("xtask-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path.to_string_lossy().into_owned()
        };
        let missing = dir.join("missing").to_string_lossy().into_owned();
        assert!(parse_kernel(&missing).unwrap_err().contains("No such file"));
        let empty = file("empty", b"");
        assert!(parse_initrd(&empty).unwrap_err().contains("empty"));
        let text = file("notes.txt", b"not a kernel at all, just some text to read");
        let err = parse_kernel(&text).unwrap_err();
        assert!(
            err.contains("give an uncompressed arm64 Image or an AArch64 ELF"),
            "{err}"
        );
        let dts = file("guest.dts", b"/dts-v1/; / { };");
        let err = parse_dtb(&dts).unwrap_err();
        assert!(err.contains("dtc -I dts -O dtb"), "{err}");
        let dtb = file("guest.dtb", &[0xd0, 0x0d, 0xfe, 0xed, 0, 0]);
        assert!(parse_dtb(&dtb).unwrap().is_absolute());
        assert!(parse_bootargs("a\nb").is_err());
        assert_eq!(
            parse_bootargs("console=ttyAMA0").unwrap(),
            "console=ttyAMA0"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dts_strings_are_escaped() {
        assert_eq!(dts_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }
}
