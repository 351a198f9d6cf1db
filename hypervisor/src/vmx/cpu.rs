//! Per-CPU VMX bring-up (Intel SDM Vol. 3C 24.6-24.8): detect, check IA32_FEATURE_CONTROL,
//! apply the CR0/CR4 fixed bits, set CR4.VMXE, VMXON.
#![allow(unsafe_code)]

use super::controls::{apply_fixed, VmxCaps};
use super::vmcs;
use crate::arch::x86::regs::rdmsr;
use crate::hvm::BackendError;
use crate::mm::phys;
use core::arch::asm;
use core::arch::x86_64::__cpuid_count;
use x86_64::registers::model_specific::Msr;

const MSR_FEATURE_CONTROL: u32 = 0x3a;
const FC_LOCK: u64 = 1 << 0;
const FC_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;
const CR4_OSXSAVE: u64 = 1 << 18;

/// CPUID leaf `leaf`, subleaf `sub`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects; we run at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: as for `read_cr0`.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: as for `read_cr0`.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Sets DR6 (the guest's, switched by `held`; the hypervisor uses none) to
/// report an intercepted #DB before it is reflected.
pub fn write_dr6(value: u64) {
    // SAFETY: DR6 is a status register; writing it changes no mapping, control flow or
    // breakpoint, and the hypervisor does not read it.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must not break the hypervisor's own execution
/// environment (the callers write VMX, guest-only syscall MSRs, or feature-control bits).
pub unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(index).write(value) };
}

/// Detects VMX and reads its capability MSRs; checks and, if unlocked, sets
/// IA32_FEATURE_CONTROL.
pub fn detect() -> Result<VmxCaps, BackendError> {
    let (_, _, ecx, _) = cpuid(1, 0);
    if ecx & (1 << 5) == 0 {
        return Err(BackendError::Unsupported("VMX"));
    }
    let fc = rdmsr(MSR_FEATURE_CONTROL);
    if fc & FC_LOCK != 0 && fc & FC_VMX_OUTSIDE_SMX == 0 {
        return Err(BackendError::LockedByFirmware("VMX"));
    }
    if fc & FC_LOCK == 0 {
        // SAFETY: IA32_FEATURE_CONTROL exists when CPUID reports VMX; enabling VMX outside
        // SMX and locking changes nothing else about this CPU.
        unsafe { wrmsr(MSR_FEATURE_CONTROL, fc | FC_LOCK | FC_VMX_OUTSIDE_SMX) };
    }
    let caps = VmxCaps::read(rdmsr);
    if caps.region_size() > 4096 || caps.vmcs_memtype() != 6 {
        return Err(BackendError::Unsupported(
            "VMCS in write-back memory of at most 4 KiB",
        ));
    }
    if !caps.ept() {
        return Err(BackendError::Unsupported("EPT (4-level, write-back)"));
    }
    if !caps.unrestricted_guest() {
        return Err(BackendError::Unsupported("VMX unrestricted guest"));
    }
    // The first CPU to get here is the boot CPU: APs must match its capabilities.
    BOOT_CAPS.call_once(|| caps);
    Ok(caps)
}

/// The boot CPU's VMX capability MSRs, which every AP must match.
static BOOT_CAPS: spin::Once<VmxCaps> = spin::Once::new();

/// Puts an AP into VMX root operation after the boot CPU's checks (`detect`) and a check
/// that its capability MSRs are exactly the boot CPU's (the VMCS controls were derived from
/// those). Returns the VMXON region's physical address.
pub fn enable_ap() -> Result<u64, BackendError> {
    let caps = detect()?;
    if BOOT_CAPS.get() != Some(&caps) {
        return Err(BackendError::Unsupported(
            "VMX capability MSRs identical to the boot CPU's",
        ));
    }
    enable(&caps)
}

/// Puts this CPU into VMX root operation. Returns the VMXON region's physical address.
pub fn enable(caps: &VmxCaps) -> Result<u64, BackendError> {
    let cr0 = apply_fixed(read_cr0(), caps.cr0_fixed0, caps.cr0_fixed1);
    let mut cr4 = apply_fixed(read_cr4() | CR4_VMXE, caps.cr4_fixed0, caps.cr4_fixed1);
    if cpuid(1, 0).2 & (1 << 26) != 0 {
        // XSAVE: OSXSAVE lets the backend switch XCR0 to the guest's value with XSETBV.
        cr4 |= CR4_OSXSAVE;
    }
    // SAFETY: the fixed-bit MSRs say these CR0/CR4 values are valid in VMX operation; the
    // only bits that can change are NE (native FPU errors: the hypervisor uses no x87),
    // VMXE and OSXSAVE, none of which affects the hypervisor's memory or control flow.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
    let region = phys::alloc_zeroed(1, 1).ok_or(BackendError::OutOfMemory)?;
    // SAFETY: the frame was just allocated (zeroed, exclusively ours) and lies in the direct
    // map; the first 4 bytes hold the revision identifier (bit 31 clear).
    unsafe {
        phys::to_virt(region)
            .cast::<u32>()
            .write_volatile(caps.revision_id())
    };
    // SAFETY: VMXE and the fixed bits are set above, IA32_FEATURE_CONTROL was checked by
    // `detect`, and the region is a fresh, stamped, 4 KiB-aligned page kept for good.
    unsafe { vmcs::vmxon(region) }.inspect_err(|_| phys::free_frames(region, 1))?;
    if caps.has_ept(super::controls::ept_cap::INVEPT_ALL) {
        vmcs::invept(2, 0)?;
    }
    if caps.has_ept(super::controls::ept_cap::INVVPID_ALL) {
        vmcs::invvpid(2, 0)?;
    }
    Ok(region)
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}
