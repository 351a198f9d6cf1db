//! Randomised interleavings of wake / sleep / yield / do_schedule / set_affinity / adjust /
//! remove, checked against a model after every step: no lost wake-up, sleeping vCPUs never
//! run, hard affinity always holds; then a liveness phase in which every runnable vCPU must
//! run.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

struct Case {
    s: Credit2,
    rng: Rng,
    now: Time,
    ncpus: u32,
    vcpus: Vec<VcpuRef>,
    runnable: BTreeMap<VcpuRef, bool>,
    aff: BTreeMap<VcpuRef, Affinity>,
    curr: Vec<Option<VcpuRef>>,
    slice_end: Vec<Option<Time>>,
    /// CPUs that owe a do_schedule (told by wake / take_tickles / their vCPU slept).
    pending: BTreeSet<u32>,
    ran: BTreeSet<VcpuRef>,
    decisions: u64,
}

impl Case {
    fn new(seed: u64, layout: &[CpuMask]) -> Self {
        let s = Credit2::with_runqueues(Config::default(), layout).unwrap();
        let ncpus = s.online().count();
        let mut c = Case {
            s,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            now: 0,
            ncpus,
            vcpus: Vec::new(),
            runnable: BTreeMap::new(),
            aff: BTreeMap::new(),
            curr: vec![None; ncpus as usize],
            slice_end: vec![None; ncpus as usize],
            pending: BTreeSet::new(),
            ran: BTreeSet::new(),
            decisions: 0,
        };
        for dom in 0..3u16 {
            let nv = 1 + c.rng.below(3) as u32;
            let params = c.random_params();
            for vcpu in 0..nv {
                let v = vr(dom, vcpu);
                let aff = c.random_affinity();
                c.s.insert(v, params, aff, 0).unwrap();
                c.vcpus.push(v);
                c.runnable.insert(v, false);
                c.aff.insert(v, aff);
            }
        }
        c
    }

    fn random_params(&mut self) -> Params {
        let weight = 1 + self.rng.below(1000) as u16;
        let cap = if self.rng.below(3) == 0 {
            20 + self.rng.below(200) as u16
        } else {
            0
        };
        Params { weight, cap }
    }

    fn random_affinity(&mut self) -> Affinity {
        let all = CpuMask::all(self.ncpus).0;
        let hard = loop {
            let m = match self.rng.below(3) {
                0 => all,
                1 => 1 << self.rng.below(self.ncpus as u64),
                _ => self.rng.next() & all,
            };
            if m != 0 {
                break m;
            }
        };
        Affinity {
            hard: CpuMask(hard),
            soft: CpuMask(self.rng.next() & all),
        }
    }

    fn pick(&mut self) -> VcpuRef {
        self.vcpus[self.rng.below(self.vcpus.len() as u64) as usize]
    }

    fn cpu_of(&self, v: VcpuRef) -> Option<u32> {
        self.curr
            .iter()
            .position(|&c| c == Some(v))
            .map(|i| i as u32)
    }

    fn schedule(&mut self, cpu: u32) {
        let d = self.s.do_schedule(cpu, self.now);
        self.decisions += 1;
        self.pending.remove(&cpu);
        assert_ne!(d.slice, Some(0));
        if let Some(n) = d.next {
            assert!(
                self.runnable[&n],
                "t={}: cpu {cpu} picked sleeping {n:?}",
                self.now
            );
            assert!(
                self.aff[&n].hard.contains(cpu),
                "t={}: {n:?} on cpu {cpu} outside hard affinity",
                self.now
            );
            for (i, c) in self.curr.iter().enumerate() {
                assert!(
                    i == cpu as usize || *c != Some(n),
                    "t={}: {n:?} on two CPUs",
                    self.now
                );
            }
            self.ran.insert(n);
        }
        self.curr[cpu as usize] = d.next;
        self.slice_end[cpu as usize] = d.slice.map(|s| self.now + s);
    }

    fn collect_tickles(&mut self) {
        for c in self.s.take_tickles().iter() {
            self.pending.insert(c);
        }
    }

    fn check(&self) {
        for &v in &self.vcpus {
            assert_eq!(self.s.is_runnable(v), Some(self.runnable[&v]), "{v:?}");
            let st = self.s.state(v).unwrap();
            match self.cpu_of(v) {
                Some(c) => assert_eq!(st, VcpuState::Running(c), "{v:?}"),
                None if self.runnable[&v] => {
                    assert!(
                        matches!(st, VcpuState::Queued | VcpuState::Parked),
                        "t={}: runnable {v:?} is {st:?}",
                        self.now
                    )
                }
                None => assert_eq!(st, VcpuState::Asleep, "{v:?}"),
            }
        }
        for c in 0..self.ncpus {
            assert_eq!(self.s.current(c), self.curr[c as usize], "cpu {c}");
        }
    }

    fn step(&mut self) {
        if self.rng.below(4) != 0 {
            self.now += self.rng.below(400 * US);
        }
        match self.rng.below(12) {
            0 | 1 => {
                let v = self.pick();
                self.runnable.insert(v, true);
                if let Some(c) = self.s.wake(v, self.now) {
                    self.pending.insert(c);
                }
            }
            2 => {
                let v = self.pick();
                self.runnable.insert(v, false);
                self.s.sleep(v, self.now);
                if let Some(c) = self.cpu_of(v) {
                    self.pending.insert(c);
                }
            }
            3 | 4 => {
                let c = self.rng.below(self.ncpus as u64) as u32;
                self.schedule(c);
            }
            5 => {
                if let Some(&c) = self
                    .pending
                    .iter()
                    .nth(self.rng.below(self.pending.len().max(1) as u64) as usize)
                {
                    self.schedule(c);
                }
            }
            6 => {
                let c = self.rng.below(self.ncpus as u64) as usize;
                if let Some(v) = self.curr[c] {
                    self.s.yield_now(v, self.now);
                    self.pending.insert(c as u32);
                }
            }
            7 => {
                let v = self.pick();
                if self.rng.below(5) == 0 {
                    let bad = Affinity {
                        hard: CpuMask(1 << 40),
                        soft: CpuMask::ANY,
                    };
                    assert_eq!(
                        self.s.set_affinity(v, bad, self.now),
                        Err(SchedError::NoCpu)
                    );
                } else {
                    let aff = self.random_affinity();
                    self.s.set_affinity(v, aff, self.now).unwrap();
                    self.aff.insert(v, aff);
                }
            }
            8 => {
                let dom = self.rng.below(3) as u16;
                let p = self.random_params();
                self.s.adjust(dom, p, self.now);
            }
            9 => {
                let v = self.pick();
                let params = self.s.params(v.dom).unwrap();
                self.s.remove(v);
                if let Some(c) = self.cpu_of(v) {
                    self.curr[c as usize] = None;
                }
                let aff = self.aff[&v];
                self.s.insert(v, params, aff, self.now).unwrap();
                self.runnable.insert(v, false);
            }
            _ => {
                // Timers fire.
                for c in 0..self.ncpus {
                    let due = self.slice_end[c as usize].is_some_and(|e| e <= self.now)
                        || self.s.resched_deadline(c).is_some_and(|d| d <= self.now);
                    if due {
                        self.schedule(c);
                    }
                }
            }
        }
        self.collect_tickles();
        self.check();
    }

    /// Obey the contract for `span`: every runnable vCPU must get to run.
    fn liveness(&mut self, span: Time) {
        self.ran.clear();
        let end = self.now + span;
        loop {
            let mut storm = 0;
            while let Some(&c) = self.pending.iter().next() {
                self.schedule(c);
                self.collect_tickles();
                storm += 1;
                assert!(storm < 1000, "reschedule storm at {}", self.now);
            }
            let next = (0..self.ncpus)
                .filter_map(|c| {
                    let a = self.slice_end[c as usize];
                    let b = self.s.resched_deadline(c);
                    a.into_iter().chain(b).min()
                })
                .min();
            let Some(t) = next else { break };
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            for c in 0..self.ncpus {
                let due = self.slice_end[c as usize].is_some_and(|e| e <= self.now)
                    || self.s.resched_deadline(c).is_some_and(|d| d <= self.now);
                if due {
                    self.schedule(c);
                }
            }
            self.collect_tickles();
            self.check();
        }
        for &v in &self.vcpus {
            if self.runnable[&v] {
                assert!(
                    self.ran.contains(&v),
                    "runnable {v:?} never ran in {span} ns (state {:?})",
                    self.s.state(v)
                );
            }
        }
    }
}

/// Every runnable vCPU must run within this: a few credit cycles (≤ 9 vCPUs: < 100 ms
/// each), a cap period, and, for a very light vCPU, the `Σ weights / its weight` shortest
/// slices that proportional share puts between its runs.
fn liveness_span(c: &Case) -> Time {
    let weight = |v: &VcpuRef| u64::from(c.s.params(v.dom).unwrap().weight);
    let total: u64 = c.vcpus.iter().map(weight).sum();
    let lightest = c.vcpus.iter().map(weight).min().unwrap();
    let shortest = c.s.config().min_slice.max(c.s.config().ratelimit);
    400 * MS + total / lightest * shortest * 3 / 2
}

/// Seeds per layout: 100, or `SCHED_RANDOM_SEEDS` (for longer soak runs).
fn seeds(base: u64) -> std::ops::Range<u64> {
    let n = std::env::var("SCHED_RANDOM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    base..base + n
}

fn run(layout: &[CpuMask], seeds: std::ops::Range<u64>, steps: usize) -> u64 {
    let mut decisions = 0;
    for seed in seeds {
        let mut c = Case::new(seed, layout);
        for _ in 0..steps {
            c.step();
        }
        c.liveness(liveness_span(&c));
        // Everyone wakes: all must run.
        for v in c.vcpus.clone() {
            c.runnable.insert(v, true);
            if let Some(cpu) = c.s.wake(v, c.now) {
                c.pending.insert(cpu);
            }
        }
        c.collect_tickles();
        c.check();
        c.liveness(liveness_span(&c));
        decisions += c.decisions;
    }
    decisions
}

#[test]
fn random_interleavings_one_cpu() {
    let d = run(&[CpuMask::all(1)], seeds(0), 1500);
    println!("1 CPU: {d} decisions checked");
}

#[test]
fn random_interleavings_two_cpus_shared_runqueue() {
    let d = run(&[CpuMask::all(2)], seeds(1_000_000), 1500);
    println!("2 CPUs, 1 runqueue: {d} decisions checked");
}

#[test]
fn random_interleavings_four_cpus_two_runqueues() {
    let d = run(&[CpuMask(0b0011), CpuMask(0b1100)], seeds(2_000_000), 1500);
    println!("4 CPUs, 2 runqueues: {d} decisions checked");
}
