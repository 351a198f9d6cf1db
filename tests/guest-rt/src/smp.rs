//! Running code on several vCPUs: start vCPU N at a Rust function with its own stack, Xen's
//! way (`VCPUOP_initialise` with a 64-bit `vcpu_hvm_context`, then `VCPUOP_up`), and ask
//! which vCPU the code runs on.
//!
//! ```ignore
//! fn ap(me: u32) { /* runs on vCPU `me`, interrupts off */ }
//! guest_rt::smp::start(1, ap)?;          // initialise + up
//! ```
//!
//! The started vCPU shares everything with vCPU 0: the boot page tables (CR3, CR0, CR4 and
//! EFER are vCPU 0's at the time of [`context_64`]), the runtime's GDT and IDT (an exception
//! on any vCPU fails the test as on vCPU 0). It enters at a small trampoline that loads the
//! GDT and segments (the hypervisor starts it with selector-0 flat segments), the IDT, and
//! calls the function with its vCPU id on a stack of [`STACK_SIZE`] bytes of its own
//! (vCPUs 1 to [`MAX_VCPUS`] − 1). When the function returns the vCPU takes itself down
//! (`VCPUOP_down`), again each time it is brought up.
//!
//! Invariant: a vCPU is started once per test (its stack is not shared); the runtime's
//! other helpers are vCPU 0's unless they say otherwise (the event consumer in
//! [`crate::evtchn`] looks at `vcpu_info[0]` only: other vCPUs use [`take_upcall`]).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use xen_abi::vcpu::{VcpuHvmContext, VcpuHvmX86_64, VCPUOP_DOWN, VCPUOP_INITIALISE, VCPUOP_UP};

use crate::{hypercall, pvclock, vcpu, Fail};

/// vCPUs this runtime has stacks for (vCPU 0 uses the boot stack).
pub const MAX_VCPUS: usize = 8;
/// Stack bytes per started vCPU.
pub const STACK_SIZE: usize = 16 * 1024;

/// What a started vCPU runs: called with its vCPU id, interrupts off.
pub type ApFn = fn(u32);

#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_VCPUS]>);

// SAFETY: each stack is used only by the vCPU it was handed to (module invariant); the
// runtime itself only takes their addresses.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_VCPUS]));

/// vCPU 0's IDTR (limit in bits 0-15, base above), captured by [`context_64`] and loaded
/// by every started vCPU.
static IDTR_LIMIT: AtomicU64 = AtomicU64::new(0);
static IDTR_BASE: AtomicU64 = AtomicU64::new(0);

/// The range `[bottom, top)` of vCPU `vcpu`'s stack (None for vCPU 0 or beyond
/// [`MAX_VCPUS`]).
pub fn stack_range(vcpu: u32) -> Option<(u64, u64)> {
    let i = usize::try_from(vcpu)
        .ok()
        .filter(|&i| i > 0 && i < MAX_VCPUS)?;
    let base = STACKS.0.get() as u64 + (i * STACK_SIZE) as u64;
    Some((base, base + STACK_SIZE as u64))
}

/// The vCPU the caller runs on (Xen's HVM CPUID leaf, `XEN_HVM_CPUID_VCPU_ID_PRESENT`).
pub fn this_vcpu() -> Option<u32> {
    crate::arch::xen_vcpu_and_domid().map(|(v, _)| v)
}

#[cfg(target_os = "none")]
fn trampoline() -> u64 {
    extern "C" {
        static guest_rt_ap_start64: u8;
    }
    // Only the address is taken.
    core::ptr::addr_of!(guest_rt_ap_start64) as u64
}

#[cfg(not(target_os = "none"))]
fn trampoline() -> u64 {
    0
}

fn read_cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading CR0/CR3/CR4 has no side effect (ring 0 guest code).
    unsafe {
        match n {
            0 => {
                core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags))
            }
            3 => {
                core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags))
            }
            _ => {
                core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags))
            }
        }
    }
    v
}

/// The 64-bit start state for vCPU `vcpu` (1 ≤ vcpu < [`MAX_VCPUS`]) running `entry`: RIP
/// the runtime's trampoline, RSP the top of its stack, RDI its id, RSI `entry`, RFLAGS 2
/// (interrupts off), CR0/CR3/CR4/EFER as on the calling vCPU. Also records the caller's
/// IDT for the started vCPU. None for a vCPU without a stack.
pub fn context_64(vcpu: u32, entry: ApFn) -> Option<VcpuHvmContext> {
    let (_, top) = stack_range(vcpu)?;
    let mut idtr = [0u8; 10];
    // SAFETY: SIDT stores 10 bytes into the buffer.
    unsafe {
        core::arch::asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack, preserves_flags))
    };
    IDTR_LIMIT.store(
        u64::from(u16::from_le_bytes([idtr[0], idtr[1]])),
        Ordering::SeqCst,
    );
    let mut base = [0u8; 8];
    base.copy_from_slice(&idtr[2..]);
    IDTR_BASE.store(u64::from_le_bytes(base), Ordering::SeqCst);
    // SAFETY: EFER exists on every x86-64 CPU; reading it has no side effect.
    let efer = unsafe { crate::arch::rdmsr(0xc000_0080) };
    Some(VcpuHvmContext::from_64(&VcpuHvmX86_64 {
        rip: trampoline(),
        rsp: top,
        rdi: vcpu.into(),
        rsi: entry as usize as u64,
        rflags: 0x2,
        cr0: read_cr(0),
        cr3: read_cr(3),
        cr4: read_cr(4),
        efer,
        ..Default::default()
    }))
}

/// `VCPUOP_initialise(vcpu, ctx)`: the raw result.
pub fn initialise(vcpu: u32, ctx: &VcpuHvmContext) -> i64 {
    // SAFETY: `ctx` is a live vcpu_hvm_context, only read.
    unsafe { vcpu::op(VCPUOP_INITIALISE, vcpu, core::ptr::from_ref(ctx) as u64) }
}

/// `VCPUOP_up(vcpu)`: the raw result.
pub fn up(vcpu: u32) -> i64 {
    // SAFETY: up takes no argument.
    unsafe { vcpu::op(VCPUOP_UP, vcpu, 0) }
}

/// `VCPUOP_down(vcpu)`: the raw result (for the caller itself it returns once the vCPU is
/// up again).
pub fn down(vcpu: u32) -> i64 {
    // SAFETY: down takes no argument.
    unsafe { vcpu::op(VCPUOP_DOWN, vcpu, 0) }
}

/// Starts vCPU `vcpu` at `entry` ([`context_64`], [`initialise`], [`up`]).
pub fn start(vcpu: u32, entry: ApFn) -> Result<(), Fail> {
    let ctx = context_64(vcpu, entry)
        .ok_or_else(|| Fail::new(format_args!("no stack for vCPU {vcpu}")))?;
    let rc = initialise(vcpu, &ctx);
    if rc != 0 {
        return Err(Fail::new(format_args!(
            "VCPUOP_initialise(vCPU {vcpu}) returned {}",
            hypercall::describe(rc)
        )));
    }
    let rc = up(vcpu);
    if rc != 0 {
        return Err(Fail::new(format_args!(
            "VCPUOP_up(vCPU {vcpu}) returned {}",
            hypercall::describe(rc)
        )));
    }
    Ok(())
}

/// Takes the events signalled to `vcpu` (below 32, shared_info mapped): clears
/// `vcpu_info[vcpu].evtchn_upcall_pending` and its `evtchn_pending_sel` (as an event
/// handler does, so that the next event sets them again) and returns whether either was
/// set. The ports themselves stay pending for the caller to test and clear.
pub fn take_upcall(vcpu: u32) -> bool {
    if !pvclock::is_mapped() || vcpu >= 32 {
        return false;
    }
    let at = pvclock::shared_info_gpa() as usize + vcpu as usize * 64;
    // SAFETY: shared_info is mapped (identity) for the rest of the run; vcpu_info[vcpu]
    // (64 bytes each, 32 of them) starts the page: the upcall flag is its byte 0, the
    // selector its 8-aligned word at offset 8. The hypervisor updates both atomically.
    let (flag, sel) = unsafe { (&*(at as *const AtomicU8), &*((at + 8) as *const AtomicU64)) };
    // The flag first, then the selector (an event after this sets both again); a selector
    // found set counts too (its event may have come after the flag was cleared).
    let flagged = flag.swap(0, Ordering::SeqCst) != 0;
    let selected = sel.swap(0, Ordering::SeqCst) != 0;
    flagged || selected
}

/// Called by the trampoline on a started vCPU (not for direct use).
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn guest_rt_ap_main(vcpu: u64, entry: u64) -> ! {
    let limit = IDTR_LIMIT.load(Ordering::SeqCst) as u16;
    // SAFETY: vCPU 0's IDT (a static of the runtime) was captured by `context_64`.
    unsafe { crate::idt::lidt(IDTR_BASE.load(Ordering::SeqCst), limit) };
    // SAFETY: `context_64` put an `ApFn` in RSI, which the trampoline passes on.
    let f: ApFn = unsafe { core::mem::transmute::<usize, ApFn>(entry as usize) };
    let me = vcpu as u32;
    f(me);
    loop {
        down(me);
    }
}

// The 64-bit entry of a started vCPU: the runtime's GDT, CS through a far return, flat
// data segments, then guest_rt_ap_main(RDI = vCPU id, RSI = function) on its own stack
// (RSP 16-byte aligned, as the context gives it).
#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .text.guest_rt.ap, "ax", @progbits
    .code64
    .global guest_rt_ap_start64
guest_rt_ap_start64:
    lgdt [rip + guest_rt_gdt_ptr]
    lea rax, [rip + 1f]
    push 0x08
    push rax
    retfq
1:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    xor eax, eax
    mov fs, eax
    mov gs, eax
    xor ebp, ebp
    call guest_rt_ap_main
2:
    cli
    hlt
    jmp 2b
    .popsection
    "#
);
