//! Sub-ops and their error codes, checked against Xen's `xen/common/event_channel.c`
//! (4.17: `evtchn_alloc_unbound`, `evtchn_bind_interdomain`, `evtchn_bind_virq`,
//! `evtchn_bind_ipi`, `evtchn_close`, `evtchn_send`, `evtchn_status`, `evtchn_bind_vcpu`,
//! `evtchn_unmask`, `evtchn_reset`, `do_event_channel_op`).

mod common;

/// Guest bits for calls on a bare table (2-level: nothing is read).
fn nb() -> evtchn::VecBits {
    evtchn::VecBits::new(1)
}
use common::*;

use evtchn::{unsupported_op, Caller, Config, Errno, EventChannels, State, NR_PORTS};
use xen_abi::event_channel::*;
use xen_abi::xen::*;

fn status(
    r: &evtchn::Registry<evtchn::VecBits>,
    c: Caller,
    dom: u16,
    port: u32,
) -> Result<EvtchnStatus, Errno> {
    let mut st = EvtchnStatus {
        dom,
        port,
        ..Default::default()
    };
    r.status(c, &mut st).map(|_| st)
}

// ---- alloc_unbound ------------------------------------------------------------------------

#[test]
fn alloc_unbound_self_returns_port_1_never_0() {
    let mut r = registry();
    let p = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    assert_eq!(p, 1);
    let st = status(&r, DOMU, DOMID_SELF, p).unwrap();
    assert_eq!(
        (st.status, st.unbound_dom(), st.vcpu),
        (EVTCHNSTAT_UNBOUND, 0, 0)
    );
}

#[test]
fn alloc_unbound_remote_domid_self_means_caller_not_target() {
    // Xen: `if ((chn->u.unbound.remote_domid = alloc->remote_dom) == DOMID_SELF)
    //          chn->u.unbound.remote_domid = current->domain->domain_id;`
    let mut r = registry();
    let p = r.alloc_unbound(DOM0, 1, DOMID_SELF).unwrap();
    assert_eq!(
        r.get(1).unwrap().evtchn.state(p),
        Some(State::Unbound { remote_dom: 0 })
    );
    let p2 = r.alloc_unbound(DOMU, DOMID_SELF, DOMID_SELF).unwrap();
    assert_eq!(
        r.get(1).unwrap().evtchn.state(p2),
        Some(State::Unbound { remote_dom: 1 })
    );
}

#[test]
fn alloc_unbound_foreign_dom_needs_privilege_eperm() {
    // xsm_evtchn_unbound(XSM_TARGET, d, ...) -> -EPERM for an unprivileged caller.
    let mut r = registry();
    assert_eq!(r.alloc_unbound(DOMU, 2, 0), Err(Errno::EPERM));
    assert_eq!(r.get(2).unwrap().evtchn.in_use(), 0);
    assert!(r.alloc_unbound(DOM0, 2, 1).is_ok());
}

#[test]
fn alloc_unbound_unknown_domain_esrch() {
    // rcu_lock_domain_by_any_id() == NULL -> -ESRCH (before anything else).
    let mut r = registry();
    assert_eq!(r.alloc_unbound(DOM0, 9, 0), Err(Errno::ESRCH));
    assert_eq!(r.alloc_unbound(DOMU, 9, 0), Err(Errno::ESRCH));
}

#[test]
fn alloc_unbound_full_table_enospc_before_eperm() {
    // Xen runs get_free_port() before the XSM check, so a full table reports -ENOSPC.
    let mut t = EventChannels::new(5, Config::new(1).with_max_port(2)).unwrap();
    let me = Caller::new(5, false);
    assert_eq!(t.alloc_unbound(me, 0, &nb()), Ok(1));
    assert_eq!(t.alloc_unbound(me, 0, &nb()), Ok(2));
    assert_eq!(t.alloc_unbound(me, 0, &nb()), Err(Errno::ENOSPC));
    assert_eq!(
        t.alloc_unbound(Caller::new(6, false), 0, &nb()),
        Err(Errno::ENOSPC)
    );
}

// ---- exhaustion / accounting -------------------------------------------------------------

#[test]
fn port_exhaustion_at_4095_ports_and_reuse_of_lowest_free() {
    let mut t = EventChannels::new(3, Config::new(1)).unwrap();
    for want in 1..NR_PORTS {
        assert_eq!(t.bind_ipi(0, &nb()), Ok(want));
    }
    assert_eq!(t.in_use(), NR_PORTS - 1);
    assert_eq!(t.valid_ports(), NR_PORTS);
    // get_free_port: -ENOSPC once every port up to max_evtchns is taken.
    assert_eq!(t.bind_ipi(0, &nb()), Err(Errno::ENOSPC));
    assert_eq!(t.bind_virq(VIRQ_TIMER, 0, &nb()), Err(Errno::ENOSPC));
    assert_eq!(
        t.alloc_unbound(Caller::new(3, false), 0, &nb()),
        Err(Errno::ENOSPC)
    );
    let mut b = evtchn::VecBits::new(1);
    evtchn::close(&mut t, 77, None, &mut b).unwrap();
    evtchn::close(&mut t, 12, None, &mut b).unwrap();
    assert_eq!(t.in_use(), NR_PORTS - 3);
    assert_eq!(t.bind_ipi(0, &nb()), Ok(12));
    assert_eq!(t.bind_ipi(0, &nb()), Ok(77));
}

#[test]
fn configurable_max_port_limits_allocation() {
    // d->max_evtchn_port: ports above it are never handed out (-ENOSPC).
    let mut t = EventChannels::new(3, Config::new(1).with_max_port(100)).unwrap();
    for _ in 0..100 {
        t.bind_ipi(0, &nb()).unwrap();
    }
    assert_eq!(t.bind_ipi(0, &nb()), Err(Errno::ENOSPC));
    assert_eq!(t.in_use(), 100);
    t.set_max_port(101);
    assert_eq!(t.bind_ipi(0, &nb()), Ok(101));
}

#[test]
fn dying_domain_allocations_einval() {
    // get_free_port(): `if (d->is_dying) return -EINVAL;`
    let mut t = EventChannels::new(3, Config::new(1)).unwrap();
    t.set_dying();
    assert_eq!(t.bind_ipi(0, &nb()), Err(Errno::EINVAL));
}

#[test]
fn valid_range_grows_in_buckets_and_status_beyond_is_einval() {
    let mut r = registry();
    // Port 0 is reserved: reads as closed, cannot be closed.
    let st = status(&r, DOMU, DOMID_SELF, 0).unwrap();
    assert_eq!(st.status, EVTCHNSTAT_CLOSED);
    assert_eq!(r.close(DOMU, 0), Err(Errno::EINVAL));
    // Inside the first bucket: closed; beyond the valid range: -EINVAL.
    assert_eq!(
        status(&r, DOMU, DOMID_SELF, 63).unwrap().status,
        EVTCHNSTAT_CLOSED
    );
    assert_eq!(status(&r, DOMU, DOMID_SELF, 64).unwrap_err(), Errno::EINVAL);
    assert_eq!(
        status(&r, DOMU, DOMID_SELF, 5000).unwrap_err(),
        Errno::EINVAL
    );
    for _ in 0..64 {
        r.bind_ipi(DOMU, 0).unwrap();
    }
    assert_eq!(r.get(1).unwrap().evtchn.valid_ports(), 128);
    assert_eq!(
        status(&r, DOMU, DOMID_SELF, 64).unwrap().status,
        EVTCHNSTAT_IPI
    );
    assert_eq!(
        status(&r, DOMU, DOMID_SELF, 127).unwrap().status,
        EVTCHNSTAT_CLOSED
    );
}

// ---- bind_virq ----------------------------------------------------------------------------

#[test]
fn bind_virq_per_vcpu_on_each_vcpu() {
    let mut r = registry();
    let p0 = r.bind_virq(DOM0, VIRQ_TIMER, 0).unwrap();
    let p3 = r.bind_virq(DOM0, VIRQ_TIMER, 3).unwrap();
    assert_ne!(p0, p3);
    let st = status(&r, DOM0, DOMID_SELF, p3).unwrap();
    assert_eq!(
        (st.status, st.vcpu, st.virq()),
        (EVTCHNSTAT_VIRQ, 3, VIRQ_TIMER)
    );
    assert_eq!(r.get(0).unwrap().evtchn.virq_port(VIRQ_TIMER, 3), Some(p3));
}

#[test]
fn bind_virq_twice_same_vcpu_eexist() {
    // `if (v->virq_to_evtchn[virq]) ERROR_EXIT(-EEXIST)`
    let mut r = registry();
    r.bind_virq(DOMU, VIRQ_DEBUG, 1).unwrap();
    assert_eq!(r.bind_virq(DOMU, VIRQ_DEBUG, 1), Err(Errno::EEXIST));
    r.bind_virq(DOMU, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(r.bind_virq(DOMU, VIRQ_CONSOLE, 0), Err(Errno::EEXIST));
}

#[test]
fn bind_global_virq_on_nonzero_vcpu_einval() {
    // `if (virq_is_global(virq) && (vcpu != 0)) return -EINVAL;` (checked before the vCPU)
    let mut r = registry();
    assert_eq!(r.bind_virq(DOM0, VIRQ_CONSOLE, 1), Err(Errno::EINVAL));
    assert_eq!(r.bind_virq(DOM0, VIRQ_DOM_EXC, 99), Err(Errno::EINVAL));
    assert!(r.bind_virq(DOM0, VIRQ_DOM_EXC, 0).is_ok());
}

#[test]
fn bind_virq_bad_virq_einval_bad_vcpu_enoent() {
    let mut r = registry();
    assert_eq!(r.bind_virq(DOMU, NR_VIRQS, 0), Err(Errno::EINVAL));
    assert_eq!(r.bind_virq(DOMU, u32::MAX, 0), Err(Errno::EINVAL));
    // domain_vcpu(d, vcpu) == NULL -> -ENOENT (per-vCPU VIRQ, vCPU out of range).
    assert_eq!(r.bind_virq(DOMU, VIRQ_TIMER, 2), Err(Errno::ENOENT));
    assert_eq!(r.get(1).unwrap().evtchn.in_use(), 0);
}

#[test]
fn close_virq_allows_rebind() {
    let mut r = registry();
    let p = r.bind_virq(DOMU, VIRQ_TIMER, 1).unwrap();
    r.close(DOMU, p).unwrap();
    assert_eq!(r.get(1).unwrap().evtchn.virq_port(VIRQ_TIMER, 1), None);
    assert_eq!(r.bind_virq(DOMU, VIRQ_TIMER, 1), Ok(p));
}

// ---- bind_ipi / bind_pirq / FIFO ------------------------------------------------------

#[test]
fn bind_ipi_and_bad_vcpu_enoent() {
    let mut r = registry();
    let p = r.bind_ipi(DOMU, 1).unwrap();
    let st = status(&r, DOMU, DOMID_SELF, p).unwrap();
    assert_eq!((st.status, st.vcpu), (EVTCHNSTAT_IPI, 1));
    assert_eq!(r.bind_ipi(DOMU, 2), Err(Errno::ENOENT));
}

#[test]
fn bind_pirq_einval_and_unknown_ops_enosys() {
    let mut r = registry();
    assert_eq!(r.bind_pirq(DOM0, 9, 0), Err(Errno::EINVAL));
    assert_eq!(unsupported_op(EVTCHNOP_INIT_CONTROL), None);
    assert_eq!(unsupported_op(EVTCHNOP_EXPAND_ARRAY), None);
    assert_eq!(unsupported_op(EVTCHNOP_SET_PRIORITY), None);
    assert_eq!(unsupported_op(14), Some(Errno::ENOSYS));
    assert_eq!(unsupported_op(99), Some(Errno::ENOSYS));
    assert_eq!(unsupported_op(EVTCHNOP_SEND), None);
}

// ---- bind_interdomain -------------------------------------------------------------------

#[test]
fn interdomain_bind_connects_both_ends_and_sets_local_pending() {
    let mut r = registry();
    // Frontend in dom1 allocates for backend dom0; dom0 binds.
    let up = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    let (lp, n) = r.bind_interdomain(DOM0, 1, up).unwrap();
    let s0 = status(&r, DOM0, DOMID_SELF, lp).unwrap();
    assert_eq!(
        (s0.status, s0.interdomain()),
        (EVTCHNSTAT_INTERDOMAIN, (1, up))
    );
    let s1 = status(&r, DOMU, DOMID_SELF, up).unwrap();
    assert_eq!(
        (s1.status, s1.interdomain()),
        (EVTCHNSTAT_INTERDOMAIN, (0, lp))
    );
    // "We may have lost notifications on the remote unbound port": local port set pending.
    assert!(evtchn::SharedBits::is_pending(bits(&r, 0), lp));
    assert_eq!(n.dom, 0);
    assert!(n.kick.upcalls.contains(0));
}

#[test]
fn interdomain_bind_errors() {
    let mut r = registry();
    // Unknown remote domain: -ESRCH.
    assert_eq!(r.bind_interdomain(DOM0, 7, 1), Err(Errno::ESRCH));
    // Remote port not valid: -EINVAL.
    assert_eq!(
        r.bind_interdomain(DOM0, 1, 4000).unwrap_err(),
        Errno::EINVAL
    );
    // Remote port free (valid): -EINVAL.
    assert_eq!(r.bind_interdomain(DOM0, 1, 5).unwrap_err(), Errno::EINVAL);
    // Unbound but reserved for another domain: -EINVAL.
    let p = r.alloc_unbound(DOMU, DOMID_SELF, 2).unwrap();
    assert_eq!(r.bind_interdomain(DOM0, 1, p).unwrap_err(), Errno::EINVAL);
    // Not unbound (an IPI): -EINVAL.
    let ipi = r.bind_ipi(DOMU, 0).unwrap();
    assert_eq!(r.bind_interdomain(DOM0, 1, ipi).unwrap_err(), Errno::EINVAL);
    // Already bound once: -EINVAL the second time.
    let ok = r.bind_interdomain(DOMU2, 1, p).unwrap().0;
    assert_eq!(r.bind_interdomain(DOMU2, 1, p).unwrap_err(), Errno::EINVAL);
    // Failures leak no ports.
    assert_eq!(r.get(0).unwrap().evtchn.in_use(), 0);
    assert_eq!(r.get(2).unwrap().evtchn.in_use(), 1);
    assert_eq!(
        r.get(2).unwrap().evtchn.state(ok).unwrap(),
        State::Interdomain {
            remote_dom: 1,
            remote_port: p
        }
    );
}

#[test]
fn interdomain_bind_local_table_full_enospc_first() {
    // Xen allocates the local port before looking at the remote port.
    let mut r = evtchn::Registry::new();
    r.add(0, Config::new(1).with_max_port(1), evtchn::VecBits::new(1))
        .unwrap();
    r.add(1, Config::new(1), evtchn::VecBits::new(1)).unwrap();
    r.bind_ipi(DOM0, 0).unwrap();
    assert_eq!(
        r.bind_interdomain(DOM0, 1, 4000).unwrap_err(),
        Errno::ENOSPC
    );
}

#[test]
fn loopback_bind_send_close() {
    // dom0's local xenstore: alloc_unbound(self, self) then bind_interdomain(DOMID_SELF, port).
    let mut r = registry();
    let a = r.alloc_unbound(DOM0, DOMID_SELF, DOMID_SELF).unwrap();
    let (b, _) = r.bind_interdomain(DOM0, DOMID_SELF, a).unwrap();
    assert_ne!(a, b);
    let t = &r.get(0).unwrap().evtchn;
    assert_eq!(
        t.state(a),
        Some(State::Interdomain {
            remote_dom: 0,
            remote_port: b
        })
    );
    assert_eq!(
        t.state(b),
        Some(State::Interdomain {
            remote_dom: 0,
            remote_port: a
        })
    );
    bits_mut(&mut r, 0).guest_clear_pending(b);
    bits_mut(&mut r, 0).guest_take_upcall(0);
    let n = r.send(DOM0, b).unwrap().unwrap();
    assert_eq!(n.dom, 0);
    assert!(evtchn::SharedBits::is_pending(bits(&r, 0), a));
    assert!(!evtchn::SharedBits::is_pending(bits(&r, 0), b));
    r.close(DOM0, a).unwrap();
    assert_eq!(
        r.get(0).unwrap().evtchn.state(b),
        Some(State::Unbound { remote_dom: 0 })
    );
    assert_eq!(r.get(0).unwrap().evtchn.state(a), Some(State::Free));
}

// ---- close -------------------------------------------------------------------------------

#[test]
fn close_never_opened_port_einval() {
    // ECS_FREE -> -EINVAL; beyond the valid range -> -EINVAL.
    let mut r = registry();
    assert_eq!(r.close(DOMU, 5), Err(Errno::EINVAL));
    assert_eq!(r.close(DOMU, 4095), Err(Errno::EINVAL));
    assert_eq!(r.close(DOMU, 1 << 20), Err(Errno::EINVAL));
    let p = r.bind_ipi(DOMU, 0).unwrap();
    r.close(DOMU, p).unwrap();
    assert_eq!(r.close(DOMU, p), Err(Errno::EINVAL), "double close");
}

#[test]
fn close_interdomain_makes_peer_unbound_for_closer_and_rebindable() {
    let mut r = registry();
    let up = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    let (bp, _) = r.bind_interdomain(DOM0, 1, up).unwrap();
    r.close(DOM0, bp).unwrap();
    assert_eq!(
        status(&r, DOM0, DOMID_SELF, bp).unwrap().status,
        EVTCHNSTAT_CLOSED
    );
    let s = status(&r, DOMU, DOMID_SELF, up).unwrap();
    assert_eq!((s.status, s.unbound_dom()), (EVTCHNSTAT_UNBOUND, 0));
    // The backend can reconnect (e.g. after a backend restart).
    let (bp2, _) = r.bind_interdomain(DOM0, 1, up).unwrap();
    assert_eq!(bp2, bp);
    // And the other direction: closing the frontend end leaves dom0's end unbound for dom1.
    r.close(DOMU, up).unwrap();
    let s = status(&r, DOM0, DOMID_SELF, bp2).unwrap();
    assert_eq!((s.status, s.unbound_dom()), (EVTCHNSTAT_UNBOUND, 1));
}

#[test]
fn close_clears_pending_and_resets_notify_vcpu() {
    // evtchn_free(): clear pending, notify_vcpu_id = 0.
    let mut r = registry();
    let p = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    r.bind_vcpu(DOMU, p, 1).unwrap();
    evtchn::SharedBits::test_and_set_pending(bits_mut(&mut r, 1), p);
    r.close(DOMU, p).unwrap();
    assert!(!evtchn::SharedBits::is_pending(bits(&r, 1), p));
    assert_eq!(status(&r, DOMU, DOMID_SELF, p).unwrap().vcpu, 0);
}

#[test]
fn close_with_wrong_peer_table_einval() {
    // The race Xen handles with "-EINVAL as if we had seen the port in ECS_FREE".
    let mut a = EventChannels::new(1, Config::new(1)).unwrap();
    let mut b = EventChannels::new(2, Config::new(1)).unwrap();
    let mut c = EventChannels::new(3, Config::new(1)).unwrap();
    let mut ba = evtchn::VecBits::new(1);
    let p = b.alloc_unbound(Caller::new(2, false), 1, &nb()).unwrap();
    let (lp, _) = evtchn::bind_interdomain(&mut a, Some(&mut b), p, &mut ba).unwrap();
    assert_eq!(a.peer_of(lp), Some(2));
    assert_eq!(
        evtchn::close(&mut a, lp, Some(&mut c), &mut ba),
        Err(Errno::EINVAL)
    );
    assert_eq!(evtchn::close(&mut a, lp, None, &mut ba), Err(Errno::EINVAL));
    assert_eq!(evtchn::close(&mut a, lp, Some(&mut b), &mut ba), Ok(()));
    assert_eq!(b.state(p), Some(State::Unbound { remote_dom: 1 }));
}

// ---- send ----------------------------------------------------------------------------------

#[test]
fn send_unbound_is_silently_dropped() {
    // evtchn_send(): `case ECS_UNBOUND: /* silently drop the notification */`
    let mut r = registry();
    let p = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    assert_eq!(r.send(DOMU, p), Ok(None));
    assert!(!evtchn::SharedBits::is_pending(bits(&r, 1), p));
}

#[test]
fn send_on_free_virq_or_invalid_port_einval() {
    let mut r = registry();
    assert_eq!(r.send(DOMU, 3), Err(Errno::EINVAL));
    assert_eq!(r.send(DOMU, 0), Err(Errno::EINVAL));
    assert_eq!(r.send(DOMU, 9999), Err(Errno::EINVAL));
    let v = r.bind_virq(DOMU, VIRQ_TIMER, 0).unwrap();
    assert_eq!(r.send(DOMU, v), Err(Errno::EINVAL));
}

#[test]
fn send_interdomain_sets_remote_pending_for_remote_notify_vcpu() {
    let mut r = registry();
    let up = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    r.bind_vcpu(DOMU, up, 1).unwrap();
    let (bp, _) = r.bind_interdomain(DOM0, 1, up).unwrap();
    let n = r.send(DOM0, bp).unwrap().unwrap();
    assert_eq!(n.dom, 1);
    assert_eq!(n.kick.upcalls.iter().collect::<Vec<_>>(), vec![1]);
    let b = bits(&r, 1);
    assert!(evtchn::SharedBits::is_pending(b, up));
    assert_eq!(b.pending_sel(1), 1 << (up / 64));
    assert!(b.upcall_pending(1) && !b.upcall_pending(0));
    // Sender side untouched (apart from the bind-time pending bit).
    assert_eq!(bits(&r, 0).pending_sel(1), 0);
}

#[test]
fn send_ipi_targets_own_notify_vcpu() {
    let mut r = registry();
    let p = r.bind_ipi(DOM0, 2).unwrap();
    let n = r.send(DOM0, p).unwrap().unwrap();
    assert_eq!(
        (n.dom, n.kick.upcalls.iter().collect::<Vec<_>>()),
        (0, vec![2])
    );
}

#[test]
fn deliver_interdomain_drops_when_channel_changed() {
    let mut a = EventChannels::new(1, Config::new(1)).unwrap();
    let mut b = EventChannels::new(2, Config::new(1)).unwrap();
    let (mut ba, mut bb) = (evtchn::VecBits::new(1), evtchn::VecBits::new(1));
    let p = b.alloc_unbound(Caller::new(2, false), 1, &nb()).unwrap();
    let (lp, _) = evtchn::bind_interdomain(&mut a, Some(&mut b), p, &mut ba).unwrap();
    let out = a.send(lp, &mut ba).unwrap();
    assert_eq!(
        out,
        evtchn::SendOutcome::Remote {
            dom: 2,
            port: p,
            from_port: lp
        }
    );
    // The receiver closed and reused the port before delivery: dropped.
    evtchn::close(&mut b, p, Some(&mut a), &mut bb).unwrap();
    b.bind_ipi(0, &nb()).unwrap();
    assert!(b.deliver_interdomain(p, 1, lp, &mut bb).is_empty());
    assert!(!evtchn::SharedBits::is_pending(&bb, p));
}

// ---- status / bind_vcpu / reset ----------------------------------------------------------

#[test]
fn status_foreign_domain_needs_privilege() {
    let mut r = registry();
    let p = r.bind_ipi(DOMU2, 1).unwrap();
    assert_eq!(status(&r, DOMU, 2, p).unwrap_err(), Errno::EPERM);
    // -EINVAL for an invalid port comes before the XSM check.
    assert_eq!(status(&r, DOMU, 2, 5000).unwrap_err(), Errno::EINVAL);
    assert_eq!(status(&r, DOMU, 9, p).unwrap_err(), Errno::ESRCH);
    let st = status(&r, DOM0, 2, p).unwrap();
    assert_eq!((st.status, st.vcpu), (EVTCHNSTAT_IPI, 1));
}

#[test]
fn bind_vcpu_rules() {
    let mut r = registry();
    let unb = r.alloc_unbound(DOM0, DOMID_SELF, 1).unwrap();
    let glob = r.bind_virq(DOM0, VIRQ_CONSOLE, 0).unwrap();
    let timer = r.bind_virq(DOM0, VIRQ_TIMER, 0).unwrap();
    let ipi = r.bind_ipi(DOM0, 0).unwrap();
    let fp = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    let (inter, _) = r.bind_interdomain(DOM0, 1, fp).unwrap();
    // Allowed: unbound, interdomain, global VIRQ.
    for p in [unb, inter, glob] {
        r.bind_vcpu(DOM0, p, 3).unwrap();
        assert_eq!(status(&r, DOM0, DOMID_SELF, p).unwrap().vcpu, 3);
    }
    // -EINVAL: per-vCPU VIRQ, IPI, free port, reserved port 0, invalid port.
    for p in [timer, ipi, 40, 0, 4000] {
        assert_eq!(r.bind_vcpu(DOM0, p, 1), Err(Errno::EINVAL), "port {p}");
    }
    // -ENOENT for a bad vCPU is checked first, even on a bad port.
    assert_eq!(r.bind_vcpu(DOM0, unb, 4), Err(Errno::ENOENT));
    assert_eq!(r.bind_vcpu(DOM0, 4000, 4), Err(Errno::ENOENT));
    // The moved global VIRQ is delivered to its new vCPU.
    let n = r.raise_virq(0, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(n.kick.upcalls.iter().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn reset_closes_everything_and_unbinds_peers() {
    let mut r = registry();
    let up = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    let (bp, _) = r.bind_interdomain(DOM0, 1, up).unwrap();
    r.bind_virq(DOMU, VIRQ_TIMER, 0).unwrap();
    r.bind_ipi(DOMU, 1).unwrap();
    // Foreign reset: -EPERM unprivileged, -EINVAL if not paused by the controller.
    assert_eq!(r.reset(DOMU2, 1, true), Err(Errno::EPERM));
    assert_eq!(r.reset(DOM0, 1, false), Err(Errno::EINVAL));
    assert_eq!(r.reset(DOM0, 9, true), Err(Errno::ESRCH));
    r.reset(DOMU, DOMID_SELF, false).unwrap();
    assert_eq!(r.get(1).unwrap().evtchn.in_use(), 0);
    assert_eq!(r.get(1).unwrap().evtchn.virq_port(VIRQ_TIMER, 0), None);
    assert_eq!(
        r.get(0).unwrap().evtchn.state(bp),
        Some(State::Unbound { remote_dom: 1 })
    );
    // Ports are reusable after reset and VIRQs can be bound again.
    assert_eq!(r.bind_virq(DOMU, VIRQ_TIMER, 0), Ok(1));
}

#[test]
fn destroying_a_domain_unbinds_its_peers() {
    let mut r = registry();
    let up = r.alloc_unbound(DOMU, DOMID_SELF, 0).unwrap();
    let (bp, _) = r.bind_interdomain(DOM0, 1, up).unwrap();
    assert!(r.remove(1).is_some());
    assert_eq!(
        r.get(0).unwrap().evtchn.state(bp),
        Some(State::Unbound { remote_dom: 1 })
    );
    assert_eq!(r.send(DOM0, bp), Ok(None));
}

#[test]
fn bad_config_rejected() {
    assert_eq!(
        EventChannels::new(1, Config::new(0)).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        EventChannels::new(1, Config::new(129)).unwrap_err(),
        Errno::EINVAL
    );
    let mut r = registry();
    assert_eq!(
        r.add(1, Config::new(1), evtchn::VecBits::new(1)),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        r.add(DOMID_SELF, Config::new(1), evtchn::VecBits::new(1)),
        Err(Errno::EINVAL)
    );
}
