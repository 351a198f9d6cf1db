//! `sched_op` (29) and `set_timer_op` (15).

use super::guest_access::read_arg;
use super::Reply;
use crate::domain::Domain;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::sched::{
    SchedPoll, SchedShutdown, SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE,
    SCHEDOP_YIELD,
};

/// `HYPERVISOR_sched_op(cmd, arg)`.
pub fn sched_op<B: Backend>(dom: &mut Domain<B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    match cmd {
        SCHEDOP_YIELD => Ok(Reply::Value(0)),
        SCHEDOP_BLOCK => Ok(Reply::Block),
        SCHEDOP_SHUTDOWN => {
            let s: SchedShutdown = read_arg(dom, arg)?;
            Ok(Reply::Shutdown(s.reason))
        }
        SCHEDOP_SHUTDOWN_CODE => {
            // Only records the reason a later crash would report; validate the argument.
            let _: SchedShutdown = read_arg(dom, arg)?;
            Ok(Reply::Value(0))
        }
        SCHEDOP_POLL => {
            let p: SchedPoll = read_arg(dom, arg)?;
            if p.nr_ports as usize > evtchn::MAX_POLL_PORTS {
                return Err(Errno::EINVAL);
            }
            let mut ports = [0u32; evtchn::MAX_POLL_PORTS];
            let ports = &mut ports[..p.nr_ports as usize];
            super::guest_access::copy_from_guest(
                dom,
                p.ports.addr(),
                zerocopy::IntoBytes::as_mut_bytes(ports),
            )?;
            // An upcall the vCPU can take right now ends the poll at once (Xen's
            // local_events_need_delivery).
            if super::shared_info::upcall_pending(dom)
                && crate::hvm::Vcpu::interrupts_enabled(&dom.vcpu)
            {
                return Ok(Reply::Value(0));
            }
            if super::events::poll(dom, ports)? {
                return Ok(Reply::Value(0));
            }
            Ok(Reply::Poll { timeout: p.timeout })
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `HYPERVISOR_set_timer_op(timeout)`: a one-shot timer at absolute Xen system time
/// `timeout` (ns); 0 cancels it. A deadline in the past fires at once.
pub fn set_timer_op<B: Backend>(dom: &mut Domain<B>, timeout: u64) -> Result<Reply, Errno> {
    dom.timer.deadline_ns = (timeout != 0).then_some(timeout);
    Ok(Reply::Value(0))
}
