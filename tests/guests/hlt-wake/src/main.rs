//! `hlt-wake`: a vCPU halted with `sti; hlt` is woken by its `set_timer_op` timer.
//!
//! Contract with the hypervisor (ferrovisor's, simpler than Xen's): when a vCPU's one-shot
//! timer fires, the hypervisor wakes it from HLT even if no event-channel upcall is set up;
//! nothing needs to be injected (the runtime's IDT ignores any interrupt that is). A timer that
//! fired while the vCPU was running keeps a wakeup pending, so the next HLT returns at once.
//! (Real Xen would only wake the vCPU through a bound VIRQ_TIMER and a callback vector.)
//!
//! Steps:
//! 1. map shared_info (`XENMEM_add_to_physmap`, `XENMAPSPACE_shared_info`) at a page of the
//!    guest's `.bss` and read Xen system time from the pvclock in `vcpu_info[0].time`;
//! 2. `set_timer_op(now + 20 ms)`, `sti; hlt`, then check that 20 ms (less
//!    [`TOLERANCE_NS`]) to 2 s of system time passed;
//! 3. `set_timer_op(1)` (a deadline in the past fires at once), `sti; hlt`, and check it
//!    returned in under 2 s;
//! 4. `set_timer_op(0)` (cancel) must succeed.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, set_timer_op};
use guest_rt::{arch, ensure, fail, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The timer delay of step 2.
const DELAY_NS: u64 = 20_000_000;
/// Upper bound for any wakeup.
const MAX_NS: u64 = 2_000_000_000;
/// Slack for the guest's pvclock reading and the hypervisor's clock disagreeing by rounding.
const TOLERANCE_NS: u64 = 50_000;

fn now() -> Result<u64, guest_rt::Fail> {
    match pvclock::now_ns() {
        Some(t) => Ok(t),
        None => Err(guest_rt::Fail::new(format_args!(
            "pvclock unreadable (version stuck odd or shared_info not mapped)"
        ))),
    }
}

/// Halts once with interrupts enabled and returns the system time after waking.
fn halt_once() -> Result<u64, guest_rt::Fail> {
    arch::sti_hlt_cli();
    now()
}

fn test_main(_si: &StartInfo) -> TestResult {
    let gpa = pvclock::shared_info_gpa();
    let rc = pvclock::map_shared_info();
    ensure!(
        rc == 0,
        "XENMEM_add_to_physmap(shared_info, gpfn {:#x}) returned {}",
        gpa >> 12,
        describe(rc)
    );
    let Some(t) = pvclock::time_info() else {
        fail!("vcpu_info[0].time version stays odd");
    };
    println!(
        "shared_info at {gpa:#x}: pvclock version {} system_time {} tsc_timestamp {} mul {:#x} shift {} flags {:#x} (TSC {} kHz)",
        t.version,
        t.system_time,
        t.tsc_timestamp,
        t.tsc_to_system_mul,
        t.tsc_shift,
        t.flags,
        pvclock::tsc_khz(&t)
    );
    ensure!(
        t.tsc_to_system_mul != 0,
        "pvclock tsc_to_system_mul is 0 (time info not initialised)"
    );

    // Step 2: a timer 20 ms ahead.
    let start = now()?;
    let deadline = start + DELAY_NS;
    let rc = set_timer_op(deadline);
    ensure!(
        rc == 0,
        "set_timer_op({deadline}) returned {}",
        describe(rc)
    );
    let woke = halt_once()?;
    let elapsed = woke.saturating_sub(start);
    println!(
        "timer +20 ms: woke after {} us ({} interrupts taken)",
        elapsed / 1000,
        interrupts()
    );
    ensure!(
        elapsed + TOLERANCE_NS >= DELAY_NS,
        "woke after {elapsed} ns, before the 20 ms timer was due"
    );
    ensure!(elapsed < MAX_NS, "woke after {elapsed} ns, expected < 2 s");

    // Step 3: a deadline in the past fires at once.
    let start = now()?;
    let rc = set_timer_op(1);
    ensure!(rc == 0, "set_timer_op(1) returned {}", describe(rc));
    let woke = halt_once()?;
    let elapsed = woke.saturating_sub(start);
    println!("timer in the past: woke after {} us", elapsed / 1000);
    ensure!(
        elapsed < MAX_NS,
        "past deadline: woke after {elapsed} ns, expected < 2 s"
    );

    // Step 4: cancel.
    let rc = set_timer_op(0);
    ensure!(
        rc == 0,
        "set_timer_op(0) (cancel) returned {}",
        describe(rc)
    );
    Ok(())
}

fn interrupts() -> u64 {
    #[cfg(target_os = "none")]
    {
        guest_rt::idt::interrupt_count()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}
