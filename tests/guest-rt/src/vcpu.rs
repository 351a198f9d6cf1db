//! `vcpu_op` wrappers: runstate, `is_up`, the singleshot timer.
//!
//! Each returns the raw hypercall result (negative = `-errno`). `vcpu` is the target vCPU
//! id; Xen answers `-ENOENT` for an id the domain does not have (`do_vcpu_op`).

use xen_abi::vcpu::{
    VcpuRunstateInfo, VcpuSetSingleshotTimer, RUNSTATE_RUNNING, VCPUOP_GET_RUNSTATE_INFO,
    VCPUOP_IS_UP, VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER,
};
use xen_abi::xen::HYPERVISOR_VCPU_OP;

use crate::hypercall;

/// `vcpu_op(cmd, vcpu, arg)`.
///
/// # Safety
/// `arg` must be valid for `cmd` (or deliberately bad in a test that expects an error).
pub unsafe fn op(cmd: u64, vcpu: u32, arg: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall::hypercall3(HYPERVISOR_VCPU_OP, cmd, u64::from(vcpu), arg) }
}

/// `VCPUOP_get_runstate_info`: the runstate of `vcpu`, or `-errno`.
pub fn runstate(vcpu: u32) -> Result<VcpuRunstateInfo, i64> {
    let mut info = VcpuRunstateInfo::default();
    // SAFETY: `info` is a live, writable vcpu_runstate_info.
    let rc = unsafe {
        op(
            VCPUOP_GET_RUNSTATE_INFO,
            vcpu,
            core::ptr::from_mut(&mut info) as u64,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(rc)
    }
}

/// Nanoseconds vCPU 0 has spent running (`runstate.time[RUNSTATE_running]`; Xen includes the
/// current stint of the calling vCPU), or `-errno`.
pub fn runstate_running_ns() -> Result<u64, i64> {
    runstate(0).map(|r| r.time[RUNSTATE_RUNNING as usize])
}

/// `VCPUOP_is_up`: 1 or 0, or `-errno`.
pub fn is_up(vcpu: u32) -> i64 {
    // SAFETY: is_up takes no argument.
    unsafe { op(VCPUOP_IS_UP, vcpu, 0) }
}

/// `VCPUOP_set_singleshot_timer` at absolute system time `timeout_abs_ns` with `flags`
/// (`VCPU_SSHOTTMR_future`).
pub fn set_singleshot_timer(vcpu: u32, timeout_abs_ns: u64, flags: u32) -> i64 {
    let mut t = VcpuSetSingleshotTimer {
        timeout_abs_ns,
        flags,
        _pad0: 0,
    };
    // SAFETY: `t` is a live vcpu_set_singleshot_timer.
    unsafe {
        op(
            VCPUOP_SET_SINGLESHOT_TIMER,
            vcpu,
            core::ptr::from_mut(&mut t) as u64,
        )
    }
}

/// `VCPUOP_stop_singleshot_timer`.
pub fn stop_singleshot_timer(vcpu: u32) -> i64 {
    // SAFETY: the sub-op takes no argument.
    unsafe { op(VCPUOP_STOP_SINGLESHOT_TIMER, vcpu, 0) }
}
