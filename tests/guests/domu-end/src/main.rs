//! `domu-end`: ends its domain in one of the ways a domain can end, so that tests can check
//! the hypervisor reports it and that every other domain runs on.
//!
//! Command line: `how=shutdown|reboot|crash|triple-fault|deadlock [after_ms=N]`. With
//! `after_ms` the guest first sleeps N ms of system time (`set_timer_op` + `sti; hlt`, the
//! timer bound to VIRQ_TIMER and delivered through the callback vector).
//!
//! * `shutdown`: `SCHEDOP_shutdown(poweroff)`; `reboot`: `SCHEDOP_shutdown(reboot)`;
//! * `crash`: `SCHEDOP_shutdown(crash)` (no `FAIL` line: the crash is the point);
//! * `triple-fault`: an IDT with limit 0, then `ud2`;
//! * `deadlock`: `SCHEDOP_block` in a loop with no timer armed and interrupts off: the
//!   domain never ends by itself (something else must shut it down). It deliberately does
//!   not `cli; hlt`, which a PVH hypervisor takes as "all vCPUs down: power off".
//!
//! Prints `domu-end: domain D ending by HOW` right before; no result line unless the end
//! did not happen (then `FAIL`).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, sched_block, sched_shutdown, set_timer_op};
use guest_rt::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT};
use guest_rt::{arch, evtchn, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

fn test_main(si: &StartInfo) -> TestResult {
    let how = si.arg("how").unwrap_or("");
    if !matches!(
        how,
        "shutdown" | "reboot" | "crash" | "triple-fault" | "deadlock"
    ) {
        fail!("how={how}: expected shutdown, reboot, crash, triple-fault or deadlock");
    }
    let after_ms = si.arg_u64("after_ms", 0)?;
    let domid = arch::xen_vcpu_and_domid().map_or(-1, |(_, d)| i32::from(d));
    if after_ms > 0 {
        evtchn::init_with_timer()?;
        let start = evtchn::now()?;
        println!("domu-end: domain {domid} sleeping {after_ms} ms");
        evtchn::sleep_until(start + after_ms * 1_000_000)?;
        set_timer_op(0);
    }
    println!("domu-end: domain {domid} ending by {how}");
    match how {
        "shutdown" | "reboot" | "crash" => {
            let reason = match how {
                "shutdown" => SHUTDOWN_POWEROFF,
                "reboot" => SHUTDOWN_REBOOT,
                _ => SHUTDOWN_CRASH,
            };
            let rc = sched_shutdown(reason);
            fail!("SCHEDOP_shutdown({reason}) returned {}", describe(rc))
        }
        "triple-fault" => {
            arch::cli();
            #[cfg(target_os = "none")]
            // SAFETY: a zero-limit IDT makes the `ud2` escalate to a triple fault, which is
            // meant to end the domain.
            unsafe {
                guest_rt::idt::lidt(0, 0);
                core::arch::asm!("ud2", options(nomem, nostack));
            }
            fail!("execution continued after a triple fault")
        }
        _ => {
            arch::cli();
            let mut wakeups = 0u64;
            loop {
                let rc = sched_block();
                wakeups += 1;
                if rc != 0 {
                    fail!("SCHEDOP_block returned {}", describe(rc));
                }
                if wakeups.is_power_of_two() {
                    println!("domu-end: SCHEDOP_block returned ({wakeups} times); blocking again");
                }
            }
        }
    }
}
