//! `triple-fault`: a fault that cannot be delivered, in each CPU mode, must end this domain
//! (Xen: `HVM_PARAM_TRIPLE_FAULT_REASON`, default reboot) while the hypervisor keeps running.
//!
//! * `mode=long` (the default): vCPU 0 loads an empty IDT (limit 0) and executes `ud2`. The
//!   #UD cannot be delivered (#GP), neither can the #GP (#DF), nor the #DF: a triple fault.
//! * `mode=real`: vCPU 1, started by INIT-SIPI in real mode, loads an IVT limit of 0 and
//!   executes `ud2` (a real-mode interrupt beyond the IVT limit is a #GP, then a #DF, then
//!   shutdown).
//! * `mode=prot32`: vCPU 1 switches itself from real mode to 32-bit protected mode (its own
//!   GDT, no paging), then does the same.
//!
//! The guest prints no result line; if vCPU 0 runs on past the fault (2 s by its pvclock in
//! the AP modes), it reports FAIL.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::{ensure, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Where vCPU 1's code goes (SIPI vector 8).
#[cfg(target_os = "none")]
const AP_BASE: u64 = 0x8000;
#[cfg(target_os = "none")]
const APIC: u64 = 0xfee0_0000;

// vCPU 1's code, copied to 0x8000 (CS = 0x800, IP 0 after the SIPI). Offsets inside it are
// relative to `tf_ap_start`; data at fixed offsets: a zero-limit IDT/IVT descriptor at
// 0x100, a GDT descriptor at 0x110, the GDT at 0x120 (null, flat 32-bit code, flat data).
#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .rodata.triple_fault_ap, "a"
    .code16
    .global tf_ap_start
tf_ap_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    cmpb $0, 0xf0           /* mode byte: 0 real, 1 prot32 */
    jne 1f
    lidt 0x100
    ud2
1:
    lgdt 0x110
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0x8000 + tf_ap_pm - tf_ap_start)
    .code32
tf_ap_pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %ss
    lidt (0x8000 + 0x100)
    ud2
    .global tf_ap_end
tf_ap_end:
    .code64
    .popsection
    "#,
    options(att_syntax)
);

#[cfg(target_os = "none")]
extern "C" {
    static tf_ap_start: u8;
    static tf_ap_end: u8;
}

/// Starts vCPU 1 in real mode at `AP_BASE` with `mode` (0 real, 1 prot32).
#[cfg(target_os = "none")]
fn start_ap(si: &StartInfo, mode: u8) -> TestResult {
    ensure!(
        si.memmap_covers(0, AP_BASE + 0x1000, 1),
        "guest-physical 0..{:#x} is not RAM",
        AP_BASE + 0x1000
    );
    // SAFETY: the trampoline symbols delimit bytes in this image; AP_BASE..+4 KiB is guest
    // RAM (checked) the runtime does not use; the xAPIC page is emulated MMIO
    // (identity-mapped), written with 32-bit stores as the SDM asks.
    unsafe {
        let start = core::ptr::addr_of!(tf_ap_start);
        let len = core::ptr::addr_of!(tf_ap_end) as usize - start as usize;
        ensure!(len < 0xf0, "trampoline of {len} bytes");
        let page = AP_BASE as *mut u8;
        core::ptr::write_bytes(page, 0, 0x200);
        core::ptr::copy_nonoverlapping(start, page, len);
        page.add(0xf0).write(mode);
        // 0x100: IDT/IVT descriptor, limit 0, base 0 (already zero).
        // 0x110: GDT descriptor: limit 23, base AP_BASE + 0x120.
        (page.add(0x110) as *mut u16).write_unaligned(23);
        (page.add(0x112) as *mut u32).write_unaligned((AP_BASE + 0x120) as u32);
        // 0x120: null, code (base 0, limit 4 GiB, 32-bit, execute/read), data (read/write).
        (page.add(0x128) as *mut u64).write_unaligned(0x00cf_9a00_0000_ffff);
        (page.add(0x130) as *mut u64).write_unaligned(0x00cf_9200_0000_ffff);
        ((APIC + 0x310) as *mut u32).write_volatile(1 << 24);
        ((APIC + 0x300) as *mut u32).write_volatile(0x4500); // INIT
        ((APIC + 0x310) as *mut u32).write_volatile(1 << 24);
        ((APIC + 0x300) as *mut u32).write_volatile(0x4600 | (AP_BASE >> 12) as u32);
        // SIPI
    }
    Ok(())
}

fn test_main(si: &StartInfo) -> TestResult {
    let mode = si.arg("mode").unwrap_or("long");
    match mode {
        "long" => {
            println!("about to triple fault in long mode");
            guest_rt::arch::cli();
            #[cfg(target_os = "none")]
            {
                // SAFETY: a zero-limit IDT is the point of the test; the next instruction
                // faults and the domain is expected to end.
                unsafe {
                    guest_rt::idt::lidt(0, 0);
                    core::arch::asm!("ud2", options(nomem, nostack));
                }
            }
            fail!("execution continued after a triple fault")
        }
        "real" | "prot32" => {
            ensure!(
                guest_rt::pvclock::map_shared_info() == 0,
                "cannot map shared_info for the pvclock"
            );
            let now = || guest_rt::pvclock::now_ns().unwrap_or(0);
            println!("about to triple fault in {mode} mode on vCPU 1");
            #[cfg(target_os = "none")]
            start_ap(si, u8::from(mode == "prot32"))?;
            let t0 = now();
            while now().wrapping_sub(t0) < 2_000_000_000 {
                guest_rt::hypercall::sched_yield();
            }
            fail!("the domain still runs 2 s after vCPU 1's triple fault in {mode} mode")
        }
        other => fail!("unknown mode={other}"),
    }
}
