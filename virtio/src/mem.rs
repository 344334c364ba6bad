//! The guest's memory as the device sees it: a trait the EL2 glue implements, and a fake.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use stage2::IntermediatePhysAddr;

/// A VM's RAM, read and written by guest physical address.
///
/// Every access of an address range not wholly inside the VM's own RAM must fail: the
/// driver chooses every address the device touches, so this trait is what keeps a hostile
/// driver from pointing the device at the hypervisor, at another VM or at a device.
///
/// The device copies everything it reads into its own memory before it checks or uses it,
/// and never reads a field twice, so the driver changing memory under it gains nothing.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes from `addr` into `buf`.
    fn read(&self, addr: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `data` to `addr`.
    fn write(&mut self, addr: IntermediatePhysAddr, data: &[u8]) -> Result<(), MemoryError>;

    /// Reads the little-endian `u16` at `addr` (2-byte aligned) with one single-copy-atomic
    /// 16-bit load. The ring indices are read this way: the driver updates them while the
    /// device runs, and a torn read could make a good ring look malformed.
    fn read_u16(&self, addr: IntermediatePhysAddr) -> Result<u16, MemoryError>;

    /// Writes `value` little-endian to `addr` (2-byte aligned) with one single-copy-atomic
    /// 16-bit store, so the driver never sees half of a new used index.
    fn write_u16(&mut self, addr: IntermediatePhysAddr, value: u16) -> Result<(), MemoryError>;

    /// Whether all of `[addr, addr + len)` is the VM's RAM. Every buffer a descriptor names
    /// is checked with it when the chain is taken, so the device never acts on a chain
    /// that lies even partly outside the driver's memory.
    fn contains(&self, addr: IntermediatePhysAddr, len: u64) -> bool;
}

/// An access of guest memory that does not lie wholly inside the VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    /// The first address of the access.
    pub addr: IntermediatePhysAddr,
    /// Its length in bytes.
    pub len: u64,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes at {} are outside the VM's RAM",
            self.len, self.addr
        )
    }
}

/// Guest memory backed by a `Vec`: one RAM region of `size` bytes at `base`. For host
/// tests, here and in the glue's own tests.
#[derive(Clone, Debug)]
pub struct FakeMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl FakeMemory {
    /// Zeroed RAM of `size` bytes at guest physical address `base`.
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            bytes: vec![0; size],
        }
    }

    /// The first guest physical address of the RAM.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The RAM's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// All of the RAM.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// All of the RAM, writable: what a test driver uses to build its rings.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn range(
        &self,
        addr: IntermediatePhysAddr,
        len: usize,
    ) -> Result<core::ops::Range<usize>, MemoryError> {
        let error = MemoryError {
            addr,
            len: len as u64,
        };
        let start = addr
            .as_u64()
            .checked_sub(self.base)
            .and_then(|offset| usize::try_from(offset).ok())
            .ok_or(error)?;
        let end = start.checked_add(len).ok_or(error)?;
        if end > self.bytes.len() {
            return Err(error);
        }
        Ok(start..end)
    }
}

impl GuestMemory for FakeMemory {
    fn contains(&self, addr: IntermediatePhysAddr, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| self.range(addr, len).is_ok())
    }

    fn read(&self, addr: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write(&mut self, addr: IntermediatePhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(addr, data.len())?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }

    fn read_u16(&self, addr: IntermediatePhysAddr) -> Result<u16, MemoryError> {
        let mut bytes = [0; 2];
        self.read(addr, &mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    fn write_u16(&mut self, addr: IntermediatePhysAddr, value: u16) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_memory_refuses_everything_outside_its_region() {
        let mut mem = FakeMemory::new(0x1000, 0x100);
        let mut buf = [0; 4];
        assert!(mem.read(IntermediatePhysAddr(0x0fff), &mut buf).is_err());
        assert!(mem.read(IntermediatePhysAddr(0x10fd), &mut buf).is_err());
        assert!(mem
            .read(IntermediatePhysAddr(u64::MAX - 1), &mut buf)
            .is_err());
        assert!(mem
            .write(IntermediatePhysAddr(0x10fc), &[1, 2, 3, 4])
            .is_ok());
        assert_eq!(mem.read_u16(IntermediatePhysAddr(0x10fc)), Ok(0x0201));
        assert!(mem.read(IntermediatePhysAddr(0x1100), &mut []).is_ok());
    }
}
