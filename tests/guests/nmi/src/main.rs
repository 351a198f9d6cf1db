//! `nmi`: NMIs a guest sends itself through its virtual LAPIC, as Linux sends them to its
//! CPUs (backtraces, stopping CPUs), and the rules hardware keeps for them.
//!
//! 1. xAPIC mode (as the vCPU starts): an NMI by physical destination (its own ID) with
//!    interrupts off is taken at once, once.
//! 2. An NMI and a fixed self-IPI sent together with interrupts off: the NMI is taken
//!    first (its handler sees the IPI not yet taken), the IPI once interrupts are on.
//! 3. x2APIC mode: an NMI with the "all including self" shorthand (the only vCPU) is
//!    taken once.
//! 4. No nesting: the handler sends another NMI, then makes 50 hypercalls (exits at which
//!    a hypervisor could deliver it) and spins; the second NMI must not arrive inside the
//!    handler, and must arrive after its IRET.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_rt::{arch, ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

const MSR_APIC_BASE: u32 = 0x1b;
const EXTD: u64 = 1 << 10;
const EN: u64 = 1 << 11;
const BASE: u64 = 0xfee0_0000;
const SVR: u64 = 0xf0;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
const X2_SVR: u32 = 0x80f;
const X2_ICR: u32 = 0x830;
const X2_EOI: u32 = 0x80b;
/// ICR delivery mode NMI.
const NMI: u64 = 4 << 8;
/// ICR destination shorthand "all including self".
const ALL_INCLUDING_SELF: u64 = 2 << 18;
const IPI_VECTOR: u8 = 0x60;

/// NMIs taken.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// Handlers running (more than one at a time is nesting).
static DEPTH: AtomicU64 = AtomicU64::new(0);
static NESTED: AtomicBool = AtomicBool::new(false);
/// The fixed IPI's count as the last NMI handler saw it.
static IPIS_SEEN_IN_NMI: AtomicU64 = AtomicU64::new(0);
/// The next handler sends another NMI, then gives the hypervisor exits.
static RESEND: AtomicBool = AtomicBool::new(false);
/// NMIs counted by the end of the resending handler (taken inside it would show here).
static COUNT_AT_HANDLER_END: AtomicU64 = AtomicU64::new(0);

/// Called by the NMI stub with every caller-saved register saved.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
extern "C" fn nmi_body() {
    if DEPTH.fetch_add(1, Ordering::SeqCst) != 0 {
        NESTED.store(true, Ordering::SeqCst);
    }
    COUNT.fetch_add(1, Ordering::SeqCst);
    IPIS_SEEN_IN_NMI.store(vector_count(IPI_VECTOR), Ordering::SeqCst);
    if RESEND.swap(false, Ordering::SeqCst) {
        wrmsr(X2_ICR, ALL_INCLUDING_SELF | NMI);
        for _ in 0..50 {
            guest_rt::hypercall::xen_version_number();
            for _ in 0..100 {
                arch::pause();
            }
        }
        COUNT_AT_HANDLER_END.store(COUNT.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    DEPTH.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .text
    .global guest_nmi_stub
guest_nmi_stub:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov rax, rsp
    and rsp, -16
    push rax
    sub rsp, 8
    call {body}
    add rsp, 8
    pop rsp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
"#,
    body = sym nmi_body,
);

#[cfg(target_os = "none")]
extern "C" {
    fn guest_nmi_stub();
}

#[cfg(target_os = "none")]
use guest_rt::idt::vector_count;

/// The host build (clippy, `cargo test`) never runs the guest.
#[cfg(not(target_os = "none"))]
fn vector_count(_: u8) -> u64 {
    0
}

fn mmio_write(off: u64, v: u32) {
    // SAFETY: the runtime identity-maps the first 4 GiB; the APIC page is emulated by the
    // hypervisor (no RAM there).
    unsafe { core::ptr::write_volatile((BASE + off) as *mut u32, v) }
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: IA32_APIC_BASE; no side effects.
    unsafe { arch::rdmsr(msr) }
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: IA32_APIC_BASE with a legal transition, or x2APIC registers in x2APIC mode;
    // none touches guest memory.
    unsafe { arch::wrmsr(msr, v) }
}

/// Spins until COUNT reaches `n` (or a bound); returns the count.
fn wait_count(n: u64) -> u64 {
    for _ in 0..100_000 {
        if COUNT.load(Ordering::SeqCst) >= n {
            break;
        }
        arch::pause();
    }
    COUNT.load(Ordering::SeqCst)
}

fn test_main(_si: &StartInfo) -> TestResult {
    #[cfg(target_os = "none")]
    // SAFETY: the stub saves every register it touches and returns with IRETQ; nothing
    // raises an NMI yet.
    unsafe {
        guest_rt::idt::set_gate(2, guest_nmi_stub as *const () as usize as u64)
    };
    arch::cli();

    // 1. xAPIC, physical destination = own ID (0), interrupts off.
    mmio_write(SVR, 0x1ff);
    mmio_write(ICR_HI, 0);
    mmio_write(ICR_LO, NMI as u32);
    let n = wait_count(1);
    ensure!(
        n == 1,
        "xAPIC NMI to own ID with IF=0: taken {n} times, expected once"
    );
    println!("nmi: xAPIC NMI by physical ID taken once with interrupts off");

    // 2. NMI before a pending fixed IPI.
    let ipis = vector_count(IPI_VECTOR);
    mmio_write(ICR_LO, (1 << 18) | u32::from(IPI_VECTOR)); // shorthand self, fixed
    mmio_write(ICR_LO, NMI as u32);
    let n = wait_count(2);
    ensure!(n == 2, "second xAPIC NMI: count {n}, expected 2");
    let seen = IPIS_SEEN_IN_NMI.load(Ordering::SeqCst);
    ensure!(
        seen == ipis,
        "the NMI handler ran after the pending IPI (IPI count {seen}, before {ipis})"
    );
    for _ in 0..1000 {
        arch::sti();
        arch::pause();
        arch::cli();
        if vector_count(IPI_VECTOR) > ipis {
            break;
        }
    }
    let taken = vector_count(IPI_VECTOR) - ipis;
    ensure!(
        taken == 1,
        "the fixed IPI was taken {taken} times after sti, expected once"
    );
    mmio_write(0xb0, 0); // EOI
    println!("nmi: NMI taken before a pending fixed IPI, the IPI once interrupts were on");

    // 3. x2APIC, shorthand all-including-self.
    wrmsr(MSR_APIC_BASE, BASE | EN | EXTD);
    ensure!(rdmsr(MSR_APIC_BASE) & EXTD != 0, "x2APIC mode not entered");
    wrmsr(X2_SVR, 0x1ff);
    wrmsr(X2_ICR, ALL_INCLUDING_SELF | NMI);
    let n = wait_count(3);
    ensure!(
        n == 3,
        "x2APIC NMI (all including self): count {n}, expected 3"
    );
    println!("nmi: x2APIC NMI by shorthand taken once");

    // 4. An NMI sent inside the handler waits for its IRET.
    RESEND.store(true, Ordering::SeqCst);
    wrmsr(X2_ICR, ALL_INCLUDING_SELF | NMI);
    let n = wait_count(5);
    let at_end = COUNT_AT_HANDLER_END.load(Ordering::SeqCst);
    ensure!(
        !NESTED.load(Ordering::SeqCst),
        "an NMI nested inside the NMI handler"
    );
    ensure!(
        at_end == 4,
        "NMIs counted at the end of the resending handler: {at_end}, expected 4 (none inside)"
    );
    ensure!(
        n == 5,
        "the NMI sent inside the handler: count {n} after its IRET, expected 5"
    );
    wrmsr(X2_EOI, 0);
    println!("nmi: held until IRET: the NMI sent inside the handler arrived after it, none nested");
    Ok(())
}
