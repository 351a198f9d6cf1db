//! Guest MSR policy for the MSRs the backends do not hold in the VMCS/VMCB.
//!
//! Unknown MSRs raise #GP, as on Xen: Linux probes optional MSRs with `rdmsr_safe` and
//! survives the fault, while a silently invented value could mislead it.

/// What a guest RDMSR yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRead {
    Value(u64),
    /// Raise #GP(0).
    Fault,
}

/// What a guest WRMSR does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// Accepted (the value is dropped or already applied).
    Done,
    /// The guest asks for the Xen hypercall page at this guest-physical address.
    HypercallPage { gpa: u64 },
    /// Raise #GP(0).
    Fault,
}

/// IA32_DEBUGCTL.
pub const DEBUGCTL: u32 = 0x1d9;
/// The IA32_DEBUGCTL bits guests get, on both vendors: LBR (0, last-branch recording) and
/// BTF (1, single-step on branches). Every other bit (Intel's TR/BTS/freeze controls, AMD's
/// PB0-3) is refused with #GP: their records go to memory or counters not virtualized.
pub const DEBUGCTL_GUEST_BITS: u64 = 0b11;

/// True if a guest may write `value` to IA32_DEBUGCTL.
pub const fn debugctl_valid(value: u64) -> bool {
    value & !DEBUGCTL_GUEST_BITS == 0
}

/// Reads an MSR the backend did not claim.
pub fn read(index: u32) -> MsrRead {
    MsrRead::Value(match index {
        0x17 | 0x8b => 0,                             // platform id, microcode revision
        0x3a => 1,                                    // IA32_FEATURE_CONTROL: locked, VMX off
        0x10a => 0,                                   // ARCH_CAPABILITIES
        0xfe => 0,                                    // MTRRcap: no ranges, no fixed MTRRs
        0x2ff => (1 << 11) | 6,                       // MTRRdefType: enabled, write-back
        0x1a0 => 1 | (1 << 11) | (1 << 12),           // MISC_ENABLE: fast strings, no BTS/PEBS
        0x4000_0000 => 0,                             // hypercall page MSR reads as 0
        0xc001_0015 | 0xc001_1029 | 0xc001_0114 => 0, // AMD HWCR, DE_CFG, VM_CR
        0xc001_0055 => 0,                             // AMD interrupt-pending message (C1E)
        _ => return MsrRead::Fault,
    })
}

/// Writes an MSR the backend did not claim.
pub fn write(index: u32, value: u64) -> MsrWrite {
    match index {
        0x4000_0000 => {
            // Bits 11..0 select a page of a multi-page area; Xen offers exactly one page.
            if value & 0xfff != 0 {
                MsrWrite::Fault
            } else {
                MsrWrite::HypercallPage { gpa: value }
            }
        }
        // SPEC_CTRL (0x48) and PRED_CMD (0x49) fault: CPUID offers no IBRS/IBPB/SSBD.
        0x2ff | 0x200..=0x20f | 0x250 | 0x258 | 0x259 | 0x268..=0x26f => MsrWrite::Done,
        0x8b | 0xc001_0015 | 0xc001_1029 => MsrWrite::Done,
        _ => MsrWrite::Fault,
    }
}

/// The hypercall page: 128 stubs of 32 bytes, stub `i` = `mov eax, i; vmcall|vmmcall; ret`,
/// stub 23 (the PV-only iret) = `ud2` (Xen `docs/guest-guide/x86/hypercall-abi.rst`).
pub fn hypercall_page(amd: bool) -> [u8; 4096] {
    let mut page = [0xcc_u8; 4096];
    let call: [u8; 3] = if amd {
        [0x0f, 0x01, 0xd9]
    } else {
        [0x0f, 0x01, 0xc1]
    };
    for (i, stub) in page.chunks_exact_mut(32).enumerate() {
        if i == 23 {
            stub[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&(i as u32).to_le_bytes());
        stub[5..8].copy_from_slice(&call);
        stub[8] = 0xc3;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugctl_bits() {
        assert!(debugctl_valid(0) && debugctl_valid(1) && debugctl_valid(2) && debugctl_valid(3));
        assert!(!debugctl_valid(1 << 2), "AMD PB0 / Intel reserved");
        assert!(!debugctl_valid(1 << 6), "Intel TR");
        assert!(!debugctl_valid(1 << 7), "Intel BTS");
        assert!(!debugctl_valid(1 << 63));
    }

    #[test]
    fn unknown_msrs_fault() {
        assert_eq!(read(0x1234), MsrRead::Fault);
        assert_eq!(write(0x1234, 0), MsrWrite::Fault);
    }

    #[test]
    fn speculation_msrs_fault() {
        assert_eq!(read(0x48), MsrRead::Fault);
        assert_eq!(write(0x48, 1), MsrWrite::Fault);
        assert_eq!(write(0x49, 1), MsrWrite::Fault);
    }

    #[test]
    fn hypercall_page_msr() {
        assert_eq!(
            write(0x4000_0000, 0x12_3000),
            MsrWrite::HypercallPage { gpa: 0x12_3000 }
        );
        assert_eq!(write(0x4000_0000, 0x12_3001), MsrWrite::Fault);
        assert_eq!(read(0x4000_0000), MsrRead::Value(0));
    }

    #[test]
    fn hypercall_page_layout() {
        let intel = hypercall_page(false);
        assert_eq!(
            &intel[32 * 17..32 * 17 + 9],
            &[0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]
        );
        assert_eq!(&intel[32 * 23..32 * 23 + 2], &[0x0f, 0x0b]);
        let amd = hypercall_page(true);
        assert_eq!(&amd[32 * 29 + 5..32 * 29 + 8], &[0x0f, 0x01, 0xd9]);
    }
}
