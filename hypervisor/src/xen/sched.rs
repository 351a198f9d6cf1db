//! `sched_op` (29) and `set_timer_op` (15).

use super::guest_access::read_arg;
use super::{Cx, Reply};
use crate::domain::DomainEnd;
use crate::hvm::{Backend, Vcpu as _};
use xen_abi::errno::Errno;
use xen_abi::sched::{
    SchedPoll, SchedRemoteShutdown, SchedShutdown, SCHEDOP_BLOCK, SCHEDOP_POLL,
    SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_YIELD,
};

/// `HYPERVISOR_sched_op(cmd, arg)`.
pub fn sched_op<B: Backend>(cx: &mut Cx<'_, B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    match cmd {
        SCHEDOP_YIELD => Ok(Reply::Yield),
        SCHEDOP_BLOCK => Ok(Reply::Block),
        SCHEDOP_SHUTDOWN => {
            let s: SchedShutdown = read_arg(cx, arg)?;
            Ok(Reply::Shutdown(s.reason))
        }
        SCHEDOP_SHUTDOWN_CODE => {
            // Only records the reason a later crash would report; validate the argument.
            let _: SchedShutdown = read_arg(cx, arg)?;
            Ok(Reply::Value(0))
        }
        SCHEDOP_REMOTE_SHUTDOWN => {
            // Xen: look the domain up (-ESRCH), then the XSM check (-EPERM for anyone but
            // the control domain); a domain may also shut itself down this way.
            let r: SchedRemoteShutdown = read_arg(cx, arg)?;
            let target = cx.hv.domains.get(r.domain_id).ok_or(Errno::ESRCH)?;
            if !cx.dom.is_control() {
                return Err(Errno::EPERM);
            }
            if target.id == cx.dom.id {
                return Ok(Reply::Shutdown(r.reason));
            }
            cx.hv.end_domain(&target, DomainEnd::Shutdown(r.reason));
            Ok(Reply::Value(0))
        }
        SCHEDOP_POLL => {
            let p: SchedPoll = read_arg(cx, arg)?;
            if p.nr_ports as usize > evtchn::MAX_POLL_PORTS {
                return Err(Errno::EINVAL);
            }
            let mut ports = [0u32; evtchn::MAX_POLL_PORTS];
            let ports = &mut ports[..p.nr_ports as usize];
            super::guest_access::copy_from_guest(
                cx,
                p.ports.addr(),
                zerocopy::IntoBytes::as_mut_bytes(ports),
            )?;
            // An upcall the vCPU can take right now ends the poll at once (Xen's
            // local_events_need_delivery).
            let pending = {
                let st = cx.dom.st.lock();
                super::shared_info::upcall_pending(&cx.dom.mem, &st, cx.vcpu.id)
            };
            if pending && cx.v.hw.interrupts_enabled() {
                return Ok(Reply::Value(0));
            }
            if super::events::poll(cx, ports)? {
                return Ok(Reply::Value(0));
            }
            Ok(Reply::Poll { timeout: p.timeout })
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Xen's bound on a sane `set_timer_op` timeout: 2^50 ns (about 13 days) ahead.
const TIMER_OP_MAX_AHEAD_NS: u64 = 1 << 50;
/// Where Xen puts a timeout it considers bogus (negative or too far ahead): 100 ms.
const TIMER_OP_BOGUS_NS: u64 = 100_000_000;

/// `HYPERVISOR_set_timer_op(timeout)`: a one-shot timer at absolute Xen system time
/// `timeout` (ns); 0 cancels it. A deadline in the past fires at once. As Xen's
/// `do_set_timer_op`: a negative timeout (as s_time_t) or one more than 2^50 ns ahead
/// (Linux jiffy wrap) fires in 100 ms instead.
pub fn set_timer_op<B: Backend>(cx: &mut Cx<'_, B>, timeout: u64) -> Result<Reply, Errno> {
    let now = crate::time::now().1;
    let bogus = i64::from_ne_bytes(timeout.to_ne_bytes()) < 0
        || timeout.saturating_sub(now) >= TIMER_OP_MAX_AHEAD_NS;
    cx.v.timer.deadline_ns = match timeout {
        0 => None,
        _ if bogus => Some(now.saturating_add(TIMER_OP_BOGUS_NS)),
        t => Some(t),
    };
    cx.hv.timer_changed(cx.vcpu, &cx.v.timer);
    Ok(Reply::Value(0))
}
