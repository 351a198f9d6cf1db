//! Event channels (2-level ABI): typed `EVTCHNOP_*` wrappers and a minimal event consumer.
//!
//! # Wrappers
//!
//! Every wrapper returns the raw hypercall result as `i64` (negative = `-errno`, see
//! [`crate::hypercall::describe`]), except that the operations which hand out a port
//! ([`alloc_unbound`], [`bind_interdomain`], [`bind_virq`], [`bind_ipi`]) return **the port**
//! on success instead of 0 (ports are below 2^31, so the sign tells them apart).
//!
//! # Consuming events
//!
//! The pending and mask bitmaps live in shared_info, the selector and the upcall flag in
//! `vcpu_info[0]`: the shared-info page must be mapped first
//! ([`crate::pvclock::map_shared_info`]). [`scan`] consumes events in the order Linux's
//! 2-level handler does, which loses none: clear `evtchn_upcall_pending`, exchange the
//! selector with 0, then for each selected word atomically clear each pending, unmasked bit
//! and count it for its port. An event set after the selector exchange sets the selector and
//! the upcall flag again (and, with a callback vector, interrupts the vCPU), so a vCPU that
//! scans and then halts with `sti; hlt` cannot miss it. Counts are per port
//! ([`count`]); two sends before one scan are one event (pending is a bit, not a counter).
//!
//! Invariant: one vCPU per guest (only `vcpu_info[0]` is used).

use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnClose, EvtchnSend, EvtchnStatus, EvtchnUnmask, EVTCHNOP_ALLOC_UNBOUND,
    EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_IPI, EVTCHNOP_BIND_VCPU, EVTCHNOP_BIND_VIRQ,
    EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS, EVTCHNOP_UNMASK, EVTCHN_2L_NR_CHANNELS,
};
use xen_abi::hvm::hvm_op::{
    XenHvmEvtchnUpcallVector, XenHvmParam, HVMOP_SET_EVTCHN_UPCALL_VECTOR, HVMOP_SET_PARAM,
};
use xen_abi::hvm::params::HVM_PARAM_CALLBACK_IRQ;
use xen_abi::xen::{
    SharedInfo, VcpuInfo, DOMID_SELF, HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_HVM_OP,
};
use xen_abi::DomId;

use crate::{arch, hypercall, pvclock};

/// Number of ports of the 2-level ABI.
pub const NR_PORTS: usize = EVTCHN_2L_NR_CHANNELS as usize;

/// The callback vector [`set_callback_vector`] registers by default (Linux's).
pub const CALLBACK_VECTOR: u8 = 0xf3;

/// Offsets in shared_info (`xen/include/public/xen.h`, x86_64): vCPU 0's upcall flag and
/// selector, and the pending and mask bitmaps.
const UPCALL_PENDING: usize = offset_of!(VcpuInfo, evtchn_upcall_pending);
const PENDING_SEL: usize = offset_of!(VcpuInfo, evtchn_pending_sel);
const EVTCHN_PENDING: usize = offset_of!(SharedInfo, evtchn_pending);
const EVTCHN_MASK: usize = offset_of!(SharedInfo, evtchn_mask);

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the structure `cmd` reads and writes (or be deliberately bad in a
/// test that expects an error).
pub unsafe fn op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall::hypercall2(HYPERVISOR_EVENT_CHANNEL_OP, cmd, arg) }
}

/// Issues `cmd` with `arg` (a plain `#[repr(C)]` argument structure) and returns the result.
fn op_on<T>(cmd: u64, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live, writable structure of the layout `cmd` expects (each caller
    // below passes the matching `xen_abi` struct).
    unsafe { op(cmd, core::ptr::from_mut(arg) as u64) }
}

/// The port on success, else the error.
fn port_or(rc: i64, port: u32) -> i64 {
    if rc == 0 {
        i64::from(port)
    } else {
        rc
    }
}

/// `EVTCHNOP_alloc_unbound(dom, remote_dom)`: a port of `dom` that `remote` may bind.
/// Returns the port or `-errno`.
pub fn alloc_unbound(dom: DomId, remote: DomId) -> i64 {
    let mut a = EvtchnAllocUnbound {
        dom,
        remote_dom: remote,
        port: 0,
    };
    let rc = op_on(EVTCHNOP_ALLOC_UNBOUND, &mut a);
    port_or(rc, a.port)
}

/// `EVTCHNOP_bind_interdomain(remote_dom, remote_port)`: returns the new local port or
/// `-errno`.
pub fn bind_interdomain(remote: DomId, remote_port: u32) -> i64 {
    let mut a = EvtchnBindInterdomain {
        remote_dom: remote,
        remote_port,
        ..Default::default()
    };
    let rc = op_on(EVTCHNOP_BIND_INTERDOMAIN, &mut a);
    port_or(rc, a.local_port)
}

/// `EVTCHNOP_bind_virq(virq, vcpu)`: returns the port or `-errno`.
pub fn bind_virq(virq: u32, vcpu: u32) -> i64 {
    let mut a = EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    let rc = op_on(EVTCHNOP_BIND_VIRQ, &mut a);
    port_or(rc, a.port)
}

/// `EVTCHNOP_bind_ipi(vcpu)`: returns the port or `-errno`.
pub fn bind_ipi(vcpu: u32) -> i64 {
    let mut a = EvtchnBindIpi { vcpu, port: 0 };
    let rc = op_on(EVTCHNOP_BIND_IPI, &mut a);
    port_or(rc, a.port)
}

/// `EVTCHNOP_bind_vcpu(port, vcpu)`.
pub fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
    op_on(EVTCHNOP_BIND_VCPU, &mut EvtchnBindVcpu { port, vcpu })
}

/// `EVTCHNOP_send(port)`.
pub fn send(port: u32) -> i64 {
    op_on(EVTCHNOP_SEND, &mut EvtchnSend { port })
}

/// `EVTCHNOP_close(port)`.
pub fn close(port: u32) -> i64 {
    op_on(EVTCHNOP_CLOSE, &mut EvtchnClose { port })
}

/// `EVTCHNOP_unmask(port)`.
pub fn unmask(port: u32) -> i64 {
    op_on(EVTCHNOP_UNMASK, &mut EvtchnUnmask { port })
}

/// `EVTCHNOP_status(dom, port)`: the filled-in structure, or `-errno`.
pub fn status(dom: DomId, port: u32) -> Result<EvtchnStatus, i64> {
    let mut s = EvtchnStatus {
        dom,
        port,
        ..Default::default()
    };
    match op_on(EVTCHNOP_STATUS, &mut s) {
        0 => Ok(s),
        rc => Err(rc),
    }
}

/// `HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ, type 2 = vector)`: events raise `vector` on
/// vCPU 0 while `evtchn_upcall_pending` is set. Returns the raw result.
pub fn set_callback_vector(vector: u8) -> i64 {
    let mut p = XenHvmParam {
        domid: DOMID_SELF,
        index: HVM_PARAM_CALLBACK_IRQ,
        value: (2 << 56) | u64::from(vector),
        ..Default::default()
    };
    // SAFETY: `p` is a live xen_hvm_param.
    unsafe {
        hypercall::hypercall2(
            HYPERVISOR_HVM_OP,
            HVMOP_SET_PARAM,
            core::ptr::from_mut(&mut p) as u64,
        )
    }
}

/// `HVMOP_set_evtchn_upcall_vector(vcpu, vector)`: upcalls for `vcpu` raise `vector` in its
/// LAPIC (the guest must EOI it) when `evtchn_upcall_pending` goes from 0 to 1, instead of
/// the global callback vector. Returns the raw result.
pub fn set_upcall_vector(vcpu: u32, vector: u8) -> i64 {
    let mut a = XenHvmEvtchnUpcallVector {
        vcpu,
        vector,
        ..Default::default()
    };
    // SAFETY: `a` is a live xen_hvm_evtchn_upcall_vector.
    unsafe {
        hypercall::hypercall2(
            HYPERVISOR_HVM_OP,
            HVMOP_SET_EVTCHN_UPCALL_VECTOR,
            core::ptr::from_mut(&mut a) as u64,
        )
    }
}

/// Events consumed by [`scan`], per port.
static COUNTS: [AtomicU32; NR_PORTS] = [const { AtomicU32::new(0) }; NR_PORTS];

fn shared_u64(off: usize) -> &'static AtomicU64 {
    debug_assert!(pvclock::is_mapped() && off.is_multiple_of(8) && off < 4096);
    // SAFETY: shared_info is mapped at this identity-mapped, page-aligned address for the
    // rest of the run (callers map it first); `off` is an 8-aligned offset inside the page.
    // The hypervisor updates these words with atomic operations too.
    unsafe { &*((pvclock::shared_info_gpa() as usize + off) as *const AtomicU64) }
}

fn upcall_pending() -> &'static AtomicU8 {
    // SAFETY: byte 0 of the mapped shared_info page is vcpu_info[0].evtchn_upcall_pending.
    unsafe { &*((pvclock::shared_info_gpa() as usize + UPCALL_PENDING) as *const AtomicU8) }
}

fn pending_word(word: usize) -> &'static AtomicU64 {
    shared_u64(EVTCHN_PENDING + word * 8)
}

fn mask_word(word: usize) -> &'static AtomicU64 {
    shared_u64(EVTCHN_MASK + word * 8)
}

/// vCPU 0's `evtchn_upcall_pending` flag.
pub fn upcall_flag() -> bool {
    upcall_pending().load(Ordering::SeqCst) != 0
}

/// Clears vCPU 0's `evtchn_pending_sel` (the upcall flag and the pending bits are left alone).
pub fn clear_pending_sel() {
    shared_u64(PENDING_SEL).store(0, Ordering::SeqCst);
}

/// Whether `port`'s pending bit is set (without consuming it).
pub fn is_pending(port: u32) -> bool {
    let p = port as usize % NR_PORTS;
    pending_word(p / 64).load(Ordering::SeqCst) & (1 << (p % 64)) != 0
}

/// Clears `port`'s pending bit; returns whether it was set. Does not touch the selector or
/// the upcall flag (for ports waited on with `SCHEDOP_poll`, which looks at the bit only).
pub fn test_and_clear(port: u32) -> bool {
    let p = port as usize % NR_PORTS;
    let bit = 1u64 << (p % 64);
    pending_word(p / 64).fetch_and(!bit, Ordering::SeqCst) & bit != 0
}

/// Sets (`true`) or clears `port`'s mask bit in shared_info.
pub fn set_masked(port: u32, masked: bool) {
    let p = port as usize % NR_PORTS;
    let bit = 1u64 << (p % 64);
    if masked {
        mask_word(p / 64).fetch_or(bit, Ordering::SeqCst);
    } else {
        mask_word(p / 64).fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Consumes every pending, unmasked event the selector points at, counting each per port
/// (see the module documentation). Returns how many events it consumed.
pub fn scan() -> u32 {
    upcall_pending().store(0, Ordering::SeqCst);
    let mut sel = shared_u64(PENDING_SEL).swap(0, Ordering::SeqCst);
    let mut taken = 0;
    while sel != 0 {
        let word = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        let mut bits =
            pending_word(word).load(Ordering::SeqCst) & !mask_word(word).load(Ordering::SeqCst);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let was = pending_word(word).fetch_and(!(1 << bit), Ordering::SeqCst);
            if was & (1 << bit) != 0 {
                COUNTS[word * 64 + bit].fetch_add(1, Ordering::SeqCst);
                taken += 1;
            }
        }
    }
    taken
}

/// Events counted for `port` so far.
pub fn count(port: u32) -> u32 {
    COUNTS[port as usize % NR_PORTS].load(Ordering::SeqCst)
}

/// Resets `port`'s count to 0 and returns what it was.
pub fn take_count(port: u32) -> u32 {
    COUNTS[port as usize % NR_PORTS].swap(0, Ordering::SeqCst)
}

/// Scans, then halts with `sti; hlt` until `done()` holds after a scan. Interrupts (the
/// callback vector) end each halt; the caller must have registered the callback vector
/// and arranged for a wake-up (a bound `VIRQ_TIMER` with a timer armed, or the event it
/// waits for). Returns with interrupts disabled.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        scan();
        if done() {
            return;
        }
        arch::sti_hlt_cli();
    }
}

/// Sets up what a guest needs to wait for events with `sti; hlt`: maps shared_info (if not
/// yet mapped), registers [`CALLBACK_VECTOR`] and binds `VIRQ_TIMER` on vCPU 0. Returns the
/// timer's port.
pub fn init_with_timer() -> Result<u32, crate::Fail> {
    if !pvclock::is_mapped() {
        let rc = pvclock::map_shared_info();
        if rc != 0 {
            return Err(crate::Fail::new(format_args!(
                "XENMEM_add_to_physmap(shared_info) returned {}",
                hypercall::describe(rc)
            )));
        }
    }
    let rc = set_callback_vector(CALLBACK_VECTOR);
    if rc != 0 {
        return Err(crate::Fail::new(format_args!(
            "HVMOP_set_param(CALLBACK_IRQ, vector {CALLBACK_VECTOR:#x}) returned {}",
            hypercall::describe(rc)
        )));
    }
    let port = bind_virq(xen_abi::xen::VIRQ_TIMER, 0);
    if port < 0 {
        return Err(crate::Fail::new(format_args!(
            "EVTCHNOP_bind_virq(VIRQ_TIMER, vcpu 0) returned {}",
            hypercall::describe(port)
        )));
    }
    Ok(port as u32)
}

/// Xen system time now, or a failure if the pvclock is unreadable.
pub fn now() -> Result<u64, crate::Fail> {
    pvclock::now_ns().ok_or_else(|| {
        crate::Fail::new(format_args!(
            "pvclock unreadable (shared_info not mapped or version stuck odd)"
        ))
    })
}

/// Halts (`sti; hlt`, events scanned between halts) until system time `deadline_ns`, with
/// the one-shot timer armed for it. Needs [`init_with_timer`]. Returns the time on waking.
pub fn sleep_until(deadline_ns: u64) -> Result<u64, crate::Fail> {
    let rc = hypercall::set_timer_op(deadline_ns);
    if rc != 0 {
        return Err(crate::Fail::new(format_args!(
            "set_timer_op({deadline_ns}) returned {}",
            hypercall::describe(rc)
        )));
    }
    loop {
        scan();
        let t = now()?;
        if t >= deadline_ns {
            return Ok(t);
        }
        arch::sti_hlt_cli();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_info_offsets() {
        assert_eq!((UPCALL_PENDING, PENDING_SEL), (0, 8));
        assert_eq!((EVTCHN_PENDING, EVTCHN_MASK), (2048, 2560));
    }

    #[test]
    fn ports_or_errors() {
        assert_eq!(port_or(0, 7), 7);
        assert_eq!(port_or(-22, 7), -22);
    }
}
