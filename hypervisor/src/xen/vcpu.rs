//! `vcpu_op` (24): bringing vCPUs up and down (`initialise`, `up`, `down`, `is_up`),
//! vcpu_info placement, the runstate area and the timers.
//!
//! A vCPU is *initialised* (Xen's `is_initialised`) unless it waits for a SIPI
//! (`vflags::WAIT_SIPI`): the boot vCPU is initialised from the start, an AP once a SIPI or
//! `VCPUOP_initialise` gave it a context, and again not after an INIT while offline.
//! `initialise` checks the `vcpu_hvm_context` as Xen's `arch_set_info_hvm_guest` does
//! ([`crate::hvm::startctx`], pure), and also refuses the contexts the hardware would refuse at VM
//! entry (which in Xen crash the domain at the first entry).

use super::guest_access::{copy_to_guest, read_arg, write_arg};
use super::{Cx, Reply};
use crate::domain::{runstate, vflags, VcpuTimer};
use crate::hvm::crcheck::CrPolicy;
use crate::hvm::startctx::start_state;
use crate::hvm::{Backend, Vcpu as _};
use core::sync::atomic::Ordering;
use sched::Scheduler as _;
use xen_abi::errno::Errno;
use xen_abi::vcpu::*;
use xen_abi::xen::VcpuInfo;

/// Xen refuses periodic timers faster than 1 ms.
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Xen's `STIME_DELTA_MAX`: system time is a signed 64-bit count, so a period beyond it
/// is `-EINVAL`.
const MAX_PERIOD_NS: u64 = i64::MAX as u64;

/// Runs `f` on the timers of vCPU `id` of the caller's domain: the caller's own, or
/// another vCPU's while it is parked (not running on any CPU).
fn with_timer<B: Backend, R>(
    cx: &mut Cx<'_, B>,
    id: u32,
    f: impl FnOnce(&mut VcpuTimer) -> R,
) -> Result<R, Errno> {
    if id == cx.vcpu.id {
        let r = f(&mut cx.v.timer);
        cx.hv.timer_changed(cx.vcpu, &cx.v.timer);
        return Ok(r);
    }
    let other = cx.dom.vcpu(id).ok_or(Errno::ENOENT)?;
    let mut parked = other.ctx.lock();
    // A vCPU running on another CPU cannot have its timers changed from here (SMP
    // needs a request to its CPU; with one CPU this never happens).
    let ctx = parked.as_mut().ok_or(Errno::EBUSY)?;
    let r = f(&mut ctx.timer);
    cx.hv.timer_changed(other, &ctx.timer);
    Ok(r)
}

/// `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)`.
pub fn vcpu_op<B: Backend>(
    cx: &mut Cx<'_, B>,
    cmd: u64,
    vcpuid: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    // Xen: an id that names no vCPU of the domain is -ENOENT, before anything else.
    let id = u32::try_from(vcpuid).map_err(|_| Errno::ENOENT)?;
    let target = cx.dom.vcpu(id).ok_or(Errno::ENOENT)?;
    let is_current = id == cx.vcpu.id;
    match cmd {
        VCPUOP_INITIALISE => {
            let ctx: VcpuHvmContext = read_arg(cx, arg)?;
            initialise(cx, id, &ctx)?;
            Ok(Reply::Value(0))
        }
        VCPUOP_UP => {
            // Xen: -EINVAL unless initialised; otherwise it leaves "down" and is woken (a
            // vCPU that is up already is left alone).
            if target.has(vflags::WAIT_SIPI) {
                return Err(Errno::EINVAL);
            }
            cx.hv.start_vcpu(cx.dom, target);
            Ok(Reply::Value(0))
        }
        VCPUOP_DOWN => down(cx, id),
        VCPUOP_IS_UP => Ok(Reply::Value(u64::from(!target.has(vflags::DOWN)))),
        VCPUOP_REGISTER_VCPU_INFO => {
            let r: VcpuRegisterVcpuInfo = read_arg(cx, arg)?;
            let size = core::mem::size_of::<VcpuInfo>() as u64;
            // The area must lie in one page (offset + size within it) and be 8-aligned
            // (its event words are updated with locked 8-byte operations).
            if u64::from(r.offset) > 4096 - size || !r.offset.is_multiple_of(8) {
                return Err(Errno::EINVAL);
            }
            let gpa = r
                .mfn
                .checked_mul(4096)
                .and_then(|page| page.checked_add(u64::from(r.offset)))
                .ok_or(Errno::EINVAL)?;
            cx.dom
                .mem
                .check(gpa, size as usize, true)
                .map_err(|_| Errno::EINVAL)?;
            let mut st = cx.dom.st.lock();
            if st.vcpu_info[id as usize].is_some() {
                return Err(Errno::EINVAL); // Xen: may be registered once
            }
            // Carry the current contents over (event flags and time), as Xen does.
            let current = super::shared_info::read_vcpu_info(&cx.dom.mem, &st, id);
            cx.dom.mem.write(gpa, &current).map_err(|_| Errno::EFAULT)?;
            st.vcpu_info[id as usize] = Some(gpa);
            super::shared_info::update_time(&cx.dom.mem, &st, id);
            Ok(Reply::Value(0))
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let r: VcpuRegisterRunstateMemoryArea = read_arg(cx, arg)?;
            target.runstate.lock().area = (r.addr != 0).then_some(r.addr);
            if is_current {
                update_runstate_area(cx);
            }
            Ok(Reply::Value(0))
        }
        VCPUOP_GET_RUNSTATE_INFO => {
            let info = runstate_info(target.runstate.lock().snapshot(crate::time::now().1));
            write_arg(cx, arg, &info)?;
            Ok(Reply::Value(0))
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let r: VcpuSetPeriodicTimer = read_arg(cx, arg)?;
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&r.period_ns) {
                return Err(Errno::EINVAL);
            }
            let now = crate::time::now().1;
            with_timer(cx, id, |t| {
                t.period_ns = Some(r.period_ns);
                t.next_period_ns = now.saturating_add(r.period_ns);
            })?;
            Ok(Reply::Value(0))
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            with_timer(cx, id, |t| t.period_ns = None)?;
            Ok(Reply::Value(0))
        }
        // Xen: single-shot timers only on the calling vCPU (-EINVAL otherwise).
        VCPUOP_SET_SINGLESHOT_TIMER | VCPUOP_STOP_SINGLESHOT_TIMER if !is_current => {
            Err(Errno::EINVAL)
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let r: VcpuSetSingleshotTimer = read_arg(cx, arg)?;
            // Xen compares as signed system time (s_time_t): a "negative" timeout lies in
            // the past, so it is -ETIME with VCPU_SSHOTTMR_future and fires at once
            // without it.
            let timeout = i64::from_ne_bytes(r.timeout_abs_ns.to_ne_bytes());
            let now = i64::try_from(crate::time::now().1).unwrap_or(i64::MAX);
            if r.flags & VCPU_SSHOTTMR_FUTURE != 0 && timeout < now {
                return Err(Errno::ETIME);
            }
            let deadline = u64::try_from(timeout).unwrap_or(0).max(1);
            with_timer(cx, id, |t| t.deadline_ns = Some(deadline))?;
            Ok(Reply::Value(0))
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            with_timer(cx, id, |t| t.deadline_ns = None)?;
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `VCPUOP_initialise` of vCPU `id` with `ctx`: `-EEXIST` if it is initialised (the
/// caller itself included), `-EINVAL` for a context [`start_state`] refuses, `-EBUSY` in
/// the moment an offline vCPU is still being put away by the CPU that ran it (SMP).
fn initialise<B: Backend>(cx: &mut Cx<'_, B>, id: u32, ctx: &VcpuHvmContext) -> Result<(), Errno> {
    if id == cx.vcpu.id {
        return Err(Errno::EEXIST);
    }
    let target = cx.dom.vcpu(id).ok_or(Errno::ENOENT)?;
    // The parked context's lock serialises initialise calls for one vCPU; `up` reads
    // WAIT_SIPI, cleared only once the state is complete.
    let mut parked = target.ctx.lock();
    if !target.has(vflags::WAIT_SIPI) || !target.has(vflags::DOWN) {
        return Err(Errno::EEXIST);
    }
    let state = start_state(ctx, &CrPolicy::for_guests()).map_err(|()| Errno::EINVAL)?;
    let v = parked.as_mut().ok_or(Errno::EBUSY)?;
    v.hw.set_start_state(&state).map_err(|()| Errno::EINVAL)?;
    // As after INIT: a fresh LAPIC, no timers, no pending NMI.
    v.vlapic = v.vlapic.after_init();
    v.timer = VcpuTimer::default();
    cx.hv.timer_changed(target, &v.timer);
    target.clear_flag(vflags::NMI);
    target.sipi.store(0, Ordering::SeqCst);
    target.clear_flag(vflags::WAIT_SIPI);
    Ok(())
}

/// `VCPUOP_down` of vCPU `id`, as Xen: the last vCPU of the domain going down powers it
/// off; a vCPU already down stays so (0). The caller itself leaves the CPU at once;
/// another vCPU is taken off the run queue, and if it runs on another CPU, that CPU is
/// made to reschedule, and its loop parks it offline.
fn down<B: Backend>(cx: &mut Cx<'_, B>, id: u32) -> Result<Reply, Errno> {
    let target = cx.dom.vcpu(id).ok_or(Errno::ENOENT)?;
    if cx
        .dom
        .vcpus
        .iter()
        .all(|v| v.id == id || v.has(vflags::DOWN))
    {
        return Ok(Reply::Shutdown(xen_abi::sched::SHUTDOWN_POWEROFF));
    }
    if id == cx.vcpu.id {
        target.set_flag(vflags::DOWN);
        return Ok(Reply::Down);
    }
    // The scheduler lock, then the parked context (the lock order): a parked vCPU cannot
    // be picked meanwhile.
    {
        let mut sched = cx.hv.sched.lock();
        let parked = target.ctx.lock();
        let was_down = target.flags.fetch_or(vflags::DOWN, Ordering::SeqCst) & vflags::DOWN != 0;
        if !was_down {
            let now = crate::time::now().1;
            sched.sleep(target.sref(), now);
            if parked.is_some() {
                target.runstate.lock().set(runstate::OFFLINE, now);
            }
        }
    }
    // Running on another CPU: that CPU reschedules, sees the flag and parks it offline;
    // the call returns once it has, so the caller never sees a vCPU that is down still
    // running (the wait `Hv::pause` does, as Xen's vcpu_sleep_sync).
    cx.hv.vcpu_descheduled(target);
    Ok(Reply::Value(0))
}

fn runstate_info(r: crate::domain::Runstate) -> VcpuRunstateInfo {
    VcpuRunstateInfo {
        state: r.state as i32,
        _pad0: 0,
        state_entry_time: r.entry_ns,
        time: r.time,
    }
}

/// Refreshes the calling vCPU's runstate area, if registered. Failures are ignored, as
/// in Xen: the area may be unmapped in the current address space (KPTI user page tables).
pub fn update_runstate_area<B: Backend>(cx: &Cx<'_, B>) {
    let (area, snap) = {
        let r = cx.vcpu.runstate.lock();
        (r.area, r.snapshot(crate::time::now().1))
    };
    if let Some(gva) = area {
        let mut info = runstate_info(snap);
        info.state = runstate::RUNNING as i32;
        let _ = copy_to_guest(cx, gva, zerocopy::IntoBytes::as_bytes(&info));
    }
}
