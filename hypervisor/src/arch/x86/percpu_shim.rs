//! Scheduling signals of the boot CPU until host interrupts exist: a "reschedule"
//! flag, and waiting for a deadline by watching the clock.
//!
//! Without a host timer interrupt a guest is preempted only at its next exit; the LAPIC
//! timer (per-CPU data and interrupt handlers) replaces this module.

use core::sync::atomic::{AtomicBool, Ordering};

static SCHEDULE: AtomicBool = AtomicBool::new(false);

/// Asks this CPU to reschedule at its next decision point.
pub fn raise_schedule() {
    SCHEDULE.store(true, Ordering::SeqCst);
}

/// Whether a reschedule was asked for.
pub fn schedule_pending() -> bool {
    SCHEDULE.load(Ordering::SeqCst)
}

/// Consumes the reschedule request.
pub fn take_schedule() -> bool {
    SCHEDULE.swap(false, Ordering::SeqCst)
}

/// Arms the host timer for system time `ns` (nothing to arm yet).
pub fn arm(_ns: u64) {}

/// Waits until system time `ns` or a reschedule request.
pub fn wait_until(ns: u64) {
    while crate::time::now().1 < ns && !schedule_pending() {
        core::hint::spin_loop();
    }
}
