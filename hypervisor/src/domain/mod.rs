//! Domains: a guest's memory, vCPUs, Xen-visible state and life cycle.
//!
//! Built by [`build`] (a straight pipeline: memory → kernel image → start_info → vCPUs,
//! each step failing on its own), kept in the domain table ([`table`]), scheduled by
//! [`crate::sched`] and run one exit at a time by [`run`]. Nothing here names VMCS or
//! VMCB fields; hardware is reached through [`crate::hvm::Vcpu`].
//!
//! Locks, in the order they may nest (checked by construction: no function takes an
//! earlier lock while holding a later one): the domain table, then domain locks
//! (`Domain::st`, several only in ascending domid order), then a vCPU's parked context,
//! then the scheduler, then the p2m and the frame allocator, then the console. None is
//! held across a VM entry; interrupt handlers take none. (Grant mapping holds the mapper's
//! and the granter's domain locks, in domid order, then one p2m at a time; the frame
//! table's reference counts are lock-free atomics.)

pub mod build;
pub mod devirq;
pub mod kernel;
pub mod memory;
pub mod mmio;
pub mod run;
pub mod table;

use crate::hvm::Backend;
use crate::sync::Lock;
use alloc::boxed::Box;
use alloc::vec::Vec;
use arrayvec::ArrayString;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use memory::GuestMemory;

/// Most grant-table frames a domain may have (Xen's default `max_grant_frames`).
pub const MAX_GRANT_FRAMES: usize = 32;

/// Domain identifier, as in Xen (`domid_t`).
pub type DomId = u16;

/// Why a domain stopped, reported by the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainEnd {
    /// SCHEDOP_shutdown with a Xen SHUTDOWN_* reason code.
    Shutdown(u32),
    /// Crashed: a fatal guest error the hypervisor diagnosed (already printed).
    Crashed,
    /// Every vCPU is blocked with nothing that could ever wake it.
    Deadlocked,
    /// Destroyed by the toolstack while it ran.
    Destroyed,
}

impl fmt::Display for DomainEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainEnd::Shutdown(r) => {
                write!(f, "shut down: {} (reason {r})", shutdown_reason_name(*r))
            }
            DomainEnd::Crashed => write!(f, "crashed"),
            DomainEnd::Deadlocked => write!(f, "blocked forever (no timer, no events)"),
            DomainEnd::Destroyed => write!(f, "destroyed by the toolstack"),
        }
    }
}

/// Xen's names for `SHUTDOWN_*` codes.
pub fn shutdown_reason_name(reason: u32) -> &'static str {
    match reason {
        0 => "poweroff",
        1 => "reboot",
        2 => "suspend",
        3 => "crash",
        4 => "watchdog",
        5 => "soft_reset",
        _ => "unknown",
    }
}

/// Per-vCPU timers the generic code keeps (Xen system time, ns).
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuTimer {
    /// When the one-shot timer fires (set_timer_op / VCPUOP_set_singleshot_timer).
    pub deadline_ns: Option<u64>,
    /// Period of the periodic timer (VCPUOP_set_periodic_timer), and its next expiry.
    pub period_ns: Option<u64>,
    pub next_period_ns: u64,
    /// The virtual LAPIC timer's next expiry, mirrored from the vLAPIC so that the
    /// scheduler wakes the vCPU for it ([`crate::hvm::vlapic::Vlapic::timer_expiry`]).
    pub apic_ns: Option<u64>,
}

impl VcpuTimer {
    /// The earliest time either timer fires.
    pub fn next_expiry(&self) -> Option<u64> {
        let periodic = self.period_ns.map(|_| self.next_period_ns);
        [self.deadline_ns, periodic, self.apic_ns]
            .into_iter()
            .flatten()
            .min()
    }

    /// Consumes the timers due at `now`; true if any fired.
    pub fn fire_due(&mut self, now: u64) -> bool {
        let mut fired = false;
        if self.deadline_ns.is_some_and(|d| d <= now) {
            self.deadline_ns = None;
            fired = true;
        }
        if let Some(p) = self.period_ns {
            if self.next_period_ns <= now {
                // Skip missed periods rather than firing a burst.
                // Guest-chosen period (1 ms ..= i64::MAX ns): saturate rather than wrap.
                let missed = (now - self.next_period_ns) / p.max(1) + 1;
                self.next_period_ns = self.next_period_ns.saturating_add(missed.saturating_mul(p));
                fired = true;
            }
        }
        fired
    }
}

/// Life-cycle state of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Built and schedulable (subject to the pause count).
    Running,
    /// Ended: shut down with a reason, crashed or deadlocked; its vCPUs never run again
    /// and it is torn down as soon as nothing runs on it.
    Ended(DomainEnd),
    /// Removed from the domain table; the last reference frees it.
    Dying,
}

/// Per-vCPU flags (`Vcpu::flags`), set and cleared atomically from any CPU.
pub mod vflags {
    /// Waiting for an event, a timer or an IPI (HLT, SCHEDOP_block, SCHEDOP_poll).
    pub const BLOCKED: u32 = 1 << 0;
    /// Offline: not started yet (an AP before its SIPI), or halted with interrupts off.
    pub const DOWN: u32 = 1 << 1;
    /// Blocked in SCHEDOP_poll (a wake also ends the poll).
    pub const POLLING: u32 = 1 << 2;
    /// An AP received INIT and waits for a SIPI.
    pub const WAIT_SIPI: u32 = 1 << 3;
    /// An NMI waits for delivery (sent through a virtual LAPIC; taken at the next entry
    /// the guest can take it).
    pub const NMI: u32 = 1 << 4;
}

/// `Vcpu::sipi`: a SIPI waits to be applied.
pub const SIPI_PENDING: u32 = 1 << 8;

/// `Vcpu::cpu` of a vCPU that runs nowhere.
pub const NO_CPU: u32 = u32::MAX;

/// Xen runstates.
pub mod runstate {
    pub const RUNNING: usize = 0;
    pub const RUNNABLE: usize = 1;
    pub const BLOCKED: usize = 2;
    pub const OFFLINE: usize = 3;
}

/// A vCPU's runstate accounting (`vcpu_runstate_info`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Runstate {
    pub state: usize,
    pub entry_ns: u64,
    pub time: [u64; 4],
    /// Guest-virtual address of the vCPU's runstate area
    /// (VCPUOP_register_runstate_memory_area), refreshed by the vCPU itself.
    pub area: Option<u64>,
}

impl Runstate {
    /// Moves to `state` at `now`, charging the time since the last change to the old one.
    pub fn set(&mut self, state: usize, now: u64) {
        let spent = now.saturating_sub(self.entry_ns);
        self.time[self.state] = self.time[self.state].wrapping_add(spent);
        self.state = state;
        self.entry_ns = now;
    }

    /// The accounting as of `now` (the current state's time included).
    pub fn snapshot(&self, now: u64) -> Runstate {
        let mut r = *self;
        r.set(self.state, now);
        r
    }
}

/// The shared half of a vCPU: what other CPUs and other domains may touch (flags,
/// pending IPIs, the timer deadline mirror, runstate) while the vCPU runs elsewhere.
/// The hardware half ([`VcpuCtx`]) belongs to whichever CPU runs the vCPU: it is taken
/// out of `ctx` while running and parked there otherwise, so no lock is ever held across
/// a VM entry.
pub struct Vcpu<B: Backend> {
    pub id: u32,
    pub domid: DomId,
    pub flags: AtomicU32,
    /// Vectors other vCPUs sent through the virtual LAPIC (fixed IPIs), merged into the
    /// owner's IRR before it enters the guest.
    pub ipis: [AtomicU32; 8],
    /// A SIPI for this vCPU (`SIPI_PENDING | vector`), applied by the CPU that next runs
    /// it (only the running CPU may touch its hardware state).
    pub sipi: AtomicU32,
    /// Host frames its hardware half holds (for accounting while it runs elsewhere).
    pub hw_frames: u64,
    /// Earliest expiry of the vCPU's timers (Xen system time, ns), or u64::MAX: a
    /// mirror the timer heap checks so stale heap entries are skipped.
    pub next_timer: AtomicU64,
    /// The logical APIC id of its virtual LAPIC (`hvm::vlapic::LogicalId::to_bits`),
    /// kept by the vCPU after each LAPIC write, for other vCPUs' logical IPIs.
    pub apic_logical: AtomicU64,
    /// The CPU running it now ([`NO_CPU`]: none): set before its hardware half is loaded
    /// and cleared after it is put, so that event delivery can make that CPU leave guest
    /// mode and a TLB shootdown knows which CPUs to wait for.
    pub cpu: AtomicU32,
    pub runstate: Lock<Runstate>,
    pub ctx: Lock<Option<Box<VcpuCtx<B>>>>,
}

impl<B: Backend> Vcpu<B> {
    pub fn has(&self, flag: u32) -> bool {
        self.flags.load(Ordering::SeqCst) & flag != 0
    }

    pub fn set_flag(&self, flag: u32) {
        self.flags.fetch_or(flag, Ordering::SeqCst);
    }

    /// Clears `flag`; true if it was set.
    pub fn clear_flag(&self, flag: u32) -> bool {
        self.flags.fetch_and(!flag, Ordering::SeqCst) & flag != 0
    }

    /// Whether the scheduler may run it (its domain's state aside).
    pub fn runnable(&self) -> bool {
        !self.has(vflags::BLOCKED | vflags::DOWN)
    }

    /// Queues a fixed-vector IPI from another vCPU.
    pub fn post_ipi(&self, vector: u8) {
        self.ipis[usize::from(vector / 32)].fetch_or(1 << (vector % 32), Ordering::SeqCst);
    }

    /// Whether an IPI is queued for the owner to merge.
    pub fn ipi_queued(&self) -> bool {
        self.ipis.iter().any(|w| w.load(Ordering::SeqCst) != 0)
    }

    /// The scheduler's name for this vCPU.
    pub fn sref(&self) -> sched::VcpuRef {
        sched::VcpuRef {
            dom: self.domid,
            vcpu: self.id,
        }
    }
}

/// The hardware half of a vCPU and the state only its own execution touches.
pub struct VcpuCtx<B: Backend> {
    pub hw: B::Vcpu,
    pub timer: VcpuTimer,
    /// The vCPU's local APIC (x2APIC mode).
    pub vlapic: crate::hvm::vlapic::Vlapic,
    /// The domain's p2m flush generation this vCPU's nested TLB has caught up with.
    pub flush_gen: u64,
    /// SCHEDOP_poll deadline (absolute system time; 0 = none) while polling.
    pub poll_deadline: u64,
    /// VM exits taken, and per kind (`Exit::kind`).
    pub exits: u64,
    pub exits_by_kind: [u64; crate::hvm::Exit::KINDS],
    /// The last exits, for a crash report.
    pub trace: ExitTrace,
}

/// One exit of [`ExitTrace`].
#[derive(Clone, Copy, Debug)]
pub struct TracedExit {
    pub exit: crate::hvm::Exit,
    /// The event injected at the entry this exit ended (raw, see [`crate::hvm::TraceState`]).
    pub injected: u64,
    pub state: crate::hvm::TraceState,
}

/// The last [`ExitTrace::LEN`] exits of a vCPU: what a crash report shows of how the guest
/// got there. Written by the vCPU's own CPU only.
#[derive(Default)]
pub struct ExitTrace {
    ring: [Option<TracedExit>; ExitTrace::LEN],
    next: usize,
}

impl core::fmt::Display for TracedExit {
    /// The exit, where it happened, what was injected at the entry before and what was
    /// being delivered when it came (the crash report's and the `q` debug key's line).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:?} at RIP {:#x}; injected {:#x}, delivering {:#x}",
            self.exit, self.state.rip, self.injected, self.state.delivering
        )
    }
}

impl ExitTrace {
    pub const LEN: usize = 8;

    pub fn record(&mut self, e: TracedExit) {
        self.ring[self.next] = Some(e);
        self.next = (self.next + 1) % Self::LEN;
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &TracedExit> {
        (0..Self::LEN).filter_map(move |i| self.ring[(self.next + i) % Self::LEN].as_ref())
    }
}

/// What other vCPUs and domains change under the domain lock.
pub struct DomState {
    pub life: Life,
    /// HVM parameters (HVMOP_set_param / get_param).
    pub hvm_params: [u64; xen_abi::hvm::params::HVM_NR_PARAMS as usize],
    /// The domain's event channels (2-level ABI).
    pub evtchn: evtchn::EventChannels,
    /// The global callback vector (HVM_PARAM_CALLBACK_IRQ type 2), injected directly.
    pub callback_vector: Option<u8>,
    /// Per-vCPU upcall vectors (HVMOP_set_evtchn_upcall_vector; 0 = none): delivered
    /// through that vCPU's LAPIC, instead of the global callback.
    pub upcall_vector: Vec<u8>,
    /// Host frame of this domain's shared_info page, once the guest mapped it.
    pub shared_info: Option<u64>,
    /// Guest-physical address of each vCPU's `vcpu_info` once moved out of shared_info
    /// (VCPUOP_register_vcpu_info).
    pub vcpu_info: Vec<Option<u64>>,
    /// Host frames of the grant table (v1), allocated as the guest maps them.
    pub grant_frames: arrayvec::ArrayVec<u64, MAX_GRANT_FRAMES>,
    /// Grant mapping state: entries of this domain others have pinned, and the mappings
    /// this domain made (maptrack).
    pub grant: crate::xen::grant_table::GrantState,
    /// PIT channel 2 and port 0x61 (TSC calibration).
    pub pit: crate::hvm::pit::Pit2,
    /// Console output not yet sent.
    pub console_line: ArrayString<256>,
    /// The console_io rate limit (domUs only).
    pub console_budget: ConsoleBudget,
    /// The control domain's virtual I/O APICs, one per host I/O APIC (`devirq`); empty
    /// for every other domain.
    pub vioapics: Vec<crate::hvm::vioapic::Vioapic>,
}

/// A token bucket on a domU's console output: [`ConsoleBudget::BURST`] bytes at once,
/// refilled at [`ConsoleBudget::RATE`] bytes per second; bytes over it are dropped and
/// counted, and the count is reported (the first drop at once, then at most every 10 s).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleBudget {
    /// Bytes that may be written now (at `at_ns`).
    pub tokens: u64,
    /// System time of the last refill; 0 = never used (starts full).
    pub at_ns: u64,
    /// Bytes dropped since the last report.
    pub dropped: u64,
    /// No report of dropped bytes before this system time.
    pub next_report_ns: u64,
    /// Bytes were dropped in the middle of a line: what follows up to the next newline
    /// is dropped too, so that fragments of several lines never join into one.
    pub skip_line: bool,
}

impl ConsoleBudget {
    pub const BURST: u64 = 16 * 1024;
    pub const RATE: u64 = 1024;

    /// Seconds between two reports of dropped bytes.
    pub const REPORT_EVERY_NS: u64 = 10_000_000_000;

    /// How many of `want` bytes may be written at `now_ns`; the rest count as dropped.
    /// Returns (allowed, a dropped count to report now): the first drop is reported at
    /// once, later ones at most every [`Self::REPORT_EVERY_NS`], so the reports cannot
    /// flood the console either.
    pub fn take(&mut self, now_ns: u64, want: u64) -> (u64, Option<u64>) {
        if self.at_ns == 0 {
            self.tokens = Self::BURST;
            self.at_ns = now_ns.max(1);
        } else {
            let elapsed = now_ns.saturating_sub(self.at_ns);
            let refill = (u128::from(elapsed) * u128::from(Self::RATE) / 1_000_000_000) as u64;
            // Move `at_ns` only by the time the whole bytes refilled took (keeps the
            // fraction).
            if refill > 0 {
                self.tokens = self.tokens.saturating_add(refill).min(Self::BURST);
                self.at_ns = now_ns.max(1);
            }
        }
        let allowed = want.min(self.tokens);
        self.tokens -= allowed;
        self.dropped = self.dropped.saturating_add(want - allowed);
        let report = (self.dropped > 0 && now_ns >= self.next_report_ns).then(|| {
            self.next_report_ns = now_ns.saturating_add(Self::REPORT_EVERY_NS);
            core::mem::take(&mut self.dropped)
        });
        (allowed, report)
    }
}

/// Scheduling parameters given at build time.
#[derive(Clone, Copy, Debug)]
pub struct SchedParams {
    pub weight: u16,
    pub cap: u16,
    /// Hard affinity of its vCPUs at creation (bit i: CPU i; 0 = any).
    pub cpus: u64,
}

/// A guest. Shared (`Arc`) between the domain table, the scheduler's vCPU look-ups and
/// hypercalls of other domains; everything mutable is behind `st` (the domain lock), in
/// a vCPU's atomics, or in a vCPU's owned context.
pub struct Domain<B: Backend> {
    pub id: DomId,
    pub name: ArrayString<32>,
    /// Whether this is the control domain (dom0: `SIF_PRIVILEGED | SIF_INITDOMAIN`).
    /// The only place privilege is decided: see [`Domain::is_control`].
    privileged: bool,
    pub mem: GuestMemory<B::P2m>,
    pub vcpus: Vec<Vcpu<B>>,
    pub params: SchedParams,
    /// The memory map the guest was given: (start, length, e820 type). Set at build
    /// time, or by the toolstack before the domain first runs.
    pub e820: Lock<build::E820>,
    /// Created through the toolstack interface: when it ends it stays (shut down) until
    /// the toolstack destroys it, as in Xen. Boot-time domUs are destroyed when they end.
    pub managed: bool,
    /// Most RAM the domain may have (bytes).
    pub max_mem: u64,
    /// Most grant-table frames it may have (≤ [`MAX_GRANT_FRAMES`]).
    pub max_grant_frames: u32,
    /// Whether it has been unpaused once (its boot state can no longer be set).
    pub started: core::sync::atomic::AtomicBool,
    /// Bumped whenever the p2m loses or moves a mapping; each vCPU flushes its nested
    /// TLB before its next entry when it has not seen the latest value.
    pub flush_gen: AtomicU64,
    /// Times the domain is paused (by the toolstack; 0 = runs).
    pub pause_count: AtomicU32,
    /// Hypercalls made, for accounting and diagnostics.
    pub hypercalls: AtomicU64,
    /// Bounds the debug messages this domain's own actions cause ([`guest_debug!`]).
    pub log_limit: crate::loglimit::LogLimit,
    pub st: Lock<DomState>,
    /// Raised when the domain's memory is back (the last field, so it drops last).
    pub freed: FreedSignal,
}

/// `log::debug!` for a message that domain `$dom`'s own actions cause, at most
/// [`crate::loglimit::LogLimit::PER_SECOND`] a second per domain (its `log_limit`); the
/// next message let through after some were left out says how many.
macro_rules! guest_debug {
    ($dom:expr, $($arg:tt)+) => {{
        let dom = &$dom;
        if log::log_enabled!(log::Level::Debug) {
            let second = crate::time::now().1 / 1_000_000_000;
            if let Some(dropped) = dom.log_limit.allow(second) {
                if dropped != 0 {
                    log::debug!(
                        "d{}: {dropped} guest-caused messages left out (at most {} a second)",
                        dom.id,
                        crate::loglimit::LogLimit::PER_SECOND
                    );
                }
                log::debug!($($arg)+);
            }
        }
    }};
}
pub(crate) use guest_debug;

/// A flag raised when it is dropped: the last field of [`Domain`], so the flag goes up
/// only after every frame the domain held went back (the `Arc`'s strong count reaches 0
/// before the drop runs, possibly on another CPU).
#[derive(Default)]
pub struct FreedSignal(pub alloc::sync::Arc<core::sync::atomic::AtomicBool>);

impl Drop for FreedSignal {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl<B: Backend> Domain<B> {
    /// Whether this domain may act on others (Xen's control domain). Every privilege
    /// check goes through here.
    pub fn is_control(&self) -> bool {
        self.privileged
    }

    /// Host frames this domain holds: RAM, p2m tables, vCPU state and the hypervisor
    /// pages given to it.
    pub fn frames_held(&self) -> u64 {
        let st = self.st.lock();
        self.mem.host_frames()
            + self.mem.table_frames()
            + self.vcpus.iter().map(|v| v.hw_frames).sum::<u64>()
            + u64::from(st.shared_info.is_some())
            + st.grant_frames.len() as u64
    }

    /// Asks every vCPU to flush its nested TLB before it next enters the guest, and
    /// returns only when none can still use a translation the p2m lost before this call
    /// (then frees the p2m tables the change emptied, `GuestMemory::free_retired`):
    /// each other CPU running one of its vCPUs is made to leave guest mode (a cross-CPU
    /// call it answers in host context), and enters again only after flushing. The caller
    /// holds no lock (the other CPU may be waiting for one).
    ///
    /// The order makes it race-free: a CPU publishes `Vcpu::cpu` before it reads the
    /// generation at its next entry, and this bumps the generation before it reads
    /// `Vcpu::cpu`, so either that CPU sees the new generation or this call sees the CPU.
    pub fn p2m_changed(&self) {
        self.flush_gen.fetch_add(1, Ordering::SeqCst);
        let me = crate::arch::x86::percpu::this().index;
        let mut done = 0u64;
        for v in &self.vcpus {
            let c = v.cpu.load(Ordering::SeqCst);
            if c == NO_CPU || c == me || c >= 64 || done & (1 << c) != 0 {
                continue;
            }
            done |= 1 << c;
            crate::arch::x86::smp::sync_with(c);
        }
        // No CPU can walk the tables the change unlinked any more.
        self.mem.free_retired();
    }

    /// The domain's life-cycle state.
    pub fn life(&self) -> Life {
        self.st.lock().life
    }

    pub fn vcpu(&self, id: u32) -> Option<&Vcpu<B>> {
        self.vcpus.get(usize::try_from(id).ok()?)
    }
}

impl<B: Backend> Drop for Domain<B> {
    /// Retires the vCPUs first: their hardware halves drop the TLB state tagged with this
    /// domain (VMX: VMCLEAR and INVEPT of its EPT root; the VPID/ASID is never handed out
    /// again before a new generation flushes them all). Only then do the frames go back:
    /// the shared ones here, RAM and p2m with `GuestMemory` (fields drop after this body;
    /// `mem` is declared before `vcpus`, so without this the p2m and RAM would be freed
    /// while the CPU could still hold translations through them).
    fn drop(&mut self) {
        self.vcpus.clear();
        let st = self.st.get_mut();
        if !st.vioapics.is_empty() {
            // The control domain's device interrupts go with it.
            crate::arch::x86::ioapic::mask_all();
        }
        for frame in st
            .shared_info
            .take()
            .into_iter()
            .chain(st.grant_frames.drain(..))
        {
            crate::mm::phys::free_frames(frame, 1);
        }
    }
}

impl DomState {
    /// Prints guest console text, each line prefixed with the domain id (as Xen's `(d1)`
    /// prefix) so guest output cannot pass for hypervisor lines: the console itself
    /// ([`crate::console::guest_text`]) starts a prefixed line for any guest byte that
    /// follows a newline, hypervisor text or another domain's text. Text goes out as it
    /// comes (prompts appear before their newline). Control characters are replaced,
    /// except escape sequences from the control domain, whose console is interactive.
    pub fn console_write(&mut self, id: DomId, privileged: bool, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_console(id);
                crate::console::guest_newline(id);
                continue;
            }
            let c = match b {
                b'\r' => continue,
                0x20..=0x7e | b'\t' => b as char,
                0x1b if privileged => '\x1b',
                _ => '?',
            };
            if self.console_line.try_push(c).is_err() {
                self.flush_console(id);
                let _ = self.console_line.try_push(c);
            }
        }
        self.flush_console(id);
    }

    /// Finishes a partly printed console line, so hypervisor messages start on their own.
    pub fn end_console_line(&mut self, id: DomId) {
        self.flush_console(id);
        crate::console::guest_end_line(id);
    }

    /// Sends buffered console text (the console adds the domain prefix where needed).
    pub fn flush_console(&mut self, id: DomId) {
        crate::console::guest_text(id, &self.console_line);
        self.console_line.clear();
    }
}
