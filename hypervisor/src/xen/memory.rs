//! `memory_op` (12).

use super::guest_access::read_arg;
use super::Cx;
use super::Reply;
use crate::domain::memory::{GuestMemory, CHUNK};
use crate::domain::Domain;
use crate::hvm::{Backend, Vcpu as _};
use crate::mm::frame::FRAME_SIZE;
use alloc::sync::Arc;
use arrayvec::ArrayVec;
use xen_abi::errno::Errno;
use xen_abi::memory::{
    xenmemf_get_address_bits, xenmemf_get_node, E820Entry, XenAddToPhysmap, XenMemoryDomain,
    XenMemoryMap, XenMemoryReservation, MEMOP_CMD_MASK, MEMOP_EXTENT_SHIFT,
    XENMAPIDX_GRANT_TABLE_STATUS, XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_SHARED_INFO,
    XENMEMF_EXACT_NODE_REQUEST, XENMEMF_POPULATE_ON_DEMAND, XENMEMF_VNODE, XENMEM_ADD_TO_PHYSMAP,
    XENMEM_CURRENT_RESERVATION, XENMEM_DECREASE_RESERVATION, XENMEM_INCREASE_RESERVATION,
    XENMEM_MACHINE_MEMORY_MAP, XENMEM_MAXIMUM_GPFN, XENMEM_MAXIMUM_RESERVATION, XENMEM_MEMORY_MAP,
    XENMEM_POPULATE_PHYSMAP,
};

/// Highest guest frame number a mapping may target (52-bit guest-physical addresses).
const MAX_GPFN: u64 = (1 << 40) - 1;

/// `HYPERVISOR_memory_op(cmd, arg)`.
pub fn memory_op<B: Backend>(cx: &mut Cx<'_, B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    let op = cmd & MEMOP_CMD_MASK;
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    match op {
        // For an auto-translated (PVH) domain, increase_reservation populates as
        // populate_physmap does (the list holds GFNs).
        XENMEM_INCREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP | XENMEM_DECREASE_RESERVATION => {
            reservation(cx, op, start, arg)
        }
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION | XENMEM_MAXIMUM_GPFN => {
            reservation_query(cx, op, start, arg)
        }
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

/// Largest extent order a domU may use (Xen's `CONFIG_DOMU_MAX_ORDER` default, 2 MiB).
const DOMU_MAX_ORDER: u32 = 9;
/// Largest extent order the control domain may use (Xen: `CONFIG_PAGEALLOC_MAX_ORDER`,
/// which is also x86's `MAX_ORDER`).
const CTLDOM_MAX_ORDER: u32 = 20;
/// Pages one step of a reservation op handles before it continues (the guest re-executes
/// the hypercall with the start extent in `cmd`, as Xen's continuations do).
const PAGES_PER_STEP: u64 = 512;
/// Xen's `MAX_NUMNODES` (a node hint at or above it is refused for the control domain).
const MAX_NUMNODES: u32 = 64;

/// Largest extent order domain `d` may use (Xen's `max_order`).
fn max_order<B: Backend>(d: &Domain<B>) -> u32 {
    if d.is_control() {
        CTLDOM_MAX_ORDER
    } else {
        DOMU_MAX_ORDER
    }
}

/// The domain's maximum in pages (Xen's `max_pages`): its maximum memory rounded up to
/// 2 MiB, as RAM is built in 2 MiB chunks.
fn max_pages<B: Backend>(d: &Domain<B>) -> u64 {
    d.max_mem.div_ceil(CHUNK) * (CHUNK / FRAME_SIZE)
}

/// The three reservation ops. As Xen does, every refusal returns the number of extents
/// done so far (`start`, the continuation index in `cmd`), never an errno: a bad
/// reservation structure, too many extents, a domain that does not exist or may not be
/// changed, bad flags, an extent order above the caller's limit. The loop stops at the
/// first extent that fails (unreadable list entry, a page that is not the domain's RAM,
/// an occupied or misaligned GFN, the domain's maximum, no free memory) and returns the
/// count done.
fn reservation<B: Backend>(
    cx: &mut Cx<'_, B>,
    op: u64,
    start: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    let Ok(r) = read_arg::<XenMemoryReservation, B>(cx, arg) else {
        return Ok(Reply::Value(start));
    };
    let nr = r.nr_extents;
    if nr > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= nr {
        return Ok(Reply::Value(start));
    }
    let Some(d) = lookup(cx, r.domid) else {
        return Ok(Reply::Value(start));
    };
    // construct_memop_from_reservation: address width, node.
    let bits = xenmemf_get_address_bits(r.mem_flags);
    if bits != 0 && bits <= 12 {
        return Ok(Reply::Value(start));
    }
    let limit = if bits == 0 || bits >= 64 {
        u64::MAX
    } else {
        1u64 << bits
    };
    let node = xenmemf_get_node(r.mem_flags);
    let mut no_node = false;
    if r.mem_flags & XENMEMF_VNODE == 0 && node != 0xff {
        if cx.dom.is_control() {
            if node >= MAX_NUMNODES {
                return Ok(Reply::Value(start));
            }
            // There is one node: an exact request for another cannot be met.
            no_node = r.mem_flags & XENMEMF_EXACT_NODE_REQUEST != 0 && node != 0;
        } else if r.mem_flags & XENMEMF_EXACT_NODE_REQUEST != 0 {
            return Ok(Reply::Value(start));
        }
    }
    // XSM_TARGET: only the control domain changes another domain.
    if !Arc::ptr_eq(&d, cx.dom) && !cx.dom.is_control() {
        return Ok(Reply::Value(start));
    }
    let order = r.extent_order;
    let pod = op == XENMEM_POPULATE_PHYSMAP && r.mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0;
    let limit_order = if pod {
        X86_MAX_ORDER
    } else {
        max_order(cx.dom)
    };
    if order > limit_order {
        return Ok(Reply::Value(start));
    }
    if pod {
        // Populate-on-demand is not offered (and never on oneself, as in Xen).
        return Ok(Reply::Value(start));
    }
    let list = r.extent_start.addr();
    let mut i = start;
    let mut pages = 0u64;
    while i < nr {
        if i != start && pages >= PAGES_PER_STEP {
            let regs = cx.v.hw.regs();
            regs.rdi = op | (i << MEMOP_EXTENT_SHIFT);
            return Ok(Reply::Again);
        }
        let Some(at) = i.checked_mul(8).and_then(|o| list.checked_add(o)) else {
            break;
        };
        let Ok(gfn) = read_arg::<u64, B>(cx, at) else {
            break;
        };
        let ok = if op == XENMEM_DECREASE_RESERVATION {
            decrease_extent(&d, gfn, order)
        } else {
            !no_node
                && d.mem
                    .populate_extent(gfn, order, max_pages(&d), limit)
                    .is_ok()
        };
        if !ok {
            break;
        }
        pages += 1u64 << order;
        i += 1;
    }
    Ok(Reply::Value(i))
}

/// Xen's `MAX_ORDER` on x86 (the populate-on-demand limit).
const X86_MAX_ORDER: u32 = 20;

/// Takes the `2^order` pages from `gfn` out of `d` (Xen's `guest_remove_page` on each):
/// stops at the first that is not the domain's RAM, keeping those removed before it. Frames
/// go back to the free pool only after the domain's vCPUs are told to flush their nested
/// TLBs (with one physical CPU, none of them is in guest mode while this runs).
fn decrease_extent<B: Backend>(d: &Domain<B>, gfn: u64, order: u32) -> bool {
    let count = 1u64 << order;
    let mut freed: ArrayVec<u64, 64> = ArrayVec::new();
    let mut ok = true;
    for j in 0..count {
        let removed = gfn.checked_add(j).map(|g| d.mem.remove_page(g));
        match removed {
            Some(Ok(host)) => freed.push(host),
            _ => {
                ok = false;
                break;
            }
        }
        if freed.is_full() {
            d.p2m_changed();
            GuestMemory::<B::P2m>::release(&freed);
            freed.clear();
        }
    }
    if !freed.is_empty() {
        d.p2m_changed();
        GuestMemory::<B::P2m>::release(&freed);
    }
    ok
}

/// The domain `domid` names (DOMID_SELF or an id), if it exists.
fn lookup<B: Backend>(cx: &Cx<'_, B>, domid: u16) -> Option<Arc<Domain<B>>> {
    if cx.is_self(domid) {
        return Some(cx.dom.clone());
    }
    cx.hv.domains.get(cx.resolve(domid))
}

/// `XENMEM_current_reservation`, `XENMEM_maximum_reservation`, `XENMEM_maximum_gpfn`:
/// `-EINVAL` in a continuation, `-EFAULT` for an unreadable domid, `-ESRCH`, `-EPERM`
/// (another domain, unprivileged) as Xen.
fn reservation_query<B: Backend>(
    cx: &mut Cx<'_, B>,
    op: u64,
    start: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    if start != 0 {
        return Err(Errno::EINVAL);
    }
    let q: XenMemoryDomain = read_arg(cx, arg)?;
    let d = cx.target(q.domid)?;
    let v = match op {
        XENMEM_CURRENT_RESERVATION => d.mem.host_frames(),
        XENMEM_MAXIMUM_RESERVATION => max_pages(&d),
        _ => d.mem.max_mapped_gfn(),
    };
    Ok(Reply::Value(v))
}
