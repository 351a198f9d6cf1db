//! `sched_op` (29) and `set_timer_op` (15).

use super::guest_access::read_arg;
use super::Reply;
use crate::domain::Domain;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::sched::{
    SchedShutdown, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_YIELD,
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
        _ => Err(Errno::ENOSYS),
    }
}

/// `HYPERVISOR_set_timer_op(timeout)`: a one-shot timer at absolute Xen system time
/// `timeout` (ns); 0 cancels it. A deadline in the past fires at once.
pub fn set_timer_op<B: Backend>(dom: &mut Domain<B>, timeout: u64) -> Result<Reply, Errno> {
    dom.timer.deadline_ns = (timeout != 0).then_some(timeout);
    Ok(Reply::Value(0))
}
