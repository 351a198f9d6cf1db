//! vCPU scheduling for ferrovisor: the [`Scheduler`] interface the hypervisor drives, and
//! [`Credit2`], a credit2-style scheduler in the spirit of Xen's
//! `xen/common/sched/credit2.c` (independently written; the constants are Xen's).
//!
//! Pure, `no_std` + `alloc`, integer arithmetic only, no `unsafe`; everything is tested on
//! the host against a simulated machine (`tests/`).
//!
//! # Policy
//!
//! * **Credit.** Every vCPU has a signed credit, in nanoseconds-at-reference-weight. A new
//!   vCPU starts with [`CREDIT_INIT`] (10 ms). Running for `t` ns burns
//!   `t × max_weight / weight`, where `max_weight` is the largest weight among the vCPUs of
//!   its runqueue: the heaviest vCPU burns in real time, one of half its weight twice as
//!   fast. The runnable vCPU with the most credit runs (ties: the running one stays, then
//!   FIFO).
//! * **Reset.** When the vCPU about to be picked has credit ≤ 0, every vCPU of the runqueue
//!   (running, waiting, asleep or parked) gets `m × CREDIT_INIT` (m = 1 unless the pick is
//!   more than 10 ms in debt), clipped to `CREDIT_INIT +` [`CARRYOVER_MAX`] (500 µs). So
//!   between resets each CPU-bound vCPU runs `CREDIT_INIT × weight / max_weight`: CPU time
//!   is shared in proportion to weight, and a sleeper banks at most 10.5 ms. Credit never
//!   falls below a floor (see [`CREDIT_MIN`]), which bounds how long a vCPU that overran
//!   (e.g. a light one given a long slice before heavier ones arrived) waits.
//! * **Slice.** Run until the next waiting candidate would have more credit (the credit
//!   difference converted to time at the runner's burn rate; until its own credit is gone
//!   if nobody waits), clamped to [`Config::min_slice`]..=[`Config::max_slice`]
//!   (500 µs..=10 ms) and at least the rest of the [`Config::ratelimit`]; then shortened to
//!   the next budget replenishment of a parked domain, and to the cap budget taken.
//! * **Caps.** A capped domain (`Params::cap` > 0) has a pool of `cap% × cap_period` ns
//!   per [`Config::cap_period`] (10 ms), shared by all its vCPUs. A vCPU takes its slice's
//!   worth from the pool when picked (slices of capped vCPUs never cross the period end)
//!   and gives back what it did not use when descheduled; an overrun (late `do_schedule`)
//!   is a debt paid from the next period. So that siblings cannot starve one another, a
//!   vCPU's first `budget / nr_vcpus` of a period is reserved for it while it waits in a
//!   runqueue; beyond that share a vCPU may use whatever its siblings leave (a lone busy
//!   vCPU can use the whole budget). A runnable vCPU that can take no budget is *parked*
//!   (kept off the runqueue) until the period ends or a sibling gives budget back; every
//!   slice, and the idle decision (`next: None, slice: Some(..)`), ends no later than the
//!   earliest replenishment of a domain with parked vCPUs.
//! * **Wake-up.** A waking vCPU is placed by [`Scheduler::pick_cpu`]: its last CPU if idle,
//!   else any idle CPU in its soft affinity, then hard affinity, else the least loaded
//!   runqueue among its soft-affinity CPUs. `wake` returns an idle CPU of its runqueue, or
//!   else the CPU running the vCPU with the least credit, if the woken one has more by
//!   [`Config::preempt_margin`] (100 µs) and that runner has run for at least the
//!   ratelimit (1 ms). When the ratelimit holds the preemption back, `wake` returns `None`
//!   and [`Scheduler::resched_deadline`] tells when that CPU must reschedule (a caller that
//!   ignores it still runs the woken vCPU at the end of the current slice, ≤ 10 ms).
//!   CPUs to reschedule because of internal events (a requeued vCPU while another CPU
//!   idles, unparking, affinity changes) are collected for [`Scheduler::take_tickles`].
//! * **Ratelimit.** A runnable, non-yielding vCPU that has run for less than the ratelimit
//!   keeps its CPU at a reschedule, and a newly picked vCPU gets at least that long.
//! * **Yield.** At the next decision the yielder runs only if it has more than
//!   [`YIELD_BIAS`] (1 ms) more credit than the best waiting vCPU.
//! * **Affinity.** Hard affinity is never violated: waiting vCPUs are grouped by affinity
//!   class, and a CPU only looks at classes containing it. Soft affinity steers
//!   `pick_cpu` and which CPU `wake` tickles.
//! * **Runqueues.** One runqueue per set of CPUs ([`Credit2::new`]: one for all;
//!   [`Credit2::with_runqueues`]: e.g. per socket). Credit is compared within a
//!   runqueue. Balancing is by placement at wake-up and by an idle CPU stealing the best
//!   waiting vCPU allowed on it from another runqueue.
//!
//! Starvation freedom: a runnable vCPU with positive credit is overtaken only by vCPUs with
//! more credit, each of which can run at most `CREDIT_INIT + CARRYOVER_MAX` worth before
//! falling below it; once everyone is at or below zero a reset happens. Credit never falls
//! below [`CREDIT_MIN`] (−10 ms) or minus the cost of one shortest slice (`max(min_slice,
//! ratelimit)`) at the vCPU's weight, whichever is lower. So a CPU-bound vCPU waits at most
//! about two credit cycles, `2 × Σ (CREDIT_INIT + CARRYOVER_MAX) × w_i / max_weight`, or
//! `Σ w_i / weight` shortest slices if that is longer (what proportional share demands: a
//! vCPU of weight 1 beside one of weight 999 gets one 1 ms slice per second), plus a
//! ratelimit; a capped one additionally at most one cap period. Measured: weights 1..=10
//! on one CPU, the weight-1 vCPU waits ≤ 112 ms.
//!
//! # Complexity
//!
//! n = vCPUs, k = distinct hard-affinity classes among the waiting vCPUs of a runqueue
//! (1 when nobody is pinned), C = CPUs, R = runqueues, v = vCPUs of the domain concerned.
//! `wake`: O(log n + C). `sleep`, `yield_now`, `runtime`: O(log n). `do_schedule`:
//! O(k log n + C), plus O(R k log n) when stealing, plus O(log n) per vCPU parked or
//! unparked and O(v) for looking at the parked siblings of a capped vCPU; a credit reset is
//! O(m log m) for the m members of the runqueue, and happens at most once per
//! ~`CREDIT_INIT` of CPU time. `insert`, `remove`, `adjust`: O(v log n).
//!
//! # Use
//!
//! ```
//! use sched::{Affinity, Config, Credit2, Params, Scheduler, VcpuRef};
//! let mut s = Credit2::new(1, Config::default());
//! let v = VcpuRef::new(0, 0);
//! s.insert(v, Params::default(), Affinity::ANY, 0).unwrap();
//! assert_eq!(s.wake(v, 0), Some(0)); // CPU 0 is idle: reschedule it
//! let d = s.do_schedule(0, 0);
//! assert_eq!(d.next, Some(v));
//! assert_eq!(d.slice, Some(10_000_000)); // alone: runs a full 10 ms
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod credit2;
mod runqueue;
mod types;

pub use credit2::{Credit2, CARRYOVER_MAX, CREDIT_INIT, CREDIT_MIN, YIELD_BIAS};
pub use types::{
    Affinity, Config, CpuMask, Decision, Params, SchedError, Scheduler, Time, VcpuRef, VcpuState,
};
