//! Wake-up preemption, ratelimit, yield.

mod common;
use common::*;

#[test]
fn io_vcpu_gets_low_latency_and_hog_keeps_the_rest() {
    let mut sim = Sim::new(1, Config::default());
    let (io, hog) = (vr(1, 0), vr(2, 0));
    sim.add(hog, w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(
        io,
        w(256),
        Affinity::ANY,
        Behaviour::Cycle {
            run: 100 * US,
            block: 2 * MS,
        },
    );
    sim.run_until(100 * MS);
    sim.clear_latency_stats();
    sim.run_until(5 * SEC);
    let st = sim.stat(io);
    let demand_bp = 100 * 10_000 / 2100; // runs 100 µs per 2.1 ms at best
    let (si, sh) = (sim.share_bp(io), sim.share_bp(hog));
    println!(
        "I/O vCPU: {} wakes, {} returned a CPU, latency mean {} µs max {} µs; shares: io {si} bp (demand {demand_bp}), hog {sh} bp",
        st.wakes,
        st.wake_tickles,
        st.mean_latency() / US,
        st.max_latency() / US
    );
    assert!(
        st.wake_tickles * 100 >= st.wakes * 95,
        "most wakes preempt the hog"
    );
    assert!(
        st.mean_latency() <= 50 * US,
        "mean latency {}",
        st.mean_latency()
    );
    assert!(
        st.max_latency() <= sim.s.config().ratelimit,
        "max latency {}",
        st.max_latency()
    );
    assert!(
        si + 20 >= demand_bp,
        "I/O vCPU got what it asked for: {si} bp"
    );
    assert!(sh >= 10_000 - demand_bp - 500, "hog {sh} bp");
}

#[test]
fn several_io_vcpus_beside_hogs() {
    let mut sim = Sim::new(2, Config::default());
    let ios: Vec<VcpuRef> = (0..4).map(|i| vr(1, i)).collect();
    for i in 0..3 {
        sim.add(vr(2, i), w(256), Affinity::ANY, Behaviour::Busy);
    }
    for (k, &io) in ios.iter().enumerate() {
        let block = (1 + k as Time) * MS;
        sim.add(
            io,
            w(256),
            Affinity::ANY,
            Behaviour::Cycle {
                run: 200 * US,
                block,
            },
        );
    }
    sim.run_until(100 * MS);
    sim.clear_latency_stats();
    sim.run_until(5 * SEC);
    for (k, &io) in ios.iter().enumerate() {
        let st = sim.stat(io);
        let demand_bp = 200 * 10_000 / (200 + 1000 * (1 + k as u64));
        let share = sim.share_bp(io);
        println!(
            "io {k}: share {share} bp (demand {demand_bp}), mean latency {} µs, max {} µs",
            st.mean_latency() / US,
            st.max_latency() / US
        );
        // The demand assumes zero latency; I/O vCPUs also queue behind each other.
        assert!(
            share * 100 >= demand_bp * 85,
            "io {k}: {share} < {demand_bp}"
        );
        assert!(
            st.max_latency() <= 2 * sim.s.config().ratelimit,
            "io {k}: {}",
            st.max_latency()
        );
    }
    assert_eq!(sim.cpus[0].idle + sim.cpus[1].idle, 0);
}

#[test]
fn ratelimit_defers_preemption_to_a_deadline() {
    let mut s = Credit2::new(1, Config::default());
    let (io, hog) = (vr(1, 0), vr(2, 0));
    s.insert(hog, w(256), Affinity::ANY, 0).unwrap();
    s.insert(io, w(256), Affinity::ANY, 0).unwrap();
    assert_eq!(s.wake(hog, 0), Some(0));
    assert_eq!(s.do_schedule(0, 0).next, Some(hog));
    // The hog has burned 5 ms of credit and run ≥ ratelimit: the waking I/O vCPU preempts.
    assert_eq!(s.wake(io, 5 * MS), Some(0));
    assert_eq!(s.do_schedule(0, 5 * MS).next, Some(io));
    s.sleep(io, 5_100 * US);
    assert_eq!(s.do_schedule(0, 5_100 * US).next, Some(hog));
    // 400 µs later the hog has run less than the ratelimit: no preemption now...
    assert_eq!(s.wake(io, 5_500 * US), None);
    // ...but a deadline at the end of the hog's ratelimit.
    assert_eq!(s.resched_deadline(0), Some(6_100 * US));
    let d = s.do_schedule(0, 6_100 * US);
    assert_eq!(d.next, Some(io));
    assert_eq!(s.resched_deadline(0), None);
    // A reschedule before the ratelimit expires keeps the hog (not yielding, still runnable).
    s.sleep(io, 6_200 * US);
    assert_eq!(s.do_schedule(0, 6_200 * US).next, Some(hog));
    s.wake(io, 6_300 * US);
    let d = s.do_schedule(0, 6_400 * US);
    assert_eq!(d.next, Some(hog), "ratelimit: hog keeps the CPU");
    assert_eq!(d.slice, Some(800 * US), "until its ratelimit is over");
    assert_eq!(s.do_schedule(0, 7_200 * US).next, Some(io));
}

#[test]
fn ratelimited_io_vcpu_latency_is_bounded_by_the_ratelimit() {
    // Blocks only 300 µs: every wake comes < 1 ms after the hog was picked.
    let mut sim = Sim::new(1, Config::default());
    let (io, hog) = (vr(1, 0), vr(2, 0));
    sim.add(hog, w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(
        io,
        w(256),
        Affinity::ANY,
        Behaviour::Cycle {
            run: 100 * US,
            block: 300 * US,
        },
    );
    sim.run_until(100 * MS);
    sim.clear_latency_stats();
    sim.run_until(2 * SEC);
    let st = sim.stat(io);
    let rl = sim.s.config().ratelimit;
    println!(
        "300 µs sleeper: {} wakes, {} returned a CPU, latency mean {} µs max {} µs, io {} bp, hog {} bp",
        st.wakes,
        st.wake_tickles,
        st.mean_latency() / US,
        st.max_latency() / US,
        sim.share_bp(io),
        sim.share_bp(hog)
    );
    assert!(
        st.wake_tickles * 10 <= st.wakes,
        "the ratelimit held most preemptions back"
    );
    assert!(st.max_latency() <= rl, "{}", st.max_latency());
    assert!(
        st.mean_latency() >= rl / 2,
        "preemption really was deferred"
    );
    assert!(sim.share_bp(hog) >= 10_000 - 2500 - 500);
}

#[test]
fn without_deadlines_latency_is_bounded_by_the_slice() {
    // A hypervisor that ignores resched_deadline still runs the woken vCPU at the end of
    // the current slice.
    let mut sim = Sim::new(1, Config::default());
    sim.honour_deadlines = false;
    let (io, hog) = (vr(1, 0), vr(2, 0));
    sim.add(hog, w(256), Affinity::ANY, Behaviour::Busy);
    sim.add(
        io,
        w(256),
        Affinity::ANY,
        Behaviour::Cycle {
            run: 100 * US,
            block: 300 * US,
        },
    );
    sim.run_until(2 * SEC);
    let st = sim.stat(io);
    println!(
        "ignoring deadlines: latency mean {} µs, max {} µs",
        st.mean_latency() / US,
        st.max_latency() / US
    );
    assert!(st.max_latency() <= sim.s.config().max_slice);
    assert!(sim.stat(io).bursts > 100);
}

#[test]
fn wake_preemption_needs_a_margin() {
    let mut s = Credit2::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    s.insert(a, w(256), Affinity::ANY, 0).unwrap();
    s.insert(b, w(256), Affinity::ANY, 0).unwrap();
    s.wake(a, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
    // a has burned 50 µs < margin: b (same initial credit) does not preempt even after the ratelimit.
    assert_eq!(s.wake(b, 50 * US), None);
    assert_eq!(s.resched_deadline(0), None);
    s.sleep(b, 50 * US);
    assert_eq!(
        s.wake(b, 2 * MS),
        Some(0),
        "a burned 2 ms: now b has more by the margin"
    );
}

#[test]
fn wake_of_runnable_vcpu_is_a_noop() {
    let mut s = Credit2::new(2, Config::default());
    let v = vr(1, 0);
    s.insert(v, w(256), Affinity::ANY, 0).unwrap();
    let c = s.wake(v, 0).unwrap();
    assert_eq!(s.wake(v, 0), None);
    assert_eq!(s.state(v), Some(VcpuState::Queued));
    assert_eq!(s.do_schedule(c, 0).next, Some(v));
    assert_eq!(s.wake(v, 1), None);
    assert_eq!(s.state(v), Some(VcpuState::Running(c)));
    // Sleep then wake before the CPU reschedules: it keeps running, nothing lost.
    s.sleep(v, 2);
    assert_eq!(s.wake(v, 3), None);
    assert_eq!(s.do_schedule(c, 4).next, Some(v));
}

#[test]
fn yield_goes_behind_equals() {
    let mut s = Credit2::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    s.insert(a, w(256), Affinity::ANY, 0).unwrap();
    s.insert(b, w(256), Affinity::ANY, 0).unwrap();
    s.wake(a, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(a));
    s.wake(b, 0);
    // a yields right away (before its ratelimit): b runs although a had as much credit.
    s.yield_now(a, 100 * US);
    assert_eq!(s.do_schedule(0, 100 * US).next, Some(b));
    // b yields alone-ish: a has 100 µs less credit, within the bias: a runs.
    s.yield_now(b, 200 * US);
    assert_eq!(s.do_schedule(0, 200 * US).next, Some(a));
    // Yield with nobody else runnable: keeps running.
    s.sleep(b, 300 * US);
    s.yield_now(a, 300 * US);
    assert_eq!(s.do_schedule(0, 300 * US).next, Some(a));
    // A yield of a vCPU that is not running does nothing.
    s.yield_now(b, 400 * US);
    s.wake(b, 400 * US);
    assert_eq!(
        s.do_schedule(0, 400 * US).next,
        Some(a),
        "a: ratelimit, no yield pending"
    );
}

#[test]
fn yielder_with_much_more_credit_keeps_the_cpu() {
    let mut s = Credit2::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    s.insert(a, w(256), Affinity::ANY, 0).unwrap();
    s.insert(b, w(256), Affinity::ANY, 0).unwrap();
    s.wake(b, 0);
    assert_eq!(s.do_schedule(0, 0).next, Some(b));
    s.wake(a, 5 * MS); // preempts: b burned 5 ms
    assert_eq!(s.do_schedule(0, 5 * MS).next, Some(a));
    s.yield_now(a, 5 * MS + 10 * US);
    assert_eq!(
        s.do_schedule(0, 5 * MS + 10 * US).next,
        Some(a),
        "5 ms ahead > bias"
    );
}
