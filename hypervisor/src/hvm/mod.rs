//! The backend-neutral virtual CPU interface.
//!
//! Generic code (exit policy, hypercalls, domains, the scheduler) sees a vCPU only through
//! [`Vcpu`] and learns why it stopped only through [`Exit`]. The VMX and SVM backends
//! translate their hardware exit information (VMCS fields, VMCB exit codes) into [`Exit`]
//! and keep every vendor detail (VMCS encodings, VMCB offsets, mode-switch bookkeeping such
//! as IA-32e entry controls) to themselves. A backend may handle purely architectural
//! exits internally and never report them (for example CR0 writes that only need the VMX
//! long-mode bookkeeping).
//!
//! Backends are chosen once at boot and used through static dispatch.

pub mod asid;
pub mod cpuid;
pub mod crcheck;
pub mod crdecode;
pub mod ioperm;
pub mod msr;
pub mod pit;
pub mod spec;
pub mod startctx;
pub mod vioapic;
pub mod vlapic;
pub mod vpci;

use core::fmt;

/// Guest general-purpose registers that the hardware does not keep in the VMCS/VMCB
/// (RSP always lives there; RAX lives in the VMCB on SVM, but the backend mirrors it here).
/// The layout is shared with the backends' entry/exit assembly: do not reorder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegs {
    /// The register an instruction encoding names (only the low 4 bits count): 0 RAX,
    /// 1 RCX, 2 RDX, 3 RBX, 4 RSP (None: it lives in the VMCS/VMCB), 5 RBP, 6 RSI, 7 RDI,
    /// 8-15 R8-R15.
    pub fn by_encoding(&mut self, n: u8) -> Option<&mut u64> {
        Some(match n & 0xf {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => return None,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        })
    }
}

/// Kinds of access in a nested page fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
    /// The access was the processor's own walk of the guest's page tables, not the
    /// instruction's data access.
    pub page_walk: bool,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.execute {
            "execute"
        } else if self.write {
            "write"
        } else {
            "read"
        };
        f.write_str(kind)
    }
}

/// A port I/O instruction that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// OUT/OUTS (true) or IN/INS (false).
    pub write: bool,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix (count in RCX).
    pub rep: bool,
}

/// Why a vCPU stopped running, decoded. Instruction exits leave RIP at the instruction;
/// the handler calls [`Vcpu::skip_instruction`] once it has emulated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID: leaf in EAX, subleaf in ECX.
    Cpuid,
    /// HLT.
    Hlt,
    /// VMCALL/VMMCALL: a Xen hypercall, number in RAX.
    Hypercall,
    /// IN/OUT/INS/OUTS.
    Io(IoAccess),
    /// RDMSR (write = false) or WRMSR: index in ECX, value in EDX:EAX.
    Msr { write: bool },
    /// XSETBV: XCR index in ECX, value in EDX:EAX.
    Xsetbv,
    /// INVD or WBINVD.
    CacheFlush,
    /// The guest touched guest-physical memory its nested page tables do not allow.
    NestedPageFault {
        gpa: u64,
        access: Access,
        gla: Option<u64>,
    },
    /// The nested page tables themselves are malformed (a hypervisor bug).
    NestedPageMisconfig { gpa: u64 },
    /// A host interrupt arrived while the guest ran; the host has handled or will handle it.
    ExternalInterrupt,
    /// The guest can now take an interrupt (requested with [`Vcpu::request_interrupt_window`]).
    InterruptWindow,
    /// The guest can now take an NMI (requested with [`Vcpu::request_nmi_window`]).
    NmiWindow,
    /// The time slice set with [`Vcpu::set_slice_deadline`] ran out.
    SliceExpired,
    /// The guest triple-faulted (SVM: shutdown intercept).
    TripleFault,
    /// VM entry failed; `reason` says which check, decoded by the backend.
    EntryFailed { reason: &'static str, detail: u64 },
    /// Anything the backend does not decode: a raw exit code and qualification.
    Unhandled { code: u64, qualification: u64 },
}

impl Exit {
    /// Number of distinct kinds, for per-kind counters.
    pub const KINDS: usize = 16;

    /// A small index per kind (for statistics).
    pub fn kind(&self) -> usize {
        match self {
            Exit::Cpuid => 0,
            Exit::Hlt => 1,
            Exit::Hypercall => 2,
            Exit::Io(_) => 3,
            Exit::Msr { .. } => 4,
            Exit::Xsetbv => 5,
            Exit::CacheFlush => 6,
            Exit::NestedPageFault { .. } => 7,
            Exit::NestedPageMisconfig { .. } => 8,
            Exit::ExternalInterrupt => 9,
            Exit::InterruptWindow => 10,
            Exit::SliceExpired => 11,
            Exit::TripleFault => 12,
            Exit::EntryFailed { .. } => 13,
            Exit::Unhandled { .. } => 14,
            Exit::NmiWindow => 15,
        }
    }

    /// The name of kind `k`.
    pub fn kind_name(k: usize) -> &'static str {
        [
            "cpuid",
            "hlt",
            "hypercall",
            "io",
            "msr",
            "xsetbv",
            "cache-flush",
            "npf",
            "npf-misconfig",
            "ext-int",
            "int-window",
            "slice",
            "triple-fault",
            "entry-failed",
            "unhandled",
            "nmi-window",
        ][k.min(15)]
    }
}

/// An event to inject at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An external interrupt (e.g. the Xen event-channel callback vector).
    Interrupt(u8),
    /// An exception, with its error code if it has one.
    Exception { vector: u8, error_code: Option<u32> },
    /// A non-maskable interrupt (vector 2). The backend then holds further NMIs until
    /// the guest's IRET, as hardware does.
    Nmi,
}

/// Control and segment state the generic code reads (diagnostics, guest page walks).
#[derive(Clone, Copy, Debug, Default)]
pub struct ControlState {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs_selector: u16,
    /// Current privilege level.
    pub cpl: u8,
}

/// See [`Vcpu::trace_state`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceState {
    pub rip: u64,
    pub injecting: u64,
    pub delivering: u64,
}

/// What an instruction emulator needs beyond [`ControlState`]: the segment bases (ES, CS,
/// SS, DS, FS, GS, in the hardware's order) and the code segment's L and D/B bits.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmulationState {
    pub seg_base: [u64; 6],
    pub cs_long: bool,
    pub cs_default_big: bool,
}

/// Where a PVH vCPU starts (Xen `docs/misc/pvh.pandoc`): 32-bit protected mode, paging off,
/// flat 4 GiB code and data segments, EBX = physical address of `hvm_start_info`.
#[derive(Clone, Copy, Debug)]
pub struct PvhEntry {
    pub rip: u32,
    pub rbx: u32,
}

/// A segment register a start state gives: selector 0, `attr` in the packed 12-bit layout
/// (bits 0-3 type, 4 S, 5-6 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G; as the VMCB keeps it),
/// byte-granular `limit`. `attr == 0` is a null (unusable) segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartSegment {
    pub base: u64,
    pub limit: u32,
    pub attr: u16,
}

/// A complete, already validated start state for an offline vCPU (Xen's
/// `VCPUOP_initialise` with a `vcpu_hvm_context`): consistent CR0/CR4/EFER (EFER.LMA
/// set exactly when LME and PG are), RFLAGS with only defined bits and bit 1 set, CS/SS
/// DPL equal. FS and GS become flat read/write data, LDTR null, GDTR and IDTR empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartState {
    pub regs: GuestRegs,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: StartSegment,
    pub ds: StartSegment,
    pub ss: StartSegment,
    pub es: StartSegment,
    pub tr: StartSegment,
}

/// How a new vCPU starts.
#[derive(Clone, Copy, Debug)]
pub enum VcpuStart {
    /// At a PVH entry point (the boot vCPU).
    Pvh(PvhEntry),
    /// Waiting for INIT-SIPI (an AP): it must not be run until [`Vcpu::reset_to_sipi`].
    WaitForSipi,
}

/// What a backend can do, masked by the command line once at boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    /// Nested page tables may use 2 MiB pages.
    pub p2m_2m: bool,
    /// Nested page tables may use 1 GiB pages.
    pub p2m_1g: bool,
    /// Per-vCPU TLB tags (VPID / ASID).
    pub tagged_tlb: bool,
    /// A hardware timer that ends a guest slice (VMX preemption timer).
    pub slice_timer: bool,
}

/// The per-vCPU hardware interface a backend provides.
///
/// Hardware context: a vCPU is *loaded* on at most one CPU at a time. The scheduler calls
/// [`load`](Vcpu::load) on the CPU that is about to run it (after that CPU ran anything
/// else, or nothing), then [`run`](Vcpu::run) any number of times, then
/// [`put`](Vcpu::put) before that CPU runs another vCPU or the vCPU may move. Every
/// other method may be called only while the vCPU is loaded on the calling CPU, or before
/// its first load. Interrupts are disabled throughout (host policy, see `arch::x86::irq`).
pub trait Vcpu {
    /// Makes this CPU ready to run the vCPU: VMX makes its VMCS current (refreshing the
    /// host state if it last ran on another CPU); both backends check its ASID/VPID
    /// (taking a new one if stale, see [`asid`]) and restore its extended (XSAVE) state.
    fn load(&mut self);
    /// This CPU stops running the vCPU: saves its extended state. It stays valid to `load`
    /// again here; moving it to another CPU also needs the backend's VMCLEAR (VMX, later).
    fn put(&mut self);
    /// Enters the guest and returns at the next exit the backend does not handle itself.
    /// The vCPU must be loaded on this CPU. A host interrupt during the guest ends it with
    /// [`Exit::ExternalInterrupt`] after the interrupt has been handled (softirq bits set).
    fn run(&mut self) -> Exit;
    /// Puts the vCPU in the architectural state after INIT followed by a SIPI with
    /// `vector`: real mode at `vector << 12` (CS = `vector << 8`, IP 0), CR0 0x60000010,
    /// EFER 0, RFLAGS 2, EDX the CPU signature, other registers 0, extended state and
    /// XCR0 reset, no pending event. Also ends "waiting for SIPI".
    fn reset_to_sipi(&mut self, vector: u8);
    /// Puts the vCPU in `state` (after the INIT reset: extended state, XCR0, pending
    /// events and NMI blocking cleared). Also ends "waiting for SIPI". Err(()): the
    /// backend cannot enter that state (VMX: PAE paging whose PDPTEs are not valid RAM
    /// or have reserved bits set); the vCPU then still waits for SIPI.
    fn set_start_state(&mut self, state: &StartState) -> Result<(), ()>;
    /// Host frames the vCPU holds (VMCS/VMCB, bitmaps, XSAVE area), for per-domain
    /// accounting.
    fn frames(&self) -> u64;
    /// The vCPU's XCR0 (what its guest last loaded with XSETBV; 1 at reset).
    fn xcr0(&self) -> u64;
    /// The guest's general-purpose registers (RSP excluded).
    fn regs(&mut self) -> &mut GuestRegs;
    /// Control state for diagnostics and guest-virtual address walks.
    fn control_state(&self) -> ControlState;
    /// For the exit trace of a crash report: RIP, the event to be injected at the next
    /// entry, and the event the CPU was delivering when it last exited (raw: SVM
    /// EVENTINJ/EXITINTINFO, VMX entry interruption / IDT-vectoring information; bit 31
    /// valid, bit 11 error code valid, bits 10:8 type, 7:0 vector, and the error code in
    /// bits 63:32 as SVM has it).
    fn trace_state(&self) -> TraceState;
    /// Moves RIP past the instruction that caused the last exit.
    fn skip_instruction(&mut self);
    /// Queues an event for injection at the next entry.
    fn inject(&mut self, event: Event);
    /// True if the guest can take an external interrupt right now (IF set, no STI/MOV SS
    /// shadow, no event already being injected).
    fn interrupts_enabled(&self) -> bool;
    /// True if the guest can take an NMI right now: not still handling one (no IRET
    /// since the last), no STI/MOV SS shadow, no event already being injected.
    fn nmi_allowed(&self) -> bool;
    /// Asks for an [`Exit::NmiWindow`] (or any exit) as soon as the guest can take an NMI.
    fn request_nmi_window(&mut self, on: bool);
    /// Asks for an [`Exit::InterruptWindow`] as soon as the guest can take an interrupt.
    fn request_interrupt_window(&mut self, on: bool);
    /// Ends the guest's slice at this TSC value (None: no limit). Backends without a slice
    /// timer may ignore it.
    fn set_slice_deadline(&mut self, tsc: Option<u64>);
    /// Reads a guest MSR that lives in the VMCS/VMCB (EFER, PAT, syscall MSRs, ...);
    /// None if the backend does not hold it.
    fn read_msr(&self, index: u32) -> Option<u64>;
    /// Writes such an MSR; Err(()) if the value is invalid (the caller injects #GP),
    /// Ok(false) if the backend does not hold this MSR.
    fn write_msr(&mut self, index: u32, value: u64) -> Result<bool, ()>;
    /// Sets XCR0 for the guest; Err(()) if the value is not allowed (the caller injects #GP).
    fn set_xcr0(&mut self, value: u64) -> Result<(), ()>;
    /// Asks the hardware to drop cached nested translations of this vCPU (after the p2m
    /// changed).
    fn flush_nested_tlb(&mut self);
    /// After `put`, for a vCPU that goes offline: lets go of this CPU's hardware state
    /// (VMX: VMCLEAR), so that another CPU may set its state (`VCPUOP_initialise`) or
    /// run it without asking this one.
    fn detach(&mut self) {}
    /// The bytes of the instruction behind the last exit, when the hardware captured
    /// them (AMD decode assists on nested page faults); None otherwise, and the caller
    /// reads them from guest memory.
    fn exit_instruction_bytes(&self) -> Option<([u8; 15], usize)> {
        None
    }
    /// Segment state for emulating the instruction behind the last exit.
    fn emulation_state(&self) -> EmulationState;
    /// Retires an emulated instruction: RIP and RFLAGS as the emulator left them, and
    /// the STI/MOV SS interrupt shadow ended as by any completed instruction.
    fn complete_emulation(&mut self, rip: u64, rflags: u64);
}

/// A virtualization backend: brings up the CPU and creates vCPUs.
pub trait Backend: Send + Sync + 'static {
    /// The backend's vCPU type (its hardware half moves between CPUs with the vCPU).
    type Vcpu: Vcpu + Send;
    /// The nested page-table format (EPT or NPT).
    type P2m: pagetable::Format;
    /// "VMX" or "SVM", for the banner.
    const NAME: &'static str;
    /// Capabilities after bring-up.
    fn caps(&self) -> Caps;
    /// Creates a vCPU that starts as `start` says, translating guest-physical addresses
    /// through the nested page table rooted at `p2m_root`. Callable at any time through a
    /// shared reference (the backend is meant to live in a `static`). The vCPU frees its
    /// hardware structures when dropped (it must not be loaded on another CPU then).
    /// `privilege` sets what exits besides what every vCPU must: which I/O ports
    /// (`hvm::ioperm`) and, on SVM, whether MOV to CR3 does.
    fn create_vcpu(
        &self,
        p2m_root: u64,
        start: VcpuStart,
        privilege: Privilege,
    ) -> Result<Self::Vcpu, BackendError>;
}

/// The domain's standing, as far as a vCPU's intercepts go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// The control domain: the host's I/O ports except the hypervisor's
    /// (`ioperm::DOM0_INTERCEPTED`), and no exit for MOV to CR3 on SVM.
    Control,
    /// Everything that can be intercepted for checking is.
    Unprivileged,
}

impl Privilege {
    pub fn of(control: bool) -> Privilege {
        if control {
            Privilege::Control
        } else {
            Privilege::Unprivileged
        }
    }
}

/// Why a backend could not start or create a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The CPU lacks a required feature.
    Unsupported(&'static str),
    /// Firmware locked the feature off (IA32_FEATURE_CONTROL / VM_CR).
    LockedByFirmware(&'static str),
    /// A required control cannot be set on this CPU.
    ControlUnavailable { msr: u32, bit: u32 },
    /// No memory for a VMCS/VMCB or bitmap.
    OutOfMemory,
    /// A VMX instruction failed.
    InstructionFailed {
        instruction: &'static str,
        error: u64,
    },
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unsupported(what) => write!(f, "CPU does not support {what}"),
            BackendError::LockedByFirmware(what) => {
                write!(f, "{what} is disabled and locked by firmware")
            }
            BackendError::ControlUnavailable { msr, bit } => {
                write!(
                    f,
                    "required control bit {bit} not allowed by capability MSR {msr:#x}"
                )
            }
            BackendError::OutOfMemory => write!(f, "out of memory"),
            BackendError::InstructionFailed { instruction, error } => {
                write!(f, "{instruction} failed (error {error})")
            }
        }
    }
}
