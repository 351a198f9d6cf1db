//! Thin wrappers around x86_64 instructions the test guests need: CPUID, MSRs, TSC, port
//! I/O, control registers, interrupts and halting.
//!
//! Invariant: every wrapper is a single instruction (or a fixed short sequence) with no
//! memory side effects beyond what the instruction architecturally does. Callers: the rest of
//! the runtime and the test guests.

use core::arch::asm;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID exists on every x86_64 CPU, cannot fault and has no memory effects (a
    // hypervisor may intercept it, which is the point of some tests). LLVM reserves RBX, so
    // it is saved in a scratch register around the instruction.
    unsafe {
        asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    CpuidResult {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// The 12-byte vendor string from CPUID leaf 0 (EBX, EDX, ECX order).
pub fn cpu_vendor() -> [u8; 12] {
    let r = cpuid(0, 0);
    regs_to_str(r.ebx, r.edx, r.ecx)
}

/// Concatenates three little-endian registers into 12 bytes (CPUID signature order is up to
/// the caller).
pub fn regs_to_str(a: u32, b: u32, c: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&a.to_le_bytes());
    out[4..8].copy_from_slice(&b.to_le_bytes());
    out[8..12].copy_from_slice(&c.to_le_bytes());
    out
}

/// This vCPU's id and its domain's id from Xen's HVM CPUID leaf (0x40000004: EBX and ECX,
/// when EAX says they are present), or `None` without Xen or without the flags.
pub fn xen_vcpu_and_domid() -> Option<(u32, u16)> {
    use xen_abi::arch_x86::cpuid::{
        xen_cpuid_leaf, XEN_CPUID_LEAF_HVM, XEN_HVM_CPUID_DOMID_PRESENT,
        XEN_HVM_CPUID_VCPU_ID_PRESENT,
    };
    if !crate::hypercall::xen_signature_present() {
        return None;
    }
    let r = cpuid(xen_cpuid_leaf(XEN_CPUID_LEAF_HVM), 0);
    let want = XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT;
    (r.eax & want == want).then_some((r.ebx, r.ecx as u16))
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist (otherwise the CPU raises #GP) and reading it must have no side effect
/// the caller is not prepared for.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR only writes EAX/EDX.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and accept `value`, and the write must not break the runtime's invariants
/// (e.g. EFER.LME, or the hypercall-page MSR pointing at memory in use).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid. WRMSR may change memory
    // (hypercall page), so no `nomem`.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// Reads the time-stamp counter (not ordered against earlier loads; see [`rdtsc_ordered`]).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only writes EAX/EDX; it is allowed in ring 0 regardless of CR4.TSD.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Reads the TSC after an LFENCE, so it is not executed before earlier loads (as Linux's
/// `rdtsc_ordered` does for pvclock reads).
pub fn rdtsc_ordered() -> u64 {
    // SAFETY: LFENCE has no effects besides ordering; SSE2 (and thus LFENCE) is architectural
    // on x86_64.
    unsafe { asm!("lfence", options(nostack, preserves_flags)) };
    rdtsc()
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Writing `port` must have no effect that breaks memory safety (e.g. a DMA engine).
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; OUT has no memory effects here.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading `port` must have no effect that breaks memory safety.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Disables maskable interrupts.
pub fn cli() {
    // SAFETY: clearing IF only delays interrupts; the runtime's code does not rely on them.
    // Not `nomem`: interrupt handlers taken up to here change memory (the IDT's counters),
    // so loads after the CLI must not be hoisted above it.
    unsafe { asm!("cli", options(nostack)) };
}

/// Enables maskable interrupts. A pending interrupt is taken after the next instruction
/// (STI's interrupt shadow).
pub fn sti() {
    // SAFETY: the runtime installed an IDT whose vectors >= 32 only count and return, so
    // taking an interrupt is harmless.
    // Not `nomem`: see [`cli`].
    unsafe { asm!("sti", options(nostack)) };
}

/// Enables interrupts and halts in one go (`sti; hlt`): an interrupt that arrives after the
/// STI is taken only once HLT executes (STI's interrupt shadow), so a wakeup cannot be lost.
/// Returns with interrupts **disabled** again.
///
/// The runtime's IDT (installed before `main`) returns from any vector >= 32 without doing
/// anything, so an injected interrupt just ends the halt.
pub fn sti_hlt_cli() {
    // SAFETY: the runtime installed an IDT whose vectors >= 32 are no-op handlers, so taking
    // an interrupt here is harmless.
    // Not `nomem`: the interrupt that ends the HLT changes memory (see [`cli`]).
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
}

/// Halts forever with interrupts disabled. A hypervisor that treats `HLT` with IF=0 as
/// "vCPU down" powers the domain off here.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI/HLT in ring 0 only stop this vCPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A spin-loop hint.
pub fn pause() {
    core::hint::spin_loop();
}
