//! Running a vCPU: the exit policy shared by every backend.
//!
//! Each [`Exit`] is handled here the same way whichever backend produced it. Anything a
//! guest can do either gets emulated, answered with the fault real hardware would raise, or
//! ends the domain with a diagnostic; none of it can stop the hypervisor. [`run_vcpu`] runs
//! one vCPU for one slice and says why it stopped; the scheduler loop
//! ([`crate::schedule`]) decides what runs next.

use super::{guest_debug, vflags, Domain, DomainEnd, Vcpu, VcpuCtx};
use crate::hvm::cpuid::{guest_cpuid, CpuidContext, CpuidResult};
use crate::hvm::msr::{self, MsrRead, MsrWrite};
use crate::hvm::vlapic::{ApicEffect, LogicalId, Vlapic};
use crate::hvm::{Backend, Event, Exit, IoAccess, Vcpu as _};
use crate::schedule::Hv;
use crate::time;
use crate::xen::{self, Call, Cx, Reply};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use log::{debug, warn};

/// General-protection fault, injected for refused MSR and XCR accesses and for cache
/// flushes outside ring 0.
const GP: Event = Event::Exception {
    vector: 13,
    error_code: Some(0),
};
/// Port where guests may write debug bytes (Bochs/QEMU convention).
const DEBUG_PORT: u16 = 0xe9;
/// Most bytes one `rep outsb` to the debug port may emit per exit.
const REP_OUT_MAX: u64 = 4096;

/// Why [`run_vcpu`] gave the CPU back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The slice ended or the scheduler asked for the CPU; still runnable.
    Preempted,
    /// SCHEDOP_yield: still runnable, behind its equals.
    Yield,
    /// Blocked (the BLOCKED flag is set): waits for an event, a timer or an IPI.
    Blocked,
    /// Went offline (HLT with interrupts off) while other vCPUs of the domain still run.
    Down,
    /// The domain ended.
    End(DomainEnd),
}

enum Flow {
    Continue,
    Out(Outcome),
}

/// Runs one vCPU until its slice ends (`slice_end`, system time), it blocks, yields or its
/// domain ends. The caller owns `v` (taken out of the vCPU's parking place) and has loaded
/// it on this CPU.
pub fn run_vcpu<B: Backend>(
    hv: &'static Hv<B>,
    dom: &Arc<Domain<B>>,
    vcpu: &Vcpu<B>,
    v: &mut VcpuCtx<B>,
    slice_end: u64,
) -> Outcome {
    let mut cx = Cx { hv, dom, vcpu, v };
    let sipi = vcpu.sipi.swap(0, Ordering::SeqCst);
    if sipi & super::SIPI_PENDING != 0 {
        // An AP's start-up: the architectural state after INIT and this SIPI.
        cx.v.hw.reset_to_sipi(sipi as u8);
        vcpu.clear_flag(super::vflags::NMI);
        cx.v.vlapic = cx.v.vlapic.after_init();
        cx.v.timer = super::VcpuTimer::default();
        debug!(
            "d{}v{}: started by SIPI at {:#x}",
            dom.id,
            vcpu.id,
            u32::from(sipi as u8) << 12
        );
    }
    // Back from SCHEDOP_poll, if a polled port, an upcall or the timeout woke it.
    end_poll(&mut cx);
    loop {
        // A cross-CPU call (a TLB shootdown's) made this CPU leave guest mode: answer it.
        crate::arch::x86::smp::serve_calls();
        super::devirq::poll(hv);
        if hv.should_preempt(slice_end) {
            return Outcome::Preempted;
        }
        prepare_entry(&mut cx, slice_end);
        crate::sync::assert_none_held();
        let injected = cx.v.hw.trace_state().injecting;
        let exit = cx.v.hw.run();
        cx.v.trace.record(super::TracedExit {
            exit,
            injected,
            state: cx.v.hw.trace_state(),
        });
        cx.v.exits += 1;
        cx.v.exits_by_kind[exit.kind()] += 1;
        crate::schedule::stats::exit(dom.is_control(), exit.kind());
        if let Flow::Out(outcome) = handle(&mut cx, exit) {
            return outcome;
        }
    }
}

/// Brings the vCPU up to date before it enters the guest: expired timers (VIRQ_TIMER),
/// IPIs from other vCPUs, a pending nested-TLB flush, the next interrupt, and the host
/// timer that ends the slice.
fn prepare_entry<B: Backend>(cx: &mut Cx<'_, B>, slice_end: u64) {
    let now = time::now().1;
    if cx.v.timer.fire_due(now) {
        xen::events::timer_fired(cx.hv, cx.dom, cx.vcpu.id);
        cx.hv.timer_changed(cx.vcpu, &cx.v.timer);
    }
    cx.v.vlapic.advance(now);
    sync_apic_timer(cx);
    for (i, w) in cx.vcpu.ipis.iter().enumerate() {
        let mut bits = w.swap(0, Ordering::SeqCst);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            cx.v.vlapic.raise((i as u32 * 32 + b) as u8);
        }
    }
    let gen = cx.dom.flush_gen.load(Ordering::SeqCst);
    if cx.v.flush_gen != gen {
        cx.v.flush_gen = gen;
        cx.v.hw.flush_nested_tlb();
    }
    deliver_nmi(cx);
    deliver_interrupt(cx);
    let slice_end = cx.hv.run_until(slice_end);
    let wake =
        cx.v.timer
            .next_expiry()
            .map_or(slice_end, |t| t.min(slice_end));
    crate::schedule::arm_host_timer(wake);
    // Also the backend's own slice timer where there is one (the VMX preemption timer):
    // it ends the guest's run whatever the guest does with its interrupt flag (Bochs 2.7
    // lets a guest that entered with IF clear hold off external-interrupt exits).
    cx.v.hw
        .set_slice_deadline(Some(crate::schedule::tsc_at(wake)));
}

/// The interrupt the guest should take next: the event-channel callback vector while
/// `evtchn_upcall_pending` is set (injected directly, bypassing the LAPIC, as Xen's
/// global callback does), else the highest deliverable LAPIC vector.
fn pending_interrupt<B: Backend>(cx: &Cx<'_, B>) -> Option<(u8, bool)> {
    {
        let st = cx.dom.st.lock();
        let per_vcpu = st.upcall_vector[cx.vcpu.id as usize] != 0;
        if let (Some(v), false) = (st.callback_vector, per_vcpu) {
            if xen::shared_info::upcall_pending(&cx.dom.mem, &st, cx.vcpu.id) {
                return Some((v, false));
            }
        }
    }
    cx.v.vlapic.next_interrupt().map(|v| (v, true))
}

/// Injects a pending NMI if the guest can take one now (not still in its handler of the
/// last), else asks for an exit as soon as it can. NMIs go before interrupts.
fn deliver_nmi<B: Backend>(cx: &mut Cx<'_, B>) {
    if !cx.vcpu.has(vflags::NMI) {
        return;
    }
    if cx.v.hw.nmi_allowed() {
        cx.vcpu.clear_flag(vflags::NMI);
        cx.v.hw.inject(Event::Nmi);
        cx.v.hw.request_nmi_window(false);
    } else {
        cx.v.hw.request_nmi_window(true);
    }
}

/// Injects the pending interrupt if the guest can take it now, else asks for an exit
/// as soon as it can.
fn deliver_interrupt<B: Backend>(cx: &mut Cx<'_, B>) {
    let Some((vector, via_lapic)) = pending_interrupt(cx) else {
        cx.v.hw.request_interrupt_window(false);
        return;
    };
    if cx.v.hw.interrupts_enabled() {
        if via_lapic {
            cx.v.vlapic.ack(vector);
        }
        cx.v.hw.inject(Event::Interrupt(vector));
        cx.v.hw.request_interrupt_window(false);
    } else {
        cx.v.hw.request_interrupt_window(true);
    }
}

fn handle<B: Backend>(cx: &mut Cx<'_, B>, exit: Exit) -> Flow {
    match exit {
        Exit::Cpuid => {
            cpuid(cx);
            cx.v.hw.skip_instruction();
        }
        Exit::Hlt => {
            cx.v.hw.skip_instruction();
            // HLT with interrupts off can never end: the vCPU is down. When every vCPU
            // is down the domain has powered itself off (Linux's PVH poweroff path).
            if cx.v.hw.control_state().rflags & (1 << 9) == 0 {
                cx.vcpu.set_flag(vflags::DOWN);
                if cx.dom.vcpus.iter().all(|v| v.has(vflags::DOWN)) {
                    cx.dom.st.lock().end_console_line(cx.dom.id);
                    log::info!(
                        "domain {}: all vCPUs halted with interrupts disabled: powering off",
                        cx.dom.id
                    );
                    return Flow::Out(Outcome::End(DomainEnd::Shutdown(0)));
                }
                return Flow::Out(Outcome::Down);
            }
            return block(cx, "HLT");
        }
        Exit::Hypercall => return hypercall(cx),
        Exit::Io(io) if io.string => match string_io(cx, io) {
            Ok(true) => cx.v.hw.skip_instruction(),
            Ok(false) => {}
            Err(what) => return crash(cx, format_args!("{what}")),
        },
        Exit::Io(io) => {
            port_io(cx, io);
            cx.v.hw.skip_instruction();
        }
        Exit::Msr { write } => {
            if msr_access(cx, write) {
                cx.v.hw.skip_instruction();
            } else {
                cx.v.hw.inject(GP);
            }
        }
        Exit::Xsetbv => {
            let r = *cx.v.hw.regs();
            let value = (r.rdx << 32) | (r.rax & 0xffff_ffff);
            if r.rcx & 0xffff_ffff != 0 || cx.v.hw.set_xcr0(value).is_err() {
                cx.v.hw.inject(GP);
            } else {
                cx.v.hw.skip_instruction();
            }
        }
        // INVD and WBINVD are privileged: the CPU checks CPL before the intercept, but an
        // emulator may not (QEMU 10 TCG lets ring 3 reach the WBINVD intercept), so the
        // check is made here too.
        Exit::CacheFlush if cx.v.hw.control_state().cpl != 0 => cx.v.hw.inject(GP),
        Exit::CacheFlush => cx.v.hw.skip_instruction(),
        Exit::ExternalInterrupt | Exit::InterruptWindow | Exit::NmiWindow | Exit::SliceExpired => {}
        Exit::NestedPageFault { gpa, access, gla } => {
            use super::mmio::Emulated;
            match super::mmio::on_nested_page_fault(cx, gpa, access) {
                Some(Emulated::Done) => return Flow::Continue,
                Some(Emulated::Inject(event)) => {
                    cx.v.hw.inject(event);
                    return Flow::Continue;
                }
                Some(Emulated::Crash(what)) => return crash(cx, format_args!("{what}")),
                None => {}
            }
            // With several CPUs the entry may have changed since the fault (a grant mapped
            // or a page populated by another vCPU): if it allows the access now, the
            // guest retries it (after dropping whatever this CPU cached of the old entry).
            if cx
                .dom
                .mem
                .permits(gpa, access.read, access.write, access.execute)
            {
                cx.v.hw.flush_nested_tlb();
                return Flow::Continue;
            }
            let at = gla.map_or_else(|| "".into(), |g| alloc::format!(" (linear {g:#x})"));
            let what = match cx.dom.mem.p2m_type(gpa) {
                Some(t) => alloc::format!("not permitted by its p2m ({t:?} page)"),
                None => "outside its memory".into(),
            };
            return crash(
                cx,
                format_args!("{access} access to guest-physical {gpa:#x}{at} {what}"),
            );
        }
        Exit::NestedPageMisconfig { gpa } => {
            return crash(
                cx,
                format_args!("nested page table misconfigured at {gpa:#x} (hypervisor bug)"),
            );
        }
        Exit::TripleFault => return crash(cx, format_args!("triple fault")),
        Exit::EntryFailed { reason, detail } => {
            return crash(
                cx,
                format_args!("VM entry failed: {reason} (detail {detail:#x})"),
            );
        }
        Exit::Unhandled {
            code,
            qualification,
        } => {
            return crash(
                cx,
                format_args!("unhandled exit {code:#x} (qualification {qualification:#x})"),
            );
        }
    }
    Flow::Continue
}

fn cpuid<B: Backend>(cx: &mut Cx<'_, B>) {
    let regs = cx.v.hw.regs();
    let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
    let host = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    let host = CpuidResult {
        eax: host.eax,
        ebx: host.ebx,
        ecx: host.ecx,
        edx: host.edx,
    };
    let ctx = CpuidContext {
        vcpu_id: cx.vcpu.id,
        domid: cx.dom.id,
        vcpus: cx.dom.vcpus.len() as u32,
        cr4: cx.v.hw.control_state().cr4,
        fast_strings: crate::arch::x86::strings::fast(),
    };
    let mut r = guest_cpuid(leaf, subleaf, host, &ctx);
    if leaf == 0xd && subleaf == 0 {
        // EBX: size for the XCR0 in force (the guest's); ECX: for everything supported.
        let component = |i| {
            let c = core::arch::x86_64::__cpuid_count(0xd, i);
            (c.eax, c.ebx)
        };
        let xcr0 = cx.v.hw.xcr0();
        let supported = u64::from(r.edx) << 32 | u64::from(r.eax);
        r.ebx = crate::hvm::cpuid::xsave_size(xcr0, component);
        r.ecx = crate::hvm::cpuid::xsave_size(supported, component);
    }
    if leaf == 1 && cx.v.vlapic.mode() == crate::hvm::vlapic::Mode::Disabled {
        // A globally disabled APIC is absent from CPUID (SDM vol. 3, 11.4.3).
        r.edx &= !(1 << 9);
    }
    let regs = cx.v.hw.regs();
    regs.rax = u64::from(r.eax);
    regs.rbx = u64::from(r.ebx);
    regs.rcx = u64::from(r.ecx);
    regs.rdx = u64::from(r.edx);
}

fn hypercall<B: Backend>(cx: &mut Cx<'_, B>) -> Flow {
    let r = *cx.v.hw.regs();
    let call = Call {
        nr: r.rax,
        args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8],
    };
    let (rax, reply) = xen::dispatch(cx, call);
    if reply == Reply::Again {
        // RIP stays on the hypercall instruction and RAX on its number.
        return Flow::Continue;
    }
    cx.v.hw.regs().rax = rax;
    cx.v.hw.skip_instruction();
    match reply {
        Reply::Value(_) | Reply::Again => Flow::Continue,
        Reply::Yield => Flow::Out(Outcome::Yield),
        Reply::Block => block(cx, "SCHEDOP_block"),
        Reply::Poll { timeout } => {
            cx.v.poll_deadline = timeout;
            cx.vcpu.set_flag(vflags::POLLING);
            cx.hv.timer_changed_with(cx.vcpu, &cx.v.timer, timeout);
            let flow = block(cx, "SCHEDOP_poll");
            if matches!(flow, Flow::Continue) {
                end_poll(cx);
            }
            flow
        }
        Reply::Shutdown(reason) => Flow::Out(Outcome::End(DomainEnd::Shutdown(reason))),
        Reply::Down => Flow::Out(Outcome::Down),
    }
}

/// Ends a SCHEDOP_poll, if one is in progress: the vCPU leaves the event-channel table's
/// pollers and its poll timeout stops counting as a timer.
fn end_poll<B: Backend>(cx: &mut Cx<'_, B>) {
    if cx.vcpu.clear_flag(vflags::POLLING) {
        cx.v.poll_deadline = 0;
        cx.dom.st.lock().evtchn.poll_cancel(cx.vcpu.id);
        cx.hv.timer_changed(cx.vcpu, &cx.v.timer);
    }
}

/// Whether something would wake the vCPU at once: a deliverable interrupt, an expired
/// timer or poll timeout, an IPI from another vCPU, or (polling) a deregistration.
fn wakeable<B: Backend>(cx: &Cx<'_, B>) -> bool {
    let now = time::now().1;
    let polling = cx.vcpu.has(vflags::POLLING);
    // A poll with interrupts off is not ended by an upcall already pending (Xen's
    // local_events_need_delivery); only a new kick or a polled port ends it.
    let interrupt = pending_interrupt(cx).is_some() && (!polling || cx.v.hw.interrupts_enabled());
    interrupt
        || cx.vcpu.has(vflags::NMI)
        || cx.vcpu.ipi_queued()
        || cx.v.timer.next_expiry().is_some_and(|t| t <= now)
        || (polling
            && ((cx.v.poll_deadline != 0 && cx.v.poll_deadline <= now)
                || !cx.dom.st.lock().evtchn.is_polling(cx.vcpu.id)))
}

/// The vCPU waits until something can wake it. The BLOCKED flag goes up before the last
/// check, and every waker sets its condition before it tests the flag, so a wake-up
/// cannot fall between the two. A domain that can never be woken ends as deadlocked.
fn block<B: Backend>(cx: &mut Cx<'_, B>, why: &str) -> Flow {
    if wakeable(cx) {
        return Flow::Continue;
    }
    cx.vcpu.set_flag(vflags::BLOCKED);
    if wakeable(cx) {
        cx.vcpu.clear_flag(vflags::BLOCKED);
        return Flow::Continue;
    }
    if deadlocked(cx) {
        cx.vcpu.clear_flag(vflags::BLOCKED);
        cx.dom.st.lock().end_console_line(cx.dom.id);
        warn!(
            "domain {}: vCPU {} blocked in {why} with no timer and no event source",
            cx.dom.id, cx.vcpu.id
        );
        return Flow::Out(Outcome::End(DomainEnd::Deadlocked));
    }
    Flow::Out(Outcome::Blocked)
}

/// Whether nothing can ever wake the domain: not the control domain (console input and
/// domain events reach it), no timer or poll timeout on this vCPU, every other vCPU down
/// or blocked without a timer, and no event channel another domain could signal.
fn deadlocked<B: Backend>(cx: &Cx<'_, B>) -> bool {
    if cx.dom.is_control() || cx.v.timer.next_expiry().is_some() || cx.v.poll_deadline != 0 {
        return false;
    }
    let others_stuck = cx.dom.vcpus.iter().filter(|v| v.id != cx.vcpu.id).all(|v| {
        v.has(vflags::DOWN)
            || (v.has(vflags::BLOCKED) && v.next_timer.load(Ordering::SeqCst) == u64::MAX)
    });
    let reachable = cx.dom.st.lock().evtchn.open_ports().any(|(_, s)| {
        matches!(
            s,
            evtchn::State::Interdomain { .. } | evtchn::State::Unbound { .. }
        )
    });
    others_stuck && !reachable
}

fn port_io<B: Backend>(cx: &mut Cx<'_, B>, io: IoAccess) {
    if crate::hvm::vpci::owns(io.port) && cx.dom.is_control() {
        return crate::hvm::vpci::port_io(cx.dom, io, &mut cx.v.hw.regs().rax);
    }
    if crate::hvm::pit::Pit2::owns(io.port) && io.size == 1 && !io.string {
        let now = crate::hvm::pit::ticks(time::now().1);
        let mut st = cx.dom.st.lock();
        if io.write {
            let value = cx.v.hw.regs().rax as u8;
            st.pit.write(io.port, value, now);
        } else {
            let byte = st.pit.read(io.port, now);
            let regs = cx.v.hw.regs();
            regs.rax = (regs.rax & !0xff) | u64::from(byte);
        }
        return;
    }
    if io.write && io.port == DEBUG_PORT {
        let b = cx.v.hw.regs().rax as u8;
        console_write(cx, &[b]);
        return;
    }
    if !io.write {
        // Reads from absent devices float high, as on real buses.
        let mask = match io.size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let regs = cx.v.hw.regs();
        regs.rax |= mask;
        if io.size == 4 {
            regs.rax &= 0xffff_ffff;
        }
    }
    guest_debug!(
        cx.dom,
        "d{}: port {:#x} {} ignored",
        cx.dom.id,
        io.port,
        if io.write { "write" } else { "read" }
    );
}

/// INS/OUTS. OUTS to the debug port prints the low byte of each element; to any other
/// port the data is dropped. INS from any port stores all ones, as reads from absent
/// devices. RSI/RDI move by the operand size in the direction RFLAGS.DF says, through
/// DS or its override (OUTS) or ES (INS); a REP form does at most `REP_OUT_MAX` bytes per
/// exit and is re-executed until RCX reaches 0. RSI/RDI/RCX are used at the instruction's
/// address size (16, 32 or 64 bits: the code segment's, changed by an address-size prefix,
/// read from the instruction bytes), and written back at that size as hardware does (a
/// 16-bit update keeps bits 63:16, a 32-bit one zero-extends). Returns whether the
/// instruction retired; Err ends the domain (memory the string cannot reach).
fn string_io<B: Backend>(cx: &mut Cx<'_, B>, io: IoAccess) -> Result<bool, alloc::string::String> {
    use crate::hvm::crdecode;
    let s = cx.v.hw.control_state();
    let e = cx.v.hw.emulation_state();
    let long = s.efer & (1 << 10) != 0 && e.cs_long;
    let code = crdecode::Code {
        long,
        big: e.cs_default_big,
    };
    // The prefixes: read up to 15 bytes, or up to the end of the page if the next one is
    // not mapped.
    let rip = if long {
        s.rip
    } else {
        e.seg_base[1].wrapping_add(s.rip) & 0xffff_ffff
    };
    let mut insn = [0u8; 15];
    let to_page_end = (4096 - (rip & 0xfff)).min(15) as usize;
    let fetched = if xen::guest_access::copy_from_guest(cx, rip, &mut insn).is_ok() {
        15
    } else if xen::guest_access::copy_from_guest(cx, rip, &mut insn[..to_page_end]).is_ok() {
        to_page_end
    } else {
        return Err(alloc::format!("string I/O at unreadable RIP {:#x}", s.rip));
    };
    let (addr_prefix, seg_override) = crdecode::string_prefixes(&insn[..fetched], long);
    let mask = match crdecode::address_size(code, addr_prefix) {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let merge = |old: u64, new: u64| match mask {
        0xffff => (old & !0xffff) | (new & 0xffff),
        m => new & m,
    };
    let size = u64::from(io.size.clamp(1, 4));
    let regs = *cx.v.hw.regs();
    let count = if io.rep {
        (regs.rcx & mask).min(REP_OUT_MAX / size)
    } else {
        1
    };
    if count == 0 {
        return Ok(true);
    }
    let down = s.rflags & (1 << 10) != 0;
    // OUTS reads through DS or the override; INS always writes through ES. In 64-bit mode
    // only FS and GS have bases.
    let seg_index = if io.write {
        usize::from(seg_override.unwrap_or(3))
    } else {
        0
    };
    let seg = if long && seg_index < 4 {
        0
    } else {
        e.seg_base[seg_index.min(5)]
    };
    let reg = if io.write { regs.rsi } else { regs.rdi } & mask;
    // The block the iterations cover, lowest address first.
    let span = count * size;
    let low = if down {
        reg.wrapping_sub(span - size) & mask
    } else {
        reg
    };
    let mut linear = seg.wrapping_add(low);
    if !long {
        linear &= 0xffff_ffff;
    }
    let mut buf = [0u8; REP_OUT_MAX as usize];
    let buf = &mut buf[..span as usize];
    if io.write {
        xen::guest_access::copy_from_guest(cx, linear, buf).map_err(|_| {
            alloc::format!("OUTS to port {:#x} from unreadable {linear:#x}", io.port)
        })?;
        if io.port == DEBUG_PORT {
            let mut out = [0u8; REP_OUT_MAX as usize];
            let n = count as usize;
            for (i, o) in out[..n].iter_mut().enumerate() {
                let element = if down { n - 1 - i } else { i };
                *o = buf[element * size as usize];
            }
            console_write(cx, &out[..n]);
        }
    } else {
        buf.fill(0xff);
        xen::guest_access::copy_to_guest(cx, linear, buf).map_err(|_| {
            alloc::format!("INS from port {:#x} to unwritable {linear:#x}", io.port)
        })?;
    }
    let moved = if down {
        reg.wrapping_sub(span)
    } else {
        reg.wrapping_add(span)
    };
    let regs = cx.v.hw.regs();
    if io.write {
        regs.rsi = merge(regs.rsi, moved);
    } else {
        regs.rdi = merge(regs.rdi, moved);
    }
    if io.rep {
        let left = (regs.rcx & mask) - count;
        regs.rcx = merge(regs.rcx, left);
        return Ok(left == 0);
    }
    Ok(true)
}

/// Emulates RDMSR/WRMSR; false means the guest gets #GP.
fn msr_access<B: Backend>(cx: &mut Cx<'_, B>, write: bool) -> bool {
    let regs = *cx.v.hw.regs();
    let index = regs.rcx as u32;
    crate::schedule::stats::msr(cx.dom.is_control(), index);
    if index == MSR_APIC_BASE {
        if write {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let ok = cx.v.vlapic.set_apic_base(value, guest_phys_bits()).is_ok();
            sync_apic_timer(cx);
            apic_effect(cx, ApicEffect::None);
            return ok;
        }
        let v = cx.v.vlapic.apic_base();
        let regs = cx.v.hw.regs();
        regs.rax = v & 0xffff_ffff;
        regs.rdx = v >> 32;
        return true;
    }
    if Vlapic::owns(index) {
        // The x2APIC MSRs exist only in x2APIC mode.
        if cx.v.vlapic.mode() != crate::hvm::vlapic::Mode::X2Apic {
            return false;
        }
        return x2apic_access(
            cx,
            index,
            write,
            (regs.rdx << 32) | (regs.rax & 0xffff_ffff),
        );
    }
    if !write {
        let value = match cx.v.hw.read_msr(index) {
            Some(v) => v,
            None => match index {
                0x10 => crate::arch::x86::tsc::rdtsc(), // IA32_TSC: guests see the host TSC
                _ => match msr::read(index) {
                    MsrRead::Value(v) => v,
                    MsrRead::Fault => {
                        guest_debug!(cx.dom, "d{}: rdmsr {index:#x} refused", cx.dom.id);
                        return false;
                    }
                },
            },
        };
        let regs = cx.v.hw.regs();
        regs.rax = value & 0xffff_ffff;
        regs.rdx = value >> 32;
        return true;
    }
    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
    match cx.v.hw.write_msr(index, value) {
        Ok(true) => return true,
        Err(()) => return false,
        Ok(false) => {}
    }
    match msr::write(index, value) {
        MsrWrite::Done => true,
        MsrWrite::HypercallPage { gpa } => {
            let amd = crate::arch::x86::cpu::is_amd();
            if cx.dom.mem.write(gpa, &msr::hypercall_page(amd)).is_err() {
                warn!(
                    "d{}: hypercall page at {gpa:#x} is not guest RAM",
                    cx.dom.id
                );
                return false;
            }
            true
        }
        MsrWrite::Fault => {
            guest_debug!(
                cx.dom,
                "d{}: wrmsr {index:#x} <- {value:#x} refused",
                cx.dom.id
            );
            false
        }
    }
}

const MSR_APIC_BASE: u32 = 0x1b;

/// The guest's physical-address width (CPUID 0x80000008 EAX[7:0], passed through).
fn guest_phys_bits() -> u32 {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max >= 0x8000_0008 {
        core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    }
}

/// Mirrors the vLAPIC timer's expiry into the vCPU's timers (after the model advanced or
/// a register changed), so a blocked vCPU is woken for it.
pub(super) fn sync_apic_timer<B: Backend>(cx: &mut Cx<'_, B>) {
    let expiry = cx.v.vlapic.timer_expiry();
    if cx.v.timer.apic_ns != expiry {
        cx.v.timer.apic_ns = expiry;
        cx.hv.timer_changed(cx.vcpu, &cx.v.timer);
    }
}

/// Carries out what a write to the virtual LAPIC asks for: IPIs to other vCPUs, INIT,
/// SIPI.
pub(super) fn apic_effect<B: Backend>(cx: &mut Cx<'_, B>, effect: ApicEffect) {
    if let Some(vector) = cx.v.vlapic.take_eoi() {
        if cx.dom.is_control() {
            super::devirq::eoi(cx.dom, vector);
        }
    }
    // The write may have changed the logical id other vCPUs' logical IPIs match.
    cx.vcpu
        .apic_logical
        .store(cx.v.vlapic.logical_id().to_bits(), Ordering::SeqCst);
    let others_of = || cx.dom.vcpus.iter().filter(|t| t.id != cx.vcpu.id);
    let logical = |t: &Vcpu<B>, mda: u32| {
        LogicalId::from_bits(t.apic_logical.load(Ordering::SeqCst)).matches(mda)
    };
    match effect {
        ApicEffect::None => {}
        ApicEffect::LogicalIpi { mda, vector } => {
            for t in others_of().filter(|t| logical(t, mda)) {
                t.post_ipi(vector);
                cx.hv.wake(cx.dom, t);
            }
        }
        ApicEffect::LogicalNmi { mda, to_self } => {
            if to_self {
                cx.vcpu.set_flag(vflags::NMI);
            }
            for t in others_of().filter(|t| logical(t, mda)) {
                send_nmi(cx, t);
            }
        }
        ApicEffect::Ipi { dest, vector } => {
            for t in others_of().filter(|t| dest == u32::MAX || dest == t.id) {
                t.post_ipi(vector);
                cx.hv.wake(cx.dom, t);
            }
        }
        ApicEffect::Special { .. } => crate::schedule::apic_special(cx, effect),
        ApicEffect::Nmi { others, to_self } => {
            if to_self {
                cx.vcpu.set_flag(vflags::NMI);
            }
            let Some(dest) = others else {
                return;
            };
            for t in others_of().filter(|t| dest == u32::MAX || dest == t.id) {
                send_nmi(cx, t);
            }
        }
    }
}

/// An NMI IPI to vCPU `t`; an offline vCPU (waiting for SIPI, or halted for good) takes
/// none.
fn send_nmi<B: Backend>(cx: &Cx<'_, B>, t: &Vcpu<B>) {
    if t.has(vflags::DOWN) {
        guest_debug!(
            cx.dom,
            "d{}: NMI to offline vCPU {} dropped",
            cx.dom.id,
            t.id
        );
        return;
    }
    t.set_flag(vflags::NMI);
    cx.hv.wake(cx.dom, t);
}

/// An x2APIC register access; false means #GP.
fn x2apic_access<B: Backend>(cx: &mut Cx<'_, B>, index: u32, write: bool, value: u64) -> bool {
    cx.v.vlapic.advance(time::now().1);
    if !write {
        let Some(v) = cx.v.vlapic.read(index) else {
            return false;
        };
        let regs = cx.v.hw.regs();
        regs.rax = v & 0xffff_ffff;
        regs.rdx = v >> 32;
        return true;
    }
    match cx.v.vlapic.write(index, value) {
        Ok(effect) => {
            sync_apic_timer(cx);
            apic_effect(cx, effect);
            true
        }
        Err(()) => false,
    }
}

/// The linear address of `rip` in the guest's current code segment.
fn code_linear<B: Backend>(cx: &Cx<'_, B>, rip: u64) -> u64 {
    let e = cx.v.hw.emulation_state();
    if e.cs_long {
        rip
    } else {
        e.seg_base[1].wrapping_add(rip) & 0xffff_ffff
    }
}

/// Prints guest console text through the domain's line buffer.
fn console_write<B: Backend>(cx: &Cx<'_, B>, bytes: &[u8]) {
    let (id, control) = (cx.dom.id, cx.dom.is_control());
    cx.dom.st.lock().console_write(id, control, bytes);
}

/// Ends the domain with a diagnostic: what happened, where, and the register state.
fn crash<B: Backend>(cx: &mut Cx<'_, B>, what: core::fmt::Arguments<'_>) -> Flow {
    cx.dom.st.lock().end_console_line(cx.dom.id);
    let s = cx.v.hw.control_state();
    let r = *cx.v.hw.regs();
    log::error!("domain {} crashed: {what}", cx.dom.id);
    if cx.dom.vcpus.len() > 1 {
        log::error!("  on vCPU {}", cx.vcpu.id);
    }
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
    let (source, insn): (_, &[u8]) = match cx.v.hw.exit_instruction_bytes() {
        Some((b, n)) => {
            fetched = b;
            ("captured by the CPU", &fetched[..n])
        }
        // Fallback: fetch from guest memory through the guest's own page tables, at CS's
        // base plus RIP (64-bit code ignores the base; real mode has CS * 16 there).
        None => {
            match xen::guest_access::copy_from_guest(cx, code_linear(cx, s.rip), &mut fetched) {
                Ok(()) => ("read from guest memory", &fetched),
                Err(_) => ("not readable", &[]),
            }
        }
    };
    let mut bytes = arrayvec::ArrayString::<64>::new();
    for x in insn {
        let _ = core::fmt::Write::write_fmt(&mut bytes, format_args!("{x:02x} "));
    }
    log::error!(
        "  instruction bytes at RIP ({source}): {}",
        bytes.trim_end()
    );
    if s.efer & crate::hvm::crcheck::EFER_LMA != 0 && s.cr2 != 0 {
        report_walk(cx, s.cr3, s.cr2);
    }
    for t in cx.v.trace.iter() {
        log::error!("  exit trace: {t}");
    }
    Flow::Out(Outcome::End(DomainEnd::Crashed))
}

/// Logs the guest's own page walk of `gva` (its CR2: where its last page fault was) as the
/// hypervisor reads it now: each entry with the host frame behind its table. A walk that
/// succeeds here although the guest faulted there points at a stale translation; one that
/// fails shows which table holds what.
fn report_walk<B: Backend>(cx: &Cx<'_, B>, cr3: u64, gva: u64) {
    let (steps, n) = guest_walk::trace_long(cr3, gva, &cx.dom.mem);
    for step in steps.iter().take(n).flatten() {
        let table = step.entry_gpa & !0xfff;
        let host = cx.dom.mem.ram_frame(table);
        match step.entry {
            Some(e) => log::error!(
                "  walk of CR2: L{} entry at gpa {:#x} (host frame {host:#x?}) = {e:#018x}",
                step.level,
                step.entry_gpa
            ),
            None => log::error!(
                "  walk of CR2: L{} table at gpa {table:#x} is not RAM",
                step.level
            ),
        }
    }
}
