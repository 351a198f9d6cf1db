//! `triple-fault`: loads an empty IDT (limit 0) and executes `ud2`. The #UD cannot be
//! delivered (#GP), neither can the #GP (#DF), nor the #DF: a triple fault. The hypervisor must
//! end this domain (Xen: `HVM_PARAM_TRIPLE_FAULT_REASON`, default reboot) and keep running.
//! The guest prints no result line; if execution continues past `ud2` it reports FAIL.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::{fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

fn test_main(_si: &StartInfo) -> TestResult {
    println!("about to triple fault");
    guest_rt::arch::cli();
    #[cfg(target_os = "none")]
    {
        // SAFETY: a zero-limit IDT is the point of the test; the next instruction faults and
        // the domain is expected to end.
        unsafe {
            guest_rt::idt::lidt(0, 0);
            core::arch::asm!("ud2", options(nomem, nostack));
        }
    }
    fail!("execution continued after a triple fault")
}
