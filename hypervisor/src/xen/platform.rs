//! `platform_op` (7), for the control domain: the wallclock (`XENPF_settime32`,
//! `XENPF_settime64`). Other commands are `-ENOSYS`, as Xen answers commands it lacks.
//!
//! Checks in Xen's order (`do_platform_op`): the argument is read (`-EFAULT`), the
//! interface version (`-EACCES`), the caller's privilege (`-EPERM`), then the command.
//! Linux's dom0 sets the wallclock from its timekeeping notifier and, until a call
//! succeeds, retries on every timekeeping update (each tick): answering it is what stops
//! a hypercall per tick.

use super::guest_access::copy_from_guest;
use super::{Cx, Reply};
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::platform::{
    XENPF_INTERFACE_VERSION, XENPF_SETTIME32, XENPF_SETTIME64, XEN_PLATFORM_OP_SIZE,
};

/// `HYPERVISOR_platform_op(op)`.
pub fn platform_op<B: Backend>(cx: &mut Cx<'_, B>, arg: u64) -> Result<Reply, Errno> {
    let mut op = [0u8; XEN_PLATFORM_OP_SIZE];
    copy_from_guest(cx, arg, &mut op)?;
    let u32_at = |o: usize| u32::from_le_bytes([op[o], op[o + 1], op[o + 2], op[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let (cmd, version) = (u32_at(0), u32_at(4));
    if version != XENPF_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    if !cx.dom.is_control() {
        return Err(Errno::EPERM);
    }
    // The union starts at byte 8.
    let (secs, nsecs, system_time) = match cmd {
        // struct xenpf_settime32 { u32 secs; u32 nsecs; u64 system_time; }
        XENPF_SETTIME32 => (u64::from(u32_at(8)), u32_at(12), u64_at(16)),
        // struct xenpf_settime64 { u64 secs; u32 nsecs; u32 mbz; u64 system_time; }
        XENPF_SETTIME64 if u32_at(20) != 0 => return Err(Errno::EINVAL),
        XENPF_SETTIME64 => (u64_at(8), u32_at(16), u64_at(24)),
        _ => return Err(Errno::ENOSYS),
    };
    let utc_ns = secs
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::from(nsecs));
    crate::time::set_wallclock(utc_ns, system_time);
    for d in cx.hv.domains.all() {
        super::shared_info::update_wallclock(&d.st.lock());
    }
    Ok(Reply::Value(0))
}
