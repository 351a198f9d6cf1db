//! VMX instructions (VMXON, VMCLEAR, VMPTRLD, VMREAD, VMWRITE, INVEPT, INVVPID) as
//! Result-returning wrappers. VMfailInvalid (CF=1) and VMfailValid (ZF=1, error number in
//! the VM-instruction error field) both become [`BackendError::InstructionFailed`].
#![allow(unsafe_code)]

use super::fields::Field;
use crate::hvm::BackendError;
use core::arch::asm;

/// Converts the flags after a VMX instruction into a result.
fn check(instruction: &'static str, cf: u8, zf: u8) -> Result<(), BackendError> {
    if cf != 0 {
        // VMfailInvalid: no current VMCS to hold an error number.
        return Err(BackendError::InstructionFailed {
            instruction,
            error: u64::MAX,
        });
    }
    if zf != 0 {
        let error = read(Field::VM_INSTRUCTION_ERROR).unwrap_or(u64::MAX);
        return Err(BackendError::InstructionFailed { instruction, error });
    }
    Ok(())
}

/// Enters VMX root operation with the VMXON region at physical address `region`.
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits, IA32_FEATURE_CONTROL must
/// enable VMX, and `region` must be a 4 KiB-aligned, zeroed-then-revision-stamped page that
/// nothing else uses while this CPU stays in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), BackendError> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the VMXON preconditions; the operand is a valid stack
    // location holding the region's physical address.
    unsafe {
        asm!("vmxon [{p}]", "setc {cf}", "setz {zf}", p = in(reg) &region,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("VMXON", cf, zf)
}

/// Clears the VMCS at `region` (flushes it to memory, launch state "clear").
///
/// # Safety
/// The CPU must be in VMX root operation and `region` must be a VMCS region owned by the
/// caller (not the VMXON region).
pub unsafe fn vmclear(region: u64) -> Result<(), BackendError> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the operand points at a local u64.
    unsafe {
        asm!("vmclear [{p}]", "setc {cf}", "setz {zf}", p = in(reg) &region,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("VMCLEAR", cf, zf)
}

/// Makes the VMCS at `region` current on this CPU.
///
/// # Safety
/// As for [`vmclear`]; the region must carry this CPU's VMCS revision id and must not be
/// current on another CPU.
pub unsafe fn vmptrld(region: u64) -> Result<(), BackendError> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the operand points at a local u64.
    unsafe {
        asm!("vmptrld [{p}]", "setc {cf}", "setz {zf}", p = in(reg) &region,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("VMPTRLD", cf, zf)
}

/// Reads a field of the current VMCS.
pub fn read(field: Field) -> Result<u64, BackendError> {
    let (value, cf, zf): (u64, u8, u8);
    // SAFETY: VMREAD only reads the current VMCS into a register; without VMX operation or
    // a current VMCS it fails (flags) or raises #UD, which is a hypervisor bug reported by
    // the exception handler, never memory corruption.
    unsafe {
        asm!("vmread {v}, {f}", "setc {cf}", "setz {zf}", f = in(reg) u64::from(field.0),
             v = out(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack, readonly));
    }
    if cf != 0 || zf != 0 {
        // Do not call check(): it would recurse on VM_INSTRUCTION_ERROR.
        return Err(BackendError::InstructionFailed {
            instruction: "VMREAD",
            error: u64::from(field.0),
        });
    }
    Ok(value)
}

/// Writes a field of the current VMCS.
pub fn write(field: Field, value: u64) -> Result<(), BackendError> {
    let (cf, zf): (u8, u8);
    // SAFETY: VMWRITE changes only the current VMCS, which the backend owns; guest-state
    // values are checked by the CPU at VM entry, host-state values are written only by
    // `setup::host_state` from the running CPU's own state.
    unsafe {
        asm!("vmwrite {f}, {v}", "setc {cf}", "setz {zf}", f = in(reg) u64::from(field.0),
             v = in(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("VMWRITE", cf, zf)
}

/// Reads a field the backend knows exists; a failure is a hypervisor bug and reads as 0
/// after logging.
pub fn get(field: Field) -> u64 {
    read(field).unwrap_or_else(|e| {
        log::error!("vmx: {e} reading field {:#x}", field.0);
        0
    })
}

/// Writes a field the backend knows exists; logs failures.
pub fn set(field: Field, value: u64) {
    if let Err(e) = write(field, value) {
        log::error!("vmx: {e} writing {value:#x} to field {:#x}", field.0);
    }
}

/// INVEPT of `kind` (1 single-context, 2 all-context) for `eptp`.
pub fn invept(kind: u64, eptp: u64) -> Result<(), BackendError> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: INVEPT only drops cached translations; the descriptor is a valid local array
    // and the type was checked against IA32_VMX_EPT_VPID_CAP by the caller.
    unsafe {
        asm!("invept {k}, [{d}]", "setc {cf}", "setz {zf}", k = in(reg) kind, d = in(reg) &desc,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("INVEPT", cf, zf)
}

/// INVVPID of `kind` (1 single-context, 2 all-context) for `vpid`.
pub fn invvpid(kind: u64, vpid: u16) -> Result<(), BackendError> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (cf, zf): (u8, u8);
    // SAFETY: INVVPID only drops cached translations; the descriptor is a valid local array.
    unsafe {
        asm!("invvpid {k}, [{d}]", "setc {cf}", "setz {zf}", k = in(reg) kind, d = in(reg) &desc,
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    check("INVVPID", cf, zf)
}
