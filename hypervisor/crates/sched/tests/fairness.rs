//! Proportional share by weight, and starvation freedom, on simulated CPU-bound vCPUs.

mod common;
use common::*;

fn busy_pair(wa: u16, wb: u16) -> (Time, Time) {
    let mut sim = Sim::new(1, Config::default());
    let (a, b) = (vr(1, 0), vr(2, 0));
    sim.add(a, w(wa), Affinity::ANY, Behaviour::Busy);
    sim.add(b, w(wb), Affinity::ANY, Behaviour::Busy);
    sim.run_until(5 * SEC);
    assert_eq!(sim.cpus[0].idle, 0, "CPU idled with runnable vCPUs");
    (sim.stat(a).ran, sim.stat(b).ran)
}

#[test]
fn weights_256_512_give_two_to_one() {
    let (a, b) = busy_pair(256, 512);
    let r = ratio_milli(b, a);
    println!(
        "256:512 over 5 s: {a} ns vs {b} ns, ratio {}.{:03}",
        r / 1000,
        r % 1000
    );
    assert!((1900..=2100).contains(&r), "ratio {r}/1000");
}

#[test]
fn equal_weights_share_equally() {
    let (a, b) = busy_pair(256, 256);
    let r = ratio_milli(b, a);
    println!(
        "256:256 over 5 s: {a} ns vs {b} ns, ratio {}.{:03}",
        r / 1000,
        r % 1000
    );
    assert!((980..=1020).contains(&r), "ratio {r}/1000");
}

#[test]
fn large_and_small_weights_keep_ratio() {
    // Same ratio with other absolute weights: only the ratio matters.
    let (a, b) = busy_pair(1000, 3000);
    let r = ratio_milli(b, a);
    println!("1000:3000 over 5 s: ratio {}.{:03}", r / 1000, r % 1000);
    assert!((2850..=3150).contains(&r), "ratio {r}/1000");
}

#[test]
fn three_way_256_256_512() {
    let mut sim = Sim::new(1, Config::default());
    let vs = [vr(1, 0), vr(2, 0), vr(3, 0)];
    for (v, wt) in vs.iter().zip([256, 256, 512]) {
        sim.add(*v, w(wt), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(5 * SEC);
    let shares: Vec<u64> = vs.iter().map(|&v| sim.share_bp(v)).collect();
    println!("256:256:512 shares (bp): {shares:?}");
    assert!((2400..=2600).contains(&shares[0]), "{shares:?}");
    assert!((2400..=2600).contains(&shares[1]), "{shares:?}");
    assert!((4900..=5100).contains(&shares[2]), "{shares:?}");
}

#[test]
fn weights_one_to_ten_no_starvation() {
    let mut sim = Sim::new(1, Config::default());
    let vs: Vec<VcpuRef> = (1..=10).map(|i| vr(i, 0)).collect();
    for (i, &v) in vs.iter().enumerate() {
        sim.add(v, w(i as u16 + 1), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(5 * SEC);
    let mut worst = 0;
    for (i, &v) in vs.iter().enumerate() {
        let weight = i as u64 + 1;
        let share = sim.share_bp(v);
        let expect = weight * 10_000 / 55;
        let wait = sim.max_wait(v);
        worst = worst.max(wait);
        println!(
            "weight {weight:2}: share {share:4} bp (ideal {expect:4}), max wait {} µs, dispatches {}",
            wait / US,
            sim.stat(v).dispatches
        );
        assert!(wait <= 200 * MS, "weight {weight} waited {wait} ns");
        assert!(
            share.abs_diff(expect) <= 60,
            "weight {weight}: {share} bp vs {expect} bp"
        );
    }
    println!("worst wait {} ms", worst / MS);
    // The lightest one progresses steadily: it ran in every 200 ms window.
    assert!(sim.stat(vs[0]).dispatches >= 5 * SEC / (200 * MS));
}

#[test]
fn many_vcpus_share_equally() {
    // 64 CPU-bound vCPUs of one weight: everyone within 2% of the fair share. A vCPU of the
    // heaviest weight may wait one whole credit cycle: 64 × (CREDIT_INIT + CARRYOVER_MAX),
    // plus a ratelimit.
    let mut sim = Sim::new(1, Config::default());
    let vs: Vec<VcpuRef> = (0..64).map(|i| vr(7, i)).collect();
    for &v in &vs {
        sim.add(v, w(256), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(10 * SEC);
    let worst = vs.iter().map(|&v| sim.max_wait(v)).max().unwrap();
    println!("64 equal vCPUs: worst wait {} ms", worst / MS);
    let fair = 10 * SEC / 64;
    for &v in &vs {
        let ran = sim.stat(v).ran;
        assert!(
            ran.abs_diff(fair) * 50 <= fair,
            "{v:?} ran {ran} vs fair {fair}"
        );
        let bound = 64 * (CREDIT_INIT + CARRYOVER_MAX) as Time + MS;
        assert!(sim.max_wait(v) <= bound, "{v:?} waited {}", sim.max_wait(v));
    }
}

#[test]
fn smp_two_cpus_three_vcpus_fair() {
    // 3 CPU-bound vCPUs on 2 CPUs sharing a runqueue: each gets 2/3 of a CPU.
    let mut sim = Sim::new(2, Config::default());
    let vs = [vr(1, 0), vr(2, 0), vr(3, 0)];
    for &v in &vs {
        sim.add(v, w(256), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(6 * SEC);
    for &v in &vs {
        let share = sim.share_bp(v);
        println!("{v:?}: {share} bp of one CPU");
        assert!(share.abs_diff(6667) <= 150, "{v:?}: {share}");
    }
    assert_eq!(sim.cpus[0].idle + sim.cpus[1].idle, 0);
}

#[test]
fn smp_weights_on_two_cpus() {
    // 4 vCPUs 256,256,512,512 on 2 CPUs: 512s get twice the 256s (2/3 vs 1/3 of a CPU).
    let mut sim = Sim::new(2, Config::default());
    let vs = [vr(1, 0), vr(2, 0), vr(3, 0), vr(4, 0)];
    for (&v, wt) in vs.iter().zip([256, 256, 512, 512]) {
        sim.add(v, w(wt), Affinity::ANY, Behaviour::Busy);
    }
    sim.run_until(6 * SEC);
    let s: Vec<u64> = vs.iter().map(|&v| sim.share_bp(v)).collect();
    println!("2 CPUs, 256:256:512:512 shares of one CPU (bp): {s:?}");
    for (i, &x) in s.iter().enumerate() {
        let ideal = if i < 2 { 3333 } else { 6667 };
        assert!(x.abs_diff(ideal) <= 200, "{s:?}");
    }
}

#[test]
fn extreme_weight_ratios_stay_proportional() {
    // The light vCPU's 1 ms slices cost it up to 1000 ms of credit; the credit floor must
    // allow that debt, or it would get more than its share. Measured after a 1 s warm-up
    // (at first the light vCPU, alone, is given a 10 ms slice).
    for (heavy, ideal_bp) in [(20u16, 476u64), (100, 99), (1000, 10)] {
        let mut sim = Sim::new(1, Config::default());
        let (a, b) = (vr(1, 0), vr(2, 0));
        sim.add(a, w(1), Affinity::ANY, Behaviour::Busy);
        sim.add(b, w(heavy), Affinity::ANY, Behaviour::Busy);
        sim.run_until(SEC);
        let a0 = sim.stat(a).ran;
        sim.run_until(21 * SEC);
        let light_bp = (sim.stat(a).ran - a0) * 10_000 / (20 * SEC);
        println!(
            "1:{heavy}: light vCPU {light_bp} bp (proportional: {ideal_bp} bp), max wait {} ms",
            sim.max_wait(a) / MS
        );
        assert!(light_bp.abs_diff(ideal_bp) * 20 <= ideal_bp, "{light_bp}");
    }
}
