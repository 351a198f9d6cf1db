//! `upcall-vector`: per-vCPU event upcall vectors (`HVMOP_set_evtchn_upcall_vector`, Xen's
//! hvm_op 23), which deliver a vCPU's upcall through its local APIC instead of the global
//! `HVM_PARAM_CALLBACK_IRQ` vector. Linux 6.1 does not use them; Windows PV drivers and
//! newer Linux do.
//!
//! Checks, in order (one line each):
//! 1. CPUID 0x40000004 EAX bit 6 (`XEN_HVM_CPUID_UPCALL_VECTOR`) is set.
//! 2. Argument checks in Xen's order: vector 0x0f → `-EINVAL`; vCPU 7 (the guest has one)
//!    → `-ENOENT`; both bad → `-EINVAL` (the vector is checked first).
//! 3. shared_info mapped, `VIRQ_TIMER` bound, vector 0xe0 registered for vCPU 0 and **no**
//!    callback vector; x2APIC software-enabled (SVR bit 8). A timer +10 ms and `sti; hlt`:
//!    exactly one interrupt, on 0xe0; the timer port is pending; ISR bit 0xe0 (MSR 0x817
//!    bit 0) is set until the EOI (MSR 0x80B ← 0) and clear after.
//! 4. Edge-triggered on `evtchn_upcall_pending` 0→1: with the flag left set (the port's bit
//!    and the selector cleared, so only the flag stops the chain), a second timer sets the
//!    port pending but raises no interrupt within 30 ms of spinning with interrupts
//!    enabled, and IRR 0xe0 stays clear; after consuming the events as Linux does (flag,
//!    selector, port bits cleared) a third timer interrupts on 0xe0 again.
//! 5. Registering a vector while an upcall is pending delivers it at once: events consumed,
//!    interrupts **disabled**, a timer fires (spin, executing CLI, until its port is
//!    pending: the CLI works around a Bochs 2.7 VMX bug, see the loop; the 0→1 edge
//!    puts 0xe0 in IRR, MSR 0x827 bit 0, but IF=0 holds it back); then vector 0xe1 is
//!    registered for vCPU 0, which must put 0xe1 in IRR at once because the flag is set.
//!    `sti` and a one-instruction window take exactly 0xe1 (higher than 0xe0; 0xe0 is held back by
//!    0xe1 in service, same priority class); after its EOI, 0xe0 arrives.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, set_timer_op};
use guest_rt::xen_abi::arch_x86::cpuid::{
    xen_cpuid_leaf, XEN_CPUID_LEAF_HVM, XEN_HVM_CPUID_UPCALL_VECTOR,
};
use guest_rt::xen_abi::xen::VIRQ_TIMER;
use guest_rt::{arch, ensure, evtchn, fail, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The vector registered first, and the one registered while an upcall is pending.
const VECTOR: u8 = 0xe0;
const VECTOR2: u8 = 0xe1;
/// x2APIC MSRs: EOI, spurious-interrupt vector, ISR bits 224-255, IRR bits 224-255.
const MSR_EOI: u32 = 0x80b;
const MSR_SVR: u32 = 0x80f;
const MSR_ISR7: u32 = 0x817;
const MSR_IRR7: u32 = 0x827;
/// IA32_APIC_BASE and its x2APIC-enable bit.
const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EXTD: u64 = 1 << 10;
/// SVR bit 8: APIC software enable.
const SVR_ENABLE: u64 = 1 << 8;
/// Timer delay for each step.
const DELAY_NS: u64 = 10_000_000;
/// How long step 4 waits for an interrupt that must not come.
const QUIET_NS: u64 = 30_000_000;
/// Upper bound for anything that must happen.
const MAX_NS: u64 = 2_000_000_000;
/// -EINVAL and -ENOENT.
const EINVAL: i64 = -22;
const ENOENT: i64 = -2;

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only IA32_APIC_BASE and x2APIC registers the hypervisor's LAPIC model
    // answers (ISR/IRR/SVR); reading them has no side effects.
    unsafe { arch::rdmsr(msr) }
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only IA32_APIC_BASE (to switch to x2APIC mode at the same base) and the
    // x2APIC SVR and EOI registers, which touch no guest memory.
    unsafe { arch::wrmsr(msr, value) }
}

/// Bit of `vector` (224-255) in the ISR7/IRR7 registers.
fn bit7(vector: u8) -> u64 {
    1 << (vector - 0xe0)
}

fn count(vector: u8) -> u64 {
    #[cfg(target_os = "none")]
    {
        guest_rt::idt::vector_count(vector)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = vector;
        0
    }
}

fn total() -> u64 {
    #[cfg(target_os = "none")]
    {
        guest_rt::idt::interrupt_count()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

fn arm_timer(deadline: u64) -> TestResult {
    let rc = set_timer_op(deadline);
    ensure!(
        rc == 0,
        "set_timer_op({deadline}) returned {}",
        describe(rc)
    );
    Ok(())
}

/// Halts (`sti; hlt`) until an interrupt on `vector` is counted beyond `before`, at most
/// [`MAX_NS`]; returns the system time then.
fn halt_until_vector(vector: u8, before: u64, what: &str) -> Result<u64, guest_rt::Fail> {
    let start = evtchn::now()?;
    loop {
        arch::sti_hlt_cli();
        let t = evtchn::now()?;
        if count(vector) > before {
            return Ok(t);
        }
        if t > start + MAX_NS {
            fail!(
                "{what}: no interrupt on vector {vector:#x} within 2 s ({} interrupts in all)",
                total()
            );
        }
    }
}

/// Opens a one-instruction interrupt window: `sti`, one instruction in STI's shadow, one
/// after it (a pending interrupt is taken before it), `cli`.
fn sti_window() {
    arch::sti();
    arch::pause();
    arch::pause();
    arch::cli();
}

fn eoi() {
    wrmsr(MSR_EOI, 0);
}

fn test_main(_si: &StartInfo) -> TestResult {
    // 1. CPUID.
    let leaf = xen_cpuid_leaf(XEN_CPUID_LEAF_HVM);
    let eax = arch::cpuid(leaf, 0).eax;
    ensure!(
        eax & XEN_HVM_CPUID_UPCALL_VECTOR != 0,
        "CPUID {leaf:#x} EAX {eax:#x}: XEN_HVM_CPUID_UPCALL_VECTOR (bit 6) not set"
    );
    println!("cpuid {leaf:#x}: eax {eax:#x}, XEN_HVM_CPUID_UPCALL_VECTOR set");

    // 2. Argument checks: the vector first, then the vCPU.
    for (vcpu, vector, want, name) in [
        (0, 0x0f, EINVAL, "-EINVAL"),
        (7, VECTOR, ENOENT, "-ENOENT"),
        (7, 0x0f, EINVAL, "-EINVAL"),
    ] {
        let rc = evtchn::set_upcall_vector(vcpu, vector);
        ensure!(
            rc == want,
            "set_evtchn_upcall_vector(vcpu {vcpu}, vector {vector:#x}) returned {}, expected {name}",
            describe(rc)
        );
    }
    println!(
        "set_evtchn_upcall_vector: vector 0xf -> -EINVAL, vcpu 7 -> -ENOENT, vcpu 7 + vector 0xf -> -EINVAL"
    );

    // 3. First delivery through the LAPIC.
    let rc = pvclock::map_shared_info();
    ensure!(
        rc == 0,
        "XENMEM_add_to_physmap(shared_info) returned {}",
        describe(rc)
    );
    let port = evtchn::bind_virq(VIRQ_TIMER, 0);
    ensure!(
        port >= 0,
        "EVTCHNOP_bind_virq(VIRQ_TIMER, vcpu 0) returned {}",
        describe(port)
    );
    let port = port as u32;
    let rc = evtchn::set_upcall_vector(0, VECTOR);
    ensure!(
        rc == 0,
        "set_evtchn_upcall_vector(vcpu 0, vector {VECTOR:#x}) returned {}",
        describe(rc)
    );
    // vCPUs start in xAPIC mode, as on Xen: switch to x2APIC (IA32_APIC_BASE.EXTD).
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_EXTD);
    wrmsr(MSR_SVR, rdmsr(MSR_SVR) | SVR_ENABLE);
    let (isr, irr) = (rdmsr(MSR_ISR7), rdmsr(MSR_IRR7));
    ensure!(
        isr == 0 && irr == 0,
        "before any timer: ISR7 {isr:#x} IRR7 {irr:#x}, expected 0"
    );
    let before = total();
    let start = evtchn::now()?;
    arm_timer(start + DELAY_NS)?;
    let woke = halt_until_vector(VECTOR, 0, "first timer")?;
    ensure!(
        count(VECTOR) == 1 && total() - before == 1,
        "first timer: {} interrupts on {VECTOR:#x}, {} in all, expected exactly 1 on {VECTOR:#x}",
        count(VECTOR),
        total() - before
    );
    ensure!(
        evtchn::is_pending(port),
        "first timer: VIRQ_TIMER port {port} not pending"
    );
    ensure!(
        evtchn::upcall_flag(),
        "first timer: evtchn_upcall_pending not set"
    );
    let isr = rdmsr(MSR_ISR7);
    ensure!(
        isr == bit7(VECTOR),
        "first timer: ISR7 {isr:#x} before EOI, expected {:#x} (vector {VECTOR:#x} in service)",
        bit7(VECTOR)
    );
    eoi();
    let isr = rdmsr(MSR_ISR7);
    ensure!(isr == 0, "first timer: ISR7 {isr:#x} after EOI, expected 0");
    println!(
        "upcall on vector {VECTOR:#x} after {} us, VIRQ_TIMER port {port} pending, ISR bit set until EOI and clear after",
        woke.saturating_sub(start) / 1000
    );

    // 4. Edge-triggered: no interrupt while the upcall flag stays set.
    ensure!(
        evtchn::test_and_clear(port),
        "port {port} lost its pending bit"
    );
    evtchn::clear_pending_sel();
    ensure!(
        evtchn::upcall_flag(),
        "evtchn_upcall_pending cleared behind the guest's back"
    );
    let before = total();
    let start = evtchn::now()?;
    arm_timer(start + DELAY_NS)?;
    arch::sti();
    let mut t = start;
    while t < start + QUIET_NS {
        arch::pause();
        t = evtchn::now()?;
    }
    arch::cli();
    ensure!(
        evtchn::is_pending(port),
        "second timer: port {port} not pending after {} us (the timer did not fire)",
        (t - start) / 1000
    );
    ensure!(
        total() == before,
        "second timer: {} interrupt(s) (on {VECTOR:#x}: {}) with evtchn_upcall_pending already set; delivery must be edge-triggered",
        total() - before,
        count(VECTOR) - 1
    );
    let irr = rdmsr(MSR_IRR7);
    ensure!(
        irr == 0,
        "second timer: IRR7 {irr:#x} with evtchn_upcall_pending already set, expected 0"
    );
    evtchn::scan();
    ensure!(
        !evtchn::upcall_flag(),
        "scan left evtchn_upcall_pending set"
    );
    let before = total();
    let start = evtchn::now()?;
    arm_timer(start + DELAY_NS)?;
    let woke = halt_until_vector(VECTOR, 1, "third timer")?;
    ensure!(
        count(VECTOR) == 2 && total() - before == 1,
        "third timer: {} interrupts in all, expected exactly 1 on {VECTOR:#x}",
        total() - before
    );
    ensure!(
        evtchn::is_pending(port),
        "third timer: port {port} not pending"
    );
    eoi();
    println!(
        "edge-triggered: no interrupt in {} ms with evtchn_upcall_pending left set; after clearing it the next timer interrupted after {} us",
        QUIET_NS / 1_000_000,
        woke.saturating_sub(start) / 1000
    );

    // 5. Registering a vector while an upcall is pending delivers it at once.
    evtchn::scan();
    ensure!(
        !evtchn::upcall_flag(),
        "scan left evtchn_upcall_pending set"
    );
    let before = total();
    let start = evtchn::now()?;
    arm_timer(start + DELAY_NS)?;
    let mut t = start;
    while !evtchn::is_pending(port) {
        ensure!(
            t < start + MAX_NS,
            "timer with interrupts off: port {port} not pending after 2 s"
        );
        // Bochs 2.7 loads the guest's RFLAGS on VM entry before it counts as in VMX
        // non-root mode, so with IF=0 it masks the host's interrupts (which must cause VM
        // exits whatever the guest's IF) until the guest itself writes IF. Without this
        // CLI the hypervisor never gets the CPU back to fire the timer.
        arch::cli();
        arch::pause();
        t = evtchn::now()?;
    }
    ensure!(
        evtchn::upcall_flag(),
        "timer with interrupts off: evtchn_upcall_pending not set"
    );
    let irr = rdmsr(MSR_IRR7);
    ensure!(
        irr == bit7(VECTOR),
        "timer with interrupts off: IRR7 {irr:#x}, expected {:#x} (vector {VECTOR:#x} raised, held by IF=0)",
        bit7(VECTOR)
    );
    ensure!(total() == before, "an interrupt was taken with IF=0");
    let rc = evtchn::set_upcall_vector(0, VECTOR2);
    ensure!(
        rc == 0,
        "set_evtchn_upcall_vector(vcpu 0, vector {VECTOR2:#x}) with an upcall pending returned {}",
        describe(rc)
    );
    let irr = rdmsr(MSR_IRR7);
    ensure!(
        irr == bit7(VECTOR) | bit7(VECTOR2),
        "after registering {VECTOR2:#x} with an upcall pending: IRR7 {irr:#x}, expected {:#x}",
        bit7(VECTOR) | bit7(VECTOR2)
    );
    sti_window();
    let isr = rdmsr(MSR_ISR7);
    ensure!(
        count(VECTOR2) == 1 && total() - before == 1 && isr == bit7(VECTOR2),
        "sti after registering {VECTOR2:#x}: {} interrupt(s) on {VECTOR2:#x}, {} in all, ISR7 {isr:#x}; expected {VECTOR2:#x} at once and alone",
        count(VECTOR2),
        total() - before
    );
    eoi();
    sti_window();
    let isr = rdmsr(MSR_ISR7);
    ensure!(
        count(VECTOR) == 3 && total() - before == 2 && isr == bit7(VECTOR),
        "after EOI of {VECTOR2:#x}: {} interrupts in all, ISR7 {isr:#x}; expected the held-back {VECTOR:#x}",
        total() - before
    );
    eoi();
    let (isr, irr) = (rdmsr(MSR_ISR7), rdmsr(MSR_IRR7));
    ensure!(
        isr == 0 && irr == 0,
        "at the end: ISR7 {isr:#x} IRR7 {irr:#x}, expected 0"
    );
    println!(
        "registering {VECTOR2:#x} with an upcall pending: delivered at once on sti; then {VECTOR:#x} (raised with IF=0) after its EOI"
    );
    let rc = set_timer_op(0);
    ensure!(
        rc == 0,
        "set_timer_op(0) (cancel) returned {}",
        describe(rc)
    );
    Ok(())
}
