//! The Xen hypercall interface: dispatch, and one module per hypercall family.
//!
//! [`dispatch`] is the single table mapping hypercall numbers to handlers; every number
//! not in it answers `-ENOSYS`. Handlers return `Result<Reply, Errno>`, and the conversion
//! to the negative value in RAX happens only here. `docs/compat.md` lists the same table.

pub mod console;
pub mod events;
pub mod grant_table;
pub mod guest_access;
pub mod hvm;
pub mod memory;
pub mod sched;
pub mod shared_info;
pub mod vcpu;
pub mod version;

use crate::domain::Domain;
use crate::hvm::{Backend, Vcpu};
use xen_abi::errno::Errno;
use xen_abi::xen as nr;

/// What a hypercall asks of the vCPU beyond its return value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Return this value in RAX.
    Value(u64),
    /// Return 0, then block the vCPU until an event or its timer (SCHEDOP_block).
    Block,
    /// The domain shuts down with this SHUTDOWN_* reason.
    Shutdown(u32),
    /// Return 0 once a polled port is pending (the vCPU is registered as a poller), or
    /// at `timeout` (absolute system time, 0 = none) (SCHEDOP_poll).
    Poll { timeout: u64 },
}

/// Whether `domid` names the calling domain itself (`DOMID_SELF` or its own id).
pub fn is_self<B: Backend>(dom: &Domain<B>, domid: u16) -> bool {
    domid == xen_abi::xen::DOMID_SELF || domid == dom.id
}

/// For sub-ops that may target another domain only from the control domain: another
/// domain is `-EPERM` for an unprivileged caller and `-ESRCH` for the control domain
/// (no other domain exists yet).
pub fn require_self<B: Backend>(dom: &Domain<B>, domid: u16) -> Result<(), Errno> {
    match (is_self(dom, domid), dom.privileged) {
        (true, _) => Ok(()),
        (false, true) => Err(Errno::ESRCH),
        (false, false) => Err(Errno::EPERM),
    }
}

/// A decoded hypercall: number in RAX, arguments in RDI, RSI, RDX, R10, R8.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 5],
}

/// Runs hypercall `call` for `dom`, returning the value for RAX (already converted from an
/// errno) and any scheduling effect.
pub fn dispatch<B: Backend>(dom: &mut Domain<B>, call: Call) -> (u64, Reply) {
    dom.hypercalls += 1;
    if dom.vcpu.control_state().cpl != 0 {
        return (Errno::EPERM.to_rax(), Reply::Value(0));
    }
    let a = call.args;
    let result = match call.nr {
        nr::HYPERVISOR_SET_TIMER_OP => sched::set_timer_op(dom, a[0]),
        nr::HYPERVISOR_MEMORY_OP => memory::memory_op(dom, a[0], a[1]),
        nr::HYPERVISOR_XEN_VERSION => version::xen_version(dom, a[0], a[1]),
        nr::HYPERVISOR_CONSOLE_IO => console::console_io(dom, a[0], a[1], a[2]),
        nr::HYPERVISOR_SCHED_OP => sched::sched_op(dom, a[0], a[1]),
        nr::HYPERVISOR_VCPU_OP => vcpu::vcpu_op(dom, a[0], a[1], a[2]),
        nr::HYPERVISOR_HVM_OP => hvm::hvm_op(dom, a[0], a[1]),
        nr::HYPERVISOR_EVENT_CHANNEL_OP => events::event_channel_op(dom, a[0], a[1]),
        nr::HYPERVISOR_GRANT_TABLE_OP => grant_table::grant_table_op(dom, a[0], a[1], a[2]),
        _ => Err(Errno::ENOSYS),
    };
    match result {
        Ok(Reply::Value(v)) => (v, Reply::Value(v)),
        Ok(other) => (0, other),
        Err(e) => (e.to_rax(), Reply::Value(e.to_rax())),
    }
}
