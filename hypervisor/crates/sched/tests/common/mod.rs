//! A deterministic simulated machine that drives a [`Credit2`] exactly as the hypervisor
//! does, on simulated time, and measures what each vCPU got.
//!
//! The driver obeys the scheduler's contract: it calls `do_schedule(cpu)` when the CPU's
//! slice ends, when `wake` returns the CPU, when the CPU is in `take_tickles()`, at
//! `resched_deadline(cpu)`, and right after the CPU's vCPU blocks (`sleep`). It checks on
//! every decision that the picked vCPU is runnable, not running elsewhere, and allowed on
//! the CPU by its hard affinity.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

pub use sched::*;

pub const US: Time = 1_000;
pub const MS: Time = 1_000_000;
pub const SEC: Time = 1_000_000_000;

/// What a simulated vCPU does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Always runnable.
    Busy,
    /// Runs `run` of CPU time, then blocks for `block` of wall time, forever.
    Cycle { run: Time, block: Time },
    /// Asleep until woken by `Sim::wake_at`; then runs `run` of CPU time and blocks again.
    OnWake { run: Time },
}

#[derive(Debug)]
pub struct VStat {
    pub beh: Behaviour,
    pub aff: Affinity,
    pub blocked: bool,
    burst_left: Time,
    /// CPU time received.
    pub ran: Time,
    /// CPU time received, per CPU.
    pub ran_on: Vec<Time>,
    wait_since: Option<Time>,
    /// Longest stretch runnable but not running.
    pub max_wait: Time,
    wake_at: Option<Time>,
    /// Wake-up → first dispatch, for every wake-up.
    pub latencies: Vec<Time>,
    pub wakes: u64,
    /// Wake-ups for which `wake` returned a CPU.
    pub wake_tickles: u64,
    pub dispatches: u64,
    /// Completed bursts (Cycle / OnWake).
    pub bursts: u64,
}

impl VStat {
    pub fn max_latency(&self) -> Time {
        self.latencies.iter().copied().max().unwrap_or(0)
    }
    pub fn mean_latency(&self) -> Time {
        if self.latencies.is_empty() {
            0
        } else {
            self.latencies.iter().sum::<Time>() / self.latencies.len() as Time
        }
    }
}

#[derive(Debug, Default)]
pub struct SimCpu {
    pub curr: Option<VcpuRef>,
    since: Time,
    slice_end: Option<Time>,
    /// Time spent idle.
    pub idle: Time,
    /// Idle decisions that came with a timer (`next: None, slice: Some`).
    pub timed_idle: u64,
    pub decisions: u64,
}

pub struct Sim {
    pub s: Credit2,
    pub now: Time,
    pub cpus: Vec<SimCpu>,
    pub v: BTreeMap<VcpuRef, VStat>,
    wakes: BTreeSet<(Time, VcpuRef)>,
    /// Honour `resched_deadline` (the hypervisor would re-arm its timer after a wake).
    pub honour_deadlines: bool,
    /// Every decision: (time, cpu, decision).
    pub trace: Option<Vec<(Time, u32, Decision)>>,
}

impl Sim {
    pub fn new(ncpus: u32, cfg: Config) -> Self {
        Self::with(Credit2::new(ncpus, cfg), ncpus)
    }

    pub fn with(s: Credit2, ncpus: u32) -> Self {
        Self {
            s,
            now: 0,
            cpus: (0..ncpus).map(|_| SimCpu::default()).collect(),
            v: BTreeMap::new(),
            wakes: BTreeSet::new(),
            honour_deadlines: true,
            trace: None,
        }
    }

    /// Adds a vCPU; Busy and Cycle ones wake at once, OnWake ones wait for `wake_at`.
    pub fn add(&mut self, r: VcpuRef, params: Params, aff: Affinity, beh: Behaviour) {
        self.s.insert(r, params, aff, self.now).expect("insert");
        let n = self.cpus.len();
        self.v.insert(
            r,
            VStat {
                beh,
                aff,
                blocked: true,
                burst_left: 0,
                ran: 0,
                ran_on: vec![0; n],
                wait_since: None,
                max_wait: 0,
                wake_at: None,
                latencies: Vec::new(),
                wakes: 0,
                wake_tickles: 0,
                dispatches: 0,
                bursts: 0,
            },
        );
        if !matches!(beh, Behaviour::OnWake { .. }) {
            self.wake_now(r);
            self.settle();
        }
    }

    /// An external wake-up of `r` at `t` (ignored if it is awake then).
    pub fn wake_at(&mut self, t: Time, r: VcpuRef) {
        self.wakes.insert((t, r));
    }

    pub fn stat(&self, r: VcpuRef) -> &VStat {
        &self.v[&r]
    }

    /// Share of the elapsed time `r` ran, in parts per 10 000.
    pub fn share_bp(&self, r: VcpuRef) -> u64 {
        self.v[&r].ran * 10_000 / self.now.max(1)
    }

    pub fn run_until(&mut self, end: Time) {
        assert!(end >= self.now);
        loop {
            let t = self.next_event().min(end);
            self.advance(t);
            if t >= end {
                break;
            }
            self.settle();
        }
        self.check_accounting();
    }

    /// Forgets latencies and waits so far (after a warm-up: at start every vCPU has the same
    /// credit, and one that wakes while an equal one runs waits for its slice).
    pub fn clear_latency_stats(&mut self) {
        for st in self.v.values_mut() {
            st.latencies.clear();
            st.max_wait = 0;
            st.wakes = 0;
            st.wake_tickles = 0;
        }
    }

    /// Longest runnable-but-not-running stretch of `r`, including one still going on.
    pub fn max_wait(&self, r: VcpuRef) -> Time {
        let s = &self.v[&r];
        s.max_wait.max(s.wait_since.map_or(0, |w| self.now - w))
    }

    /// The scheduler's `runtime` must equal the simulated running time, less what the
    /// current vCPUs ran since their CPU's last `do_schedule`.
    pub fn check_accounting(&self) {
        for (&r, st) in &self.v {
            let pending = self
                .cpus
                .iter()
                .find(|c| c.curr == Some(r))
                .map_or(0, |c| self.now - c.since);
            assert_eq!(
                self.s.runtime(r).unwrap() + pending,
                st.ran,
                "scheduler and simulator disagree on the runtime of {r:?}"
            );
        }
    }

    fn next_event(&self) -> Time {
        let mut t = Time::MAX;
        for (i, c) in self.cpus.iter().enumerate() {
            if let Some(e) = c.slice_end {
                t = t.min(e);
            }
            if self.honour_deadlines {
                if let Some(d) = self.s.resched_deadline(i as u32) {
                    t = t.min(d);
                }
            }
            if let Some(r) = c.curr {
                let st = &self.v[&r];
                if st.beh != Behaviour::Busy && !st.blocked {
                    t = t.min(self.now + st.burst_left);
                }
            }
        }
        if let Some(&(w, _)) = self.wakes.first() {
            t = t.min(w);
        }
        t
    }

    fn advance(&mut self, t: Time) {
        let dt = t - self.now;
        for (i, c) in self.cpus.iter_mut().enumerate() {
            match c.curr {
                Some(r) => {
                    let st = self.v.get_mut(&r).unwrap();
                    st.ran += dt;
                    st.ran_on[i] += dt;
                    if st.beh != Behaviour::Busy {
                        st.burst_left -= dt;
                    }
                }
                None => c.idle += dt,
            }
        }
        self.now = t;
    }

    /// Processes everything due at `now` until quiescent.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            // Bursts that completed: the vCPU blocks, its CPU reschedules.
            for i in 0..self.cpus.len() {
                let Some(r) = self.cpus[i].curr else { continue };
                let st = self.v.get_mut(&r).unwrap();
                if st.beh == Behaviour::Busy || st.blocked || st.burst_left > 0 {
                    continue;
                }
                st.blocked = true;
                st.bursts += 1;
                if let Behaviour::Cycle { block, .. } = st.beh {
                    self.wakes.insert((self.now + block, r));
                }
                self.s.sleep(r, self.now);
                self.resched(i as u32);
                busy = true;
            }
            while let Some(&(t, r)) = self.wakes.first() {
                if t > self.now {
                    break;
                }
                self.wakes.pop_first();
                self.wake_now(r);
                busy = true;
            }
            for i in 0..self.cpus.len() {
                let due_slice = self.cpus[i].slice_end.is_some_and(|e| e <= self.now);
                let due_deadline = self.honour_deadlines
                    && self
                        .s
                        .resched_deadline(i as u32)
                        .is_some_and(|d| d <= self.now);
                if due_slice || due_deadline {
                    self.resched(i as u32);
                    busy = true;
                }
            }
            let m = self.s.take_tickles();
            for c in m.iter() {
                self.resched(c);
                busy = true;
            }
            if !busy {
                break;
            }
        }
    }

    fn wake_now(&mut self, r: VcpuRef) {
        let now = self.now;
        let Some(st) = self.v.get_mut(&r) else { return };
        if !st.blocked {
            return;
        }
        st.blocked = false;
        st.burst_left = match st.beh {
            Behaviour::Busy => 0,
            Behaviour::Cycle { run, .. } | Behaviour::OnWake { run } => run,
        };
        st.wait_since = Some(now);
        st.wake_at = Some(now);
        st.wakes += 1;
        if let Some(c) = self.s.wake(r, now) {
            self.v.get_mut(&r).unwrap().wake_tickles += 1;
            self.resched(c);
        }
    }

    /// Puts `r` to sleep from outside (pause), as the hypervisor would.
    pub fn pause(&mut self, r: VcpuRef) {
        let st = self.v.get_mut(&r).unwrap();
        if st.blocked {
            return;
        }
        st.blocked = true;
        st.wait_since = None;
        st.wake_at = None;
        self.s.sleep(r, self.now);
        if let Some(i) = self.cpus.iter().position(|c| c.curr == Some(r)) {
            self.resched(i as u32);
        }
        self.settle();
    }

    /// Wakes `r` now from outside (unpause).
    pub fn unpause(&mut self, r: VcpuRef) {
        self.wake_now(r);
        self.settle();
    }

    pub fn resched(&mut self, cpu: u32) {
        let now = self.now;
        let d = self.s.do_schedule(cpu, now);
        if let Some(t) = self.trace.as_mut() {
            t.push((now, cpu, d));
        }
        assert_ne!(d.slice, Some(0), "zero slice");
        let c = &mut self.cpus[cpu as usize];
        c.decisions += 1;
        if d.next.is_none() && d.slice.is_some() {
            c.timed_idle += 1;
        }
        let old = c.curr;
        c.curr = d.next;
        c.since = now;
        c.slice_end = d.slice.map(|s| now + s);
        if let Some(n) = d.next {
            let st = &self.v[&n];
            assert!(!st.blocked, "t={now}: picked {n:?} which is blocked");
            assert!(
                st.aff.hard.contains(cpu),
                "t={now}: {n:?} on cpu {cpu} outside its hard affinity"
            );
            for (i, other) in self.cpus.iter().enumerate() {
                assert!(
                    i == cpu as usize || other.curr != Some(n),
                    "t={now}: {n:?} on two CPUs"
                );
            }
        }
        if old != d.next {
            if let Some(o) = old {
                if let Some(st) = self.v.get_mut(&o) {
                    if !st.blocked {
                        st.wait_since = Some(now);
                    }
                }
            }
            if let Some(n) = d.next {
                let st = self.v.get_mut(&n).unwrap();
                st.dispatches += 1;
                if let Some(w) = st.wait_since.take() {
                    st.max_wait = st.max_wait.max(now - w);
                }
                if let Some(w) = st.wake_at.take() {
                    st.latencies.push(now - w);
                }
            }
        }
    }
}

/// Tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn vr(dom: u16, vcpu: u32) -> VcpuRef {
    VcpuRef::new(dom, vcpu)
}

pub fn w(weight: u16) -> Params {
    Params { weight, cap: 0 }
}

pub fn capped(cap: u16) -> Params {
    Params { weight: 256, cap }
}

/// `a / b` as a ratio ×1000.
pub fn ratio_milli(a: Time, b: Time) -> u64 {
    a * 1000 / b.max(1)
}
