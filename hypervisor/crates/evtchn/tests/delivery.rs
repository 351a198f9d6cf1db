//! 2-level delivery (Xen's `evtchn_2l_set_pending`, `evtchn_2l_unmask`,
//! `evtchn_check_pollers`) and `SCHEDOP_poll` (`do_poll`).

use evtchn::{Config, Errno, EventChannels, Kick, PollOutcome, SharedBits, VcpuMask, VecBits};
use xen_abi::xen::*;

fn table(vcpus: u32) -> (EventChannels, VecBits) {
    (
        EventChannels::new(1, Config::new(vcpus)).unwrap(),
        VecBits::new(vcpus),
    )
}

fn only(v: u32) -> VcpuMask {
    let mut m = VcpuMask::EMPTY;
    m.insert(v);
    m
}

#[test]
fn set_pending_propagates_selector_and_upcall_exactly_once() {
    let (mut t, mut b) = table(2);
    // Fill to a port in word 1 so the selector bit is not bit 0.
    let mut port = 0;
    while port < 70 {
        port = t.bind_ipi(1, &evtchn::VecBits::new(1)).unwrap();
    }
    let k = t.set_pending(port, &mut b);
    assert_eq!(
        k,
        Kick {
            upcalls: only(1),
            pollers: VcpuMask::EMPTY
        }
    );
    assert!(b.is_pending(port));
    assert_eq!(b.pending_sel(1), 1 << 1);
    assert!(b.upcall_pending(1));
    assert_eq!((b.pending_sel(0), b.upcall_pending(0)), (0, false));
    // Already pending: nothing more.
    assert!(t.set_pending(port, &mut b).is_empty());
    // Another port in the same word while the selector bit is set: pending bit only.
    let p2 = t.bind_ipi(1, &evtchn::VecBits::new(1)).unwrap();
    assert!(t.set_pending(p2, &mut b).is_empty());
    assert!(b.is_pending(p2));
}

#[test]
fn selector_clear_but_upcall_still_set_no_new_kick() {
    // The guest handler cleared the selector, not yet upcall_pending: Xen re-sets the selector
    // bit but only kicks when upcall_pending goes 0 -> 1.
    let (mut t, mut b) = table(1);
    let a = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    let c = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    t.set_pending(a, &mut b);
    b.guest_clear_pending(a);
    // Clear only the selector (upcall still pending).
    let up = b.upcall_pending(0);
    b.guest_take_upcall(0);
    SharedBits::test_and_set_upcall_pending(&mut b, 0);
    assert!(up);
    assert!(t.set_pending(c, &mut b).is_empty());
    assert_eq!(b.pending_sel(0), 1);
}

#[test]
fn masked_port_send_sets_pending_only() {
    let (mut t, mut b) = table(1);
    b.mask_all();
    let p = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    let k = t.send(p, &mut b).unwrap();
    assert_eq!(k, evtchn::SendOutcome::Local(Kick::NONE));
    assert!(b.is_pending(p));
    assert_eq!((b.pending_sel(0), b.upcall_pending(0)), (0, false));
}

#[test]
fn unmask_of_pending_port_triggers_upcall() {
    let (mut t, mut b) = table(2);
    let p = t.bind_ipi(1, &evtchn::VecBits::new(1)).unwrap();
    b.mask(p);
    assert!(t.set_pending(p, &mut b).is_empty());
    let k = t.unmask(p, &mut b).unwrap();
    assert_eq!(k.upcalls, only(1));
    assert!(!b.is_masked(p));
    assert_eq!(b.pending_sel(1), 1);
    assert!(b.upcall_pending(1));
}

#[test]
fn unmask_not_pending_or_not_masked_does_nothing() {
    let (mut t, mut b) = table(1);
    let p = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    b.mask(p);
    assert!(t.unmask(p, &mut b).unwrap().is_empty());
    assert!(!b.is_masked(p));
    // Pending but the mask bit was already clear: Xen's test_and_clear_bit fails -> nothing.
    SharedBits::test_and_set_pending(&mut b, p);
    assert!(t.unmask(p, &mut b).unwrap().is_empty());
    assert_eq!(b.pending_sel(0), 0);
}

#[test]
fn unmask_invalid_port_einval_free_valid_port_ok() {
    // evtchn_unmask(): only `_evtchn_from_port() == NULL` fails.
    let (mut t, mut b) = table(1);
    assert_eq!(t.unmask(64, &mut b), Err(Errno::EINVAL));
    assert_eq!(t.unmask(9, &mut b), Ok(Kick::NONE));
}

#[test]
fn unmask_uses_notify_vcpu_after_bind_vcpu() {
    let (mut t, mut b) = table(4);
    let p = t
        .alloc_unbound(evtchn::Caller::new(1, false), 0, &evtchn::VecBits::new(1))
        .unwrap();
    t.bind_vcpu(p, 2).unwrap();
    b.mask(p);
    t.set_pending(p, &mut b);
    assert_eq!(t.unmask(p, &mut b).unwrap().upcalls, only(2));
    assert!(b.upcall_pending(2) && !b.upcall_pending(0));
}

#[test]
fn raise_virq_per_vcpu_and_global_and_unbound() {
    let (mut t, mut b) = table(2);
    assert!(
        t.raise_virq(VIRQ_TIMER, 1, &mut b).is_empty(),
        "unbound VIRQ: nothing"
    );
    let p = t
        .bind_virq(VIRQ_TIMER, 1, &evtchn::VecBits::new(1))
        .unwrap();
    let k = t.raise_virq(VIRQ_TIMER, 1, &mut b);
    assert_eq!(k.upcalls, only(1));
    assert!(b.is_pending(p));
    assert!(
        t.raise_virq(VIRQ_TIMER, 0, &mut b).is_empty(),
        "not bound on vCPU 0"
    );
    let g = t
        .bind_virq(VIRQ_DOM_EXC, 0, &evtchn::VecBits::new(1))
        .unwrap();
    t.bind_vcpu(g, 1).unwrap();
    b.guest_take_upcall(1);
    // Global VIRQ: `vcpu` is ignored; goes to the port's notify vCPU.
    assert_eq!(t.raise_virq(VIRQ_DOM_EXC, 0, &mut b).upcalls, only(1));
    assert!(t.raise_virq(NR_VIRQS, 0, &mut b).is_empty());
    assert!(t.raise_virq(VIRQ_TIMER, 77, &mut b).is_empty());
}

#[test]
fn poll_ready_when_any_port_pending_even_masked() {
    let (mut t, mut b) = table(2);
    b.mask_all();
    let a = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    let c = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    t.set_pending(c, &mut b);
    assert_eq!(t.poll(1, &[a, c], &b), Ok(PollOutcome::Ready));
    assert!(!t.is_polling(1));
}

#[test]
fn masked_send_wakes_single_port_poller_without_upcall() {
    // Linux PV spinlocks: the kicker IPI port stays masked, the waiter polls it.
    let (mut t, mut b) = table(2);
    b.mask_all();
    let kicker = t.bind_ipi(1, &evtchn::VecBits::new(1)).unwrap();
    let other = t.bind_ipi(1, &evtchn::VecBits::new(1)).unwrap();
    assert_eq!(t.poll(1, &[kicker], &b), Ok(PollOutcome::Blocked));
    assert!(t.is_polling(1));
    // Some other port does not wake a single-port poller.
    assert!(t.set_pending(other, &mut b).pollers.is_empty());
    assert!(t.is_polling(1));
    let k = t.send(kicker, &mut b).unwrap();
    assert_eq!(
        k,
        evtchn::SendOutcome::Local(Kick {
            upcalls: VcpuMask::EMPTY,
            pollers: only(1)
        })
    );
    assert!(!t.is_polling(1), "woken pollers are deregistered");
    assert!(!b.upcall_pending(1));
}

#[test]
fn multi_port_poller_woken_by_any_port() {
    // nr_ports != 1 -> poll_evtchn = -1: any port of the domain wakes it.
    let (mut t, mut b) = table(3);
    let a = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    let c = t.bind_ipi(0, &evtchn::VecBits::new(1)).unwrap();
    let z = t.bind_ipi(2, &evtchn::VecBits::new(1)).unwrap();
    assert_eq!(t.poll(1, &[a, c], &b), Ok(PollOutcome::Blocked));
    assert_eq!(t.poll(2, &[a], &b), Ok(PollOutcome::Blocked));
    let k = t.set_pending(z, &mut b);
    assert_eq!(k.pollers, only(1));
    assert!(t.is_polling(2));
    t.poll_cancel(2);
    assert!(!t.is_polling(2));
    t.poll_cancel(2); // idempotent
}

#[test]
fn poll_errors() {
    let (mut t, b) = table(1);
    let many = [1u32; 129];
    assert_eq!(t.poll(0, &many, &b), Err(Errno::EINVAL));
    assert_eq!(t.poll(0, &[4000], &b), Err(Errno::EINVAL));
    assert_eq!(t.poll(5, &[1], &b), Err(Errno::ENOENT));
    assert!(!t.is_polling(0));
    // Zero ports: blocks until any event (or timeout).
    assert_eq!(t.poll(0, &[], &b), Ok(PollOutcome::Blocked));
}

#[test]
fn bind_interdomain_pending_fixup_respects_mask() {
    let mut a = EventChannels::new(1, Config::new(1)).unwrap();
    let mut r = EventChannels::new(2, Config::new(1)).unwrap();
    let mut ba = VecBits::new(1);
    ba.mask_all();
    let p = r
        .alloc_unbound(evtchn::Caller::new(2, false), 1, &evtchn::VecBits::new(1))
        .unwrap();
    let (lp, k) = evtchn::bind_interdomain(&mut a, Some(&mut r), p, &mut ba).unwrap();
    assert!(k.is_empty());
    assert!(ba.is_pending(lp));
    assert_eq!(a.unmask(lp, &mut ba).unwrap().upcalls, only(0));
}

#[test]
fn vcpu_mask_basics() {
    let mut m = VcpuMask::EMPTY;
    for v in [0, 5, 127, 128] {
        m.insert(v);
    }
    assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 5, 127]);
    assert_eq!(m.len(), 3);
    m.remove(5);
    assert!(!m.contains(5) && m.contains(127));
}
