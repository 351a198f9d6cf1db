//! `hlt-wake`: a vCPU halted with `sti; hlt` is woken by its one-shot timer, delivered
//! the way Xen delivers it to a PVH guest: `VIRQ_TIMER` bound to an event channel, the
//! port set pending in shared_info, and the global callback vector injected.
//!
//! Steps:
//! 1. map shared_info (`XENMEM_add_to_physmap`, `XENMAPSPACE_shared_info`) at a page of the
//!    guest's `.bss` and read Xen system time from the pvclock in `vcpu_info[0].time`;
//! 2. bind `VIRQ_TIMER` on vCPU 0 (`EVTCHNOP_bind_virq`) and register the callback vector
//!    (`HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ, 2 << 56 | 0xf3)`);
//! 3. `set_timer_op(now + 20 ms)`, `sti; hlt`; check that 20 ms (less [`TOLERANCE_NS`]) to
//!    2 s of system time passed, that the callback vector was taken and that the timer's
//!    port is pending; then acknowledge the event as a kernel would;
//! 4. `set_timer_op(1)` (a deadline in the past fires at once), `sti; hlt`, and check it
//!    woke in under 2 s through another event;
//! 5. `set_timer_op(0)` (cancel) must succeed.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, hypercall2, set_timer_op};
use guest_rt::xen_abi::xen::{HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_HVM_OP};
use guest_rt::{arch, ensure, fail, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The timer delay of step 2.
const DELAY_NS: u64 = 20_000_000;
/// Upper bound for any wakeup.
const MAX_NS: u64 = 2_000_000_000;
/// Slack for the guest's pvclock reading and the hypervisor's clock disagreeing by rounding.
const TOLERANCE_NS: u64 = 50_000;

fn now() -> Result<u64, guest_rt::Fail> {
    match pvclock::now_ns() {
        Some(t) => Ok(t),
        None => Err(guest_rt::Fail::new(format_args!(
            "pvclock unreadable (version stuck odd or shared_info not mapped)"
        ))),
    }
}

/// Halts once with interrupts enabled and returns the system time after waking.
fn halt_once() -> Result<u64, guest_rt::Fail> {
    arch::sti_hlt_cli();
    now()
}

/// The callback vector Linux uses.
const CALLBACK_VECTOR: u64 = 0xf3;
/// Offsets in shared_info: `evtchn_pending[]`, and vCPU 0's `evtchn_pending_sel`.
const EVTCHN_PENDING: usize = 2048;
const PENDING_SEL: usize = 8;

/// Binds VIRQ_TIMER on vCPU 0; returns the port.
fn bind_timer_virq() -> Result<u32, guest_rt::Fail> {
    // struct evtchn_bind_virq { virq, vcpu, port (out) }
    let mut arg = [0u32, 0, 0];
    // SAFETY: `arg` is a live, writable evtchn_bind_virq the hypervisor fills in.
    let rc = unsafe { hypercall2(HYPERVISOR_EVENT_CHANNEL_OP, 1, arg.as_mut_ptr() as u64) };
    if rc != 0 {
        return Err(guest_rt::Fail::new(format_args!(
            "EVTCHNOP_bind_virq(VIRQ_TIMER) returned {}",
            describe(rc)
        )));
    }
    Ok(arg[2])
}

/// Registers the global callback vector (HVM_PARAM_CALLBACK_IRQ, type 2 = vector).
fn set_callback_vector() -> Result<(), guest_rt::Fail> {
    // struct xen_hvm_param { u16 domid = DOMID_SELF, u16 pad, u32 index = 0, u64 value }
    let mut arg = [0u64; 2];
    arg[0] = 0x7ff0;
    arg[1] = (2 << 56) | CALLBACK_VECTOR;
    // SAFETY: `arg` is a live xen_hvm_param.
    let rc = unsafe { hypercall2(HYPERVISOR_HVM_OP, 0, arg.as_mut_ptr() as u64) };
    if rc != 0 {
        return Err(guest_rt::Fail::new(format_args!(
            "HVMOP_set_param(CALLBACK_IRQ) returned {}",
            describe(rc)
        )));
    }
    Ok(())
}

fn shared_word(off: usize) -> &'static core::sync::atomic::AtomicU64 {
    let base = pvclock::shared_info_gpa() as usize;
    // SAFETY: shared_info is mapped at this identity-mapped, page-aligned GPA for the rest
    // of the run; `off` is an 8-aligned offset inside it.
    unsafe { &*((base + off) as *const core::sync::atomic::AtomicU64) }
}

/// Whether `port` is pending; then acknowledges it as a kernel's upcall handler would:
/// clear upcall_pending, the selector and the port's pending bit.
fn take_event(port: u32) -> bool {
    use core::sync::atomic::Ordering;
    let word = shared_word(EVTCHN_PENDING + (port as usize / 64) * 8);
    let pending = word.load(Ordering::SeqCst) & (1 << (port % 64)) != 0;
    // SAFETY: byte 0 of vcpu_info[0] (evtchn_upcall_pending) in the mapped shared_info.
    unsafe { core::ptr::write_volatile(pvclock::shared_info_gpa() as *mut u8, 0) };
    shared_word(PENDING_SEL).store(0, Ordering::SeqCst);
    word.fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
    pending
}

fn test_main(_si: &StartInfo) -> TestResult {
    let gpa = pvclock::shared_info_gpa();
    let rc = pvclock::map_shared_info();
    ensure!(
        rc == 0,
        "XENMEM_add_to_physmap(shared_info, gpfn {:#x}) returned {}",
        gpa >> 12,
        describe(rc)
    );
    let Some(t) = pvclock::time_info() else {
        fail!("vcpu_info[0].time version stays odd");
    };
    println!(
        "shared_info at {gpa:#x}: pvclock version {} system_time {} tsc_timestamp {} mul {:#x} shift {} flags {:#x} (TSC {} kHz)",
        t.version,
        t.system_time,
        t.tsc_timestamp,
        t.tsc_to_system_mul,
        t.tsc_shift,
        t.flags,
        pvclock::tsc_khz(&t)
    );
    ensure!(
        t.tsc_to_system_mul != 0,
        "pvclock tsc_to_system_mul is 0 (time info not initialised)"
    );

    let port = bind_timer_virq()?;
    set_callback_vector()?;
    println!("VIRQ_TIMER bound to port {port}, callback vector {CALLBACK_VECTOR:#x}");

    // Step 3: a timer 20 ms ahead.
    let before = interrupts();
    let start = now()?;
    let deadline = start + DELAY_NS;
    let rc = set_timer_op(deadline);
    ensure!(
        rc == 0,
        "set_timer_op({deadline}) returned {}",
        describe(rc)
    );
    let woke = halt_once()?;
    let elapsed = woke.saturating_sub(start);
    println!(
        "timer +20 ms: woke after {} us ({} interrupts taken)",
        elapsed / 1000,
        interrupts()
    );
    ensure!(
        elapsed + TOLERANCE_NS >= DELAY_NS,
        "woke after {elapsed} ns, before the 20 ms timer was due"
    );
    ensure!(elapsed < MAX_NS, "woke after {elapsed} ns, expected < 2 s");
    ensure!(
        interrupts() > before,
        "woke without taking the callback vector"
    );
    ensure!(
        take_event(port),
        "woke but the VIRQ_TIMER port {port} is not pending"
    );

    // Step 4: a deadline in the past fires at once.
    let before = interrupts();
    let start = now()?;
    let rc = set_timer_op(1);
    ensure!(rc == 0, "set_timer_op(1) returned {}", describe(rc));
    let woke = halt_once()?;
    let elapsed = woke.saturating_sub(start);
    println!("timer in the past: woke after {} us", elapsed / 1000);
    ensure!(
        elapsed < MAX_NS,
        "past deadline: woke after {elapsed} ns, expected < 2 s"
    );
    ensure!(interrupts() > before, "past deadline: no callback taken");
    ensure!(take_event(port), "past deadline: port {port} not pending");

    // Step 5: cancel.
    let rc = set_timer_op(0);
    ensure!(
        rc == 0,
        "set_timer_op(0) (cancel) returned {}",
        describe(rc)
    );
    Ok(())
}

fn interrupts() -> u64 {
    #[cfg(target_os = "none")]
    {
        guest_rt::idt::interrupt_count()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}
