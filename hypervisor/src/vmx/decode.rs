//! Exit-information decoding, event encoding and segment access rights (Intel SDM Vol. 3C
//! chapters 25, 27 and 28, Vol. 3D appendix C). Pure, host-tested: no VMCS access here, the
//! caller passes the raw field values in.

use crate::hvm::{Access, Event, Exit, IoAccess};

/// Basic exit reasons (SDM appendix C) the backend distinguishes.
pub mod reason {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const CPUID: u16 = 10;
    pub const HLT: u16 = 12;
    pub const GETSEC: u16 = 11;
    pub const INVD: u16 = 13;
    pub const RDPMC: u16 = 15;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMXON: u16 = 27;
    pub const MWAIT: u16 = 36;
    pub const MONITOR: u16 = 39;
    pub const INVEPT: u16 = 50;
    pub const INVVPID: u16 = 53;
    pub const VMFUNC: u16 = 59;
    pub const ENCLS: u16 = 60;
    pub const XSAVES: u16 = 63;
    pub const XRSTORS: u16 = 64;
    pub const CR_ACCESS: u16 = 28;
    pub const IO: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const INVALID_GUEST_STATE: u16 = 33;
    pub const MSR_LOADING: u16 = 34;
    pub const MACHINE_CHECK: u16 = 41;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const WBINVD: u16 = 54;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const XSETBV: u16 = 55;
}

/// Exit information read from the VMCS after an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawExit {
    /// The full exit-reason field (bit 31: VM-entry failure).
    pub reason: u32,
    pub qualification: u64,
    pub guest_physical: u64,
    pub guest_linear: u64,
    pub interruption_info: u32,
}

/// A control-register access (exit reason 28, SDM table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV to CR`cr` from general-purpose register `gpr` (0 = RAX ... 15 = R15).
    MovTo {
        cr: u8,
        gpr: u8,
    },
    /// MOV from CR`cr` to register `gpr`.
    MovFrom {
        cr: u8,
        gpr: u8,
    },
    Clts,
    /// LMSW with its 16-bit source operand.
    Lmsw {
        source: u16,
    },
}

/// What the backend does with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Report to the generic code.
    Report(Exit),
    /// Handle a CR access inside the backend.
    Cr(CrAccess),
    /// An NMI arrived while the guest ran: hand it to the host NMI handler.
    HostNmi,
    /// Inject this exception and enter again, RIP unchanged: instructions the guest's
    /// CPUID does not offer (VMX, SMX, SGX, MONITOR/MWAIT, XSAVES: #UD) or that need
    /// something not virtualized (RDPMC: #GP).
    Fault(Event),
    /// An intercepted exception (#DB, #AC) to deliver to the guest as it arrived: the
    /// exit's interruption information (vector, type, error-code flag) and the DR6 bits
    /// of a #DB (from the exit qualification).
    Reflect { info: u32, dr6: u64 },
    /// A machine check arrived while the guest ran: log it and let the guest go on.
    MachineCheck,
}

/// #UD, for instructions a guest without them would fault on.
pub const UD: Event = Event::Exception {
    vector: 6,
    error_code: None,
};

/// #GP(0).
pub const GP0: Event = Event::Exception {
    vector: 13,
    error_code: Some(0),
};

/// Bit 31 of the exit-reason field: the exit is a failed VM entry.
pub const ENTRY_FAILED: u32 = 1 << 31;

/// Bits of the interruption-information fields: VM-entry, VM-exit and IDT-vectoring
/// (SDM 25.8.3, 27.2.2, 27.2.4).
pub mod intr_info {
    /// The field holds an event.
    pub const VALID: u32 = 1 << 31;
    /// The event delivers an error code (held in the matching error-code field).
    pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
    /// VM-exit field only: the event's IRET unblocked NMIs (with virtual NMIs).
    pub const NMI_UNBLOCKED_BY_IRET: u32 = 1 << 12;
    /// What an exit's event keeps when it is entered again: valid, error-code bit, type
    /// and vector.
    pub const REINJECT: u32 = 0x8000_0fff;
    /// Event types (bits 10:8): an NMI, a hardware exception.
    pub const TYPE_NMI: u32 = 2;
    pub const TYPE_HARDWARE_EXCEPTION: u32 = 3;

    /// The event's type (bits 10:8).
    pub const fn kind(info: u32) -> u32 {
        (info >> 8) & 7
    }

    /// Types 4-6 (software interrupt, privileged and other software exceptions) take the
    /// instruction length on entry.
    pub const fn is_software(info: u32) -> bool {
        matches!(kind(info), 4..=6)
    }
}

/// Exceptions the backend intercepts (exception bitmap): #DB (1) and #AC (17), whose
/// unintercepted recursive delivery can hold a CPU in microcode for ever (XSA-156), and
/// #MC (18), which is logged.
pub const EXCEPTION_BITMAP: u32 = 1 << 1 | 1 << 17 | 1 << 18;

/// Decodes an exit into the backend's next step.
pub fn classify(raw: &RawExit) -> Action {
    let basic = raw.reason as u16;
    let q = raw.qualification;
    if raw.reason & ENTRY_FAILED != 0 {
        return Action::Report(Exit::EntryFailed {
            reason: entry_failure_name(basic, q),
            detail: q,
        });
    }
    let exit = match basic {
        reason::EXCEPTION_OR_NMI
            if intr_info::kind(raw.interruption_info) == intr_info::TYPE_NMI =>
        {
            return Action::HostNmi
        }
        reason::EXCEPTION_OR_NMI if raw.interruption_info & intr_info::VALID != 0 => {
            return match raw.interruption_info as u8 {
                18 => Action::MachineCheck,
                1 => Action::Reflect {
                    info: raw.interruption_info,
                    // B0-B3, BD, BS (SDM table 28-1); the CPU does not write DR6 itself.
                    dr6: 0xffff_0ff0 | (q & 0x600f),
                },
                _ => Action::Reflect {
                    info: raw.interruption_info,
                    dr6: 0,
                },
            };
        }
        // VMX instructions (VMCLEAR..VMXON, INVEPT, INVVPID, VMFUNC), GETSEC and ENCLS
        // exit unconditionally; the guest's CPUID offers none of them.
        reason::GETSEC
        | reason::VMCLEAR..=reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::VMFUNC
        | reason::ENCLS
        | reason::MWAIT
        | reason::MONITOR
        | reason::XSAVES
        | reason::XRSTORS => return Action::Fault(UD),
        // No performance counters are offered (CPUID leaf 0xA is zero).
        reason::RDPMC => return Action::Fault(GP0),
        reason::CR_ACCESS => return Action::Cr(decode_cr(q)),
        reason::EXTERNAL_INTERRUPT => Exit::ExternalInterrupt,
        reason::TRIPLE_FAULT => Exit::TripleFault,
        reason::INTERRUPT_WINDOW => Exit::InterruptWindow,
        reason::NMI_WINDOW => Exit::NmiWindow,
        reason::CPUID => Exit::Cpuid,
        reason::HLT => Exit::Hlt,
        reason::VMCALL => Exit::Hypercall,
        reason::IO => Exit::Io(decode_io(q)),
        reason::RDMSR => Exit::Msr { write: false },
        reason::WRMSR => Exit::Msr { write: true },
        reason::INVD | reason::WBINVD => Exit::CacheFlush,
        reason::XSETBV => Exit::Xsetbv,
        reason::PREEMPTION_TIMER => Exit::SliceExpired,
        reason::EPT_VIOLATION => decode_ept_violation(q, raw.guest_physical, raw.guest_linear),
        reason::EPT_MISCONFIG => Exit::NestedPageMisconfig {
            gpa: raw.guest_physical,
        },
        _ => Exit::Unhandled {
            code: u64::from(basic),
            qualification: q,
        },
    };
    Action::Report(exit)
}

/// I/O instruction qualification (SDM table 28-5).
pub fn decode_io(q: u64) -> IoAccess {
    IoAccess {
        port: (q >> 16) as u16,
        size: (q & 7) as u8 + 1,
        write: q & (1 << 3) == 0,
        string: q & (1 << 4) != 0,
        rep: q & (1 << 5) != 0,
    }
}

/// EPT-violation qualification (SDM table 28-7): access kind in bits 0-2, guest-linear
/// address valid in bit 7, and with bit 7 set, bit 8 clear when the access was part of
/// the guest's page walk rather than the instruction's own data access.
pub fn decode_ept_violation(q: u64, gpa: u64, gla: u64) -> Exit {
    let access = Access {
        read: q & 1 != 0,
        write: q & 2 != 0,
        execute: q & 4 != 0,
        page_walk: q & (1 << 7) != 0 && q & (1 << 8) == 0,
    };
    let gla = if q & (1 << 7) != 0 { Some(gla) } else { None };
    Exit::NestedPageFault { gpa, access, gla }
}

/// Control-register access qualification (SDM table 28-3).
pub fn decode_cr(q: u64) -> CrAccess {
    let cr = (q & 0xf) as u8;
    let gpr = ((q >> 8) & 0xf) as u8;
    match (q >> 4) & 3 {
        0 => CrAccess::MovTo { cr, gpr },
        1 => CrAccess::MovFrom { cr, gpr },
        2 => CrAccess::Clts,
        _ => CrAccess::Lmsw {
            source: (q >> 16) as u16,
        },
    }
}

/// Names the check a failed VM entry (exit reason with bit 31) tripped.
pub fn entry_failure_name(basic: u16, qualification: u64) -> &'static str {
    match (basic, qualification) {
        (reason::INVALID_GUEST_STATE, 2) => "invalid guest state: PDPTE loading failed",
        (reason::INVALID_GUEST_STATE, 3) => "invalid guest state: NMI injection",
        (reason::INVALID_GUEST_STATE, 4) => "invalid guest state: VMCS link pointer",
        (reason::INVALID_GUEST_STATE, _) => "VM-entry failure due to invalid guest state",
        (reason::MSR_LOADING, _) => "VM-entry failure due to MSR loading",
        (reason::MACHINE_CHECK, _) => "VM-entry failure due to machine-check event",
        _ => "VM-entry failure (unknown reason)",
    }
}

/// The SDM name of a VM-instruction error number (Vol. 3C 31.4, table 31-1).
pub fn instruction_error_name(error: u64) -> &'static str {
    match error {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// Segment access rights in the VMCS format (the descriptor's bits 47:40 and 55:52 at bits
/// 7:0 and 15:12, plus "unusable" at bit 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRights {
    pub typ: u8,
    /// Code/data (true) or system segment.
    pub s: bool,
    pub dpl: u8,
    pub present: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Default operand size 32-bit.
    pub db: bool,
    /// 4 KiB limit granularity.
    pub g: bool,
}

/// The "segment unusable" access-rights bit.
pub const AR_UNUSABLE: u32 = 1 << 16;

impl AccessRights {
    pub const fn encode(self) -> u32 {
        (self.typ as u32 & 0xf)
            | (self.s as u32) << 4
            | (self.dpl as u32 & 3) << 5
            | (self.present as u32) << 7
            | (self.l as u32) << 13
            | (self.db as u32) << 14
            | (self.g as u32) << 15
    }

    /// Flat 32-bit ring-0 segment of the given type (0xB code, 0x3 data).
    pub const fn flat32(typ: u8) -> AccessRights {
        AccessRights {
            typ,
            s: true,
            dpl: 0,
            present: true,
            l: false,
            db: true,
            g: true,
        }
    }

    /// Busy 32/64-bit TSS.
    pub const TSS_BUSY: AccessRights = AccessRights {
        typ: 0xb,
        s: false,
        dpl: 0,
        present: true,
        l: false,
        db: false,
        g: false,
    };
}

/// Exceptions that push an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP).
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// VM-entry interruption-information field (SDM 25.8.3) and error code for an event.
#[cfg(test)]
pub fn interruption_info(event: Event) -> (u32, Option<u32>) {
    interruption_info_in_mode(event, true)
}

/// [`interruption_info`] for a guest in protected mode or not: in real mode (CR0.PE
/// clear) exceptions push no error code, and VM entry fails if one is to be delivered.
pub fn interruption_info_in_mode(event: Event, protected: bool) -> (u32, Option<u32>) {
    use intr_info::{DELIVER_ERROR_CODE, TYPE_HARDWARE_EXCEPTION, TYPE_NMI, VALID};
    match event {
        Event::Interrupt(v) => (VALID | u32::from(v), None),
        Event::Nmi | Event::Exception { vector: 2, .. } => (VALID | TYPE_NMI << 8 | 2, None),
        Event::Exception { vector, error_code } => {
            let code = if protected && has_error_code(vector) {
                Some(error_code.unwrap_or(0))
            } else {
                None
            };
            let deliver = if code.is_some() {
                DELIVER_ERROR_CODE
            } else {
                0
            };
            (
                VALID | deliver | TYPE_HARDWARE_EXCEPTION << 8 | u32::from(vector),
                code,
            )
        }
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
