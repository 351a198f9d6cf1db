//! `apic-modes`: the local APIC in each of its modes, as a guest written for Xen (or for
//! hardware) drives it.
//!
//! 1. At boot it is in xAPIC mode at 0xfee00000 with the BSP flag (IA32_APIC_BASE reads
//!    0xfee00900, as Xen starts a PVH vCPU), and its registers answer through the MMIO
//!    page: the ID in bits 24-31, the version 0x14 with 6 LVTs, DFR reset to all ones,
//!    SVR to 0xff.
//! 2. xAPIC: software-enabled through the SVR, a self-IPI through ICR (shorthand "self")
//!    is taken on its vector with `sti`; ISR shows it in service until an EOI (any value
//!    in xAPIC mode) written to the MMIO page retires it. A fixed IPI to its own
//!    physical ID through ICR high/low works too. The LAPIC timer, one-shot, 2 ms at
//!    divide-by-1: the current count falls, the guest halts, and exactly one interrupt
//!    on the LVT's vector wakes it no sooner than 2 ms later by its pvclock.
//! 3. Switch to x2APIC (EXTD): IA32_APIC_BASE reads back with EXTD; the ID is now the
//!    32-bit x2APIC id in MSR 0x802; a self-IPI through the SELF_IPI MSR is taken and
//!    retired by an EOI MSR write; the xAPIC page no longer answers (reads all ones). The
//!    timer, periodic at 1 ms (divide by 16): three interrupts take at least 3 ms, and
//!    once the initial count is zeroed no more come in the next 5 ms.
//! 4. Disable (EN clear, from x2APIC): CPUID.1:EDX.APIC reads 0. Re-enable in xAPIC mode:
//!    CPUID shows the APIC again, the registers are back at their reset values (SVR
//!    0xff), and a self-IPI through the MMIO page is taken again.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::ptr::{read_volatile, write_volatile};

#[cfg(target_os = "none")]
use guest_rt::idt::vector_count;
use guest_rt::{arch, ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

const MSR_APIC_BASE: u32 = 0x1b;
const BSP: u64 = 1 << 8;
const EXTD: u64 = 1 << 10;
const EN: u64 = 1 << 11;
const BASE: u64 = 0xfee0_0000;

/// xAPIC register offsets.
const ID: u64 = 0x20;
const VERSION: u64 = 0x30;
const EOI: u64 = 0xb0;
const DFR: u64 = 0xe0;
const SVR: u64 = 0xf0;
const ISR0: u64 = 0x100;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
const LVT_TIMER: u64 = 0x320;
const TMICT: u64 = 0x380;
const TMCCT: u64 = 0x390;
const TDCR: u64 = 0x3e0;

/// x2APIC MSRs.
const X2_ID: u32 = 0x802;
const X2_EOI: u32 = 0x80b;
const X2_SVR: u32 = 0x80f;
const X2_ISR0: u32 = 0x810;
const X2_SELF_IPI: u32 = 0x83f;
const X2_LVT_TIMER: u32 = 0x832;
const X2_TMICT: u32 = 0x838;
const X2_TDCR: u32 = 0x83e;
/// LVT timer mode: periodic.
const PERIODIC: u64 = 1 << 17;

fn mmio_read(off: u64) -> u32 {
    // SAFETY: the runtime identity-maps the first 4 GiB; the APIC page is emulated by the
    // hypervisor (no RAM there), which is what is under test.
    unsafe { read_volatile((BASE + off) as *const u32) }
}

fn mmio_write(off: u64, v: u32) {
    // SAFETY: as in `mmio_read`.
    unsafe { write_volatile((BASE + off) as *mut u32, v) }
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: IA32_APIC_BASE and x2APIC registers, read only in x2APIC mode; no side
    // effects.
    unsafe { arch::rdmsr(msr) }
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: IA32_APIC_BASE with a legal transition, or x2APIC registers in x2APIC mode;
    // none touches guest memory.
    unsafe { arch::wrmsr(msr, v) }
}

/// Whether `vector` is set in an ISR register bank read through `read(k)` (k = 0..8).
fn in_service(vector: u8, read: impl Fn(u32) -> u64) -> bool {
    read(u32::from(vector / 32)) & (1 << (vector % 32)) != 0
}

/// Opens an interrupt window until `vector` has been taken once more than `before`.
/// Lets interrupts in for a while and checks `vector` never came.
fn not_taken(vector: u8, before: u64) -> TestResult {
    for _ in 0..1000 {
        arch::sti();
        arch::pause();
        arch::cli();
    }
    let n = vector_count(vector) - before;
    ensure!(n == 0, "vector {vector:#x} taken {n} times, expected never");
    Ok(())
}

fn take(vector: u8, before: u64) -> TestResult {
    for _ in 0..1000 {
        arch::sti();
        arch::pause();
        arch::cli();
        if vector_count(vector) > before {
            break;
        }
    }
    let n = vector_count(vector) - before;
    ensure!(n == 1, "vector {vector:#x} taken {n} times, expected once");
    Ok(())
}

/// The runtime's IDT exists only on the bare-metal target; the host build (for clippy and
/// `cargo test`) never runs the guest.
#[cfg(not(target_os = "none"))]
fn vector_count(_: u8) -> u64 {
    0
}

/// The guest's system time (pvclock).
fn now() -> Result<u64, guest_rt::Fail> {
    guest_rt::pvclock::now_ns().ok_or_else(|| guest_rt::Fail::new(format_args!("no pvclock")))
}

/// Halts with interrupts enabled until `vector` has been taken `n` times more than
/// `before` or `limit_ns` passed; returns the count taken and the time it stopped. A Xen
/// one-shot timer at the limit keeps the halt bounded when no interrupt comes.
fn wait_for(vector: u8, before: u64, n: u64, limit_ns: u64) -> Result<(u64, u64), guest_rt::Fail> {
    let start = now()?;
    let rc = guest_rt::hypercall::set_timer_op(start + limit_ns);
    ensure!(rc == 0, "set_timer_op failed: {rc}");
    loop {
        let t = now()?;
        if vector_count(vector) - before >= n || t - start >= limit_ns {
            return Ok((vector_count(vector) - before, t));
        }
        arch::sti_hlt_cli();
    }
}

fn cpuid_apic() -> bool {
    arch::cpuid(1, 0).edx & (1 << 9) != 0
}

fn test_main(_si: &StartInfo) -> TestResult {
    // 1. Reset state.
    let base = rdmsr(MSR_APIC_BASE);
    ensure!(
        base == BASE | EN | BSP,
        "IA32_APIC_BASE at boot is {base:#x}, expected {:#x} (xAPIC, BSP)",
        BASE | EN | BSP
    );
    let (id, ver, dfr, svr) = (
        mmio_read(ID),
        mmio_read(VERSION),
        mmio_read(DFR),
        mmio_read(SVR),
    );
    ensure!(
        id == 0 && ver == 0x0005_0014 && dfr == u32::MAX && svr == 0xff,
        "xAPIC reset registers: ID {id:#x} version {ver:#x} DFR {dfr:#x} SVR {svr:#x}"
    );
    ensure!(
        cpuid_apic(),
        "CPUID.1:EDX.APIC is clear with the APIC enabled"
    );
    println!("apic-modes: boots in xAPIC mode at {BASE:#x}; MMIO registers at reset values");

    // 2. xAPIC interrupts.
    mmio_write(SVR, 0x1ff);
    let before = vector_count(0x50);
    mmio_write(ICR_LO, (1 << 18) | 0x50); // shorthand self, fixed
    take(0x50, before)?;
    ensure!(
        in_service(0x50, |k| u64::from(mmio_read(ISR0 + 0x10 * u64::from(k)))),
        "0x50 not in service after delivery"
    );
    mmio_write(EOI, 0xdead);
    ensure!(
        !in_service(0x50, |k| u64::from(mmio_read(ISR0 + 0x10 * u64::from(k)))),
        "0x50 still in service after an EOI"
    );
    let before = vector_count(0x51);
    mmio_write(ICR_HI, 0); // physical destination: APIC ID 0, this vCPU
    mmio_write(ICR_LO, 0x51);
    take(0x51, before)?;
    mmio_write(EOI, 0);
    println!("apic-modes: xAPIC self-IPIs by shorthand and by ID taken, EOI through MMIO");

    // Logical destinations (flat, then cluster model): this APIC's LDR against the MDA.
    const LOGICAL: u32 = 1 << 11;
    const LDR: u64 = 0xd0;
    // (DFR, LDR, an MDA that selects this APIC, one that does not)
    for (dfr, ldr, hit, miss) in [
        (u32::MAX, 0x02, 0x06, 0x04),    // flat: bit masks
        (0x0fff_ffff, 0x01, 0x03, 0x11), // cluster 0 bit 0; cluster 1 is another
    ] {
        mmio_write(DFR, dfr);
        mmio_write(LDR, ldr << 24);
        let before = vector_count(0x52);
        mmio_write(ICR_HI, hit << 24);
        mmio_write(ICR_LO, LOGICAL | 0x52);
        take(0x52, before)?;
        mmio_write(EOI, 0);
        let before = vector_count(0x53);
        mmio_write(ICR_HI, miss << 24);
        mmio_write(ICR_LO, LOGICAL | 0x53);
        not_taken(0x53, before)?;
    }
    mmio_write(DFR, u32::MAX);
    mmio_write(LDR, 0);
    println!("apic-modes: xAPIC logical IPIs (flat and cluster) reach the APICs their MDA selects");

    ensure!(
        guest_rt::pvclock::map_shared_info() == 0,
        "cannot map shared_info for the pvclock"
    );
    mmio_write(TDCR, 0xb); // divide by 1: the count is in ns
    mmio_write(LVT_TIMER, 0x58);
    let before = vector_count(0x58);
    let t0 = now()?;
    mmio_write(TMICT, 2_000_000);
    let c1 = mmio_read(TMCCT);
    let (n, t1) = wait_for(0x58, before, 1, 1_000_000_000)?;
    let took = t1 - t0;
    ensure!(
        c1 > 0 && c1 <= 2_000_000 && n == 1 && took >= 1_900_000,
        "xAPIC one-shot timer: current count {c1} after start, {n} interrupts in {took} ns"
    );
    mmio_write(EOI, 0);
    let (late, _) = wait_for(0x58, before + 1, 1, 5_000_000)?;
    let c2 = mmio_read(TMCCT);
    ensure!(
        late == 0 && c2 == 0,
        "one-shot timer fired again ({late}) or counts ({c2})"
    );
    println!("apic-modes: xAPIC one-shot timer: one interrupt after {took} ns");

    // 3. x2APIC.
    wrmsr(MSR_APIC_BASE, base | EXTD);
    let base2 = rdmsr(MSR_APIC_BASE);
    ensure!(
        base2 == base | EXTD,
        "IA32_APIC_BASE after enabling x2APIC: {base2:#x}"
    );
    let (x2id, x2svr) = (rdmsr(X2_ID), rdmsr(X2_SVR));
    ensure!(
        x2id == 0 && x2svr == 0x1ff,
        "x2APIC ID {x2id:#x} SVR {x2svr:#x} (the SVR set in xAPIC mode must carry over)"
    );
    let before = vector_count(0x60);
    wrmsr(X2_SELF_IPI, 0x60);
    take(0x60, before)?;
    ensure!(
        in_service(0x60, |k| rdmsr(X2_ISR0 + k)),
        "0x60 not in service"
    );
    wrmsr(X2_EOI, 0);
    ensure!(!in_service(0x60, |k| rdmsr(X2_ISR0 + k)), "EOI MSR ignored");
    let page = mmio_read(VERSION);
    ensure!(
        page == u32::MAX,
        "the xAPIC page reads {page:#x} in x2APIC mode, expected all ones"
    );
    println!("apic-modes: x2APIC: SELF_IPI taken, EOI by MSR, xAPIC page gone");

    // x2APIC logical destinations: cluster 0, bit 0 is APIC id 0 (this one); bit 1 is
    // id 1, which does not exist. A physical reading of either would get both wrong.
    const X2_ICR: u32 = 0x830;
    const X2_LDR: u32 = 0x80d;
    ensure!(
        rdmsr(X2_LDR) == 1,
        "x2APIC LDR {:#x}, expected 1",
        rdmsr(X2_LDR)
    );
    let before = vector_count(0x61);
    wrmsr(X2_ICR, (1 << 32) | (1 << 11) | 0x61);
    take(0x61, before)?;
    wrmsr(X2_EOI, 0);
    let before = vector_count(0x62);
    wrmsr(X2_ICR, (2 << 32) | (1 << 11) | 0x62);
    not_taken(0x62, before)?;
    println!("apic-modes: x2APIC logical IPIs match the derived LDR (cluster, bit)");

    wrmsr(X2_TDCR, 0x3); // divide by 16
    wrmsr(X2_LVT_TIMER, PERIODIC | 0x68);
    let before = vector_count(0x68);
    let t0 = now()?;
    wrmsr(X2_TMICT, 1_000_000 / 16);
    let mut t1 = t0;
    for i in 0..3 {
        let (n, t) = wait_for(0x68, before + i, 1, 1_000_000_000)?;
        ensure!(n == 1, "periodic timer: interrupt {} never came", i + 1);
        t1 = t;
        wrmsr(X2_EOI, 0);
    }
    let took = t1 - t0;
    wrmsr(X2_TMICT, 0);
    let stopped = now()? - t0;
    let (extra, _) = wait_for(0x68, before + 3, 2, 5_000_000)?;
    // A fourth period that ended before the stop leaves its interrupt pending (IRR), and
    // stopping the count does not withdraw it: one more is then correct, never two.
    let may_be_pending = u64::from(stopped >= 4_000_000);
    ensure!(
        took >= 2_900_000 && extra <= may_be_pending,
        "x2APIC periodic timer: 3 interrupts in {took} ns, {extra} after it was stopped \
         {stopped} ns after the start"
    );
    println!(
        "apic-modes: x2APIC periodic timer: 3 interrupts in {took} ns, {extra} pending at the stop"
    );

    // 4. Disabled, then xAPIC again.
    wrmsr(MSR_APIC_BASE, BASE | BSP);
    ensure!(
        !cpuid_apic(),
        "CPUID.1:EDX.APIC still set with the APIC disabled"
    );
    wrmsr(MSR_APIC_BASE, BASE | EN);
    let base3 = rdmsr(MSR_APIC_BASE);
    ensure!(
        base3 == BASE | EN | BSP && cpuid_apic(),
        "after re-enabling: IA32_APIC_BASE {base3:#x}, CPUID APIC {}",
        cpuid_apic()
    );
    let svr = mmio_read(SVR);
    ensure!(
        svr == 0xff,
        "SVR after disable/enable is {svr:#x}, expected 0xff"
    );
    mmio_write(SVR, 0x1ff);
    let before = vector_count(0x70);
    mmio_write(ICR_LO, (1 << 18) | 0x70);
    take(0x70, before)?;
    mmio_write(EOI, 0);
    println!("apic-modes: disabled (CPUID APIC clear), re-enabled in xAPIC mode at reset");
    Ok(())
}
