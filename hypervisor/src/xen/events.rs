//! Event channels in the hypervisor: the guest-visible bits (2-level: in shared_info and
//! vcpu_info; FIFO: the guest's event-array pages and per-vCPU control blocks, reached
//! through the checked guest-memory accessors), `event_channel_op` (32), and the event
//! sources inside the hypervisor (timers, console).
//!
//! The state machine itself is the host-tested `evtchn` crate; this module gives it the
//! guest's memory ([`GuestBits`]) and decodes the hypercall arguments. Delivery to the
//! vCPU (injecting the callback vector while `evtchn_upcall_pending` is set) happens in
//! the run loop, which also wakes a vCPU blocked in HLT or `SCHEDOP_block`.
#![allow(unsafe_code)]

use super::guest_access::{read_arg, write_arg};
use super::{Cx, Reply};
use crate::domain::memory::GuestMemory;
use crate::domain::{DomState, Domain};
use crate::hvm::Backend;
use crate::mm::phys;
use crate::schedule::Hv;
use crate::sync::Guard;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};
use evtchn::{Caller, EventChannels, Kick, Port, SendOutcome, SharedBits};
use xen_abi::errno::Errno;
use xen_abi::event_channel::*;
use xen_abi::xen::{SharedInfo, VcpuInfo, VIRQ_TIMER};

/// The 2-level bits of one domain: `evtchn_pending`/`evtchn_mask` in its shared_info
/// frame, `evtchn_pending_sel`/`evtchn_upcall_pending` in each vCPU's vcpu_info.
pub struct GuestBits<'a, F: pagetable::Format> {
    shared_info: Option<u64>,
    vcpu_info: &'a [Option<u64>],
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

    /// Atomically ORs `bits` into the 8 bytes at `off` (0 or 8) of vCPU `vcpu`'s vcpu_info
    /// (a single locked OR, never a retry loop on guest-writable memory); returns whether
    /// any of `bits` was already set. A vcpu_info that does not exist (or is unmapped or
    /// misaligned) is a sink that reports "already set", so no kick follows.
    fn vcpu_info_or(&self, vcpu: u32, off: usize, bits: u64) -> bool {
        if let Some(Some(gpa)) = self.vcpu_info.get(vcpu as usize) {
            return gpa
                .checked_add(off as u64)
                .and_then(|at| self.mem.fetch_or_u64(at, bits).ok())
                .is_none_or(|old| old & bits != 0);
        }
        let (Some(frame), Some(slot)) = (self.shared_info, super::shared_info::legacy_slot(vcpu))
        else {
            return true;
        };
        // SAFETY: as in `word`: an 8-aligned u64 inside the shared_info frame (vcpu_info
        // slots are 64 bytes and start 8-aligned; `off` is 0 or 8).
        let word = unsafe { &*phys::to_virt(frame + (slot + off) as u64).cast::<AtomicU64>() };
        word.fetch_or(bits, Ordering::SeqCst) & bits != 0
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
    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool {
        self.vcpu_info_or(
            vcpu,
            offset_of!(VcpuInfo, evtchn_pending_sel),
            1 << (word % 64),
        )
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool {
        // Bit 0 of the `evtchn_upcall_pending` byte, as Xen's test_and_set_bit.
        self.vcpu_info_or(vcpu, 0, 1)
    }

    // FIFO words: ordinary guest RAM, reached through the checked accessor on every use
    // (re-translated each time, so a page the guest gave away is simply absent).
    fn frame_ok(&self, gfn: u64) -> bool {
        gfn.checked_mul(4096)
            .is_some_and(|gpa| self.mem.ram_frame(gpa).is_some())
    }
    fn load_u32(&self, gpa: u64) -> Option<u32> {
        self.mem
            .with_atomic_u32(gpa, |w| w.load(Ordering::SeqCst))
            .ok()
    }
    fn fetch_or_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.mem
            .with_atomic_u32(gpa, |w| w.fetch_or(bits, Ordering::SeqCst))
            .ok()
    }
    fn fetch_and_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.mem
            .with_atomic_u32(gpa, |w| w.fetch_and(bits, Ordering::SeqCst))
            .ok()
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        self.mem
            .with_atomic_u32(gpa, |w| {
                match w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                }
            })
            .ok()
    }
    fn store_u32(&mut self, gpa: u64, v: u32) -> bool {
        self.mem
            .with_atomic_u32(gpa, |w| w.store(v, Ordering::SeqCst))
            .is_ok()
    }
}

/// Runs `f` on a domain's locked event-channel table and the bits it operates on.
pub fn with_table<B: Backend, R>(
    dom: &Domain<B>,
    f: impl FnOnce(&mut EventChannels, &mut GuestBits<'_, B::P2m>) -> R,
) -> R {
    let mut st = dom.st.lock();
    with_state(dom, &mut st, f)
}

/// [`with_table`] on an already locked domain.
pub fn with_state<B: Backend, R>(
    dom: &Domain<B>,
    st: &mut DomState,
    f: impl FnOnce(&mut EventChannels, &mut GuestBits<'_, B::P2m>) -> R,
) -> R {
    let mut bits = GuestBits {
        shared_info: st.shared_info,
        vcpu_info: &st.vcpu_info,
        mem: &dom.mem,
    };
    f(&mut st.evtchn, &mut bits)
}

/// Locks two different domains in the documented order (ascending domid); the guards
/// come back in argument order.
pub fn lock_pair<'a, B: Backend>(
    a: &'a Domain<B>,
    b: &'a Domain<B>,
) -> (Guard<'a, DomState>, Guard<'a, DomState>) {
    debug_assert_ne!(a.id, b.id);
    if a.id < b.id {
        let ga = a.st.lock();
        (ga, b.st.lock_nested())
    } else {
        let gb = b.st.lock();
        (a.st.lock_nested(), gb)
    }
}

/// SCHEDOP_poll on the calling vCPU: true if one of `ports` is already pending (return
/// at once); otherwise the vCPU is registered as a poller and must block until the table
/// deregisters it (a polled port became pending, masked or not) or the timeout passes.
pub fn poll<B: Backend>(cx: &Cx<'_, B>, ports: &[Port]) -> Result<bool, Errno> {
    let vcpu = cx.vcpu.id;
    with_table(cx.dom, |table, bits| {
        Ok(matches!(
            table.poll(vcpu, ports, bits)?,
            evtchn::PollOutcome::Ready
        ))
    })
}

/// vCPU `vcpu`'s timer expired: VIRQ_TIMER (and fresh time for the guest).
pub fn timer_fired<B: Backend>(hv: &Hv<B>, dom: &Domain<B>, vcpu: u32) {
    {
        let st = dom.st.lock();
        super::shared_info::update_time(&dom.mem, &st, vcpu);
    }
    raise_virq(hv, dom, VIRQ_TIMER, vcpu);
}

/// Raises a VIRQ (global ones go to the port bound on vCPU 0). Unbound VIRQs are dropped.
pub fn raise_virq<B: Backend>(hv: &Hv<B>, dom: &Domain<B>, virq: u32, vcpu: u32) {
    let kick = with_table(dom, |table, bits| table.raise_virq(virq, vcpu, bits));
    hv.kick(dom, kick);
}

/// Sends an interdomain notification that `from` (port `from_port`) addressed to `port` of
/// domain `to`, if that domain still exists and the channel is still connected.
fn deliver_remote<B: Backend>(hv: &Hv<B>, from: &Domain<B>, from_port: Port, to: u16, port: Port) {
    let Some(rd) = hv.domains.get(to) else {
        return;
    };
    let kick = with_table(&rd, |table, bits| {
        table.deliver_interdomain(port, from.id, from_port, bits)
    });
    hv.kick(&rd, kick);
}

/// Closes `port` of `dom`, locking the peer domain first when the port is connected to
/// another domain (Xen's `evtchn_close`).
pub fn close_port<B: Backend>(hv: &Hv<B>, dom: &Domain<B>, port: Port) -> Result<(), Errno> {
    let peer = dom.st.lock().evtchn.peer_of(port);
    match peer
        .filter(|&p| p != dom.id)
        .and_then(|p| hv.domains.get(p))
    {
        Some(rd) => {
            let (mut ls, mut rs) = lock_pair(dom, &rd);
            let rtable = &mut rs.evtchn;
            with_state(dom, &mut ls, |table, bits| {
                evtchn::close(table, port, Some(rtable), bits)
            })
        }
        None => with_table(dom, |table, bits| evtchn::close(table, port, None, bits)),
    }
}

/// Closes every open port of `dom` (EVTCHNOP_reset, domain teardown): peers' ends become
/// unbound.
pub fn close_all<B: Backend>(hv: &Hv<B>, dom: &Domain<B>) {
    let ports: alloc::vec::Vec<Port> = dom.st.lock().evtchn.open_ports().map(|(p, _)| p).collect();
    for p in ports {
        let _ = close_port(hv, dom, p);
    }
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn event_channel_op<B: Backend>(
    cx: &mut Cx<'_, B>,
    cmd: u64,
    arg: u64,
) -> Result<Reply, Errno> {
    if let Some(e) = evtchn::unsupported_op(cmd) {
        return Err(e);
    }
    let caller = Caller::new(cx.dom.id, cx.dom.is_control());
    let hv = cx.hv;
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut a: EvtchnAllocUnbound = read_arg(cx, arg)?;
            let d = cx.target(a.dom)?;
            a.port = with_table(&d, |table, bits| {
                table.alloc_unbound(caller, a.remote_dom, bits)
            })?;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut a: EvtchnBindInterdomain = read_arg(cx, arg)?;
            let (port, kick) = if cx.is_self(a.remote_dom) {
                with_table(cx.dom, |table, bits| {
                    evtchn::bind_interdomain(table, None, a.remote_port, bits)
                })?
            } else {
                let rd = hv
                    .domains
                    .get(cx.resolve(a.remote_dom))
                    .ok_or(Errno::ESRCH)?;
                let (mut ls, mut rs) = lock_pair(cx.dom, &rd);
                let rtable = &mut rs.evtchn;
                with_state(cx.dom, &mut ls, |table, bits| {
                    evtchn::bind_interdomain(table, Some(rtable), a.remote_port, bits)
                })?
            };
            hv.kick(cx.dom, kick);
            a.local_port = port;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut a: EvtchnBindVirq = read_arg(cx, arg)?;
            a.port = with_table(cx.dom, |table, bits| table.bind_virq(a.virq, a.vcpu, bits))?;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_BIND_PIRQ => {
            let a: EvtchnBindPirq = read_arg(cx, arg)?;
            cx.dom.st.lock().evtchn.bind_pirq(a.pirq, a.flags)?;
        }
        EVTCHNOP_BIND_IPI => {
            let mut a: EvtchnBindIpi = read_arg(cx, arg)?;
            a.port = with_table(cx.dom, |table, bits| table.bind_ipi(a.vcpu, bits))?;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_CLOSE => {
            let a: EvtchnClose = read_arg(cx, arg)?;
            close_port(hv, cx.dom, a.port)?;
        }
        EVTCHNOP_SEND => {
            let a: EvtchnSend = read_arg(cx, arg)?;
            match with_table(cx.dom, |table, bits| table.send(a.port, bits))? {
                SendOutcome::Local(kick) => hv.kick(cx.dom, kick),
                SendOutcome::Dropped => {}
                SendOutcome::Remote {
                    dom,
                    port,
                    from_port,
                } => deliver_remote(hv, cx.dom, from_port, dom, port),
            }
        }
        EVTCHNOP_STATUS => {
            let mut a: EvtchnStatus = read_arg(cx, arg)?;
            let d = cx.target(a.dom)?;
            let port = a.port;
            d.st.lock().evtchn.status(caller, port, &mut a)?;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_BIND_VCPU => {
            let a: EvtchnBindVcpu = read_arg(cx, arg)?;
            cx.dom.st.lock().evtchn.bind_vcpu(a.port, a.vcpu)?;
        }
        EVTCHNOP_UNMASK => {
            let a: EvtchnUnmask = read_arg(cx, arg)?;
            let kick: Kick = with_table(cx.dom, |table, bits| table.unmask(a.port, bits))?;
            hv.kick(cx.dom, kick);
        }
        EVTCHNOP_RESET => {
            let a: EvtchnReset = read_arg(cx, arg)?;
            let d = cx.target(a.dom)?;
            close_all(hv, &d);
            // A FIFO domain goes back to 2-level (Xen's evtchn_reset).
            d.st.lock().evtchn.reset_abi()?;
        }
        EVTCHNOP_INIT_CONTROL => {
            let mut a: EvtchnInitControl = read_arg(cx, arg)?;
            a.link_bits = with_table(cx.dom, |table, bits| {
                table.init_control(a.vcpu, a.control_gfn, a.offset, bits)
            })?;
            write_arg(cx, arg, &a)?;
        }
        EVTCHNOP_EXPAND_ARRAY => {
            let a: EvtchnExpandArray = read_arg(cx, arg)?;
            let kick = with_table(cx.dom, |table, bits| table.expand_array(a.array_gfn, bits))?;
            hv.kick(cx.dom, kick);
        }
        EVTCHNOP_SET_PRIORITY => {
            let a: EvtchnSetPriority = read_arg(cx, arg)?;
            cx.dom.st.lock().evtchn.set_priority(a.port, a.priority)?;
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(Reply::Value(0))
}
