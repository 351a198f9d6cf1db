//! `hvm_start_info`: the PVH start-of-day structure whose guest-physical address is passed
//! in EBX, plus its module list and memory map entries.
//!
//! Source: `xen/include/public/arch-x86/hvm/start_info.h` (interface version 0x00040d00;
//! the structure has its own version field, currently 1). `SIF_*` flags come from
//! `xen/include/public/xen.h`.

pub use crate::xen::{SIF_INITDOMAIN, SIF_PRIVILEGED};

/// Value of [`HvmStartInfo::magic`] (`XEN_HVM_START_MAGIC_VALUE`).
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Current version of the structure (adds `memmap_paddr`/`memmap_entries`).
pub const HVM_START_INFO_VERSION: u32 = 1;

/// Memory map type: RAM.
pub const XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
/// Memory map type: reserved.
pub const XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
/// Memory map type: ACPI reclaimable.
pub const XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
/// Memory map type: ACPI NVS.
pub const XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
/// Memory map type: unusable.
pub const XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
/// Memory map type: disabled.
pub const XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
/// Memory map type: persistent memory.
pub const XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;

zc_struct! {
    /// `struct hvm_start_info`, 56 bytes, written by the domain builder, read by the guest.
    pub struct HvmStartInfo {
        /// IN (to the guest): [`XEN_HVM_START_MAGIC_VALUE`].
        pub magic: u32,
        /// IN: structure version (0 or 1).
        pub version: u32,
        /// IN: `SIF_*` flags (`SIF_INITDOMAIN` makes Linux a dom0).
        pub flags: u32,
        /// IN: number of [`HvmModlistEntry`] at `modlist_paddr` (module 0 = initrd).
        pub nr_modules: u32,
        /// IN: physical address of the module list.
        pub modlist_paddr: u64,
        /// IN: physical address of the NUL-terminated command line (0 = none).
        pub cmdline_paddr: u64,
        /// IN: physical address of the ACPI RSDP (0 = legacy scan).
        pub rsdp_paddr: u64,
        /// IN (v1): physical address of the [`HvmMemmapTableEntry`] array.
        pub memmap_paddr: u64,
        /// IN (v1): number of memory map entries (0 = use `XENMEM_memory_map`).
        pub memmap_entries: u32,
        /// Must be zero.
        pub reserved: u32,
    }
}
assert_layout!(HvmStartInfo, size = 56, align = 8,
    magic @ 0, version @ 4, flags @ 8, nr_modules @ 12, modlist_paddr @ 16,
    cmdline_paddr @ 24, rsdp_paddr @ 32, memmap_paddr @ 40, memmap_entries @ 48, reserved @ 52);

zc_struct! {
    /// `struct hvm_modlist_entry`, 32 bytes.
    pub struct HvmModlistEntry {
        /// IN: physical address of the module.
        pub paddr: u64,
        /// IN: size in bytes.
        pub size: u64,
        /// IN: physical address of the module's command line (ignored by Linux).
        pub cmdline_paddr: u64,
        /// Must be zero.
        pub reserved: u64,
    }
}
assert_layout!(HvmModlistEntry, size = 32, align = 8,
    paddr @ 0, size @ 8, cmdline_paddr @ 16, reserved @ 24);

zc_struct! {
    /// `struct hvm_memmap_table_entry`, 24 bytes (not packed, unlike the e820 entries of
    /// `XENMEM_memory_map`).
    pub struct HvmMemmapTableEntry {
        /// IN: base address.
        pub addr: u64,
        /// IN: size in bytes.
        pub size: u64,
        /// IN: `XEN_HVM_MEMMAP_TYPE_*`.
        pub ty: u32,
        /// Must be zero.
        pub reserved: u32,
    }
}
assert_layout!(HvmMemmapTableEntry, size = 24, align = 8, addr @ 0, size @ 8, ty @ 16, reserved @ 20);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn start_info_bytes() {
        let si = HvmStartInfo {
            magic: XEN_HVM_START_MAGIC_VALUE,
            version: HVM_START_INFO_VERSION,
            flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
            memmap_entries: 3,
            ..Default::default()
        };
        let b = si.as_bytes();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[0..4], &[0x78, 0xc5, 0x6e, 0x33]);
        assert_eq!(b[8], 3);
        assert_eq!(b[48], 3);
    }
}
