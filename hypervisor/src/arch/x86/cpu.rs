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

/// This CPU's initial APIC id from CPUID: the 32-bit x2APIC id of leaf 0xB when the CPU
/// has that leaf, else the 8-bit id of leaf 1.
pub fn initial_apic_id() -> u32 {
    let max = core::arch::x86_64::__cpuid_count(0, 0).eax;
    if max >= 0xb {
        let b = core::arch::x86_64::__cpuid_count(0xb, 0);
        // A leaf 0xB with no level (EBX = 0) is not implemented.
        if b.ebx != 0 {
            return b.edx;
        }
    }
    core::arch::x86_64::__cpuid_count(1, 0).ebx >> 24
}

/// The CPUID words the hypervisor and its backends rely on, for checking that every CPU
/// offers the same as the boot CPU. Bits that reflect what the OS enabled (OSXSAVE,
/// OSPKE) or which CPU runs (APIC ids, XSAVE area size for the current XCR0) are left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    words: [u32; SIGNATURE_WORDS],
}

const SIGNATURE_WORDS: usize = 16;
const SIGNATURE_NAMES: [&str; SIGNATURE_WORDS] = [
    "vendor",
    "vendor",
    "vendor",
    "CPUID.1:ECX features",
    "CPUID.1:EDX features",
    "CPUID.7:EBX features",
    "CPUID.7:ECX features",
    "CPUID.7:EDX features",
    "XSAVE components (CPUID.0xD:EAX)",
    "XSAVE components (CPUID.0xD:EDX)",
    "CPUID.0x80000001:ECX features (SVM among them)",
    "CPUID.0x80000001:EDX features",
    "SVM revision (CPUID.0x8000000A:EAX)",
    "SVM ASIDs (CPUID.0x8000000A:EBX)",
    "SVM features (CPUID.0x8000000A:EDX)",
    "physical/linear address sizes (CPUID.0x80000008:EAX)",
];

/// CPUID `leaf`/`sub` of this CPU; a leaf above the highest one offered in its range
/// (basic or extended) reads as zeros, since what a CPU reports for it depends on the
/// vendor (Intel answers with the highest basic leaf).
pub fn cpuid_guarded(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    let max = core::arch::x86_64::__cpuid(leaf & 0x8000_0000).eax;
    if leaf <= max {
        core::arch::x86_64::__cpuid_count(leaf, sub)
    } else {
        core::arch::x86_64::CpuidResult {
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }
    }
}

impl Signature {
    /// The signature of the CPU this runs on.
    pub fn current() -> Signature {
        let c = |leaf: u32, sub: u32| core::arch::x86_64::__cpuid_count(leaf, sub);
        let std = cpuid_guarded;
        let ext = |leaf: u32| cpuid_guarded(leaf, 0);
        let (v, l1, l7, ld, e1, ea, e8) = (
            c(0, 0),
            std(1, 0),
            std(7, 0),
            std(0xd, 0),
            ext(0x8000_0001),
            ext(0x8000_000a),
            ext(0x8000_0008),
        );
        const OSXSAVE: u32 = 1 << 27;
        const OSPKE: u32 = 1 << 4;
        Signature {
            words: [
                v.ebx,
                v.edx,
                v.ecx,
                l1.ecx & !OSXSAVE,
                l1.edx,
                l7.ebx,
                l7.ecx & !OSPKE,
                l7.edx,
                ld.eax,
                ld.edx,
                e1.ecx,
                e1.edx,
                ea.eax,
                ea.ebx,
                ea.edx,
                e8.eax & 0xffff,
            ],
        }
    }

    /// What differs from `other` (the first word that does), or None when they match.
    pub fn differs_from(&self, other: &Signature) -> Option<(&'static str, u32, u32)> {
        (0..SIGNATURE_WORDS)
            .find(|&i| self.words[i] != other.words[i])
            .map(|i| (SIGNATURE_NAMES[i], self.words[i], other.words[i]))
    }
}
