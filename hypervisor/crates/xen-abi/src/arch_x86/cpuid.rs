//! Xen's hypervisor CPUID leaves (base 0x4000_0000).
//!
//! Source: `xen/include/public/arch-x86/cpuid.h`, interface version 0x00040d00.

/// First Xen leaf (`XEN_CPUID_FIRST_LEAF`). Linux scans bases 0x4000_0000..=0x4000_FF00 in
/// steps of 0x100.
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// Number of leaves after the base (`XEN_CPUID_MAX_NUM_LEAVES`); base+0 EAX reports
/// `base + XEN_CPUID_MAX_NUM_LEAVES`.
pub const XEN_CPUID_MAX_NUM_LEAVES: u32 = 5;

/// `XEN_CPUID_LEAF(i)`.
pub const fn xen_cpuid_leaf(i: u32) -> u32 {
    XEN_CPUID_FIRST_LEAF + i
}

/// Leaf offset 0: EAX = max leaf, EBX/ECX/EDX = signature.
pub const XEN_CPUID_LEAF_SIGNATURE: u32 = 0;
/// Leaf offset 1: EAX = version (`major << 16 | minor`).
pub const XEN_CPUID_LEAF_VERSION: u32 = 1;
/// Leaf offset 2: EAX = hypercall pages, EBX = hypercall-page MSR, ECX = features.
pub const XEN_CPUID_LEAF_HYPERCALL: u32 = 2;
/// Leaf offset 3: time (sub-leaves 0, 1, 2).
pub const XEN_CPUID_LEAF_TIME: u32 = 3;
/// Leaf offset 4: HVM features (`XEN_HVM_CPUID_*` in EAX; vCPU id in EBX; domid in ECX).
pub const XEN_CPUID_LEAF_HVM: u32 = 4;
/// Leaf offset 5: PV features (0 for HVM).
pub const XEN_CPUID_LEAF_PV: u32 = 5;

/// Signature word in EBX: `"XenV"`.
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// Signature word in ECX: `"MMXe"`.
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// Signature word in EDX: `"nVMM"`.
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;
/// The signature as bytes in EBX, ECX, EDX order.
pub const XEN_CPUID_SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";

/// MSR index reported in leaf 2 EBX for the hypercall page (this is what Xen uses).
pub const XEN_HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;

/// Leaf 2 ECX: `mmu_update` preserves A/D bits (PV).
pub const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;

/// Leaf 3 sub-leaf 0 EAX: TSC is emulated.
pub const XEN_CPUID_TSC_EMULATED: u32 = 1 << 0;
/// Leaf 3 sub-leaf 0 EAX: host TSC is reliable.
pub const XEN_CPUID_HOST_TSC_RELIABLE: u32 = 1 << 1;
/// Leaf 3 sub-leaf 0 EAX: RDTSCP available.
pub const XEN_CPUID_RDTSCP_INSTR_AVAIL: u32 = 1 << 2;
/// TSC mode: default.
pub const XEN_CPUID_TSC_MODE_DEFAULT: u32 = 0;
/// TSC mode: always emulate.
pub const XEN_CPUID_TSC_MODE_ALWAYS_EMULATE: u32 = 1;
/// TSC mode: never emulate.
pub const XEN_CPUID_TSC_MODE_NEVER_EMULATE: u32 = 2;
/// TSC mode: PV RDTSCP.
pub const XEN_CPUID_TSC_MODE_PVRDTSCP: u32 = 3;

/// Leaf 4 EAX: APIC register accesses are virtualised.
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// Leaf 4 EAX: x2APIC accesses are virtualised.
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// Leaf 4 EAX: IOMMU mappings from other domains exist (dom0).
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// Leaf 4 EAX: EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf 4 EAX: ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// Leaf 4 EAX: extended MSI destination ids are supported.
pub const XEN_HVM_CPUID_EXT_DEST_ID: u32 = 1 << 5;
/// Leaf 4 EAX: `HVMOP_set_evtchn_upcall_vector` is supported.
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// Leaf 5 EBX mask: machine address width (PV).
pub const XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK: u32 = 0xff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_words_spell_xenvmmxenvmm() {
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&XEN_CPUID_SIGNATURE_EBX.to_le_bytes());
        sig[4..8].copy_from_slice(&XEN_CPUID_SIGNATURE_ECX.to_le_bytes());
        sig[8..12].copy_from_slice(&XEN_CPUID_SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&sig, XEN_CPUID_SIGNATURE);
        assert_eq!(xen_cpuid_leaf(XEN_CPUID_LEAF_HVM), 0x4000_0004);
    }
}
