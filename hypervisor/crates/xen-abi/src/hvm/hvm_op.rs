//! `hvm_op` hypercall sub-ops and argument structs.
//!
//! Source: `xen/include/public/hvm/hvm_op.h`, interface version 0x00040d00 (so the ops
//! removed in 0x00040900, 2..4, are listed for reference only).

use crate::DomId;

/// Set an HVM parameter; [`XenHvmParam`].
pub const HVMOP_SET_PARAM: u64 = 0;
/// Get an HVM parameter; [`XenHvmParam`].
pub const HVMOP_GET_PARAM: u64 = 1;
/// Removed in interface 0x00040900 (now a `dm_op`).
pub const HVMOP_SET_PCI_INTX_LEVEL: u64 = 2;
/// Removed in interface 0x00040900 (now a `dm_op`).
pub const HVMOP_SET_ISA_IRQ_LEVEL: u64 = 3;
/// Removed in interface 0x00040900 (now a `dm_op`).
pub const HVMOP_SET_PCI_LINK_ROUTE: u64 = 4;
/// Flush all guest TLBs; argument NULL.
pub const HVMOP_FLUSH_TLBS: u64 = 5;
/// Page-table teardown hint; [`XenHvmPagetableDying`].
pub const HVMOP_PAGETABLE_DYING: u64 = 9;
/// Current system time; [`XenHvmGetTime`].
pub const HVMOP_GET_TIME: u64 = 10;
/// Emit a trace record.
pub const HVMOP_XENTRACE: u64 = 11;
/// Tools: set memory access.
pub const HVMOP_SET_MEM_ACCESS: u64 = 12;
/// Tools: get memory access.
pub const HVMOP_GET_MEM_ACCESS: u64 = 13;
/// Memory type of a GFN; [`XenHvmGetMemType`].
pub const HVMOP_GET_MEM_TYPE: u64 = 15;
/// Per-vCPU LAPIC-delivered upcall vector; [`XenHvmEvtchnUpcallVector`].
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u64 = 23;
/// Guest request to the vm_event monitor.
pub const HVMOP_GUEST_REQUEST_VM_EVENT: u64 = 24;
/// altp2m operations.
pub const HVMOP_ALTP2M: u64 = 25;

/// `hvmmem_type_t`: normal RAM.
pub const HVMMEM_RAM_RW: u16 = 0;
/// `hvmmem_type_t`: read-only RAM.
pub const HVMMEM_RAM_RO: u16 = 1;
/// `hvmmem_type_t`: MMIO emulated by a device model.
pub const HVMMEM_MMIO_DM: u16 = 2;
/// `hvmmem_type_t`: unused placeholder (interface ≥ 0x00040700).
pub const HVMMEM_UNUSED: u16 = 3;
/// `hvmmem_type_t`: claimed by an ioreq server.
pub const HVMMEM_IOREQ_SERVER: u16 = 4;

zc_struct! {
    /// `struct xen_hvm_param` (`HVMOP_set_param`, `HVMOP_get_param`).
    pub struct XenHvmParam {
        /// IN: domain (`DOMID_SELF` or, if privileged, another).
        pub domid: DomId,
        /// Padding.
        pub pad: u16,
        /// IN: `HVM_PARAM_*` index.
        pub index: u32,
        /// IN (set) / OUT (get): value.
        pub value: u64,
    }
}
assert_layout!(XenHvmParam, size = 16, align = 8, domid @ 0, pad @ 2, index @ 4, value @ 8);

zc_struct! {
    /// `struct xen_hvm_pagetable_dying` (`HVMOP_pagetable_dying`).
    pub struct XenHvmPagetableDying {
        /// IN: domain.
        pub domid: DomId,
        /// Padding.
        pub pad: [u16; 3],
        /// IN: guest physical address of the dying top-level page table.
        pub gpa: u64,
    }
}
assert_layout!(XenHvmPagetableDying, size = 16, align = 8, domid @ 0, pad @ 2, gpa @ 8);

zc_struct! {
    /// `struct xen_hvm_get_time` (`HVMOP_get_time`).
    pub struct XenHvmGetTime {
        /// OUT: system time in ns.
        pub now: u64,
    }
}
assert_layout!(XenHvmGetTime, size = 8, align = 8, now @ 0);

zc_struct! {
    /// `struct xen_hvm_get_mem_type` (`HVMOP_get_mem_type`).
    pub struct XenHvmGetMemType {
        /// IN: domain.
        pub domid: DomId,
        /// OUT: `HVMMEM_*`.
        pub mem_type: u16,
        /// Padding.
        pub pad: [u16; 2],
        /// IN: GFN.
        pub pfn: u64,
    }
}
assert_layout!(XenHvmGetMemType, size = 16, align = 8, domid @ 0, mem_type @ 2, pad @ 4, pfn @ 8);

zc_struct! {
    /// `struct xen_hvm_evtchn_upcall_vector` (`HVMOP_set_evtchn_upcall_vector`).
    pub struct XenHvmEvtchnUpcallVector {
        /// IN: vCPU id.
        pub vcpu: u32,
        /// IN: vector delivered through the vCPU's LAPIC (needs an EOI).
        pub vector: u8,
        /// Padding (implicit in C).
        pub _pad0: [u8; 3],
    }
}
assert_layout!(XenHvmEvtchnUpcallVector, size = 8, align = 4, vcpu @ 0, vector @ 4, _pad0 @ 5);
