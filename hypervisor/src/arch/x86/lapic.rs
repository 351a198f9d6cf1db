//! The host's local APIC: x2APIC through MSRs when the CPU offers it, else xAPIC through
//! its MMIO page (mapped uncacheable, non-executable at `DIRECT_MAP_BASE + APIC base` by
//! `mm::paging`, since it is not RAM and the direct map leaves it out).
//!
//! The timer is one-shot, as the scheduler wants: [`arm_deadline`] takes a TSC value. The
//! LAPIC timer's count rate is calibrated against the (already measured) TSC at boot; when
//! the CPU offers TSC-deadline mode and a boot self-test shows it fires, that mode is
//! used instead (exact, no conversion). Either way the interrupt handler compares the TSC
//! with the deadline and re-arms if the hardware fired early (count clamped to 32 bits),
//! so the TIMER softirq is raised only once the deadline has passed.
//!
//! Vectors: [`TIMER_VECTOR`], [`EVENT_CHECK_VECTOR`], [`CALL_FUNCTION_VECTOR`],
//! [`SPURIOUS_VECTOR`] (see `irq`). LINT0 (the legacy PIC's ExtINT line) is masked on every
//! CPU; LINT1 delivers NMIs on the boot CPU only, as firmware sets it up.
//!
//! The configuration (mode, rates) is global, set once by the boot CPU's [`init`];
//! APs call [`init_ap`] to enable their own APIC with it.
#![allow(unsafe_code)]

use super::percpu;
use super::regs::{rdmsr, wrmsr};
use super::tsc::rdtsc;
use crate::mm::phys;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use log::info;

pub const TIMER_VECTOR: u8 = 0xf0;
pub const EVENT_CHECK_VECTOR: u8 = 0xf1;
pub const CALL_FUNCTION_VECTOR: u8 = 0xf2;
pub const SPURIOUS_VECTOR: u8 = 0xff;

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

// Register offsets (xAPIC MMIO); the x2APIC MSR is 0x800 + offset / 16.
const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;
const X2APIC_SELF_IPI: u32 = 0x83f;

const LVT_MASKED: u32 = 1 << 16;
const LVT_NMI: u32 = 0b100 << 8;
const LVT_TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
const SVR_ENABLE: u32 = 1 << 8;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_PENDING: u32 = 1 << 12;
const ICR_SELF: u32 = 0b01 << 18;
/// Divide configuration value for "divide by 1" (0b1011).
const DIVIDE_1: u32 = 0b1011;

/// The timer mode the boot CPU chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum TimerMode {
    /// Not initialised: arming does nothing.
    None = 0,
    /// One-shot count down at the calibrated rate.
    OneShot = 1,
    /// IA32_TSC_DEADLINE.
    TscDeadline = 2,
}

static X2APIC: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC page (0 in x2APIC mode).
static MMIO: AtomicU64 = AtomicU64::new(0);
static MODE: AtomicU8 = AtomicU8::new(TimerMode::None as u8);
/// LAPIC timer counts per TSC tick, 32.32 fixed point.
static COUNTS_PER_TSC: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer frequency (Hz, divide 1), for reports.
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

fn cpuid1_ecx() -> u32 {
    core::arch::x86_64::__cpuid_count(1, 0).ecx
}

/// Whether the CPU offers x2APIC mode.
pub fn has_x2apic() -> bool {
    cpuid1_ecx() & (1 << 21) != 0
}

fn has_tsc_deadline() -> bool {
    cpuid1_ecx() & (1 << 24) != 0
}

/// The physical page of the xAPIC registers that the host page tables must map
/// (uncacheable, non-executable), or None when x2APIC mode will be used (no MMIO).
pub fn mmio_page() -> Option<u64> {
    if has_x2apic() {
        return None;
    }
    Some(rdmsr(MSR_APIC_BASE) & 0x000f_ffff_ffff_f000)
}

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        rdmsr(0x800 + (reg >> 4)) as u32
    } else {
        let va = MMIO.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: `va` is inside the xAPIC register page, mapped uncacheable by
        // `mm::paging` (checked in `init`); APIC registers are read as aligned 32-bit words.
        unsafe { (va as *const u32).read_volatile() }
    }
}

fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on (checked above), so 0x800 + reg/16 is this CPU's
        // x2APIC register MSR; callers pass defined registers and values.
        unsafe { wrmsr(0x800 + (reg >> 4), u64::from(value)) };
    } else {
        let va = MMIO.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: as in `read`; writes to APIC registers have device side effects only.
        unsafe { (va as *mut u32).write_volatile(value) }
    }
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    let v = read(REG_ID);
    if X2APIC.load(Ordering::Relaxed) {
        v
    } else {
        v >> 24
    }
}

/// Signals the end of the interrupt in service.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Sends a fixed interrupt `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on; 0x830 is the x2APIC ICR; a fixed IPI only interrupts
        // the target CPU.
        unsafe {
            wrmsr(
                0x830,
                u64::from(apic_id) << 32 | u64::from(ICR_ASSERT | u32::from(vector)),
            )
        };
    } else {
        wait_icr_idle();
        write(REG_ICR_HIGH, apic_id << 24);
        write(REG_ICR_LOW, ICR_ASSERT | u32::from(vector));
    }
}

/// ICR delivery modes used to start an AP (SDM 10.6.1).
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;

fn send_icr(apic_id: u32, low: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on; 0x830 is the x2APIC ICR. The callers send INIT or
        // STARTUP to an AP the firmware listed, which only resets or starts that CPU.
        unsafe { wrmsr(0x830, u64::from(apic_id) << 32 | u64::from(low)) };
    } else {
        wait_icr_idle();
        write(REG_ICR_HIGH, apic_id << 24);
        write(REG_ICR_LOW, low);
        wait_icr_idle();
    }
}

/// Sends an INIT IPI (level assert) to the CPU with APIC id `apic_id`: it resets and
/// waits for a STARTUP IPI.
pub fn send_init(apic_id: u32) {
    send_icr(apic_id, ICR_INIT | ICR_ASSERT);
}

/// Sends a STARTUP IPI: the CPU with APIC id `apic_id`, waiting after INIT, starts in real
/// mode at physical address `vector << 12`.
pub fn send_startup(apic_id: u32, vector: u8) {
    send_icr(apic_id, ICR_STARTUP | ICR_ASSERT | u32::from(vector));
}

/// Sends a fixed interrupt `vector` to this CPU.
pub fn self_ipi(vector: u8) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on; the SELF IPI MSR only interrupts this CPU.
        unsafe { wrmsr(X2APIC_SELF_IPI, u64::from(vector)) };
    } else {
        wait_icr_idle();
        write(REG_ICR_LOW, ICR_SELF | ICR_ASSERT | u32::from(vector));
    }
}

fn wait_icr_idle() {
    let mut spins = 0u32;
    while read(REG_ICR_LOW) & ICR_PENDING != 0 && spins < 1_000_000 {
        core::hint::spin_loop();
        spins += 1;
    }
}

/// Programs the timer to fire at or shortly after TSC value `tsc` (a past value fires as
/// soon as possible). Replaces any armed deadline.
pub fn arm_deadline(tsc: u64) {
    let tsc = tsc.max(1);
    percpu::this().timer_deadline.store(tsc, Ordering::SeqCst);
    program(tsc);
}

/// Stops the timer.
pub fn disarm() {
    percpu::this().timer_deadline.store(0, Ordering::SeqCst);
    match mode() {
        // SAFETY: TSC-deadline mode was chosen because CPUID has the MSR; 0 disarms it.
        TimerMode::TscDeadline => unsafe { wrmsr(MSR_TSC_DEADLINE, 0) },
        TimerMode::OneShot => write(REG_TIMER_INITIAL, 0),
        TimerMode::None => {}
    }
}

/// The armed deadline, if any (0: none).
#[allow(dead_code)] // for the scheduler (next issue)
pub fn deadline() -> u64 {
    percpu::this().timer_deadline.load(Ordering::SeqCst)
}

fn mode() -> TimerMode {
    match MODE.load(Ordering::Relaxed) {
        1 => TimerMode::OneShot,
        2 => TimerMode::TscDeadline,
        _ => TimerMode::None,
    }
}

/// Sets the hardware for deadline `tsc`.
fn program(tsc: u64) {
    match mode() {
        // SAFETY: TSC-deadline mode was chosen because CPUID has the MSR; any value only
        // sets when the timer interrupt comes.
        TimerMode::TscDeadline => unsafe { wrmsr(MSR_TSC_DEADLINE, tsc) },
        TimerMode::OneShot => {
            let delta = tsc.saturating_sub(rdtsc());
            let counts = (u128::from(delta) * u128::from(COUNTS_PER_TSC.load(Ordering::Relaxed)))
                .div_ceil(1 << 32);
            // 0 would stop the timer; clamp long waits (the handler re-arms).
            write(
                REG_TIMER_INITIAL,
                counts.clamp(1, u128::from(u32::MAX)) as u32,
            );
        }
        TimerMode::None => {}
    }
}

/// Called by the timer interrupt handler: true if the armed deadline has passed (the
/// TIMER softirq should be raised), else the timer is re-armed for it.
pub(super) fn timer_fired() -> bool {
    let pc = percpu::this();
    let deadline = pc.timer_deadline.load(Ordering::SeqCst);
    if deadline == 0 {
        return false;
    }
    if rdtsc() >= deadline {
        // Consume the deadline unless it was re-armed meanwhile.
        let _ = pc
            .timer_deadline
            .compare_exchange(deadline, 0, Ordering::SeqCst, Ordering::SeqCst);
        true
    } else {
        program(deadline);
        false
    }
}

/// Software-enables this CPU's APIC: spurious vector, TPR 0, LINT0 masked, LINT1 NMI on
/// the boot CPU, error LVT masked, timer masked and stopped.
fn enable_local(boot: bool) {
    let base = rdmsr(MSR_APIC_BASE);
    if X2APIC.load(Ordering::Relaxed) {
        if base & (APIC_BASE_EN | APIC_BASE_EXTD) != APIC_BASE_EN | APIC_BASE_EXTD {
            // xAPIC → x2APIC must go through enabled xAPIC (SDM 10.12.5).
            // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; the base address is kept
            // and x2APIC is only enabled when CPUID has it (X2APIC is set from CPUID).
            unsafe {
                wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN);
                wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
            }
        }
    } else if base & APIC_BASE_EN == 0 {
        // SAFETY: as above; only the global enable bit changes.
        unsafe { wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN) };
    }
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, if boot { LVT_NMI } else { LVT_MASKED });
    write(REG_LVT_ERROR, LVT_MASKED | 0xfe);
    if !X2APIC.load(Ordering::Relaxed) {
        write(REG_ESR, 0);
    }
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_TIMER_DIVIDE, DIVIDE_1);
    percpu::this().apic_id.store(id(), Ordering::Relaxed);
}

/// Sets the timer LVT for `mode`, unmasked.
fn set_timer_mode(m: TimerMode) {
    MODE.store(m as u8, Ordering::SeqCst);
    let lvt = match m {
        TimerMode::TscDeadline => LVT_TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR),
        _ => u32::from(TIMER_VECTOR),
    };
    write(REG_LVT_TIMER, lvt);
    // SDM 10.5.4.1: order the LVT write before any IA32_TSC_DEADLINE write.
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Counts the LAPIC timer (divide 1, masked, one-shot from 0xffffffff) over about
/// `window` TSC ticks: returns timer Hz.
fn calibrate(tsc_hz: u64) -> u64 {
    let window = (tsc_hz / 200).max(1); // 5 ms
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_DIVIDE, DIVIDE_1);
    write(REG_TIMER_INITIAL, u32::MAX);
    let start = rdtsc();
    let mut now = start;
    while now.wrapping_sub(start) < window {
        core::hint::spin_loop();
        now = rdtsc();
    }
    let current = read(REG_TIMER_CURRENT);
    let elapsed = rdtsc().wrapping_sub(start).max(1);
    write(REG_TIMER_INITIAL, 0);
    let counted = u64::from(u32::MAX - current);
    (u128::from(counted) * u128::from(tsc_hz) / u128::from(elapsed)) as u64
}

/// Arms a deadline `ms` milliseconds ahead and polls for the TIMER softirq, taking
/// interrupts with `irq::take_pending`, for at most 50 ms. Returns the TSC ticks from the
/// deadline to the softirq, or None if it never came.
fn self_test(tsc_hz: u64) -> Option<u64> {
    let _ = percpu::take_softirqs();
    let deadline = rdtsc() + tsc_hz / 1000;
    let give_up = deadline + tsc_hz / 20;
    arm_deadline(deadline);
    loop {
        super::irq::take_pending();
        let now = rdtsc();
        if percpu::this().softirq.load(Ordering::SeqCst) & percpu::softirq::TIMER != 0 {
            let _ = percpu::take_softirqs();
            return Some(now.saturating_sub(deadline));
        }
        if now > give_up {
            disarm();
            return None;
        }
    }
}

/// Sends this CPU a self-IPI (event check) and an IPI by its own APIC id (call function)
/// and checks both handlers ran. True if they did.
fn ipi_self_test() -> bool {
    use percpu::softirq::{CALL_FUNCTION, EVENT_CHECK};
    let _ = percpu::take_softirqs();
    self_ipi(EVENT_CHECK_VECTOR);
    send_ipi(id(), CALL_FUNCTION_VECTOR);
    let give_up = rdtsc() + 1_000_000_000;
    let mut got = 0;
    while got != EVENT_CHECK | CALL_FUNCTION && rdtsc() < give_up {
        super::irq::take_pending();
        got |= percpu::take_softirqs();
    }
    got & (EVENT_CHECK | CALL_FUNCTION) == EVENT_CHECK | CALL_FUNCTION
}

/// Brings up the boot CPU's APIC and timer; logs the result once. `tsc_hz` is the
/// measured TSC frequency. Needs per-CPU data and the IDT.
pub fn init(tsc_hz: u64) {
    let x2 = has_x2apic();
    X2APIC.store(x2, Ordering::SeqCst);
    let base = rdmsr(MSR_APIC_BASE) & 0x000f_ffff_ffff_f000;
    if !x2 {
        MMIO.store(phys::to_virt(base) as u64, Ordering::SeqCst);
    }
    enable_local(true);
    let hz = calibrate(tsc_hz).max(1);
    TIMER_HZ.store(hz, Ordering::SeqCst);
    COUNTS_PER_TSC.store(
        ((u128::from(hz) << 32) / u128::from(tsc_hz.max(1))) as u64,
        Ordering::SeqCst,
    );
    let mut mode = TimerMode::OneShot;
    let mut note = "";
    if has_tsc_deadline() {
        set_timer_mode(TimerMode::TscDeadline);
        if self_test(tsc_hz).is_some() {
            mode = TimerMode::TscDeadline;
        } else {
            note = " (TSC-deadline mode offered but did not fire)";
        }
    }
    set_timer_mode(mode);
    let late = self_test(tsc_hz);
    let ipis = ipi_self_test();
    let version = read(REG_VERSION);
    info!(
        "lapic: {} {:#x}, id {}, version {:#x}, timer {}.{:03} MHz (divide 1), one-shot by {}{note}",
        if x2 { "x2APIC (MSRs), base" } else { "xAPIC at" },
        base,
        id(),
        version & 0xff,
        hz / 1_000_000,
        hz / 1000 % 1000,
        if mode == TimerMode::TscDeadline {
            "TSC deadline"
        } else {
            "count"
        },
    );
    match late {
        Some(ticks) => log::debug!(
            "lapic: timer self-test: fired {} us after its 1 ms deadline",
            ticks * 1_000_000 / tsc_hz.max(1)
        ),
        None => log::error!("lapic: timer self-test: no interrupt within 50 ms"),
    }
    if !ipis {
        log::error!("lapic: IPI self-test: an IPI to this CPU was not delivered");
    }
}

/// Enables an AP's APIC with the boot CPU's configuration (mode and the timer rate the
/// boot CPU calibrated; the TSC is assumed to run at the same rate on every CPU).
pub fn init_ap() {
    enable_local(false);
    set_timer_mode(mode());
}

/// LAPIC timer frequency measured at boot (Hz).
#[allow(dead_code)] // for reports
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}
