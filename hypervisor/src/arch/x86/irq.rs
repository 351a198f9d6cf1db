//! Host interrupts: vectors, handlers, and the only places they are taken.
//!
//! Policy: host code runs with RFLAGS.IF = 0. Interrupts are taken only at two defined
//! points: (a) right after a VM exit caused by an external interrupt (SVM: the backend
//! calls [`take_pending`] after STGI; VMX: the exit acknowledged the interrupt and the
//! backend calls [`dispatch`] with its vector), and (b) in the idle wait,
//! [`wait_for_interrupt`]. Handlers take no locks and never log: they EOI and set
//! per-CPU softirq bits ([`super::percpu::softirq`]) for the scheduler loop to act on.
//!
//! NMIs can arrive at any time (they ignore IF): the handler only counts them;
//! [`report_nmis`] logs the count later, from ordinary host context. An NMI that
//! interrupts a guest exits it (VMX NMI exiting, SVM NMI intercept) and is counted the
//! same way.
//!
//! Every vector from 32 to 255 has a gate, so a stray interrupt is counted and EOI'd
//! rather than faulting on a missing gate.
#![allow(unsafe_code)]

use super::lapic::{self, CALL_FUNCTION_VECTOR, EVENT_CHECK_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use super::percpu::{self, softirq};
use core::sync::atomic::{AtomicU64, Ordering};

/// NMIs received (host handler and NMI exits), and how many were already reported.
static NMIS: AtomicU64 = AtomicU64::new(0);
static NMIS_REPORTED: AtomicU64 = AtomicU64::new(0);
/// Interrupts on vectors nobody asked for.
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED_REPORTED: AtomicU64 = AtomicU64::new(0);
/// Spurious-vector interrupts (no EOI).
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Handles interrupt `vector` in host context: from the IDT stubs, or in software for an
/// interrupt a VMX exit acknowledged. Must not take locks.
pub fn dispatch(vector: u8) {
    let saved_gs = percpu::claim_gs(lapic::id);
    handle(vector);
    percpu::release_gs(saved_gs);
}

fn handle(vector: u8) {
    match vector {
        SPURIOUS_VECTOR => {
            // Not in service: no EOI (SDM 10.9).
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
        TIMER_VECTOR => {
            lapic::eoi();
            if lapic::timer_fired() {
                percpu::raise_softirq(softirq::TIMER);
            }
        }
        EVENT_CHECK_VECTOR => {
            lapic::eoi();
            percpu::raise_softirq(softirq::EVENT_CHECK);
        }
        CALL_FUNCTION_VECTOR => {
            lapic::eoi();
            percpu::raise_softirq(softirq::CALL_FUNCTION);
        }
        v if super::ioapic::owns_vector(v) => super::ioapic::interrupt(v),
        v if super::msi::owns_vector(v) => super::msi::interrupt(v),
        _ => {
            // A vector nothing programs: acknowledge it so the APIC does not stay blocked.
            lapic::eoi();
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts an NMI (host NMI handler, or an NMI that caused a VM exit).
pub fn nmi() {
    NMIS.fetch_add(1, Ordering::Relaxed);
}

/// Logs NMIs and unexpected interrupts received since the last report. Call from
/// ordinary host context (never from a handler).
pub fn report_nmis() {
    let n = NMIS.load(Ordering::Relaxed);
    let before = NMIS_REPORTED.swap(n, Ordering::Relaxed);
    if n != before {
        log::warn!("{} NMI(s) received ({n} since boot)", n - before);
    }
    let u = UNEXPECTED.load(Ordering::Relaxed);
    let before = UNEXPECTED_REPORTED.swap(u, Ordering::Relaxed);
    if u != before {
        log::warn!("{} unexpected interrupt(s) ({u} since boot)", u - before);
    }
    let g = percpu::FOREIGN_GS.load(Ordering::Relaxed);
    let before = FOREIGN_GS_REPORTED.swap(g, Ordering::Relaxed);
    if g != before {
        log::warn!(
            "{} interrupt(s) taken with a guest's GS base loaded ({g} since boot; handled on the right CPU's data)",
            g - before
        );
    }
}

static FOREIGN_GS_REPORTED: AtomicU64 = AtomicU64::new(0);

/// NMIs counted since boot.
#[allow(dead_code)] // for diagnostics and tests of the scheduler loop
pub fn nmi_count() -> u64 {
    NMIS.load(Ordering::Relaxed)
}

/// The idle wait: enables interrupts and halts until one arrives, then disables them
/// again. STI's one-instruction shadow makes this race-free: an interrupt already pending
/// is taken after HLT starts, which it then ends.
#[allow(dead_code)] // the scheduler's idle loop (next issue) waits here
pub fn wait_for_interrupt() {
    // SAFETY: the handlers that can run here only EOI and set atomics; the window is
    // closed again before any other host code runs.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Lets interrupts already pending be delivered through the IDT, then disables them
/// again (STI's shadow covers the NOP; they are taken right after it).
pub fn take_pending() {
    // SAFETY: as for `wait_for_interrupt`.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Address of the entry stub for `vector` (32..=255).
pub fn stub_address(vector: u8) -> u64 {
    assert!(vector >= 32);
    // Only the symbol's address is taken; the stubs are code emitted below.
    let base = core::ptr::addr_of!(irq_stubs) as u64;
    base + u64::from(vector - 32) * 16
}

/// Address of the NMI entry stub.
pub fn nmi_stub_address() -> u64 {
    nmi_entry as *const () as usize as u64
}

extern "C" {
    static irq_stubs: u8;
    fn nmi_entry();
}

#[no_mangle]
extern "C" fn ferrovisor_irq(vector: u64) {
    dispatch(vector as u8);
}

#[no_mangle]
extern "C" fn ferrovisor_nmi() {
    nmi();
}

// The stubs save the caller-saved registers (the hypervisor uses no SSE/x87: soft-float),
// keep the stack 16-byte aligned for the call, and return with IRETQ. Each interrupt stub
// is 16 bytes: push vector, jump to the common part.
core::arch::global_asm!(
    r#"
    .section .text.irq, "ax"
    .balign 16
    .global irq_stubs
irq_stubs:
    .set irq_vector, 32
    .rept 224
    .balign 16
    .byte 0x68
    .long irq_vector
    jmp irq_common
    .set irq_vector, irq_vector + 1
    .endr

irq_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    sub rsp, 8
    mov rdi, [rsp + 80]
    cld
    call ferrovisor_irq
    add rsp, 8
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 8
    iretq

    .global nmi_entry
nmi_entry:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    cld
    call ferrovisor_nmi
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
    .text
    "#
);
