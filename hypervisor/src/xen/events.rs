//! Event channels in the hypervisor: the guest-visible bits (in shared_info and
//! vcpu_info), `event_channel_op` (32), and the event sources inside the hypervisor
//! (timers, console).
//!
//! The state machine itself is the host-tested `evtchn` crate; this module gives it the
//! guest's memory ([`GuestBits`]) and decodes the hypercall arguments. Delivery to the
//! vCPU (injecting the callback vector while `evtchn_upcall_pending` is set) happens in
//! the run loop, which also wakes a vCPU blocked in HLT or `SCHEDOP_block`.

use super::guest_access::{read_arg, write_arg};
use super::Reply;
use crate::domain::memory::GuestMemory;
use crate::domain::Domain;
use crate::hvm::Backend;
use crate::mm::phys;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};
use evtchn::{Caller, EventChannels, Port, SendOutcome, SharedBits};
use xen_abi::errno::Errno;
use xen_abi::event_channel::*;
use xen_abi::xen::{SharedInfo, VcpuInfo, VIRQ_TIMER};

/// The 2-level bits of one domain: `evtchn_pending`/`evtchn_mask` in its shared_info
/// frame, `evtchn_pending_sel`/`evtchn_upcall_pending` in vCPU 0's vcpu_info.
pub struct GuestBits<'a, F: pagetable::Format> {
    shared_info: Option<u64>,
    vcpu_info_gpa: Option<u64>,
    mem: &'a GuestMemory<F>,
}

impl<'a, F: pagetable::Format> GuestBits<'a, F> {
    fn word(&self, array_off: usize, port: Port) -> Option<&AtomicU64> {
        let frame = self.shared_info?;
        let off = array_off + (port as usize / 64) * 8;
        if off + 8 > 4096 {
            return None;
        }
        // SAFETY: the shared_info frame is a hypervisor-owned page mapped in the direct
        // map for the domain's life; `off` is 8-aligned and inside it, and AtomicU64 has
        // the layout of u64, so the guest's own locked bit operations and ours are atomic
        // with respect to each other.
        Some(unsafe { &*phys::to_virt(frame + off as u64).cast::<AtomicU64>() })
    }

    fn vcpu_info_rmw(&self, off: usize, f: impl Fn(&mut [u8; 8]) -> bool) -> bool {
        let mut v = [0u8; 8];
        match (self.vcpu_info_gpa, self.shared_info) {
            (Some(gpa), _) => {
                if self.mem.read(gpa + off as u64, &mut v).is_err() {
                    return true; // unmapped vcpu_info: a sink (no kick requested)
                }
                let was = f(&mut v);
                let _ = self.mem.write(gpa + off as u64, &v);
                was
            }
            (None, Some(frame)) => {
                let at = frame + (offset_of!(SharedInfo, vcpu_info) + off) as u64;
                // SAFETY: as in `word`: an 8-aligned u64 inside the shared_info frame
                // (vcpu_info[0] lies at its start and `off` is 0 or 8).
                let word = unsafe { &*phys::to_virt(at & !7).cast::<AtomicU64>() };
                let shift = (at & 7) * 8;
                let mut cur = word.load(Ordering::SeqCst);
                loop {
                    let mut bytes = (cur >> shift).to_le_bytes();
                    let was = f(&mut bytes);
                    let new = (cur & !(u64::MAX.checked_shl(shift as u32).unwrap_or(0)))
                        | (u64::from_le_bytes(bytes) << shift);
                    match word.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => return was,
                        Err(actual) => cur = actual,
                    }
                }
            }
            (None, None) => true,
        }
    }
}

const PENDING: usize = offset_of!(SharedInfo, evtchn_pending);
const MASK: usize = offset_of!(SharedInfo, evtchn_mask);

impl<F: pagetable::Format> SharedBits for GuestBits<'_, F> {
    fn test_and_set_pending(&mut self, port: Port) -> bool {
        self.word(PENDING, port).is_none_or(|w| {
            w.fetch_or(1 << (port % 64), Ordering::SeqCst) & (1 << (port % 64)) != 0
        })
    }
    fn clear_pending(&mut self, port: Port) {
        if let Some(w) = self.word(PENDING, port) {
            w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
        }
    }
    fn is_pending(&self, port: Port) -> bool {
        self.word(PENDING, port)
            .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (port % 64)) != 0)
    }
    fn is_masked(&self, port: Port) -> bool {
        self.word(MASK, port)
            .is_none_or(|w| w.load(Ordering::SeqCst) & (1 << (port % 64)) != 0)
    }
    fn test_and_clear_mask(&mut self, port: Port) -> bool {
        self.word(MASK, port).is_some_and(|w| {
            w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst) & (1 << (port % 64)) != 0
        })
    }
    fn test_and_set_pending_sel(&mut self, _vcpu: u32, word: u32) -> bool {
        self.vcpu_info_rmw(offset_of!(VcpuInfo, evtchn_pending_sel), |b| {
            let mut v = u64::from_le_bytes(*b);
            let was = v & (1 << word) != 0;
            v |= 1 << word;
            *b = v.to_le_bytes();
            was
        })
    }
    fn test_and_set_upcall_pending(&mut self, _vcpu: u32) -> bool {
        self.vcpu_info_rmw(0, |b| {
            let was = b[0] != 0;
            b[0] = 1;
            was
        })
    }
}

/// Splits a domain into its event-channel table and the bits it operates on.
fn parts<B: Backend>(dom: &mut Domain<B>) -> (&mut EventChannels, GuestBits<'_, B::P2m>) {
    let bits = GuestBits {
        shared_info: dom.shared_info,
        vcpu_info_gpa: dom.xen_vcpu.vcpu_info_gpa,
        mem: &dom.mem,
    };
    (&mut dom.evtchn, bits)
}

/// SCHEDOP_poll on vCPU 0: true if one of `ports` is already pending (return at once);
/// otherwise vCPU 0 is registered as a poller and must block until the table
/// deregisters it (a polled port became pending, masked or not) or the timeout passes.
pub fn poll<B: Backend>(dom: &mut Domain<B>, ports: &[Port]) -> Result<bool, Errno> {
    let (table, bits) = parts(dom);
    Ok(matches!(
        table.poll(0, ports, &bits)?,
        evtchn::PollOutcome::Ready
    ))
}

/// A vCPU's timer expired: VIRQ_TIMER (and fresh time for the guest).
pub fn timer_fired<B: Backend>(dom: &mut Domain<B>) {
    super::shared_info::update_time(dom);
    raise_virq(dom, VIRQ_TIMER);
}

/// Raises a VIRQ on vCPU 0 (global VIRQs are bound there). Unbound VIRQs are dropped.
pub fn raise_virq<B: Backend>(dom: &mut Domain<B>, virq: u32) {
    let (table, mut bits) = parts(dom);
    let _kick = table.raise_virq(virq, 0, &mut bits);
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn event_channel_op<B: Backend>(
    dom: &mut Domain<B>,
    cmd: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    if let Some(e) = evtchn::unsupported_op(cmd) {
        return Err(e);
    }
    let caller = Caller::new(dom.id, dom.privileged);
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut a: EvtchnAllocUnbound = read_arg(dom, arg)?;
            super::require_self(dom, a.dom)?;
            a.port = dom
                .evtchn
                .alloc_unbound(caller, caller.resolve(a.remote_dom))?;
            write_arg(dom, arg, &a)?;
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut a: EvtchnBindInterdomain = read_arg(dom, arg)?;
            // Only loopback channels exist while a domain is alone.
            if !super::is_self(dom, a.remote_dom) {
                return Err(Errno::ESRCH);
            }
            let (table, mut bits) = parts(dom);
            let (port, _kick) = evtchn::bind_interdomain(table, None, a.remote_port, &mut bits)?;
            a.local_port = port;
            write_arg(dom, arg, &a)?;
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut a: EvtchnBindVirq = read_arg(dom, arg)?;
            a.port = dom.evtchn.bind_virq(a.virq, a.vcpu)?;
            write_arg(dom, arg, &a)?;
        }
        EVTCHNOP_BIND_PIRQ => {
            let a: EvtchnBindPirq = read_arg(dom, arg)?;
            dom.evtchn.bind_pirq(a.pirq, a.flags)?;
        }
        EVTCHNOP_BIND_IPI => {
            let mut a: EvtchnBindIpi = read_arg(dom, arg)?;
            a.port = dom.evtchn.bind_ipi(a.vcpu)?;
            write_arg(dom, arg, &a)?;
        }
        EVTCHNOP_CLOSE => {
            let a: EvtchnClose = read_arg(dom, arg)?;
            let (table, mut bits) = parts(dom);
            evtchn::close(table, a.port, None, &mut bits)?;
        }
        EVTCHNOP_SEND => {
            let a: EvtchnSend = read_arg(dom, arg)?;
            let (table, mut bits) = parts(dom);
            match table.send(a.port, &mut bits)? {
                SendOutcome::Local(_) | SendOutcome::Dropped => {}
                // No other domain exists yet to receive it.
                SendOutcome::Remote { .. } => {}
            }
        }
        EVTCHNOP_STATUS => {
            let mut a: EvtchnStatus = read_arg(dom, arg)?;
            super::require_self(dom, a.dom)?;
            let port = a.port;
            dom.evtchn.status(caller, port, &mut a)?;
            write_arg(dom, arg, &a)?;
        }
        EVTCHNOP_BIND_VCPU => {
            let a: EvtchnBindVcpu = read_arg(dom, arg)?;
            dom.evtchn.bind_vcpu(a.port, a.vcpu)?;
        }
        EVTCHNOP_UNMASK => {
            let a: EvtchnUnmask = read_arg(dom, arg)?;
            let (table, mut bits) = parts(dom);
            table.unmask(a.port, &mut bits)?;
        }
        EVTCHNOP_RESET => {
            let a: EvtchnReset = read_arg(dom, arg)?;
            super::require_self(dom, a.dom)?;
            let ports: alloc::vec::Vec<Port> = dom.evtchn.open_ports().map(|(p, _)| p).collect();
            for p in ports {
                let (table, mut bits) = parts(dom);
                let _ = evtchn::close(table, p, None, &mut bits);
            }
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(Reply::Value(0))
}
