//! The credit2-style scheduler. See the crate documentation for the policy.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::runqueue::{QKey, RunQueue, Slot};
use crate::types::{
    Affinity, Config, CpuMask, Decision, Params, SchedError, Scheduler, Time, VcpuRef, VcpuState,
};

/// Credit given to a new vCPU and added to every vCPU of a runqueue at a credit reset
/// (Xen credit2 `CSCHED2_CREDIT_INIT`): 10 ms worth at the runqueue's maximum weight.
pub const CREDIT_INIT: i64 = 10_000_000;
/// Credit a vCPU may keep beyond [`CREDIT_INIT`] across a reset (Xen
/// `CSCHED2_CARRYOVER_MAX`): 500 µs. Bounds what a long sleeper can bank.
pub const CARRYOVER_MAX: i64 = 500_000;
/// Floor of a vCPU's credit: running never takes it lower than this, or than minus what one
/// shortest slice (`max(min_slice, ratelimit)`) burns at its weight if that is more.
/// Without a floor one long slice of a light vCPU (e.g. granted before heavier vCPUs
/// arrived) could put it so deep in debt that it waits for many credit resets; with it,
/// its debt is at most what its shortest slice costs, and keeping proportional shares for
/// very different weights (a 1:100 vCPU runs one shortest slice per 100 of the other)
/// still works.
pub const CREDIT_MIN: i64 = -CREDIT_INIT;
/// How much credit a yielding vCPU gives away for the decision that follows the yield:
/// every waiting vCPU with at least its credit minus this runs first. 1 ms.
pub const YIELD_BIAS: i64 = 1_000_000;

/// Credit burned by running `elapsed` ns at `weight` in a runqueue whose heaviest vCPU has
/// `max_weight`: the heaviest burns 1:1, a vCPU of half its weight twice as fast.
fn burn(elapsed: Time, weight: u16, max_weight: u16) -> i64 {
    let b = u128::from(elapsed) * u128::from(max_weight.max(weight)) / u128::from(weight.max(1));
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// Running time needed to burn `credit` (the inverse of [`burn`]); 0 if `credit` ≤ 0.
fn credit_to_time(credit: i64, weight: u16, max_weight: u16) -> Time {
    let Ok(c) = u64::try_from(credit) else {
        return 0;
    };
    let t = u128::from(c) * u128::from(weight.max(1)) / u128::from(max_weight.max(weight).max(1));
    // t ≤ c because weight ≤ max_weight.
    Time::try_from(t).unwrap_or(Time::MAX)
}

fn time_as_credit(t: Time) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Asleep,
    Queued(Slot),
    Parked,
    Running(u32),
}

#[derive(Debug)]
struct Vcpu {
    weight: u16,
    credit: i64,
    /// Wants to run (woken and not put to sleep since).
    runnable: bool,
    loc: Loc,
    affinity: Affinity,
    /// The runqueue it is assigned to (member of), whatever its state.
    rq: usize,
    last_cpu: u32,
    runtime: Time,
    /// Charged up to this time (meaningful while running).
    accounted: Time,
    /// Began running continuously on its CPU at this time (for the ratelimit).
    run_start: Time,
    /// Cap budget taken from the domain's pool for the current slice (capped domains).
    grab: Option<i64>,
    /// Cap period (`Dom::pid`) that `pused` counts.
    pid: u64,
    /// Running time in cap period `pid`.
    pused: i64,
    yielded: bool,
}

#[derive(Debug)]
struct Dom {
    params: Params,
    nr_vcpus: u32,
    /// Pool of cap budget left in the current period (may be negative: overrun debt).
    budget: i64,
    /// Budget per period: `cap% × cap_period`.
    total: i64,
    /// End of the current cap period.
    next_repl: Time,
    /// Runnable vCPUs held back for lack of budget.
    parked: BTreeSet<VcpuRef>,
    /// The key this domain has in `Credit2::replenish` (set iff `parked` is not empty).
    event: Option<Time>,
    /// Fair part of `total` per vCPU: `total / nr_vcpus`.
    quota: i64,
    /// Number of the current cap period.
    pid: u64,
    /// vCPUs of the domain in a runqueue.
    waiting: u32,
    /// ... of which have already run `quota` in this period ("served").
    waiting_served: u32,
}

impl Dom {
    fn served(&self, v: &Vcpu) -> bool {
        self.params.cap != 0 && v.pid == self.pid && v.pused >= self.quota
    }
}

#[derive(Debug)]
struct Pcpu {
    rq: usize,
    curr: Option<VcpuRef>,
    /// Told to reschedule and has not yet.
    tickled: bool,
    /// Ratelimited preemption pending: reschedule by then.
    deadline: Option<Time>,
}

/// Credit2-style scheduler: per-runqueue credit ordered by weight, caps with domain-wide
/// budgets, hard and soft affinity, ratelimited wake-up preemption.
///
/// See the crate documentation for the policy and complexity.
#[derive(Debug)]
pub struct Credit2 {
    cfg: Config,
    online: CpuMask,
    cpus: Vec<Pcpu>,
    rqs: Vec<RunQueue>,
    vcpus: BTreeMap<VcpuRef, Vcpu>,
    doms: BTreeMap<u16, Dom>,
    /// Replenishment times of domains that have parked vCPUs, earliest first.
    replenish: BTreeSet<(Time, u16)>,
    tickles: CpuMask,
    /// The CPU inside `do_schedule` (never tickled: it is choosing right now).
    scheduling: Option<u32>,
    seq: u64,
    resets: u64,
    last_now: Time,
}

impl Credit2 {
    /// A scheduler for CPUs `0..cpus` (clamped to 1..=64) sharing one runqueue.
    pub fn new(cpus: u32, cfg: Config) -> Self {
        Self::build(cfg, &[CpuMask::all(cpus.clamp(1, 64))])
    }

    /// A scheduler with one runqueue per mask (e.g. one per socket or per core). The masks
    /// must be non-empty and disjoint; their union is the set of online CPUs. A vCPU belongs
    /// to one runqueue at a time; it moves when it wakes on a CPU of another runqueue, or is
    /// stolen by an idle CPU of another runqueue.
    pub fn with_runqueues(cfg: Config, runqueues: &[CpuMask]) -> Result<Self, SchedError> {
        let mut seen = CpuMask::NONE;
        for &m in runqueues {
            if m.is_empty() || m.intersects(seen) {
                return Err(SchedError::InvalidTopology);
            }
            seen = seen | m;
        }
        if seen.is_empty() {
            return Err(SchedError::InvalidTopology);
        }
        Ok(Self::build(cfg, runqueues))
    }

    fn build(mut cfg: Config, runqueues: &[CpuMask]) -> Self {
        cfg.min_slice = cfg.min_slice.max(1);
        cfg.max_slice = cfg.max_slice.max(cfg.min_slice);
        cfg.cap_period = cfg.cap_period.max(1);
        let online = runqueues.iter().fold(CpuMask::NONE, |a, &m| a | m);
        let ncpus = 64 - online.0.leading_zeros();
        let mut cpus: Vec<Pcpu> = (0..ncpus)
            .map(|_| Pcpu {
                rq: 0,
                curr: None,
                tickled: false,
                deadline: None,
            })
            .collect();
        for (i, m) in runqueues.iter().enumerate() {
            for c in m.iter() {
                cpus[c as usize].rq = i;
            }
        }
        Self {
            cfg,
            online,
            cpus,
            rqs: runqueues.iter().map(|&m| RunQueue::new(m)).collect(),
            vcpus: BTreeMap::new(),
            doms: BTreeMap::new(),
            replenish: BTreeSet::new(),
            tickles: CpuMask::NONE,
            scheduling: None,
            seq: 0,
            resets: 0,
            last_now: 0,
        }
    }

    /// The configuration in use (after sanitising: `min_slice` ≥ 1, `max_slice` ≥
    /// `min_slice`, `cap_period` ≥ 1).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The online CPUs.
    pub fn online(&self) -> CpuMask {
        self.online
    }

    /// The vCPU `cpu` is running (per the last `do_schedule`), if any.
    pub fn current(&self, cpu: u32) -> Option<VcpuRef> {
        self.cpus.get(cpu as usize).and_then(|p| p.curr)
    }

    /// Where `v` is.
    pub fn state(&self, v: VcpuRef) -> Option<VcpuState> {
        self.vcpus.get(&v).map(|x| match x.loc {
            Loc::Asleep => VcpuState::Asleep,
            Loc::Queued(_) => VcpuState::Queued,
            Loc::Parked => VcpuState::Parked,
            Loc::Running(c) => VcpuState::Running(c),
        })
    }

    /// Whether `v` is runnable (woken and not put to sleep since).
    pub fn is_runnable(&self, v: VcpuRef) -> Option<bool> {
        self.vcpus.get(&v).map(|x| x.runnable)
    }

    /// Current credit of `v` (as of its last accounting).
    pub fn credit(&self, v: VcpuRef) -> Option<i64> {
        self.vcpus.get(&v).map(|x| x.credit)
    }

    /// Parameters of domain `dom`, if it has vCPUs.
    pub fn params(&self, dom: u16) -> Option<Params> {
        self.doms.get(&dom).map(|d| d.params)
    }

    /// The CPU `v` ran on last (or was placed on), if it is known.
    pub fn last_cpu(&self, v: VcpuRef) -> Option<u32> {
        self.vcpus.get(&v).map(|x| x.last_cpu)
    }

    /// Affinity of `v`.
    pub fn affinity(&self, v: VcpuRef) -> Option<Affinity> {
        self.vcpus.get(&v).map(|x| x.affinity)
    }

    /// Number of credit resets so far (statistics).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    // ---- internals -------------------------------------------------------------------

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn cap_total(&self, cap: u16) -> i64 {
        let t = u128::from(cap) * u128::from(self.cfg.cap_period) / 100;
        i64::try_from(t).unwrap_or(i64::MAX)
    }

    /// Idle (or about to reschedule because its vCPU went to sleep) and not yet tickled.
    fn cpu_free(&self, cpu: u32) -> bool {
        let Some(p) = self.cpus.get(cpu as usize) else {
            return false;
        };
        self.online.contains(cpu)
            && !p.tickled
            && p.curr
                .is_none_or(|c| self.vcpus.get(&c).is_none_or(|v| !v.runnable))
    }

    fn pick_cpu_for(&self, aff: Affinity, last: u32) -> u32 {
        let mut hard = aff.hard & self.online;
        if hard.is_empty() {
            hard = self.online;
        }
        let soft = match hard & aff.soft {
            s if s.is_empty() => hard,
            s => s,
        };
        for mask in [soft, hard] {
            if mask.contains(last) && self.cpu_free(last) {
                return last;
            }
            if let Some(c) = mask.iter().find(|&c| self.cpu_free(c)) {
                return c;
            }
        }
        // Everything busy: the least loaded runqueue among the preferred CPUs, staying put
        // on ties.
        soft.iter()
            .min_by_key(|&c| {
                let rq = &self.rqs[self.cpus[c as usize].rq];
                let load = rq.queued() as u64 * 1024 / u64::from(rq.cpus.count().max(1));
                (load, c != last, c)
            })
            .unwrap_or(0)
    }

    /// Moves a vCPU that is not queued to runqueue `to`.
    fn move_rq(&mut self, r: VcpuRef, to: usize) {
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        if v.rq == to {
            return;
        }
        debug_assert!(!matches!(v.loc, Loc::Queued(_)));
        self.rqs[v.rq].remove_member(r, v.weight);
        self.rqs[to].add_member(r, v.weight);
        v.rq = to;
    }

    /// Makes sure the vCPU's runqueue has a CPU in its hard affinity (moving it if not).
    fn ensure_rq(&mut self, r: VcpuRef) {
        let Some(v) = self.vcpus.get(&r) else { return };
        if (v.affinity.hard & self.rqs[v.rq].cpus & self.online).is_empty() {
            let cpu = self.pick_cpu_for(v.affinity, v.last_cpu);
            let to = self.cpus[cpu as usize].rq;
            self.move_rq(r, to);
        }
    }

    /// Puts a runnable vCPU that is not running into its runqueue.
    fn enqueue(&mut self, r: VcpuRef) {
        self.ensure_rq(r);
        let seq = self.next_seq();
        let online = self.online;
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        let rq = &mut self.rqs[v.rq];
        // The class is the whole hard affinity, so that CPUs of other runqueues can tell
        // whether they may steal it.
        let class = (v.affinity.hard & online).0;
        debug_assert!(class & rq.cpus.0 != 0);
        let slot = Slot {
            class,
            key: QKey::new(v.credit, seq, r),
        };
        rq.insert(slot);
        v.loc = Loc::Queued(slot);
        if let Some(dom) = self.doms.get_mut(&r.dom) {
            dom.waiting += 1;
            if dom.served(v) {
                dom.waiting_served += 1;
            }
        }
    }

    fn dequeue(&mut self, r: VcpuRef) {
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        if let Loc::Queued(slot) = v.loc {
            self.rqs[v.rq].remove(&slot);
            v.loc = Loc::Asleep;
            if let Some(dom) = self.doms.get_mut(&r.dom) {
                dom.waiting -= 1;
                if dom.served(v) {
                    dom.waiting_served -= 1;
                }
            }
        }
    }

    /// Recomputes the domain's quota and served count (after a change of cap or of the
    /// number of vCPUs). O(vCPUs of the domain).
    fn recount(&mut self, d: u16) {
        let Some(dom) = self.doms.get_mut(&d) else {
            return;
        };
        dom.quota = (dom.total / i64::from(dom.nr_vcpus.max(1))).max(1);
        dom.waiting_served = 0;
        for (_, v) in self
            .vcpus
            .range(VcpuRef::new(d, 0)..=VcpuRef::new(d, u32::MAX))
        {
            if matches!(v.loc, Loc::Queued(_)) && dom.served(v) {
                dom.waiting_served += 1;
            }
        }
    }

    /// Burns the credit (and cap budget) of a running vCPU for the time since its last
    /// accounting.
    fn charge(&mut self, r: VcpuRef, now: Time) {
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        let elapsed = now.saturating_sub(v.accounted);
        v.accounted = v.accounted.max(now);
        if elapsed == 0 {
            return;
        }
        let max_weight = self.rqs[v.rq].max_weight();
        let floor = Self::floor(&self.cfg, v.weight, max_weight);
        v.credit = v
            .credit
            .saturating_sub(burn(elapsed, v.weight, max_weight))
            .max(floor);
        v.runtime = v.runtime.saturating_add(elapsed);
        if let Some(g) = v.grab.as_mut() {
            *g = g.saturating_sub(time_as_credit(elapsed));
        }
        if let Some(dom) = self.doms.get(&r.dom) {
            if dom.params.cap != 0 {
                if v.pid != dom.pid {
                    v.pid = dom.pid;
                    v.pused = 0;
                }
                v.pused = v.pused.saturating_add(time_as_credit(elapsed));
            }
        }
    }

    /// Credit `r` would have if charged now (without charging it).
    fn projected_credit(&self, r: VcpuRef, now: Time) -> i64 {
        let v = &self.vcpus[&r];
        let elapsed = now.saturating_sub(v.accounted);
        let max_weight = self.rqs[v.rq].max_weight();
        v.credit
            .saturating_sub(burn(elapsed, v.weight, max_weight))
            .max(Self::floor(&self.cfg, v.weight, max_weight))
    }

    /// Lowest credit of a vCPU of `weight` (see [`CREDIT_MIN`]).
    fn floor(cfg: &Config, weight: u16, max_weight: u16) -> i64 {
        let shortest = cfg.min_slice.max(cfg.ratelimit);
        CREDIT_MIN.min(burn(shortest, weight, max_weight).saturating_neg())
    }

    /// Returns what is left of the vCPU's slice budget to its domain's pool. (Parked
    /// siblings are reconsidered by the caller once the CPU has made its decision, so
    /// that a vCPU that goes on running takes its budget back first.)
    fn release(&mut self, r: VcpuRef) {
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        let Some(g) = v.grab.take() else { return };
        if let Some(dom) = self.doms.get_mut(&r.dom) {
            if dom.params.cap != 0 {
                dom.budget = dom.budget.saturating_add(g).min(dom.total);
            }
        }
    }

    /// Keeps `replenish` in step with the domain: an entry at `next_repl` iff it has parked
    /// vCPUs.
    fn sync_event(&mut self, d: u16) {
        let Some(dom) = self.doms.get_mut(&d) else {
            return;
        };
        let want = if dom.parked.is_empty() {
            None
        } else {
            Some(dom.next_repl)
        };
        if dom.event != want {
            if let Some(t) = dom.event {
                self.replenish.remove(&(t, d));
            }
            if let Some(t) = want {
                self.replenish.insert((t, d));
            }
            dom.event = want;
        }
    }

    /// Starts a new cap period if the current one is over; unparks if budget is back.
    fn refresh(&mut self, d: u16, now: Time) {
        let period = self.cfg.cap_period;
        let Some(dom) = self.doms.get_mut(&d) else {
            return;
        };
        if dom.params.cap == 0 || now < dom.next_repl {
            return;
        }
        let periods = (now - dom.next_repl) / period + 1;
        let add = dom
            .total
            .saturating_mul(i64::try_from(periods).unwrap_or(i64::MAX));
        dom.budget = dom.budget.saturating_add(add).min(dom.total);
        dom.next_repl = dom.next_repl.saturating_add(periods.saturating_mul(period));
        dom.pid = dom.pid.wrapping_add(periods);
        dom.waiting_served = 0;
        self.sync_event(d);
        self.unpark(d, now, true);
    }

    /// Cap budget `r` may take now (`i64::MAX` if uncapped). A vCPU that has not yet run
    /// its `quota` in this period may take up to the rest of it; one that has ("served")
    /// only what is left after reserving `quota` for each unserved sibling waiting in a
    /// runqueue. So siblings cannot starve one another, while a lone busy vCPU can still use
    /// the whole domain budget.
    fn avail(&self, r: VcpuRef) -> i64 {
        let (Some(dom), Some(v)) = (self.doms.get(&r.dom), self.vcpus.get(&r)) else {
            return 0;
        };
        if dom.params.cap == 0 {
            return i64::MAX;
        }
        let used = if v.pid == dom.pid { v.pused } else { 0 };
        if used < dom.quota {
            return dom.budget.min(dom.quota - used);
        }
        let mut unserved = i64::from(dom.waiting - dom.waiting_served);
        if matches!(v.loc, Loc::Queued(_)) && !dom.served(v) {
            unserved -= 1;
        }
        dom.budget
            .saturating_sub(dom.quota.saturating_mul(unserved))
    }

    /// Whether `r` may run now as far as its cap is concerned.
    fn can_run(&mut self, r: VcpuRef, now: Time) -> bool {
        self.refresh(r.dom, now);
        self.avail(r) > 0
    }

    /// Parks `r` until its domain has budget for it. If that creates a new replenishment
    /// event, some CPU allowed to run `r` must be awake at that time: the CPU inside
    /// `do_schedule` arms its timer for it anyway; otherwise an idle CPU is returned (and
    /// marked tickled), which must call `do_schedule` to arm its timer. Busy CPUs pick the
    /// event up at their next decision.
    #[must_use]
    fn park(&mut self, r: VcpuRef) -> Option<u32> {
        let v = self.vcpus.get_mut(&r)?;
        v.loc = Loc::Parked;
        let hard = v.affinity.hard & self.online;
        let dom = self.doms.get_mut(&r.dom)?;
        dom.parked.insert(r);
        let fresh = dom.event.is_none();
        self.sync_event(r.dom);
        if !fresh || self.scheduling.is_some_and(|c| hard.contains(c)) {
            return None;
        }
        let c = hard.iter().find(|&c| {
            let p = &self.cpus[c as usize];
            p.curr.is_none() && !p.tickled
        })?;
        self.cpus[c as usize].tickled = true;
        Some(c)
    }

    /// [`Self::park`], tickle through `take_tickles`.
    fn park_pending(&mut self, r: VcpuRef) {
        if let Some(c) = self.park(r) {
            self.tickles = self.tickles.with(c);
        }
    }

    /// Requeues the parked vCPUs of domain `d` that may run now. `preempt`: their tickle
    /// may preempt a running vCPU (at a replenishment or a parameter change); otherwise
    /// (budget handed back by a descheduled sibling) only idle CPUs are tickled, which
    /// keeps a burst of reschedules at one instant finite.
    /// Returns whether it requeued any.
    fn unpark(&mut self, d: u16, now: Time, preempt: bool) -> bool {
        let Some(dom) = self.doms.get(&d) else {
            return false;
        };
        if dom.parked.is_empty() || (dom.params.cap != 0 && dom.budget <= 0) {
            return false;
        }
        let mut any = false;
        let parked: Vec<VcpuRef> = dom.parked.iter().copied().collect();
        for r in parked {
            if self.avail(r) <= 0 {
                continue;
            }
            if let Some(dom) = self.doms.get_mut(&d) {
                dom.parked.remove(&r);
            }
            if let Some(v) = self.vcpus.get_mut(&r) {
                v.loc = Loc::Asleep;
                self.enqueue(r);
                any = true;
                let prefer = self.vcpus[&r].last_cpu;
                if let Some(c) = self.tickle(r, now, prefer, preempt) {
                    self.tickles = self.tickles.with(c);
                }
            }
        }
        self.sync_event(d);
        any
    }

    /// Replenishes the domains whose period ended and that have parked vCPUs.
    fn process_events(&mut self, now: Time) {
        self.last_now = self.last_now.max(now);
        while let Some(&(t, d)) = self.replenish.first() {
            if t > now {
                break;
            }
            self.refresh(d, now);
            if self.replenish.first() == Some(&(t, d)) {
                // Not a current period boundary (cannot happen); do not spin on it.
                self.replenish.pop_first();
                if let Some(dom) = self.doms.get_mut(&d) {
                    dom.event = None;
                }
                self.sync_event(d);
            }
        }
    }

    /// Chooses a CPU to reschedule for a newly queued vCPU: an idle CPU, else the CPU of
    /// its runqueue running the vCPU with the least credit if `r` has more by the margin
    /// (subject to the ratelimit, else a deadline is recorded).
    fn tickle(&mut self, r: VcpuRef, now: Time, prefer: u32, preempt: bool) -> Option<u32> {
        let v = self.vcpus.get(&r)?;
        let mut everywhere = v.affinity.hard & self.online;
        if let Some(c) = self.scheduling {
            everywhere = everywhere.without(c);
        }
        let hard = everywhere & self.rqs[v.rq].cpus;
        let soft = match hard & v.affinity.soft {
            s if s.is_empty() => hard,
            s => s,
        };
        // An idle CPU: of its runqueue, preferring soft affinity; else of another runqueue
        // (which will steal it).
        let mut target = None;
        'idle: for mask in [soft, hard, everywhere] {
            for c in [prefer, v.last_cpu] {
                if mask.contains(c) && self.cpu_free(c) {
                    target = Some(c);
                    break 'idle;
                }
            }
            if let Some(c) = mask.iter().find(|&c| self.cpu_free(c)) {
                target = Some(c);
                break;
            }
        }
        if let Some(c) = target {
            self.cpus[c as usize].tickled = true;
            return Some(c);
        }
        if !preempt {
            return None;
        }
        let mut lowest: Option<(i64, bool, u32)> = None;
        for c in hard.iter() {
            let p = &self.cpus[c as usize];
            let Some(cur) = p.curr else { continue };
            if p.tickled {
                continue;
            }
            let key = (self.projected_credit(cur, now), !soft.contains(c), c);
            if lowest.is_none_or(|l| key < l) {
                lowest = Some(key);
            }
        }
        let (low, _, c) = lowest?;
        if v.credit <= low.saturating_add(time_as_credit(self.cfg.preempt_margin)) {
            return None;
        }
        let p = &mut self.cpus[c as usize];
        let run_start = p
            .curr
            .and_then(|cur| self.vcpus.get(&cur))
            .map_or(now, |x| x.run_start);
        let until = run_start.saturating_add(self.cfg.ratelimit);
        if now >= until {
            p.tickled = true;
            Some(c)
        } else {
            p.deadline = Some(p.deadline.map_or(until, |d| d.min(until)));
            None
        }
    }

    fn tickle_pending(&mut self, r: VcpuRef, now: Time) {
        let prefer = self.vcpus.get(&r).map_or(0, |v| v.last_cpu);
        if let Some(c) = self.tickle(r, now, prefer, true) {
            self.tickles = self.tickles.with(c);
        }
    }

    /// The best queued vCPU of runqueue `rq` allowed on `cpu` whose domain has budget;
    /// vCPUs met on the way whose domain has none are parked.
    fn best_queued(&mut self, rq: usize, cpu: u32, now: Time) -> Option<Slot> {
        loop {
            let s = self.rqs[rq].best(cpu)?;
            if self.can_run(s.key.vcpu, now) {
                return Some(s);
            }
            self.dequeue(s.key.vcpu);
            self.park_pending(s.key.vcpu);
        }
    }

    /// Credit reset of runqueue `rq` (O(members)): everyone gets `m × CREDIT_INIT`, with `m`
    /// such that a vCPU at `best` ends up positive, clipped to `CREDIT_INIT +
    /// CARRYOVER_MAX` (after raising debts to the current floor).
    fn reset(&mut self, rq: usize, best: i64) {
        let m = 1 + best.min(0).saturating_neg() / CREDIT_INIT;
        let add = m.saturating_mul(CREDIT_INIT);
        let ceiling = CREDIT_INIT + CARRYOVER_MAX;
        let max_weight = self.rqs[rq].max_weight();
        for r in &self.rqs[rq].members {
            if let Some(v) = self.vcpus.get_mut(r) {
                // Debt run up under other weights is cut to what the current ones allow.
                let floor = Self::floor(&self.cfg, v.weight, max_weight);
                v.credit = v.credit.max(floor).saturating_add(add).min(ceiling);
            }
        }
        for s in self.rqs[rq].drain() {
            let r = s.key.vcpu;
            if let Some(v) = self.vcpus.get_mut(&r) {
                let slot = Slot {
                    class: s.class,
                    key: QKey::new(v.credit, s.key.seq, r),
                };
                self.rqs[rq].insert(slot);
                v.loc = Loc::Queued(slot);
            }
        }
        self.resets += 1;
    }

    /// An idle CPU takes the best vCPU allowed on it from another runqueue.
    fn steal(&mut self, rq: usize, cpu: u32, now: Time) -> Option<VcpuRef> {
        let mut best: Option<Slot> = None;
        for j in 0..self.rqs.len() {
            if j == rq {
                continue;
            }
            if let Some(s) = self.best_queued(j, cpu, now) {
                if best.is_none_or(|b| s.key.credit() > b.key.credit()) {
                    best = Some(s);
                }
            }
        }
        best.map(|s| s.key.vcpu)
    }

    /// Slice for `r`, just picked on `cpu` (whose runqueue is `rq`); takes cap budget.
    fn slice_for(&mut self, r: VcpuRef, rq: usize, cpu: u32, now: Time) -> Time {
        let cfg = self.cfg;
        let max_weight = self.rqs[rq].max_weight();
        let other = self.rqs[rq].best(cpu).map(|s| s.key.credit());
        let Some(v) = self.vcpus.get(&r) else {
            return cfg.min_slice;
        };
        // Run until the next candidate would have more credit, or until ours is gone.
        let diff = match other {
            Some(c) if c > 0 => v.credit.saturating_sub(c),
            _ => v.credit,
        };
        let mut t = credit_to_time(diff, v.weight, max_weight).clamp(cfg.min_slice, cfg.max_slice);
        if cfg.ratelimit > 0 {
            t = t.max(
                v.run_start
                    .saturating_add(cfg.ratelimit)
                    .saturating_sub(now),
            );
        }
        // Come back when a parked vCPU gets budget again.
        if let Some(&(tr, _)) = self.replenish.first() {
            if tr > now {
                t = t.min(tr - now);
            }
        }
        let avail = u64::try_from(self.avail(r)).unwrap_or(0);
        if let (Some(dom), Some(v)) = (self.doms.get_mut(&r.dom), self.vcpus.get_mut(&r)) {
            if dom.params.cap != 0 {
                let g = t.min(avail).min(dom.next_repl.saturating_sub(now)).max(1);
                dom.budget = dom.budget.saturating_sub(time_as_credit(g));
                v.grab = Some(time_as_credit(g));
                t = g;
            }
        }
        t.max(1)
    }

    fn schedule(&mut self, cpu: u32, now: Time) -> Decision {
        let ci = cpu as usize;
        let rq = self.cpus[ci].rq;
        self.cpus[ci].tickled = false;
        self.cpus[ci].deadline = None;
        let prev = self.cpus[ci].curr.take();

        // 1. Account the previous vCPU and decide whether it is still a candidate.
        let mut cand = None;
        let mut yielded = false;
        let mut prev_start = now;
        if let Some(r) = prev {
            self.charge(r, now);
            self.release(r);
            if let Some(v) = self.vcpus.get_mut(&r) {
                v.loc = Loc::Asleep;
                yielded = core::mem::take(&mut v.yielded);
                prev_start = v.run_start;
                if v.runnable {
                    cand = Some(r);
                }
            }
        }
        self.process_events(now);
        if let Some(r) = cand {
            if !self.can_run(r, now) {
                self.park_pending(r);
                cand = None;
            } else if !self.vcpus[&r].affinity.hard.contains(cpu) || self.vcpus[&r].rq != rq {
                self.enqueue(r);
                self.tickle_pending(r, now);
                cand = None;
            }
        }
        let ratelimited = cand.is_some()
            && !yielded
            && self.cfg.ratelimit > 0
            && now.saturating_sub(prev_start) < self.cfg.ratelimit;

        let mut reset_done = false;
        let chosen = loop {
            // 2. Pick: the previous vCPU against the best waiting one.
            let mut chosen = loop {
                let top = self.best_queued(rq, cpu, now);
                let pick = match (cand, top) {
                    (None, None) => None,
                    (Some(p), None) => Some(p),
                    (None, Some(t)) => Some(t.key.vcpu),
                    (Some(p), Some(t)) => {
                        let pc = self.vcpus[&p].credit;
                        let keep = if ratelimited {
                            true
                        } else if yielded {
                            t.key.credit() < pc.saturating_sub(YIELD_BIAS)
                        } else {
                            pc >= t.key.credit()
                        };
                        Some(if keep { p } else { t.key.vcpu })
                    }
                };
                match pick {
                    Some(r) if !reset_done && self.vcpus[&r].credit <= 0 => {
                        let c = self.vcpus[&r].credit;
                        self.reset(rq, c);
                        reset_done = true;
                    }
                    other => break other,
                }
            };
            if chosen.is_none() {
                chosen = self.steal(rq, cpu, now);
            }

            // 3. Take it out of its queue; requeue the previous one if it lost.
            if let Some(r) = chosen {
                if Some(r) != cand {
                    self.dequeue(r);
                    self.move_rq(r, rq);
                }
            }
            if let Some(p) = cand.take() {
                if chosen != Some(p) {
                    self.enqueue(p);
                    self.tickle_pending(p, now);
                }
            }
            // A capped vCPU may have lost its budget to the reservation for the sibling
            // just requeued: park it and pick again (each retry parks one vCPU).
            match chosen {
                Some(r) if self.avail(r) <= 0 => {
                    self.park_pending(r);
                }
                other => break other,
            }
        };

        // 4. Install it, and its slice.
        let slice = match chosen {
            Some(r) => {
                let v = self.vcpus.get_mut(&r).expect("chosen vCPU exists");
                v.loc = Loc::Running(cpu);
                v.accounted = now;
                v.last_cpu = cpu;
                if Some(r) != prev {
                    v.run_start = now;
                }
                self.cpus[ci].curr = Some(r);
                Some(self.slice_for(r, rq, cpu, now))
            }
            None => None,
        };
        // Budget handed back by the previous vCPU (and not taken again) may let parked
        // siblings run.
        if let Some(p) = prev {
            if self.unpark(p.dom, now, false) && chosen.is_none() {
                // Going idle: look again (no previous vCPU this time, so this recurses
                // once at most).
                return self.schedule(cpu, now);
            }
        }
        let slice = slice.or_else(|| {
            self.replenish
                .first()
                .map(|&(t, _)| t.saturating_sub(now).max(1))
        });
        Decision {
            next: chosen,
            slice,
        }
    }
}

impl Scheduler for Credit2 {
    fn insert(
        &mut self,
        v: VcpuRef,
        params: Params,
        affinity: Affinity,
        now: Time,
    ) -> Result<(), SchedError> {
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::Exists);
        }
        if params.weight == 0 {
            return Err(SchedError::InvalidWeight);
        }
        let hard = affinity.hard & self.online;
        if hard.is_empty() {
            return Err(SchedError::NoCpu);
        }
        self.process_events(now);
        match self.doms.get(&v.dom) {
            Some(d) if d.params != params => self.adjust(v.dom, params, now),
            Some(_) => {}
            None => {
                let total = self.cap_total(params.cap);
                self.doms.insert(
                    v.dom,
                    Dom {
                        params,
                        nr_vcpus: 0,
                        budget: total,
                        total,
                        next_repl: now.saturating_add(self.cfg.cap_period),
                        parked: BTreeSet::new(),
                        event: None,
                        quota: total,
                        pid: 0,
                        waiting: 0,
                        waiting_served: 0,
                    },
                );
            }
        }
        if let Some(d) = self.doms.get_mut(&v.dom) {
            d.nr_vcpus += 1;
        }
        let soft = hard & affinity.soft;
        let last = soft.first().or(hard.first()).unwrap_or(0);
        let cpu = self.pick_cpu_for(affinity, last);
        let rq = self.cpus[cpu as usize].rq;
        self.vcpus.insert(
            v,
            Vcpu {
                weight: params.weight,
                credit: CREDIT_INIT,
                runnable: false,
                loc: Loc::Asleep,
                affinity,
                rq,
                last_cpu: cpu,
                runtime: 0,
                accounted: now,
                run_start: now,
                grab: None,
                pid: 0,
                pused: 0,
                yielded: false,
            },
        );
        self.rqs[rq].add_member(v, params.weight);
        self.recount(v.dom);
        Ok(())
    }

    fn remove(&mut self, r: VcpuRef) {
        self.dequeue(r);
        let Some(v) = self.vcpus.remove(&r) else {
            return;
        };
        match v.loc {
            Loc::Parked => {
                if let Some(dom) = self.doms.get_mut(&r.dom) {
                    dom.parked.remove(&r);
                }
            }
            Loc::Running(cpu) => {
                self.cpus[cpu as usize].curr = None;
                self.tickles = self.tickles.with(cpu);
                if let (Some(g), Some(dom)) = (v.grab, self.doms.get_mut(&r.dom)) {
                    if dom.params.cap != 0 {
                        dom.budget = dom.budget.saturating_add(g).min(dom.total);
                    }
                }
            }
            Loc::Asleep | Loc::Queued(_) => {}
        }
        self.rqs[v.rq].remove_member(r, v.weight);
        let gone = self.doms.get_mut(&r.dom).is_some_and(|dom| {
            dom.nr_vcpus -= 1;
            dom.nr_vcpus == 0
        });
        if gone {
            if let Some(dom) = self.doms.remove(&r.dom) {
                if let Some(t) = dom.event {
                    self.replenish.remove(&(t, r.dom));
                }
            }
        } else {
            self.recount(r.dom);
            self.sync_event(r.dom);
            self.unpark(r.dom, self.last_now, false);
        }
    }

    fn sleep(&mut self, r: VcpuRef, now: Time) {
        self.process_events(now);
        let Some(v) = self.vcpus.get_mut(&r) else {
            return;
        };
        if !v.runnable {
            return;
        }
        v.runnable = false;
        match v.loc {
            Loc::Queued(_) => self.dequeue(r),
            Loc::Parked => {
                v.loc = Loc::Asleep;
                if let Some(dom) = self.doms.get_mut(&r.dom) {
                    dom.parked.remove(&r);
                }
                self.sync_event(r.dom);
            }
            // A running vCPU stays current until its CPU reschedules.
            Loc::Running(_) | Loc::Asleep => {}
        }
    }

    fn wake(&mut self, r: VcpuRef, now: Time) -> Option<u32> {
        self.process_events(now);
        let v = self.vcpus.get_mut(&r)?;
        if v.runnable {
            return None;
        }
        v.runnable = true;
        if v.loc != Loc::Asleep {
            // Still current on its CPU (sleep not yet acted upon): it simply keeps running.
            return None;
        }
        if !self.can_run(r, now) {
            // Parked; an idle CPU may have to arm a timer for the replenishment.
            return self.park(r);
        }
        let cpu = self.pick_cpu(r);
        self.move_rq(r, self.cpus[cpu as usize].rq);
        self.enqueue(r);
        self.tickle(r, now, cpu, true)
    }

    fn yield_now(&mut self, r: VcpuRef, _now: Time) {
        if let Some(v) = self.vcpus.get_mut(&r) {
            if matches!(v.loc, Loc::Running(_)) {
                v.yielded = true;
            }
        }
    }

    fn do_schedule(&mut self, cpu: u32, now: Time) -> Decision {
        if !self.online.contains(cpu) {
            return Decision {
                next: None,
                slice: None,
            };
        }
        self.last_now = self.last_now.max(now);
        self.scheduling = Some(cpu);
        let d = self.schedule(cpu, now);
        self.scheduling = None;
        d
    }

    fn pick_cpu(&self, r: VcpuRef) -> u32 {
        match self.vcpus.get(&r) {
            Some(v) => self.pick_cpu_for(v.affinity, v.last_cpu),
            None => self.online.first().unwrap_or(0),
        }
    }

    fn adjust(&mut self, d: u16, params: Params, now: Time) {
        self.process_events(now);
        if !self.doms.contains_key(&d) {
            return;
        }
        let weight = params.weight.max(1);
        let members: Vec<VcpuRef> = self
            .vcpus
            .range(VcpuRef::new(d, 0)..=VcpuRef::new(d, u32::MAX))
            .map(|(&r, _)| r)
            .collect();
        for &r in &members {
            if matches!(self.vcpus[&r].loc, Loc::Running(_)) {
                self.charge(r, now); // at the old rate
            }
        }
        for &r in &members {
            if let Some(v) = self.vcpus.get_mut(&r) {
                if v.weight != weight {
                    self.rqs[v.rq].change_weight(v.weight, weight);
                    v.weight = weight;
                }
            }
        }
        let total = self.cap_total(params.cap);
        let period = self.cfg.cap_period;
        let Some(dom) = self.doms.get_mut(&d) else {
            return;
        };
        let old_cap = dom.params.cap;
        dom.params = Params {
            weight,
            cap: params.cap,
        };
        dom.total = total;
        if params.cap == 0 {
            dom.budget = 0;
        } else if old_cap == 0 {
            // A fresh period: nobody has used anything of it yet.
            dom.budget = total;
            dom.next_repl = now.saturating_add(period);
            dom.pid = dom.pid.wrapping_add(1);
        } else {
            dom.budget = dom.budget.min(total);
        }
        self.recount(d);
        self.sync_event(d);
        self.unpark(d, now, true);
    }

    fn set_affinity(
        &mut self,
        r: VcpuRef,
        affinity: Affinity,
        now: Time,
    ) -> Result<(), SchedError> {
        let hard = affinity.hard & self.online;
        if hard.is_empty() {
            return Err(SchedError::NoCpu);
        }
        if !self.vcpus.contains_key(&r) {
            return Err(SchedError::NotFound);
        }
        self.process_events(now);
        let v = self.vcpus.get_mut(&r).ok_or(SchedError::NotFound)?;
        v.affinity = affinity;
        match v.loc {
            Loc::Queued(_) => {
                self.dequeue(r);
                self.enqueue(r); // new class, possibly another runqueue
                self.tickle_pending(r, now);
            }
            Loc::Running(cpu) => {
                if !hard.contains(cpu) {
                    self.tickles = self.tickles.with(cpu);
                }
            }
            Loc::Asleep | Loc::Parked => self.ensure_rq(r),
        }
        Ok(())
    }

    fn runtime(&self, r: VcpuRef) -> Option<Time> {
        self.vcpus.get(&r).map(|v| v.runtime)
    }

    fn take_tickles(&mut self) -> CpuMask {
        core::mem::take(&mut self.tickles)
    }

    fn resched_deadline(&self, cpu: u32) -> Option<Time> {
        self.cpus.get(cpu as usize).and_then(|p| p.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_and_inverse() {
        assert_eq!(burn(1000, 256, 512), 2000);
        assert_eq!(burn(1000, 512, 512), 1000);
        assert_eq!(credit_to_time(2000, 256, 512), 1000);
        assert_eq!(credit_to_time(-5, 256, 512), 0);
        assert_eq!(burn(u64::MAX, 1, 65535), i64::MAX);
    }
}
