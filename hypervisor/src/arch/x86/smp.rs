//! The application processors (APs): starting them, their idle loop, and cross-CPU calls.
//!
//! **Start-up.** The boot CPU (BSP) copies a real-mode trampoline to the page at
//! [`TRAMPOLINE`] (below 1 MiB; `start.rs` keeps the first MiB from the frame allocator)
//! and builds, in the three pages after it, temporary page tables that map the first GiB
//! identically, *read-only and executable* (2 MiB pages): enough for the trampoline and the
//! hypervisor image (linked at 2 MiB), never writable. The BSP writes all four pages only
//! through the direct map (read-write, never executable), so no writable+executable mapping
//! exists in any address space; the hypervisor's own tables never map the trampoline.
//! Then, for one AP at a time: parameters (the hypervisor's CR3, a fresh stack, the CPU
//! index, the EFER bits to set) go to the trampoline page, and INIT, 10 ms, STARTUP,
//! 200 us, STARTUP (only if the AP has not called in) follow, as the SDM's MP
//! initialisation protocol describes, timed by the TSC. The AP goes 16 → 32 → 64-bit on the
//! temporary tables, jumps into the image (`ferrovisor_ap_entry64`), loads the real CR3 and
//! its stack and calls [`ap_main`]. An AP that never calls in gets INIT again (so it cannot
//! run the trampoline later with another AP's parameters). When every AP is done, the four
//! pages are zeroed.
//!
//! **On the AP** ([`ap_main`]): its own GDT and TSS with its own IST stacks, the shared IDT,
//! then the check that its CPUID is the boot CPU's in every word the hypervisor and its
//! backends use (`cpu::Signature`); a CPU that differs is refused (logged, left halted with
//! interrupts off). Then its per-CPU data, FPU/XCR0 set-up, speculation controls, its
//! LAPIC with the boot CPU's timer calibration, and the virtualization backend (VMXON after
//! VMX capability MSRs identical to the boot CPU's; SVM: EFER.SVME and its host save
//! area). Then the idle loop: halt with interrupts enabled, act on softirq bits.
//!
//! **Cross-CPU calls** ([`call_on`]): each CPU has a mailbox, one atomic pointer to a
//! request on the caller's stack. The caller claims the mailbox with a compare-exchange,
//! sends the call-function IPI and waits for the `done` flag; the interrupt handler only
//! raises the CALL_FUNCTION softirq, and the target runs the function from its idle loop
//! (no lock anywhere). While waiting, a caller serves its own mailbox, so two CPUs calling
//! each other cannot deadlock. A caller that times out takes its request back with a
//! compare-exchange; if the target already took it, the caller waits for it to finish, so
//! the request never outlives the caller's stack frame.
#![allow(unsafe_code)]

use super::percpu::{self, softirq, MAX_CPUS};
use super::{cpu, exceptions, gdt, irq, lapic, regs, tsc, xcr};
use crate::mm::frame::FRAME_SIZE;
use crate::mm::phys;
use arrayvec::ArrayVec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use ferrovisor_boot::{MemoryKind, MemoryRegion};
use log::{info, warn};

/// The CPUs to run on, by APIC id; index 0 is the boot CPU.
pub struct HostCpus {
    pub apic_ids: ArrayVec<u32, MAX_CPUS>,
}

impl HostCpus {
    /// The boot CPU alone.
    pub fn boot_only(bsp_apic_id: u32) -> HostCpus {
        let mut apic_ids = ArrayVec::new();
        apic_ids.push(bsp_apic_id);
        HostCpus { apic_ids }
    }
}

/// Which virtualization backend the APs must enable (the boot CPU's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BackendKind {
    None = 0,
    Vmx = 1,
    Svm = 2,
}

/// Physical address of the trampoline page (STARTUP vector 0x08). The three pages after
/// it hold the temporary PML4, PDPT and PD.
pub const TRAMPOLINE: u64 = 0x8000;
const TRAMPOLINE_PAGES: u64 = 4;
/// Offset of the parameters in the trampoline page (the code must end before it).
const PARAMS: u64 = 0xf00;
const P_CR3: u64 = 0;
const P_STACK: u64 = 8;
const P_INDEX: u64 = 16;
const P_EFER: u64 = 24;
const P_PML4: u64 = 28;
/// Size of each AP's stack (from the frame allocator, in the direct map; no guard page).
const AP_STACK_SIZE: u64 = 128 * 1024;

const MSR_EFER: u32 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;

/// Where an AP is in its start-up.
mod state {
    pub const OFF: u32 = 0;
    /// Running Rust code on its own GDT and the IDT.
    pub const CALLED_IN: u32 = 1;
    /// Fully up, in its idle loop.
    pub const ONLINE: u32 = 2;
    /// Its features differ from the boot CPU's: halted.
    pub const REFUSED: u32 = 3;
    /// The backend could not be enabled on it: halted.
    pub const FAILED: u32 = 4;
}

/// One CPU's start-up state, mailbox and idle-loop counters.
struct Slot {
    state: AtomicU32,
    apic_id: AtomicU32,
    /// Tops of its IST stacks (double fault, NMI/MCE), allocated by the BSP.
    ist: [AtomicU64; 2],
    /// The pending cross-CPU call (a `*const Call` on the caller's stack), or null.
    call: AtomicPtr<()>,
    /// Softirqs its idle loop acted on.
    event_checks: AtomicU64,
    timers: AtomicU64,
    calls: AtomicU64,
    /// Physical address of its VMXON region (VMX only).
    vmxon: AtomicU64,
    /// Passed the boot check ([`check_and_report`]): the scheduler may use it.
    usable: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(state::OFF),
            apic_id: AtomicU32::new(0),
            ist: [AtomicU64::new(0), AtomicU64::new(0)],
            call: AtomicPtr::new(core::ptr::null_mut()),
            event_checks: AtomicU64::new(0),
            timers: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            vmxon: AtomicU64::new(0),
            usable: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot::new() }; MAX_CPUS];
static BOOT_SIGNATURE: spin::Once<cpu::Signature> = spin::Once::new();
static BACKEND: AtomicU8 = AtomicU8::new(BackendKind::None as u8);
/// CPUs in the idle loop or the scheduler (the boot CPU counts once it started the APs).
static ONLINE: AtomicU32 = AtomicU32::new(1);

fn backend() -> BackendKind {
    match BACKEND.load(Ordering::SeqCst) {
        1 => BackendKind::Vmx,
        2 => BackendKind::Svm,
        _ => BackendKind::None,
    }
}

/// How many CPUs are online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// The CPUs the scheduler may use (bit i: CPU index i): the boot CPU and every AP that
/// passed the boot check.
pub fn usable_mask() -> u64 {
    SLOTS
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, s)| s.usable.load(Ordering::SeqCst))
        .fold(1, |m, (i, _)| m | 1 << i)
}

/// What an AP runs once the hypervisor's domains are built: the scheduler loop.
static SCHEDULER: spin::Once<&'static (dyn Fn() + Sync)> = spin::Once::new();

/// Hands every usable AP to `f` (the scheduler loop, which never returns): each leaves
/// its idle loop for it at the event-check IPI sent here.
pub fn start_scheduler(f: &'static (dyn Fn() + Sync)) {
    SCHEDULER.call_once(|| f);
    let mask = usable_mask() & !1;
    for i in (1..MAX_CPUS).filter(|i| mask & (1 << i) != 0) {
        poke(i as u32, softirq::SCHEDULE);
    }
}

/// Asks CPU `cpu` to act on softirq `bits` soon: raises them there and, on another CPU,
/// sends the event-check IPI, which makes it leave guest mode or its halt.
pub fn poke(cpu: u32, bits: u32) {
    let Some(pc) = percpu::cpu(cpu as usize) else {
        return;
    };
    pc.raise(bits);
    if cpu != percpu::this().index {
        lapic::send_ipi(
            SLOTS[cpu as usize].apic_id.load(Ordering::SeqCst),
            lapic::EVENT_CHECK_VECTOR,
        );
    }
}

/// Waits until CPU `cpu` has left guest mode at least once since this call began (and
/// run a cross-CPU call in host context): what a TLB shootdown needs after the p2m lost a
/// translation. Retries a call that timed out, with a complaint, until it runs.
pub fn sync_with(cpu: u32) {
    crate::sync::assert_none_held();
    loop {
        match call_on(cpu as usize, &|| 0, 1000) {
            Ok(_) | Err(CallError::Offline) => return,
            Err(CallError::Timeout) => {
                warn!("smp: CPU {cpu} did not answer a TLB shootdown within 1 s; still waiting")
            }
        }
    }
}

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
}

fn tsc_hz() -> u64 {
    crate::time::init().tsc_hz
}

/// Spins for at least `us` microseconds (TSC).
fn delay_us(us: u64) {
    let end = tsc::rdtsc() + tsc_hz() / 1_000_000 * us;
    while tsc::rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Waits up to `ms` milliseconds for `cond`.
fn wait_ms(ms: u64, cond: impl Fn() -> bool) -> bool {
    let end = tsc::rdtsc() + tsc_hz() / 1000 * ms;
    loop {
        if cond() {
            return true;
        }
        if tsc::rdtsc() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Whether the trampoline's pages are usable RAM by the firmware's map.
fn low_pages_usable(map: &[MemoryRegion]) -> bool {
    let end = TRAMPOLINE + TRAMPOLINE_PAGES * FRAME_SIZE;
    map.iter()
        .any(|r| r.kind == MemoryKind::Usable && r.start <= TRAMPOLINE && r.end() >= end)
}

/// Copies the trampoline and builds the temporary page tables (see the module comment).
fn install_trampoline() {
    // Only the addresses of the two symbols (which delimit the trampoline's bytes in the
    // image's read-only data) are taken.
    let (start, end) = (
        core::ptr::addr_of!(ap_tramp_start) as usize,
        core::ptr::addr_of!(ap_tramp_end) as usize,
    );
    let len = end - start;
    assert!(len as u64 <= PARAMS, "AP trampoline too large");
    // SAFETY: `start..end` is the trampoline in the image's read-only data, mapped and
    // never written.
    let code = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
    for page in 0..TRAMPOLINE_PAGES {
        phys::zero_frame(TRAMPOLINE + page * FRAME_SIZE);
    }
    phys::write_bytes(TRAMPOLINE, code);
    let (pml4, pdpt, pd) = (
        TRAMPOLINE + FRAME_SIZE,
        TRAMPOLINE + 2 * FRAME_SIZE,
        TRAMPOLINE + 3 * FRAME_SIZE,
    );
    const PRESENT_RW: u64 = 0b11;
    const PRESENT_LARGE_RO: u64 = 0x81;
    phys::write_u64(pml4, pdpt | PRESENT_RW);
    phys::write_u64(pdpt, pd | PRESENT_RW);
    for i in 0..512u64 {
        phys::write_u64(pd + i * 8, (i << 21) | PRESENT_LARGE_RO);
    }
}

fn write_params(cr3: u64, stack_top: u64, index: u64, efer: u32) {
    let p = TRAMPOLINE + PARAMS;
    phys::write_u64(p + P_CR3, cr3);
    phys::write_u64(p + P_STACK, stack_top);
    phys::write_u64(p + P_INDEX, index);
    phys::write_u64(
        p + P_EFER,
        u64::from(efer) | (TRAMPOLINE + FRAME_SIZE) << 32,
    );
    const _: () = assert!(P_PML4 == P_EFER + 4);
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Starts every AP of `cpus` (index order), one at a time, each enabling `kind`. Returns
/// how many CPUs are online (the boot CPU included). `map` is the firmware's memory map.
pub fn start_aps(cpus: &HostCpus, kind: BackendKind, map: &[MemoryRegion]) -> u32 {
    BOOT_SIGNATURE.call_once(cpu::Signature::current);
    BACKEND.store(kind as u8, Ordering::SeqCst);
    SLOTS[0].apic_id.store(lapic::id(), Ordering::SeqCst);
    SLOTS[0].state.store(state::ONLINE, Ordering::SeqCst);
    if cpus.apic_ids.len() <= 1 {
        return 1;
    }
    if !low_pages_usable(map) {
        warn!(
            "smp: {:#x}-{:#x} is not usable RAM; no room for the AP trampoline, running on the boot CPU alone",
            TRAMPOLINE,
            TRAMPOLINE + TRAMPOLINE_PAGES * FRAME_SIZE - 1
        );
        return 1;
    }
    let image = ferrovisor_boot::entry::image_layout();
    assert!(
        image.image_end <= 1 << 30,
        "image must lie in the first GiB"
    );
    install_trampoline();
    let cr3 = regs::control_registers().cr3;
    let efer = (regs::rdmsr(MSR_EFER) & (EFER_LME | EFER_NXE) | EFER_LME) as u32;
    for (index, &apic_id) in cpus.apic_ids.iter().enumerate().skip(1) {
        start_one(index, apic_id, cr3, efer);
    }
    for page in 0..TRAMPOLINE_PAGES {
        phys::zero_frame(TRAMPOLINE + page * FRAME_SIZE);
    }
    online()
}

fn alloc_stack(bytes: u64) -> Option<u64> {
    let pages = bytes / FRAME_SIZE;
    let pa = phys::alloc_zeroed(pages, 1)?;
    Some(phys::to_virt(pa) as u64 + bytes)
}

fn start_one(index: usize, apic_id: u32, cr3: u64, efer: u32) {
    let slot = &SLOTS[index];
    let (Some(stack), Some(df), Some(nmi)) = (
        alloc_stack(AP_STACK_SIZE),
        alloc_stack(gdt::AP_IST_STACK_SIZE),
        alloc_stack(gdt::AP_IST_STACK_SIZE),
    ) else {
        warn!("smp: CPU {index} (APIC id {apic_id}): no memory for its stacks; not started");
        return;
    };
    slot.apic_id.store(apic_id, Ordering::SeqCst);
    slot.ist[0].store(df, Ordering::SeqCst);
    slot.ist[1].store(nmi, Ordering::SeqCst);
    slot.state.store(state::OFF, Ordering::SeqCst);
    write_params(cr3, stack, index as u64, efer);
    let called_in = || slot.state.load(Ordering::SeqCst) != state::OFF;
    lapic::send_init(apic_id);
    delay_us(10_000);
    let vector = (TRAMPOLINE >> 12) as u8;
    lapic::send_startup(apic_id, vector);
    delay_us(200);
    if !called_in() {
        lapic::send_startup(apic_id, vector);
        delay_us(200);
    }
    // Emulators (TCG, Bochs) can be slow to schedule a new CPU: allow a second.
    if !wait_ms(1000, called_in) {
        lapic::send_init(apic_id);
        warn!("smp: CPU {index} (APIC id {apic_id}) did not start; sent INIT again and left it");
        return;
    }
    let done = || slot.state.load(Ordering::SeqCst) >= state::ONLINE;
    if !wait_ms(10_000, done) {
        warn!("smp: CPU {index} (APIC id {apic_id}) started but did not finish its set-up");
    }
}

/// Halts this CPU for good with interrupts off (NMIs are still counted).
fn park() -> ! {
    super::power::halt()
}

/// The AP's first Rust code, on its own stack with the hypervisor's page tables.
#[no_mangle]
extern "C" fn ferrovisor_ap_main(index: u64) -> ! {
    let index = index as usize;
    let slot = &SLOTS[index];
    gdt::init_ap([
        slot.ist[0].load(Ordering::SeqCst),
        slot.ist[1].load(Ordering::SeqCst),
    ]);
    exceptions::load();
    slot.state.store(state::CALLED_IN, Ordering::SeqCst);
    let apic_id = slot.apic_id.load(Ordering::SeqCst);
    let mine = cpu::Signature::current();
    if let Some((what, got, want)) = BOOT_SIGNATURE.get().and_then(|b| mine.differs_from(b)) {
        warn!(
            "CPU {index} (APIC id {apic_id}): refused: {what} differ from the boot CPU's \
             ({got:#x}, boot CPU {want:#x}); left halted"
        );
        slot.state.store(state::REFUSED, Ordering::SeqCst);
        park();
    }
    percpu::init_cpu(index as u32);
    let _ = xcr::init();
    let kind = backend();
    let _ = super::spec::init(kind == BackendKind::Vmx);
    lapic::init_ap();
    let enabled = match kind {
        BackendKind::None => Ok(()),
        BackendKind::Vmx => crate::vmx::cpu::enable_ap().map(|region| {
            slot.vmxon.store(region, Ordering::SeqCst);
        }),
        BackendKind::Svm => crate::svm::enable_ap(),
    };
    if let Err(e) = enabled {
        warn!("CPU {index} (APIC id {apic_id}): refused: {kind:?} backend: {e}; left halted");
        slot.state.store(state::FAILED, Ordering::SeqCst);
        park();
    }
    ONLINE.fetch_add(1, Ordering::SeqCst);
    slot.state.store(state::ONLINE, Ordering::SeqCst);
    idle_loop(slot)
}

/// An AP's idle loop: act on softirqs, then halt with interrupts enabled until the next
/// interrupt. The check and the halt cannot miss a wake-up: an interrupt arriving after
/// the check stays pending (interrupts are off) and ends the halt at once.
fn idle_loop(slot: &'static Slot) -> ! {
    loop {
        let bits = percpu::take_softirqs();
        if bits & softirq::CALL_FUNCTION != 0 {
            slot.calls.fetch_add(1, Ordering::Relaxed);
        }
        // Mailboxes are checked on every pass: a request may land between an IPI's
        // softirq and this read.
        serve_calls();
        if bits & softirq::TIMER != 0 {
            slot.timers.fetch_add(1, Ordering::Relaxed);
        }
        if bits & softirq::EVENT_CHECK != 0 {
            // No vCPU runs here yet: an event check only wakes the CPU.
            slot.event_checks.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(scheduler) = SCHEDULER
            .get()
            .filter(|_| slot.usable.load(Ordering::SeqCst))
        {
            scheduler();
        }
        if percpu::this().softirq.load(Ordering::SeqCst) == 0
            && slot.call.load(Ordering::SeqCst).is_null()
        {
            irq::wait_for_interrupt();
        }
    }
}

/// A cross-CPU call, on the caller's stack while it waits.
struct Call<'a> {
    f: &'a (dyn Fn() -> u64 + Sync),
    result: AtomicU64,
    done: AtomicBool,
}

/// Why a cross-CPU call did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No such CPU, or it is not online.
    Offline,
    /// It did not take the call in time.
    Timeout,
}

/// Whether a cross-CPU call waits in this CPU's mailbox.
pub fn call_pending() -> bool {
    !SLOTS[percpu::this().index as usize]
        .call
        .load(Ordering::Acquire)
        .is_null()
}

/// Runs this CPU's pending call, if any (the scheduler loop calls it at every turn and
/// after every guest exit).
pub fn serve_calls() {
    let me = percpu::this().index as usize;
    if SLOTS[me].call.load(Ordering::Acquire).is_null() {
        return;
    }
    let p = SLOTS[me].call.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if p.is_null() {
        return;
    }
    // SAFETY: a non-null mailbox holds a `Call` on the stack of a caller in `call_on`,
    // which does not return before `done` is set once we have taken it (its reclaiming
    // compare-exchange fails after our swap); `Call` is only read through shared
    // references and atomics.
    let call = unsafe { &*(p as *const Call<'_>) };
    let r = (call.f)();
    call.result.store(r, Ordering::SeqCst);
    // The caller may free the request right after this store: nothing touches it after.
    call.done.store(true, Ordering::Release);
}

/// Runs `f` on CPU `target` and returns its result; waits at most `timeout_ms` for the
/// target to take the call (once taken, until it finishes). On this CPU, runs it directly.
pub fn call_on(
    target: usize,
    f: &(dyn Fn() -> u64 + Sync),
    timeout_ms: u64,
) -> Result<u64, CallError> {
    let me = percpu::this().index as usize;
    if target == me {
        return Ok(f());
    }
    // The target may be spinning for a lock the caller holds, and answers only then.
    crate::sync::assert_none_held();
    let slot = SLOTS.get(target).ok_or(CallError::Offline)?;
    if slot.state.load(Ordering::SeqCst) != state::ONLINE {
        return Err(CallError::Offline);
    }
    let call = Call {
        f,
        result: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    let p = &call as *const Call<'_> as *mut ();
    let deadline = tsc::rdtsc() + tsc_hz() / 1000 * timeout_ms;
    while slot
        .call
        .compare_exchange(
            core::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        serve_calls();
        if tsc::rdtsc() >= deadline {
            return Err(CallError::Timeout);
        }
        core::hint::spin_loop();
    }
    lapic::send_ipi(
        slot.apic_id.load(Ordering::SeqCst),
        lapic::CALL_FUNCTION_VECTOR,
    );
    while !call.done.load(Ordering::Acquire) {
        serve_calls();
        if tsc::rdtsc() >= deadline
            && slot
                .call
                .compare_exchange(
                    p,
                    core::ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Err(CallError::Timeout);
        }
        core::hint::spin_loop();
    }
    Ok(call.result.load(Ordering::SeqCst))
}

/// What a CPU reports about itself (packed into the call's u64 result).
const REPORT_BACKEND_ON: u64 = 1 << 32;
const REPORT_X2APIC: u64 = 1 << 33;

/// Runs on each CPU for the boot check: its APIC id by CPUID and whether the backend is
/// on here (VMX: CR4.VMXE and a VMXON region; SVM: EFER.SVME, VM_HSAVE_PA and the host
/// save area), read from the hardware.
fn report_self() -> u64 {
    let slot = &SLOTS[percpu::this().index as usize];
    let on = match backend() {
        BackendKind::None => false,
        BackendKind::Vmx => {
            regs::control_registers().cr4 & (1 << 13) != 0 && slot.vmxon.load(Ordering::SeqCst) != 0
        }
        BackendKind::Svm => crate::svm::enabled_here(),
    };
    let x2 = regs::rdmsr(0x1b) & (1 << 10) != 0;
    u64::from(cpu::initial_apic_id())
        | if on { REPORT_BACKEND_ON } else { 0 }
        | if x2 { REPORT_X2APIC } else { 0 }
}

/// Asks every AP, through the cross-CPU call, for its APIC id and backend state, checks
/// the answers against what the firmware listed and what the boot CPU enabled, checks its
/// idle loop wakes for an event-check IPI and its LAPIC timer fires, and logs each CPU and
/// the total. Returns the number of CPUs that passed (the boot CPU included).
pub fn check_and_report(cpus: &HostCpus) -> u32 {
    let kind = backend();
    let mut good = 1;
    for (index, &apic_id) in cpus.apic_ids.iter().enumerate().skip(1) {
        let slot = &SLOTS[index];
        if slot.state.load(Ordering::SeqCst) != state::ONLINE {
            continue;
        }
        let answer = match call_on(index, &report_self, 1000) {
            Ok(a) => a,
            Err(e) => {
                warn!("CPU {index} (APIC id {apic_id}): no answer to a cross-CPU call ({e:?})");
                continue;
            }
        };
        let seen_id = answer as u32;
        let backend_on = answer & REPORT_BACKEND_ON != 0;
        let mut problems: ArrayVec<&str, 4> = ArrayVec::new();
        if seen_id != apic_id {
            problems.push("its CPUID APIC id is not the MADT's");
        }
        if kind != BackendKind::None && !backend_on {
            problems.push("the backend is not on");
        }
        // An event-check IPI must wake its idle loop.
        let before = slot.event_checks.load(Ordering::SeqCst);
        lapic::send_ipi(apic_id, lapic::EVENT_CHECK_VECTOR);
        if !wait_ms(1000, || slot.event_checks.load(Ordering::SeqCst) > before) {
            problems.push("an event-check IPI was not acted on");
        }
        // Its LAPIC timer, armed there 1 ms ahead, must fire.
        let timers = slot.timers.load(Ordering::SeqCst);
        let hz = tsc_hz();
        let arm = move || {
            lapic::arm_deadline(tsc::rdtsc() + hz / 1000);
            0
        };
        if call_on(index, &arm, 1000).is_err()
            || !wait_ms(1000, || slot.timers.load(Ordering::SeqCst) > timers)
        {
            problems.push("its LAPIC timer did not fire");
        }
        if problems.is_empty() {
            good += 1;
            slot.usable.store(true, Ordering::SeqCst);
            info!(
                "CPU {index}: APIC id {seen_id} ({}), CPUID features as the boot CPU's, {}, idle loop answers calls, IPIs and its timer",
                if answer & REPORT_X2APIC != 0 { "x2APIC" } else { "xAPIC" },
                match kind {
                    BackendKind::None => "no backend",
                    BackendKind::Vmx => "VMX root operation",
                    BackendKind::Svm => "SVM enabled with its own host save area",
                },
            );
        } else {
            for p in &problems {
                warn!("CPU {index} (APIC id {apic_id}): check failed: {p}");
            }
        }
    }
    info!(
        "smp: {good} CPU{} online ({} listed by the firmware and allowed)",
        if good == 1 { "" } else { "s" },
        cpus.apic_ids.len()
    );
    good
}

// The trampoline (copied to TRAMPOLINE, so kept in read-only data) and the image's 64-bit
// AP entry. AT&T syntax: the 16-bit and 32-bit parts hand-encode their far jumps, whose
// targets are TRAMPOLINE-relative constants. CR0 leaves INIT with caching disabled (CD, NW):
// both are cleared with PE. The GDT's descriptors have their accessed bits set, so loading
// them never writes the (read-only mapped) page.
core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_tramp_start
ap_tramp_start:
    .code16
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (ap_gdt_ptr - ap_tramp_start)
    movl %cr0, %eax
    andl $0x9fffffff, %eax
    orl $1, %eax
    movl %eax, %cr0
    .byte 0x66, 0xea
    .long {t} + (ap_pm32 - ap_tramp_start)
    .word 0x08

    .code32
ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl ({t} + {params} + {pml4}), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl ({t} + {params} + {efer}), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    .byte 0xea
    .long {t} + (ap_lm64 - ap_tramp_start)
    .word 0x18

    .code64
ap_lm64:
    movl ${t} + {params}, %edi
    movabsq $ferrovisor_ap_entry64, %rax
    jmpq *%rax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00af9b000000ffff
ap_gdt_ptr:
    .word ap_gdt_ptr - ap_gdt - 1
    .long {t} + (ap_gdt - ap_tramp_start)
    .global ap_tramp_end
ap_tramp_end:

    .text
    .global ferrovisor_ap_entry64
ferrovisor_ap_entry64:
    movq {cr3}(%rdi), %rax
    movq {stack}(%rdi), %rsp
    movq {index}(%rdi), %rdi
    movq %rax, %cr3
    xorl %ebp, %ebp
    callq ferrovisor_ap_main
1:
    cli
    hlt
    jmp 1b
    "#,
    t = const TRAMPOLINE,
    params = const PARAMS,
    pml4 = const P_PML4,
    efer = const P_EFER,
    cr3 = const P_CR3,
    stack = const P_STACK,
    index = const P_INDEX,
    options(att_syntax)
);
