//! Which speculative-execution mitigations the host applies around guest entry and exit,
//! chosen from what the CPU enumerates (pure; applied by `arch::x86::spec`).
//!
//! Guests never reach SPEC_CTRL or PRED_CMD (CPUID hides them and the MSRs fault, see
//! `hvm::msr`), so the host owns both registers outright:
//! - **Return stack**: every VM exit refills the RSB with harmless entries before the first
//!   `ret`, so a guest cannot steer the hypervisor's returns (done unconditionally in the
//!   entry stubs; it costs a few dozen cycles).
//! - **Guest registers**: the entry stubs zero every guest value they leave in a register
//!   after the exit, so none can feed a speculative gadget in host code.
//! - **Branch targets across domains**: an IBPB when a CPU switches from a vCPU of one
//!   domain to a vCPU of another, so one domain cannot train branches another then takes.
//! - **Branch targets guest → host**: IBRS while host code runs. Enhanced IBRS (Intel's
//!   `IBRS_ALL`, AMD's "IBRS always on") is set once per CPU; older IBRS is set after each
//!   exit and cleared before each entry.
//! - **CPU buffers (MDS/TAA)**: VERW before each entry on parts that enumerate MD_CLEAR
//!   and are not `MDS_NO`.
//! - **L1 data cache (L1TF)**: on VMX, an L1D flush before each entry on parts that
//!   enumerate `L1D_FLUSH` and are neither `RDCL_NO` nor `SKIP_L1DFL_VMENTRY`; the flush
//!   also clears the buffers, so VERW is then skipped.

use core::fmt;

/// IA32_SPEC_CTRL.
pub const MSR_SPEC_CTRL: u32 = 0x48;
/// IA32_PRED_CMD (write-only).
pub const MSR_PRED_CMD: u32 = 0x49;
/// IA32_ARCH_CAPABILITIES (read-only).
pub const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
/// IA32_FLUSH_CMD (write-only).
pub const MSR_FLUSH_CMD: u32 = 0x10b;
/// SPEC_CTRL.IBRS.
pub const SPEC_CTRL_IBRS: u64 = 1 << 0;
/// PRED_CMD.IBPB.
pub const PRED_CMD_IBPB: u64 = 1 << 0;
/// FLUSH_CMD.L1D_FLUSH.
pub const FLUSH_CMD_L1D: u64 = 1 << 0;

// CPUID leaf 7 subleaf 0, EDX (Intel; AMD parts may mirror some).
const L7_EDX_MD_CLEAR: u32 = 1 << 10;
const L7_EDX_IBRS_IBPB: u32 = 1 << 26;
const L7_EDX_L1D_FLUSH: u32 = 1 << 28;
const L7_EDX_ARCH_CAPS: u32 = 1 << 29;
// CPUID 0x80000008 EBX (AMD).
const E8_EBX_IBPB: u32 = 1 << 12;
const E8_EBX_IBRS: u32 = 1 << 14;
const E8_EBX_IBRS_ALWAYS_ON: u32 = 1 << 16;
// IA32_ARCH_CAPABILITIES.
const ARCH_CAP_RDCL_NO: u64 = 1 << 0;
const ARCH_CAP_IBRS_ALL: u64 = 1 << 1;
const ARCH_CAP_SKIP_L1DFL_VMENTRY: u64 = 1 << 3;
const ARCH_CAP_MDS_NO: u64 = 1 << 5;

/// The CPUID words (and the MSR) the choice depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecCpu {
    /// CPUID.(EAX=7,ECX=0):EDX, 0 when leaf 7 is absent.
    pub leaf7_edx: u32,
    /// CPUID.80000008h:EBX, 0 when the leaf is absent.
    pub ext8_ebx: u32,
    /// IA32_ARCH_CAPABILITIES, read only when `leaf7_edx` enumerates it (else 0).
    pub arch_caps: u64,
    /// The backend is VMX (the L1TF flush only concerns VMX entries).
    pub vmx: bool,
}

impl SpecCpu {
    /// Whether IA32_ARCH_CAPABILITIES exists and may be read.
    pub fn has_arch_caps(leaf7_edx: u32) -> bool {
        leaf7_edx & L7_EDX_ARCH_CAPS != 0
    }
}

/// How SPEC_CTRL.IBRS is used in host context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ibrs {
    /// The CPU has no IBRS.
    None,
    /// Enhanced IBRS: set once per CPU, left on.
    AlwaysOn,
    /// Set after every VM exit, cleared before every entry.
    AroundGuest,
}

/// The mitigations chosen for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mitigations {
    pub ibrs: Ibrs,
    /// IBPB when a CPU changes domains.
    pub ibpb_on_domain_switch: bool,
    /// VERW before every VM entry.
    pub verw_on_entry: bool,
    /// L1D flush (FLUSH_CMD) before every VM entry (VMX only).
    pub l1d_flush_on_entry: bool,
}

impl Mitigations {
    /// None of the optional ones (what a CPU that enumerates nothing gets).
    pub const NONE: Self = Self {
        ibrs: Ibrs::None,
        ibpb_on_domain_switch: false,
        verw_on_entry: false,
        l1d_flush_on_entry: false,
    };

    /// Chooses from what the CPU enumerates.
    pub fn select(cpu: SpecCpu) -> Self {
        let caps = if SpecCpu::has_arch_caps(cpu.leaf7_edx) {
            cpu.arch_caps
        } else {
            0
        };
        let intel_ibrs = cpu.leaf7_edx & L7_EDX_IBRS_IBPB != 0;
        let amd_ibrs = cpu.ext8_ebx & E8_EBX_IBRS != 0;
        let ibrs = if intel_ibrs && caps & ARCH_CAP_IBRS_ALL != 0
            || amd_ibrs && cpu.ext8_ebx & E8_EBX_IBRS_ALWAYS_ON != 0
        {
            Ibrs::AlwaysOn
        } else if intel_ibrs || amd_ibrs {
            Ibrs::AroundGuest
        } else {
            Ibrs::None
        };
        let l1d_flush_on_entry = cpu.vmx
            && cpu.leaf7_edx & L7_EDX_L1D_FLUSH != 0
            && caps & (ARCH_CAP_RDCL_NO | ARCH_CAP_SKIP_L1DFL_VMENTRY) == 0;
        let verw_on_entry = !l1d_flush_on_entry
            && cpu.leaf7_edx & L7_EDX_MD_CLEAR != 0
            && caps & ARCH_CAP_MDS_NO == 0;
        Self {
            ibrs,
            ibpb_on_domain_switch: intel_ibrs || cpu.ext8_ebx & E8_EBX_IBPB != 0,
            verw_on_entry,
            l1d_flush_on_entry,
        }
    }
}

impl fmt::Display for Mitigations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ibrs = match self.ibrs {
            Ibrs::None => "no IBRS",
            Ibrs::AlwaysOn => "IBRS always on",
            Ibrs::AroundGuest => "IBRS in host context",
        };
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "RSB refill and register scrub on exit, {ibrs}, IBPB on domain switch {}, \
             VERW on entry {}, L1D flush on entry {}",
            on(self.ibpb_on_domain_switch),
            on(self.verw_on_entry),
            on(self.l1d_flush_on_entry)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(leaf7_edx: u32, ext8_ebx: u32, arch_caps: u64, vmx: bool) -> SpecCpu {
        SpecCpu {
            leaf7_edx,
            ext8_ebx,
            arch_caps,
            vmx,
        }
    }

    #[test]
    fn nothing_enumerated_nothing_applied() {
        // QEMU TCG's and Bochs' usual models.
        assert_eq!(Mitigations::select(cpu(0, 0, 0, true)), Mitigations::NONE);
        assert_eq!(Mitigations::select(cpu(0, 0, 0, false)), Mitigations::NONE);
    }

    #[test]
    fn skylake_class_intel_gets_everything() {
        // IBRS/IBPB, L1D_FLUSH, MD_CLEAR, no ARCH_CAPABILITIES.
        let m = Mitigations::select(cpu(
            L7_EDX_IBRS_IBPB | L7_EDX_L1D_FLUSH | L7_EDX_MD_CLEAR,
            0,
            0,
            true,
        ));
        assert_eq!(m.ibrs, Ibrs::AroundGuest);
        assert!(m.ibpb_on_domain_switch);
        assert!(m.l1d_flush_on_entry);
        assert!(!m.verw_on_entry, "the L1D flush also clears the buffers");
    }

    #[test]
    fn arch_caps_are_ignored_unless_enumerated() {
        let m = Mitigations::select(cpu(
            L7_EDX_IBRS_IBPB | L7_EDX_L1D_FLUSH,
            0,
            ARCH_CAP_IBRS_ALL | ARCH_CAP_RDCL_NO,
            true,
        ));
        assert_eq!(m.ibrs, Ibrs::AroundGuest);
        assert!(m.l1d_flush_on_entry);
    }

    #[test]
    fn newer_intel_uses_enhanced_ibrs_and_skips_flushes_it_does_not_need() {
        let edx = L7_EDX_IBRS_IBPB | L7_EDX_L1D_FLUSH | L7_EDX_MD_CLEAR | L7_EDX_ARCH_CAPS;
        let m = Mitigations::select(cpu(
            edx,
            0,
            ARCH_CAP_IBRS_ALL | ARCH_CAP_RDCL_NO | ARCH_CAP_MDS_NO,
            true,
        ));
        assert_eq!(
            m,
            Mitigations {
                ibrs: Ibrs::AlwaysOn,
                ibpb_on_domain_switch: true,
                verw_on_entry: false,
                l1d_flush_on_entry: false,
            }
        );
        // Not L1TF-affected but MDS-affected: VERW instead of the flush.
        let m = Mitigations::select(cpu(edx, 0, ARCH_CAP_SKIP_L1DFL_VMENTRY, true));
        assert!(!m.l1d_flush_on_entry);
        assert!(m.verw_on_entry);
    }

    #[test]
    fn amd_uses_its_own_leaf_and_never_flushes_l1d() {
        let m = Mitigations::select(cpu(L7_EDX_L1D_FLUSH, E8_EBX_IBPB | E8_EBX_IBRS, 0, false));
        assert_eq!(m.ibrs, Ibrs::AroundGuest);
        assert!(m.ibpb_on_domain_switch);
        assert!(!m.l1d_flush_on_entry, "SVM entries need no L1TF flush");
        let m = Mitigations::select(cpu(0, E8_EBX_IBRS | E8_EBX_IBRS_ALWAYS_ON, 0, false));
        assert_eq!(m.ibrs, Ibrs::AlwaysOn);
        assert!(!m.ibpb_on_domain_switch);
    }
}
