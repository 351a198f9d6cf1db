//! VMX capability MSRs and VM-execution/exit/entry control derivation (Intel SDM Vol. 3D
//! appendix A, Vol. 3C chapter 25). Pure: no instructions, host-tested.
//!
//! Every control word is derived from the capability MSRs with [`adjust`]; nothing here
//! hard-codes "default1" masks.
#![allow(dead_code)] // complete SDM tables: not every entry is used yet

use crate::hvm::BackendError;

/// IA32_VMX_BASIC: revision id (30:0), VMCS size (44:32), memory type (53:50), TRUE MSRs (55).
pub const MSR_VMX_BASIC: u32 = 0x480;
pub const MSR_VMX_PINBASED: u32 = 0x481;
pub const MSR_VMX_PROCBASED: u32 = 0x482;
pub const MSR_VMX_EXIT: u32 = 0x483;
pub const MSR_VMX_ENTRY: u32 = 0x484;
/// IA32_VMX_MISC: preemption-timer rate (4:0), activity states (8:6), CR3 targets (24:16).
pub const MSR_VMX_MISC: u32 = 0x485;
pub const MSR_VMX_CR0_FIXED0: u32 = 0x486;
pub const MSR_VMX_CR0_FIXED1: u32 = 0x487;
pub const MSR_VMX_CR4_FIXED0: u32 = 0x488;
pub const MSR_VMX_CR4_FIXED1: u32 = 0x489;
pub const MSR_VMX_PROCBASED2: u32 = 0x48b;
/// IA32_VMX_EPT_VPID_CAP.
pub const MSR_VMX_EPT_VPID_CAP: u32 = 0x48c;
pub const MSR_VMX_TRUE_PINBASED: u32 = 0x48d;
pub const MSR_VMX_TRUE_PROCBASED: u32 = 0x48e;
pub const MSR_VMX_TRUE_EXIT: u32 = 0x48f;
pub const MSR_VMX_TRUE_ENTRY: u32 = 0x490;

/// Pin-based VM-execution controls (SDM 25.6.1).
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls (SDM 25.6.2, table 25-6).
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM 25.6.2, table 25-7).
pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// Primary VM-exit controls (SDM 25.7.1).
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls (SDM 25.8.1).
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// A capability MSR: its index (for error reports) and value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cap {
    pub index: u32,
    pub value: u64,
}

impl Cap {
    /// Bits that must be 1 (allowed-0 settings, low half).
    pub const fn must_be_one(self) -> u32 {
        self.value as u32
    }
    /// Bits that may be 1 (allowed-1 settings, high half).
    pub const fn may_be_one(self) -> u32 {
        (self.value >> 32) as u32
    }
    /// True if `bits` may all be 1.
    pub const fn allows(self, bits: u32) -> bool {
        bits & !self.may_be_one() == 0
    }
}

/// Computes a control word: `required` bits must be settable (else the lowest offending bit
/// is reported), `desired` bits are set where the CPU allows, and every bit the CPU forces to
/// 1 is set. A desired-but-unsupported bit is silently dropped.
pub fn adjust(desired: u32, required: u32, cap: Cap) -> Result<u32, BackendError> {
    let missing = required & !cap.may_be_one();
    if missing != 0 {
        return Err(BackendError::ControlUnavailable {
            msr: cap.index,
            bit: missing.trailing_zeros(),
        });
    }
    Ok(((desired | required) & cap.may_be_one()) | cap.must_be_one())
}

/// The raw capability MSRs, read once per CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    pub basic: u64,
    pub pin: Cap,
    pub proc: Cap,
    pub proc2: Cap,
    pub exit: Cap,
    pub entry: Cap,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub ept_vpid: u64,
}

/// EPT/VPID capability bits (IA32_VMX_EPT_VPID_CAP, SDM A.10).
pub mod ept_cap {
    pub const EXECUTE_ONLY: u64 = 1 << 0;
    pub const WALK_4: u64 = 1 << 6;
    pub const MEMTYPE_WB: u64 = 1 << 14;
    pub const PAGE_2M: u64 = 1 << 16;
    pub const PAGE_1G: u64 = 1 << 17;
    pub const INVEPT: u64 = 1 << 20;
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    pub const INVEPT_ALL: u64 = 1 << 26;
    pub const INVVPID: u64 = 1 << 32;
    pub const INVVPID_ADDRESS: u64 = 1 << 40;
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    pub const INVVPID_ALL: u64 = 1 << 42;
}

impl VmxCaps {
    /// Reads every capability MSR through `rdmsr`, using the TRUE_* MSRs when BASIC bit 55
    /// says they exist, and the secondary-controls MSR only if the primary allows it.
    pub fn read(rdmsr: impl Fn(u32) -> u64) -> VmxCaps {
        let basic = rdmsr(MSR_VMX_BASIC);
        let truemsrs = basic & (1 << 55) != 0;
        let cap = |plain: u32, tru: u32| {
            let index = if truemsrs { tru } else { plain };
            Cap {
                index,
                value: rdmsr(index),
            }
        };
        let proc = cap(MSR_VMX_PROCBASED, MSR_VMX_TRUE_PROCBASED);
        let proc2 = if proc.allows(proc::ACTIVATE_SECONDARY) {
            Cap {
                index: MSR_VMX_PROCBASED2,
                value: rdmsr(MSR_VMX_PROCBASED2),
            }
        } else {
            Cap {
                index: MSR_VMX_PROCBASED2,
                value: 0,
            }
        };
        let ept_vpid = if proc2.allows(proc2::ENABLE_EPT) || proc2.allows(proc2::ENABLE_VPID) {
            rdmsr(MSR_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        VmxCaps {
            basic,
            pin: cap(MSR_VMX_PINBASED, MSR_VMX_TRUE_PINBASED),
            proc,
            proc2,
            exit: cap(MSR_VMX_EXIT, MSR_VMX_TRUE_EXIT),
            entry: cap(MSR_VMX_ENTRY, MSR_VMX_TRUE_ENTRY),
            misc: rdmsr(MSR_VMX_MISC),
            cr0_fixed0: rdmsr(MSR_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(MSR_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(MSR_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(MSR_VMX_CR4_FIXED1),
            ept_vpid,
        }
    }

    /// VMCS revision identifier for VMXON and VMCS regions.
    pub const fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7fff_ffff
    }

    /// Size in bytes of the VMXON/VMCS regions (at most 4096).
    pub const fn region_size(&self) -> u64 {
        (self.basic >> 32) & 0x1fff
    }

    /// Memory type for VMCS accesses (6 = write-back).
    pub const fn vmcs_memtype(&self) -> u64 {
        (self.basic >> 50) & 0xf
    }

    pub const fn true_controls(&self) -> bool {
        self.basic & (1 << 55) != 0
    }

    /// The preemption timer counts down once every 2^rate TSC ticks.
    pub const fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1f) as u32
    }

    /// True if the "unrestricted guest" control may be set.
    pub const fn unrestricted_guest(&self) -> bool {
        self.proc2.allows(proc2::UNRESTRICTED_GUEST)
    }

    pub const fn ept(&self) -> bool {
        self.proc2.allows(proc2::ENABLE_EPT)
            && self.ept_vpid & (ept_cap::WALK_4 | ept_cap::MEMTYPE_WB)
                == ept_cap::WALK_4 | ept_cap::MEMTYPE_WB
    }

    pub const fn vpid(&self) -> bool {
        self.proc2.allows(proc2::ENABLE_VPID)
    }

    pub const fn preemption_timer(&self) -> bool {
        self.pin.allows(pin::PREEMPTION_TIMER)
    }

    pub const fn has_ept(&self, bit: u64) -> bool {
        self.ept_vpid & bit != 0
    }
}

/// The control words a vCPU's VMCS is set up with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl Controls {
    /// Derives the controls ferrovisor runs PVH guests with. EPT and unrestricted guest are
    /// required; MWAIT, MONITOR and RDPMC exit; VPID, the preemption timer, RDTSCP, INVPCID
    /// and WBINVD exiting are used if present (without it WBINVD runs natively: harmless,
    /// only slow).
    /// CR3 load/store exiting is asked off (it stays on only if the CPU forces it, in which
    /// case the backend emulates CR3 accesses).
    pub fn derive(
        caps: &VmxCaps,
        use_vpid: bool,
        use_timer: bool,
    ) -> Result<Controls, BackendError> {
        let mut want_pin = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING;
        // Virtual NMIs (the CPU tracks the guest's NMI blocking until its IRET), used only
        // together with NMI-window exiting.
        if caps.proc.may_be_one() & proc::NMI_WINDOW_EXITING != 0 {
            want_pin |= pin::VIRTUAL_NMIS;
        }
        if use_timer {
            want_pin |= pin::PREEMPTION_TIMER;
        }
        let pin = adjust(
            want_pin,
            pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
            caps.pin,
        )?;
        let required = proc::HLT_EXITING
            | proc::MWAIT_EXITING
            | proc::RDPMC_EXITING
            | proc::MONITOR_EXITING
            | proc::USE_IO_BITMAPS
            | proc::USE_MSR_BITMAPS
            | proc::ACTIVATE_SECONDARY;
        let proc = adjust(required, required, caps.proc)?;
        // XSAVES/XRSTORS stay off (they #UD): IA32_XSS and supervisor state are not
        // virtualized, and CPUID does not offer them.
        let mut want2 = proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID | proc2::WBINVD_EXITING;
        if use_vpid {
            want2 |= proc2::ENABLE_VPID;
        }
        let req2 = proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST;
        let proc2 = adjust(want2, req2, caps.proc2)?;
        let req_exit = exit::HOST_ADDRESS_SPACE_SIZE
            | exit::ACK_INTERRUPT_ON_EXIT
            | exit::SAVE_EFER
            | exit::LOAD_EFER;
        let exit = adjust(
            req_exit | exit::SAVE_PAT | exit::LOAD_PAT | exit::SAVE_DEBUG_CONTROLS,
            req_exit,
            caps.exit,
        )?;
        // Debug controls: the guest's IA32_DEBUGCTL (and DR7) loaded at entry, saved at exit.
        let entry = adjust(
            entry::LOAD_PAT | entry::LOAD_DEBUG_CONTROLS,
            entry::LOAD_EFER,
            caps.entry,
        )?;
        // The preemption timer is changed per entry; the IA-32e entry control follows LMA.
        Ok(Controls {
            pin,
            proc,
            proc2,
            exit,
            entry: entry & !entry::IA32E_MODE_GUEST,
        })
    }
}

/// Applies CR0/CR4 fixed bits: bits set in `fixed0` forced to 1, bits clear in `fixed1`
/// forced to 0 (SDM A.7/A.8).
pub const fn apply_fixed(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(index: u32, must: u32, may: u32) -> Cap {
        Cap {
            index,
            value: u64::from(may) << 32 | u64::from(must),
        }
    }

    #[test]
    fn adjust_sets_forced_and_drops_unsupported() {
        let c = cap(0x481, 0x16, 0x7f);
        assert_eq!(adjust(0x1 | 0x80, 0, c), Ok(0x17));
        assert_eq!(adjust(0, 0, c), Ok(0x16));
    }

    #[test]
    fn adjust_reports_lowest_missing_required_bit() {
        let c = cap(0x48b, 0, 0b1010);
        assert_eq!(
            adjust(0, 0b0101, c),
            Err(BackendError::ControlUnavailable { msr: 0x48b, bit: 0 })
        );
        assert_eq!(adjust(0b10, 0b10, c), Ok(0b10));
    }

    /// Capability values reported by Bochs's corei7_skylake_x-like CPUs (shape only).
    fn fake(truemsrs: bool) -> impl Fn(u32) -> u64 {
        move |i| match i {
            MSR_VMX_BASIC => (u64::from(truemsrs) << 55) | 6 << 50 | 0x1000 << 32 | 0x1d3,
            MSR_VMX_PINBASED | MSR_VMX_TRUE_PINBASED => 0x7f_0000_0016,
            MSR_VMX_PROCBASED => 0xfff9_fffe_0401_e172,
            MSR_VMX_TRUE_PROCBASED => 0xfff9_fffe_0400_6172,
            MSR_VMX_PROCBASED2 => 0x0011_30ff_0000_0000,
            MSR_VMX_EXIT => 0x03ff_ffff_0003_6dff,
            MSR_VMX_TRUE_EXIT => 0x03ff_ffff_0003_6dfb,
            MSR_VMX_ENTRY => 0x0003_ffff_0000_11ff,
            MSR_VMX_TRUE_ENTRY => 0x0003_ffff_0000_11fb,
            MSR_VMX_MISC => 0x3_0000_0005,
            MSR_VMX_EPT_VPID_CAP => 0xf_0106_6141,
            MSR_VMX_CR0_FIXED0 => 0x8000_0021,
            MSR_VMX_CR0_FIXED1 => 0xffff_ffff,
            MSR_VMX_CR4_FIXED0 => 0x2000,
            MSR_VMX_CR4_FIXED1 => 0x3727ff,
            _ => 0,
        }
    }

    #[test]
    fn true_msrs_allow_cr3_exiting_off() {
        let caps = VmxCaps::read(fake(true));
        assert_eq!(caps.proc.index, MSR_VMX_TRUE_PROCBASED);
        assert_eq!(caps.revision_id(), 0x1d3);
        assert_eq!(caps.region_size(), 4096);
        assert_eq!(caps.preemption_timer_rate(), 5);
        assert!(caps.ept() && caps.vpid() && caps.unrestricted_guest());
        let c = Controls::derive(&caps, true, true).unwrap();
        assert_eq!(
            c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
            0
        );
        assert_ne!(c.proc2 & proc2::ENABLE_VPID, 0);
        assert_ne!(c.pin & pin::PREEMPTION_TIMER, 0);
        assert_ne!(c.exit & exit::HOST_ADDRESS_SPACE_SIZE, 0);
        assert_ne!(c.exit & exit::ACK_INTERRUPT_ON_EXIT, 0);
        assert_eq!(c.entry & entry::IA32E_MODE_GUEST, 0);
    }

    #[test]
    fn legacy_msrs_force_cr3_exiting() {
        let caps = VmxCaps::read(fake(false));
        let c = Controls::derive(&caps, false, false).unwrap();
        assert_ne!(c.proc & proc::CR3_LOAD_EXITING, 0);
        assert_eq!(c.proc2 & proc2::ENABLE_VPID, 0);
    }

    #[test]
    fn missing_unrestricted_guest_is_an_error() {
        let base = fake(true);
        let caps = VmxCaps::read(move |i| {
            if i == MSR_VMX_PROCBASED2 {
                0x2_0000_0000
            } else {
                base(i)
            }
        });
        assert_eq!(
            Controls::derive(&caps, true, true),
            Err(BackendError::ControlUnavailable {
                msr: MSR_VMX_PROCBASED2,
                bit: 7
            })
        );
    }

    #[test]
    fn fixed_bits() {
        assert_eq!(apply_fixed(0x11, 0x8000_0021, 0xffff_ffff), 0x8000_0031);
        assert_eq!(apply_fixed(1 << 30, 0, 0xffff), 0);
    }
}
