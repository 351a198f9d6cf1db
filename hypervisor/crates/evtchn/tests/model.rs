//! Model-based test: random operation sequences over three domains, checking invariants
//! after every step.

mod common;

use common::{array_gfn, Consumer, F_LINKED, F_MASKED, F_PENDING};

use evtchn::{Caller, Notify, Registry, SharedBits, State, VecBits};
use xen_abi::xen::{virq_is_per_vcpu, DOMID_SELF, NR_VIRQS};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const DOMS: [u16; 3] = [0, 1, 2];

fn caller(rng: &mut Rng) -> Caller {
    let d = DOMS[rng.below(3) as usize];
    Caller::new(d, d == 0)
}

/// A port number biased towards the interesting low range.
fn port(rng: &mut Rng) -> u32 {
    if rng.chance(90) {
        rng.below(24) as u32
    } else {
        rng.below(5000) as u32
    }
}

fn check_invariants(r: &Registry<VecBits>) {
    for dom in r.domids() {
        let d = r.get(dom).unwrap();
        let t = &d.evtchn;
        assert_eq!(t.state(0), Some(State::Reserved), "port 0 of d{dom}");
        let mut open = 0;
        for p in 0..t.valid_ports() {
            let st = t.state(p).unwrap();
            let v = t.notify_vcpu(p).unwrap();
            assert!(v < t.max_vcpus());
            if st.is_open() {
                open += 1;
            } else {
                assert_eq!(v, 0, "free ports notify vCPU 0");
            }
            match st {
                State::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    let peer = r.get(remote_dom).expect("peer exists");
                    assert_eq!(
                        peer.evtchn.state(remote_port),
                        Some(State::Interdomain {
                            remote_dom: dom,
                            remote_port: p
                        }),
                        "d{dom}:{p} and d{remote_dom}:{remote_port} must point at each other"
                    );
                }
                State::Virq { virq } => {
                    let row = if virq_is_per_vcpu(virq) { v } else { 0 };
                    assert_eq!(t.virq_port(virq, row), Some(p), "VIRQ map of d{dom}:{p}");
                }
                _ => {}
            }
        }
        assert_eq!(t.in_use(), open, "accounting of d{dom}");
        // Every VIRQ map entry points at a VIRQ port of that VIRQ (so no port is both a VIRQ
        // binding and something else, and no VIRQ is bound twice on a vCPU).
        for vcpu in 0..t.max_vcpus() {
            for virq in 0..NR_VIRQS {
                if let Some(p) = t.virq_port(virq, vcpu) {
                    assert_eq!(t.state(p), Some(State::Virq { virq }));
                    if virq_is_per_vcpu(virq) {
                        assert_eq!(t.notify_vcpu(p), Some(vcpu));
                    } else {
                        assert_eq!(vcpu, 0, "global VIRQs live in vCPU 0's row");
                    }
                }
            }
            // A set selector implies a set upcall flag (the guest clears both together here).
            if d.bits.pending_sel(vcpu) != 0 {
                assert!(d.bits.upcall_pending(vcpu));
            }
        }
    }
}

/// Fresh FIFO links checked (the generator must reach them).
static FIFO_LINKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A FIFO delivery: PENDING set; linked unless masked; a fresh link is the queue's tail.
fn check_fifo_delivery(d: &evtchn::Domain<VecBits>, n: &Notify, port: u32, before: &VecBits) {
    let t = &d.evtchn;
    let v = t.notify_vcpu(port).unwrap();
    for u in n.kick.upcalls.iter() {
        assert!(d.bits.upcall_pending(u));
    }
    let (Some(w), Some(_)) = (t.fifo_word_gpa(port), t.fifo_control_block(v)) else {
        assert!(
            n.kick.upcalls.is_empty(),
            "no word or no control block: nothing raised"
        );
        return;
    };
    let (old, new) = (before.load_u32(w).unwrap(), d.bits.load_u32(w).unwrap());
    assert_ne!(new & F_PENDING, 0);
    if old & F_MASKED == 0 {
        assert_ne!(new & F_LINKED, 0);
        if old & F_LINKED == 0 {
            FIFO_LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(t.fifo_tail(v, t.priority(port).unwrap()), Some(port));
        }
    } else {
        assert_eq!(
            old & F_LINKED,
            new & F_LINKED,
            "a masked port is not linked"
        );
        assert!(n.kick.upcalls.is_empty());
    }
}

/// Checks a delivery against a snapshot of the target's bits taken before it.
fn check_delivery(r: &Registry<VecBits>, n: &Notify, port: u32, before: &VecBits) {
    let d = r.get(n.dom).unwrap();
    if d.evtchn.is_fifo() {
        return check_fifo_delivery(d, n, port, before);
    }
    let v = d.evtchn.notify_vcpu(port).unwrap();
    assert!(d.bits.is_pending(port));
    let fresh = !before.is_pending(port) && !before.is_masked(port);
    if fresh {
        assert_ne!(d.bits.pending_sel(v) & (1 << (port / 64)), 0);
        assert!(d.bits.upcall_pending(v));
        assert_eq!(n.kick.upcalls.contains(v), !before.upcall_pending(v));
    } else {
        assert!(n.kick.upcalls.is_empty());
    }
    for u in n.kick.upcalls.iter() {
        assert!(d.bits.upcall_pending(u));
    }
}

/// Returns (successful interdomain binds, interdomain closes seen, pollers woken).
fn run(seed: u64, steps: usize) -> (u32, u32, u32) {
    let (mut binds, mut iclose, mut woken) = (0, 0, 0);
    let mut rng = Rng(seed | 1);
    let mut r = common::registry();
    let mut guests: Vec<Consumer> = DOMS.iter().map(|_| Consumer::new(4)).collect();
    for _ in 0..steps {
        let c = caller(&mut rng);
        let dom = c.domid;
        let nv = r.get(dom).unwrap().evtchn.max_vcpus();
        match rng.below(17) {
            0 | 1 => {
                let target = if rng.chance(70) {
                    DOMID_SELF
                } else {
                    DOMS[rng.below(3) as usize]
                };
                let remote = if rng.chance(20) {
                    DOMID_SELF
                } else {
                    DOMS[rng.below(3) as usize]
                };
                let res = r.alloc_unbound(c, target, remote);
                if let Ok(p) = res {
                    assert_ne!(p, 0);
                }
            }
            2 | 3 => {
                let rd = if rng.chance(25) {
                    DOMID_SELF
                } else {
                    DOMS[rng.below(3) as usize]
                };
                // Prefer a port that is actually unbound for us.
                let rdr = c.resolve(rd);
                let cand: Vec<u32> = r
                    .get(rdr)
                    .unwrap()
                    .evtchn
                    .open_ports()
                    .filter(|&(_, s)| s == State::Unbound { remote_dom: dom })
                    .map(|(p, _)| p)
                    .collect();
                let rp = if !cand.is_empty() && rng.chance(80) {
                    cand[rng.below(cand.len() as u64) as usize]
                } else {
                    port(&mut rng)
                };
                let ok = cand.contains(&rp);
                let before = r.get(dom).unwrap().bits.clone();
                match r.bind_interdomain(c, rd, rp) {
                    Ok((lp, n)) => {
                        assert!(ok);
                        binds += 1;
                        assert_ne!(lp, 0);
                        check_delivery(&r, &n, lp, &before);
                    }
                    Err(e) => assert!(!ok, "bind to unbound d{rdr}:{rp} failed: {e}"),
                }
            }
            4 => {
                let _ = r.bind_virq(
                    c,
                    rng.below(NR_VIRQS as u64 + 1) as u32,
                    rng.below(nv as u64 + 1) as u32,
                );
            }
            5 => {
                let _ = r.bind_ipi(c, rng.below(nv as u64 + 1) as u32);
            }
            6 | 7 => {
                let p = port(&mut rng);
                let st = r.get(dom).unwrap().evtchn.state(p);
                let was_open = st.is_some_and(|s| s.is_open());
                if matches!(st, Some(State::Interdomain { .. })) {
                    iclose += 1;
                }
                assert_eq!(r.close(c, p).is_ok(), was_open);
                if was_open {
                    let d = r.get(dom).unwrap();
                    assert!(!d.evtchn.is_pending(p, &d.bits));
                }
            }
            8 | 9 => {
                let p = port(&mut rng);
                let st = r.get(dom).unwrap().evtchn.state(p);
                let target = match st {
                    Some(State::Interdomain {
                        remote_dom,
                        remote_port,
                    }) => Some((remote_dom, remote_port)),
                    Some(State::Ipi) => Some((dom, p)),
                    _ => None,
                };
                let before = target.map(|(d, _)| r.get(d).unwrap().bits.clone());
                match r.send(c, p) {
                    Ok(Some(n)) => {
                        woken += n.kick.pollers.len();
                        let (td, tp) = target.unwrap();
                        assert_eq!(n.dom, td);
                        check_delivery(&r, &n, tp, before.as_ref().unwrap());
                    }
                    Ok(None) => assert!(matches!(st, Some(State::Unbound { .. }))),
                    Err(_) => assert!(target.is_none()),
                }
            }
            10 => {
                let _ = r.bind_vcpu(c, port(&mut rng), rng.below(nv as u64 + 1) as u32);
            }
            11 => {
                // Guest-side bit traffic.
                let p = port(&mut rng) % 4096;
                let b = common::bits_mut(&mut r, dom);
                match rng.below(4) {
                    0 => b.mask(p),
                    1 => b.clear_mask(p),
                    2 => b.guest_clear_pending(p),
                    _ => {
                        b.guest_take_upcall(rng.below(nv as u64) as u32);
                    }
                }
            }
            12 => {
                let p = port(&mut rng);
                if let Ok(n) = r.unmask(c, p) {
                    for u in n.kick.upcalls.iter() {
                        assert!(r.get(dom).unwrap().bits.upcall_pending(u));
                    }
                    let d = r.get(dom).unwrap();
                    if !d.evtchn.is_fifo() {
                        assert!(!d.bits.is_masked(p));
                    } else if let Some(w) = d.evtchn.fifo_word_gpa(p) {
                        assert_eq!(d.bits.load_u32(w).unwrap() & F_MASKED, 0);
                    }
                }
            }
            13 => {
                let n = r
                    .raise_virq(
                        dom,
                        rng.below(NR_VIRQS as u64) as u32,
                        rng.below(nv as u64) as u32,
                    )
                    .unwrap();
                for u in n.kick.upcalls.iter() {
                    assert!(r.get(dom).unwrap().bits.upcall_pending(u));
                }
            }
            14 => {
                let v = rng.below(nv as u64) as u32;
                let ports = [port(&mut rng) % 64, port(&mut rng) % 64];
                let k = rng.below(3) as usize;
                let _ = r.poll(c, v, &ports[..k]);
                if rng.chance(30) {
                    r.get_mut(dom).unwrap().evtchn.poll_cancel(v);
                }
            }
            15 if rng.chance(50) => {
                // FIFO: switch, grow the array, set priorities, drain, flip masks.
                let t = &r.get(dom).unwrap().evtchn;
                if !t.is_fifo() {
                    if rng.chance(10) {
                        common::fifo_init(&mut r, dom, rng.below(3) as u32);
                        guests[dom as usize] = Consumer::new(4);
                    }
                } else {
                    match rng.below(5) {
                        0 => {
                            let i = t.fifo_words() / 1024;
                            common::bits_mut(&mut r, dom).add_ram(array_gfn(i));
                            let _ = r.expand_array(c, array_gfn(i));
                        }
                        1 => {
                            let prio = rng.below(17) as u32;
                            let res = r.set_priority(c, port(&mut rng), prio);
                            if prio > 15 {
                                assert!(res.is_err());
                            }
                        }
                        2 | 3 => {
                            let t = r.get(dom).unwrap().evtchn.clone();
                            let v = rng.below(nv as u64) as u32;
                            let b = common::bits_mut(&mut r, dom);
                            // Bounded: the hypervisor never builds a cycle.
                            guests[dom as usize].drain(&t, b, v, 10_000);
                        }
                        _ => {
                            let p = port(&mut rng);
                            if r.get(dom).unwrap().evtchn.fifo_word_gpa(p).is_some() {
                                common::fifo_mask(&mut r, dom, p, rng.chance(50));
                            }
                        }
                    }
                }
            }
            _ => {
                if rng.chance(15) {
                    let _ = r.reset(c, DOMID_SELF, false);
                    assert_eq!(r.get(dom).unwrap().evtchn.in_use(), 0);
                    assert!(!r.get(dom).unwrap().evtchn.is_fifo());
                    guests[dom as usize] = Consumer::new(4);
                }
            }
        }
        check_invariants(&r);
    }
    (binds, iclose, woken)
}

#[test]
fn random_sequences_keep_invariants() {
    for seed in 0..300u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 400);
    }
}

#[test]
fn long_random_sequence_keeps_invariants() {
    let (binds, closes, woken) = run(0xDEAD_BEEF, 20_000);
    let (b2, c2, w2) = run(0x1234_5678_9ABC, 20_000);
    assert!(b2 > 100 && c2 > 50 && w2 > 0, "{b2} {c2} {w2}");
    let links = FIFO_LINKS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(links > 100, "FIFO links checked: {links}");
    // The generator really exercises the interesting paths.
    assert!(
        binds > 100 && closes > 50 && woken > 0,
        "{binds} {closes} {woken}"
    );
}
