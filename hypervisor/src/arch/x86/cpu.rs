//! CPU identification and the virtualization features the banner reports and the backends
//! are chosen from.

use super::regs::rdmsr;
use arrayvec::ArrayString;
use core::fmt;
use raw_cpuid::CpuId;

/// Allowed settings of the primary processor-based VM-execution controls.
pub const MSR_IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// Allowed settings of the secondary processor-based VM-execution controls.
pub const MSR_IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;

/// What the banner says about the CPU.
pub struct CpuInfo {
    pub vendor: ArrayString<16>,
    pub brand: ArrayString<64>,
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    pub virt: VirtFeatures,
}

/// Hardware virtualization support, decoded from CPUID and (for VMX) the capability MSRs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtFeatures {
    pub vmx: bool,
    pub ept: bool,
    pub unrestricted_guest: bool,
    pub vpid: bool,
    pub svm: bool,
    pub npt: bool,
    pub nrips: bool,
    pub decode_assists: bool,
    /// 1 GiB pages in ordinary paging (CPUID 0x80000001 EDX bit 26).
    pub page_1g: bool,
}

impl VirtFeatures {
    /// Decodes the VMX secondary-control features from the allowed-1 halves of
    /// IA32_VMX_PROCBASED_CTLS and IA32_VMX_PROCBASED_CTLS2 (Intel SDM Vol. 3 A.3.2/A.3.3).
    pub fn with_vmx_caps(mut self, procbased: u64, procbased2: u64) -> Self {
        let secondary_allowed = (procbased >> 32) & (1 << 31) != 0;
        let allowed2 = if secondary_allowed {
            procbased2 >> 32
        } else {
            0
        };
        self.ept = allowed2 & (1 << 1) != 0;
        self.vpid = allowed2 & (1 << 5) != 0;
        self.unrestricted_guest = allowed2 & (1 << 7) != 0;
        self
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for VirtFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VMX={} EPT={} unrestricted-guest={} VPID={} SVM={} NPT={} NRIPS={} decode-assists={}",
            yes_no(self.vmx),
            yes_no(self.ept),
            yes_no(self.unrestricted_guest),
            yes_no(self.vpid),
            yes_no(self.svm),
            yes_no(self.npt),
            yes_no(self.nrips),
            yes_no(self.decode_assists),
        )
    }
}

/// Identifies the boot CPU.
pub fn identify() -> CpuInfo {
    let cpuid = CpuId::new();
    let mut info = CpuInfo {
        vendor: ArrayString::new(),
        brand: ArrayString::new(),
        family: 0,
        model: 0,
        stepping: 0,
        virt: VirtFeatures::default(),
    };
    if let Some(v) = cpuid.get_vendor_info() {
        let _ = info.vendor.try_push_str(v.as_str());
    }
    if let Some(b) = cpuid.get_processor_brand_string() {
        let _ = info.brand.try_push_str(b.as_str().trim());
    }
    if let Some(f) = cpuid.get_feature_info() {
        info.family = f.family_id();
        info.model = f.model_id();
        info.stepping = f.stepping_id();
        info.virt.vmx = f.has_vmx();
    }
    if let Some(ext) = cpuid.get_extended_processor_and_feature_identifiers() {
        info.virt.svm = ext.has_svm();
        info.virt.page_1g = ext.has_1gib_pages();
    }
    if info.virt.svm {
        if let Some(svm) = cpuid.get_svm_info() {
            info.virt.npt = svm.has_nested_paging();
            info.virt.nrips = svm.has_nrip();
            info.virt.decode_assists = svm.has_decode_assists();
        }
    }
    if info.virt.vmx {
        // The VMX capability MSRs exist whenever CPUID reports VMX.
        info.virt = info.virt.with_vmx_caps(
            rdmsr(MSR_IA32_VMX_PROCBASED_CTLS),
            rdmsr(MSR_IA32_VMX_PROCBASED_CTLS2),
        );
    }
    info
}

/// True on AMD (and Hygon) CPUs, which use `vmmcall` rather than `vmcall`.
pub fn is_amd() -> bool {
    CpuId::new()
        .get_vendor_info()
        .is_some_and(|v| matches!(v.as_str(), "AuthenticAMD" | "HygonGenuine"))
}

/// Whether the TSC runs at a constant rate in every power state (CPUID 0x80000007 EDX
/// bit 8), which lets guests trust the pvclock without cross-checks.
pub fn invariant_tsc() -> bool {
    CpuId::new()
        .get_advanced_power_mgmt_info()
        .is_some_and(|a| a.has_invariant_tsc())
}
