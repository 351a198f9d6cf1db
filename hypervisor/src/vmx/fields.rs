//! VMCS field encodings (Intel SDM Vol. 3D appendix B). Pure, host-tested.
//!
//! An encoding carries its width in bits 14:13 (0 = 16-bit, 1 = 64-bit, 2 = 32-bit,
//! 3 = natural width) and its type in bits 11:10 (0 control, 1 read-only data, 2 guest
//! state, 3 host state).
#![allow(dead_code)] // complete SDM tables: not every entry is used yet

/// A VMCS field encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field(pub u32);

/// Width of a VMCS field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W16,
    W64,
    W32,
    Natural,
}

impl Field {
    /// The field's width, from its encoding.
    pub const fn width(self) -> Width {
        match (self.0 >> 13) & 3 {
            0 => Width::W16,
            1 => Width::W64,
            2 => Width::W32,
            _ => Width::Natural,
        }
    }

    /// True for read-only (exit information) fields.
    pub const fn read_only(self) -> bool {
        (self.0 >> 10) & 3 == 1
    }
}

macro_rules! fields {
    ($($(#[doc = $d:literal])* $name:ident = $v:literal;)*) => {
        impl Field { $($(#[doc = $d])* pub const $name: Field = Field($v);)* }
        #[cfg(test)]
        const ALL: &[(&str, Field)] = &[$((stringify!($name), Field($v))),*];
    };
}

fields! {
    /// Virtual-processor identifier (nonzero when VPID is enabled).
    VPID = 0x0000;
    /// Host segment selectors (RPL and TI must be 0).
    HOST_ES_SELECTOR = 0x0c00;
    HOST_CS_SELECTOR = 0x0c02;
    HOST_SS_SELECTOR = 0x0c04;
    HOST_DS_SELECTOR = 0x0c06;
    HOST_FS_SELECTOR = 0x0c08;
    HOST_GS_SELECTOR = 0x0c0a;
    HOST_TR_SELECTOR = 0x0c0c;
    /// Physical address of I/O bitmap A (ports 0-0x7fff).
    IO_BITMAP_A = 0x2000;
    /// Physical address of I/O bitmap B (ports 0x8000-0xffff).
    IO_BITMAP_B = 0x2002;
    /// Physical address of the 4 KiB MSR bitmap.
    MSR_BITMAP = 0x2004;
    VMEXIT_MSR_STORE_ADDR = 0x2006;
    VMEXIT_MSR_LOAD_ADDR = 0x2008;
    VMENTRY_MSR_LOAD_ADDR = 0x200a;
    TSC_OFFSET = 0x2010;
    /// EPT pointer.
    EPT_POINTER = 0x201a;
    /// XSS-exiting bitmap (with "enable XSAVES/XRSTORS").
    XSS_EXIT_BITMAP = 0x202c;
    /// Guest-physical address of an EPT violation or misconfiguration.
    GUEST_PHYSICAL_ADDRESS = 0x2400;
    /// VMCS link pointer (all ones: none).
    VMCS_LINK_POINTER = 0x2800;
    GUEST_IA32_DEBUGCTL = 0x2802;
    GUEST_IA32_PAT = 0x2804;
    GUEST_IA32_EFER = 0x2806;
    /// Guest PDPTEs, used on entry for PAE paging with EPT.
    GUEST_PDPTE0 = 0x280a;
    GUEST_PDPTE1 = 0x280c;
    GUEST_PDPTE2 = 0x280e;
    GUEST_PDPTE3 = 0x2810;
    HOST_IA32_PAT = 0x2c00;
    HOST_IA32_EFER = 0x2c02;
    PIN_BASED_CONTROLS = 0x4000;
    PRIMARY_PROC_CONTROLS = 0x4002;
    EXCEPTION_BITMAP = 0x4004;
    PAGE_FAULT_ERROR_MASK = 0x4006;
    PAGE_FAULT_ERROR_MATCH = 0x4008;
    CR3_TARGET_COUNT = 0x400a;
    EXIT_CONTROLS = 0x400c;
    EXIT_MSR_STORE_COUNT = 0x400e;
    EXIT_MSR_LOAD_COUNT = 0x4010;
    ENTRY_CONTROLS = 0x4012;
    ENTRY_MSR_LOAD_COUNT = 0x4014;
    /// VM-entry interruption information (event injection).
    ENTRY_INTERRUPTION_INFO = 0x4016;
    ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
    ENTRY_INSTRUCTION_LENGTH = 0x401a;
    TPR_THRESHOLD = 0x401c;
    SECONDARY_PROC_CONTROLS = 0x401e;
    /// VM-instruction error number after VMfailValid.
    VM_INSTRUCTION_ERROR = 0x4400;
    /// Basic exit reason (15:0) and entry-failure flag (31).
    EXIT_REASON = 0x4402;
    EXIT_INTERRUPTION_INFO = 0x4404;
    EXIT_INTERRUPTION_ERROR_CODE = 0x4406;
    /// Event being delivered when the exit happened.
    IDT_VECTORING_INFO = 0x4408;
    IDT_VECTORING_ERROR_CODE = 0x440a;
    EXIT_INSTRUCTION_LENGTH = 0x440c;
    EXIT_INSTRUCTION_INFO = 0x440e;
    GUEST_ES_LIMIT = 0x4800;
    GUEST_GDTR_LIMIT = 0x4810;
    GUEST_IDTR_LIMIT = 0x4812;
    GUEST_ES_ACCESS_RIGHTS = 0x4814;
    /// Blocking by STI (bit 0), MOV SS (1), SMI (2), NMI (3).
    GUEST_INTERRUPTIBILITY = 0x4824;
    /// 0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI.
    GUEST_ACTIVITY_STATE = 0x4826;
    GUEST_SYSENTER_CS = 0x482a;
    PREEMPTION_TIMER_VALUE = 0x482e;
    HOST_SYSENTER_CS = 0x4c00;
    CR0_GUEST_HOST_MASK = 0x6000;
    CR4_GUEST_HOST_MASK = 0x6002;
    CR0_READ_SHADOW = 0x6004;
    CR4_READ_SHADOW = 0x6006;
    EXIT_QUALIFICATION = 0x6400;
    GUEST_LINEAR_ADDRESS = 0x640a;
    GUEST_CR0 = 0x6800;
    GUEST_CR3 = 0x6802;
    GUEST_CR4 = 0x6804;
    GUEST_ES_BASE = 0x6806;
    GUEST_GDTR_BASE = 0x6816;
    GUEST_IDTR_BASE = 0x6818;
    GUEST_DR7 = 0x681a;
    GUEST_RSP = 0x681c;
    GUEST_RIP = 0x681e;
    GUEST_RFLAGS = 0x6820;
    GUEST_PENDING_DEBUG = 0x6822;
    GUEST_SYSENTER_ESP = 0x6824;
    GUEST_SYSENTER_EIP = 0x6826;
    HOST_CR0 = 0x6c00;
    HOST_CR3 = 0x6c02;
    HOST_CR4 = 0x6c04;
    HOST_FS_BASE = 0x6c06;
    HOST_GS_BASE = 0x6c08;
    HOST_TR_BASE = 0x6c0a;
    HOST_GDTR_BASE = 0x6c0c;
    HOST_IDTR_BASE = 0x6c0e;
    HOST_SYSENTER_ESP = 0x6c10;
    HOST_SYSENTER_EIP = 0x6c12;
    HOST_RSP = 0x6c14;
    HOST_RIP = 0x6c16;
}

/// Guest segment registers in VMCS order: the four fields of each are at a fixed stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Es = 0,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Seg {
    pub const ALL: [Seg; 8] = [
        Seg::Es,
        Seg::Cs,
        Seg::Ss,
        Seg::Ds,
        Seg::Fs,
        Seg::Gs,
        Seg::Ldtr,
        Seg::Tr,
    ];

    pub const fn selector(self) -> Field {
        Field(0x0800 + 2 * self as u32)
    }
    pub const fn limit(self) -> Field {
        Field(Field::GUEST_ES_LIMIT.0 + 2 * self as u32)
    }
    pub const fn access_rights(self) -> Field {
        Field(Field::GUEST_ES_ACCESS_RIGHTS.0 + 2 * self as u32)
    }
    pub const fn base(self) -> Field {
        Field(Field::GUEST_ES_BASE.0 + 2 * self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_match_names() {
        for (name, f) in ALL {
            let w = f.width();
            if name.contains("SELECTOR") || *name == "VPID" {
                assert_eq!(w, Width::W16, "{name}");
            }
            if name.starts_with("HOST_CR") || name.ends_with("_BASE") || *name == "GUEST_RIP" {
                assert_eq!(w, Width::Natural, "{name}");
            }
            if name.contains("CONTROLS") || name.contains("COUNT") || name.ends_with("_INFO") {
                assert_eq!(w, Width::W32, "{name}");
            }
            if name.contains("EFER") || name.contains("PAT") || name.contains("PDPTE") {
                assert_eq!(w, Width::W64, "{name}");
            }
        }
    }

    #[test]
    fn encodings_are_unique_and_even() {
        for (i, (a, fa)) in ALL.iter().enumerate() {
            assert_eq!(
                fa.0 & 1,
                0,
                "{a}: odd encodings are the high halves of 64-bit fields"
            );
            for (b, fb) in &ALL[i + 1..] {
                assert_ne!(fa, fb, "{a} and {b}");
            }
        }
    }

    #[test]
    fn segment_strides() {
        assert_eq!(Seg::Cs.selector(), Field(0x0802));
        assert_eq!(Seg::Tr.limit(), Field(0x480e));
        assert_eq!(Seg::Ldtr.access_rights(), Field(0x4820));
        assert_eq!(Seg::Gs.base(), Field(0x6810));
        assert_eq!(Seg::Tr.base(), Field(0x6814));
        assert!(Field::EXIT_REASON.read_only() && !Field::GUEST_RIP.read_only());
    }
}
