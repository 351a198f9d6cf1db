//! Hard and soft affinity, set_affinity, several runqueues.

mod common;
use common::*;

#[test]
fn hard_pinned_vcpu_never_runs_elsewhere() {
    let mut sim = Sim::new(2, Config::default());
    let p = vr(1, 0);
    sim.add(p, w(256), Affinity::pinned(1), Behaviour::Busy);
    for i in 0..3 {
        sim.add(vr(2, i), w(256), Affinity::ANY, Behaviour::Busy);
    }
    sim.add(
        vr(3, 0),
        w(256),
        Affinity::ANY,
        Behaviour::Cycle {
            run: 300 * US,
            block: 2 * MS,
        },
    );
    sim.run_until(3 * SEC);
    let st = sim.stat(p);
    println!(
        "pinned to CPU 1: {} ms on CPU 0, {} ms on CPU 1",
        st.ran_on[0] / MS,
        st.ran_on[1] / MS
    );
    assert_eq!(st.ran_on[0], 0);
    assert!(
        st.ran_on[1] >= 3 * SEC * 3 / 10,
        "pinned vCPU still gets its share of CPU 1"
    );
}

#[test]
fn pick_cpu_prefers_soft_affinity() {
    let mut s = Credit2::new(2, Config::default());
    let v = vr(1, 0);
    let hog = vr(2, 0);
    s.insert(v, w(256), Affinity::prefer(CpuMask::single(1)), 0)
        .unwrap();
    s.insert(hog, w(256), Affinity::pinned(1), 0).unwrap();
    assert_eq!(s.pick_cpu(v), 1, "both idle: the soft CPU");
    // CPU 1 busy, CPU 0 idle: an idle CPU beats a busy preferred one.
    assert_eq!(s.wake(hog, 0), Some(1));
    assert_eq!(s.do_schedule(1, 0).next, Some(hog));
    assert_eq!(s.pick_cpu(v), 0);
    // Both busy: the soft CPU again.
    let other = vr(3, 0);
    s.insert(other, w(256), Affinity::pinned(0), 0).unwrap();
    assert_eq!(s.wake(other, 0), Some(0));
    assert_eq!(s.do_schedule(0, 0).next, Some(other));
    assert_eq!(s.pick_cpu(v), 1);
}

#[test]
fn soft_affinity_keeps_vcpus_on_their_cpus() {
    let mut sim = Sim::new(2, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    sim.add(
        a,
        w(256),
        Affinity::prefer(CpuMask::single(1)),
        Behaviour::Cycle {
            run: 2 * MS,
            block: MS,
        },
    );
    sim.add(
        b,
        w(256),
        Affinity::prefer(CpuMask::single(0)),
        Behaviour::Cycle {
            run: 2 * MS,
            block: MS,
        },
    );
    sim.run_until(2 * SEC);
    for (v, soft) in [(a, 1), (b, 0)] {
        let st = sim.stat(v);
        let on_soft = st.ran_on[soft] * 1000 / st.ran;
        println!("{v:?}: {on_soft}‰ of its time on its soft CPU {soft}");
        assert!(on_soft >= 950, "{v:?}: {on_soft}‰");
    }
}

#[test]
fn set_affinity_moves_a_running_vcpu() {
    let mut s = Credit2::new(2, Config::default());
    let v = vr(1, 0);
    s.insert(v, w(256), Affinity::pinned(0), 0).unwrap();
    assert_eq!(s.wake(v, 0), Some(0));
    assert_eq!(s.do_schedule(0, 0).next, Some(v));
    s.set_affinity(v, Affinity::pinned(1), MS).unwrap();
    assert_eq!(s.take_tickles(), CpuMask::single(0), "CPU 0 must drop it");
    let d = s.do_schedule(0, 2 * MS);
    assert_eq!(d.next, None);
    assert_eq!(
        s.take_tickles(),
        CpuMask::single(1),
        "idle CPU 1 must pick it up"
    );
    assert_eq!(s.do_schedule(1, 2 * MS).next, Some(v));
    assert_eq!(s.runtime(v), Some(2 * MS));
}

#[test]
fn set_affinity_of_queued_and_asleep_vcpus() {
    let mut s = Credit2::new(2, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    s.insert(a, w(256), Affinity::pinned(0), 0).unwrap();
    s.insert(b, w(256), Affinity::pinned(0), 0).unwrap();
    s.wake(a, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
    assert_eq!(s.wake(b, 0), None, "same credit: no preemption");
    assert_eq!(s.state(b), Some(VcpuState::Queued));
    s.set_affinity(b, Affinity::pinned(1), 0).unwrap();
    assert_eq!(s.take_tickles(), CpuMask::single(1));
    assert_eq!(s.do_schedule(1, 0).next, Some(b));
    // Asleep: the new affinity applies at the next wake.
    s.sleep(a, MS);
    assert_eq!(s.do_schedule(0, MS).next, None);
    s.set_affinity(
        a,
        Affinity {
            hard: CpuMask::all(2),
            soft: CpuMask::single(1),
        },
        MS,
    )
    .unwrap();
    assert_eq!(s.pick_cpu(a), 0, "soft CPU 1 is busy, CPU 0 idle");
}

#[test]
fn affinity_errors() {
    let mut s = Credit2::new(2, Config::default());
    let v = vr(1, 0);
    let none = Affinity {
        hard: CpuMask::NONE,
        soft: CpuMask::ANY,
    };
    let offline = Affinity {
        hard: CpuMask::single(5),
        soft: CpuMask::single(5),
    };
    assert_eq!(s.insert(v, w(256), none, 0), Err(SchedError::NoCpu));
    assert_eq!(s.insert(v, w(256), offline, 0), Err(SchedError::NoCpu));
    assert_eq!(
        s.insert(v, w(0), Affinity::ANY, 0),
        Err(SchedError::InvalidWeight)
    );
    s.insert(v, w(256), Affinity::pinned(1), 0).unwrap();
    assert_eq!(
        s.insert(v, w(256), Affinity::ANY, 0),
        Err(SchedError::Exists)
    );
    assert_eq!(s.set_affinity(v, none, 0), Err(SchedError::NoCpu));
    assert_eq!(s.set_affinity(v, offline, 0), Err(SchedError::NoCpu));
    assert_eq!(
        s.affinity(v),
        Some(Affinity::pinned(1)),
        "unchanged after an error"
    );
    assert_eq!(
        s.set_affinity(vr(9, 9), Affinity::ANY, 0),
        Err(SchedError::NotFound)
    );
    // Soft affinity outside hard is ignored, not an error.
    let odd = Affinity {
        hard: CpuMask::single(0),
        soft: CpuMask::single(1),
    };
    s.set_affinity(v, odd, 0).unwrap();
    assert_eq!(s.pick_cpu(v), 0);
}

#[test]
fn runqueue_layouts() {
    let cfg = Config::default();
    assert_eq!(
        Credit2::with_runqueues(cfg, &[]).err(),
        Some(SchedError::InvalidTopology)
    );
    assert_eq!(
        Credit2::with_runqueues(cfg, &[CpuMask(0b11), CpuMask(0b10)]).err(),
        Some(SchedError::InvalidTopology)
    );
    assert_eq!(
        Credit2::with_runqueues(cfg, &[CpuMask(0b1), CpuMask::NONE]).err(),
        Some(SchedError::InvalidTopology)
    );
    let s = Credit2::with_runqueues(cfg, &[CpuMask(0b0011), CpuMask(0b1100)]).unwrap();
    assert_eq!(s.online(), CpuMask::all(4));
}

#[test]
fn two_runqueues_balance_by_placement_and_stealing() {
    let s = Credit2::with_runqueues(Config::default(), &[CpuMask::single(0), CpuMask::single(1)])
        .unwrap();
    let mut sim = Sim::with(s, 2);
    let vs: Vec<VcpuRef> = (0..4).map(|i| vr(1, i)).collect();
    for &v in &vs {
        sim.add(v, w(256), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(2 * SEC);
    for &v in &vs {
        let share = sim.share_bp(v);
        println!("per-CPU runqueues, 4 busy vCPUs: {v:?} {share} bp");
        assert!(share.abs_diff(5000) <= 200, "{share}");
    }
    // Both vCPUs of runqueue 1 pause: CPU 1 has nothing left and must steal from runqueue 0.
    let on1: Vec<VcpuRef> = vs
        .iter()
        .copied()
        .filter(|&v| sim.stat(v).ran_on[1] > 0)
        .collect();
    let on0: Vec<VcpuRef> = vs
        .iter()
        .copied()
        .filter(|&v| sim.stat(v).ran_on[0] > 0)
        .collect();
    assert_eq!(
        (on0.len(), on1.len()),
        (2, 2),
        "placed two per runqueue, no migration while busy"
    );
    for &v in &on1 {
        sim.pause(v);
    }
    let before: Vec<Time> = on0.iter().map(|&v| sim.stat(v).ran).collect();
    let idle_before = sim.cpus[0].idle + sim.cpus[1].idle;
    sim.run_until(4 * SEC);
    let idle = sim.cpus[0].idle + sim.cpus[1].idle - idle_before;
    println!(
        "after pausing runqueue 1's vCPUs: idle {} ms of 4000 CPU-ms",
        idle / MS
    );
    assert!(idle <= 20 * MS, "idle {idle}");
    for (i, &v) in on0.iter().enumerate() {
        let got = sim.stat(v).ran - before[i];
        assert!(got >= 2 * SEC - 20 * MS, "{got}");
    }
    assert!(
        on0.iter().any(|&v| sim.stat(v).ran_on[1] > 0),
        "CPU 1 stole one"
    );
}
