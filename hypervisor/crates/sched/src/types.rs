//! Vocabulary shared by every scheduler: time, vCPU names, CPU masks, parameters, the
//! [`Scheduler`] trait.

use core::fmt;
use core::ops::{BitAnd, BitOr, Not};

/// Nanoseconds on a monotonic clock (the hypervisor's system time).
pub type Time = u64;

/// Names one vCPU: its domain and its index in that domain.
///
/// Ordered by domain first, so all vCPUs of a domain are adjacent in ordered maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuRef {
    /// Domain id.
    pub dom: u16,
    /// vCPU index within the domain.
    pub vcpu: u32,
}

impl VcpuRef {
    /// `VcpuRef { dom, vcpu }`.
    pub const fn new(dom: u16, vcpu: u32) -> Self {
        Self { dom, vcpu }
    }
}

/// A set of physical CPUs `0..64`, bit `n` = CPU `n`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuMask(pub u64);

impl CpuMask {
    /// No CPU.
    pub const NONE: Self = Self(0);
    /// Every CPU the mask can name (use as "any CPU"; it is intersected with the online ones).
    pub const ANY: Self = Self(u64::MAX);

    /// CPUs `0..n` (`n` ≥ 64 gives all 64).
    pub const fn all(n: u32) -> Self {
        if n >= 64 {
            Self(u64::MAX)
        } else {
            Self((1u64 << n) - 1)
        }
    }

    /// Only `cpu` (empty if `cpu` ≥ 64).
    pub const fn single(cpu: u32) -> Self {
        if cpu >= 64 {
            Self(0)
        } else {
            Self(1u64 << cpu)
        }
    }

    /// Whether `cpu` is in the set.
    pub const fn contains(self, cpu: u32) -> bool {
        cpu < 64 && self.0 & (1u64 << cpu) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the two sets share a CPU.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The lowest-numbered CPU in the set.
    pub const fn first(self) -> Option<u32> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros())
        }
    }

    /// Number of CPUs in the set.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// The set with `cpu` added.
    pub const fn with(self, cpu: u32) -> Self {
        Self(self.0 | Self::single(cpu).0)
    }

    /// The set with `cpu` removed.
    pub const fn without(self, cpu: u32) -> Self {
        Self(self.0 & !Self::single(cpu).0)
    }

    /// The CPUs of the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u32> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                None
            } else {
                let cpu = bits.trailing_zeros();
                bits &= bits - 1;
                Some(cpu)
            }
        })
    }
}

impl BitAnd for CpuMask {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl BitOr for CpuMask {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl Not for CpuMask {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0)
    }
}

/// Scheduling parameters of a domain (Xen's `xen_domctl_sched_credit2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Relative share of CPU time, `1..=65535` (Xen's default is 256). A domain of weight
    /// 512 gets twice the time of one of weight 256 when both are CPU-bound.
    pub weight: u16,
    /// Upper bound on the CPU time of the whole domain, in percent of one physical CPU per
    /// [`Config::cap_period`]; 0 = uncapped. May exceed 100 for multi-vCPU domains.
    pub cap: u16,
}

impl Params {
    /// Xen's default weight.
    pub const DEFAULT_WEIGHT: u16 = 256;

    /// Weight `weight`, uncapped.
    pub const fn weight(weight: u16) -> Self {
        Self { weight, cap: 0 }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self {
            weight: Self::DEFAULT_WEIGHT,
            cap: 0,
        }
    }
}

/// Where a vCPU may run (`hard`) and where it prefers to run (`soft`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// The vCPU never runs on a CPU outside this set (intersected with the online CPUs).
    pub hard: CpuMask,
    /// Preferred CPUs, used when placing the vCPU; ignored where it does not meet `hard`.
    pub soft: CpuMask,
}

impl Affinity {
    /// May run anywhere, no preference.
    pub const ANY: Self = Self {
        hard: CpuMask::ANY,
        soft: CpuMask::ANY,
    };

    /// Hard-pinned to `cpu`.
    pub const fn pinned(cpu: u32) -> Self {
        Self {
            hard: CpuMask::single(cpu),
            soft: CpuMask::single(cpu),
        }
    }

    /// May run anywhere, prefers `cpus`.
    pub const fn prefer(cpus: CpuMask) -> Self {
        Self {
            hard: CpuMask::ANY,
            soft: cpus,
        }
    }
}

impl Default for Affinity {
    fn default() -> Self {
        Self::ANY
    }
}

/// What a CPU runs next, returned by [`Scheduler::do_schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run; `None` = run the idle loop.
    pub next: Option<VcpuRef>,
    /// Call `do_schedule` on this CPU again at most this long after `now` (the timer to
    /// arm); `None` = no timer is needed, only a wake-up or tickle will make work. Never
    /// `Some(0)`.
    pub slice: Option<Time>,
}

/// Why a scheduler operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// `insert` of a vCPU the scheduler already has.
    Exists,
    /// The vCPU is not known to the scheduler.
    NotFound,
    /// Weight 0.
    InvalidWeight,
    /// The hard affinity contains no online CPU.
    NoCpu,
    /// A runqueue layout that is empty, overlapping or beyond 64 CPUs.
    InvalidTopology,
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exists => "vCPU already known to the scheduler",
            Self::NotFound => "no such vCPU",
            Self::InvalidWeight => "weight must be 1..=65535",
            Self::NoCpu => "hard affinity contains no online CPU",
            Self::InvalidTopology => "invalid runqueue layout",
        })
    }
}

impl core::error::Error for SchedError {}

/// Tunables of [`crate::Credit2`]. All times in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Shortest slice granted (Xen credit2 `CSCHED2_MIN_TIMER`): 500 µs.
    pub min_slice: Time,
    /// Longest slice granted (Xen credit2 `CSCHED2_MAX_TIMER`): 10 ms.
    pub max_slice: Time,
    /// A vCPU that has run for less than this is neither preempted by a wake-up nor
    /// descheduled at a reschedule unless it blocks or yields (Xen `sched_ratelimit_us`):
    /// 1 ms. Also the shortest slice of a newly picked vCPU. 0 disables it.
    pub ratelimit: Time,
    /// Period over which caps are enforced and budgets replenished: 10 ms.
    pub cap_period: Time,
    /// A waking vCPU preempts a running one only if its credit exceeds the runner's by
    /// more than this (credit units, i.e. ns at the runqueue's maximum weight): 100 µs.
    pub preempt_margin: Time,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_slice: 500_000,
            max_slice: 10_000_000,
            ratelimit: 1_000_000,
            cap_period: 10_000_000,
            preempt_margin: 100_000,
        }
    }
}

/// Where a vCPU is, as seen by the scheduler (for assertions and diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Not runnable.
    Asleep,
    /// Runnable, waiting in a runqueue.
    Queued,
    /// Runnable but held back until its domain's cap budget is replenished.
    Parked,
    /// The current vCPU of this CPU (possibly no longer runnable, if `sleep` was called and
    /// the CPU has not rescheduled yet).
    Running(u32),
}

/// A vCPU scheduler, driven by the hypervisor.
///
/// # Contract with the caller
///
/// * After `do_schedule(cpu, now)` returns `next`, that vCPU runs on `cpu` until the next
///   `do_schedule(cpu, ..)`. The caller arms a timer for `slice` and calls `do_schedule`
///   again when it fires, when `wake` returns that CPU, when the CPU is in
///   [`Scheduler::take_tickles`], by [`Scheduler::resched_deadline`], and after the running
///   vCPU blocks (`sleep`), yields (`yield_now`) or is removed.
/// * `now` never goes backwards on one CPU; small skews between CPUs are tolerated.
/// * Every method is O(log n) in the number of vCPUs, except as documented.
pub trait Scheduler {
    /// Adds a vCPU, initially asleep (not runnable). `params` apply to its whole domain (as
    /// with [`Scheduler::adjust`]).
    fn insert(
        &mut self,
        v: VcpuRef,
        params: Params,
        affinity: Affinity,
        now: Time,
    ) -> Result<(), SchedError>;
    /// Forgets a vCPU, whatever its state. If it was running, its CPU must call
    /// `do_schedule` (it is also reported by `take_tickles`).
    fn remove(&mut self, v: VcpuRef);
    /// The vCPU is no longer runnable (blocked, paused). If it was running, it stays the
    /// CPU's current vCPU until that CPU calls `do_schedule`, which the caller must do.
    fn sleep(&mut self, v: VcpuRef, now: Time);
    /// The vCPU is runnable again. Returns a CPU that should call `do_schedule` now: to run
    /// it on an idle CPU, or to preempt a vCPU with less credit that has run for at least
    /// [`Config::ratelimit`], or (when its domain is out of cap budget, so it is parked) an
    /// idle CPU that must arm its timer for the replenishment. No-op (returns `None`) if it
    /// is already runnable.
    fn wake(&mut self, v: VcpuRef, now: Time) -> Option<u32>;
    /// The running vCPU yields: at the next `do_schedule` of its CPU it goes behind the
    /// runnable vCPUs of equal (or slightly lower) credit. The caller then calls
    /// `do_schedule`. No-op if it is not running.
    fn yield_now(&mut self, v: VcpuRef, now: Time);
    /// Charges the current vCPU of `cpu` for the time since it was last accounted, then
    /// picks what `cpu` runs next.
    fn do_schedule(&mut self, cpu: u32, now: Time) -> Decision;
    /// The CPU a waking vCPU should be placed on.
    fn pick_cpu(&self, v: VcpuRef) -> u32;
    /// Sets weight and cap of every vCPU of domain `dom` (and of vCPUs inserted later).
    /// A weight of 0 is treated as 1.
    fn adjust(&mut self, dom: u16, params: Params, now: Time);
    /// Changes a vCPU's affinity. `Err(NoCpu)` if `hard` holds no online CPU (nothing
    /// changes then). If the vCPU runs on a CPU outside the new hard affinity, that CPU is
    /// reported by `take_tickles`.
    fn set_affinity(&mut self, v: VcpuRef, affinity: Affinity, now: Time)
        -> Result<(), SchedError>;
    /// Total running time charged to the vCPU so far.
    fn runtime(&self, v: VcpuRef) -> Option<Time>;

    /// CPUs that must call `do_schedule` soon because of something other than the return
    /// value of `wake`: vCPUs unparked at a budget replenishment, a vCPU requeued while
    /// another CPU idles, an affinity change or removal of a running vCPU. Clears the set.
    /// Poll after every call (SMP); on one CPU the slice timer alone is enough.
    fn take_tickles(&mut self) -> CpuMask {
        CpuMask::NONE
    }

    /// A time at which `cpu` must call `do_schedule` even if its last slice is longer: set
    /// when a wake-up would have preempted its vCPU but was held back by the ratelimit.
    /// Cleared by `do_schedule(cpu)`. Check after `wake` returns `None`.
    fn resched_deadline(&self, cpu: u32) -> Option<Time> {
        let _ = cpu;
        None
    }
}
