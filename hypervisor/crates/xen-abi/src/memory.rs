//! `memory_op` hypercall: sub-ops, physmap manipulation, reservations, memory maps and
//! resource acquisition.
//!
//! Source: `xen/include/public/memory.h` (and the e820 entry layout used by
//! `XENMEM_memory_map`), interface version 0x00040d00.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{DomId, GuestHandle, XenPfn, XenUlong};

/// Increase a domain's reservation; [`XenMemoryReservation`]. Returns extents done.
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
/// Decrease a domain's reservation (balloon out); [`XenMemoryReservation`].
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// Highest machine frame; argument [`XenMemoryDomain`] (ignored).
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
/// Current reservation in pages; argument `domid_t`.
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
/// Maximum reservation in pages; argument `domid_t`.
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
/// PV: machine-to-physical table frames.
pub const XENMEM_MACHPHYS_MFN_LIST: u64 = 5;
/// Populate the physmap (balloon in); [`XenMemoryReservation`] with GFNs.
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// Map a special page at a GFN; [`XenAddToPhysmap`].
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// Get the domain's e820 map; [`XenMemoryMap`] of [`E820Entry`].
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// Get the host e820 map (PV dom0 only); [`XenMemoryMap`].
pub const XENMEM_MACHINE_MEMORY_MAP: u64 = 10;
/// PV: exchange extents; [`XenMemoryExchange`].
pub const XENMEM_EXCHANGE: u64 = 11;
/// PV: machphys mapping.
pub const XENMEM_MACHPHYS_MAPPING: u64 = 12;
/// Toolstack: set a domain's e820; [`XenForeignMemoryMap`].
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
/// Highest GFN of a domain; argument `domid_t`.
pub const XENMEM_MAXIMUM_GPFN: u64 = 14;
/// Remove a mapping from the physmap; [`XenRemoveFromPhysmap`].
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
/// Toolstack: set populate-on-demand target.
pub const XENMEM_SET_POD_TARGET: u64 = 16;
/// Toolstack: get populate-on-demand target.
pub const XENMEM_GET_POD_TARGET: u64 = 17;
/// Tools: shared pages freed.
pub const XENMEM_GET_SHARING_FREED_PAGES: u64 = 18;
/// Tools: shared pages in use.
pub const XENMEM_GET_SHARING_SHARED_PAGES: u64 = 19;
/// Tools: paging op.
pub const XENMEM_PAGING_OP: u64 = 20;
/// Tools: access op.
pub const XENMEM_ACCESS_OP: u64 = 21;
/// Tools: sharing op.
pub const XENMEM_SHARING_OP: u64 = 22;
/// Batched add-to-physmap (Linux: `add_to_physmap_range`); [`XenAddToPhysmapBatch`].
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
/// Old name of [`XENMEM_ADD_TO_PHYSMAP_BATCH`].
pub const XENMEM_ADD_TO_PHYSMAP_RANGE: u64 = XENMEM_ADD_TO_PHYSMAP_BATCH;
/// Tools: claim pages.
pub const XENMEM_CLAIM_PAGES: u64 = 24;
/// PV compat machphys list.
pub const XENMEM_MACHPHYS_COMPAT_MFN_LIST: u64 = 25;
/// vNUMA topology; [`XenVnumaTopologyInfo`].
pub const XENMEM_GET_VNUMAINFO: u64 = 26;
/// Tools: reserved device memory map.
pub const XENMEM_RESERVED_DEVICE_MEMORY_MAP: u64 = 27;
/// Map a resource's frames; [`XenMemAcquireResource`].
pub const XENMEM_ACQUIRE_RESOURCE: u64 = 28;

/// Bits of `cmd` selecting the sub-op.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;
/// `cmd >> MEMOP_EXTENT_SHIFT` is the continuation start extent
/// (`xen/include/xen/hypercall.h`).
pub const MEMOP_EXTENT_SHIFT: u32 = 6;

/// `XENMEMF_populate_on_demand`.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `XENMEMF_exact_node_request`.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `XENMEMF_vnode`.
pub const XENMEMF_VNODE: u32 = 1 << 18;
/// `XENMEMF_get_address_bits(flags)`.
pub const fn xenmemf_get_address_bits(flags: u32) -> u32 {
    flags & 0xff
}
/// `XENMEMF_get_node(flags)`.
pub const fn xenmemf_get_node(flags: u32) -> u32 {
    ((flags >> 8).wrapping_sub(1)) & 0xff
}

/// Map space: the domain's `shared_info` page (`idx` must be 0).
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// Map space: grant-table frame `idx` (bit 31 = status frame, v2 only).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// Map space: move guest frame `idx`.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// Map space: `size` guest frames starting at `idx` (`add_to_physmap` only).
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// Map space: frame `idx` of another domain (batch only, privileged).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// Map space: device MMIO (Arm only).
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;
/// `XENMAPIDX_grant_table_status`: in `idx` for `XENMAPSPACE_grant_table`, selects a status
/// frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// Resource type: ioreq server pages.
pub const XENMEM_RESOURCE_IOREQ_SERVER: u16 = 0;
/// Resource type: grant table.
pub const XENMEM_RESOURCE_GRANT_TABLE: u16 = 1;
/// Resource type: vmtrace buffer.
pub const XENMEM_RESOURCE_VMTRACE_BUF: u16 = 2;
/// Grant-table resource id: shared frames.
pub const XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED: u32 = 0;
/// Grant-table resource id: status frames.
pub const XENMEM_RESOURCE_GRANT_TABLE_ID_STATUS: u32 = 1;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// e820 type: ACPI reclaimable.
pub const E820_ACPI: u32 = 3;
/// e820 type: ACPI NVS.
pub const E820_NVS: u32 = 4;
/// e820 type: unusable.
pub const E820_UNUSABLE: u32 = 5;

zc_struct! {
    /// `struct xen_memory_reservation` (increase/decrease reservation, populate physmap).
    pub struct XenMemoryReservation {
        /// IN/OUT: array of `nr_extents` frame numbers (GFNs for auto-translated guests).
        pub extent_start: GuestHandle<XenPfn>,
        /// IN: number of extents.
        pub nr_extents: XenUlong,
        /// IN: each extent is `2^extent_order` pages.
        pub extent_order: u32,
        /// IN: `XENMEMF_*` flags.
        pub mem_flags: u32,
        /// IN: target domain (`DOMID_SELF` or, if privileged, another).
        pub domid: DomId,
        /// Padding.
        pub _pad0: [u8; 6],
    }
}
assert_layout!(XenMemoryReservation, size = 32, align = 8,
    extent_start @ 0, nr_extents @ 8, extent_order @ 16, mem_flags @ 20, domid @ 24, _pad0 @ 26);

zc_struct! {
    /// `struct xen_memory_exchange` (`XENMEM_exchange`, PV).
    pub struct XenMemoryExchange {
        /// IN: extents to give up.
        pub input: XenMemoryReservation,
        /// IN/OUT: extents to receive.
        pub output: XenMemoryReservation,
        /// OUT: number of input extents exchanged.
        pub nr_exchanged: XenUlong,
    }
}
assert_layout!(XenMemoryExchange, size = 72, align = 8, input @ 0, output @ 32, nr_exchanged @ 64);

zc_struct! {
    /// `struct xen_memory_domain`.
    pub struct XenMemoryDomain {
        /// IN: domain queried.
        pub domid: DomId,
    }
}
assert_layout!(XenMemoryDomain, size = 2, align = 2, domid @ 0);

zc_struct! {
    /// `struct xen_add_to_physmap` (`XENMEM_add_to_physmap`).
    pub struct XenAddToPhysmap {
        /// IN: domain whose physmap changes.
        pub domid: DomId,
        /// IN: number of pages for `XENMAPSPACE_gmfn_range`.
        pub size: u16,
        /// IN: `XENMAPSPACE_*`.
        pub space: u32,
        /// IN: index into the space (e.g. grant frame number).
        pub idx: XenUlong,
        /// IN: GFN at which the page appears.
        pub gpfn: XenPfn,
    }
}
assert_layout!(XenAddToPhysmap, size = 24, align = 8, domid @ 0, size @ 2, space @ 4, idx @ 8, gpfn @ 16);

zc_struct! {
    /// `struct xen_add_to_physmap_batch` (`XENMEM_add_to_physmap_batch`).
    pub struct XenAddToPhysmapBatch {
        /// IN: domain whose physmap changes.
        pub domid: DomId,
        /// IN: `XENMAPSPACE_*`.
        pub space: u16,
        /// IN: number of entries in `idxs`, `gpfns` and `errs`.
        pub size: u16,
        /// IN: union `u`: the foreign domain for `XENMAPSPACE_gmfn_foreign`, else 0.
        pub foreign_domid: DomId,
        /// IN: indexes into the space.
        pub idxs: GuestHandle<XenUlong>,
        /// IN: GFNs at which the pages appear.
        pub gpfns: GuestHandle<XenPfn>,
        /// OUT: per-entry error codes (0 or `-errno`).
        pub errs: GuestHandle<i32>,
    }
}
assert_layout!(XenAddToPhysmapBatch, size = 32, align = 8,
    domid @ 0, space @ 2, size @ 4, foreign_domid @ 6, idxs @ 8, gpfns @ 16, errs @ 24);

zc_struct! {
    /// `struct xen_remove_from_physmap` (`XENMEM_remove_from_physmap`).
    pub struct XenRemoveFromPhysmap {
        /// IN: domain whose physmap changes.
        pub domid: DomId,
        /// Padding.
        pub _pad0: [u8; 6],
        /// IN: GFN of the mapping to remove.
        pub gpfn: XenPfn,
    }
}
assert_layout!(XenRemoveFromPhysmap, size = 16, align = 8, domid @ 0, _pad0 @ 2, gpfn @ 8);

zc_struct! {
    /// `struct xen_memory_map` (`XENMEM_memory_map`, `XENMEM_machine_memory_map`).
    pub struct XenMemoryMap {
        /// IN: capacity of `buffer` in entries; OUT: number of entries written.
        pub nr_entries: u32,
        /// Padding.
        pub _pad0: u32,
        /// OUT: array of packed 20-byte [`E820Entry`].
        pub buffer: GuestHandle<E820Entry>,
    }
}
assert_layout!(XenMemoryMap, size = 16, align = 8, nr_entries @ 0, _pad0 @ 4, buffer @ 8);

zc_struct! {
    /// `struct xen_foreign_memory_map` (`XENMEM_set_memory_map`, toolstack).
    pub struct XenForeignMemoryMap {
        /// IN: domain whose map is set.
        pub domid: DomId,
        /// Padding.
        pub _pad0: [u8; 6],
        /// IN: the map.
        pub map: XenMemoryMap,
    }
}
assert_layout!(XenForeignMemoryMap, size = 24, align = 8, domid @ 0, _pad0 @ 2, map @ 8);

zc_struct! {
    /// `struct xen_pod_target` (`XENMEM_{set,get}_pod_target`).
    pub struct XenPodTarget {
        /// IN: target in pages.
        pub target_pages: u64,
        /// OUT: total pages.
        pub tot_pages: u64,
        /// OUT: PoD cache pages.
        pub pod_cache_pages: u64,
        /// OUT: PoD entries.
        pub pod_entries: u64,
        /// IN: domain.
        pub domid: DomId,
        /// Padding.
        pub _pad0: [u8; 6],
    }
}
assert_layout!(XenPodTarget, size = 40, align = 8,
    target_pages @ 0, tot_pages @ 8, pod_cache_pages @ 16, pod_entries @ 24, domid @ 32, _pad0 @ 34);

zc_struct! {
    /// `struct xen_mem_acquire_resource` (`XENMEM_acquire_resource`).
    pub struct XenMemAcquireResource {
        /// IN: domain owning the resource.
        pub domid: DomId,
        /// IN: `XENMEM_resource_*` type.
        pub ty: u16,
        /// IN: type-specific id (e.g. grant table shared/status).
        pub id: u32,
        /// IN: number of frames (in the query form, with a null `frame_list`, OUT: the
        /// resource size in frames).
        pub nr_frames: u32,
        /// IN: must be 0. Linux calls this `flags`; current Xen names it `pad` (the old
        /// `XENMEM_rsrc_acq_caller_owned` OUT flag is gone).
        pub flags: u32,
        /// IN: first frame index within the resource.
        pub frame: u64,
        /// IN: the caller's GFNs at which the frames are mapped (auto-translated callers).
        pub frame_list: GuestHandle<XenPfn>,
    }
}
assert_layout!(XenMemAcquireResource, size = 32, align = 8,
    domid @ 0, ty @ 2, id @ 4, nr_frames @ 8, flags @ 12, frame @ 16, frame_list @ 24);

zc_struct! {
    /// `struct xen_vmemrange` (vNUMA memory range).
    pub struct XenVmemrange {
        /// OUT: start address.
        pub start: u64,
        /// OUT: end address.
        pub end: u64,
        /// OUT: flags.
        pub flags: u32,
        /// OUT: virtual node id.
        pub nid: u32,
    }
}
assert_layout!(XenVmemrange, size = 24, align = 8, start @ 0, end @ 8, flags @ 16, nid @ 20);

zc_struct! {
    /// `struct xen_vnuma_topology_info` (`XENMEM_get_vnumainfo`).
    pub struct XenVnumaTopologyInfo {
        /// IN: domain.
        pub domid: DomId,
        /// Padding.
        pub pad: u16,
        /// IN/OUT: number of virtual nodes.
        pub nr_vnodes: u32,
        /// IN/OUT: number of vCPUs.
        pub nr_vcpus: u32,
        /// IN/OUT: number of memory ranges.
        pub nr_vmemranges: u32,
        /// OUT: `nr_vnodes²` distances (`u32`).
        pub vdistance: GuestHandle<u32>,
        /// OUT: node of each vCPU (`u32`).
        pub vcpu_to_vnode: GuestHandle<u32>,
        /// OUT: memory ranges.
        pub vmemrange: GuestHandle<XenVmemrange>,
    }
}
assert_layout!(XenVnumaTopologyInfo, size = 40, align = 8,
    domid @ 0, pad @ 2, nr_vnodes @ 4, nr_vcpus @ 8, nr_vmemranges @ 12,
    vdistance @ 16, vcpu_to_vnode @ 24, vmemrange @ 32);

/// One entry of the e820 map returned by `XENMEM_memory_map`: **packed**, 20 bytes
/// (unlike the 24-byte `hvm_memmap_table_entry`).
#[repr(C, packed)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_*` type.
    pub ty: u32,
}
assert_layout!(E820Entry, size = 20, align = 1, addr @ 0, size @ 8, ty @ 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_entry_is_packed() {
        let e = E820Entry {
            addr: 0x10_0000,
            size: 0x20_0000,
            ty: E820_RAM,
        };
        let b = e.as_bytes();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[0..8], &0x10_0000u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x20_0000u64.to_le_bytes());
        assert_eq!(&b[16..20], &1u32.to_le_bytes());
        // Two entries back to back in a guest buffer.
        let mut buf = [0u8; 40];
        buf[20..40].copy_from_slice(b);
        let (entries, rest) = <[E820Entry]>::ref_from_prefix_with_elems(&buf[..], 2).unwrap();
        assert!(rest.is_empty());
        assert_eq!({ entries[1].addr }, 0x10_0000);
    }

    #[test]
    fn memop_cmd_encoding() {
        let cmd = XENMEM_DECREASE_RESERVATION | (5 << MEMOP_EXTENT_SHIFT);
        assert_eq!(cmd & MEMOP_CMD_MASK, XENMEM_DECREASE_RESERVATION);
        assert_eq!(cmd >> MEMOP_EXTENT_SHIFT, 5);
        assert_eq!(xenmemf_get_address_bits(0x1_0020), 0x20);
        assert_eq!(xenmemf_get_node(3 << 8), 2);
    }

    #[test]
    fn add_to_physmap_from_guest_bytes() {
        let mut raw = [0u8; 24];
        raw[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
        raw[4..8].copy_from_slice(&XENMAPSPACE_GRANT_TABLE.to_le_bytes());
        raw[8..16].copy_from_slice(&3u64.to_le_bytes());
        raw[16..24].copy_from_slice(&0xf_0000u64.to_le_bytes());
        let a = XenAddToPhysmap::read_from_bytes(&raw).unwrap();
        assert_eq!((a.domid, a.space, a.idx, a.gpfn), (0x7ff0, 1, 3, 0xf_0000));
    }
}
