//! Control registers and MSRs.
#![allow(unsafe_code)]

use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::registers::model_specific::Msr;

/// Reads an MSR. The caller must only name MSRs the CPU implements (checked via CPUID),
/// otherwise the CPU raises #GP, which our exception handler reports as fatal.
pub fn rdmsr(index: u32) -> u64 {
    // SAFETY: reading an MSR has no memory-safety effect; an unimplemented index faults
    // into the exception handler rather than corrupting state.
    unsafe { Msr::new(index).read() }
}

/// The values the fatal-error dumps show.
pub struct ControlRegisters {
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
}

/// Reads CR0, CR2, CR3 and CR4.
pub fn control_registers() -> ControlRegisters {
    ControlRegisters {
        cr0: Cr0::read_raw(),
        cr2: Cr2::read_raw(),
        cr3: Cr3::read_raw().0.start_address().as_u64(),
        cr4: Cr4::read_raw(),
    }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist (CPUID says so) and the value must be valid for it and keep the
/// hypervisor's own state intact (GS base, EFER, APIC base, ... change how this CPU runs).
pub unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: the caller guarantees the index and the value (see the contract above).
    unsafe { Msr::new(index).write(value) }
}
