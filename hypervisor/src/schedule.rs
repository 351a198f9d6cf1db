//! The hypervisor instance and each CPU's scheduling loop.
//!
//! [`Hv`] holds what every CPU shares: the virtualization backend, the domain table, the
//! scheduler policy (the host-tested `sched` crate, credit2-style) and the timer heap that
//! wakes blocked vCPUs. [`run`] is a CPU's life after boot: take the vCPU the policy
//! picks, run it for its slice ([`crate::domain::run::run_vcpu`]), put it back and act on
//! why it stopped; with nothing to run, wait for the next timer.
//!
//! Every usable CPU runs [`run`] (the APs enter it from their idle loops once the boot
//! domains are built). A vCPU's hardware half is owned by whichever CPU runs it: it is
//! taken out of its parking place for the slice and put back after, so no lock is held
//! across a VM entry and no other CPU can touch a running vCPU's registers. Others reach
//! a vCPU through its atomic flags and pending bits (wake, IPI) and through the
//! scheduler; when it runs on another CPU they poke that CPU (softirq + event-check IPI),
//! which makes it leave guest mode and look again. The scheduler's answers (the CPU a
//! wake-up tickles, its tickle set, held-back deadlines) become softirqs and IPIs in
//! [`Hv::act_on`].
//!
//! Timers of blocked vCPUs live in a heap per CPU (the CPU where the vCPU set them), so
//! each CPU arms its host timer only for its own vCPUs' deadlines.
//!
//! Wake-ups are never lost: a waker first makes its condition visible (event bits, IPI
//! bits, timer), then clears the BLOCKED flag and tells the scheduler; a vCPU that blocks
//! raises the flag, re-checks every condition, and is put to sleep in the scheduler only
//! if the flag is still up with the scheduler lock held.

use crate::arch::x86::percpu::{self, softirq, MAX_CPUS};
use crate::arch::x86::{irq, lapic, smp};
use crate::cmdline::Options;
use crate::domain::run::{run_vcpu, Outcome};
use crate::domain::table::DomainTable;
use crate::domain::{runstate, vflags, DomId, Domain, DomainEnd, Life, Vcpu, VcpuTimer, NO_CPU};
use crate::hvm::vlapic::ApicEffect;
use crate::hvm::{Backend, Vcpu as _};
use crate::sync::{Level, Lock};
use crate::time;
use crate::xen::Cx;
use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use arrayvec::ArrayString;
use core::cmp::Reverse;
use core::sync::atomic::Ordering;
use log::info;
use sched::Scheduler;

/// Longest slice when the policy gives no bound (ns).
const MAX_SLICE_NS: u64 = 30_000_000;
/// How often console input is looked for while the control domain waits (ns).
const CONSOLE_POLL_NS: u64 = 10_000_000;

/// A destroyed domain whose last reference may still be held.
struct Grave {
    /// Raised once the domain is dropped and its frames are back (after its last
    /// reference went, possibly on another CPU).
    freed: Arc<core::sync::atomic::AtomicBool>,
    id: DomId,
    name: ArrayString<32>,
    frames: u64,
}

/// One CPU's vCPU wake-ups, earliest first: (deadline ns, domid, vcpu).
type TimerHeap = BinaryHeap<Reverse<(u64, DomId, u32)>>;

/// What every CPU shares.
pub struct Hv<B: Backend> {
    pub backend: B,
    pub domains: DomainTable<B>,
    pub sched: Lock<sched::Credit2>,
    /// Per CPU, (deadline ns, domid, vcpu): when to wake a blocked vCPU. Entries go stale
    /// when a vCPU re-arms; `Vcpu::next_timer` tells which are current.
    timers: Vec<Lock<TimerHeap>>,
    graves: Lock<Vec<Grave>>,
    /// Free frames plus the frames held by domains that are not boot-time domUs, taken
    /// before the first domU was built: once every domU is gone, the same sum must hold.
    baseline: Lock<Option<u64>>,
    pub options: Options,
}

impl<B: Backend> Hv<B> {
    /// The hypervisor instance, scheduling on every CPU that passed the boot check.
    pub fn new(backend: B, options: Options) -> Self {
        let cpus = sched::CpuMask(smp::usable_mask());
        let cfg = sched::Config {
            ratelimit: u64::from(options.sched_ratelimit_us) * 1000,
            ..sched::Config::default()
        };
        let policy = sched::Credit2::with_runqueues(cfg, &[cpus])
            .unwrap_or_else(|_| sched::Credit2::new(1, cfg));
        Hv {
            backend,
            domains: DomainTable::new(),
            sched: Lock::new(Level::Sched, policy),
            timers: (0..MAX_CPUS)
                .map(|_| Lock::new(Level::Timers, BinaryHeap::new()))
                .collect(),
            graves: Lock::new(Level::Graves, Vec::new()),
            baseline: Lock::new(Level::Baseline, None),
            options,
        }
    }

    /// The control domain (dom0), if it runs.
    pub fn control_domain(&self) -> Option<Arc<Domain<B>>> {
        self.domains.control()
    }

    /// Adds a built (paused) domain to the table and the scheduler, then unpauses it.
    pub fn start_domain(&self, dom: Arc<Domain<B>>) -> bool {
        if !self.add_domain(dom.clone()) {
            return false;
        }
        dom.started.store(true, Ordering::SeqCst);
        self.unpause(&dom);
        true
    }

    /// Adds a built (paused) domain to the table and the scheduler; false if its id is
    /// taken.
    pub fn add_domain(&self, dom: Arc<Domain<B>>) -> bool {
        if !self.domains.insert(dom.clone()) {
            return false;
        }
        let now = time::now().1;
        {
            let mut s = self.sched.lock();
            for v in &dom.vcpus {
                let params = sched::Params {
                    weight: dom.params.weight,
                    cap: dom.params.cap,
                };
                let affinity = match dom.params.cpus {
                    0 => sched::Affinity::ANY,
                    m => sched::Affinity {
                        hard: sched::CpuMask(m),
                        soft: sched::CpuMask::ANY,
                    },
                };
                if let Err(e) = s.insert(v.sref(), params, affinity, now) {
                    log::error!("domain {}: scheduler refused vCPU {}: {e:?}", dom.id, v.id);
                }
            }
        }
        true
    }

    /// Stops the domain's vCPUs from being scheduled until a matching [`Hv::unpause`],
    /// and returns once none of them runs (except the caller's own, if it is one of them).
    /// The caller holds no lock.
    pub fn pause(&self, dom: &Domain<B>) {
        if dom.pause_count.fetch_add(1, Ordering::SeqCst) == 0 {
            let now = time::now().1;
            let mut s = self.sched.lock();
            for v in &dom.vcpus {
                s.sleep(v.sref(), now);
            }
        }
        self.descheduled(dom);
    }

    /// Waits until no vCPU of `dom` runs on another CPU, after the scheduler was told
    /// they may not run: each such CPU is asked to reschedule. Serves this CPU's
    /// cross-CPU calls meanwhile.
    fn descheduled(&self, dom: &Domain<B>) {
        for v in &dom.vcpus {
            self.vcpu_descheduled(v);
        }
    }

    /// [`Hv::descheduled`] for one vCPU the scheduler was told may not run (paused, or
    /// down): returns once it runs on no other CPU (as Xen's `vcpu_sleep_sync`). The
    /// caller holds no lock.
    pub fn vcpu_descheduled(&self, v: &Vcpu<B>) {
        crate::sync::assert_none_held();
        let c = v.cpu.load(Ordering::SeqCst);
        if c == NO_CPU || c == percpu::this().index {
            return;
        }
        smp::poke(c, softirq::SCHEDULE);
        while v.cpu.load(Ordering::SeqCst) == c {
            smp::serve_calls();
            core::hint::spin_loop();
        }
    }

    /// Makes the CPUs running vCPUs of `dom` look at them again soon (the domain ended,
    /// or a vCPU has something new to take).
    fn poke_running(&self, dom: &Domain<B>, bits: u32) {
        let me = percpu::this().index;
        for v in &dom.vcpus {
            let c = v.cpu.load(Ordering::SeqCst);
            if c != NO_CPU && c != me {
                smp::poke(c, bits);
            }
        }
    }

    /// Undoes one [`Hv::pause`]; at zero the runnable vCPUs are scheduled again.
    pub fn unpause(&self, dom: &Domain<B>) {
        if dom.pause_count.fetch_sub(1, Ordering::SeqCst) == 1 && dom.life() == Life::Running {
            let now = time::now().1;
            let mut s = self.sched.lock();
            for v in dom.vcpus.iter().filter(|v| v.runnable()) {
                v.runstate.lock().set(runstate::RUNNABLE, now);
                let cpu = s.wake(v.sref(), now);
                self.act_on(&mut s, cpu);
            }
        }
    }

    /// Wakes `v` if it is blocked, after a caller made a wake condition visible (an
    /// event, an IPI, a timer); if it runs on another CPU, makes that CPU leave guest mode
    /// so that it takes the news at its next entry.
    pub fn wake(&self, dom: &Domain<B>, v: &Vcpu<B>) {
        if v.clear_flag(vflags::BLOCKED) {
            self.make_runnable(dom, v);
        } else {
            let c = v.cpu.load(Ordering::SeqCst);
            if c != NO_CPU && c != percpu::this().index {
                smp::poke(c, softirq::EVENT_CHECK);
            }
        }
    }

    /// Hands a vCPU that just lost its BLOCKED or DOWN flag to the scheduler, if nothing
    /// else keeps it from running (the other flag, its domain paused or ended).
    fn make_runnable(&self, dom: &Domain<B>, v: &Vcpu<B>) {
        if !v.runnable()
            || dom.pause_count.load(Ordering::SeqCst) != 0
            || dom.life() != Life::Running
        {
            return;
        }
        let now = time::now().1;
        v.runstate.lock().set(runstate::RUNNABLE, now);
        self.sched_wake(v, dom.is_control(), now);
    }

    /// Tells the scheduler `v` (of the control domain or not) is runnable and acts on its answer: reschedule now, or by
    /// the time the rate limit allows.
    fn sched_wake(&self, v: &Vcpu<B>, control: bool, now: u64) {
        let mut s = self.sched.lock();
        stats::wake(control);
        let cpu = s.wake(v.sref(), now);
        let held = self.act_on(&mut s, cpu);
        stats::event(match (cpu, held) {
            (Some(_), _) => stats::WAKE_PREEMPT,
            (None, true) => stats::WAKE_HELD,
            (None, false) => stats::WAKE_LATER,
        });
    }

    /// Turns what the scheduler asked for into softirqs and IPIs: `cpu` (the answer of a
    /// `wake`) and every CPU in its tickle set reschedule now; a CPU with a held-back
    /// deadline gives its vCPU back by then at the latest. Returns whether any CPU has
    /// such a deadline.
    fn act_on(&self, s: &mut sched::Credit2, cpu: Option<u32>) -> bool {
        use sched::Scheduler as _;
        let mut resched = s.take_tickles();
        if let Some(c) = cpu {
            resched = resched.with(c);
        }
        for c in resched.iter() {
            smp::poke(c, softirq::SCHEDULE);
        }
        let mut held = false;
        for c in s.online().iter() {
            let Some(t) = s.resched_deadline(c) else {
                continue;
            };
            held = true;
            let Some(pc) = percpu::cpu(c as usize) else {
                continue;
            };
            if t < pc.resched_at.fetch_min(t, Ordering::SeqCst) {
                // Earlier than what that CPU's host timer is armed for: it must re-arm.
                smp::poke(c, softirq::EVENT_CHECK);
            }
        }
        held
    }

    /// Applies `f` to the scheduler, then acts on the CPUs it asks to reschedule.
    pub fn with_sched<R>(&self, f: impl FnOnce(&mut sched::Credit2) -> R) -> R {
        let mut s = self.sched.lock();
        let r = f(&mut s);
        self.act_on(&mut s, None);
        r
    }

    /// The latest time the vCPU running on this CPU may run to: its slice end, or earlier
    /// when a held-back wake-up or one of this CPU's vCPU timers is due.
    pub fn run_until(&self, slice_end: u64) -> u64 {
        let pc = percpu::this();
        slice_end
            .min(pc.resched_at.load(Ordering::SeqCst))
            .min(pc.timer_next.load(Ordering::SeqCst))
    }

    /// Brings an offline vCPU online (after its SIPI).
    pub fn start_vcpu(&self, dom: &Domain<B>, v: &Vcpu<B>) {
        if v.clear_flag(vflags::DOWN) {
            self.make_runnable(dom, v);
        }
    }

    /// Acts on an event-channel kick: a vCPU whose `evtchn_upcall_pending` went up gets
    /// its per-vCPU upcall vector in its LAPIC (if it registered one; otherwise the global
    /// callback is injected while the flag stays up), and every vCPU named is woken.
    pub fn kick(&self, dom: &Domain<B>, kick: evtchn::Kick) {
        if kick.is_empty() {
            return;
        }
        if !kick.upcalls.is_empty() {
            let st = dom.st.lock();
            for id in kick.upcalls.iter() {
                let vector = st.upcall_vector.get(id as usize).copied().unwrap_or(0);
                if let (Some(v), true) = (dom.vcpu(id), vector != 0) {
                    v.post_ipi(vector);
                }
            }
        }
        for id in kick.vcpus().iter() {
            if let Some(v) = dom.vcpu(id) {
                self.wake(dom, v);
            }
        }
    }

    /// Records that `vcpu`'s timers changed.
    pub fn timer_changed(&self, vcpu: &Vcpu<B>, t: &VcpuTimer) {
        self.timer_changed_with(vcpu, t, 0);
    }

    /// [`Hv::timer_changed`], with one more deadline (a poll timeout; 0 = none).
    pub fn timer_changed_with(&self, vcpu: &Vcpu<B>, t: &VcpuTimer, extra: u64) {
        let mut next = t.next_expiry().unwrap_or(u64::MAX);
        if extra != 0 {
            next = next.min(extra);
        }
        let old = vcpu.next_timer.swap(next, Ordering::SeqCst);
        if next != u64::MAX && next != old {
            let pc = percpu::this();
            self.timers[pc.index as usize]
                .lock()
                .push(Reverse((next, vcpu.domid, vcpu.id)));
            pc.timer_next.fetch_min(next, Ordering::SeqCst);
        }
    }

    /// Wakes the blocked vCPUs whose timers in this CPU's heap are due; returns the next
    /// deadline there.
    fn run_timers(&self, now: u64) -> Option<u64> {
        let mut due: arrayvec::ArrayVec<(DomId, u32), 32> = arrayvec::ArrayVec::new();
        let pc = percpu::this();
        let next = {
            let mut heap = self.timers[pc.index as usize].lock();
            while let Some(&Reverse((t, d, v))) = heap.peek() {
                if t > now || due.is_full() {
                    break;
                }
                heap.pop();
                due.push((d, v));
            }
            let next = heap.peek().map(|Reverse((t, _, _))| *t);
            pc.timer_next
                .store(next.unwrap_or(u64::MAX), Ordering::SeqCst);
            next
        };
        for (d, id) in due {
            let Some(dom) = self.domains.get(d) else {
                continue;
            };
            if let Some(v) = dom.vcpu(id) {
                if v.next_timer.load(Ordering::SeqCst) <= now {
                    self.wake(&dom, v);
                }
            }
        }
        next
    }

    /// Whether the running vCPU must give the CPU back now.
    pub fn should_preempt(&self, slice_end: u64) -> bool {
        percpu::this().softirq.load(Ordering::SeqCst) & softirq::SCHEDULE != 0
            || time::now().1 >= self.run_until(slice_end)
    }

    /// Ends `dom` (shutdown, crash, deadlock): its vCPUs stop, the end is reported and
    /// the control domain hears of it (VIRQ_DOM_EXC). A domain the toolstack created
    /// stays, shut down, until the toolstack destroys it; a boot-time domU is destroyed
    /// at once (nothing else would collect it). The control domain's end ends the
    /// machine, as with Xen.
    pub fn end_domain(&self, dom: &Arc<Domain<B>>, end: DomainEnd) {
        {
            let mut st = dom.st.lock();
            if st.life != Life::Running {
                return;
            }
            st.life = Life::Ended(end);
            st.end_console_line(dom.id);
        }
        let now = time::now().1;
        {
            let mut s = self.sched.lock();
            for v in &dom.vcpus {
                s.sleep(v.sref(), now);
            }
        }
        self.poke_running(dom, softirq::SCHEDULE);
        let (mut exits, mut by_kind) = (0, [0u64; crate::hvm::Exit::KINDS]);
        for v in &dom.vcpus {
            if let Some(ctx) = v.ctx.lock().as_ref() {
                exits += ctx.exits;
                for (a, b) in by_kind.iter_mut().zip(ctx.exits_by_kind.iter()) {
                    *a += b;
                }
            }
        }
        info!(
            "domain {} ({}) {end}; {exits} exits, {} hypercalls",
            dom.id,
            dom.name,
            dom.hypercalls.load(Ordering::Relaxed)
        );
        let mut kinds = ArrayString::<256>::new();
        for (k, n) in by_kind.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = crate::hvm::Exit::kind_name(k);
            let _ = core::fmt::Write::write_fmt(&mut kinds, format_args!(" {name}={n}"));
        }
        log::debug!("domain {} exits by kind:{kinds}", dom.id);
        if !dom.is_control() {
            stats::summary(now);
        }
        if end == DomainEnd::Shutdown(3) {
            log::error!(
                "domain {} ({}) crashed: the guest reported a fatal error (its messages are above)",
                dom.id,
                dom.name
            );
        }
        if dom.is_control() {
            crate::start::dom0_ended(end);
        }
        if !dom.managed || end == DomainEnd::Destroyed {
            self.destroy(dom);
        }
        if let Some(dom0) = self.control_domain() {
            crate::xen::events::raise_virq(self, &dom0, xen_abi::xen::VIRQ_DOM_EXC, 0);
        }
    }

    /// The toolstack's destroy: ends the domain if it still runs, then takes it apart.
    pub fn destroy_domain(&self, dom: &Arc<Domain<B>>) {
        if dom.life() == Life::Running {
            self.end_domain(dom, DomainEnd::Destroyed);
        } else if dom.life() != Life::Dying {
            self.destroy(dom);
            if let Some(dom0) = self.control_domain() {
                crate::xen::events::raise_virq(self, &dom0, xen_abi::xen::VIRQ_DOM_EXC, 0);
            }
        }
    }

    /// Takes an ended domain apart: its event channels close (peers see them unbound),
    /// its vCPUs leave the scheduler and it leaves the table. Its memory goes back when
    /// the last reference drops ([`Hv::reap`] reports it).
    fn destroy(&self, dom: &Arc<Domain<B>>) {
        // Its vCPUs were put to sleep when it ended; wait until none still runs (in a
        // hypercall that could map or bind) on another CPU.
        self.descheduled(dom);
        crate::xen::events::close_all(self, dom);
        crate::xen::grant_table::unmap_all(self, dom);
        self.with_sched(|s| {
            for v in &dom.vcpus {
                s.remove(v.sref());
            }
        });
        let frames = dom.frames_held();
        dom.st.lock().life = Life::Dying;
        self.domains.remove(dom.id);
        self.graves.lock().push(Grave {
            freed: dom.freed.0.clone(),
            id: dom.id,
            name: dom.name,
            frames,
        });
    }

    /// Reports domains whose last reference has gone (their frames are back), and the
    /// frame balance once no domU is left.
    fn reap(&self) {
        let mut graves = self.graves.lock();
        if graves.is_empty() {
            return;
        }
        graves.retain(|g| {
            if !g.freed.load(Ordering::SeqCst) {
                return true;
            }
            info!(
                "domain {} ({}) destroyed: {} frames returned",
                g.id, g.name, g.frames
            );
            false
        });
        if !graves.is_empty() {
            return;
        }
        drop(graves);
        let domus_left = self.domains.all().iter().any(|d| d.id != 0);
        if let (false, Some(before)) = (domus_left, *self.baseline.lock()) {
            let now = self.frame_balance();
            let orphans = crate::mm::frametable::global::orphans();
            info!(
                "all domUs gone: frame balance {:+} ({now} frames free or held by the remaining domains, {before} before the domUs were built; {orphans} more still mapped by a remaining domain, freed at its unmap)",
                now as i64 + orphans as i64 - before as i64
            );
        }
    }

    /// Free frames plus those held by the domains that exist now.
    pub fn frame_balance(&self) -> u64 {
        let free = crate::mm::phys::FRAMES
            .lock()
            .as_ref()
            .map_or(0, |f| f.free_frames());
        free + self
            .domains
            .all()
            .iter()
            .map(|d| d.frames_held())
            .sum::<u64>()
    }

    /// Notes the frame balance before the first domU is built.
    pub fn note_baseline(&self) {
        let b = self.frame_balance();
        self.baseline.lock().get_or_insert(b);
    }
}

/// An INIT or SIPI sent through a vCPU's virtual LAPIC to another vCPU of its domain
/// (Linux starts its APs with INIT, SIPI, SIPI through the x2APIC ICR).
pub fn apic_special<B: Backend>(cx: &mut Cx<'_, B>, effect: ApicEffect) {
    const INIT: u8 = 5;
    const SIPI: u8 = 6;
    let ApicEffect::Special { dest, mode, vector } = effect else {
        return;
    };
    let Some(target) = cx.dom.vcpu(dest).filter(|t| t.id != cx.vcpu.id) else {
        log::debug!(
            "d{}v{}: APIC IPI mode {mode} to {dest}: no such vCPU (or itself); dropped",
            cx.dom.id,
            cx.vcpu.id
        );
        return;
    };
    let icr = cx.v.vlapic.read(0x830).unwrap_or(0);
    match mode {
        // INIT level de-assert (level trigger, level 0) does nothing on modern CPUs.
        INIT if icr & (1 << 15) != 0 && icr & (1 << 14) == 0 => {}
        INIT if target.has(vflags::DOWN) => target.set_flag(vflags::WAIT_SIPI),
        INIT => log::debug!(
            "d{}: INIT to running vCPU {dest} ignored (only offline vCPUs are reset)",
            cx.dom.id
        ),
        SIPI if target.clear_flag(vflags::WAIT_SIPI) => {
            target.sipi.store(
                crate::domain::SIPI_PENDING | u32::from(vector),
                Ordering::SeqCst,
            );
            cx.hv.start_vcpu(cx.dom, target);
        }
        // A second SIPI (Linux sends two) or one without INIT is ignored, as on hardware.
        SIPI => {}
        _ => log::debug!(
            "d{}: APIC IPI mode {mode} to vCPU {dest} not supported; dropped",
            cx.dom.id
        ),
    }
}

/// The TSC value at system time `ns` (saturating; u64::MAX for "never").
pub fn tsc_at(ns: u64) -> u64 {
    if ns == u64::MAX {
        return u64::MAX;
    }
    let (tsc, now) = time::now();
    tsc.saturating_add(time::scale().ns_to_ticks(ns.saturating_sub(now)))
}

/// Ends the guest's run at system time `ns` at the latest: the host timer interrupt makes
/// the guest exit even if it never exits by itself.
pub fn arm_host_timer(ns: u64) {
    // A timer that fired since (TIMER softirq) is armed no more, whatever it was for.
    let fired = percpu::this()
        .softirq
        .fetch_and(!softirq::TIMER, Ordering::SeqCst)
        & softirq::TIMER
        != 0;
    if percpu::this().armed_ns.swap(ns, Ordering::SeqCst) == ns && !fired {
        return;
    }
    if ns == u64::MAX {
        lapic::disarm();
    } else {
        lapic::arm_deadline(tsc_at(ns));
    }
}

/// Forgets what the host timer is armed for (it fired, or the CPU reprograms it).
fn host_timer_changed() {
    percpu::this().armed_ns.store(0, Ordering::SeqCst);
}

/// Waits with interrupts enabled until system time `ns` or a softirq (a timer, an IPI).
fn wait_until(ns: u64) {
    host_timer_changed();
    arm_host_timer(ns);
    let start = time::now().1;
    stats::event(stats::IDLE_WAITS);
    while time::now().1 < ns
        && percpu::this().softirq.load(Ordering::SeqCst) == 0
        && !smp::call_pending()
    {
        irq::wait_for_interrupt();
    }
    stats::idle(time::now().1.saturating_sub(start));
}

/// This CPU's scheduling loop (every usable CPU runs one). The boot CPU also polls the
/// console for input. The CPU that finds nothing left to run acts on `on_idle=`.
pub fn run<B: Backend>(hv: &'static Hv<B>) -> ! {
    let pc = percpu::this();
    let cpu = pc.index;
    let boot_cpu = cpu == 0;
    if boot_cpu {
        // The APs join now: every domain of the boot modules is in the table.
        smp::start_scheduler(alloc::boxed::Box::leak(alloc::boxed::Box::new(move || {
            run(hv)
        })));
    }
    let mut last_ran = None;
    loop {
        let now = time::now().1;
        if boot_cpu {
            stats::report(now);
        }
        if percpu::take_softirqs() & softirq::TIMER != 0 {
            host_timer_changed();
        }
        smp::serve_calls();
        crate::domain::devirq::poll(hv);
        irq::report_nmis();
        let next_timer = hv.run_timers(now);
        if boot_cpu {
            crate::xen::console::poll_input(hv);
        }
        // Any CPU: the one that dropped a dead domain's last reference reports it.
        hv.reap();
        pc.resched_at.store(u64::MAX, Ordering::SeqCst);
        let decision = {
            let mut s = hv.sched.lock();
            let d = s.do_schedule(cpu, now);
            hv.act_on(&mut s, None);
            d
        };
        let Some(r) = decision.next else {
            if hv.domains.is_empty() && hv.graves.lock().is_empty() {
                crate::start::idle(&hv.options);
            }
            let mut until = next_timer.unwrap_or(u64::MAX);
            if let Some(s) = decision.slice {
                until = until.min(now.saturating_add(s));
            }
            if boot_cpu && hv.control_domain().is_some() {
                until = until.min(now + CONSOLE_POLL_NS);
            }
            wait_until(until.min(pc.resched_at.load(Ordering::SeqCst)));
            continue;
        };
        let Some(dom) = hv.domains.get(r.dom) else {
            hv.sched.lock().remove(r);
            continue;
        };
        let Some(vcpu) = dom.vcpu(r.vcpu) else {
            hv.sched.lock().remove(r);
            continue;
        };
        // Published before the context is loaded and the flush generation read (see
        // `Domain::p2m_changed`).
        vcpu.cpu.store(cpu, Ordering::SeqCst);
        let Some(mut ctx) = vcpu.ctx.lock().take() else {
            vcpu.cpu.store(NO_CPU, Ordering::SeqCst);
            log::error!("d{}v{}: picked while running elsewhere", r.dom, r.vcpu);
            continue;
        };
        if last_ran.replace(r) != Some(r) {
            stats::event(stats::SWITCH);
        }
        let slice_end = now.saturating_add(decision.slice.unwrap_or(MAX_SLICE_NS));
        vcpu.runstate.lock().set(runstate::RUNNING, now);
        {
            let st = dom.st.lock();
            crate::xen::shared_info::update_time(&dom.mem, &st, vcpu.id);
        }
        crate::arch::x86::spec::enter_domain(u32::from(r.dom));
        stats::running(dom.is_control());
        ctx.hw.load();
        let outcome = run_vcpu(hv, &dom, vcpu, &mut ctx, slice_end);
        ctx.hw.put();
        // Taken down meanwhile by another vCPU (VCPUOP_down), it goes offline as if it
        // had gone down itself.
        let outcome = match outcome {
            Outcome::Preempted | Outcome::Yield if vcpu.has(vflags::DOWN) => Outcome::Down,
            o => o,
        };
        if outcome == Outcome::Down {
            ctx.hw.detach();
        }
        *vcpu.ctx.lock() = Some(ctx);
        vcpu.cpu.store(NO_CPU, Ordering::SeqCst);
        let now = time::now().1;
        match outcome {
            Outcome::Preempted => {
                stats::event(stats::PREEMPTED);
                vcpu.runstate.lock().set(runstate::RUNNABLE, now)
            }
            Outcome::Yield => {
                vcpu.runstate.lock().set(runstate::RUNNABLE, now);
                hv.with_sched(|s| s.yield_now(r, now));
            }
            Outcome::Blocked | Outcome::Down => {
                stats::event(stats::BLOCKED);
                let state = if outcome == Outcome::Down {
                    runstate::OFFLINE
                } else {
                    runstate::BLOCKED
                };
                let mut s = hv.sched.lock();
                // Still not runnable with the scheduler locked: a waker that cleared the
                // flag first will find it asleep and wake it; one that comes later sees
                // the flag clear and does nothing, so sleeping now would lose it.
                if vcpu.runnable() {
                    vcpu.runstate.lock().set(runstate::RUNNABLE, now);
                } else {
                    vcpu.runstate.lock().set(state, now);
                    s.sleep(r, now);
                }
            }
            Outcome::End(end) => hv.end_domain(&dom, end),
        }
    }
}

/// Machine-wide performance counters, for finding where the time of PV I/O goes: exits
/// by kind, hypercalls by number and sub-op (with the items of grant-table batches),
/// x2APIC MSR accesses by register, scheduler wake-ups by outcome, context switches and
/// idle time, each split between the control domain (0) and the others (1). With
/// `loglvl=debug` the loop prints what changed about once a second ([`stats::report`]).
pub mod stats {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Hypercall numbers counted (Xen's go up to 41 in use).
    const NRS: usize = 48;
    /// Sub-ops counted per hypercall (the first argument, higher ones fold into 31).
    const SUBS: usize = 32;
    /// x2APIC registers (MSR 0x800 + n); 63 counts every other MSR.
    const MSRS: usize = 64;

    #[allow(clippy::declare_interior_mutable_const)]
    const Z: AtomicU64 = AtomicU64::new(0);
    #[allow(clippy::declare_interior_mutable_const)]
    const ZK: [AtomicU64; crate::hvm::Exit::KINDS] = [Z; crate::hvm::Exit::KINDS];
    #[allow(clippy::declare_interior_mutable_const)]
    const ZS: [AtomicU64; SUBS] = [Z; SUBS];
    #[allow(clippy::declare_interior_mutable_const)]
    const ZN: [[AtomicU64; SUBS]; NRS] = [ZS; NRS];
    #[allow(clippy::declare_interior_mutable_const)]
    const ZM: [AtomicU64; MSRS] = [Z; MSRS];

    #[allow(clippy::declare_interior_mutable_const)]
    const ZC: [AtomicU64; 16] = [Z; 16];
    static EXITS: [[AtomicU64; crate::hvm::Exit::KINDS]; 2] = [ZK; 2];
    static CALLS: [[[AtomicU64; SUBS]; NRS]; 2] = [ZN; 2];
    static GRANT_ITEMS: [[AtomicU64; SUBS]; 2] = [ZS; 2];
    static MSR: [[AtomicU64; MSRS]; 2] = [ZM; 2];
    /// Wake-ups: of a blocked vCPU (0 control, 1 other); answered with a reschedule
    /// (2), held back by the ratelimit (3), or neither (4); context switches (5); slices
    /// ended by a preemption (6); blocks (7); idle waits (8).
    static EVENTS: [AtomicU64; 9] = [Z; 9];
    pub const WAKE_PREEMPT: usize = 2;
    pub const WAKE_HELD: usize = 3;
    pub const WAKE_LATER: usize = 4;
    pub const SWITCH: usize = 5;
    pub const PREEMPTED: usize = 6;
    pub const BLOCKED: usize = 7;
    pub const IDLE_WAITS: usize = 8;
    static IDLE_NS: AtomicU64 = Z;
    /// Raw backend exits by exit code (SVM: CR accesses 0..0x1f fold to 0..31, others by
    /// code / 4 mod 32 would collide; only CR writes are kept apart: 0x10..0x1f), of the
    /// class running now.
    static CR_EXITS: [[AtomicU64; 16]; 2] = [ZC; 2];
    static ALL_BACKEND: [AtomicU64; 2] = [Z; 2];
    /// Per CPU: the class of the domain it runs (CPUs run dom0 and domUs side by side).
    static CURRENT: [core::sync::atomic::AtomicUsize; crate::arch::x86::percpu::MAX_CPUS] =
        [const { core::sync::atomic::AtomicUsize::new(0) }; crate::arch::x86::percpu::MAX_CPUS];
    fn current() -> &'static core::sync::atomic::AtomicUsize {
        let cpu = crate::arch::x86::percpu::this().index as usize;
        &CURRENT[cpu.min(CURRENT.len() - 1)]
    }
    static LAST_REPORT: AtomicU64 = Z;

    fn class(control: bool) -> usize {
        usize::from(!control)
    }

    /// The class of the domain about to run (the backend does not know it).
    pub fn running(control: bool) {
        current().store(class(control), Relaxed);
    }

    /// Every exit the backend sees, including those it handles itself (CR writes).
    pub fn backend_exit(code: u64) {
        let c = current().load(Relaxed);
        ALL_BACKEND[c].fetch_add(1, Relaxed);
        if (0x10..0x20).contains(&code) {
            CR_EXITS[c][(code - 0x10) as usize].fetch_add(1, Relaxed);
        }
    }

    pub fn exit(control: bool, kind: usize) {
        if let Some(c) = EXITS[class(control)].get(kind) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn hypercall(control: bool, nr: u64, sub: u64, items: u64) {
        let c = class(control);
        let (n, s) = (
            nr.min(NRS as u64 - 1) as usize,
            sub.min(SUBS as u64 - 1) as usize,
        );
        CALLS[c][n][s].fetch_add(1, Relaxed);
        if nr == xen_abi::xen::HYPERVISOR_GRANT_TABLE_OP {
            GRANT_ITEMS[c][s].fetch_add(items.min(1 << 20), Relaxed);
        }
    }

    pub fn msr(control: bool, index: u32) {
        let i = index.wrapping_sub(0x800).min(MSRS as u32 - 1) as usize;
        MSR[class(control)][i].fetch_add(1, Relaxed);
    }

    pub fn wake(control: bool) {
        EVENTS[class(control)].fetch_add(1, Relaxed);
    }

    pub fn event(which: usize) {
        if let Some(c) = EVENTS.get(which) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn idle(ns: u64) {
        IDLE_NS.fetch_add(ns, Relaxed);
    }

    /// Prints and clears the counters when `loglvl=debug` and a second has passed.
    pub fn report(now: u64) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let last = LAST_REPORT.load(Relaxed);
        if last == 0 {
            LAST_REPORT.store(now, Relaxed);
            return;
        }
        if now.saturating_sub(last) < 1_000_000_000 {
            return;
        }
        print(log::Level::Debug, now);
    }

    /// Prints (at info level) and clears what was counted since the last report: when a
    /// domU ends, so that each domU's run is summed up once.
    pub fn summary(now: u64) {
        print(log::Level::Info, now);
    }

    fn print(level: log::Level, now: u64) {
        let last = LAST_REPORT.swap(now, Relaxed);
        let span = now.saturating_sub(last);
        let idle = IDLE_NS.swap(0, Relaxed);
        let ev: [u64; 9] = core::array::from_fn(|i| EVENTS[i].swap(0, Relaxed));
        log::log!(
            level,
            "perf: {} ms: idle {} ms ({} waits); wakes dom0 {} domU {}: preempt {} held {} later {}; switches {} preempted {} blocked {}",
            span / 1_000_000,
            idle / 1_000_000,
            ev[IDLE_WAITS],
            ev[0],
            ev[1],
            ev[WAKE_PREEMPT],
            ev[WAKE_HELD],
            ev[WAKE_LATER],
            ev[SWITCH],
            ev[PREEMPTED],
            ev[BLOCKED]
        );
        for (c, who) in ["dom0", "domU"].iter().enumerate() {
            let mut s = alloc::format!(" all={}", ALL_BACKEND[c].swap(0, Relaxed));
            for (i, n) in CR_EXITS[c].iter().enumerate() {
                let n = n.swap(0, Relaxed);
                if n > 0 {
                    s.push_str(&alloc::format!(" cr{}w={n}", i));
                }
            }
            for (k, n) in EXITS[c].iter().enumerate() {
                let n = n.swap(0, Relaxed);
                if n > 0 {
                    s.push_str(&alloc::format!(" {}={n}", crate::hvm::Exit::kind_name(k)));
                }
            }
            s.push_str(" | hcall");
            for (nr, subs) in CALLS[c].iter().enumerate() {
                for (sub, n) in subs.iter().enumerate() {
                    let n = n.swap(0, Relaxed);
                    if n > 0 {
                        s.push_str(&alloc::format!(" {nr}.{sub}={n}"));
                        if nr as u64 == xen_abi::xen::HYPERVISOR_GRANT_TABLE_OP {
                            let items = GRANT_ITEMS[c][sub].swap(0, Relaxed);
                            s.push_str(&alloc::format!("({items} items)"));
                        }
                    }
                }
            }
            s.push_str(" | msr");
            for (i, n) in MSR[c].iter().enumerate() {
                let n = n.swap(0, Relaxed);
                if n > 0 {
                    s.push_str(&alloc::format!(" {:#x}={n}", 0x800 + i));
                }
            }
            log::log!(level, "perf {who}:{s}");
        }
    }
}
