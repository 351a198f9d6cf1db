//! A VMX virtual CPU: one VMCS, its bitmaps, the guest registers, hardware context
//! (VMCS current per CPU, VPID by generation, extended state, XCR0), and the run loop
//! that handles CR accesses itself and reports every other exit as [`Exit`].
//!
//! Host interrupts: pin-based external-interrupt exiting with "acknowledge interrupt on
//! exit": the exit takes the interrupt from the APIC, and [`Vcpu::run`] hands its vector
//! to `irq::dispatch` (which EOIs exactly as the IDT path does) before reporting
//! `Exit::ExternalInterrupt`. NMI exiting: an NMI exit is counted like a host NMI and
//! reported as `Exit::ExternalInterrupt` too. Host RFLAGS.IF is 0 after every exit.
//!
//! VMCS launch state: `launched` follows the VMCS (set by the first successful VMLAUNCH,
//! cleared with every VMCLEAR). The VMCS stays current on its CPU across `put`; another
//! vCPU's `load` makes its own current with VMPTRLD. Before a vCPU runs on another CPU its
//! VMCS must be VMCLEARed on the old one ([`VmxVcpu::vmclear`], to be called there by the
//! scheduler's migration path); `load` then refreshes the host state for the new CPU.
#![allow(unsafe_code)]

use super::controls::{pin, proc, Controls};
use super::cpu::{self, rdtsc};
use super::decode::{self, intr_info, Action, RawExit};
use super::entry::{self, Entered};
use super::fields::{Field, Seg};
use super::modes::{Fixed, Modes};
use super::msr::GuestMsrs;
use super::setup::Pages;
use super::vmcs;
use crate::arch::x86::fpu::ExtState;
use crate::arch::x86::held::{self, Held, HeldRegs};
use crate::arch::x86::{irq, percpu, spec, xcr};
use crate::hvm::asid::TlbTag;
use crate::hvm::{ControlState, EmulationState, Event, Exit, GuestRegs, Vcpu};
use crate::mm::phys;
use core::sync::atomic::Ordering;

/// What every vCPU of the backend shares: CPU limits and features.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub fixed: Fixed,
    /// Preemption-timer rate (timer ticks once every 2^rate TSC ticks), if usable.
    pub timer_rate: Option<u32>,
    /// INVEPT type for flushes: 1 single-context, 2 all-context.
    pub invept: Option<u64>,
    /// IA32_XSS bits the CPU supports.
    pub xss_supported: u64,
    /// VPIDs in use: guests get 1..vpid_limit (0: VPID off).
    pub vpid_limit: u32,
    /// INVVPID type that flushes every VPID at a new generation: 2 all-context, or 1
    /// single-context (then each newly assigned VPID is flushed on its own).
    pub invvpid: u64,
}

/// Number of frames behind a vCPU: VMCS, I/O bitmaps A and B, MSR bitmap.
pub const FRAMES: u64 = 4;

pub struct VmxVcpu {
    pub(super) regs: GuestRegs,
    /// Physical address of the VMCS; the I/O bitmaps and MSR bitmap follow it.
    pub(super) vmcs: u64,
    pub(super) vpid: u16,
    pub(super) eptp: u64,
    pub(super) p2m_root: u64,
    pub(super) launched: bool,
    pub(super) controls: Controls,
    pub(super) modes: Modes,
    pub(super) platform: Platform,
    pub(super) deadline: Option<u64>,
    pub(super) xcr0: u64,
    pub(super) msrs: GuestMsrs,
    /// Task priority seen through CR8 when the CPU forces CR8 exiting.
    pub(super) cr8: u64,
    /// Vector of the last host interrupt acknowledged by a VM exit.
    pub(super) external_vector: Option<u8>,
    /// The VPID in the VMCS and where it is valid.
    pub(super) tag: Option<TlbTag>,
    /// Extended state (x87/SSE/AVX...) while not loaded.
    pub(super) ext: ExtState,
    /// DR0-DR3, DR6 and CR2 while not loaded (the VMCS holds none of them).
    pub(super) held: HeldRegs,
    /// Index of the CPU whose host state the VMCS holds and where it was last current
    /// (u32::MAX: VMCLEARed, host state to be written at the next `load`).
    pub(super) cpu: u32,
    /// Loaded on `cpu` (between `load` and `put`).
    pub(super) loaded: bool,
    /// CPUs it has been loaded on (bit i: CPU i): those that may cache its EPT
    /// translations, invalidated when it is dropped.
    pub(super) ran_on: u64,
    /// Created waiting for SIPI and not yet started.
    pub(super) waiting_for_sipi: bool,
}

/// An interruption-information field with its error code (read from `code` when bit 11
/// says there is one) in bits 63:32, as SVM's EVENTINJ and EXITINTINFO hold it. The
/// current VMCS must be this vCPU's.
fn with_error_code(info: u64, code: Field) -> u64 {
    let has_code = u64::from(intr_info::VALID | intr_info::DELIVER_ERROR_CODE);
    if info & has_code == has_code {
        info & 0xffff_ffff | vmcs::get(code) << 32
    } else {
        info
    }
}

/// VMCLEARs VMCS `vmcs` on this CPU (its data is written back, its launch state clear)
/// and notes that this CPU has no current VMCS if it was that one.
fn clear_here(vmcs: u64) -> Result<(), crate::hvm::BackendError> {
    // SAFETY: callers pass a vCPU's own VMCS that no CPU is running (it is parked, being
    // moved or dropped); clearing only writes its cached data back and makes it not
    // current here.
    let r = unsafe { vmcs::vmclear(vmcs) };
    let _ =
        percpu::this()
            .current_vmcs
            .compare_exchange(vmcs, 0, Ordering::Relaxed, Ordering::Relaxed);
    r
}

impl VmxVcpu {
    /// The vector of the host interrupt the last `Exit::ExternalInterrupt` acknowledged.
    #[allow(dead_code)] // for host interrupt dispatch, once the host takes interrupts
    pub fn last_external_vector(&self) -> Option<u8> {
        self.external_vector
    }

    /// The pages behind this vCPU.
    pub fn pages(vmcs: u64) -> Pages {
        Pages {
            io_bitmaps: vmcs + 4096,
            msr_bitmap: vmcs + 3 * 4096,
        }
    }

    /// Makes this vCPU's VMCS current on this CPU.
    pub(super) fn make_current(&self) {
        let current = &percpu::this().current_vmcs;
        if current.load(Ordering::Relaxed) != self.vmcs {
            // SAFETY: the VMCS region is owned by this vCPU, stamped with the revision id at
            // creation, and not current on another CPU (it is VMCLEARed before it moves).
            match unsafe { vmcs::vmptrld(self.vmcs) } {
                Ok(()) => current.store(self.vmcs, Ordering::Relaxed),
                Err(e) => log::error!("vmx: {e} loading VMCS {:#x}", self.vmcs),
            }
        }
    }

    /// Writes a `VCPUOP_initialise` start state into the VMCS (made current here).
    fn write_start_state(&mut self, st: &crate::hvm::StartState) -> Result<(), ()> {
        use super::controls::entry::IA32E_MODE_GUEST;
        use super::decode::AR_UNUSABLE;
        use super::modes::{CR0_PG, CR4_PAE, EFER_LMA};
        self.reset_to_sipi(0);
        // Packed attributes (AVL/L/DB/G in bits 8-11) to VMX access rights (bits 12-15);
        // a null segment is "unusable".
        let ar = |attr: u16| -> u64 {
            if attr == 0 {
                u64::from(AR_UNUSABLE)
            } else {
                u64::from(attr & 0xff) | (u64::from(attr >> 8) & 0xf) << 12
            }
        };
        let flat = crate::hvm::StartSegment {
            base: 0,
            limit: 0xffff_ffff,
            attr: 0xc93,
        };
        for (seg, s) in [
            (Seg::Cs, st.cs),
            (Seg::Ds, st.ds),
            (Seg::Ss, st.ss),
            (Seg::Es, st.es),
            (Seg::Tr, st.tr),
            (Seg::Fs, flat),
            (Seg::Gs, flat),
        ] {
            vmcs::set(seg.selector(), 0);
            vmcs::set(seg.base(), s.base);
            vmcs::set(seg.limit(), s.limit.into());
            vmcs::set(seg.access_rights(), ar(s.attr));
        }
        vmcs::set(Field::GUEST_GDTR_LIMIT, 0);
        vmcs::set(Field::GUEST_IDTR_LIMIT, 0);
        let fixed = self.platform.fixed;
        vmcs::set(Field::GUEST_CR3, st.cr3);
        // PAE paging outside long mode: VM entry takes the PDPTEs from the VMCS.
        let pae = st.cr0 & CR0_PG != 0 && st.cr4 & CR4_PAE != 0 && st.efer & EFER_LMA == 0;
        if pae && self.load_pdptes(st.cr3).is_err() {
            self.reset_to_sipi(0);
            self.waiting_for_sipi = true;
            return Err(());
        }
        vmcs::set(Field::CR0_READ_SHADOW, st.cr0);
        vmcs::set(Field::GUEST_CR0, fixed.cr0_real(st.cr0));
        vmcs::set(Field::CR4_READ_SHADOW, st.cr4);
        vmcs::set(Field::GUEST_CR4, fixed.cr4_real(st.cr4));
        vmcs::set(Field::GUEST_IA32_EFER, st.efer);
        self.modes = Modes {
            cr0_shadow: st.cr0,
            cr4_shadow: st.cr4,
            efer: st.efer,
        };
        let entry = if st.efer & EFER_LMA != 0 {
            self.controls.entry | IA32E_MODE_GUEST
        } else {
            self.controls.entry & !IA32E_MODE_GUEST
        };
        self.controls.entry = entry;
        vmcs::set(Field::ENTRY_CONTROLS, entry.into());
        vmcs::set(Field::GUEST_RFLAGS, st.rflags);
        vmcs::set(Field::GUEST_RIP, st.rip);
        vmcs::set(Field::GUEST_RSP, st.rsp);
        self.regs = st.regs;
        Ok(())
    }

    /// VMCLEARs the VMCS on CPU `cpu` (a cross-CPU call if it is not this one), where it
    /// was last current; afterwards it may be made current anywhere.
    fn clear_on(&mut self, cpu: u32) {
        if cpu == percpu::this().index {
            self.vmclear();
            return;
        }
        let vmcs = self.vmcs;
        let clear = move || u64::from(clear_here(vmcs).is_err());
        match crate::arch::x86::smp::call_on(cpu as usize, &clear, 1000) {
            Ok(0) | Err(crate::arch::x86::smp::CallError::Offline) => {}
            Ok(_) => log::error!("vmx: VMCLEAR of VMCS {vmcs:#x} failed on CPU {cpu}"),
            Err(e) => log::error!("vmx: VMCLEAR of VMCS {vmcs:#x} on CPU {cpu}: {e:?}"),
        }
        self.mark_cleared();
    }

    /// After a VMCLEAR: not launched, current nowhere, not loaded.
    fn mark_cleared(&mut self) {
        self.launched = false;
        self.cpu = u32::MAX;
        self.loaded = false;
    }

    /// VMCLEARs the VMCS on this CPU (its launch state becomes clear and its data is
    /// written back to memory), so it can be made current on another CPU or freed. The
    /// vCPU must be put first if it was loaded.
    pub fn vmclear(&mut self) {
        if let Err(e) = clear_here(self.vmcs) {
            log::error!("vmx: {e} clearing VMCS {:#x}", self.vmcs);
        }
        self.mark_cleared();
    }

    /// Per-entry state: VMCS, lazily switched MSRs, slice timer.
    fn prepare(&mut self) {
        self.make_current();
        self.msrs
            .load_if_needed(self.vmcs, self.platform.xss_supported != 0);
        if let Some(rate) = self.platform.timer_rate {
            let mut pinctl = self.controls.pin & !pin::PREEMPTION_TIMER;
            if let Some(deadline) = self.deadline {
                let ticks = deadline.saturating_sub(rdtsc()) >> rate;
                vmcs::set(
                    Field::PREEMPTION_TIMER_VALUE,
                    ticks.min(u64::from(u32::MAX)),
                );
                pinctl |= pin::PREEMPTION_TIMER;
            }
            if pinctl != self.controls.pin {
                self.controls.pin = pinctl;
                vmcs::set(Field::PIN_BASED_CONTROLS, pinctl.into());
            }
        }
    }

    /// Guest-visible CR0/CR4 from the VMCS (the guest owns the unmasked bits).
    pub(super) fn visible_crs(&self) -> (u64, u64) {
        let f = &self.platform.fixed;
        (
            f.cr0_visible(
                vmcs::get(Field::GUEST_CR0),
                vmcs::get(Field::CR0_READ_SHADOW),
            ),
            f.cr4_visible(
                vmcs::get(Field::GUEST_CR4),
                vmcs::get(Field::CR4_READ_SHADOW),
            ),
        )
    }

    fn read_exit() -> RawExit {
        RawExit {
            reason: vmcs::get(Field::EXIT_REASON) as u32,
            qualification: vmcs::get(Field::EXIT_QUALIFICATION),
            guest_physical: vmcs::get(Field::GUEST_PHYSICAL_ADDRESS),
            guest_linear: vmcs::get(Field::GUEST_LINEAR_ADDRESS),
            interruption_info: vmcs::get(Field::EXIT_INTERRUPTION_INFO) as u32,
        }
    }

    /// A fault in the guest's IRET unblocked NMIs before the exit (SDM 27.2.3, "NMI
    /// unblocking due to IRET"); the IRET is executed again (or the fault delivered), so
    /// the blocking it had not yet lifted is put back.
    fn restore_nmi_blocking(raw: &RawExit) {
        let unblocked = match raw.reason as u16 {
            decode::reason::EXCEPTION_OR_NMI => {
                raw.interruption_info & intr_info::VALID != 0
                    && raw.interruption_info & intr_info::NMI_UNBLOCKED_BY_IRET != 0
            }
            // The EPT-violation qualification has the same bit at the same place.
            decode::reason::EPT_VIOLATION => {
                raw.qualification & u64::from(intr_info::NMI_UNBLOCKED_BY_IRET) != 0
            }
            _ => false,
        };
        if unblocked && vmcs::get(Field::IDT_VECTORING_INFO) & u64::from(intr_info::VALID) == 0 {
            let state = vmcs::get(Field::GUEST_INTERRUPTIBILITY);
            vmcs::set(Field::GUEST_INTERRUPTIBILITY, state | 8);
        }
    }

    /// An exit during event delivery: queue the event again (SDM 28.2.4, 27.2.3).
    fn requeue_vectoring() {
        let info = vmcs::get(Field::IDT_VECTORING_INFO) as u32;
        if info & intr_info::VALID != 0 {
            Self::enter_again(info, Field::IDT_VECTORING_ERROR_CODE);
        }
    }

    /// Makes the next VM entry deliver the event an exit reported in `info` (vector, type,
    /// error code from the field `error_code`, a software event's instruction length).
    fn enter_again(info: u32, error_code: Field) {
        vmcs::set(
            Field::ENTRY_INTERRUPTION_INFO,
            (info & intr_info::REINJECT).into(),
        );
        if info & intr_info::DELIVER_ERROR_CODE != 0 {
            vmcs::set(Field::ENTRY_EXCEPTION_ERROR_CODE, vmcs::get(error_code));
        }
        if intr_info::is_software(info) {
            vmcs::set(
                Field::ENTRY_INSTRUCTION_LENGTH,
                vmcs::get(Field::EXIT_INSTRUCTION_LENGTH),
            );
        }
    }

    /// Delivers an intercepted exception to the guest as the CPU would have: same vector,
    /// type and error code; a privileged software exception (ICEBP) with its length.
    fn reflect(info: u32) {
        if vmcs::get(Field::ENTRY_INTERRUPTION_INFO) & u64::from(intr_info::VALID) != 0 {
            // An event interrupted by this exception is being requeued: the CPU will
            // raise the exception again when it delivers it.
            return;
        }
        Self::enter_again(info, Field::EXIT_INTERRUPTION_ERROR_CODE);
    }

    fn entry_failed(entered: Entered) -> Exit {
        match entered {
            Entered::FailValid => {
                let error = vmcs::get(Field::VM_INSTRUCTION_ERROR);
                Exit::EntryFailed {
                    reason: decode::instruction_error_name(error),
                    detail: error,
                }
            }
            Entered::FailInvalid => Exit::EntryFailed {
                reason: "VMfailInvalid (no current VMCS)",
                detail: 0,
            },
            _ => Exit::EntryFailed {
                reason: "VMWRITE of HOST_RSP failed",
                detail: 0,
            },
        }
    }

    fn set_proc_bit(&mut self, bit: u32, on: bool) {
        let new = if on {
            self.controls.proc | bit
        } else {
            self.controls.proc & !bit
        };
        if new != self.controls.proc {
            self.controls.proc = new;
            self.make_current();
            vmcs::set(Field::PRIMARY_PROC_CONTROLS, new.into());
        }
    }
}

impl Vcpu for VmxVcpu {
    fn load(&mut self) {
        let pc = percpu::this();
        if self.cpu != pc.index {
            // Moving from another CPU: the VMCS may be active there (its data cached in
            // that CPU), so it is VMCLEARed there first; its launch state becomes clear.
            if self.cpu != u32::MAX {
                self.clear_on(self.cpu);
            }
            // First load here (or after VMCLEAR): the host state names this CPU's
            // GS base (per-CPU data), TR, GDT and IDT.
            self.make_current();
            if let Err(e) = super::setup::host_state() {
                log::error!("vmx: {e} writing the host state");
            }
            self.msrs.invalidate();
            self.cpu = pc.index;
            self.ran_on |= 1u64.checked_shl(pc.index).unwrap_or(0);
            // This CPU may cache EPT translations of this p2m from an earlier visit that
            // the domain's flush generation (caught up with elsewhere) no longer covers.
            self.flush_nested_tlb();
        } else {
            self.make_current();
        }
        if self.platform.vpid_limit != 0 {
            let a = pc
                .asids
                .lock()
                .assign(pc.index, self.platform.vpid_limit, self.tag);
            let flush = if a.flush_all && self.platform.invvpid == 2 {
                Some((2, 0))
            } else if self.platform.invvpid == 1 && a.changed {
                Some((1, a.tag.tag as u16))
            } else {
                None
            };
            if let Some((kind, vpid)) = flush {
                if let Err(e) = vmcs::invvpid(kind, vpid) {
                    log::error!("vmx: {e}");
                }
            }
            if a.changed {
                self.vpid = a.tag.tag as u16;
                vmcs::set(Field::VPID, a.tag.tag.into());
            }
            self.tag = Some(a.tag);
        }
        self.ext.restore();
        self.held.restore(Held::Dr0To3Dr6Cr2);
        self.loaded = true;
    }

    fn put(&mut self) {
        if self.loaded {
            self.msrs
                .save_if_loaded(self.vmcs, self.platform.xss_supported != 0);
            self.ext.save();
            self.held.save(Held::Dr0To3Dr6Cr2);
            self.loaded = false;
        }
    }

    fn run(&mut self) -> Exit {
        if !self.loaded || self.waiting_for_sipi {
            return Exit::EntryFailed {
                reason: if self.loaded {
                    "vCPU waiting for SIPI was run"
                } else {
                    "vCPU run without load"
                },
                detail: 0,
            };
        }
        loop {
            self.prepare();
            xcr::enter_guest(self.xcr0);
            spec::before_entry();
            // SAFETY: `prepare` made this vCPU's fully initialised VMCS current (host state
            // written for this CPU by `load`), `launched` tracks its launch state, and
            // `regs` is borrowed exclusively for the call.
            let entered = unsafe { entry::enter(&mut self.regs, self.launched) };
            spec::after_exit();
            xcr::leave_guest(self.xcr0);
            if entered != Entered::Exited {
                return Self::entry_failed(entered);
            }
            let raw = Self::read_exit();
            if raw.reason & decode::ENTRY_FAILED == 0 {
                self.launched = true;
                Self::requeue_vectoring();
                if self.controls.pin & pin::VIRTUAL_NMIS != 0 {
                    Self::restore_nmi_blocking(&raw);
                }
            }
            match decode::classify(&raw) {
                Action::Report(Exit::ExternalInterrupt) => {
                    // Acknowledged by the exit: handle it now, as the IDT stub would.
                    self.external_vector = None;
                    if raw.interruption_info & intr_info::VALID != 0 {
                        let vector = raw.interruption_info as u8;
                        self.external_vector = Some(vector);
                        irq::dispatch(vector);
                    }
                    return Exit::ExternalInterrupt;
                }
                Action::Report(Exit::InterruptWindow) => {
                    // One exit per request, as on SVM: the generic code asks again if needed.
                    self.request_interrupt_window(false);
                    return Exit::InterruptWindow;
                }
                Action::Report(Exit::NmiWindow) => {
                    self.request_nmi_window(false);
                    return Exit::NmiWindow;
                }
                Action::Report(exit) => return exit,
                Action::Cr(access) => {
                    (self.modes.cr0_shadow, self.modes.cr4_shadow) = self.visible_crs();
                    self.cr_access(access);
                }
                Action::Fault(event) => self.inject(event),
                Action::Reflect { info, dr6 } => {
                    if dr6 != 0 {
                        cpu::write_dr6(dr6);
                    }
                    Self::reflect(info);
                }
                Action::MachineCheck => {
                    log::error!(
                        "vmx: machine check while a guest ran (RIP {:#x}); guest resumed",
                        vmcs::get(Field::GUEST_RIP)
                    );
                }
                Action::HostNmi => {
                    // The exit consumed the NMI: count it as the host handler would.
                    irq::nmi();
                    irq::report_nmis();
                    return Exit::ExternalInterrupt;
                }
            }
        }
    }

    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn trace_state(&self) -> crate::hvm::TraceState {
        self.make_current();
        crate::hvm::TraceState {
            rip: vmcs::get(Field::GUEST_RIP),
            injecting: with_error_code(
                vmcs::get(Field::ENTRY_INTERRUPTION_INFO),
                Field::ENTRY_EXCEPTION_ERROR_CODE,
            ),
            delivering: with_error_code(
                vmcs::get(Field::IDT_VECTORING_INFO),
                Field::IDT_VECTORING_ERROR_CODE,
            ),
        }
    }

    fn control_state(&self) -> ControlState {
        self.make_current();
        let (cr0, cr4) = self.visible_crs();
        ControlState {
            rip: vmcs::get(Field::GUEST_RIP),
            rsp: vmcs::get(Field::GUEST_RSP),
            rflags: vmcs::get(Field::GUEST_RFLAGS),
            cr0,
            cr2: if self.loaded {
                held::read_cr2()
            } else {
                self.held.cr2
            },
            cr3: vmcs::get(Field::GUEST_CR3),
            cr4,
            efer: self.modes.efer,
            cs_selector: vmcs::get(Seg::Cs.selector()) as u16,
            cpl: ((vmcs::get(Seg::Ss.access_rights()) >> 5) & 3) as u8,
        }
    }

    fn skip_instruction(&mut self) {
        self.make_current();
        let rip = vmcs::get(Field::GUEST_RIP);
        let len = vmcs::get(Field::EXIT_INSTRUCTION_LENGTH);
        let mut rip = rip.wrapping_add(len);
        if self.modes.efer & super::modes::EFER_LMA == 0
            || vmcs::get(Seg::Cs.access_rights()) & (1 << 13) == 0
        {
            rip &= 0xffff_ffff;
        }
        vmcs::set(Field::GUEST_RIP, rip);
        // The instruction completed: STI/MOV SS blocking ends with it.
        let blocking = vmcs::get(Field::GUEST_INTERRUPTIBILITY);
        if blocking & 3 != 0 {
            vmcs::set(Field::GUEST_INTERRUPTIBILITY, blocking & !3);
        }
    }

    fn inject(&mut self, event: Event) {
        self.make_current();
        // Real mode has no error codes; VM entry refuses one with CR0.PE clear.
        let protected = vmcs::get(Field::GUEST_CR0) & 1 != 0;
        let (info, code) = decode::interruption_info_in_mode(event, protected);
        if let Some(code) = code {
            vmcs::set(Field::ENTRY_EXCEPTION_ERROR_CODE, code.into());
        }
        vmcs::set(Field::ENTRY_INTERRUPTION_INFO, info.into());
    }

    fn interrupts_enabled(&self) -> bool {
        self.make_current();
        vmcs::get(Field::GUEST_RFLAGS) & (1 << 9) != 0
            && vmcs::get(Field::GUEST_INTERRUPTIBILITY) & 3 == 0
            && vmcs::get(Field::ENTRY_INTERRUPTION_INFO) & u64::from(intr_info::VALID) == 0
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.set_proc_bit(proc::INTERRUPT_WINDOW_EXITING, on);
    }

    fn nmi_allowed(&self) -> bool {
        self.make_current();
        // Blocking by STI (0), MOV SS (1) or NMI (3); without virtual NMIs the CPU does
        // not track the last one and NMIs may nest.
        vmcs::get(Field::GUEST_INTERRUPTIBILITY) & (1 | 2 | 8) == 0
            && vmcs::get(Field::ENTRY_INTERRUPTION_INFO) & u64::from(intr_info::VALID) == 0
    }

    fn request_nmi_window(&mut self, on: bool) {
        // Without virtual NMIs (never seen on a CPU with EPT and unrestricted guest) there
        // is no NMI-window exit: a held NMI waits for the next exit.
        if self.controls.pin & pin::VIRTUAL_NMIS != 0 {
            self.set_proc_bit(proc::NMI_WINDOW_EXITING, on);
        }
    }

    fn set_slice_deadline(&mut self, tsc: Option<u64>) {
        self.deadline = tsc;
    }

    fn read_msr(&self, index: u32) -> Option<u64> {
        self.make_current();
        self.read_held_msr(index)
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<bool, ()> {
        self.make_current();
        (self.modes.cr0_shadow, self.modes.cr4_shadow) = self.visible_crs();
        self.write_held_msr(index, value)
    }

    fn set_xcr0(&mut self, value: u64) -> Result<(), ()> {
        // The host's XCR0 is every user component the CPU supports: one check serves both
        // backends.
        xcr::check_guest_xcr0(value)?;
        self.xcr0 = value;
        Ok(())
    }

    fn frames(&self) -> u64 {
        FRAMES + self.ext.frames()
    }

    fn xcr0(&self) -> u64 {
        self.xcr0
    }

    fn reset_to_sipi(&mut self, vector: u8) {
        self.make_current();
        if let Err(e) = super::setup::sipi_state(vector, &self.platform.fixed) {
            log::error!("vmx: {e} writing the INIT-SIPI state");
        }
        self.modes = Modes {
            cr0_shadow: 0x6000_0010,
            cr4_shadow: 0,
            efer: 0,
        };
        let entry = self.controls.entry & !super::controls::entry::IA32E_MODE_GUEST;
        if entry != self.controls.entry {
            self.controls.entry = entry;
            vmcs::set(Field::ENTRY_CONTROLS, entry.into());
        }
        self.request_interrupt_window(false);
        self.deadline = None;
        self.cr8 = 0;
        self.regs = GuestRegs {
            rdx: u64::from(cpu::cpuid(1, 0).0),
            ..GuestRegs::default()
        };
        self.xcr0 = 1;
        self.ext.reset();
        self.held = HeldRegs::default();
        if self.loaded {
            self.ext.restore();
            self.held.restore(Held::Dr0To3Dr6Cr2);
        }
        self.waiting_for_sipi = false;
    }

    fn set_start_state(&mut self, st: &crate::hvm::StartState) -> Result<(), ()> {
        let r = self.write_start_state(st);
        // Written from whichever CPU asked (the vCPU is parked, its VMCS inactive): leave
        // it inactive again, so that the CPU that runs it next may make it current.
        if !self.loaded {
            self.vmclear();
        }
        r
    }

    fn detach(&mut self) {
        if !self.loaded {
            self.vmclear();
        }
    }

    fn flush_nested_tlb(&mut self) {
        if let Some(kind) = self.platform.invept {
            if let Err(e) = vmcs::invept(kind, self.eptp) {
                log::error!("vmx: {e}");
            }
        }
    }
    fn emulation_state(&self) -> EmulationState {
        self.make_current();
        let cs = vmcs::get(Seg::Cs.access_rights());
        let mut seg_base = [0u64; 6];
        for (base, seg) in
            seg_base
                .iter_mut()
                .zip([Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs])
        {
            *base = vmcs::get(seg.base());
        }
        EmulationState {
            seg_base,
            cs_long: cs & (1 << 13) != 0,
            cs_default_big: cs & (1 << 14) != 0,
        }
    }

    fn complete_emulation(&mut self, rip: u64, rflags: u64) {
        self.make_current();
        vmcs::set(Field::GUEST_RIP, rip);
        vmcs::set(Field::GUEST_RFLAGS, rflags);
        let blocking = vmcs::get(Field::GUEST_INTERRUPTIBILITY);
        if blocking & 3 != 0 {
            vmcs::set(Field::GUEST_INTERRUPTIBILITY, blocking & !3);
        }
    }
}

impl Drop for VmxVcpu {
    /// VMCLEARs and frees the VMCS and bitmaps (the save area goes with `ext`), and drops
    /// cached EPT translations of its p2m root so a later domain whose EPT root reuses
    /// that frame cannot hit them, on every CPU. (Its VPID needs no flush: it is not
    /// handed out again before a new generation flushes them all.) The VMCS is cleared
    /// on the CPU where it was last current.
    fn drop(&mut self) {
        match self.cpu {
            u32::MAX => self.vmclear(),
            cpu => self.clear_on(cpu),
        }
        if let Some(kind) = self.platform.invept {
            let eptp = self.eptp;
            let flush = move || u64::from(vmcs::invept(kind, eptp).is_err());
            // Where it ran, and here (its set-up made the VMCS current here).
            let here = percpu::this().index;
            let cpus = self.ran_on | 1u64.checked_shl(here).unwrap_or(0);
            for cpu in (0..64).filter(|c| cpus & (1 << c) != 0) {
                match crate::arch::x86::smp::call_on(cpu as usize, &flush, 1000) {
                    Ok(0) => {}
                    r => log::error!("vmx: INVEPT of {eptp:#x} on CPU {cpu}: {r:?}"),
                }
            }
        }
        self.msrs.forget(self.vmcs);
        phys::free_frames(self.vmcs, FRAMES);
    }
}
