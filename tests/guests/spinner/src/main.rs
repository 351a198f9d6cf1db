//! `spinner`: prints one line, disables interrupts and spins forever. It never makes another
//! hypercall, never yields, never halts and never ends: only a preemptive scheduler lets
//! anything else run beside it, and only another domain (or the hypervisor) can end it.
//!
//! Command line: none. The guest prints no result line; a `FAIL` line means the loop ended.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::{arch, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

fn test_main(_si: &StartInfo) -> TestResult {
    let domid = arch::xen_vcpu_and_domid().map_or(-1, |(_, d)| i32::from(d));
    println!("spinner: domain {domid} spinning with interrupts off, never yielding");
    arch::cli();
    #[cfg(target_os = "none")]
    // SAFETY: an endless jump to itself touches neither memory nor the stack; interrupts are
    // off, so nothing in this guest runs again.
    unsafe {
        core::arch::asm!("2: jmp 2b", options(nomem, nostack, noreturn));
    }
    #[allow(unreachable_code)]
    {
        fail!("the spin loop ended")
    }
}
