//! The FIFO event-channel ABI: argument checks as Xen's `event_fifo.c`, queueing by
//! priority, the switch from 2-level, and a guest that rewrites the shared words.

mod common;

use common::*;
use evtchn::{Caller, Config, Errno, Registry, SharedBits, State, VecBits, FIFO_NR_PORTS};
use xen_abi::xen::DOMID_SELF;

#[test]
fn init_control_checks_arguments_as_xen() {
    let mut r = registry();
    let c = DOMU;
    bits_mut(&mut r, 1).add_ram(0x100);
    // Order: vCPU, page crossing, alignment, then the frame.
    assert_eq!(r.init_control(c, 2, 0xdead_beef, 3), Err(Errno::ENOENT));
    assert_eq!(
        r.init_control(c, 0, 0xdead_beef, 4096 - 72 + 8),
        Err(Errno::EINVAL)
    );
    assert_eq!(r.init_control(c, 0, 0x100, 4096 - 71), Err(Errno::EINVAL));
    assert_eq!(r.init_control(c, 0, 0x100, 4), Err(Errno::EINVAL));
    assert_eq!(r.init_control(c, 0, 0x100, u32::MAX), Err(Errno::EINVAL));
    // A GFN that is not RAM of the domain: -EINVAL, not -ENOSYS; still 2-level.
    assert_eq!(r.init_control(c, 0, 0x101, 0), Err(Errno::EINVAL));
    assert_eq!(r.init_control(c, 0, u64::MAX, 0), Err(Errno::EINVAL));
    assert_eq!(r.init_control(c, 0, 1 << 52, 0), Err(Errno::EINVAL));
    assert!(!r.get(1).unwrap().evtchn.is_fifo());
    // Before FIFO: expand_array -EOPNOTSUPP, set_priority -ENOSYS (valid port) or -EINVAL.
    let p = r.bind_ipi(c, 0).unwrap();
    assert_eq!(r.expand_array(c, 0x100), Err(Errno::EOPNOTSUPP));
    assert_eq!(r.set_priority(c, p, 3), Err(Errno::ENOSYS));
    assert_eq!(r.set_priority(c, 5000, 3), Err(Errno::EINVAL));
    // The last legal offset, 8-aligned.
    assert_eq!(r.init_control(c, 0, 0x100, 4096 - 72), Ok(17));
    assert!(r.get(1).unwrap().evtchn.is_fifo());
    // Again on the same vCPU: -EINVAL; the other vCPU may share the page.
    assert_eq!(r.init_control(c, 0, 0x100, 0), Err(Errno::EINVAL));
    assert_eq!(r.init_control(c, 1, 0x100, 0), Ok(17));
    assert_eq!(r.init_control(c, 1, 0x100, 0), Err(Errno::EINVAL));
    // set_priority: port, then priority.
    assert_eq!(r.set_priority(c, p, 16), Err(Errno::EINVAL));
    assert_eq!(r.set_priority(c, 5000, 0), Err(Errno::EINVAL));
    assert_eq!(r.set_priority(c, p, 15), Ok(()));
    assert_eq!(r.get(1).unwrap().evtchn.priority(p), Some(15));
    // The other domains are untouched (per-domain choice).
    assert!(!r.get(2).unwrap().evtchn.is_fifo());
}

#[test]
fn expand_array_checks_and_limit() {
    let mut r = Registry::new();
    r.add(0, Config::new(1), VecBits::new(1)).unwrap();
    let c = DOM0;
    bits_mut(&mut r, 0).add_ram(cb_gfn(0));
    r.init_control(c, 0, cb_gfn(0), 0).unwrap();
    assert_eq!(r.expand_array(c, 0x9999), Err(Errno::EINVAL));
    assert_eq!(r.expand_array(c, u64::MAX), Err(Errno::EINVAL));
    for i in 0..128 {
        bits_mut(&mut r, 0).add_ram(array_gfn(i));
        r.expand_array(c, array_gfn(i)).unwrap();
    }
    assert_eq!(r.get(0).unwrap().evtchn.fifo_words(), FIFO_NR_PORTS);
    assert_eq!(r.expand_array(c, array_gfn(0)), Err(Errno::ENOSPC));
    // Allocation reaches the top port and stops there (-ENOSPC).
    let mut last = 0;
    while let Ok(p) = r.bind_ipi(c, 0) {
        last = p;
    }
    assert_eq!(last, FIFO_NR_PORTS - 1);
    assert_eq!(r.bind_ipi(c, 0), Err(Errno::ENOSPC));
}

#[test]
fn port_limits_follow_the_abi_and_max_port() {
    let mut r = Registry::new();
    r.add(1, Config::new(1).with_max_port(5000), VecBits::new(1))
        .unwrap();
    let c = DOMU;
    let mut n = 0;
    while r.bind_ipi(c, 0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4095, "2-level: ports 1..4096");
    fifo_init(&mut r, 1, 8);
    let mut last = 0;
    while let Ok(p) = r.bind_ipi(c, 0) {
        last = p;
    }
    assert_eq!(last, 5000, "FIFO: up to max_port");
}

#[test]
fn events_queue_by_priority_and_arrive_in_order() {
    let mut r = registry();
    fifo_init(&mut r, 1, 2);
    let c = DOMU;
    let mut ports = Vec::new();
    for i in 0..1500u32 {
        let p = r.bind_ipi(c, 0).unwrap();
        r.set_priority(c, p, i % 16).unwrap();
        ports.push(p);
    }
    // Send in reverse order; the first send of each queue raises its READY bit, and the
    // first of all sets upcall_pending (one kick).
    let mut kicks = 0;
    for &p in ports.iter().rev() {
        let n = r.send(c, p).unwrap().unwrap();
        kicks += n.kick.upcalls.len();
        // A second send coalesces.
        assert!(r.send(c, p).unwrap().unwrap().kick.is_empty());
    }
    assert_eq!(kicks, 1);
    let d = r.get(1).unwrap();
    assert_eq!(
        d.bits.peek_u32(cb_gfn(0) * 4096),
        Some(0xffff),
        "all 16 queues ready"
    );
    let mut g = Consumer::new(2);
    let t = r.get(1).unwrap().evtchn.clone();
    let got = g.drain(&t, bits_mut(&mut r, 1), 0, 10_000);
    assert_eq!(got.len(), 1500);
    // Priority order, and FIFO order (reverse port order) inside a priority.
    for w in got.windows(2) {
        let ((p0, q0), (p1, q1)) = (w[0], w[1]);
        assert!(q0 < q1 || (q0 == q1 && p0 > p1), "{w:?}");
    }
    let mut seen: Vec<u32> = got.iter().map(|e| e.0).collect();
    seen.sort();
    let mut want = ports.clone();
    want.sort();
    assert_eq!(seen, want, "every event exactly once");
    assert_eq!(word(&r, 1, ports[0]), 0);
}

#[test]
fn masked_events_wait_for_unmask_and_pending_before_page_is_kept() {
    let mut r = registry();
    fifo_init(&mut r, 1, 1);
    let c = DOMU;
    let p = r.bind_ipi(c, 1).unwrap();
    fifo_mask(&mut r, 1, p, true);
    let n = r.send(c, p).unwrap().unwrap();
    assert!(n.kick.upcalls.is_empty());
    assert_eq!(word(&r, 1, p), F_PENDING | F_MASKED);
    let n = r.unmask(c, p).unwrap();
    assert!(n.kick.upcalls.contains(1));
    assert_eq!(word(&r, 1, p), F_PENDING | F_LINKED);
    let t = r.get(1).unwrap().evtchn.clone();
    assert_eq!(
        Consumer::new(2).drain(&t, bits_mut(&mut r, 1), 1, 10),
        vec![(p, 7)]
    );
    // A port beyond the event array: its event waits for expand_array.
    while r.get(1).unwrap().evtchn.valid_ports() <= 1024 {
        r.bind_ipi(c, 0).unwrap();
    }
    let hi = r.bind_ipi(c, 0).unwrap();
    assert!(hi >= 1024);
    assert!(r.send(c, hi).unwrap().unwrap().kick.is_empty());
    bits_mut(&mut r, 1).add_ram(array_gfn(1));
    let n = r.expand_array(c, array_gfn(1)).unwrap();
    assert!(n.kick.upcalls.contains(0));
    assert_eq!(word(&r, 1, hi), F_PENDING | F_LINKED);
    // close clears PENDING only.
    r.close(c, hi).unwrap();
    assert_eq!(word(&r, 1, hi), F_LINKED);
}

#[test]
fn switch_from_two_level_keeps_pending_ports_and_reset_goes_back() {
    let mut r = registry();
    let c = DOMU;
    let p = r.bind_ipi(c, 0).unwrap();
    r.send(c, p).unwrap();
    assert!(bits(&r, 1).is_pending(p));
    fifo_init(&mut r, 1, 0);
    assert!(r.get(1).unwrap().evtchn.is_fifo());
    bits_mut(&mut r, 1).guest_take_upcall(0);
    bits_mut(&mut r, 1).add_ram(array_gfn(0));
    let n = r.expand_array(c, array_gfn(0)).unwrap();
    assert!(
        n.kick.upcalls.contains(0),
        "the 2-level pending event is raised"
    );
    assert_eq!(word(&r, 1, p), F_PENDING | F_LINKED);
    // EVTCHNOP_reset: ports closed, back to 2-level with one bucket of ports.
    r.reset(c, DOMID_SELF, false).unwrap();
    let t = &r.get(1).unwrap().evtchn;
    assert!(!t.is_fifo());
    assert_eq!(t.valid_ports(), 64);
    assert_eq!(r.set_priority(c, 1, 0), Err(Errno::ENOSYS));
}

#[test]
fn interdomain_between_fifo_and_two_level_ends() {
    let mut r = registry();
    fifo_init(&mut r, 1, 1);
    // dom2 (2-level) offers a port to dom1 (FIFO).
    let up = r.alloc_unbound(DOMU2, DOMID_SELF, 1).unwrap();
    let (lp, n) = r.bind_interdomain(DOMU, 2, up).unwrap();
    assert!(n.kick.upcalls.contains(0), "bind sets the FIFO end pending");
    let t = r.get(1).unwrap().evtchn.clone();
    assert_eq!(
        Consumer::new(2).drain(&t, bits_mut(&mut r, 1), 0, 10),
        vec![(lp, 7)]
    );
    // 2-level → FIFO.
    let n = r.send(DOMU2, up).unwrap().unwrap();
    assert_eq!(n.dom, 1);
    assert!(n.kick.upcalls.contains(0));
    assert_eq!(
        word(&r, 1, lp) & (F_PENDING | F_LINKED),
        F_PENDING | F_LINKED
    );
    // FIFO → 2-level.
    let n = r.send(DOMU, lp).unwrap().unwrap();
    assert_eq!(n.dom, 2);
    assert!(bits(&r, 2).is_pending(up));
    assert!(n.kick.upcalls.contains(0));
    assert_eq!(
        r.get(2).unwrap().evtchn.state(up),
        Some(State::Interdomain {
            remote_dom: 1,
            remote_port: lp
        })
    );
}

/// A guest that rewrites the tail word on every access the hypervisor makes.
struct Hostile {
    inner: VecBits,
    target: u64,
    flips: u32,
}

impl SharedBits for Hostile {
    fn test_and_set_pending(&mut self, port: u32) -> bool {
        self.inner.test_and_set_pending(port)
    }
    fn clear_pending(&mut self, port: u32) {
        self.inner.clear_pending(port)
    }
    fn is_pending(&self, port: u32) -> bool {
        self.inner.is_pending(port)
    }
    fn is_masked(&self, port: u32) -> bool {
        self.inner.is_masked(port)
    }
    fn test_and_clear_mask(&mut self, port: u32) -> bool {
        self.inner.test_and_clear_mask(port)
    }
    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool {
        self.inner.test_and_set_pending_sel(vcpu, word)
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool {
        self.inner.test_and_set_upcall_pending(vcpu)
    }
    fn frame_ok(&self, gfn: u64) -> bool {
        self.inner.frame_ok(gfn)
    }
    fn load_u32(&self, gpa: u64) -> Option<u32> {
        self.inner.load_u32(gpa)
    }
    fn fetch_or_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.inner.fetch_or_u32(gpa, bits)
    }
    fn fetch_and_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.inner.fetch_and_u32(gpa, bits)
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        if gpa == self.target {
            // The guest toggles MASKED just before every exchange, so each one fails.
            self.flips += 1;
            let w = self.inner.peek_u32(gpa)?;
            self.inner.poke_u32(gpa, w ^ F_MASKED);
        }
        self.inner.cmpxchg_u32(gpa, old, new)
    }
    fn store_u32(&mut self, gpa: u64, v: u32) -> bool {
        self.inner.store_u32(gpa, v)
    }
}

#[test]
fn hostile_tail_word_cannot_stall_linking() {
    let mut t = evtchn::EventChannels::new(1, Config::new(1)).unwrap();
    let mut b = VecBits::new(1);
    b.add_ram(cb_gfn(0));
    b.add_ram(array_gfn(0));
    t.init_control(0, cb_gfn(0), 0, &mut b).unwrap();
    t.expand_array(array_gfn(0), &mut b).unwrap();
    let p1 = t.bind_ipi(0, &b).unwrap();
    let p2 = t.bind_ipi(0, &b).unwrap();
    let mut h = Hostile {
        inner: b,
        target: t.fifo_word_gpa(p1).unwrap(),
        flips: 0,
    };
    t.send(p1, &mut h).unwrap();
    t.send(p2, &mut h).unwrap();
    // One try, then BUSY and four more: bounded, BUSY released, p2 lost (as Xen).
    assert_eq!(h.flips, 5);
    let w1 = h.inner.peek_u32(t.fifo_word_gpa(p1).unwrap()).unwrap();
    assert_eq!(w1 & (F_BUSY | F_LINK), 0);
    assert_eq!(t.fifo_tail(0, 7), Some(p2));
    // Garbage everywhere: the hypervisor never reads links, so sends stay bounded and
    // touch only the domain's pages.
    let base = array_gfn(0) * 4096;
    for i in 0..1024 {
        h.inner
            .poke_u32(base + 4 * i, 0xffff_ffff ^ (i as u32 * 0x9e37));
    }
    h.inner.poke_u32(cb_gfn(0) * 4096, u32::MAX);
    for _ in 0..100 {
        let p = t.bind_ipi(0, &h).unwrap();
        t.set_priority(p, p % 16).unwrap();
        t.send(p, &mut h).unwrap();
        t.unmask(p, &mut h).unwrap();
    }
    // The guest gives its event-array page away: events are dropped, nothing breaks.
    h.inner.remove_ram(array_gfn(0));
    h.target = 0;
    for p in 1..t.valid_ports() {
        let _ = t.send(p, &mut h);
        let _ = t.unmask(p, &mut h);
    }
}

#[test]
fn no_control_block_drops_and_vcpu_queues_are_separate() {
    let mut r = registry();
    let c = DOMU;
    bits_mut(&mut r, 1).add_ram(cb_gfn(0));
    bits_mut(&mut r, 1).add_ram(array_gfn(0));
    r.init_control(c, 0, cb_gfn(0), 0).unwrap();
    r.expand_array(c, array_gfn(0)).unwrap();
    let p1 = r.bind_ipi(c, 1).unwrap();
    // vCPU 1 has no control block: dropped, not even PENDING (Xen).
    assert!(r.send(c, p1).unwrap().unwrap().kick.is_empty());
    assert_eq!(word(&r, 1, p1), 0);
    bits_mut(&mut r, 1).add_ram(cb_gfn(1));
    r.init_control(c, 1, cb_gfn(1), 8).unwrap();
    let p0 = r.bind_ipi(c, 0).unwrap();
    r.send(c, p0).unwrap();
    let n = r.send(c, p1).unwrap().unwrap();
    assert!(n.kick.upcalls.contains(1));
    let t = r.get(1).unwrap().evtchn.clone();
    let mut g = Consumer::new(2);
    assert_eq!(g.drain(&t, bits_mut(&mut r, 1), 1, 10), vec![(p1, 7)]);
    assert_eq!(g.drain(&t, bits_mut(&mut r, 1), 0, 10), vec![(p0, 7)]);
    let _ = Caller::new(1, false);
}

/// Random sends, mask flips, priority and vCPU changes and drains by an honest guest:
/// every send that found its port not pending is delivered exactly once, each drain in
/// priority order for events queued before it started.
#[test]
fn random_traffic_delivers_each_event_once() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut r = registry();
    fifo_init(&mut r, 0, 2);
    let c = DOM0;
    let ports: Vec<u32> = (0..300).map(|i| r.bind_ipi(c, i % 4).unwrap()).collect();
    let mut owed = std::collections::BTreeMap::<u32, u32>::new();
    let mut got = std::collections::BTreeMap::<u32, u32>::new();
    let mut g = Consumer::new(4);
    for _ in 0..20_000 {
        let p = ports[rnd(ports.len() as u64) as usize];
        match rnd(10) {
            0..=4 => {
                if word(&r, 0, p) & F_PENDING == 0 {
                    *owed.entry(p).or_default() += 1;
                }
                r.send(c, p).unwrap();
            }
            5 => fifo_mask(&mut r, 0, p, true),
            6 => {
                r.unmask(c, p).unwrap();
            }
            7 => r.set_priority(c, p, rnd(16) as u32).unwrap(),
            _ => {
                let v = rnd(4) as u32;
                let t = r.get(0).unwrap().evtchn.clone();
                for (p, _) in g.drain(&t, bits_mut(&mut r, 0), v, 100_000) {
                    *got.entry(p).or_default() += 1;
                }
            }
        }
    }
    for &p in &ports {
        r.unmask(c, p).unwrap();
    }
    let t = r.get(0).unwrap().evtchn.clone();
    for v in 0..4 {
        let evs = g.drain(&t, bits_mut(&mut r, 0), v, 100_000);
        for w in evs.windows(2) {
            assert!(w[0].1 <= w[1].1, "final drain in priority order: {w:?}");
        }
        for (p, _) in evs {
            *got.entry(p).or_default() += 1;
        }
    }
    assert_eq!(got, owed);
    assert!(owed.values().sum::<u32>() > 1000);
}

#[test]
fn a_closed_port_still_linked_is_not_reused_until_consumed() {
    let mut r = registry();
    fifo_init(&mut r, 1, 1);
    let c = DOMU;
    let p = r.bind_ipi(c, 0).unwrap();
    r.send(c, p).unwrap();
    r.close(c, p).unwrap();
    assert_eq!(word(&r, 1, p), F_LINKED, "close clears PENDING only");
    // Xen's evtchn_allocate_port: a LINKED free port is busy; the next one is used.
    let q = r.bind_ipi(c, 0).unwrap();
    assert_eq!(q, p + 1);
    // The guest walks its queue (unlinking p): p is free for use again.
    let t = r.get(1).unwrap().evtchn.clone();
    assert_eq!(
        Consumer::new(2).drain(&t, bits_mut(&mut r, 1), 0, 10),
        vec![]
    );
    assert_eq!(r.bind_ipi(c, 0), Ok(p));
}
