//! `xen-abi`: Xen ABI calls a PVH kernel makes at boot, checked for their effects.
//!
//! 1. Grant table v1: `GNTTABOP_query_size` reports 0 frames of a maximum; `set_version(1)`
//!    succeeds and `set_version(2)` is refused; `add_to_physmap(grant_table, 0)` maps a
//!    zeroed frame, after which `query_size` reports 1 frame; a status frame (v2 only) is
//!    refused.
//! 2. `XENMEM_memory_map` returns the same map as `hvm_start_info`.
//! 3. shared_info moves: mapped at GFN A (over a page holding a pattern), then at GFN B;
//!    afterwards A shows the pattern again (the RAM page came back) and B is shared_info.
//! 4. `SCHEDOP_poll` on a *masked* port bound to `VIRQ_TIMER` returns once the timer
//!    fires, although the masked event delivers no upcall (how PV spinlocks wait).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::hypercall::{describe, hypercall2, hypercall3, set_timer_op};
use guest_rt::xen_abi::xen::{
    HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_GRANT_TABLE_OP, HYPERVISOR_MEMORY_OP,
    HYPERVISOR_SCHED_OP,
};
use guest_rt::{ensure, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

const DOMID_SELF: u64 = 0x7ff0;
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMEM_MEMORY_MAP: u64 = 9;
const XENMAPSPACE_SHARED_INFO: u64 = 0;
const XENMAPSPACE_GRANT_TABLE: u64 = 1;
const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;
const GNTTABOP_QUERY_SIZE: u64 = 6;
const GNTTABOP_SET_VERSION: u64 = 8;
const EVTCHNOP_BIND_VIRQ: u64 = 1;
const SCHEDOP_POLL: u64 = 3;
const EINVAL: i64 = -22;

/// Page-aligned scratch pages of the guest's own RAM.
#[repr(C, align(4096))]
struct Pages([[u8; 4096]; 3]);
static mut PAGES: Pages = Pages([[0; 4096]; 3]);

fn page(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!(PAGES.0[i]) as u64 }
}

fn add_to_physmap(space: u64, idx: u64, gfn: u64) -> i64 {
    // struct xen_add_to_physmap { u16 domid, u16 size, u32 space, u64 idx, u64 gpfn }
    let arg = [DOMID_SELF | (space << 32), idx, gfn];
    // SAFETY: `arg` is a valid xen_add_to_physmap; the target pages are the guest's own.
    unsafe {
        hypercall2(
            HYPERVISOR_MEMORY_OP,
            XENMEM_ADD_TO_PHYSMAP,
            arg.as_ptr() as u64,
        )
    }
}

/// (rc, nr_frames, max_nr_frames)
fn query_size() -> (i64, u32, u32) {
    // struct gnttab_query_size { u16 dom, u16 pad, u32 nr_frames, u32 max, i16 status, u16 pad }
    let mut q = [DOMID_SELF as u32, 0, 0, 0];
    // SAFETY: `q` is a writable gnttab_query_size.
    let rc = unsafe {
        hypercall3(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_QUERY_SIZE,
            q.as_mut_ptr() as u64,
            1,
        )
    };
    (rc, q[1], q[2])
}

fn set_version(v: u32) -> i64 {
    let arg = [v];
    // SAFETY: a valid gnttab_set_version.
    unsafe {
        hypercall3(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_SET_VERSION,
            arg.as_ptr() as u64,
            1,
        )
    }
}

fn grant_tables() -> TestResult {
    let (rc, frames, max) = query_size();
    println!("query_size: rc {} frames {frames} max {max}", describe(rc));
    ensure!(
        rc == 0 && frames == 0 && max >= 1,
        "query_size before mapping"
    );
    ensure!(set_version(1) == 0, "set_version(1) refused");
    let rc = set_version(2);
    ensure!(
        rc == EINVAL,
        "set_version(2) gave {}, expected -EINVAL (v1 only)",
        describe(rc)
    );
    let gfn = page(0) >> 12;
    let rc = add_to_physmap(XENMAPSPACE_GRANT_TABLE, 0, gfn);
    ensure!(
        rc == 0,
        "add_to_physmap(grant_table, 0) returned {}",
        describe(rc)
    );
    // SAFETY: the page is mapped (the grant frame now); reading it is harmless.
    let first = unsafe { core::ptr::read_volatile(page(0) as *const u64) };
    ensure!(first == 0, "a fresh grant frame is not zeroed: {first:#x}");
    let (rc, frames, _) = query_size();
    ensure!(
        rc == 0 && frames == 1,
        "query_size after mapping frame 0: {frames} frames"
    );
    let rc = add_to_physmap(
        XENMAPSPACE_GRANT_TABLE,
        XENMAPIDX_GRANT_TABLE_STATUS,
        page(1) >> 12,
    );
    ensure!(
        rc == EINVAL,
        "status frame gave {}, expected -EINVAL",
        describe(rc)
    );
    let rc = add_to_physmap(XENMAPSPACE_GRANT_TABLE, 1 << 20, page(1) >> 12);
    ensure!(
        rc == EINVAL,
        "grant frame beyond the maximum gave {}",
        describe(rc)
    );
    println!("grant table v1: frame 0 mapped at gfn {gfn:#x}");
    Ok(())
}

fn memory_map(si: &StartInfo) -> TestResult {
    let mut entries = [[0u8; 20]; 8];
    // struct xen_memory_map { u32 nr_entries, u32 pad, u64 buffer }
    let mut arg = [8u64, entries.as_mut_ptr() as u64];
    // SAFETY: room for 8 packed e820 entries.
    let rc = unsafe {
        hypercall2(
            HYPERVISOR_MEMORY_OP,
            XENMEM_MEMORY_MAP,
            arg.as_mut_ptr() as u64,
        )
    };
    ensure!(rc == 0, "XENMEM_memory_map returned {}", describe(rc));
    let n = arg[0] as u32 as usize;
    let expected: usize = si.memmap().count();
    ensure!(
        n == expected,
        "memory_map has {n} entries, start_info {expected}"
    );
    for (e, m) in entries.iter().zip(si.memmap()) {
        let addr = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
        let ty = u32::from_le_bytes(e[16..20].try_into().unwrap_or_default());
        ensure!(
            (addr, size, ty) == (m.addr, m.size, m.ty),
            "entry {addr:#x}+{size:#x} type {ty} differs from start_info's"
        );
    }
    println!("memory_map: {n} entries, same as start_info");
    Ok(())
}

fn shared_info_moves() -> TestResult {
    let (a, b) = (page(1), page(2));
    // SAFETY: the guest's own pages, not mapped to anything else yet.
    unsafe { core::ptr::write_volatile(a as *mut u64, 0x5a5a_1234_dead_beef) };
    ensure!(
        add_to_physmap(XENMAPSPACE_SHARED_INFO, 0, a >> 12) == 0,
        "map shared_info at A"
    );
    // SAFETY: shared_info is mapped at A: its first word is vcpu_info[0], not the pattern.
    let seen = unsafe { core::ptr::read_volatile(a as *const u64) };
    ensure!(
        seen != 0x5a5a_1234_dead_beef,
        "shared_info did not replace the page at A"
    );
    ensure!(
        add_to_physmap(XENMAPSPACE_SHARED_INFO, 0, b >> 12) == 0,
        "move shared_info to B"
    );
    // SAFETY: A is RAM again.
    let back = unsafe { core::ptr::read_volatile(a as *const u64) };
    ensure!(
        back == 0x5a5a_1234_dead_beef,
        "after the move A reads {back:#x}, not its RAM"
    );
    println!("shared_info moved from {a:#x} to {b:#x}; the RAM page at A came back");
    Ok(())
}

fn poll_masked_timer() -> TestResult {
    let shared = page(2);
    // Bind VIRQ_TIMER; struct evtchn_bind_virq { virq, vcpu, port }.
    let mut bind = [0u32, 0, 0];
    // SAFETY: a writable evtchn_bind_virq.
    let rc = unsafe {
        hypercall2(
            HYPERVISOR_EVENT_CHANNEL_OP,
            EVTCHNOP_BIND_VIRQ,
            bind.as_mut_ptr() as u64,
        )
    };
    ensure!(rc == 0, "bind_virq(VIRQ_TIMER) returned {}", describe(rc));
    let port = bind[2];
    // Mask it in shared_info.evtchn_mask (offset 2560).
    // SAFETY: shared_info is mapped at `shared` (moved there above).
    let mask = unsafe { &*((shared + 2560 + (port as u64 / 64) * 8) as *const AtomicU64) };
    mask.fetch_or(1 << (port % 64), Ordering::SeqCst);
    let Some(start) = pvclock_now(shared) else {
        guest_rt::fail!("no pvclock")
    };
    ensure!(set_timer_op(start + 10_000_000) == 0, "set_timer_op");
    // struct sched_poll { u64 ports, u32 nr_ports, u32 pad, u64 timeout }
    let ports = [port];
    let arg = [ports.as_ptr() as u64, 1, start + 2_000_000_000];
    // SAFETY: a valid sched_poll with one port.
    let rc = unsafe { hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_POLL, arg.as_ptr() as u64) };
    let Some(end) = pvclock_now(shared) else {
        guest_rt::fail!("no pvclock")
    };
    let waited = end.saturating_sub(start);
    println!(
        "poll on masked port {port}: rc {}, woke after {} us",
        describe(rc),
        waited / 1000
    );
    ensure!(rc == 0, "SCHEDOP_poll returned {}", describe(rc));
    ensure!(
        waited >= 9_900_000,
        "poll returned before the timer ({waited} ns)"
    );
    ensure!(
        waited < 1_500_000_000,
        "poll waited for its 2 s timeout, not the timer ({waited} ns)"
    );
    // SAFETY: as above; evtchn_pending at offset 2048.
    let pending = unsafe { &*((shared + 2048 + (port as u64 / 64) * 8) as *const AtomicU64) };
    ensure!(
        pending.load(Ordering::SeqCst) & (1 << (port % 64)) != 0,
        "timer port not pending"
    );
    // SAFETY: byte 0 of vcpu_info[0].
    let upcall = unsafe { core::ptr::read_volatile(shared as *const u8) };
    ensure!(upcall == 0, "a masked port raised an upcall");
    Ok(())
}

/// System time from vcpu_info[0].time of the shared_info mapped at `shared`.
fn pvclock_now(shared: u64) -> Option<u64> {
    // SAFETY: shared_info is mapped at `shared`; vcpu_time_info sits at offset 32.
    let t = unsafe {
        core::ptr::read_volatile((shared + 32) as *const guest_rt::xen_abi::xen::VcpuTimeInfo)
    };
    if t.version & 1 != 0 || t.tsc_to_system_mul == 0 {
        return None;
    }
    let tsc = guest_rt::arch::rdtsc();
    Some(
        t.system_time
            + pvclock::scale_delta(
                tsc.wrapping_sub(t.tsc_timestamp),
                t.tsc_to_system_mul,
                t.tsc_shift,
            ),
    )
}

fn test_main(si: &StartInfo) -> TestResult {
    grant_tables()?;
    memory_map(si)?;
    shared_info_moves()?;
    poll_masked_timer()?;
    Ok(())
}
