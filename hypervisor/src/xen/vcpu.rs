//! `vcpu_op` (24): vcpu_info placement, the runstate area and the timers.

use super::guest_access::{copy_to_guest, read_arg, write_arg};
use super::Reply;
use crate::domain::Domain;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::vcpu::*;
use xen_abi::xen::VcpuInfo;

/// Xen refuses periodic timers faster than 1 ms.
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Runstate: running.
const RUNSTATE_RUNNING: i32 = 0;

/// `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)`.
pub fn vcpu_op<B: Backend>(
    dom: &mut Domain<B>,
    cmd: u64,
    vcpuid: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    // One vCPU per domain so far.
    if vcpuid != 0 {
        return Err(Errno::ENOENT);
    }
    match cmd {
        VCPUOP_IS_UP => Ok(Reply::Value(1)),
        VCPUOP_REGISTER_VCPU_INFO => {
            if dom.xen_vcpu.vcpu_info_gpa.is_some() {
                return Err(Errno::EINVAL); // Xen: may be registered once
            }
            let r: VcpuRegisterVcpuInfo = read_arg(dom, arg)?;
            let size = core::mem::size_of::<VcpuInfo>() as u64;
            if u64::from(r.offset) > 4096 - size {
                return Err(Errno::EINVAL);
            }
            let gpa = r.mfn.checked_mul(4096).ok_or(Errno::EINVAL)? + u64::from(r.offset);
            dom.mem
                .check(gpa, size as usize, true)
                .map_err(|_| Errno::EINVAL)?;
            // Carry the current contents over (event flags and time), as Xen does.
            let current = super::shared_info::read_vcpu_info(dom);
            dom.mem.write(gpa, &current).map_err(|_| Errno::EFAULT)?;
            dom.xen_vcpu.vcpu_info_gpa = Some(gpa);
            super::shared_info::update_time(dom);
            Ok(Reply::Value(0))
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let r: VcpuRegisterRunstateMemoryArea = read_arg(dom, arg)?;
            dom.xen_vcpu.runstate_gva = (r.addr != 0).then_some(r.addr);
            if dom.xen_vcpu.runstate_entry_ns == 0 {
                dom.xen_vcpu.runstate_entry_ns = crate::time::now().1;
            }
            update_runstate(dom);
            Ok(Reply::Value(0))
        }
        VCPUOP_GET_RUNSTATE_INFO => {
            let info = runstate(dom);
            write_arg(dom, arg, &info)?;
            Ok(Reply::Value(0))
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let r: VcpuSetPeriodicTimer = read_arg(dom, arg)?;
            if r.period_ns < MIN_PERIOD_NS {
                return Err(Errno::EINVAL);
            }
            dom.timer.period_ns = Some(r.period_ns);
            dom.timer.next_period_ns = crate::time::now().1 + r.period_ns;
            Ok(Reply::Value(0))
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            dom.timer.period_ns = None;
            Ok(Reply::Value(0))
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let r: VcpuSetSingleshotTimer = read_arg(dom, arg)?;
            if r.flags & VCPU_SSHOTTMR_FUTURE != 0 && r.timeout_abs_ns < crate::time::now().1 {
                return Err(Errno::ETIME);
            }
            dom.timer.deadline_ns = Some(r.timeout_abs_ns);
            Ok(Reply::Value(0))
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            dom.timer.deadline_ns = None;
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn runstate<B: Backend>(dom: &Domain<B>) -> VcpuRunstateInfo {
    let now = crate::time::now().1;
    let mut time = dom.xen_vcpu.runstate_time;
    time[0] += now.saturating_sub(dom.xen_vcpu.runstate_entry_ns);
    VcpuRunstateInfo {
        state: RUNSTATE_RUNNING,
        _pad0: 0,
        state_entry_time: dom.xen_vcpu.runstate_entry_ns,
        time,
    }
}

/// Refreshes the guest's runstate area, if registered. Failures are ignored, as in Xen:
/// the area may be unmapped in the current address space (KPTI user page tables).
pub fn update_runstate<B: Backend>(dom: &Domain<B>) {
    if let Some(gva) = dom.xen_vcpu.runstate_gva {
        let info = runstate(dom);
        let _ = copy_to_guest(dom, gva, zerocopy::IntoBytes::as_bytes(&info));
    }
}
