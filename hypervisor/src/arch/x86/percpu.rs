//! Per-CPU data, reached through the GS base.
//!
//! Each CPU owns one [`PerCpu`], allocated once and never freed; IA32_GS_BASE points at it
//! and its first field points at itself, so [`this`] is one `mov rax, gs:[0]`. The
//! hypervisor never executes SWAPGS and never loads GS from a selector after boot, so
//! the GS base stays put. Across guest runs it survives because both backends restore
//! it: SVM with VMSAVE/VMLOAD of the host state around VMRUN (`svm/entry.rs`), VMX from
//! the VMCS host-state field HOST_GS_BASE, written from IA32_GS_BASE at vCPU set-up and
//! whenever a vCPU is loaded on a CPU it did not last run on.
//!
//! Every field is an atomic (or a lock only its own CPU takes outside interrupt handlers),
//! so other CPUs may raise softirqs here and interrupt handlers may touch `softirq` and
//! the timer deadline without locks. Host code runs with interrupts disabled; see
//! [`super::irq`] for where they are taken.
#![allow(unsafe_code)]

use crate::arch::x86::regs::{rdmsr, wrmsr};
use crate::hvm::asid::AsidAllocator;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

/// Softirq bits, raised by interrupt handlers (or other CPUs) and consumed by the
/// scheduler loop with [`take_softirqs`].
pub mod softirq {
    /// The host timer armed with `lapic::arm_deadline` reached its deadline.
    pub const TIMER: u32 = 1 << 0;
    /// Something asked this CPU to run the scheduler.
    pub const SCHEDULE: u32 = 1 << 1;
    /// An event-check IPI: look at pending events of the vCPUs here.
    pub const EVENT_CHECK: u32 = 1 << 2;
    /// A call-function IPI: run the queued cross-CPU call.
    pub const CALL_FUNCTION: u32 = 1 << 3;
}

/// Most CPUs the per-CPU table can hold.
pub const MAX_CPUS: usize = 64;

const MSR_GS_BASE: u32 = 0xc000_0101;

/// One CPU's private data.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this structure: read as `gs:[0]` by [`this`]. Must stay the first field.
    self_ptr: *const PerCpu,
    /// Index of this CPU (0 = boot CPU).
    pub index: u32,
    /// Local APIC id (x2APIC id when in x2APIC mode).
    pub apic_id: AtomicU32,
    /// Pending [`softirq`] bits.
    pub softirq: AtomicU32,
    /// The TSC deadline of the armed host timer (0: disarmed).
    pub timer_deadline: AtomicU64,
    /// Token of the vCPU whose extended (x87/SSE/AVX...) state is in this CPU's registers
    /// (0: none). Backends use the physical address of the vCPU's save area.
    pub fpu_owner: AtomicU64,
    /// ASID (SVM) / VPID (VMX) allocation by generation.
    pub asids: Mutex<AsidAllocator>,
    /// SVM: the whole TLB must be flushed at the next VMRUN (a new ASID generation began).
    pub tlb_flush_pending: AtomicBool,
    /// Backend per-CPU host area: SVM's VMSAVE area for the host (physical address).
    pub host_save_area: AtomicU64,
    /// VMX: physical address of the VMCS current on this CPU (0: none).
    pub current_vmcs: AtomicU64,
    /// VMX: the vCPU (by VMCS address) whose lazily switched guest MSRs this CPU holds.
    pub lazy_msr_owner: AtomicU64,
    /// The domain whose vCPU ran last on this CPU (`u32::MAX`: none yet), for the IBPB on
    /// a domain switch (`spec::enter_domain`).
    pub last_domain: AtomicU32,
    /// The system time (ns) the host timer is armed for (`u64::MAX`: disarmed; 0: not
    /// known), so that the many entries of one slice program the LAPIC once.
    pub armed_ns: AtomicU64,
    /// When the vCPU running here must give the CPU back at the latest because a wake-up
    /// was held back by the scheduler's rate limit (`u64::MAX`: no such time).
    pub resched_at: AtomicU64,
    /// The earliest deadline in this CPU's heap of vCPU timers (`u64::MAX`: none).
    pub timer_next: AtomicU64,
}

// SAFETY: `self_ptr` is only ever read (it names the structure itself, which lives
// forever); every other field is an atomic or a lock.
unsafe impl Sync for PerCpu {}
// SAFETY: as above: the raw pointer is immutable and points at 'static data.
unsafe impl Send for PerCpu {}

impl PerCpu {
    /// Raises softirq `bits` on this CPU (from any CPU; the caller sends an IPI if the
    /// target must notice promptly).
    pub fn raise(&self, bits: u32) {
        self.softirq.fetch_or(bits, Ordering::SeqCst);
    }
}

/// Every CPU's data by index, filled as CPUs come up.
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static ONLINE: AtomicU32 = AtomicU32::new(0);

/// Allocates the boot CPU's data (index 0) and points GS at it. Needs the heap.
pub fn init_boot_cpu() {
    init_cpu(0);
}

/// Allocates CPU `index`'s data and points this CPU's GS base at it. Call once per CPU,
/// on that CPU, with interrupts disabled.
pub fn init_cpu(index: u32) -> &'static PerCpu {
    assert!((index as usize) < MAX_CPUS, "CPU index {index} too large");
    let p: &'static mut PerCpu = Box::leak(Box::new(PerCpu {
        self_ptr: core::ptr::null(),
        index,
        apic_id: AtomicU32::new(0),
        softirq: AtomicU32::new(0),
        timer_deadline: AtomicU64::new(0),
        fpu_owner: AtomicU64::new(0),
        asids: Mutex::new(AsidAllocator::new()),
        tlb_flush_pending: AtomicBool::new(false),
        host_save_area: AtomicU64::new(0),
        current_vmcs: AtomicU64::new(0),
        lazy_msr_owner: AtomicU64::new(0),
        last_domain: AtomicU32::new(u32::MAX),
        armed_ns: AtomicU64::new(u64::MAX),
        resched_at: AtomicU64::new(u64::MAX),
        timer_next: AtomicU64::new(u64::MAX),
    }));
    p.self_ptr = p as *const PerCpu;
    let p: &'static PerCpu = p;
    // SAFETY: GS base is how `this()` finds the per-CPU block; `p` is that block, leaked
    // for the life of the machine, so every later GS-relative access reads valid memory.
    unsafe { wrmsr(MSR_GS_BASE, p as *const PerCpu as u64) };
    CPUS[index as usize].store(p as *const PerCpu as *mut PerCpu, Ordering::Release);
    ONLINE.fetch_add(1, Ordering::SeqCst);
    p
}

/// True once this CPU's GS base points at its data (safe to call any time).
#[allow(dead_code)] // for AP bring-up and fatal paths
pub fn ready() -> bool {
    let base = rdmsr(MSR_GS_BASE);
    base != 0
        && CPUS
            .iter()
            .any(|c| c.load(Ordering::Acquire) as u64 == base)
}

/// This CPU's data. Only valid after [`init_cpu`] ran on this CPU.
#[inline]
pub fn this() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: GS base points at this CPU's PerCpu (set by `init_cpu`, preserved across
    // guest runs as the module documentation explains), whose first field is its own
    // address; the load reads 8 bytes of that live, immutable field.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    debug_assert!(!p.is_null(), "per-CPU data used before init_cpu");
    // SAFETY: `p` was produced by Box::leak in `init_cpu` and is never freed or mutated
    // except through atomics.
    unsafe { &*p }
}

/// CPU `index`'s data, if that CPU is up.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    let p = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: non-null entries come from Box::leak in `init_cpu` and live forever.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// How many CPUs have per-CPU data.
#[allow(dead_code)] // for AP bring-up (next issue)
pub fn online() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// Interrupts that found a guest's GS base loaded (see [`claim_gs`]).
pub static FOREIGN_GS: AtomicU64 = AtomicU64::new(0);

/// Makes the GS base point at this CPU's data if it does not, and returns the base to
/// put back when the interrupt handler is done. The SVM entry code runs with a guest's
/// GS base between its VMLOAD of the guest state and the VMLOAD of the host's, with
/// GIF clear so that no interrupt is taken there; under QEMU TCG with several CPUs an
/// interrupt has been seen to arrive inside that window anyway (a hypervisor page fault
/// on `gs:[0]` in the timer handler, with guest register values live). The handler then
/// finds its CPU by its LAPIC id, and the window's code resumes with the guest's base.
pub fn claim_gs(apic_id: impl FnOnce() -> u32) -> Option<u64> {
    let base = rdmsr(MSR_GS_BASE);
    if CPUS
        .iter()
        .any(|c| c.load(Ordering::Relaxed) as u64 == base && base != 0)
    {
        return None;
    }
    let id = apic_id();
    let mine = CPUS.iter().map(|c| c.load(Ordering::Acquire)).find(|&p| {
        // SAFETY: non-null entries come from Box::leak in `init_cpu` and live forever.
        !p.is_null() && unsafe { &*p }.apic_id.load(Ordering::Relaxed) == id
    })?;
    FOREIGN_GS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `mine` is this CPU's block (its LAPIC id), leaked for the life of the
    // machine; the caller puts the old base back before the interrupted code resumes.
    unsafe { wrmsr(MSR_GS_BASE, mine as u64) };
    Some(base)
}

/// Puts back the GS base [`claim_gs`] replaced.
pub fn release_gs(saved: Option<u64>) {
    if let Some(base) = saved {
        // SAFETY: the value the interrupted code had; it reads it only through guest
        // state (VMSAVE), never as per-CPU data.
        unsafe { wrmsr(MSR_GS_BASE, base) };
    }
}

/// Raises softirq `bits` on this CPU.
pub fn raise_softirq(bits: u32) {
    this().raise(bits);
}

/// Takes (and clears) this CPU's pending softirq bits.
pub fn take_softirqs() -> u32 {
    this().softirq.swap(0, Ordering::SeqCst)
}
