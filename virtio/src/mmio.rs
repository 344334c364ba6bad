//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register window as a
//! state machine that never touches guest memory.

use crate::effect::AccessWidth;
use crate::queue::{QueueError, SplitQueue};

/// Register offsets in the window (virtio 1.2 §4.2.2, table "MMIO Device Register Layout").
pub mod offset {
    /// `MagicValue`, reads `0x74726976` ("virt").
    pub const MAGIC_VALUE: u64 = 0x000;
    /// `Version`, reads 2.
    pub const VERSION: u64 = 0x004;
    /// `DeviceID`.
    pub const DEVICE_ID: u64 = 0x008;
    /// `VendorID`.
    pub const VENDOR_ID: u64 = 0x00c;
    /// `DeviceFeatures`: 32 feature bits, the word chosen by `DeviceFeaturesSel`.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// `DeviceFeaturesSel`.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// `DriverFeatures`: 32 feature bits, the word chosen by `DriverFeaturesSel`.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// `DriverFeaturesSel`.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// `QueueSel`: the queue the `Queue*` registers below refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// `QueueNumMax`.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// `QueueNum`.
    pub const QUEUE_NUM: u64 = 0x038;
    /// `QueueReady`.
    pub const QUEUE_READY: u64 = 0x044;
    /// `QueueNotify`: the driver writes a queue index to say it has new buffers.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// `InterruptStatus`.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// `InterruptACK`.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// `Status`.
    pub const STATUS: u64 = 0x070;
    /// `QueueDescLow`.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// `QueueDescHigh`.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// `QueueDriverLow`: the available ring.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// `QueueDriverHigh`.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// `QueueDeviceLow`: the used ring.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// `QueueDeviceHigh`.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// `SHMSel`: shared memory regions; this transport has none.
    pub const SHM_SEL: u64 = 0x0ac;
    /// `SHMLenLow`.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// `SHMLenHigh`.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// `SHMBaseLow`.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// `SHMBaseHigh`.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// `ConfigGeneration`.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// The device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Bits of the `Status` register (virtio 1.2 §2.1).
pub mod status {
    /// The driver found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The driver knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and the device live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete (the device keeps it only if it accepts the
    /// driver's features).
    pub const FEATURES_OK: u32 = 8;
    /// Set by the device: it hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Bits of `InterruptStatus`/`InterruptACK` (virtio 1.2 §4.2.2).
pub mod interrupt {
    /// The device used buffers of at least one queue.
    pub const USED_BUFFER: u32 = 1;
    /// The configuration (or `DEVICE_NEEDS_RESET`) changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// `MagicValue`: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// `Version` of the non-legacy interface.
pub const VERSION: u32 = 2;
/// Size of the register window the glue traps: registers and device configuration.
pub const WINDOW_SIZE: u64 = 0x200;
/// `VIRTIO_F_VERSION_1` (bit 32): the driver follows virtio 1.x, not the legacy interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What identifies a device to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `DeviceID` (virtio 1.2 §5: 19 for vsock).
    pub device_id: u32,
    /// `VendorID`.
    pub vendor_id: u32,
    /// The feature bits offered; must include [`VIRTIO_F_VERSION_1`].
    pub features: u64,
    /// `QueueNumMax` of every queue (a power of two, at most 32768).
    pub queue_max: u16,
}

/// What a register write asks of the device behind the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing beyond the register's new value.
    Nothing,
    /// The driver notified this queue.
    Notify(u16),
    /// The driver reset the device (wrote 0 to `Status`); the transport is back at its
    /// reset state, and the device must drop everything it holds.
    Reset,
    /// The driver enabled a queue with a bad size or layout; the transport has set
    /// `DEVICE_NEEDS_RESET` and the device must drop everything it holds.
    Broken(QueueError),
}

/// The register state of a virtio-mmio device with `Q` queues.
#[derive(Clone, Debug)]
pub struct MmioTransport<const Q: usize> {
    info: DeviceInfo,
    device_features_sel: u32,
    driver_features: u64,
    driver_features_sel: u32,
    queue_sel: u32,
    queues: [SplitQueue; Q],
    status: u32,
    interrupt_status: u32,
    ignored: u64,
}

impl<const Q: usize> MmioTransport<Q> {
    /// The transport of a device described by `info`, in its reset state.
    pub fn new(info: DeviceInfo) -> Self {
        Self {
            info,
            device_features_sel: 0,
            driver_features: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues: core::array::from_fn(|_| SplitQueue::new(info.queue_max)),
            status: 0,
            interrupt_status: 0,
            ignored: 0,
        }
    }

    /// Back to the reset state (what writing 0 to `Status` does).
    pub fn reset(&mut self) {
        let ignored = self.ignored;
        *self = Self::new(self.info);
        self.ignored = ignored;
    }

    /// The guest reads `width` at `offset` in the window; `config` is the device-specific
    /// configuration space (at [`offset::CONFIG`]). Registers take 32-bit aligned accesses
    /// only (§4.2.2.2); the configuration space takes any naturally aligned width. Anything
    /// else, and write-only registers, read as zero.
    pub fn read(&mut self, offset: u64, width: AccessWidth, config: &[u8]) -> u64 {
        if offset >= offset::CONFIG {
            return self.read_config(offset - offset::CONFIG, width, config);
        }
        if width != AccessWidth::Word || !offset.is_multiple_of(4) {
            self.ignored += 1;
            return 0;
        }
        let value = match offset {
            offset::MAGIC_VALUE => MAGIC,
            offset::VERSION => VERSION,
            offset::DEVICE_ID => self.info.device_id,
            offset::VENDOR_ID => self.info.vendor_id,
            offset::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.info.features as u32,
                1 => (self.info.features >> 32) as u32,
                _ => 0,
            },
            offset::QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size())),
            offset::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready())),
            offset::INTERRUPT_STATUS => self.interrupt_status,
            offset::STATUS => self.status,
            // No shared memory regions: a length of -1 says so (§4.2.2.1).
            offset::SHM_LEN_LOW
            | offset::SHM_LEN_HIGH
            | offset::SHM_BASE_LOW
            | offset::SHM_BASE_HIGH => u32::MAX,
            // The configuration never changes, so neither does its generation.
            offset::CONFIG_GENERATION => 0,
            _ => {
                self.ignored += 1;
                0
            }
        };
        u64::from(value)
    }

    fn read_config(&mut self, offset: u64, width: AccessWidth, config: &[u8]) -> u64 {
        let bytes = width.bytes();
        let Some(field) = usize::try_from(offset)
            .ok()
            .filter(|_| offset.is_multiple_of(bytes))
            .and_then(|start| config.get(start..start.checked_add(bytes as usize)?))
        else {
            self.ignored += 1;
            return 0;
        };
        field
            .iter()
            .rev()
            .fold(0, |value, &byte| value << 8 | u64::from(byte))
    }

    /// The guest writes `value` (of `width`) at `offset` in the window. Writes the model
    /// does not take (wrong width, read-only registers, queue setup of an enabled queue,
    /// features after `FEATURES_OK`, the read-only configuration space) are ignored.
    pub fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Written {
        if offset >= offset::CONFIG || width != AccessWidth::Word || !offset.is_multiple_of(4) {
            self.ignored += 1;
            return Written::Nothing;
        }
        let value = value as u32;
        match offset {
            offset::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            offset::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                let word = u64::from(value);
                match self.driver_features_sel {
                    0 => self.driver_features = self.driver_features & !0xffff_ffff | word,
                    1 => self.driver_features = self.driver_features & 0xffff_ffff | word << 32,
                    _ => self.ignored += 1,
                }
            }
            offset::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            offset::QUEUE_SEL => self.queue_sel = value,
            offset::QUEUE_NUM => {
                // Sizes above 16 bits become 0, refused when the queue is enabled.
                let size = u16::try_from(value).unwrap_or(0);
                self.setup(|q| q.set_size(size));
            }
            offset::QUEUE_READY => return self.write_queue_ready(value),
            offset::QUEUE_NOTIFY => {
                if let Some(queue) = u16::try_from(value).ok().filter(|&q| usize::from(q) < Q) {
                    return Written::Notify(queue);
                }
                self.ignored += 1;
            }
            offset::INTERRUPT_ACK => self.interrupt_status &= !value,
            offset::STATUS => return self.write_status(value),
            offset::QUEUE_DESC_LOW => self.setup(|q| set_low(q.desc_mut(), value)),
            offset::QUEUE_DESC_HIGH => self.setup(|q| set_high(q.desc_mut(), value)),
            offset::QUEUE_DRIVER_LOW => self.setup(|q| set_low(q.driver_mut(), value)),
            offset::QUEUE_DRIVER_HIGH => self.setup(|q| set_high(q.driver_mut(), value)),
            offset::QUEUE_DEVICE_LOW => self.setup(|q| set_low(q.device_mut(), value)),
            offset::QUEUE_DEVICE_HIGH => self.setup(|q| set_high(q.device_mut(), value)),
            offset::SHM_SEL => {}
            _ => self.ignored += 1,
        }
        Written::Nothing
    }

    /// Applies a queue setup write to the selected queue, if it exists and is disabled
    /// (§4.2.2.3: the driver sets a queue up before enabling it).
    fn setup(&mut self, apply: impl FnOnce(&mut SplitQueue)) {
        match self.selected_mut() {
            Some(queue) if !queue.ready() => apply(queue),
            _ => self.ignored += 1,
        }
    }

    fn write_queue_ready(&mut self, value: u32) -> Written {
        let Some(queue) = self.selected_mut() else {
            self.ignored += 1;
            return Written::Nothing;
        };
        if value & 1 == 0 {
            queue.disable();
            return Written::Nothing;
        }
        if queue.ready() {
            return Written::Nothing;
        }
        match queue.enable() {
            Ok(()) => Written::Nothing,
            Err(error) => {
                self.set_needs_reset();
                Written::Broken(error)
            }
        }
    }

    /// A `Status` write. 0 resets. Otherwise the driver's bits only accumulate (it must not
    /// clear one, §2.1.2); `FEATURES_OK` sticks only if the driver's features are a subset
    /// of the device's that includes `VIRTIO_F_VERSION_1` (§3.1.1), and `DRIVER_OK` only
    /// after `FEATURES_OK`. `DEVICE_NEEDS_RESET` belongs to the device.
    fn write_status(&mut self, value: u32) -> Written {
        if value == 0 {
            self.reset();
            return Written::Reset;
        }
        const DRIVER_BITS: u32 = status::ACKNOWLEDGE
            | status::DRIVER
            | status::FEATURES_OK
            | status::DRIVER_OK
            | status::FAILED;
        let old = self.status;
        let mut new = (old | value) & DRIVER_BITS;
        if new & status::FEATURES_OK != 0
            && old & status::FEATURES_OK == 0
            && !self.features_acceptable()
        {
            new &= !status::FEATURES_OK;
        }
        if new & status::FEATURES_OK == 0 {
            new &= !status::DRIVER_OK;
        }
        self.status = new | old & status::DEVICE_NEEDS_RESET;
        Written::Nothing
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.info.features == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    /// Sets `DEVICE_NEEDS_RESET`, with a configuration-change interrupt if the driver had
    /// set `DRIVER_OK` (§2.1.2). The device is no longer [live](Self::is_live).
    pub fn set_needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= interrupt::CONFIG_CHANGE;
        }
    }

    /// Records that the device used buffers (sets the used-buffer interrupt bit).
    pub fn raise_used_buffer(&mut self) {
        self.interrupt_status |= interrupt::USED_BUFFER;
    }

    /// The `Status` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device is live: `DRIVER_OK` set, neither `DEVICE_NEEDS_RESET` nor
    /// `FAILED`.
    pub fn is_live(&self) -> bool {
        self.status & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET | status::FAILED)
            == status::DRIVER_OK
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The level of the interrupt line: high while any `InterruptStatus` bit is set.
    pub fn interrupt_level(&self) -> bool {
        self.interrupt_status != 0
    }

    /// The features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Queue `index`, if the device has it.
    pub fn queue(&self, index: usize) -> Option<&SplitQueue> {
        self.queues.get(index)
    }

    pub(crate) fn queue_mut(&mut self, index: usize) -> &mut SplitQueue {
        &mut self.queues[index]
    }

    /// Accesses ignored so far (bad width or alignment, unknown or read-only registers).
    pub fn ignored_accesses(&self) -> u64 {
        self.ignored
    }

    fn selected(&self) -> Option<&SplitQueue> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    fn selected_mut(&mut self) -> Option<&mut SplitQueue> {
        self.queues.get_mut(usize::try_from(self.queue_sel).ok()?)
    }
}

fn set_low(field: &mut u64, value: u32) {
    *field = *field & !0xffff_ffff | u64::from(value);
}

fn set_high(field: &mut u64, value: u32) {
    *field = *field & 0xffff_ffff | u64::from(value) << 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: DeviceInfo = DeviceInfo {
        device_id: 19,
        vendor_id: 0x1234_5678,
        features: VIRTIO_F_VERSION_1 | 1,
        queue_max: 64,
    };
    const CONFIG: [u8; 8] = [5, 0, 0, 0, 0, 0, 0, 0];

    fn transport() -> MmioTransport<3> {
        MmioTransport::new(INFO)
    }

    fn read(t: &mut MmioTransport<3>, offset: u64) -> u32 {
        t.read(offset, AccessWidth::Word, &CONFIG) as u32
    }

    fn write(t: &mut MmioTransport<3>, offset: u64, value: u32) -> Written {
        t.write(offset, AccessWidth::Word, u64::from(value))
    }

    /// A transport the driver has negotiated `VIRTIO_F_VERSION_1` with.
    fn negotiated() -> MmioTransport<3> {
        let mut t = transport();
        write(&mut t, offset::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(&mut t, offset::DRIVER_FEATURES_SEL, 1);
        write(&mut t, offset::DRIVER_FEATURES, 1);
        write(&mut t, offset::STATUS, status::FEATURES_OK);
        assert_ne!(t.status() & status::FEATURES_OK, 0);
        t
    }

    #[test]
    fn identification_registers() {
        let mut t = transport();
        assert_eq!(read(&mut t, offset::MAGIC_VALUE), MAGIC);
        assert_eq!(read(&mut t, offset::VERSION), 2);
        assert_eq!(read(&mut t, offset::DEVICE_ID), 19);
        assert_eq!(read(&mut t, offset::VENDOR_ID), 0x1234_5678);
        assert_eq!(read(&mut t, offset::CONFIG_GENERATION), 0);
        assert_eq!(t.ignored_accesses(), 0);
    }

    #[test]
    fn identification_registers_are_read_only() {
        let mut t = transport();
        for reg in [
            offset::MAGIC_VALUE,
            offset::VERSION,
            offset::DEVICE_ID,
            offset::VENDOR_ID,
        ] {
            assert_eq!(write(&mut t, reg, 0), Written::Nothing);
        }
        assert_eq!(read(&mut t, offset::MAGIC_VALUE), MAGIC);
        assert_eq!(t.ignored_accesses(), 4);
    }

    #[test]
    fn device_features_by_word() {
        let mut t = transport();
        assert_eq!(read(&mut t, offset::DEVICE_FEATURES), 1);
        write(&mut t, offset::DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            read(&mut t, offset::DEVICE_FEATURES),
            1,
            "bit 32: VERSION_1"
        );
        write(&mut t, offset::DEVICE_FEATURES_SEL, 2);
        assert_eq!(read(&mut t, offset::DEVICE_FEATURES), 0);
    }

    #[test]
    fn driver_features_by_word() {
        let mut t = transport();
        write(&mut t, offset::DRIVER_FEATURES, 1);
        write(&mut t, offset::DRIVER_FEATURES_SEL, 1);
        write(&mut t, offset::DRIVER_FEATURES, 1);
        assert_eq!(t.driver_features(), VIRTIO_F_VERSION_1 | 1);
        write(&mut t, offset::DRIVER_FEATURES_SEL, 7);
        write(&mut t, offset::DRIVER_FEATURES, u32::MAX);
        assert_eq!(t.driver_features(), VIRTIO_F_VERSION_1 | 1);
        assert_eq!(read(&mut t, offset::DRIVER_FEATURES), 0, "write-only");
    }

    #[test]
    fn features_ok_needs_version_1() {
        let mut t = transport();
        write(&mut t, offset::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(&mut t, offset::DRIVER_FEATURES, 1);
        write(&mut t, offset::STATUS, status::FEATURES_OK);
        assert_eq!(
            t.status() & status::FEATURES_OK,
            0,
            "a legacy driver is refused"
        );
        write(&mut t, offset::STATUS, status::DRIVER_OK);
        assert_eq!(
            t.status() & status::DRIVER_OK,
            0,
            "no DRIVER_OK without FEATURES_OK"
        );
        assert!(!t.is_live());
    }

    #[test]
    fn features_ok_refuses_features_not_offered() {
        let mut t = transport();
        write(&mut t, offset::DRIVER_FEATURES_SEL, 1);
        write(&mut t, offset::DRIVER_FEATURES, 1 | 2);
        write(&mut t, offset::STATUS, status::FEATURES_OK);
        assert_eq!(t.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn features_are_fixed_after_features_ok() {
        let mut t = negotiated();
        write(&mut t, offset::DRIVER_FEATURES_SEL, 0);
        write(&mut t, offset::DRIVER_FEATURES, 1);
        assert_eq!(t.driver_features(), VIRTIO_F_VERSION_1);
    }

    #[test]
    fn status_bits_accumulate_and_zero_resets() {
        let mut t = negotiated();
        write(&mut t, offset::STATUS, status::DRIVER_OK);
        let all = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        assert_eq!(
            read(&mut t, offset::STATUS),
            all,
            "the driver cannot clear bits"
        );
        assert!(t.is_live());
        write(&mut t, offset::STATUS, status::DEVICE_NEEDS_RESET);
        assert_eq!(
            read(&mut t, offset::STATUS),
            all,
            "DEVICE_NEEDS_RESET is the device's"
        );
        write(&mut t, offset::QUEUE_SEL, 2);
        assert_eq!(write(&mut t, offset::STATUS, 0), Written::Reset);
        assert_eq!(read(&mut t, offset::STATUS), 0);
        assert_eq!(t.driver_features(), 0);
        assert_eq!(
            read(&mut t, offset::QUEUE_NUM_MAX),
            64,
            "QueueSel back to 0"
        );
    }

    #[test]
    fn failed_stops_the_device() {
        let mut t = negotiated();
        write(&mut t, offset::STATUS, status::DRIVER_OK);
        write(&mut t, offset::STATUS, status::FAILED);
        assert!(!t.is_live());
    }

    #[test]
    fn queue_registers() {
        let mut t = negotiated();
        write(&mut t, offset::QUEUE_SEL, 1);
        assert_eq!(read(&mut t, offset::QUEUE_NUM_MAX), 64);
        assert_eq!(read(&mut t, offset::QUEUE_READY), 0);
        write(&mut t, offset::QUEUE_NUM, 16);
        write(&mut t, offset::QUEUE_DESC_LOW, 0x1000);
        write(&mut t, offset::QUEUE_DESC_HIGH, 1);
        write(&mut t, offset::QUEUE_DRIVER_LOW, 0x2000);
        write(&mut t, offset::QUEUE_DRIVER_HIGH, 2);
        write(&mut t, offset::QUEUE_DEVICE_LOW, 0x3000);
        write(&mut t, offset::QUEUE_DEVICE_HIGH, 3);
        assert_eq!(write(&mut t, offset::QUEUE_READY, 1), Written::Nothing);
        assert_eq!(read(&mut t, offset::QUEUE_READY), 1);
        let queue = t.queue(1).unwrap();
        assert_eq!(queue.size(), 16);
        assert_eq!(
            queue.addresses(),
            (0x1_0000_1000, 0x2_0000_2000, 0x3_0000_3000)
        );
        for reg in [
            offset::QUEUE_NUM,
            offset::QUEUE_DESC_LOW,
            offset::QUEUE_DESC_HIGH,
        ] {
            assert_eq!(read(&mut t, reg), 0, "write-only");
        }

        // Setup of an enabled queue is ignored.
        write(&mut t, offset::QUEUE_NUM, 8);
        write(&mut t, offset::QUEUE_DESC_LOW, 0);
        assert_eq!(t.queue(1).unwrap().size(), 16);
        assert_eq!(t.queue(1).unwrap().addresses().0, 0x1_0000_1000);

        write(&mut t, offset::QUEUE_READY, 0);
        assert_eq!(read(&mut t, offset::QUEUE_READY), 0);
        assert!(!t.queue(0).unwrap().ready(), "other queues untouched");
    }

    #[test]
    fn queues_beyond_the_device_read_as_absent() {
        let mut t = negotiated();
        write(&mut t, offset::QUEUE_SEL, 3);
        assert_eq!(read(&mut t, offset::QUEUE_NUM_MAX), 0);
        assert_eq!(read(&mut t, offset::QUEUE_READY), 0);
        assert_eq!(write(&mut t, offset::QUEUE_READY, 1), Written::Nothing);
        write(&mut t, offset::QUEUE_NUM, 4);
        assert_eq!(t.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn a_bad_queue_size_needs_reset() {
        for size in [0, 3, 128, 0x1_0000] {
            let mut t = negotiated();
            write(&mut t, offset::STATUS, status::DRIVER_OK);
            write(&mut t, offset::QUEUE_NUM, size);
            let written = write(&mut t, offset::QUEUE_READY, 1);
            assert!(
                matches!(written, Written::Broken(QueueError::Size(_))),
                "{size}: {written:?}"
            );
            assert_eq!(read(&mut t, offset::QUEUE_READY), 0);
            assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
            assert_eq!(
                t.interrupt_status(),
                interrupt::CONFIG_CHANGE,
                "DRIVER_OK was set"
            );
            assert!(!t.is_live());
        }
    }

    #[test]
    fn a_misaligned_or_wrapping_queue_needs_reset() {
        let cases = [
            (offset::QUEUE_DESC_LOW, 8),
            (offset::QUEUE_DRIVER_LOW, 1),
            (offset::QUEUE_DEVICE_LOW, 2),
            (offset::QUEUE_DEVICE_HIGH, u32::MAX),
        ];
        for (reg, value) in cases {
            let mut t = negotiated();
            write(&mut t, reg, value);
            if reg == offset::QUEUE_DEVICE_HIGH {
                write(&mut t, offset::QUEUE_DEVICE_LOW, 0xffff_ff00);
            }
            assert_eq!(
                write(&mut t, offset::QUEUE_READY, 1),
                Written::Broken(QueueError::Layout)
            );
            assert_eq!(t.interrupt_status(), 0, "no interrupt before DRIVER_OK");
            assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        }
    }

    #[test]
    fn needs_reset_survives_until_reset() {
        let mut t = negotiated();
        t.set_needs_reset();
        write(&mut t, offset::STATUS, status::DRIVER_OK);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        write(&mut t, offset::STATUS, 0);
        assert_eq!(t.status(), 0);
    }

    #[test]
    fn queue_notify() {
        let mut t = negotiated();
        assert_eq!(write(&mut t, offset::QUEUE_NOTIFY, 1), Written::Notify(1));
        assert_eq!(write(&mut t, offset::QUEUE_NOTIFY, 3), Written::Nothing);
        assert_eq!(
            write(&mut t, offset::QUEUE_NOTIFY, 0x1_0001),
            Written::Nothing
        );
        assert_eq!(read(&mut t, offset::QUEUE_NOTIFY), 0, "write-only");
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut t = negotiated();
        write(&mut t, offset::STATUS, status::DRIVER_OK);
        assert!(!t.interrupt_level());
        t.raise_used_buffer();
        t.set_needs_reset();
        assert_eq!(read(&mut t, offset::INTERRUPT_STATUS), 3);
        assert!(t.interrupt_level());
        write(&mut t, offset::INTERRUPT_ACK, interrupt::USED_BUFFER);
        assert_eq!(
            read(&mut t, offset::INTERRUPT_STATUS),
            interrupt::CONFIG_CHANGE
        );
        write(&mut t, offset::INTERRUPT_STATUS, 0);
        assert_eq!(
            read(&mut t, offset::INTERRUPT_STATUS),
            interrupt::CONFIG_CHANGE,
            "read-only"
        );
        write(&mut t, offset::INTERRUPT_ACK, interrupt::CONFIG_CHANGE);
        assert!(!t.interrupt_level());
        assert_eq!(read(&mut t, offset::INTERRUPT_ACK), 0, "write-only");
    }

    #[test]
    fn no_shared_memory_regions() {
        let mut t = transport();
        write(&mut t, offset::SHM_SEL, 0);
        for reg in [
            offset::SHM_LEN_LOW,
            offset::SHM_LEN_HIGH,
            offset::SHM_BASE_LOW,
            offset::SHM_BASE_HIGH,
        ] {
            assert_eq!(read(&mut t, reg), u32::MAX);
        }
    }

    #[test]
    fn registers_take_aligned_words_only() {
        let mut t = transport();
        assert_eq!(t.read(offset::MAGIC_VALUE, AccessWidth::Byte, &CONFIG), 0);
        assert_eq!(t.read(offset::MAGIC_VALUE, AccessWidth::Double, &CONFIG), 0);
        assert_eq!(t.read(offset::VERSION + 2, AccessWidth::Word, &CONFIG), 0);
        t.write(offset::STATUS, AccessWidth::Half, 1);
        t.write(offset::STATUS + 1, AccessWidth::Word, 1);
        assert_eq!(t.status(), 0);
        assert_eq!(t.read(0x0f0, AccessWidth::Word, &CONFIG), 0, "reserved");
        assert_eq!(t.ignored_accesses(), 6);
    }

    #[test]
    fn configuration_space_any_aligned_width() {
        let mut t = transport();
        let config = 0x1122_3344_5566_7788u64.to_le_bytes();
        assert_eq!(
            t.read(offset::CONFIG, AccessWidth::Double, &config),
            0x1122_3344_5566_7788
        );
        assert_eq!(
            t.read(offset::CONFIG, AccessWidth::Word, &config),
            0x5566_7788
        );
        assert_eq!(
            t.read(offset::CONFIG + 4, AccessWidth::Word, &config),
            0x1122_3344
        );
        assert_eq!(
            t.read(offset::CONFIG + 6, AccessWidth::Half, &config),
            0x1122
        );
        assert_eq!(t.read(offset::CONFIG + 7, AccessWidth::Byte, &config), 0x11);
        assert_eq!(t.ignored_accesses(), 0);
        assert_eq!(
            t.read(offset::CONFIG + 2, AccessWidth::Word, &config),
            0,
            "misaligned"
        );
        assert_eq!(
            t.read(offset::CONFIG + 8, AccessWidth::Word, &config),
            0,
            "past the end"
        );
        assert_eq!(t.read(u64::MAX - 3, AccessWidth::Word, &config), 0);
        t.write(offset::CONFIG, AccessWidth::Word, 0);
        assert_eq!(
            t.read(offset::CONFIG, AccessWidth::Byte, &config),
            0x88,
            "read-only"
        );
        assert_eq!(t.ignored_accesses(), 4);
    }
}
