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

/// Writes an MSR. Same contract as [`rdmsr`]; the caller is responsible for the effect.
pub fn wrmsr(index: u32, value: u64) {
    // SAFETY: the callers (backend bring-up) write architecturally defined MSRs that
    // CPUID says exist, with values that keep the hypervisor's own state intact.
    unsafe { Msr::new(index).write(value) }
}
