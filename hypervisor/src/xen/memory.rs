//! `memory_op` (12).

use super::guest_access::read_arg;
use super::Reply;
use crate::domain::Domain;
use crate::hvm::{Backend, Vcpu};
use xen_abi::errno::Errno;
use xen_abi::memory::{XenAddToPhysmap, XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP};
use xen_abi::xen::DOMID_SELF;

/// The low bits of `cmd` name the sub-op; the rest is a continuation index (MEMOP_EXTENT_SHIFT).
const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;
/// Highest guest frame number a mapping may target (52-bit guest-physical addresses).
const MAX_GPFN: u64 = (1 << 40) - 1;

/// `HYPERVISOR_memory_op(cmd, arg)`.
pub fn memory_op<B: Backend>(dom: &mut Domain<B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    match cmd & MEMOP_CMD_MASK {
        XENMEM_ADD_TO_PHYSMAP => add_to_physmap(dom, arg),
        _ => Err(Errno::ENOSYS),
    }
}

fn add_to_physmap<B: Backend>(dom: &mut Domain<B>, arg: u64) -> Result<Reply, Errno> {
    let req: XenAddToPhysmap = read_arg(dom, arg)?;
    if req.domid != DOMID_SELF && req.domid != dom.id {
        return Err(Errno::ESRCH);
    }
    if req.gpfn > MAX_GPFN {
        return Err(Errno::EINVAL);
    }
    match req.space {
        XENMAPSPACE_SHARED_INFO if req.idx == 0 => {
            let frame = super::shared_info::frame(dom).ok_or(Errno::ENOMEM)?;
            dom.mem
                .map_overlay(req.gpfn << 12, frame)
                .map_err(|_| Errno::ENOMEM)?;
            dom.vcpu.flush_nested_tlb();
            Ok(Reply::Value(0))
        }
        XENMAPSPACE_SHARED_INFO => Err(Errno::EINVAL),
        _ => Err(Errno::ENOSYS),
    }
}
