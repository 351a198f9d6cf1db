//! `memory_op` (12).

use super::guest_access::read_arg;
use super::Cx;
use super::Reply;
use crate::hvm::Backend;
use xen_abi::errno::Errno;
use xen_abi::memory::{
    E820Entry, XenAddToPhysmap, XenMemoryMap, XENMAPIDX_GRANT_TABLE_STATUS,
    XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP,
    XENMEM_MACHINE_MEMORY_MAP, XENMEM_MEMORY_MAP,
};

/// The low bits of `cmd` name the sub-op; the rest is a continuation index (MEMOP_EXTENT_SHIFT).
const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;
/// Highest guest frame number a mapping may target (52-bit guest-physical addresses).
const MAX_GPFN: u64 = (1 << 40) - 1;

/// `HYPERVISOR_memory_op(cmd, arg)`.
pub fn memory_op<B: Backend>(cx: &mut Cx<'_, B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    match cmd & MEMOP_CMD_MASK {
        XENMEM_ADD_TO_PHYSMAP => add_to_physmap(cx, arg),
        XENMEM_MEMORY_MAP => memory_map(cx, arg),
        // A PVH dom0 sees its own map (it has no machine addresses to learn).
        XENMEM_MACHINE_MEMORY_MAP if cx.dom.is_control() => memory_map(cx, arg),
        XENMEM_MACHINE_MEMORY_MAP => Err(Errno::EPERM),
        _ => Err(Errno::ENOSYS),
    }
}

fn add_to_physmap<B: Backend>(cx: &mut Cx<'_, B>, arg: u64) -> Result<Reply, Errno> {
    let req: XenAddToPhysmap = read_arg(cx, arg)?;
    if !cx.is_self(req.domid) {
        return Err(Errno::ESRCH);
    }
    if req.gpfn > MAX_GPFN {
        return Err(Errno::EINVAL);
    }
    match req.space {
        XENMAPSPACE_SHARED_INFO if req.idx == 0 => {
            let frame = super::shared_info::frame(cx.dom).ok_or(Errno::ENOMEM)?;
            cx.dom
                .mem
                .map_overlay(req.gpfn << 12, frame)
                .map_err(|_| Errno::ENOMEM)?;
            cx.dom.p2m_changed();
            Ok(Reply::Value(0))
        }
        XENMAPSPACE_SHARED_INFO => Err(Errno::EINVAL),
        XENMAPSPACE_GRANT_TABLE => {
            // Only v1 is offered, which has no status frames.
            if req.idx & XENMAPIDX_GRANT_TABLE_STATUS != 0 {
                return Err(Errno::EINVAL);
            }
            let frame = super::grant_table::frame(cx, req.idx).ok_or(Errno::EINVAL)?;
            cx.dom
                .mem
                .map_overlay(req.gpfn << 12, frame)
                .map_err(|_| Errno::ENOMEM)?;
            cx.dom.p2m_changed();
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// XENMEM_memory_map: copies up to `nr_entries` e820 entries to the guest's buffer and
/// reports how many were written.
fn memory_map<B: Backend>(cx: &mut Cx<'_, B>, arg: u64) -> Result<Reply, Errno> {
    let mut req: XenMemoryMap = read_arg(cx, arg)?;
    let e820 = cx.dom.e820.lock().clone();
    let n = (req.nr_entries as usize).min(e820.len());
    for (i, &(addr, size, ty)) in e820.iter().take(n).enumerate() {
        let e = E820Entry { addr, size, ty };
        let at = req
            .buffer
            .addr()
            .checked_add(i as u64 * 20)
            .ok_or(Errno::EFAULT)?;
        super::guest_access::write_arg(cx, at, &e)?;
    }
    req.nr_entries = n as u32;
    super::guest_access::write_arg(cx, arg, &req)?;
    Ok(Reply::Value(0))
}
