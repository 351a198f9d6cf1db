//! VM entry and exit: the only code that runs with guest general-purpose registers live.
//!
//! `ferrovisor_vmx_enter(regs, launched)` saves the host's callee-saved registers and the
//! `regs` pointer on the stack, writes HOST_RSP, loads the guest registers and executes
//! VMLAUNCH (launched = 0) or VMRESUME. A VM exit lands at `ferrovisor_vmx_exit` (HOST_RIP)
//! with RSP = HOST_RSP, stores the guest registers back through the saved pointer and
//! returns 0 to the caller of `ferrovisor_vmx_enter`. If the instruction itself fails, the
//! function returns 1 (VMfailInvalid), 2 (VMfailValid) or 3 (HOST_RSP write failed).
//!
//! GuestRegs offsets: rax 0, rbx 8, rcx 16, rdx 24, rsi 32, rdi 40, rbp 48, r8..r15 56..112.
#![allow(unsafe_code)]

use crate::hvm::GuestRegs;

core::arch::global_asm!(
    r#"
    .text
    .global ferrovisor_vmx_enter
ferrovisor_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov eax, 0x6c14
    vmwrite rax, rsp
    jbe 3f
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    jnz 1f
    vmlaunch
    jmp 2f
1:
    vmresume
2:
    mov eax, 2
    jnc 4f
    mov eax, 1
    jmp 4f
3:
    mov eax, 3
4:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global ferrovisor_vmx_exit
ferrovisor_vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop rax
    mov [rdi + 40], rax
"#,
    crate::exit_scrub_asm!(),
    r#"
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
"#
);

extern "C" {
    fn ferrovisor_vmx_enter(regs: *mut GuestRegs, launched: u64) -> u64;
    fn ferrovisor_vmx_exit();
}

const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, rdi) == 40);
    assert!(core::mem::offset_of!(GuestRegs, rbp) == 48);
    assert!(core::mem::offset_of!(GuestRegs, r15) == 112);
};

/// The address VM exits jump to (HOST_RIP).
pub fn exit_stub() -> u64 {
    ferrovisor_vmx_exit as *const () as usize as u64
}

/// How an entry attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    /// The guest ran and exited; read the exit reason.
    Exited,
    /// VMLAUNCH/VMRESUME failed with no current VMCS.
    FailInvalid,
    /// VMLAUNCH/VMRESUME failed; the VM-instruction error field says why.
    FailValid,
    /// HOST_RSP could not be written.
    HostRspFailed,
}

/// Runs the guest until the next VM exit.
///
/// # Safety
/// The current VMCS must be fully initialised for this vCPU (host state with HOST_RIP =
/// [`exit_stub`], this CPU's CR3/GDT/IDT/TR), `launched` must match its launch state, and
/// `regs` must be the vCPU's register block (it is read and written through a raw pointer
/// while the guest runs, so nothing else may access it).
pub unsafe fn enter(regs: &mut GuestRegs, launched: bool) -> Entered {
    // SAFETY: the caller guarantees a valid current VMCS; the stub preserves the SysV
    // callee-saved registers and the stack, and writes only `*regs`.
    match unsafe { ferrovisor_vmx_enter(regs, u64::from(launched)) } {
        0 => Entered::Exited,
        1 => Entered::FailInvalid,
        2 => Entered::FailValid,
        _ => Entered::HostRspFailed,
    }
}
