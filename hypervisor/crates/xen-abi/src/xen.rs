//! Core guest interface: hypercall numbers, domain ids, VIRQs, `vm_assist`, `console_io`,
//! and the shared-info / vcpu-info pages including the pvclock (`vcpu_time_info`).
//!
//! Sources: `xen/include/public/xen.h`, `xen/include/public/arch-x86/xen.h`,
//! `xen/include/public/arch-x86/xen-x86_64.h` (`arch_vcpu_info`), interface version
//! 0x00040d00 (x86_64 layout).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{DomId, XenPfn, XenUlong};

pub use crate::errno::Errno;

// ---------------------------------------------------------------------------------------
// Hypercall numbers (`__HYPERVISOR_*`).
// ---------------------------------------------------------------------------------------

macro_rules! hypercalls {
    ($( $(#[$m:meta])* $konst:ident = $nr:expr => $name:literal, )*) => {
        $( $(#[$m])* pub const $konst: u64 = $nr; )*

        /// Every hypercall number with its Xen name (without the `__HYPERVISOR_` prefix),
        /// in ascending order.
        pub const HYPERCALLS: &[(u64, &str)] = &[$( ($nr, $name), )*];
    };
}

hypercalls! {
    /// `set_trap_table` (PV only).
    HYPERVISOR_SET_TRAP_TABLE = 0 => "set_trap_table",
    /// `mmu_update` (PV only).
    HYPERVISOR_MMU_UPDATE = 1 => "mmu_update",
    /// `set_gdt` (PV only).
    HYPERVISOR_SET_GDT = 2 => "set_gdt",
    /// `stack_switch` (PV only).
    HYPERVISOR_STACK_SWITCH = 3 => "stack_switch",
    /// `set_callbacks` (PV only).
    HYPERVISOR_SET_CALLBACKS = 4 => "set_callbacks",
    /// `fpu_taskswitch` (PV only).
    HYPERVISOR_FPU_TASKSWITCH = 5 => "fpu_taskswitch",
    /// `sched_op_compat` (superseded by [`HYPERVISOR_SCHED_OP`]; Linux falls back to it only
    /// on `-ENOSYS`).
    HYPERVISOR_SCHED_OP_COMPAT = 6 => "sched_op_compat",
    /// `platform_op` (dom0; formerly `dom0_op`).
    HYPERVISOR_PLATFORM_OP = 7 => "platform_op",
    /// `set_debugreg` (PV only).
    HYPERVISOR_SET_DEBUGREG = 8 => "set_debugreg",
    /// `get_debugreg` (PV only).
    HYPERVISOR_GET_DEBUGREG = 9 => "get_debugreg",
    /// `update_descriptor` (PV only).
    HYPERVISOR_UPDATE_DESCRIPTOR = 10 => "update_descriptor",
    /// `memory_op(cmd, arg)`.
    HYPERVISOR_MEMORY_OP = 12 => "memory_op",
    /// `multicall(calls, nr_calls)`.
    HYPERVISOR_MULTICALL = 13 => "multicall",
    /// `update_va_mapping` (PV only).
    HYPERVISOR_UPDATE_VA_MAPPING = 14 => "update_va_mapping",
    /// `set_timer_op(timeout_abs_ns)`; 0 cancels.
    HYPERVISOR_SET_TIMER_OP = 15 => "set_timer_op",
    /// `event_channel_op_compat` (superseded by [`HYPERVISOR_EVENT_CHANNEL_OP`]).
    HYPERVISOR_EVENT_CHANNEL_OP_COMPAT = 16 => "event_channel_op_compat",
    /// `xen_version(cmd, arg)`.
    HYPERVISOR_XEN_VERSION = 17 => "xen_version",
    /// `console_io(cmd, count, buf)`.
    HYPERVISOR_CONSOLE_IO = 18 => "console_io",
    /// `physdev_op_compat` (superseded by [`HYPERVISOR_PHYSDEV_OP`]).
    HYPERVISOR_PHYSDEV_OP_COMPAT = 19 => "physdev_op_compat",
    /// `grant_table_op(cmd, uop, count)`.
    HYPERVISOR_GRANT_TABLE_OP = 20 => "grant_table_op",
    /// `vm_assist(cmd, type)`.
    HYPERVISOR_VM_ASSIST = 21 => "vm_assist",
    /// `update_va_mapping_otherdomain` (PV only).
    HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN = 22 => "update_va_mapping_otherdomain",
    /// `iret` (x86 PV only; its hypercall-page stub is `ud2`).
    HYPERVISOR_IRET = 23 => "iret",
    /// `vcpu_op(cmd, vcpuid, arg)`.
    HYPERVISOR_VCPU_OP = 24 => "vcpu_op",
    /// `set_segment_base` (x86_64 PV only).
    HYPERVISOR_SET_SEGMENT_BASE = 25 => "set_segment_base",
    /// `mmuext_op` (PV only).
    HYPERVISOR_MMUEXT_OP = 26 => "mmuext_op",
    /// `xsm_op`.
    HYPERVISOR_XSM_OP = 27 => "xsm_op",
    /// `nmi_op`.
    HYPERVISOR_NMI_OP = 28 => "nmi_op",
    /// `sched_op(cmd, arg)`.
    HYPERVISOR_SCHED_OP = 29 => "sched_op",
    /// `callback_op` (PV only).
    HYPERVISOR_CALLBACK_OP = 30 => "callback_op",
    /// `xenoprof_op` (dropped in Xen 4.22).
    HYPERVISOR_XENOPROF_OP = 31 => "xenoprof_op",
    /// `event_channel_op(cmd, arg)`.
    HYPERVISOR_EVENT_CHANNEL_OP = 32 => "event_channel_op",
    /// `physdev_op(cmd, arg)`.
    HYPERVISOR_PHYSDEV_OP = 33 => "physdev_op",
    /// `hvm_op(op, arg)`.
    HYPERVISOR_HVM_OP = 34 => "hvm_op",
    /// `sysctl` (toolstack only).
    HYPERVISOR_SYSCTL = 35 => "sysctl",
    /// `domctl` (toolstack only).
    HYPERVISOR_DOMCTL = 36 => "domctl",
    /// `kexec_op`.
    HYPERVISOR_KEXEC_OP = 37 => "kexec_op",
    /// `tmem_op` (removed; always `-ENOSYS`).
    HYPERVISOR_TMEM_OP = 38 => "tmem_op",
    /// `argo_op`.
    HYPERVISOR_ARGO_OP = 39 => "argo_op",
    /// `xenpmu_op`.
    HYPERVISOR_XENPMU_OP = 40 => "xenpmu_op",
    /// `dm_op(domid, nr_bufs, bufs)`.
    HYPERVISOR_DM_OP = 41 => "dm_op",
    /// `hypfs_op`.
    HYPERVISOR_HYPFS_OP = 42 => "hypfs_op",
    /// `arch_0`; on x86 this is `mca` (`xen/include/public/arch-x86/xen-mca.h`).
    HYPERVISOR_ARCH_0 = 48 => "mca",
    /// `arch_1` (x86: internal paging domctl continuation).
    HYPERVISOR_ARCH_1 = 49 => "arch_1",
    /// `arch_2`.
    HYPERVISOR_ARCH_2 = 50 => "arch_2",
    /// `arch_3`.
    HYPERVISOR_ARCH_3 = 51 => "arch_3",
    /// `arch_4`.
    HYPERVISOR_ARCH_4 = 52 => "arch_4",
    /// `arch_5`.
    HYPERVISOR_ARCH_5 = 53 => "arch_5",
    /// `arch_6`.
    HYPERVISOR_ARCH_6 = 54 => "arch_6",
    /// `arch_7`.
    HYPERVISOR_ARCH_7 = 55 => "arch_7",
}

/// `__HYPERVISOR_mca` (x86 alias of [`HYPERVISOR_ARCH_0`]).
pub const HYPERVISOR_MCA: u64 = HYPERVISOR_ARCH_0;
/// `__HYPERVISOR_dom0_op`: old name of [`HYPERVISOR_PLATFORM_OP`].
pub const HYPERVISOR_DOM0_OP: u64 = HYPERVISOR_PLATFORM_OP;
/// Number of 32-byte stubs in a hypercall page (4096 / 32).
pub const HYPERCALL_PAGE_STUBS: usize = 128;
/// Size of one hypercall-page stub.
pub const HYPERCALL_STUB_SIZE: usize = 32;

/// The Xen name of hypercall `nr` (e.g. `"memory_op"` for 12), if the number is defined.
pub fn hypercall_name(nr: u64) -> Option<&'static str> {
    HYPERCALLS
        .iter()
        .find(|&&(n, _)| n == nr)
        .map(|&(_, name)| name)
}

// ---------------------------------------------------------------------------------------
// Virtual IRQs.
// ---------------------------------------------------------------------------------------

/// Per-vCPU: timer (singleshot/periodic timer expiry).
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU: request to dump debug info.
pub const VIRQ_DEBUG: u32 = 1;
/// Global: bytes received on the emergency console (dom0 `hvc0` input).
pub const VIRQ_CONSOLE: u32 = 2;
/// Global: exceptional event for some domain (xenstored's domain-death notice).
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global: trace buffer has records available.
pub const VIRQ_TBUF: u32 = 4;
/// Global: a domain has paused for debugging.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per-vCPU: XenOprofile sample available.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global: bytes received on the console ring.
pub const VIRQ_CON_RING: u32 = 8;
/// Global: physical CPU state changed.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global: a memory event has occurred.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Per-domain: Argo message notification.
pub const VIRQ_ARGO: u32 = 11;
/// Global: low on heap memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per-vCPU: PMC interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// First architecture-specific VIRQ; on x86 this is the machine-check VIRQ (`VIRQ_MCA`).
pub const VIRQ_ARCH_0: u32 = 16;
/// x86 machine-check VIRQ (`VIRQ_ARCH_0`).
pub const VIRQ_MCA: u32 = VIRQ_ARCH_0;
/// Last architecture-specific VIRQ.
pub const VIRQ_ARCH_7: u32 = 23;
/// Number of VIRQs.
pub const NR_VIRQS: u32 = 24;

/// Whether `virq` is per-vCPU (may be bound on any vCPU) rather than global (vCPU 0 only).
pub const fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

// ---------------------------------------------------------------------------------------
// Domain ids.
// ---------------------------------------------------------------------------------------

/// First reserved domain id; ids at or above it are not real domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// The calling domain.
pub const DOMID_SELF: DomId = 0x7FF0;
/// I/O pseudo-domain (owner of MMIO pages).
pub const DOMID_IO: DomId = 0x7FF1;
/// The hypervisor itself.
pub const DOMID_XEN: DomId = 0x7FF2;
/// Copy-on-write pseudo-domain (memory sharing).
pub const DOMID_COW: DomId = 0x7FF3;
/// An invalid domain id.
pub const DOMID_INVALID: DomId = 0x7FF4;
/// Any domain (xenstore `domid-any` feature).
pub const DOMID_ANY: DomId = 0x7FF5;
/// The idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// Mask of the valid domid bits.
pub const DOMID_MASK: DomId = 0x7FFF;

// ---------------------------------------------------------------------------------------
// console_io, vm_assist, start-info flags.
// ---------------------------------------------------------------------------------------

/// `console_io` sub-op: write `count` bytes from `buf` to the console.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `console_io` sub-op: read up to `count` bytes into `buf`; returns the number read.
pub const CONSOLEIO_READ: u64 = 1;

/// `vm_assist` command: enable an assist.
pub const VMASST_CMD_ENABLE: u64 = 0;
/// `vm_assist` command: disable an assist.
pub const VMASST_CMD_DISABLE: u64 = 1;
/// `vm_assist` type (PV 32-bit).
pub const VMASST_TYPE_4GB_SEGMENTS: u64 = 0;
/// `vm_assist` type (PV 32-bit).
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u64 = 1;
/// `vm_assist` type (PV).
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u64 = 2;
/// `vm_assist` type (PV).
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u64 = 3;
/// `vm_assist` type (PV).
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u64 = 4;
/// `vm_assist` type: set [`crate::vcpu::XEN_RUNSTATE_UPDATE`] while updating runstate areas.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u64 = 5;
/// `vm_assist` type (PV).
pub const VMASST_TYPE_M2P_STRICT: u64 = 32;

/// Start-info flag: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// Start-info flag: the domain is the initial control domain (dom0).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// Start-info flag (PV): `mod_start` is a multiboot module.
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// Start-info flag (PV): `mod_start` is a PFN.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// Start-info flag (PV): tools understand a virtually mapped p2m.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// Start-info flags reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

// ---------------------------------------------------------------------------------------
// multicall.
// ---------------------------------------------------------------------------------------

/// `struct multicall_entry`: one element of a `multicall` batch.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MulticallEntry {
    /// IN: hypercall number.
    pub op: XenUlong,
    /// OUT: the hypercall's return value.
    pub result: XenUlong,
    /// IN: arguments (only the first five are used).
    pub args: [XenUlong; 6],
}
assert_layout!(MulticallEntry, size = 64, align = 8, op @ 0, result @ 8, args @ 16);

// ---------------------------------------------------------------------------------------
// Shared info, vcpu info, pvclock.
// ---------------------------------------------------------------------------------------

/// Number of legacy `vcpu_info` slots in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Number of 64-bit words in each 2-level event bitmap (`sizeof(xen_ulong_t) * 8`).
pub const EVTCHN_WORDS: usize = 64;

/// `vcpu_time_info.flags`: the TSC is invariant and synchronised across vCPUs.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the vCPU was stopped by the toolstack.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (pvclock), written by the hypervisor, read by the guest.
///
/// Update protocol: bump `version` to odd, barrier, write the fields, barrier, bump `version`
/// to even. Guest time = `system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32`, with a
/// right shift when `tsc_shift` is negative.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuTimeInfo {
    /// OUT: odd while an update is in progress.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: guest TSC value at the last update.
    pub tsc_timestamp: u64,
    /// OUT: system time (ns since hypervisor boot) at `tsc_timestamp`.
    pub system_time: u64,
    /// OUT: TSC-to-ns multiplier, a 32.32 fixed-point fraction.
    pub tsc_to_system_mul: u32,
    /// OUT: power-of-two pre-shift of the TSC delta (signed).
    pub tsc_shift: i8,
    /// OUT: `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
assert_layout!(VcpuTimeInfo, size = 32, align = 8,
    version @ 0, pad0 @ 4, tsc_timestamp @ 8, system_time @ 16,
    tsc_to_system_mul @ 24, tsc_shift @ 28, flags @ 29, pad1 @ 30);

/// `struct arch_vcpu_info` (x86_64).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ArchVcpuInfo {
    /// OUT (PV): CR2 of the last page fault. Unused for HVM/PVH.
    pub cr2: u64,
    /// Padding (keeps `vcpu_info` at 64 bytes).
    pub pad: u64,
}
assert_layout!(ArchVcpuInfo, size = 16, align = 8, cr2 @ 0, pad @ 8);

/// `struct vcpu_info`: per-vCPU event and time state, 64 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuInfo {
    /// IN/OUT: master "an event is pending" flag. Set by the hypervisor, cleared by the guest.
    pub evtchn_upcall_pending: u8,
    /// IN: PV upcall mask. Ignored for HVM/PVH guests.
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub _pad0: [u8; 6],
    /// IN/OUT: selector; bit `w` means word `w` of `evtchn_pending` may hold a pending port.
    pub evtchn_pending_sel: XenUlong,
    /// Architecture-specific state.
    pub arch: ArchVcpuInfo,
    /// OUT: pvclock.
    pub time: VcpuTimeInfo,
}
assert_layout!(VcpuInfo, size = 64, align = 8,
    evtchn_upcall_pending @ 0, evtchn_upcall_mask @ 1, _pad0 @ 2,
    evtchn_pending_sel @ 8, arch @ 16, time @ 32);

/// `struct arch_shared_info` (x86_64). PV-only p2m bookkeeping; unused by PVH.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ArchSharedInfo {
    /// IN (PV): number of valid p2m entries.
    pub max_pfn: u64,
    /// IN (PV): frame of the p2m frame-list list.
    pub pfn_to_mfn_frame_list_list: XenPfn,
    /// OUT (PV dom0): NMI reason bits.
    pub nmi_reason: u64,
    /// IN (PV): CR3 of the address space holding the linear p2m list.
    pub p2m_cr3: u64,
    /// IN (PV): virtual address of the linear p2m list.
    pub p2m_vaddr: u64,
    /// IN (PV): p2m generation count.
    pub p2m_generation: u64,
}
assert_layout!(ArchSharedInfo, size = 48, align = 8,
    max_pfn @ 0, pfn_to_mfn_frame_list_list @ 8, nmi_reason @ 16,
    p2m_cr3 @ 24, p2m_vaddr @ 32, p2m_generation @ 40);

/// `struct shared_info`: the per-domain shared page (3136 bytes used of 4 KiB).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SharedInfo {
    /// Legacy per-vCPU slots, used until a vCPU registers its own `vcpu_info`. Slot 0's
    /// `time` is Linux's TSC-frequency source.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// IN/OUT: 2-level pending bitmap; bit `p` = port `p`.
    pub evtchn_pending: [XenUlong; EVTCHN_WORDS],
    /// IN: 2-level mask bitmap; bit `p` = port `p`.
    pub evtchn_mask: [XenUlong; EVTCHN_WORDS],
    /// OUT: wallclock version (odd while updating).
    pub wc_version: u32,
    /// OUT: wallclock seconds (UTC at system time 0), low 32 bits.
    pub wc_sec: u32,
    /// OUT: wallclock nanoseconds.
    pub wc_nsec: u32,
    /// OUT: wallclock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture-specific state.
    pub arch: ArchSharedInfo,
}
assert_layout!(SharedInfo, size = 3136, align = 8,
    vcpu_info @ 0, evtchn_pending @ 2048, evtchn_mask @ 2560, wc_version @ 3072,
    wc_sec @ 3076, wc_nsec @ 3080, wc_sec_hi @ 3084, arch @ 3088);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn hypercall_names() {
        assert_eq!(hypercall_name(HYPERVISOR_MEMORY_OP), Some("memory_op"));
        assert_eq!(hypercall_name(12), Some("memory_op"));
        assert_eq!(hypercall_name(17), Some("xen_version"));
        assert_eq!(hypercall_name(29), Some("sched_op"));
        assert_eq!(hypercall_name(32), Some("event_channel_op"));
        assert_eq!(hypercall_name(34), Some("hvm_op"));
        assert_eq!(hypercall_name(41), Some("dm_op"));
        assert_eq!(hypercall_name(48), Some("mca"));
        assert_eq!(hypercall_name(11), None);
        assert_eq!(hypercall_name(43), None);
        assert_eq!(hypercall_name(56), None);
        assert_eq!(hypercall_name(u64::MAX), None);
    }

    #[test]
    fn hypercall_table_is_sorted_and_unique() {
        for w in HYPERCALLS.windows(2) {
            assert!(w[0].0 < w[1].0, "{:?} before {:?}", w[0], w[1]);
        }
        // 0..=42 without 11, plus 48..=55.
        assert_eq!(HYPERCALLS.len(), 42 + 8);
        assert!(HYPERCALLS.iter().all(|&(_, n)| !n.is_empty()));
    }

    #[test]
    fn virq_classes() {
        assert!(virq_is_per_vcpu(VIRQ_TIMER));
        assert!(virq_is_per_vcpu(VIRQ_DEBUG));
        assert!(!virq_is_per_vcpu(VIRQ_CONSOLE));
        assert!(!virq_is_per_vcpu(VIRQ_MCA));
        assert_eq!(VIRQ_MCA, 16);
    }

    #[test]
    fn shared_info_fits_in_a_page_and_zeroes() {
        assert!(core::mem::size_of::<SharedInfo>() <= crate::XEN_PAGE_SIZE);
        let mut s = SharedInfo::new_zeroed();
        s.vcpu_info[1].time.tsc_shift = -1;
        s.wc_sec = 0x1234_5678;
        let bytes = s.as_bytes();
        assert_eq!(bytes[64 + 32 + 28], 0xff);
        assert_eq!(&bytes[3076..3080], &0x1234_5678u32.to_le_bytes());
    }
}
