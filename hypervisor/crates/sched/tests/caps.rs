//! Caps: domain-wide budgets per period, parking, idling with a replenishment timer.

mod common;
use common::*;

#[test]
fn cap_25_alone_gets_25_percent() {
    let mut sim = Sim::new(1, Config::default());
    let (c, idle) = (vr(1, 0), vr(2, 0));
    sim.add(c, capped(25), Affinity::ANY, Behaviour::Busy);
    sim.add(idle, w(256), Affinity::ANY, Behaviour::OnWake { run: MS }); // never woken
    sim.run_until(5 * SEC);
    let share = sim.share_bp(c);
    println!(
        "cap 25%: {share} bp, CPU idle {} bp, timed idle decisions {}",
        sim.cpus[0].idle * 10_000 / sim.now,
        sim.cpus[0].timed_idle
    );
    assert!(share.abs_diff(2500) <= 200, "{share} bp");
    assert_eq!(sim.stat(idle).ran, 0);
    assert!(
        sim.cpus[0].timed_idle >= 400,
        "the CPU idled with a timer to each replenishment"
    );
}

#[test]
fn cap_50_beside_uncapped_hog() {
    let mut sim = Sim::new(1, Config::default());
    let (c, hog) = (vr(1, 0), vr(2, 0));
    sim.add(c, capped(50), Affinity::ANY, Behaviour::Busy);
    sim.add(hog, w(256), Affinity::ANY, Behaviour::Busy);
    sim.run_until(5 * SEC);
    let (sc, sh) = (sim.share_bp(c), sim.share_bp(hog));
    println!("cap 50% beside a hog: capped {sc} bp, hog {sh} bp");
    assert!(sc <= 5000 + 20, "capped got {sc} bp");
    assert!(
        sc >= 4500,
        "capped got only {sc} bp (its fair share is 50%)"
    );
    assert_eq!(sim.cpus[0].idle, 0);
    assert!(sc + sh >= 9_998, "hog gets the rest: {sh} bp");
}

#[test]
fn cap_30_beside_heavier_hog_is_binding_and_hog_gets_rest() {
    // The capped vCPU has 4× the weight, so without the cap it would get 80%.
    let mut sim = Sim::new(1, Config::default());
    let (c, hog) = (vr(1, 0), vr(2, 0));
    sim.add(
        c,
        Params {
            weight: 1024,
            cap: 30,
        },
        Affinity::ANY,
        Behaviour::Busy,
    );
    sim.add(hog, w(256), Affinity::ANY, Behaviour::Busy);
    sim.run_until(5 * SEC);
    let (sc, sh) = (sim.share_bp(c), sim.share_bp(hog));
    println!("cap 30% (weight 1024) beside a hog (256): capped {sc} bp, hog {sh} bp");
    assert!(sc.abs_diff(3000) <= 50, "capped got {sc} bp");
    assert!(sh >= 10_000 - sc - 10, "hog got {sh} bp");
}

#[test]
fn capped_alone_idles_until_replenishment() {
    let mut s = Credit2::new(1, Config::default());
    let v = vr(1, 0);
    s.insert(v, capped(25), Affinity::ANY, 0).unwrap();
    assert_eq!(s.wake(v, 0), Some(0));
    let d = s.do_schedule(0, 0);
    assert_eq!(
        d,
        Decision {
            next: Some(v),
            slice: Some(2_500 * US)
        }
    );
    let d = s.do_schedule(0, 2_500 * US);
    assert_eq!(
        d,
        Decision {
            next: None,
            slice: Some(7_500 * US)
        },
        "idle until the period ends"
    );
    assert_eq!(s.state(v), Some(VcpuState::Parked));
    // Early reschedule (e.g. spurious): still parked, timer to the same point.
    let d = s.do_schedule(0, 4 * MS);
    assert_eq!(
        d,
        Decision {
            next: None,
            slice: Some(6 * MS)
        }
    );
    let d = s.do_schedule(0, 10 * MS);
    assert_eq!(
        d,
        Decision {
            next: Some(v),
            slice: Some(2_500 * US)
        }
    );
    assert_eq!(s.runtime(v), Some(2_500 * US));
    // Sleeping while parked, then waking after the replenishment: runs at once.
    let d = s.do_schedule(0, 12_500 * US);
    assert_eq!(d.next, None);
    s.sleep(v, 13 * MS);
    assert_eq!(s.state(v), Some(VcpuState::Asleep));
    assert_eq!(
        s.do_schedule(0, 13 * MS),
        Decision {
            next: None,
            slice: None
        },
        "nothing parked: no timer"
    );
    assert_eq!(s.wake(v, 21 * MS), Some(0));
    assert_eq!(s.do_schedule(0, 21 * MS).next, Some(v));
}

#[test]
fn late_reschedule_overrun_is_repaid() {
    // The hypervisor reschedules 5 ms late: the 5 ms overrun is debt paid from later periods.
    let mut s = Credit2::new(1, Config::default());
    let v = vr(1, 0);
    s.insert(v, capped(20), Affinity::ANY, 0).unwrap();
    s.wake(v, 0);
    assert_eq!(s.do_schedule(0, 0).slice, Some(2 * MS));
    let d = s.do_schedule(0, 7 * MS); // ran 7 ms on a 2 ms budget
    assert_eq!(d.next, None);
    // Debt: 2 - 7 = -5 ms. At 10 ms: -3, at 20 ms: -1 (still parked), at 30 ms: +1 ms.
    let mut t = 7 * MS;
    let mut ran_at = None;
    while t < 40 * MS {
        let d = s.do_schedule(0, t);
        if d.next.is_some() {
            ran_at = Some(t);
            break;
        }
        t += d.slice.unwrap();
    }
    println!(
        "after a 5 ms overrun on a 2 ms/10 ms cap, next run at {:?} ms",
        ran_at.map(|t| t / MS)
    );
    assert_eq!(ran_at, Some(30 * MS));
}

#[test]
fn domain_wide_budget_is_shared_by_vcpus() {
    // Two busy vCPUs of a domain capped at 50% on 2 CPUs: together 50% of one CPU.
    let mut sim = Sim::new(2, Config::default());
    let (a, b) = (vr(1, 0), vr(1, 1));
    sim.add(a, capped(50), Affinity::ANY, Behaviour::Busy);
    sim.add(b, capped(50), Affinity::ANY, Behaviour::Busy);
    sim.run_until(4 * SEC);
    let total = sim.share_bp(a) + sim.share_bp(b);
    println!(
        "2 vCPUs, domain cap 50%: {} + {} = {total} bp",
        sim.share_bp(a),
        sim.share_bp(b)
    );
    assert!(total.abs_diff(5000) <= 100, "{total}");
    assert!(
        sim.share_bp(a).abs_diff(sim.share_bp(b)) <= 500,
        "shared evenly"
    );
}

#[test]
fn cap_above_100_for_multi_vcpu_domain() {
    // Three busy vCPUs capped at 150% on 2 CPUs beside nothing else: 1.5 CPUs.
    let mut sim = Sim::new(2, Config::default());
    let vs = [vr(1, 0), vr(1, 1), vr(1, 2)];
    for &v in &vs {
        sim.add(v, capped(150), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(4 * SEC);
    let total: u64 = vs.iter().map(|&v| sim.share_bp(v)).sum();
    println!("3 vCPUs on 2 CPUs, cap 150%: {total} bp");
    assert!(total.abs_diff(15_000) <= 200, "{total}");
}

#[test]
fn adjust_cap_at_run_time() {
    let mut sim = Sim::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    sim.add(a, w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(b, w(256), Affinity::ANY, Behaviour::Busy);
    sim.run_until(SEC);
    let a1 = sim.stat(a).ran;
    assert!(a1.abs_diff(SEC / 2) <= 10 * MS);
    sim.s.adjust(1, capped(10), sim.now);
    sim.run_until(3 * SEC);
    let a2 = sim.stat(a).ran - a1;
    println!("after adjust to cap 10%: {} ms of 2000", a2 / MS);
    assert!(a2.abs_diff(200 * MS) <= 10 * MS, "{a2}");
    // Uncap: back to half.
    sim.s.adjust(1, w(256), sim.now);
    sim.run_until(5 * SEC);
    let a3 = sim.stat(a).ran - a1 - a2;
    println!("after uncapping: {} ms of 2000", a3 / MS);
    assert!(a3.abs_diff(SEC) <= 20 * MS, "{a3}");
}

#[test]
fn wake_into_an_exhausted_budget_arms_an_idle_cpu() {
    // Regression (found by the randomised test): a vCPU parked at wake-up while every CPU
    // idled without a timer was never run.
    let mut s = Credit2::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(1, 1));
    s.insert(a, capped(20), Affinity::ANY, 0).unwrap();
    s.insert(b, capped(20), Affinity::ANY, 0).unwrap();
    s.wake(a, 0);
    assert_eq!(
        s.do_schedule(0, 0),
        Decision {
            next: Some(a),
            slice: Some(MS)
        },
        "quota: 2 ms / 2 vCPUs"
    );
    assert_eq!(
        s.do_schedule(0, MS),
        Decision {
            next: Some(a),
            slice: Some(MS)
        },
        "b asleep: a may use its share"
    );
    s.sleep(a, 2 * MS);
    assert_eq!(
        s.do_schedule(0, 2 * MS),
        Decision {
            next: None,
            slice: None
        }
    );
    assert_eq!(
        s.wake(b, 3 * MS),
        Some(0),
        "parked: the idle CPU must arm a timer"
    );
    assert_eq!(s.state(b), Some(VcpuState::Parked));
    assert_eq!(
        s.do_schedule(0, 3 * MS),
        Decision {
            next: None,
            slice: Some(7 * MS)
        }
    );
    assert_eq!(s.do_schedule(0, 10 * MS).next, Some(b));
}
