//! `vcpu_op` hypercall: sub-ops, timers, runstate and `vcpu_info` registration.
//!
//! Source: `xen/include/public/vcpu.h`, interface version 0x00040d00.

use crate::GuestHandle;

/// Initialise a vCPU's context (`vcpu_hvm_context` for HVM).
pub const VCPUOP_INITIALISE: u64 = 0;
/// Bring a vCPU up.
pub const VCPUOP_UP: u64 = 1;
/// Take a vCPU down.
pub const VCPUOP_DOWN: u64 = 2;
/// Is the vCPU up? Returns 1 or 0.
pub const VCPUOP_IS_UP: u64 = 3;
/// Copy the runstate; [`VcpuRunstateInfo`] (OUT).
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
/// Register a runstate area by guest virtual address; [`VcpuRegisterRunstateMemoryArea`].
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
/// Start a periodic timer; [`VcpuSetPeriodicTimer`].
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
/// Stop the periodic timer; argument NULL.
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// Arm the singleshot timer; [`VcpuSetSingleshotTimer`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// Cancel the singleshot timer; argument NULL.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// Move the vCPU's `vcpu_info`; [`VcpuRegisterVcpuInfo`].
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
/// Send an NMI to the vCPU (PV).
pub const VCPUOP_SEND_NMI: u64 = 11;
/// Get the physical CPU id (dom0); [`VcpuGetPhysid`].
pub const VCPUOP_GET_PHYSID: u64 = 12;
/// Register a secondary pvclock by virtual address; [`VcpuRegisterTimeMemoryArea`].
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;
/// Register the runstate area by guest physical address (same struct as 5).
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u64 = 14;
/// Register the secondary pvclock by guest physical address (same struct as 13).
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u64 = 15;

/// Runstate: running on a physical CPU.
pub const RUNSTATE_RUNNING: u32 = 0;
/// Runstate: runnable, waiting for a CPU.
pub const RUNSTATE_RUNNABLE: u32 = 1;
/// Runstate: blocked (HLT, poll, ...).
pub const RUNSTATE_BLOCKED: u32 = 2;
/// Runstate: offline (down or paused).
pub const RUNSTATE_OFFLINE: u32 = 3;
/// Set in `state_entry_time` while the hypervisor updates the area (with
/// `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `_VCPU_SSHOTTMR_future` bit number.
pub const VCPU_SSHOTTMR_FUTURE_BIT: u32 = 0;
/// `VCPU_SSHOTTMR_future`: fail with `-ETIME` if the timeout is already in the past.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << VCPU_SSHOTTMR_FUTURE_BIT;

zc_struct! {
    /// `struct vcpu_runstate_info`, kept up to date in guest memory.
    pub struct VcpuRunstateInfo {
        /// OUT: current `RUNSTATE_*` (C `int`).
        pub state: i32,
        /// Padding.
        pub _pad0: u32,
        /// OUT: system time (ns) when `state` was entered; bit 63 = update in progress.
        pub state_entry_time: u64,
        /// OUT: total ns spent in each `RUNSTATE_*`.
        pub time: [u64; 4],
    }
}
assert_layout!(VcpuRunstateInfo, size = 48, align = 8,
    state @ 0, _pad0 @ 4, state_entry_time @ 8, time @ 16);

zc_struct! {
    /// `struct vcpu_register_runstate_memory_area` (also used by
    /// `VCPUOP_register_runstate_phys_area`, where the address is physical).
    pub struct VcpuRegisterRunstateMemoryArea {
        /// IN: union `addr` (`h`, `v` or `p`): guest virtual address (op 5) or guest physical
        /// address (op 14) of a [`VcpuRunstateInfo`].
        pub addr: u64,
    }
}
assert_layout!(VcpuRegisterRunstateMemoryArea, size = 8, align = 8, addr @ 0);

zc_struct! {
    /// `struct vcpu_set_periodic_timer`.
    pub struct VcpuSetPeriodicTimer {
        /// IN: period in ns.
        pub period_ns: u64,
    }
}
assert_layout!(VcpuSetPeriodicTimer, size = 8, align = 8, period_ns @ 0);

zc_struct! {
    /// `struct vcpu_set_singleshot_timer`.
    pub struct VcpuSetSingleshotTimer {
        /// IN: absolute system time of expiry, in ns.
        pub timeout_abs_ns: u64,
        /// IN: `VCPU_SSHOTTMR_*` flags.
        pub flags: u32,
        /// Padding.
        pub _pad0: u32,
    }
}
assert_layout!(VcpuSetSingleshotTimer, size = 16, align = 8, timeout_abs_ns @ 0, flags @ 8, _pad0 @ 12);

zc_struct! {
    /// `struct vcpu_register_vcpu_info`.
    pub struct VcpuRegisterVcpuInfo {
        /// IN: frame of the page holding the new `vcpu_info` (a GFN for PVH).
        pub mfn: u64,
        /// IN: byte offset within the page (`offset + 64` must fit).
        pub offset: u32,
        /// IN: unused.
        pub rsvd: u32,
    }
}
assert_layout!(VcpuRegisterVcpuInfo, size = 16, align = 8, mfn @ 0, offset @ 8, rsvd @ 12);

zc_struct! {
    /// `struct vcpu_get_physid`.
    pub struct VcpuGetPhysid {
        /// OUT: APIC id in bits 31..0, ACPI id in bits 63..32.
        pub phys_id: u64,
    }
}
assert_layout!(VcpuGetPhysid, size = 8, align = 8, phys_id @ 0);

zc_struct! {
    /// `struct vcpu_register_time_memory_area` (also used by op 15 with a physical address).
    pub struct VcpuRegisterTimeMemoryArea {
        /// IN: union `addr`: address of a `vcpu_time_info`.
        pub addr: GuestHandle<crate::xen::VcpuTimeInfo>,
    }
}
assert_layout!(VcpuRegisterTimeMemoryArea, size = 8, align = 8, addr @ 0);

/// `VCPU_HVM_MODE_32B`: a [`VcpuHvmContext`] holding [`VcpuHvmX86_32`].
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `VCPU_HVM_MODE_64B`: a [`VcpuHvmContext`] holding [`VcpuHvmX86_64`].
pub const VCPU_HVM_MODE_64B: u32 = 1;

zc_struct! {
    /// `struct vcpu_hvm_x86_32` (public/hvm/hvm_vcpu.h): a start state in any 32-bit
    /// mode. Segment attributes (`*_ar`) use Xen's packed layout: bits 0-3 type, 4 S,
    /// 5-6 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G; bits 12-15 must be zero. Each field is the
    /// register (or segment base, limit, attributes) its name says.
    #[allow(missing_docs)]
    pub struct VcpuHvmX86_32 {
        pub eax: u32,
        pub ecx: u32,
        pub edx: u32,
        pub ebx: u32,
        pub esp: u32,
        pub ebp: u32,
        pub esi: u32,
        pub edi: u32,
        pub eip: u32,
        pub eflags: u32,
        pub cr0: u32,
        pub cr3: u32,
        pub cr4: u32,
        /// Must be zero.
        pub pad1: u32,
        pub efer: u64,
        pub cs_base: u32,
        pub ds_base: u32,
        pub ss_base: u32,
        pub es_base: u32,
        pub tr_base: u32,
        pub cs_limit: u32,
        pub ds_limit: u32,
        pub ss_limit: u32,
        pub es_limit: u32,
        pub tr_limit: u32,
        pub cs_ar: u16,
        pub ds_ar: u16,
        pub ss_ar: u16,
        pub es_ar: u16,
        pub tr_ar: u16,
        /// Must be zero.
        pub pad2: [u16; 3],
    }
}
assert_layout!(VcpuHvmX86_32, size = 120, align = 8,
    eip @ 32, cr0 @ 40, pad1 @ 52, efer @ 56, cs_base @ 64, cs_limit @ 84, cs_ar @ 104,
    tr_ar @ 112, pad2 @ 114);

zc_struct! {
    /// `struct vcpu_hvm_x86_64`: a start state in 64-bit mode (segments flat, selectors
    /// 0, chosen by the hypervisor). Each field is the register its name says.
    #[allow(missing_docs)]
    pub struct VcpuHvmX86_64 {
        pub rax: u64,
        pub rcx: u64,
        pub rdx: u64,
        pub rbx: u64,
        pub rsp: u64,
        pub rbp: u64,
        pub rsi: u64,
        pub rdi: u64,
        pub rip: u64,
        pub rflags: u64,
        pub cr0: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub efer: u64,
    }
}
assert_layout!(VcpuHvmX86_64, size = 112, align = 8, rip @ 64, cr0 @ 80, efer @ 104);

zc_struct! {
    /// `struct vcpu_hvm_context` (`VCPUOP_initialise` for HVM/PVH vCPUs): `mode` says
    /// which member of the `cpu_regs` union (here raw bytes, read with
    /// [`VcpuHvmContext::x86_32`] / [`VcpuHvmContext::x86_64`]) is meant.
    pub struct VcpuHvmContext {
        /// IN: `VCPU_HVM_MODE_*`.
        pub mode: u32,
        /// Must be zero.
        pub pad: u32,
        /// IN: union `cpu_regs`.
        pub cpu_regs: [u64; 15],
    }
}
assert_layout!(VcpuHvmContext, size = 128, align = 8, mode @ 0, pad @ 4, cpu_regs @ 8);

impl VcpuHvmContext {
    /// The union read as its 32-bit member.
    pub fn x86_32(&self) -> VcpuHvmX86_32 {
        use zerocopy::{FromBytes, IntoBytes};
        VcpuHvmX86_32::read_from_bytes(self.cpu_regs.as_bytes()).unwrap_or_default()
    }

    /// The union read as its 64-bit member (its first 112 bytes).
    pub fn x86_64(&self) -> VcpuHvmX86_64 {
        use zerocopy::{FromBytes, IntoBytes};
        VcpuHvmX86_64::read_from_prefix(self.cpu_regs.as_bytes())
            .map(|(r, _)| r)
            .unwrap_or_default()
    }

    /// A context in `VCPU_HVM_MODE_32B` holding `r`.
    pub fn from_32(r: &VcpuHvmX86_32) -> Self {
        use zerocopy::{FromBytes, IntoBytes};
        VcpuHvmContext {
            mode: VCPU_HVM_MODE_32B,
            pad: 0,
            cpu_regs: <[u64; 15]>::read_from_bytes(r.as_bytes()).unwrap_or_default(),
        }
    }

    /// A context in `VCPU_HVM_MODE_64B` holding `r`.
    pub fn from_64(r: &VcpuHvmX86_64) -> Self {
        use zerocopy::IntoBytes;
        let mut c = VcpuHvmContext {
            mode: VCPU_HVM_MODE_64B,
            ..Default::default()
        };
        c.cpu_regs.as_mut_bytes()[..112].copy_from_slice(r.as_bytes());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, IntoBytes};

    #[test]
    fn singleshot_and_runstate() {
        assert_eq!(VCPU_SSHOTTMR_FUTURE, 1);
        let t = VcpuSetSingleshotTimer {
            timeout_abs_ns: 5,
            flags: VCPU_SSHOTTMR_FUTURE,
            _pad0: 0,
        };
        assert_eq!(&t.as_bytes()[8..12], &1u32.to_le_bytes());
        let mut r = VcpuRunstateInfo {
            state: RUNSTATE_BLOCKED as i32,
            state_entry_time: 100 | XEN_RUNSTATE_UPDATE,
            ..Default::default()
        };
        r.time[RUNSTATE_OFFLINE as usize] = 7;
        let back = VcpuRunstateInfo::read_from_bytes(r.as_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(&r.as_bytes()[40..48], &7u64.to_le_bytes());
    }

    #[test]
    fn hvm_context_union() {
        let r = VcpuHvmX86_64 {
            rip: 0x1234,
            efer: 0x500,
            ..Default::default()
        };
        let c = VcpuHvmContext::from_64(&r);
        assert_eq!(c.mode, VCPU_HVM_MODE_64B);
        assert_eq!(c.x86_64(), r);
        assert_eq!(&c.as_bytes()[8 + 64..8 + 72], &0x1234u64.to_le_bytes());
        let r32 = VcpuHvmX86_32 {
            eip: 7,
            tr_ar: 0x8b,
            pad2: [0, 0, 9],
            ..Default::default()
        };
        let c = VcpuHvmContext::from_32(&r32);
        assert_eq!(c.mode, VCPU_HVM_MODE_32B);
        assert_eq!(c.x86_32(), r32);
        assert_eq!(&c.as_bytes()[8 + 118..128], &9u16.to_le_bytes());
    }
}
