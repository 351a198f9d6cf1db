//! `grant_table_op` hypercall: v1 grant entries, flags, sub-op structs and status codes.
//!
//! Source: `xen/include/public/grant_table.h`, interface version 0x00040d00.

use crate::{DomId, GrantHandle, GrantRef, GuestHandle, XenPfn};

/// Map a grant; [`GnttabMapGrantRef`] array.
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
/// Unmap a grant; [`GnttabUnmapGrantRef`] array.
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
/// Get grant frames (PV); [`GnttabSetupTable`].
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
/// Dump the table to the console (debug); [`GnttabDumpTable`].
pub const GNTTABOP_DUMP_TABLE: u64 = 3;
/// Transfer a page (PV); [`GnttabTransfer`].
pub const GNTTABOP_TRANSFER: u64 = 4;
/// Copy between grants/frames; [`GnttabCopy`] array.
pub const GNTTABOP_COPY: u64 = 5;
/// Query the table size; [`GnttabQuerySize`].
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
/// Unmap and replace (PV); [`GnttabUnmapAndReplace`].
pub const GNTTABOP_UNMAP_AND_REPLACE: u64 = 7;
/// Select the table version; [`GnttabSetVersion`].
pub const GNTTABOP_SET_VERSION: u64 = 8;
/// Get v2 status frames; [`GnttabGetStatusFrames`].
pub const GNTTABOP_GET_STATUS_FRAMES: u64 = 9;
/// Get the table version; [`GnttabGetVersion`].
pub const GNTTABOP_GET_VERSION: u64 = 10;
/// Swap two grant entries; [`GnttabSwapGrantRef`].
pub const GNTTABOP_SWAP_GRANT_REF: u64 = 11;
/// Cache maintenance on a grant (Arm); [`GnttabCacheFlush`].
pub const GNTTABOP_CACHE_FLUSH: u64 = 12;

/// Entries reserved for the toolstack (Linux never allocates refs below this).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry granting the console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = 0;
/// Reserved entry granting the xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = 1;
/// v1 entries per 4 KiB frame.
pub const GNTTAB_V1_ENTRIES_PER_FRAME: u32 = 512;

/// Entry type: invalid.
pub const GTF_INVALID: u16 = 0;
/// Entry type: `domid` may map or access `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Entry type: `domid` may transfer a page into this entry.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Entry type: transitive grant (v2 only).
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the entry type bits.
pub const GTF_TYPE_MASK: u16 = 3;
/// Grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while the grant is mapped or being copied from.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while the grant is mapped writable or being copied to.
pub const GTF_WRITING: u16 = 1 << 4;
/// Cache attribute: PWT.
pub const GTF_PWT: u16 = 1 << 5;
/// Cache attribute: PCD.
pub const GTF_PCD: u16 = 1 << 6;
/// Cache attribute: PAT.
pub const GTF_PAT: u16 = 1 << 7;
/// Sub-page grant (v2 only).
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// Transfer entries: the transfer is committed (aliases bit 2).
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// Transfer entries: the transfer is completed (aliases bit 3).
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// Map for device access (PV only).
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// Map into the caller's address space; for PVH, `host_addr` is a guest physical address.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// Map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// Map for application use (PV only).
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `host_addr` is the address of a PTE (PV only).
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// First bit available to the guest in PTE-based maps.
pub const GNTMAP_GUEST_AVAIL0: u32 = 16;
/// Mask of guest-available bits.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = u32::MAX << GNTMAP_GUEST_AVAIL0;

/// `gnttab_copy.flags`: the source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `gnttab_copy.flags`: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `gnttab_cache_flush.op`: clean.
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `gnttab_cache_flush.op`: invalidate.
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `gnttab_cache_flush.op`: `a` is a grant reference.
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// Per-op status: success.
pub const GNTST_OKAY: i16 = 0;
/// Per-op status: general error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// Per-op status: unknown domain.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// Per-op status: unknown or inappropriate grant ref.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// Per-op status: unknown or inappropriate handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// Per-op status: inappropriate address to map.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// Per-op status: inappropriate device address to unmap.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// Per-op status: out of IOMMU space.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// Per-op status: not enough privilege.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// Per-op status: invalid page.
pub const GNTST_BAD_PAGE: i16 = -9;
/// Per-op status: copy crosses a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// Per-op status: transfer address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// Per-op status: try again (Linux retries).
pub const GNTST_EAGAIN: i16 = -12;
/// Per-op status: out of space (handles etc.).
pub const GNTST_NO_SPACE: i16 = -13;

/// The Xen name of a `GNTST_*` status.
pub const fn gntst_name(status: i16) -> Option<&'static str> {
    Some(match status {
        GNTST_OKAY => "okay",
        GNTST_GENERAL_ERROR => "general_error",
        GNTST_BAD_DOMAIN => "bad_domain",
        GNTST_BAD_GNTREF => "bad_gntref",
        GNTST_BAD_HANDLE => "bad_handle",
        GNTST_BAD_VIRT_ADDR => "bad_virt_addr",
        GNTST_BAD_DEV_ADDR => "bad_dev_addr",
        GNTST_NO_DEVICE_SPACE => "no_device_space",
        GNTST_PERMISSION_DENIED => "permission_denied",
        GNTST_BAD_PAGE => "bad_page",
        GNTST_BAD_COPY_ARG => "bad_copy_arg",
        GNTST_ADDRESS_TOO_BIG => "address_too_big",
        GNTST_EAGAIN => "eagain",
        GNTST_NO_SPACE => "no_space",
        _ => return None,
    })
}

zc_struct! {
    /// `struct grant_entry_v1`, in the granting domain's grant-table frames.
    pub struct GrantEntryV1 {
        /// IN/OUT: `GTF_*`; the type and `GTF_readonly` are written by the guest,
        /// `GTF_reading`/`GTF_writing` by the hypervisor.
        pub flags: u16,
        /// IN: domain being granted access.
        pub domid: DomId,
        /// IN: GFN of the granted page (for transfers, OUT: the transferred frame).
        pub frame: u32,
    }
}
assert_layout!(GrantEntryV1, size = 8, align = 4, flags @ 0, domid @ 2, frame @ 4);

zc_struct! {
    /// `struct grant_entry_header` (the common head of v2 entries).
    pub struct GrantEntryHeader {
        /// IN/OUT: `GTF_*`.
        pub flags: u16,
        /// IN: domain being granted access.
        pub domid: DomId,
    }
}
assert_layout!(GrantEntryHeader, size = 4, align = 2, flags @ 0, domid @ 2);

zc_struct! {
    /// `struct gnttab_map_grant_ref` (`GNTTABOP_map_grant_ref`).
    pub struct GnttabMapGrantRef {
        /// IN: where to map; for auto-translated callers a page-aligned guest physical
        /// address (`host_addr >> 12` is the target GFN).
        pub host_addr: u64,
        /// IN: `GNTMAP_*`.
        pub flags: u32,
        /// IN: grant reference in `dom`'s table.
        pub ref_: GrantRef,
        /// IN: granting domain.
        pub dom: DomId,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// OUT: maptrack handle for the unmap.
        pub handle: GrantHandle,
        /// OUT: bus address for device maps (0 for PVH).
        pub dev_bus_addr: u64,
    }
}
assert_layout!(GnttabMapGrantRef, size = 32, align = 8,
    host_addr @ 0, flags @ 8, ref_ @ 12, dom @ 16, status @ 18, handle @ 20, dev_bus_addr @ 24);

zc_struct! {
    /// `struct gnttab_unmap_grant_ref` (`GNTTABOP_unmap_grant_ref`).
    pub struct GnttabUnmapGrantRef {
        /// IN: address the grant was mapped at (must match the handle).
        pub host_addr: u64,
        /// IN: bus address for device maps.
        pub dev_bus_addr: u64,
        /// IN: maptrack handle from the map.
        pub handle: GrantHandle,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad0: u16,
    }
}
assert_layout!(GnttabUnmapGrantRef, size = 24, align = 8,
    host_addr @ 0, dev_bus_addr @ 8, handle @ 16, status @ 20, _pad0 @ 22);

zc_struct! {
    /// `struct gnttab_setup_table` (`GNTTABOP_setup_table`, PV).
    pub struct GnttabSetupTable {
        /// IN: domain.
        pub dom: DomId,
        /// Padding.
        pub _pad0: u16,
        /// IN: number of frames wanted.
        pub nr_frames: u32,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad1: [u8; 6],
        /// OUT: frame numbers.
        pub frame_list: GuestHandle<XenPfn>,
    }
}
assert_layout!(GnttabSetupTable, size = 24, align = 8,
    dom @ 0, _pad0 @ 2, nr_frames @ 4, status @ 8, _pad1 @ 10, frame_list @ 16);

zc_struct! {
    /// `struct gnttab_dump_table` (`GNTTABOP_dump_table`).
    pub struct GnttabDumpTable {
        /// IN: domain.
        pub dom: DomId,
        /// OUT: `GNTST_*`.
        pub status: i16,
    }
}
assert_layout!(GnttabDumpTable, size = 4, align = 2, dom @ 0, status @ 2);

zc_struct! {
    /// `struct gnttab_transfer` (`GNTTABOP_transfer`, PV).
    pub struct GnttabTransfer {
        /// IN: frame to transfer.
        pub mfn: XenPfn,
        /// IN: receiving domain.
        pub domid: DomId,
        /// Padding.
        pub _pad0: u16,
        /// IN: receiver's grant ref (`GTF_accept_transfer`).
        pub ref_: GrantRef,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad1: [u8; 6],
    }
}
assert_layout!(GnttabTransfer, size = 24, align = 8,
    mfn @ 0, domid @ 8, _pad0 @ 10, ref_ @ 12, status @ 16, _pad1 @ 18);

zc_struct! {
    /// `struct gnttab_copy_ptr`: one side of a [`GnttabCopy`].
    pub struct GnttabCopyPtr {
        /// IN: union `u`: a grant ref (low 32 bits, with `GNTCOPY_*_gref`) or a GFN.
        pub u: u64,
        /// IN: owning domain (must be `DOMID_SELF` for a GFN side).
        pub domid: DomId,
        /// IN: byte offset within the page.
        pub offset: u16,
        /// Padding.
        pub _pad0: u32,
    }
}
assert_layout!(GnttabCopyPtr, size = 16, align = 8, u @ 0, domid @ 8, offset @ 10, _pad0 @ 12);

impl GnttabCopyPtr {
    /// `u.ref`: the grant reference (the low 32 bits of the union).
    pub const fn gref(&self) -> GrantRef {
        self.u as u32
    }
    /// `u.gmfn`: the frame number.
    pub const fn gmfn(&self) -> XenPfn {
        self.u
    }
    /// A grant-reference side. The union's upper bytes are zeroed.
    pub const fn from_gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        Self {
            u: gref as u64,
            domid,
            offset,
            _pad0: 0,
        }
    }
    /// A frame side.
    pub const fn from_gmfn(gmfn: XenPfn, domid: DomId, offset: u16) -> Self {
        Self {
            u: gmfn,
            domid,
            offset,
            _pad0: 0,
        }
    }
}

zc_struct! {
    /// `struct gnttab_copy` (`GNTTABOP_copy`).
    pub struct GnttabCopy {
        /// IN: source.
        pub source: GnttabCopyPtr,
        /// IN: destination.
        pub dest: GnttabCopyPtr,
        /// IN: bytes to copy (`offset + len <= 4096` on both sides).
        pub len: u16,
        /// IN: `GNTCOPY_*`.
        pub flags: u16,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad0: u16,
    }
}
assert_layout!(GnttabCopy, size = 40, align = 8,
    source @ 0, dest @ 16, len @ 32, flags @ 34, status @ 36, _pad0 @ 38);

zc_struct! {
    /// `struct gnttab_query_size` (`GNTTABOP_query_size`).
    pub struct GnttabQuerySize {
        /// IN: domain.
        pub dom: DomId,
        /// Padding.
        pub _pad0: u16,
        /// OUT: current number of frames.
        pub nr_frames: u32,
        /// OUT: maximum number of frames.
        pub max_nr_frames: u32,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad1: u16,
    }
}
assert_layout!(GnttabQuerySize, size = 16, align = 4,
    dom @ 0, _pad0 @ 2, nr_frames @ 4, max_nr_frames @ 8, status @ 12, _pad1 @ 14);

zc_struct! {
    /// `struct gnttab_unmap_and_replace` (`GNTTABOP_unmap_and_replace`, PV).
    pub struct GnttabUnmapAndReplace {
        /// IN: address of the grant mapping.
        pub host_addr: u64,
        /// IN: address whose mapping replaces it.
        pub new_addr: u64,
        /// IN: maptrack handle.
        pub handle: GrantHandle,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad0: u16,
    }
}
assert_layout!(GnttabUnmapAndReplace, size = 24, align = 8,
    host_addr @ 0, new_addr @ 8, handle @ 16, status @ 20, _pad0 @ 22);

zc_struct! {
    /// `struct gnttab_set_version` (`GNTTABOP_set_version`).
    pub struct GnttabSetVersion {
        /// IN: wanted version (1 or 2); OUT: the version in effect.
        pub version: u32,
    }
}
assert_layout!(GnttabSetVersion, size = 4, align = 4, version @ 0);

zc_struct! {
    /// `struct gnttab_get_status_frames` (`GNTTABOP_get_status_frames`, v2).
    pub struct GnttabGetStatusFrames {
        /// IN: number of frames.
        pub nr_frames: u32,
        /// IN: domain.
        pub dom: DomId,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// OUT: frame numbers.
        pub frame_list: GuestHandle<u64>,
    }
}
assert_layout!(GnttabGetStatusFrames, size = 16, align = 8,
    nr_frames @ 0, dom @ 4, status @ 6, frame_list @ 8);

zc_struct! {
    /// `struct gnttab_get_version` (`GNTTABOP_get_version`).
    pub struct GnttabGetVersion {
        /// IN: domain.
        pub dom: DomId,
        /// Padding.
        pub pad: u16,
        /// OUT: version.
        pub version: u32,
    }
}
assert_layout!(GnttabGetVersion, size = 8, align = 4, dom @ 0, pad @ 2, version @ 4);

zc_struct! {
    /// `struct gnttab_swap_grant_ref` (`GNTTABOP_swap_grant_ref`).
    pub struct GnttabSwapGrantRef {
        /// IN: first ref.
        pub ref_a: GrantRef,
        /// IN: second ref.
        pub ref_b: GrantRef,
        /// OUT: `GNTST_*`.
        pub status: i16,
        /// Padding.
        pub _pad0: u16,
    }
}
assert_layout!(GnttabSwapGrantRef, size = 12, align = 4, ref_a @ 0, ref_b @ 4, status @ 8, _pad0 @ 10);

zc_struct! {
    /// `struct gnttab_cache_flush` (`GNTTABOP_cache_flush`).
    pub struct GnttabCacheFlush {
        /// IN: union `a`: a bus address, or a grant ref (low 32 bits) with
        /// `GNTTAB_CACHE_SOURCE_GREF`.
        pub a: u64,
        /// IN: offset within the grant.
        pub offset: u16,
        /// IN: length.
        pub length: u16,
        /// IN: `GNTTAB_CACHE_*`.
        pub op: u32,
    }
}
assert_layout!(GnttabCacheFlush, size = 16, align = 8, a @ 0, offset @ 8, length @ 10, op @ 12);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, IntoBytes};

    #[test]
    fn copy_union_and_bytes() {
        let mut c = GnttabCopy {
            source: GnttabCopyPtr::from_gref(0x55, 3, 128),
            dest: GnttabCopyPtr::from_gmfn(0x1_2345_6789, crate::xen::DOMID_SELF, 0),
            len: 64,
            flags: GNTCOPY_SOURCE_GREF,
            ..Default::default()
        };
        c.status = GNTST_BAD_COPY_ARG;
        assert_eq!(c.source.gref(), 0x55);
        assert_eq!(c.dest.gmfn(), 0x1_2345_6789);
        let b = c.as_bytes();
        assert_eq!(&b[0..8], &0x55u64.to_le_bytes());
        assert_eq!(&b[8..10], &3u16.to_le_bytes());
        assert_eq!(&b[10..12], &128u16.to_le_bytes());
        assert_eq!(&b[16..24], &0x1_2345_6789u64.to_le_bytes());
        assert_eq!(&b[36..38], &(-10i16).to_le_bytes());
        assert_eq!(GnttabCopy::read_from_bytes(b).unwrap(), c);
    }

    #[test]
    fn status_codes() {
        assert_eq!(gntst_name(GNTST_EAGAIN), Some("eagain"));
        assert_eq!(GNTST_NO_SPACE, -13);
        for s in -13..=0 {
            assert!(gntst_name(s).is_some());
        }
        assert_eq!(gntst_name(-14), None);
        assert_eq!(GTF_PERMIT_ACCESS | GTF_READONLY, 0b101);
        assert_eq!(GNTMAP_HOST_MAP | GNTMAP_READONLY, 6);
    }
}
