//! Domains: a guest's memory, vCPU, Xen-visible state and life cycle.
//!
//! Built by [`build`] (a straight pipeline: memory → kernel image → start_info → vCPU,
//! each step failing on its own) and driven by [`run`]. Nothing here names VMCS or VMCB
//! fields; hardware is reached through [`crate::hvm::Vcpu`].

pub mod build;
pub mod memory;
pub mod run;
pub mod walk;

use crate::hvm::Backend;
use arrayvec::ArrayString;
use core::fmt;
use memory::GuestMemory;

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
            DomainEnd::Shutdown(r) => write!(f, "shut down: {} (reason {r})", shutdown_reason_name(*r)),
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

/// Per-vCPU scheduling state the generic code keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuTimer {
    /// Xen system time (ns) at which the one-shot timer fires (set_timer_op).
    pub deadline_ns: Option<u64>,
}

/// A guest.
pub struct Domain<B: Backend> {
    pub id: DomId,
    pub name: ArrayString<32>,
    pub mem: GuestMemory<B::P2m>,
    pub vcpu: B::Vcpu,
    pub timer: VcpuTimer,
    /// Host frame of this domain's shared_info page, once the guest mapped it.
    pub shared_info: Option<u64>,
    /// Console output not yet ended by a newline.
    pub console_line: ArrayString<256>,
    /// Hypercalls made, for accounting and diagnostics.
    pub hypercalls: u64,
    /// VM exits taken.
    pub exits: u64,
}

impl<B: Backend> Domain<B> {
    /// Prints guest console text line by line, prefixed with the domain id (as Xen's
    /// `(d1)` prefix), so guest output cannot forge hypervisor lines.
    pub fn console_write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let c = match b {
                b'\n' => {
                    self.flush_console();
                    continue;
                }
                b'\r' => continue,
                0x20..=0x7e | b'\t' => b as char,
                _ => '?',
            };
            if self.console_line.try_push(c).is_err() {
                self.flush_console();
                let _ = self.console_line.try_push(c);
            }
        }
    }

    /// Ends the current console line, if any.
    pub fn flush_console(&mut self) {
        if !self.console_line.is_empty() {
            crate::println!("(d{}) {}", self.id, self.console_line);
            self.console_line.clear();
        }
    }
}
