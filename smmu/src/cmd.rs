//! Commands (IHI 0070, 4): 16 bytes each, written to the command queue.

/// A command the driver issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// CMD_CFGI_STE: forget the cached configuration of one stream.
    CfgiSte {
        /// The stream ID.
        sid: u32,
    },
    /// CMD_CFGI_ALL: forget every cached configuration.
    CfgiAll,
    /// CMD_TLBI_NSNH_ALL: forget every non-secure, non-hypervisor TLB entry.
    TlbiNsnhAll,
    /// CMD_TLBI_S12_VMALL: forget every TLB entry tagged with a VMID.
    TlbiS12Vmall {
        /// The VM's VMID.
        vmid: u16,
    },
    /// CMD_SYNC: completes once every earlier command has taken effect. No completion
    /// signal (CS = 0): the driver waits for SMMU_CMDQ_CONS to pass it.
    Sync,
}

const CMD_CFGI_STE: u64 = 0x03;
const CMD_CFGI_ALL: u64 = 0x04;
const CMD_TLBI_S12_VMALL: u64 = 0x28;
const CMD_TLBI_NSNH_ALL: u64 = 0x30;
const CMD_SYNC: u64 = 0x46;
/// CMD_CFGI_STE's Leaf bit: only the STE, not level-1 descriptors, changed. Tandem also
/// rewrites level-1 descriptors only while the SMMU is off, so leaf invalidation suffices.
const LEAF: u64 = 1;
/// CMD_CFGI_ALL's Range field: all 2^32 stream IDs (31 means every ID).
const RANGE_ALL: u64 = 31;

impl Command {
    /// The command's two 64-bit words, as they go into the queue.
    pub fn encode(self) -> [u64; 2] {
        match self {
            Self::CfgiSte { sid } => [CMD_CFGI_STE | u64::from(sid) << 32, LEAF],
            Self::CfgiAll => [CMD_CFGI_ALL, RANGE_ALL],
            Self::TlbiNsnhAll => [CMD_TLBI_NSNH_ALL, 0],
            Self::TlbiS12Vmall { vmid } => [CMD_TLBI_S12_VMALL | u64::from(vmid) << 32, 0],
            Self::Sync => [CMD_SYNC, 0],
        }
    }
}

/// What SMMU_CMDQ_CONS.ERR says about a refused command.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0 => "CERROR_NONE",
        1 => "CERROR_ILL (an illegal or unknown command)",
        2 => "CERROR_ABT (the queue could not be read)",
        3 => "CERROR_ATC_INV_SYNC",
        _ => "an implementation-defined error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(Command::CfgiSte { sid: 0x12 }.encode(), [0x12_0000_0003, 1]);
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
        assert_eq!(
            Command::TlbiS12Vmall { vmid: 7 }.encode(),
            [0x7_0000_0028, 0]
        );
        assert_eq!(Command::Sync.encode(), [0x46, 0]);
        assert!(error_name(1).contains("ILL"));
    }
}
