//! VMRUN: switching to the guest and back.
//!
//! VMRUN saves and restores only part of the host state (RSP, RIP, RAX, segment and
//! control registers via the host save area). FS/GS/TR/LDTR and the syscall MSRs are
//! switched with VMSAVE/VMLOAD around it, and the general-purpose registers are swapped
//! with the guest's by hand. GIF is cleared across the switch so no interrupt can arrive
//! between loading guest state and entering the guest.
//!
//! The host's GS base (the per-CPU pointer) survives: VMSAVE stores it in the host area
//! before the guest's is loaded, VMLOAD brings it back after the exit.
//!
//! IF is set inside the CLGI window right before VMRUN (GIF = 0 still holds every
//! interrupt off), because with V_INTR_MASKING the host IF saved by VMRUN is what lets a
//! physical interrupt end the guest. A NOP after the STI takes its one-instruction
//! interrupt shadow: QEMU 7.2 TCG clears the shadow only at the end of an ordinary
//! instruction, not after VMRUN, so with VMRUN in the shadow the guest's first instruction
//! ran with interrupts inhibited and a virtual interrupt (V_IRQ) queued for it was not
//! taken before it (a guest resuming after `sti; hlt` at a `cli` never took it). After the exit IF is cleared again before STGI, so
//! the interrupt stays pending until the backend takes it (`irq::take_pending`).
#![allow(unsafe_code)]

use crate::hvm::GuestRegs;

extern "C" {
    fn svm_enter(regs: *mut GuestRegs, guest_vmcb: u64, host_vmcb: u64);
}

/// Runs the guest until the next #VMEXIT.
///
/// # Safety
/// `guest_vmcb` must be a valid, consistent VMCB owned by the caller's vCPU, `host_vmcb`
/// a VMSAVE area for this CPU, SVM must be enabled with a host save area, and `regs` must
/// be the vCPU's register block.
pub unsafe fn run(regs: &mut GuestRegs, guest_vmcb: u64, host_vmcb: u64) {
    // SAFETY: forwarded from the caller; the assembly preserves every callee-saved
    // register and the stack, as the C ABI requires.
    unsafe { svm_enter(regs, guest_vmcb, host_vmcb) }
}

core::arch::global_asm!(
    r#"
    .text
    .global svm_enter
svm_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdx                 /* host VMCB */
    push rdi                 /* guest register block */
    clgi
    mov rax, rdx
    vmsave rax               /* host FS/GS/TR/LDTR/syscall MSRs */
    mov rax, rsi             /* guest VMCB */
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8,  [rdi + 56]
    mov r9,  [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    vmload rax
    sti
    nop                      /* the STI shadow ends here, in the host (see above) */
    vmrun rax
    vmsave rax
    mov rax, [rsp]           /* guest register block */
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
"#,
    crate::exit_scrub_asm!(),
    r#"
    add rsp, 8
    pop rax                  /* host VMCB */
    vmload rax
    cli
    stgi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    "#
);
