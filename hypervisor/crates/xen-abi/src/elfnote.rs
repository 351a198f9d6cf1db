//! ELF note types a Xen-aware kernel image carries in its `PT_NOTE` segments (owner name
//! `"Xen"`).
//!
//! Source: `xen/include/public/elfnote.h`, interface version 0x00040d00.

/// Owner name of Xen notes, without the terminating NUL (`n_namesz` is 4 including it).
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";

/// Unused (legacy `__xen_guest` string).
pub const XEN_ELFNOTE_INFO: u32 = 0;
/// PV entry point (virtual address).
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// Virtual address of the hypercall page (PV).
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// Virtual base address of the kernel.
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// Offset between virtual and physical addresses (PV).
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// Xen version the image targets (string, e.g. `"xen-3.0"`).
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// Guest OS name (string, e.g. `"linux"`).
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// Guest OS version (string).
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// Loader type (string, e.g. `"generic"`).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// PAE mode (string).
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
/// Required/supported features (string of `|`-separated names).
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
/// BSD symbol table loading (string).
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
/// Lowest hypervisor virtual address the guest needs (PV).
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
/// L1 MFN-valid mask and value (PV).
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
/// The guest supports suspend cancellation.
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
/// Virtual address of the initial p2m (PV).
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
/// Module start is a PFN (PV).
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
/// Bitmap of supported `XENFEAT_*` bits (32-bit value).
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
/// 32-bit physical entry point for PVH (4 bytes per the Xen docs; Linux emits 8).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Physical relocation range and alignment for PVH (not emitted by Linux 6.1).
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
/// Highest defined note type.
pub const XEN_ELFNOTE_MAX: u32 = XEN_ELFNOTE_PHYS32_RELOC;

/// Crash-dump note: crash info.
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x0100_0001;
/// Crash-dump note: crash registers.
pub const XEN_ELFNOTE_CRASH_REGS: u32 = 0x0100_0002;
/// Dump-core note: none.
pub const XEN_ELFNOTE_DUMPCORE_NONE: u32 = 0x0200_0000;
/// Dump-core note: header.
pub const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x0200_0001;
/// Dump-core note: Xen version.
pub const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x0200_0002;
/// Dump-core note: format version.
pub const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x0200_0003;

/// The Xen name of note type `ty` (e.g. `"PHYS32_ENTRY"` for 18), for the 0..=19 range.
pub const fn elfnote_name(ty: u32) -> Option<&'static str> {
    const NAMES: [&str; 20] = [
        "INFO",
        "ENTRY",
        "HYPERCALL_PAGE",
        "VIRT_BASE",
        "PADDR_OFFSET",
        "XEN_VERSION",
        "GUEST_OS",
        "GUEST_VERSION",
        "LOADER",
        "PAE_MODE",
        "FEATURES",
        "BSD_SYMTAB",
        "HV_START_LOW",
        "L1_MFN_VALID",
        "SUSPEND_CANCEL",
        "INIT_P2M",
        "MOD_START_PFN",
        "SUPPORTED_FEATURES",
        "PHYS32_ENTRY",
        "PHYS32_RELOC",
    ];
    if (ty as usize) < NAMES.len() {
        Some(NAMES[ty as usize])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_numbers() {
        assert_eq!(XEN_ELFNOTE_PHYS32_ENTRY, 18);
        assert_eq!(XEN_ELFNOTE_SUPPORTED_FEATURES, 17);
        assert_eq!(elfnote_name(XEN_ELFNOTE_PHYS32_ENTRY), Some("PHYS32_ENTRY"));
        assert_eq!(
            elfnote_name(XEN_ELFNOTE_HYPERCALL_PAGE),
            Some("HYPERCALL_PAGE")
        );
        assert_eq!(elfnote_name(20), None);
        assert_eq!(XEN_ELFNOTE_NAME, b"Xen");
    }
}
