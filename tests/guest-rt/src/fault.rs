//! Catching exceptions: run a piece of code and learn which exception (vector, error code)
//! it raised, if any, so a test can execute an instruction and assert the fault real
//! hardware would give.
//!
//! [`install`] loads an IDT of its own: the runtime's interrupt gates (32-255, copied from
//! the IDT in force) and, for the exceptions (0-31), stubs that call [`on_exception`]. While
//! a [`catch`] (or [`crate::user::run`]) is in progress, an exception is recorded and the
//! CPU resumes in ring 0 at the end of the catch trampoline, on the stack the catch started
//! with (a `longjmp`: the frames of the code that faulted are abandoned, so that code must
//! own nothing that needs dropping). Outside a catch, an exception fails the test as the
//! runtime's own IDT would. Vector 0x81 is a DPL-3 gate: ring-3 code ends with `int 0x81`
//! (see [`crate::user`]).
//!
//! Only built for the bare-metal target.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The gate ring-3 code uses to come back (no fault).
pub const USER_DONE_VECTOR: u8 = 0x81;
const KERNEL_CS: u64 = 0x08;
const KERNEL_SS: u64 = 0x10;

/// An exception a catch recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The vector (6 #UD, 13 #GP, ...).
    pub vector: u8,
    /// The error code (0 when the exception has none).
    pub error_code: u64,
    /// Where it was raised (the instruction, or the next one for traps).
    pub rip: u64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static RESUME_RSP: AtomicU64 = AtomicU64::new(0);
static RESUME_RIP: AtomicU64 = AtomicU64::new(0);
static VECTOR: AtomicU64 = AtomicU64::new(0);
static ERROR_CODE: AtomicU64 = AtomicU64::new(0);
static RIP: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .pushsection .text.guest_rt.fault, "ax", @progbits
    .code64
    .macro GUEST_RT_FLT_NOERR vec
    .balign 16
    push 0
    push \vec
    jmp guest_rt_flt_common
    .endm
    .macro GUEST_RT_FLT_ERR vec
    .balign 16
    push \vec
    jmp guest_rt_flt_common
    .endm

    .balign 16
    .global guest_rt_flt_stubs
guest_rt_flt_stubs:
    GUEST_RT_FLT_NOERR 0
    GUEST_RT_FLT_NOERR 1
    GUEST_RT_FLT_NOERR 2
    GUEST_RT_FLT_NOERR 3
    GUEST_RT_FLT_NOERR 4
    GUEST_RT_FLT_NOERR 5
    GUEST_RT_FLT_NOERR 6
    GUEST_RT_FLT_NOERR 7
    GUEST_RT_FLT_ERR 8
    GUEST_RT_FLT_NOERR 9
    GUEST_RT_FLT_ERR 10
    GUEST_RT_FLT_ERR 11
    GUEST_RT_FLT_ERR 12
    GUEST_RT_FLT_ERR 13
    GUEST_RT_FLT_ERR 14
    GUEST_RT_FLT_NOERR 15
    GUEST_RT_FLT_NOERR 16
    GUEST_RT_FLT_ERR 17
    GUEST_RT_FLT_NOERR 18
    GUEST_RT_FLT_NOERR 19
    GUEST_RT_FLT_NOERR 20
    GUEST_RT_FLT_ERR 21
    GUEST_RT_FLT_NOERR 22
    GUEST_RT_FLT_NOERR 23
    GUEST_RT_FLT_NOERR 24
    GUEST_RT_FLT_NOERR 25
    GUEST_RT_FLT_NOERR 26
    GUEST_RT_FLT_NOERR 27
    GUEST_RT_FLT_NOERR 28
    GUEST_RT_FLT_ERR 29
    GUEST_RT_FLT_ERR 30
    GUEST_RT_FLT_NOERR 31
    .balign 16
    .global guest_rt_flt_user_done
guest_rt_flt_user_done:
    push 0
    push 0x81
    jmp guest_rt_flt_common

    /* 9 caller-saved registers + vector + error code + the CPU's 5 words: 128 bytes,
       so RSP is 16-byte aligned at the call (the CPU aligns it before pushing). */
    .balign 16
guest_rt_flt_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov rdi, rsp
    cld
    call {handler}
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    /* u64 guest_rt_catch(fn(usize), usize): 0 if fn returned, 1 if an exception was
       caught (the handler resumes at 1: with RSP as saved here). */
    .balign 16
    .global guest_rt_catch
guest_rt_catch:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov [rip + {resume_rsp}], rsp
    lea rax, [rip + 1f]
    mov [rip + {resume_rip}], rax
    mov byte ptr [rip + {armed}], 1
    mov rax, rdi
    mov rdi, rsi
    call rax
    mov byte ptr [rip + {armed}], 0
    xor eax, eax
    jmp 2f
1:
    mov eax, 1
2:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    /* u64 guest_rt_user_call(fn(usize), usize, user_rsp): runs fn(arg) in ring 3 on
       user_rsp; it ends with `int 0x81` (or an exception); always returns 1. */
    .balign 16
    .global guest_rt_user_call
guest_rt_user_call:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov [rip + {resume_rsp}], rsp
    lea rax, [rip + 1b]
    mov [rip + {resume_rip}], rax
    mov byte ptr [rip + {armed}], 1
    push 0x1b              /* SS: user data, RPL 3 */
    push rdx               /* RSP */
    push 0x2               /* RFLAGS: IF clear, IOPL 0 */
    push 0x23              /* CS: user 64-bit code, RPL 3 */
    lea rax, [rip + guest_rt_user_entry]
    push rax
    mov rax, rdi
    mov rdi, rsi
    iretq
guest_rt_user_entry:
    call rax
    int 0x81
    ud2
    .popsection
    "#,
    handler = sym on_exception,
    resume_rsp = sym RESUME_RSP,
    resume_rip = sym RESUME_RIP,
    armed = sym ARMED,
);

extern "C" {
    static guest_rt_flt_stubs: u8;
    static guest_rt_flt_user_done: u8;
    fn guest_rt_catch(f: extern "C" fn(usize), arg: usize) -> u64;
    fn guest_rt_user_call(f: extern "C" fn(usize), arg: usize, user_rsp: u64) -> u64;
}

/// The frame `guest_rt_flt_common` hands to [`on_exception`].
#[repr(C)]
struct Frame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

extern "C" fn on_exception(frame: &mut Frame) {
    if !ARMED.swap(false, Ordering::SeqCst) {
        let v = frame.vector;
        crate::fail_now(format_args!(
            "exception {v} ({}) at {:#x} (CS {:#x}), error code {:#x}",
            crate::idt::mnemonic(v),
            frame.rip,
            frame.cs,
            frame.error_code
        ));
    }
    VECTOR.store(frame.vector, Ordering::SeqCst);
    ERROR_CODE.store(frame.error_code, Ordering::SeqCst);
    RIP.store(frame.rip, Ordering::SeqCst);
    // Back to ring 0 at the trampoline's resume label, on its stack, interrupts off,
    // no TF/AC/DF.
    frame.rip = RESUME_RIP.load(Ordering::SeqCst);
    frame.rsp = RESUME_RSP.load(Ordering::SeqCst);
    frame.cs = KERNEL_CS;
    frame.ss = KERNEL_SS;
    frame.rflags = 0x2;
}

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate([u64; 2]);

impl Gate {
    fn new(handler: u64, dpl: u64) -> Gate {
        let low = (handler & 0xffff)
            | KERNEL_CS << 16
            | (0x8e | dpl << 5) << 40
            | ((handler >> 16) & 0xffff) << 48;
        Gate([low, handler >> 32])
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written by `install` on the only vCPU with interrupts off, then read by the CPU.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate([0, 0]); 256]));
static INSTALLED: AtomicBool = AtomicBool::new(false);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the catching IDT (idempotent). Interrupt gates are copied from the IDT in force.
pub fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut cur = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `cur`, which is exactly that large.
    unsafe { asm!("sidt [{}]", in(reg) &mut cur, options(nostack, preserves_flags)) };
    let (base, limit) = (cur.base, cur.limit);
    let table = IDT.0.get();
    let stubs = core::ptr::addr_of!(guest_rt_flt_stubs) as u64;
    for v in 0..256usize {
        let gate = if v < 32 {
            Gate::new(stubs + 16 * v as u64, 0)
        } else if v == usize::from(USER_DONE_VECTOR) {
            Gate::new(core::ptr::addr_of!(guest_rt_flt_user_done) as u64, 3)
        } else if (v * 16 + 15) as u64 <= u64::from(limit) {
            // SAFETY: the entry lies inside the IDT in force (checked against its limit),
            // which the runtime keeps for ever (identity-mapped).
            unsafe { core::ptr::read_volatile((base as *const Gate).add(v)) }
        } else {
            Gate([0, 0])
        };
        // SAFETY: single vCPU, interrupts off; nothing else writes this table.
        unsafe { (*table)[v] = gate };
    }
    // SAFETY: the table is a static that lives for ever and has just been filled.
    unsafe {
        crate::idt::lidt(
            table as u64,
            (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        )
    };
}

fn result(caught: u64) -> Option<Fault> {
    (caught != 0).then(|| Fault {
        vector: VECTOR.load(Ordering::SeqCst) as u8,
        error_code: ERROR_CODE.load(Ordering::SeqCst),
        rip: RIP.load(Ordering::SeqCst),
    })
}

extern "C" fn call_once<F: FnOnce()>(arg: usize) {
    // SAFETY: `arg` is the address of the `Option<F>` that `catch`/`run_user` keep alive
    // for the duration of the trampoline call, which calls this exactly once.
    let f = unsafe { (*(arg as *mut Option<F>)).take() };
    if let Some(f) = f {
        f();
    }
}

/// Runs `f` in ring 0 and returns the exception it raised, if any. `f` must own nothing
/// that needs dropping (its frames are abandoned at a fault).
pub fn catch<F: FnOnce()>(f: F) -> Option<Fault> {
    install();
    let mut slot = Some(f);
    // SAFETY: the trampoline saves the callee-saved registers and RSP, calls `call_once`
    // with the slot's address, and comes back to its own frame either way (the handler
    // resumes it on the saved stack); the slot outlives the call.
    let caught = unsafe { guest_rt_catch(call_once::<F>, &mut slot as *mut Option<F> as usize) };
    result(caught)
}

/// Runs `f` in ring 3 on `user_rsp`; Ok(()) if it returned, Err(fault) otherwise. The
/// code, data and stack `f` touches must be user-accessible and a TSS must hold a ring-0
/// stack ([`crate::user`] arranges both).
pub(crate) fn call_user<F: FnOnce()>(f: F, user_rsp: u64) -> Result<(), Fault> {
    install();
    let mut slot = Some(f);
    // SAFETY: as for `catch`; the trampoline IRETs to ring 3 with the user selectors
    // `crate::user` installed and always comes back through the handler (int 0x81 or a
    // fault), which restores its ring-0 stack and registers.
    let caught = unsafe {
        guest_rt_user_call(
            call_once::<F>,
            &mut slot as *mut Option<F> as usize,
            user_rsp,
        )
    };
    match result(caught) {
        Some(f) if f.vector == USER_DONE_VECTOR => Ok(()),
        Some(f) => Err(f),
        None => Ok(()),
    }
}
