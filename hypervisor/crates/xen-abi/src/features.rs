//! `XENFEAT_*` feature bits reported by `XENVER_get_features` (submap 0).
//!
//! Source: `xen/include/public/features.h`, interface version 0x00040d00.

/// PV: page tables may be writable.
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// PV: descriptor tables may be writable.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// The guest's physmap is translated by the hypervisor (required for PVH).
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// Guest kernel runs in ring 0 (obsolete).
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// PV: PAE page directories may live above 4 GiB.
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// PV: `mmu_update` preserves A/D bits.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// Highmem assist (x86-32 PV).
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// PV: available bits in grant-map PTEs.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// `HVM_PARAM_CALLBACK_IRQ` accepts the vector type (required for PVH event delivery).
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// The pvclock is safe to use for HVM guests (required for the Xen clocksource).
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// PIRQs are routed through event channels for HVM (must be off for PVH).
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// The domain is dom0.
pub const XENFEAT_DOM0: u32 = 11;
/// Arm: grant mappings are 1:1.
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// `XENMEM_get_vnumainfo` is supported.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// Arm: SMCCC is supported.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// Linux may place the RSDP anywhere (`rsdp_paddr` unrestricted).
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// The domain is not direct-mapped.
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// The domain is direct-mapped.
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// `VCPUOP_register_runstate_phys_area` is supported.
pub const XENFEAT_RUNSTATE_PHYS_AREA: u32 = 18;
/// `VCPUOP_register_vcpu_time_phys_area` is supported.
pub const XENFEAT_VCPU_TIME_PHYS_AREA: u32 = 19;
/// Device models see all MSI-X writes.
pub const XENFEAT_DM_MSIX_ALL_WRITES: u32 = 20;
/// Number of 32-bit feature submaps.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// The submap-0 bit for feature `feat`.
pub const fn xenfeat_bit(feat: u32) -> u32 {
    1 << feat
}
