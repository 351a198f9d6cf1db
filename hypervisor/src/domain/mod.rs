//! Domains: a guest's memory, vCPU, Xen-visible state and life cycle.
//!
//! Built by [`build`] (a straight pipeline: memory → kernel image → start_info → vCPU,
//! each step failing on its own) and driven by [`run`]. Nothing here names VMCS or VMCB
//! fields; hardware is reached through [`crate::hvm::Vcpu`].

pub mod build;
pub mod kernel;
pub mod memory;
pub mod run;
pub mod walk;

use crate::hvm::Backend;
use arrayvec::ArrayString;
use core::fmt;
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
}

impl fmt::Display for DomainEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainEnd::Shutdown(r) => {
                write!(f, "shut down: {} (reason {r})", shutdown_reason_name(*r))
            }
            DomainEnd::Crashed => write!(f, "crashed"),
            DomainEnd::Deadlocked => write!(f, "blocked forever (no timer, no events)"),
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
}

impl VcpuTimer {
    /// The earliest time either timer fires.
    pub fn next_expiry(&self) -> Option<u64> {
        let periodic = self.period_ns.map(|_| self.next_period_ns);
        match (self.deadline_ns, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
                let missed = (now - self.next_period_ns) / p + 1;
                self.next_period_ns += missed * p;
                fired = true;
            }
        }
        fired
    }
}

/// Per-vCPU Xen state the guest registered.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuXenState {
    /// Guest-physical address of this vCPU's `vcpu_info` once moved out of shared_info
    /// (VCPUOP_register_vcpu_info).
    pub vcpu_info_gpa: Option<u64>,
    /// Guest-virtual address of the runstate area (VCPUOP_register_runstate_memory_area).
    pub runstate_gva: Option<u64>,
    /// System time at which the current runstate began, and time spent per state.
    pub runstate_entry_ns: u64,
    pub runstate_time: [u64; 4],
}

/// A guest.
pub struct Domain<B: Backend> {
    pub id: DomId,
    pub name: ArrayString<32>,
    pub mem: GuestMemory<B::P2m>,
    pub vcpu: B::Vcpu,
    pub timer: VcpuTimer,
    /// Per-vCPU Xen registrations.
    pub xen_vcpu: VcpuXenState,
    /// The vCPU's local APIC (x2APIC mode).
    pub vlapic: crate::hvm::vlapic::Vlapic,
    /// Whether this is the control domain (dom0: `SIF_PRIVILEGED | SIF_INITDOMAIN`).
    pub privileged: bool,
    /// HVM parameters (HVMOP_set_param / get_param).
    pub hvm_params: [u64; xen_abi::hvm::params::HVM_NR_PARAMS as usize],
    /// The domain's event channels (2-level ABI).
    pub evtchn: evtchn::EventChannels,
    /// The global callback vector (HVM_PARAM_CALLBACK_IRQ type 2), injected directly.
    pub callback_vector: Option<u8>,
    /// Host frame of this domain's shared_info page, once the guest mapped it.
    pub shared_info: Option<u64>,
    /// Host frames of the grant table (v1), allocated as the guest maps them.
    pub grant_frames: arrayvec::ArrayVec<u64, MAX_GRANT_FRAMES>,
    /// The memory map the guest was given: (start, length, e820 type).
    pub e820: arrayvec::ArrayVec<(u64, u64, u32), 8>,
    /// Console output not yet sent.
    pub console_line: ArrayString<256>,
    /// Whether the current console line's prefix has been printed.
    pub console_started: bool,
    /// Hypercalls made, for accounting and diagnostics.
    pub hypercalls: u64,
    /// VM exits taken, and per kind (`Exit::kind`).
    pub exits: u64,
    pub exits_by_kind: [u64; crate::hvm::Exit::KINDS],
}

impl<B: Backend> Drop for Domain<B> {
    /// Gives back the hypervisor-owned frames the domain used (its RAM and p2m go with
    /// `GuestMemory`).
    fn drop(&mut self) {
        for frame in self
            .shared_info
            .take()
            .into_iter()
            .chain(self.grant_frames.drain(..))
        {
            crate::mm::phys::free_frames(frame, 1);
        }
    }
}

impl<B: Backend> Domain<B> {
    /// Prints guest console text, each line prefixed with the domain id (as Xen's `(d1)`
    /// prefix) so guest output cannot pass for hypervisor lines. Text goes out as it
    /// comes (prompts appear before their newline). Control characters are replaced,
    /// except escape sequences from the control domain, whose console is interactive.
    pub fn console_write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_console();
                if self.console_started {
                    crate::println!();
                } else {
                    crate::println!("(d{})", self.id);
                }
                self.console_started = false;
                continue;
            }
            let c = match b {
                b'\r' => continue,
                0x20..=0x7e | b'\t' => b as char,
                0x1b if self.privileged => '\x1b',
                _ => '?',
            };
            if self.console_line.try_push(c).is_err() {
                self.flush_console();
                let _ = self.console_line.try_push(c);
            }
        }
        self.flush_console();
    }

    /// Finishes a partly printed console line, so hypervisor messages start on their own.
    pub fn end_console_line(&mut self) {
        self.flush_console();
        if self.console_started {
            crate::println!();
            self.console_started = false;
        }
    }

    /// Sends buffered console text, starting the line with the domain prefix if needed.
    pub fn flush_console(&mut self) {
        if self.console_line.is_empty() {
            return;
        }
        if !self.console_started {
            crate::print!("(d{}) ", self.id);
            self.console_started = true;
        }
        crate::print!("{}", self.console_line);
        self.console_line.clear();
    }
}
