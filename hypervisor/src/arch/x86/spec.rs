//! Applies the speculation mitigations `hvm::spec` chooses: SPEC_CTRL, PRED_CMD,
//! FLUSH_CMD and VERW around guest entry and exit, and the RSB refill and register scrub
//! the entry stubs include ([`exit_scrub_asm`]).
#![allow(unsafe_code)]

use super::percpu;
use super::regs::{rdmsr, wrmsr};
use crate::hvm::spec::{
    Ibrs, Mitigations, SpecCpu, FLUSH_CMD_L1D, MSR_ARCH_CAPABILITIES, MSR_FLUSH_CMD, MSR_PRED_CMD,
    MSR_SPEC_CTRL, PRED_CMD_IBPB, SPEC_CTRL_IBRS,
};
use core::sync::atomic::Ordering;
use raw_cpuid::CpuId;

static CHOSEN: spin::Once<Mitigations> = spin::Once::new();

/// Assembly for the entry stubs, placed after the guest's registers are saved and before
/// the first `ret`: refills the return stack buffer with 32 entries that point at traps
/// (so no guest-trained return prediction survives the exit) and zeroes the caller-saved
/// registers, which would otherwise still hold guest values. Clobbers rcx, rdx, rsi,
/// rdi, r8-r11 and flags; uses 16 bytes of stack transiently. Labels 771-773 are its own.
#[macro_export]
macro_rules! exit_scrub_asm {
    () => {
        r#"
    mov ecx, 16
771:
    call 772f
    int3
772:
    call 773f
    int3
773:
    add rsp, 16
    dec ecx
    jnz 771b
    lfence
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
"#
    };
}

/// Chooses this machine's mitigations from the boot CPU (once) and applies the per-CPU
/// part (enhanced IBRS) on the calling CPU. `vmx`: the backend is VMX.
pub fn init(vmx: bool) -> Mitigations {
    let m = *CHOSEN.call_once(|| {
        let cpuid = CpuId::new();
        let leaf7_edx = cpuid
            .get_extended_feature_info()
            .map_or(0, |_| raw_leaf(7, 0).3);
        let ext8_ebx = if cpuid
            .get_extended_processor_and_feature_identifiers()
            .is_some()
            && raw_leaf(0x8000_0000, 0).0 >= 0x8000_0008
        {
            raw_leaf(0x8000_0008, 0).1
        } else {
            0
        };
        let arch_caps = if SpecCpu::has_arch_caps(leaf7_edx) {
            rdmsr(MSR_ARCH_CAPABILITIES)
        } else {
            0
        };
        Mitigations::select(SpecCpu {
            leaf7_edx,
            ext8_ebx,
            arch_caps,
            vmx,
        })
    });
    if m.ibrs == Ibrs::AlwaysOn {
        // SAFETY: CPUID enumerates IBRS (that is how `select` chose it); setting it only
        // restricts branch prediction.
        unsafe { wrmsr(MSR_SPEC_CTRL, SPEC_CTRL_IBRS) };
    }
    m
}

fn raw_leaf(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

fn chosen() -> Mitigations {
    CHOSEN.get().copied().unwrap_or(Mitigations::NONE)
}

/// Called when this CPU is about to run a vCPU of `domid`: an IBPB if it last ran
/// another domain, so branch predictions one domain trained cannot steer another.
pub fn enter_domain(domid: u32) {
    let last = percpu::this().last_domain.swap(domid, Ordering::Relaxed);
    if last != domid && last != u32::MAX && chosen().ibpb_on_domain_switch {
        // SAFETY: CPUID enumerates IBPB; PRED_CMD is write-only and IBPB only discards
        // branch predictions.
        unsafe { wrmsr(MSR_PRED_CMD, PRED_CMD_IBPB) };
    }
}

/// Right before VMLAUNCH/VMRESUME/VMRUN (with interrupts off): drop host-only IBRS, and
/// flush the L1D or the CPU buffers where the CPU needs it.
#[inline]
pub fn before_entry() {
    let m = chosen();
    if m.ibrs == Ibrs::AroundGuest {
        // SAFETY: CPUID enumerates IBRS; clearing it only relaxes branch prediction for
        // the guest, which cannot reach SPEC_CTRL itself.
        unsafe { wrmsr(MSR_SPEC_CTRL, 0) };
    }
    if m.l1d_flush_on_entry {
        // SAFETY: CPUID enumerates L1D_FLUSH; the flush writes back and invalidates the
        // L1 data cache, which is invisible to software.
        unsafe { wrmsr(MSR_FLUSH_CMD, FLUSH_CMD_L1D) };
    } else if m.verw_on_entry {
        verw();
    }
}

/// Right after a VM exit: IBRS back on for host code where it is used that way.
#[inline]
pub fn after_exit() {
    if chosen().ibrs == Ibrs::AroundGuest {
        // SAFETY: CPUID enumerates IBRS; setting it only restricts branch prediction.
        unsafe { wrmsr(MSR_SPEC_CTRL, SPEC_CTRL_IBRS) };
    }
}

/// VERW with a valid data selector: on MD_CLEAR parts it also overwrites the CPU's
/// store, fill and load buffers.
fn verw() {
    // SAFETY: VERW only reads the selector operand (our own DS, a valid data segment)
    // and sets ZF; no memory is written.
    unsafe {
        core::arch::asm!(
            "sub rsp, 8",
            "mov word ptr [rsp], ds",
            "verw word ptr [rsp]",
            "add rsp, 8",
            options(nostack, preserves_flags)
        )
    };
}
