//! Event channels (`hypervisor/crates/evtchn`) driven by a sequence of `EVTCHNOP_*`
//! hypercalls, VIRQ raises, guest-side bit flips and domain destruction on a [`Registry`] of
//! three domains (dom0 privileged).
//!
//! Checks after every operation: the in-use count matches the open ports; every open port is
//! valid, within the domain's port limit, and notifies an existing vCPU; interdomain channels
//! are symmetric (the peer exists and points back); the VIRQ table and the port states agree;
//! kicks name existing vCPUs of existing domains; a successful send leaves the destination
//! port pending; a blocked poll registers the poller.
//!
//! FIFO ABI: domains switch with `init_control` (good and bad GFNs, offsets, vCPUs), add
//! event-array pages, set priorities, and the guest rewrites its event words and control
//! blocks at will, gives pages away and walks its queues (boundedly); argument errors must be
//! Xen's, and the hypervisor side must neither loop nor panic whatever the words hold.

use evtchn::{
    Caller, Config, Errno, PollOutcome, Port, Registry, SharedBits, State, VecBits,
    FIFO_CONTROL_BLOCK_SIZE, NR_PORTS,
};
use xen_abi::event_channel::EvtchnStatus;
use xen_abi::xen::{virq_is_per_vcpu, DOMID_SELF, NR_VIRQS};
use xen_abi::DomId;

use crate::input::Input;

/// Operations per input (longer inputs are cut): the invariants are checked after each one.
const MAX_STEPS: u32 = 160;

const DOMS: [DomId; 3] = [0, 1, 2];

fn add(reg: &mut Registry<VecBits>, inp: &mut Input<'_>, d: DomId) {
    let vcpus = 1 + inp.below(4);
    let max_port = inp.pick(&[NR_PORTS - 1, 1023, 127, 63, 5]);
    let mut bits = VecBits::new(vcpus);
    for g in RAM_GFNS {
        bits.add_ram(g);
    }
    reg.add(d, Config::new(vcpus).with_max_port(max_port), bits)
        .unwrap();
}

/// Guest RAM frames of every domain (for control blocks and event-array pages).
const RAM_GFNS: [u64; 6] = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15];

fn gfn(inp: &mut Input<'_>) -> u64 {
    match inp.u8() % 8 {
        0..=5 => RAM_GFNS[usize::from(inp.u8()) % RAM_GFNS.len()],
        6 => 0x99,
        _ => inp.u64(),
    }
}

/// The FIFO sub-ops and the guest's own traffic on its FIFO pages.
fn fifo_op(reg: &mut Registry<VecBits>, inp: &mut Input<'_>, caller: Caller, vcpus: u32) {
    let who = caller.domid;
    match inp.u8() % 6 {
        0 => {
            let (v, g) = (inp.below(6), gfn(inp));
            let off = match inp.u8() % 4 {
                0 => inp.u32(),
                1 => inp.below(4096 / 8) * 8,
                _ => 0,
            };
            let had = reg.get(who).unwrap().evtchn.fifo_control_block(v).is_some();
            let ram = reg.get(who).unwrap().bits.frame_ok(g);
            let res = reg.init_control(caller, v, g, off);
            let want = if v >= vcpus {
                Err(Errno::ENOENT)
            } else if off > 4096 - 72 || off % 8 != 0 || had || !ram {
                Err(Errno::EINVAL)
            } else {
                Ok(17)
            };
            assert_eq!(
                res, want,
                "init_control(vcpu {v}, gfn {g:#x}, offset {off})"
            );
            if res.is_ok() {
                assert!(reg.get(who).unwrap().evtchn.is_fifo());
            }
        }
        1 => {
            let g = gfn(inp);
            let fifo = reg.get(who).unwrap().evtchn.is_fifo();
            match reg.expand_array(caller, g) {
                Ok(n) => check_kick(reg, &n),
                Err(e) => assert!(
                    matches!(e, Errno::EINVAL | Errno::ENOSPC) || (!fifo && e == Errno::EOPNOTSUPP),
                    "expand_array: {e:?}"
                ),
            }
        }
        2 => {
            let (p, prio) = (port(inp), inp.below(18));
            if reg.set_priority(caller, p, prio).is_ok() {
                assert!(prio <= 15);
                assert_eq!(reg.get(who).unwrap().evtchn.priority(p), Some(prio));
            }
        }
        3 => {
            // The guest writes anything anywhere in its pages.
            let g = RAM_GFNS[usize::from(inp.u8()) % RAM_GFNS.len()];
            let (i, v) = (inp.below(1024), inp.u32());
            reg.get_mut(who)
                .unwrap()
                .bits
                .poke_u32(g * 4096 + u64::from(i) * 4, v);
        }
        4 => {
            // The guest gives a page away, or takes it back (zeroed).
            let g = RAM_GFNS[usize::from(inp.u8()) % RAM_GFNS.len()];
            let bits = &mut reg.get_mut(who).unwrap().bits;
            if inp.bool() {
                bits.remove_ram(g);
            } else {
                bits.add_ram(g);
            }
        }
        _ => {
            // A Linux-like queue walk, bounded (the words may hold anything).
            let v = inp.below(vcpus);
            let d = reg.get_mut(who).unwrap();
            let Some(cb) = d.evtchn.fifo_control_block(v) else {
                return;
            };
            let b = &mut d.bits;
            for _ in 0..64 {
                let ready = b.peek_u32(cb).unwrap_or(0);
                if ready == 0 {
                    break;
                }
                let q = ready.trailing_zeros();
                let head = b.peek_u32(cb + 8 + 4 * u64::from(q)).unwrap_or(0);
                let next = match d.evtchn.fifo_word_gpa(head) {
                    Some(w) => {
                        let old = b.peek_u32(w).unwrap_or(0);
                        b.poke_u32(w, old & !((1 << 29) | 0x1ffff) & !(1 << 31));
                        old & 0x1ffff
                    }
                    None => 0,
                };
                if next == 0 {
                    b.poke_u32(cb, ready & !(1 << q));
                } else {
                    b.poke_u32(cb + 8 + 4 * u64::from(q), next);
                }
            }
        }
    }
}

fn port(inp: &mut Input<'_>) -> Port {
    match inp.u8() {
        0..=239 => Port::from(inp.u8() % 16),
        240..=250 => Port::from(inp.u16()),
        _ => inp.u32(),
    }
}

fn dom(inp: &mut Input<'_>) -> DomId {
    match inp.u8() % 8 {
        0..=2 => DOMS[usize::from(inp.u8()) % 3],
        3..=5 => DOMID_SELF,
        6 => 3,
        _ => inp.u16(),
    }
}

fn check(reg: &Registry<VecBits>) {
    for d in reg.domids() {
        let t = &reg.get(d).unwrap().evtchn;
        let cfg = t.config();
        let mut open = 0;
        for (p, st) in t.open_ports() {
            open += 1;
            assert!(t.is_valid(p) && p <= cfg.max_port && p < NR_PORTS);
            let v = t.notify_vcpu(p).unwrap();
            assert!(v < cfg.max_vcpus, "port {p} notifies vCPU {v}");
            match st {
                State::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    let peer = reg
                        .get(remote_dom)
                        .unwrap_or_else(|| panic!("d{d} port {p}: peer d{remote_dom} is gone"));
                    assert_eq!(
                        peer.evtchn.state(remote_port),
                        Some(State::Interdomain {
                            remote_dom: d,
                            remote_port: p
                        }),
                        "d{d} port {p} is not mirrored"
                    );
                }
                State::Virq { virq } => {
                    let vcpu = if virq_is_per_vcpu(virq) { v } else { 0 };
                    assert_eq!(t.virq_port(virq, vcpu), Some(p));
                }
                _ => {}
            }
        }
        assert_eq!(t.in_use(), open, "d{d}: in_use drifted");
        for vcpu in 0..cfg.max_vcpus {
            for virq in 0..NR_VIRQS {
                if let Some(p) = t.virq_port(virq, vcpu) {
                    assert_eq!(t.state(p), Some(State::Virq { virq }));
                    if virq_is_per_vcpu(virq) {
                        assert_eq!(t.notify_vcpu(p), Some(vcpu));
                    } else {
                        assert_eq!(vcpu, 0);
                    }
                }
            }
        }
    }
}

fn check_kick(reg: &Registry<VecBits>, n: &evtchn::Notify) {
    let t = &reg.get(n.dom).expect("kick for a missing domain").evtchn;
    for v in n.kick.vcpus().iter() {
        assert!(v < t.max_vcpus(), "kick of vCPU {v}");
    }
}

/// The event-channel target.
pub fn target_evtchn(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut reg = Registry::new();
    for d in DOMS {
        add(&mut reg, &mut inp, d);
    }
    let mut steps = 0;
    while !inp.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let who = DOMS[usize::from(inp.u8()) % 3];
        if reg.get(who).is_none() {
            add(&mut reg, &mut inp, who);
            continue;
        }
        let caller = Caller::new(who, who == 0);
        let vcpus = reg.get(who).unwrap().evtchn.max_vcpus();
        match inp.u8() % 20 {
            0 => {
                let (d, r) = (dom(&mut inp), dom(&mut inp));
                let _ = reg.alloc_unbound(caller, d, r);
            }
            1 => {
                let (r, p) = (dom(&mut inp), port(&mut inp));
                if let Ok((_, n)) = reg.bind_interdomain(caller, r, p) {
                    check_kick(&reg, &n);
                }
            }
            2 => {
                let (virq, vcpu) = (inp.below(NR_VIRQS + 2), inp.below(6));
                let _ = reg.bind_virq(caller, virq, vcpu);
            }
            3 => {
                let _ = reg.bind_ipi(caller, inp.below(6));
            }
            4 => {
                let _ = reg.close(caller, port(&mut inp));
            }
            5 => {
                let p = port(&mut inp);
                let t = &reg.get(who).unwrap().evtchn;
                let target = match t.state(p) {
                    Some(State::Interdomain {
                        remote_dom,
                        remote_port,
                    }) => Some((remote_dom, remote_port)),
                    Some(State::Ipi) => Some((who, p)),
                    _ => None,
                };
                if let Ok(n) = reg.send(caller, p) {
                    if let Some(n) = &n {
                        check_kick(&reg, n);
                    }
                    if let Some((rd, rp)) = target {
                        let d = reg.get(rd).unwrap();
                        let t = &d.evtchn;
                        // FIFO: an event for a port without an event word (or whose page
                        // the guest gave away), or for a vCPU without a control block, is
                        // kept or dropped as in Xen. A guest may also lay a control block
                        // over its own event words: queueing then writes a HEAD over the
                        // word, which is the guest's own doing (Xen does the same).
                        let traceable = !t.is_fifo()
                            || (t.fifo_word_gpa(rp).is_some_and(|w| {
                                d.bits.load_u32(w).is_some()
                                    && !(0..t.max_vcpus()).any(|v| {
                                        t.fifo_control_block(v).is_some_and(|cb| {
                                            (cb..cb + u64::from(FIFO_CONTROL_BLOCK_SIZE))
                                                .contains(&w)
                                        })
                                    })
                            }) && t
                                .notify_vcpu(rp)
                                .and_then(|v| t.fifo_control_block(v))
                                .is_some());
                        if traceable {
                            assert!(t.is_pending(rp, &d.bits), "send left no trace");
                        }
                    }
                }
            }
            6 => {
                let mut st = EvtchnStatus {
                    dom: dom(&mut inp),
                    port: port(&mut inp),
                    ..Default::default()
                };
                let _ = reg.status(caller, &mut st);
            }
            7 => {
                let (p, v) = (port(&mut inp), inp.below(6));
                let _ = reg.bind_vcpu(caller, p, v);
            }
            8 => {
                if let Ok(n) = reg.unmask(caller, port(&mut inp)) {
                    check_kick(&reg, &n);
                }
            }
            9 => {
                let (d, paused) = (dom(&mut inp), inp.bool());
                let _ = reg.reset(caller, d, paused);
            }
            10 => {
                let vcpu = inp.below(6);
                let n = usize::from(inp.u8() % 4);
                let ports: Vec<Port> = (0..n).map(|_| port(&mut inp)).collect();
                if let Ok(PollOutcome::Blocked) = reg.poll(caller, vcpu, &ports) {
                    assert!(reg.get(who).unwrap().evtchn.is_polling(vcpu));
                }
            }
            11 => {
                let (d, virq, vcpu) = (dom(&mut inp), inp.below(NR_VIRQS + 2), inp.below(6));
                if let Some(n) = reg.raise_virq(d, virq, vcpu) {
                    check_kick(&reg, &n);
                }
            }
            12 => {
                // The guest flips its own bits.
                let p = port(&mut inp) % NR_PORTS;
                let op = inp.u8() % 4;
                let v = inp.below(vcpus);
                let bits = &mut reg.get_mut(who).unwrap().bits;
                match op {
                    0 => bits.mask(p),
                    1 => bits.clear_mask(p),
                    2 => bits.guest_clear_pending(p),
                    _ => {
                        bits.guest_take_upcall(v);
                    }
                }
            }
            13 => {
                let d = DOMS[usize::from(inp.u8()) % 3];
                reg.remove(d);
            }
            16..=19 => fifo_op(&mut reg, &mut inp, caller, vcpus),
            14 => {
                let (pirq, flags) = (inp.u32(), inp.u32());
                assert!(reg.bind_pirq(caller, pirq, flags).is_err());
            }
            _ => {
                let vcpu = inp.below(6);
                if vcpu < vcpus {
                    reg.get_mut(who).unwrap().evtchn.poll_cancel(vcpu);
                    assert!(!reg.get(who).unwrap().evtchn.is_polling(vcpu));
                }
            }
        }
        check(&reg);
    }
}
