//! Event records (IHI 0070, 7.3): 32 bytes the SMMU writes to the event queue when it
//! aborts a transaction or cannot use its configuration.

use core::fmt;

/// The kinds of event, by SMMU_EVENT EventID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// 0x02 C_BAD_STREAMID: the stream ID is beyond the stream table.
    BadStreamId,
    /// 0x03 F_STE_FETCH: the stream table could not be read.
    SteFetch,
    /// 0x04 C_BAD_STE: the stream's entry is invalid (no VM owns the stream).
    BadSte,
    /// 0x06 F_STREAM_DISABLED.
    StreamDisabled,
    /// 0x0b F_WALK_EABT: an external abort during the table walk.
    WalkAbort,
    /// 0x10 F_TRANSLATION: the address is not mapped for the stream's VM.
    Translation,
    /// 0x11 F_ADDR_SIZE: the address is beyond the stream's address size.
    AddressSize,
    /// 0x12 F_ACCESS: an access flag fault.
    Access,
    /// 0x13 F_PERMISSION: the mapping does not allow the access.
    Permission,
    /// Any other EventID.
    Other(u8),
}

impl EventKind {
    fn from_id(id: u8) -> Self {
        match id {
            0x02 => Self::BadStreamId,
            0x03 => Self::SteFetch,
            0x04 => Self::BadSte,
            0x06 => Self::StreamDisabled,
            0x0b => Self::WalkAbort,
            0x10 => Self::Translation,
            0x11 => Self::AddressSize,
            0x12 => Self::Access,
            0x13 => Self::Permission,
            other => Self::Other(other),
        }
    }

    /// The architecture's name for the event.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadStreamId => "C_BAD_STREAMID",
            Self::SteFetch => "F_STE_FETCH",
            Self::BadSte => "C_BAD_STE",
            Self::StreamDisabled => "F_STREAM_DISABLED",
            Self::WalkAbort => "F_WALK_EABT",
            Self::Translation => "F_TRANSLATION",
            Self::AddressSize => "F_ADDR_SIZE",
            Self::Access => "F_ACCESS",
            Self::Permission => "F_PERMISSION",
            Self::Other(_) => "event",
        }
    }

    /// Whether the record carries the faulting input address and direction.
    pub fn has_address(self) -> bool {
        matches!(
            self,
            Self::WalkAbort
                | Self::Translation
                | Self::AddressSize
                | Self::Access
                | Self::Permission
        )
    }
}

/// One decoded event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The raw EventID.
    pub id: u8,
    /// The stream that made the transaction.
    pub sid: u32,
    /// The address the device used (an IPA under stage 2), for faults that have one.
    pub address: Option<u64>,
    /// Whether the transaction was a read (RnW), for faults that have an address.
    pub read: bool,
    /// Whether the fault arose at stage 2.
    pub stage2: bool,
}

impl Event {
    /// Decodes a record from its four 64-bit words.
    pub fn decode(words: [u64; 4]) -> Self {
        let id = words[0] as u8;
        let kind = EventKind::from_id(id);
        Self {
            kind,
            id,
            sid: (words[0] >> 32) as u32,
            address: kind.has_address().then_some(words[2]),
            read: words[1] >> 35 & 1 == 1,
            stage2: words[1] >> 39 & 1 == 1,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:#04x}) stream {:#x}",
            self.kind.name(),
            self.id,
            self.sid
        )?;
        if let Some(addr) = self.address {
            let dir = if self.read { "read" } else { "write" };
            let stage = if self.stage2 { ", stage 2" } else { "" };
            write!(f, ", {dir} of {addr:#x}{stage}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage2_write_fault() {
        // As QEMU writes it: type 0x10, SID 0x18, RnW = 0, S2 = 1, input address.
        let e = Event::decode([0x18_0000_0010, 1 << 39, 0x9000_0000, 0x9000_0000]);
        assert_eq!(e.kind, EventKind::Translation);
        assert_eq!(
            (e.sid, e.address, e.read, e.stage2),
            (0x18, Some(0x9000_0000), false, true)
        );
        assert_eq!(
            e.to_string(),
            "F_TRANSLATION (0x10) stream 0x18, write of 0x90000000, stage 2"
        );
    }

    #[test]
    fn a_stream_nobody_owns() {
        let e = Event::decode([0x5_0000_0004, 0, 0, 0]);
        assert_eq!((e.kind, e.sid, e.address), (EventKind::BadSte, 5, None));
        assert_eq!(e.to_string(), "C_BAD_STE (0x04) stream 0x5");
        assert_eq!(Event::decode([0x77, 0, 0, 0]).kind, EventKind::Other(0x77));
    }
}
