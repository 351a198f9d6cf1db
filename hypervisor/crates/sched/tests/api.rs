//! remove / adjust / insert edge cases and accounting.

mod common;
use common::*;

fn setup() -> (Credit2, VcpuRef, VcpuRef, VcpuRef) {
    let mut s = Credit2::new(1, Config::default());
    let (a, b, c) = (vr(1, 0), vr(1, 1), vr(2, 0));
    for v in [a, b, c] {
        s.insert(v, w(256), Affinity::ANY, 0).unwrap();
    }
    (s, a, b, c)
}

#[test]
fn remove_running_vcpu() {
    let (mut s, a, b, _) = setup();
    s.wake(a, 0);
    s.wake(b, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
    s.remove(a);
    assert_eq!(s.runtime(a), None);
    assert_eq!(s.state(a), None);
    assert_eq!(s.current(0), None);
    assert_eq!(
        s.take_tickles(),
        CpuMask::single(0),
        "its CPU must reschedule"
    );
    let d = s.do_schedule(0, MS);
    assert_eq!(d.next, Some(b));
    assert_eq!(s.runtime(b), Some(0));
    // Operations on a removed vCPU are harmless no-ops.
    s.sleep(a, MS);
    assert_eq!(s.wake(a, MS), None);
    s.yield_now(a, MS);
    s.remove(a);
    assert_eq!(
        s.set_affinity(a, Affinity::ANY, MS),
        Err(SchedError::NotFound)
    );
}

#[test]
fn remove_queued_and_asleep_vcpus() {
    let (mut s, a, b, c) = setup();
    s.wake(a, 0);
    s.wake(b, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
    assert_eq!(s.state(b), Some(VcpuState::Queued));
    s.remove(b); // queued
    s.remove(c); // asleep
    assert_eq!(s.params(2), None, "domain 2 is gone with its last vCPU");
    assert_eq!(s.params(1), Some(w(256)));
    assert_eq!(s.take_tickles(), CpuMask::NONE);
    // a runs alone now: full slices.
    let d = s.do_schedule(0, 10 * MS);
    assert_eq!(d.next, Some(a));
    // Re-insert under the same name: a fresh, asleep vCPU.
    s.insert(b, w(256), Affinity::ANY, 10 * MS).unwrap();
    assert_eq!(s.state(b), Some(VcpuState::Asleep));
    assert_eq!(s.runtime(b), Some(0));
}

#[test]
fn remove_parked_vcpu_and_sibling_gets_budget() {
    let mut s = Credit2::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(1, 1));
    s.insert(a, capped(20), Affinity::ANY, 0).unwrap();
    s.insert(b, capped(20), Affinity::ANY, 0).unwrap();
    s.wake(a, 0);
    s.wake(b, 0);
    // 2 ms per 10 ms, 1 ms quota each.
    let d = s.do_schedule(0, 0);
    assert_eq!(d.next, Some(a));
    assert_eq!(d.slice, Some(MS));
    let d = s.do_schedule(0, MS);
    assert_eq!(
        d,
        Decision {
            next: Some(b),
            slice: Some(MS)
        }
    );
    let d = s.do_schedule(0, 2 * MS);
    assert_eq!(
        d,
        Decision {
            next: None,
            slice: Some(8 * MS)
        }
    );
    assert_eq!(s.state(a), Some(VcpuState::Parked));
    assert_eq!(s.state(b), Some(VcpuState::Parked));
    s.remove(a);
    let d = s.do_schedule(0, 10 * MS);
    assert_eq!(
        d,
        Decision {
            next: Some(b),
            slice: Some(2 * MS)
        },
        "b alone: the whole budget"
    );
}

#[test]
fn adjust_weight_changes_shares() {
    let mut sim = Sim::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    sim.add(a, w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(b, w(256), Affinity::ANY, Behaviour::Busy);
    sim.run_until(2 * SEC);
    let (a0, b0) = (sim.stat(a).ran, sim.stat(b).ran);
    sim.s.adjust(1, w(768), sim.now);
    assert_eq!(sim.s.params(1), Some(w(768)));
    sim.run_until(6 * SEC);
    let (a1, b1) = (sim.stat(a).ran - a0, sim.stat(b).ran - b0);
    let r = ratio_milli(a1, b1);
    println!("after adjust 256→768: ratio {}.{:03}", r / 1000, r % 1000);
    assert!((2850..=3150).contains(&r), "{r}");
}

#[test]
fn adjust_zero_weight_and_unknown_domain() {
    let (mut s, a, _, _) = setup();
    s.adjust(1, Params { weight: 0, cap: 0 }, 0);
    assert_eq!(s.params(1), Some(w(1)), "weight 0 is treated as 1");
    s.adjust(42, w(512), 0); // no such domain: nothing happens
    assert_eq!(s.params(42), None);
    // insert with different params re-parameterises the whole domain.
    s.insert(vr(1, 5), w(512), Affinity::ANY, 0).unwrap();
    assert_eq!(s.params(1), Some(w(512)));
    s.wake(a, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
}

#[test]
fn runtime_accounts_every_charged_nanosecond() {
    let mut sim = Sim::new(2, Config::default());
    let vs: Vec<VcpuRef> = (0..5).map(|i| vr(i, 0)).collect();
    sim.add(vs[0], w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(vs[1], capped(30), Affinity::ANY, Behaviour::Busy);
    sim.add(
        vs[2],
        w(100),
        Affinity::pinned(1),
        Behaviour::Cycle {
            run: 700 * US,
            block: 3 * MS,
        },
    );
    sim.add(
        vs[3],
        w(900),
        Affinity::ANY,
        Behaviour::Cycle {
            run: 5 * MS,
            block: 5 * MS,
        },
    );
    sim.add(
        vs[4],
        w(256),
        Affinity::ANY,
        Behaviour::OnWake { run: 2 * MS },
    );
    for k in 0..50 {
        sim.wake_at(k * 37 * MS + 5, vs[4]);
    }
    sim.run_until(2 * SEC);
    // run_until checks runtime() against the simulated time; also the totals.
    let busy: Time = vs.iter().map(|&v| sim.stat(v).ran).sum();
    let idle = sim.cpus[0].idle + sim.cpus[1].idle;
    assert_eq!(busy + idle, 2 * 2 * SEC);
    assert!(sim.stat(vs[1]).ran <= 2 * SEC * 30 / 100 + 2 * MS);
    assert_eq!(sim.stat(vs[4]).bursts, 50);
}

#[test]
fn time_may_skew_between_cpus() {
    // CPUs report slightly different "now"s; nothing underflows or panics.
    let mut s = Credit2::new(2, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    s.insert(a, capped(50), Affinity::ANY, 1000).unwrap();
    s.insert(b, w(256), Affinity::ANY, 1000).unwrap();
    s.wake(a, 1000);
    s.wake(b, 900);
    let _ = s.do_schedule(0, 1000);
    let _ = s.do_schedule(1, 800);
    let _ = s.do_schedule(0, 700);
    s.sleep(a, 600);
    let _ = s.do_schedule(0, 650);
    assert_eq!(s.runtime(a), Some(0));
}
