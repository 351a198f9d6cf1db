//! The Xen hypercall interface: dispatch, and one module per hypercall family.
//!
//! [`dispatch`] is the single table mapping hypercall numbers to handlers; every number
//! not in it answers `-ENOSYS`. Handlers return `Result<Reply, Errno>`, and the conversion
//! to the negative value in RAX happens only here. `docs/compat.md` lists the same table.

pub mod console;
pub mod events;
pub mod fvctl;
pub mod grant_table;
pub mod guest_access;
pub mod hvm;
pub mod memory;
pub mod physdev;
pub mod platform;
pub mod sched;
pub mod shared_info;
pub mod vcpu;
pub mod version;

use crate::domain::{Domain, Vcpu, VcpuCtx};
use crate::hvm::{Backend, Vcpu as _};
use crate::schedule::Hv;
use alloc::sync::Arc;
use xen_abi::errno::Errno;
use xen_abi::xen as nr;

/// What a hypercall asks of the vCPU beyond its return value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Return this value in RAX.
    Value(u64),
    /// Return 0, then block the vCPU until an event or its timer (SCHEDOP_block).
    Block,
    /// Return 0 and let others run first (SCHEDOP_yield).
    Yield,
    /// A continuation: the vCPU executes the same hypercall instruction again, with the
    /// arguments the handler left in its registers (RAX keeps the hypercall number), so
    /// long batches run in bounded steps with the scheduler in between.
    Again,
    /// The domain shuts down with this SHUTDOWN_* reason.
    Shutdown(u32),
    /// Return 0, then the calling vCPU is offline (VCPUOP_down of itself; `DOWN` set).
    Down,
    /// Return 0 once a polled port is pending (the vCPU is registered as a poller), or
    /// at `timeout` (absolute system time, 0 = none) (SCHEDOP_poll).
    Poll { timeout: u64 },
}

/// Everything a hypercall handler works on: the hypervisor (domain table, scheduler),
/// the calling domain, and the calling vCPU, whose hardware half this CPU owns while the
/// hypercall runs.
pub struct Cx<'a, B: Backend> {
    pub hv: &'static Hv<B>,
    pub dom: &'a Arc<Domain<B>>,
    pub vcpu: &'a Vcpu<B>,
    pub v: &'a mut VcpuCtx<B>,
}

impl<B: Backend> Cx<'_, B> {
    /// Resolves `DOMID_SELF`.
    pub fn resolve(&self, domid: u16) -> u16 {
        evtchn::resolve_domid(self.dom.id, domid)
    }

    /// Whether `domid` names the calling domain itself (`DOMID_SELF` or its own id).
    pub fn is_self(&self, domid: u16) -> bool {
        self.resolve(domid) == self.dom.id
    }

    /// The domain `domid` names, for sub-ops that may target another domain only from the
    /// control domain, checked in Xen's order (look-up, then XSM_TARGET): the caller
    /// itself; `-ESRCH` if no such domain exists; `-EPERM` if the caller is unprivileged.
    pub fn target(&self, domid: u16) -> Result<Arc<Domain<B>>, Errno> {
        if self.is_self(domid) {
            return Ok(self.dom.clone());
        }
        let d = self
            .hv
            .domains
            .get(self.resolve(domid))
            .ok_or(Errno::ESRCH)?;
        if !self.dom.is_control() {
            return Err(Errno::EPERM);
        }
        Ok(d)
    }
}

/// A decoded hypercall: number in RAX, arguments in RDI, RSI, RDX, R10, R8.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 5],
}

/// Runs hypercall `call`, returning the value for RAX (already converted from an errno)
/// and any scheduling effect.
pub fn dispatch<B: Backend>(cx: &mut Cx<'_, B>, call: Call) -> (u64, Reply) {
    cx.dom
        .hypercalls
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if cx.v.hw.control_state().cpl != 0 {
        return (Errno::EPERM.to_rax(), Reply::Value(0));
    }
    let a = call.args;
    crate::schedule::stats::hypercall(cx.dom.is_control(), call.nr, a[0], a[2]);
    let result = match call.nr {
        nr::HYPERVISOR_SET_TIMER_OP => sched::set_timer_op(cx, a[0]),
        nr::HYPERVISOR_MEMORY_OP => memory::memory_op(cx, a[0], a[1]),
        nr::HYPERVISOR_PLATFORM_OP => platform::platform_op(cx, a[0]),
        nr::HYPERVISOR_XEN_VERSION => version::xen_version(cx, a[0], a[1]),
        nr::HYPERVISOR_CONSOLE_IO => console::console_io(cx, a[0], a[1], a[2]),
        nr::HYPERVISOR_SCHED_OP => sched::sched_op(cx, a[0], a[1]),
        nr::HYPERVISOR_VCPU_OP => vcpu::vcpu_op(cx, a[0], a[1], a[2]),
        nr::HYPERVISOR_HVM_OP => hvm::hvm_op(cx, a[0], a[1]),
        nr::HYPERVISOR_EVENT_CHANNEL_OP => events::event_channel_op(cx, a[0], a[1]),
        nr::HYPERVISOR_GRANT_TABLE_OP => grant_table::grant_table_op(cx, a[0], a[1], a[2]),
        nr::HYPERVISOR_PHYSDEV_OP => physdev::physdev_op(cx, a[0], a[1]),
        xen_abi::fvctl::HYPERVISOR_FVCTL => fvctl::fvctl(cx, a[0]),
        _ => Err(Errno::ENOSYS),
    };
    match result {
        Ok(Reply::Value(v)) => (v, Reply::Value(v)),
        Ok(other) => (0, other),
        Err(e) => (e.to_rax(), Reply::Value(e.to_rax())),
    }
}
