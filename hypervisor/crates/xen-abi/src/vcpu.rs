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
}
