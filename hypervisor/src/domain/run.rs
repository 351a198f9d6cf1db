//! Running a domain: the exit policy shared by every backend.
//!
//! Each [`Exit`] is handled here the same way whichever backend produced it. Anything a
//! guest can do either gets emulated, answered with the fault real hardware would raise, or
//! ends the domain with a diagnostic; none of it can stop the hypervisor.

use super::{Domain, DomainEnd};
use crate::hvm::cpuid::{guest_cpuid, CpuidContext, CpuidResult};
use crate::hvm::msr::{self, MsrRead, MsrWrite};
use crate::hvm::vlapic::{ApicEffect, Vlapic};
use crate::hvm::{Backend, Event, Exit, IoAccess, Vcpu};
use crate::time;
use crate::xen::{self, Call, Reply};
use log::{debug, warn};

/// General-protection fault, injected for refused MSR and XCR accesses.
const GP: Event = Event::Exception {
    vector: 13,
    error_code: Some(0),
};
/// Port where guests may write debug bytes (Bochs/QEMU convention).
const DEBUG_PORT: u16 = 0xe9;
/// Most bytes one `rep outsb` to the debug port may emit per exit.
const REP_OUT_MAX: u64 = 4096;

enum Flow {
    Continue,
    End(DomainEnd),
}

/// Runs `dom` until it shuts down, crashes or can never run again.
pub fn run<B: Backend>(dom: &mut Domain<B>) -> DomainEnd {
    dom.vcpu.load();
    loop {
        poll_events(dom);
        deliver_interrupt(dom);
        let exit = dom.vcpu.run();
        dom.exits += 1;
        dom.exits_by_kind[exit.kind()] += 1;
        if let Flow::End(end) = handle(dom, exit) {
            dom.vcpu.put();
            dom.end_console_line();
            return end;
        }
    }
}

/// Raises what became due while the guest ran or waited: expired timers (VIRQ_TIMER)
/// and console input (VIRQ_CONSOLE).
fn poll_events<B: Backend>(dom: &mut Domain<B>) {
    let now = time::now().1;
    if dom.timer.fire_due(now) {
        xen::events::timer_fired(dom);
    }
    xen::console::poll_input(dom);
}

/// The interrupt the guest should take next: the event-channel callback vector while
/// `evtchn_upcall_pending` is set (injected directly, bypassing the LAPIC, as Xen's
/// global callback does), else the highest deliverable LAPIC vector.
fn pending_interrupt<B: Backend>(dom: &Domain<B>) -> Option<(u8, bool)> {
    if let Some(v) = dom.callback_vector {
        if xen::shared_info::upcall_pending(dom) {
            return Some((v, false));
        }
    }
    dom.vlapic.next_interrupt().map(|v| (v, true))
}

/// Injects the pending interrupt if the guest can take it now, else asks for an exit
/// as soon as it can.
fn deliver_interrupt<B: Backend>(dom: &mut Domain<B>) {
    let Some((vector, via_lapic)) = pending_interrupt(dom) else {
        dom.vcpu.request_interrupt_window(false);
        return;
    };
    if dom.vcpu.interrupts_enabled() {
        if via_lapic {
            dom.vlapic.ack(vector);
        }
        dom.vcpu.inject(Event::Interrupt(vector));
        dom.vcpu.request_interrupt_window(false);
    } else {
        dom.vcpu.request_interrupt_window(true);
    }
}

fn handle<B: Backend>(dom: &mut Domain<B>, exit: Exit) -> Flow {
    match exit {
        Exit::Cpuid => {
            cpuid(dom);
            dom.vcpu.skip_instruction();
        }
        Exit::Hlt => {
            dom.vcpu.skip_instruction();
            // HLT with interrupts off can never end: the vCPU is down. When every vCPU
            // is down the domain has powered itself off (Linux's PVH poweroff path).
            if dom.vcpu.control_state().rflags & (1 << 9) == 0 {
                log::info!(
                    "domain {}: all vCPUs halted with interrupts disabled: powering off",
                    dom.id
                );
                return Flow::End(DomainEnd::Shutdown(0));
            }
            return block(dom, "HLT");
        }
        Exit::Hypercall => return hypercall(dom),
        Exit::Io(io) => {
            port_io(dom, io);
            dom.vcpu.skip_instruction();
        }
        Exit::Msr { write } => {
            if msr_access(dom, write) {
                dom.vcpu.skip_instruction();
            } else {
                dom.vcpu.inject(GP);
            }
        }
        Exit::Xsetbv => {
            let r = *dom.vcpu.regs();
            let value = (r.rdx << 32) | (r.rax & 0xffff_ffff);
            if r.rcx & 0xffff_ffff != 0 || dom.vcpu.set_xcr0(value).is_err() {
                dom.vcpu.inject(GP);
            } else {
                dom.vcpu.skip_instruction();
            }
        }
        Exit::CacheFlush => dom.vcpu.skip_instruction(),
        Exit::ExternalInterrupt | Exit::InterruptWindow | Exit::SliceExpired => {}
        Exit::NestedPageFault { gpa, access, gla } => {
            let at = gla.map_or_else(|| "".into(), |g| alloc::format!(" (linear {g:#x})"));
            return crash(
                dom,
                format_args!("{access} access to guest-physical {gpa:#x}{at} outside its memory"),
            );
        }
        Exit::NestedPageMisconfig { gpa } => {
            return crash(
                dom,
                format_args!("nested page table misconfigured at {gpa:#x} (hypervisor bug)"),
            );
        }
        Exit::TripleFault => return crash(dom, format_args!("triple fault")),
        Exit::EntryFailed { reason, detail } => {
            return crash(
                dom,
                format_args!("VM entry failed: {reason} (detail {detail:#x})"),
            );
        }
        Exit::Unhandled {
            code,
            qualification,
        } => {
            return crash(
                dom,
                format_args!("unhandled exit {code:#x} (qualification {qualification:#x})"),
            );
        }
    }
    Flow::Continue
}

fn cpuid<B: Backend>(dom: &mut Domain<B>) {
    let regs = dom.vcpu.regs();
    let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
    let host = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    let host = CpuidResult {
        eax: host.eax,
        ebx: host.ebx,
        ecx: host.ecx,
        edx: host.edx,
    };
    let ctx = CpuidContext {
        vcpu_id: 0,
        domid: dom.id,
        vcpus: 1,
        cr4: dom.vcpu.control_state().cr4,
    };
    let mut r = guest_cpuid(leaf, subleaf, host, &ctx);
    if leaf == 0xd && subleaf == 0 {
        // EBX: size for the XCR0 in force (the guest's); ECX: for everything supported.
        let component = |i| {
            let c = core::arch::x86_64::__cpuid_count(0xd, i);
            (c.eax, c.ebx)
        };
        let xcr0 = dom.vcpu.xcr0();
        let supported = u64::from(r.edx) << 32 | u64::from(r.eax);
        r.ebx = crate::hvm::cpuid::xsave_size(xcr0, component);
        r.ecx = crate::hvm::cpuid::xsave_size(supported, component);
    }
    let regs = dom.vcpu.regs();
    regs.rax = u64::from(r.eax);
    regs.rbx = u64::from(r.ebx);
    regs.rcx = u64::from(r.ecx);
    regs.rdx = u64::from(r.edx);
}

fn hypercall<B: Backend>(dom: &mut Domain<B>) -> Flow {
    let r = *dom.vcpu.regs();
    let call = Call {
        nr: r.rax,
        args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8],
    };
    let (rax, reply) = xen::dispatch(dom, call);
    dom.vcpu.regs().rax = rax;
    dom.vcpu.skip_instruction();
    match reply {
        Reply::Value(_) => Flow::Continue,
        Reply::Block => block(dom, "SCHEDOP_block"),
        Reply::Poll { timeout } => poll_wait(dom, timeout),
        Reply::Shutdown(reason) => Flow::End(DomainEnd::Shutdown(reason)),
    }
}

/// SCHEDOP_poll: wait until a polled port is set pending (the event-channel table then
/// drops the vCPU from its pollers), the timeout passes, or an interrupt is deliverable.
fn poll_wait<B: Backend>(dom: &mut Domain<B>, timeout: u64) -> Flow {
    loop {
        poll_events(dom);
        let interrupt = pending_interrupt(dom).is_some() && dom.vcpu.interrupts_enabled();
        let timed_out = timeout != 0 && time::now().1 >= timeout;
        if !dom.evtchn.is_polling(0) || interrupt || timed_out {
            dom.evtchn.poll_cancel(0);
            return Flow::Continue;
        }
        if dom.timer.next_expiry().is_none() && timeout == 0 && !dom.privileged {
            dom.evtchn.poll_cancel(0);
            log::warn!(
                "domain {}: vCPU 0 polls with no timer, timeout or event source",
                dom.id
            );
            return Flow::End(DomainEnd::Deadlocked);
        }
        core::hint::spin_loop();
    }
}

/// The vCPU waits until something can wake it: an interrupt already pending, a timer,
/// or console input (dom0). With none of these possible, nothing ever will.
fn block<B: Backend>(dom: &mut Domain<B>, why: &str) -> Flow {
    loop {
        if pending_interrupt(dom).is_some() {
            return Flow::Continue;
        }
        let Some(deadline) = dom.timer.next_expiry() else {
            if !dom.privileged {
                log::warn!(
                    "domain {}: vCPU 0 blocked in {why} with no timer and no event source",
                    dom.id
                );
                return Flow::End(DomainEnd::Deadlocked);
            }
            // dom0 can still be woken by console input.
            if xen::console::poll_input(dom) {
                continue;
            }
            core::hint::spin_loop();
            continue;
        };
        if time::now().1 >= deadline {
            poll_events(dom);
            xen::shared_info::update_time(dom);
            // A timer with no event channel bound to it still ends the wait.
            if pending_interrupt(dom).is_none() {
                return Flow::Continue;
            }
            continue;
        }
        if xen::console::poll_input(dom) {
            continue;
        }
        core::hint::spin_loop();
    }
}

fn port_io<B: Backend>(dom: &mut Domain<B>, io: IoAccess) {
    if io.write && io.port == DEBUG_PORT {
        if io.string {
            let regs = *dom.vcpu.regs();
            let count = if io.rep {
                (regs.rcx & 0xffff_ffff).min(REP_OUT_MAX)
            } else {
                1
            };
            let mut buf = [0u8; REP_OUT_MAX as usize];
            let n = count as usize;
            if xen::guest_access::copy_from_guest(dom, regs.rsi, &mut buf[..n]).is_ok() {
                dom.console_write(&buf[..n]);
            }
            let regs = dom.vcpu.regs();
            regs.rsi = regs.rsi.wrapping_add(count);
            if io.rep {
                regs.rcx -= count;
            }
        } else {
            let b = dom.vcpu.regs().rax as u8;
            dom.console_write(&[b]);
        }
        return;
    }
    if !io.write {
        // Reads from absent devices float high, as on real buses.
        let mask = match io.size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let regs = dom.vcpu.regs();
        regs.rax |= mask;
        if io.size == 4 {
            regs.rax &= 0xffff_ffff;
        }
    }
    debug!(
        "d{}: port {:#x} {} ignored",
        dom.id,
        io.port,
        if io.write { "write" } else { "read" }
    );
}

/// Emulates RDMSR/WRMSR; false means the guest gets #GP.
fn msr_access<B: Backend>(dom: &mut Domain<B>, write: bool) -> bool {
    let regs = *dom.vcpu.regs();
    let index = regs.rcx as u32;
    if Vlapic::owns(index) {
        return x2apic_access(
            dom,
            index,
            write,
            (regs.rdx << 32) | (regs.rax & 0xffff_ffff),
        );
    }
    if !write {
        let value = match dom.vcpu.read_msr(index) {
            Some(v) => v,
            None => match index {
                0x10 => crate::arch::x86::tsc::rdtsc(), // IA32_TSC: guests see the host TSC
                _ => match msr::read(index) {
                    MsrRead::Value(v) => v,
                    MsrRead::Fault => {
                        debug!("d{}: rdmsr {index:#x} refused", dom.id);
                        return false;
                    }
                },
            },
        };
        let regs = dom.vcpu.regs();
        regs.rax = value & 0xffff_ffff;
        regs.rdx = value >> 32;
        return true;
    }
    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
    match dom.vcpu.write_msr(index, value) {
        Ok(true) => return true,
        Err(()) => return false,
        Ok(false) => {}
    }
    match msr::write(index, value) {
        MsrWrite::Done => true,
        MsrWrite::HypercallPage { gpa } => {
            let amd = crate::arch::x86::cpu::is_amd();
            if dom.mem.write(gpa, &msr::hypercall_page(amd)).is_err() {
                warn!("d{}: hypercall page at {gpa:#x} is not guest RAM", dom.id);
                return false;
            }
            true
        }
        MsrWrite::Fault => {
            debug!("d{}: wrmsr {index:#x} <- {value:#x} refused", dom.id);
            false
        }
    }
}

/// An x2APIC register access; false means #GP.
fn x2apic_access<B: Backend>(dom: &mut Domain<B>, index: u32, write: bool, value: u64) -> bool {
    if !write {
        let Some(v) = dom.vlapic.read(index) else {
            return false;
        };
        let regs = dom.vcpu.regs();
        regs.rax = v & 0xffff_ffff;
        regs.rdx = v >> 32;
        return true;
    }
    match dom.vlapic.write(index, value) {
        Ok(ApicEffect::None) => true,
        Ok(effect) => {
            // One vCPU per domain: IPIs to others have no target.
            debug!("d{}: APIC {effect:?} has no target vCPU", dom.id);
            true
        }
        Err(()) => false,
    }
}

/// Ends the domain with a diagnostic: what happened, where, and the register state.
fn crash<B: Backend>(dom: &mut Domain<B>, what: core::fmt::Arguments<'_>) -> Flow {
    dom.end_console_line();
    let s = dom.vcpu.control_state();
    let r = *dom.vcpu.regs();
    log::error!("domain {} crashed: {what}", dom.id);
    log::error!(
        "  RIP {:#018x}  RSP {:#018x}  RFLAGS {:#x}  CS {:#x} CPL {}",
        s.rip,
        s.rsp,
        s.rflags,
        s.cs_selector,
        s.cpl
    );
    log::error!(
        "  CR0 {:#x}  CR2 {:#x}  CR3 {:#x}  CR4 {:#x}  EFER {:#x}",
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.efer
    );
    log::error!(
        "  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}",
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx
    );
    log::error!(
        "  RSI {:#018x}  RDI {:#018x}  RBP {:#018x}  R8  {:#018x}",
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8
    );
    log::error!(
        "  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}",
        r.r9,
        r.r10,
        r.r11,
        r.r12
    );
    log::error!(
        "  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}",
        r.r13,
        r.r14,
        r.r15
    );
    let mut fetched = [0u8; 15];
    let (source, insn): (_, &[u8]) = match dom.vcpu.exit_instruction_bytes() {
        Some((b, n)) => {
            fetched = b;
            ("captured by the CPU", &fetched[..n])
        }
        // Fallback: fetch from guest memory through the guest's own page tables. Flat
        // code segments (PVH) make RIP the linear address.
        None => match xen::guest_access::copy_from_guest(dom, s.rip, &mut fetched) {
            Ok(()) => ("read from guest memory", &fetched),
            Err(_) => ("not readable", &[]),
        },
    };
    let mut bytes = arrayvec::ArrayString::<64>::new();
    for x in insn {
        let _ = core::fmt::Write::write_fmt(&mut bytes, format_args!("{x:02x} "));
    }
    log::error!(
        "  instruction bytes at RIP ({source}): {}",
        bytes.trim_end()
    );
    Flow::End(DomainEnd::Crashed)
}
