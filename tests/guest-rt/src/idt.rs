//! The runtime's IDT: exceptions (vectors 0-31) fail the test, interrupts (32-255) are
//! counted and otherwise ignored.
//!
//! Exception stubs are 16-byte slots starting at `guest_rt_exc_stubs` (slot `v` = vector
//! `v`); each pushes a zero error code when the CPU does not, then the vector, and jumps to a
//! common path that saves the general registers and calls [`exception`], which prints
//! `guest <name>: FAIL: exception <vector> (<mnemonic>) at <rip> ...` and shuts down with
//! `crash`. Interrupt stubs are 16-byte slots starting at `guest_rt_irq_stubs` (slot `i` =
//! vector `32 + i`); each increments its vector's count ([`vector_count`]), then the common
//! path increments [`INTERRUPT_COUNT`] and returns with IRETQ, without an EOI (most tests
//! program no interrupt controller; a test that uses the LAPIC writes its own EOI); their
//! purpose is to let `sti; hlt` wake up cleanly and to tell which vector arrived.
//!
//! Only built for the bare-metal target. Callers: the boot path (`init`).

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

/// Number of interrupts (vectors 32-255) taken since boot.
pub static INTERRUPT_COUNT: AtomicU64 = AtomicU64::new(0);

/// Interrupts taken since boot, per vector (entries 0-31 stay 0).
static VECTOR_COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Code segment selector of the runtime's 64-bit code (see `boot.rs`).
const KERNEL_CS: u16 = 0x08;

global_asm!(
    r#"
    .pushsection .text.guest_rt.idt, "ax", @progbits
    .code64
    .macro GUEST_RT_EXC_NOERR vec
    .balign 16
    push 0
    push \vec
    jmp guest_rt_exc_common
    .endm
    .macro GUEST_RT_EXC_ERR vec
    .balign 16
    push \vec
    jmp guest_rt_exc_common
    .endm

    .balign 16
    .global guest_rt_exc_stubs
guest_rt_exc_stubs:
    GUEST_RT_EXC_NOERR 0
    GUEST_RT_EXC_NOERR 1
    GUEST_RT_EXC_NOERR 2
    GUEST_RT_EXC_NOERR 3
    GUEST_RT_EXC_NOERR 4
    GUEST_RT_EXC_NOERR 5
    GUEST_RT_EXC_NOERR 6
    GUEST_RT_EXC_NOERR 7
    GUEST_RT_EXC_ERR 8
    GUEST_RT_EXC_NOERR 9
    GUEST_RT_EXC_ERR 10
    GUEST_RT_EXC_ERR 11
    GUEST_RT_EXC_ERR 12
    GUEST_RT_EXC_ERR 13
    GUEST_RT_EXC_ERR 14
    GUEST_RT_EXC_NOERR 15
    GUEST_RT_EXC_NOERR 16
    GUEST_RT_EXC_ERR 17
    GUEST_RT_EXC_NOERR 18
    GUEST_RT_EXC_NOERR 19
    GUEST_RT_EXC_NOERR 20
    GUEST_RT_EXC_ERR 21
    GUEST_RT_EXC_NOERR 22
    GUEST_RT_EXC_NOERR 23
    GUEST_RT_EXC_NOERR 24
    GUEST_RT_EXC_NOERR 25
    GUEST_RT_EXC_NOERR 26
    GUEST_RT_EXC_NOERR 27
    GUEST_RT_EXC_NOERR 28
    GUEST_RT_EXC_ERR 29
    GUEST_RT_EXC_ERR 30
    GUEST_RT_EXC_NOERR 31

    .balign 16
guest_rt_exc_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    and rsp, -16
    call {handler}
    ud2

    .balign 16
    .global guest_rt_irq_stubs
guest_rt_irq_stubs:
    .set guest_rt_irq_vec, 32
    .rept 224
    .balign 16
    lock inc qword ptr [rip + {counts} + 8 * guest_rt_irq_vec]
    jmp guest_rt_irq_common
    .set guest_rt_irq_vec, guest_rt_irq_vec + 1
    .endr

    .balign 16
guest_rt_irq_common:
    lock inc qword ptr [rip + {count}]
    iretq
    .popsection
    "#,
    handler = sym exception,
    count = sym INTERRUPT_COUNT,
    counts = sym VECTOR_COUNTS,
);

extern "C" {
    static guest_rt_exc_stubs: u8;
    static guest_rt_irq_stubs: u8;
}

/// The stack layout `guest_rt_exc_common` hands to [`exception`].
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// Saved general registers, last pushed first.
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rax: u64,
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code (0 if the exception has none).
    pub error_code: u64,
    /// Interrupted RIP, CS, RFLAGS, RSP, SS (pushed by the CPU).
    pub rip: u64,
    #[allow(missing_docs)]
    pub cs: u64,
    #[allow(missing_docs)]
    pub rflags: u64,
    #[allow(missing_docs)]
    pub rsp: u64,
    #[allow(missing_docs)]
    pub ss: u64,
}

/// Mnemonic of an exception vector.
pub fn mnemonic(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
        "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("?")
}

extern "C" fn exception(frame: &ExceptionFrame) -> ! {
    let v = frame.vector;
    if v == 14 {
        crate::fail_now(format_args!(
            "exception {v} ({}) at {:#x}, error code {:#x}, cr2 {:#x}",
            mnemonic(v),
            frame.rip,
            frame.error_code,
            crate::arch::read_cr2()
        ))
    } else {
        crate::fail_now(format_args!(
            "exception {v} ({}) at {:#x}, error code {:#x}",
            mnemonic(v),
            frame.rip,
            frame.error_code
        ))
    }
}

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: 0,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: the IDT is written by `init` on the only vCPU before interrupts are enabled, and
// afterwards only by `set_gate` on that vCPU for a vector not being raised; the CPU reads it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::EMPTY; 256]));

/// Operand of LIDT/LGDT.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads `base`/`limit` into IDTR.
///
/// # Safety
/// The table must stay valid while interrupts or exceptions can be delivered (a limit of 0
/// makes any exception escalate to a triple fault, which is what the triple-fault test wants).
pub unsafe fn lidt(base: u64, limit: u16) {
    let ptr = DescriptorPointer { limit, base };
    // SAFETY: the caller guarantees the table; LIDT only reads the 10-byte operand.
    unsafe {
        asm!("lidt [{}]", in(reg) core::ptr::addr_of!(ptr), options(readonly, nostack, preserves_flags));
    }
}

/// Fills and loads the IDT. Called once by the boot path.
pub fn init() {
    // Only the addresses of the stubs (defined in the global_asm above) are taken.
    let stubs = core::ptr::addr_of!(guest_rt_exc_stubs) as u64;
    let irqs = core::ptr::addr_of!(guest_rt_irq_stubs) as u64;
    let table = IDT.0.get();
    for v in 0..256usize {
        let handler = if v < 32 {
            stubs + 16 * v as u64
        } else {
            irqs + 16 * (v as u64 - 32)
        };
        // SAFETY: single-threaded boot path; nothing else accesses the IDT yet.
        unsafe { (*table)[v] = Gate::interrupt(handler) };
    }
    // SAFETY: the IDT is a static that lives forever and has just been filled.
    unsafe {
        lidt(
            table as u64,
            (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        )
    };
}

/// Number of interrupts taken so far.
pub fn interrupt_count() -> u64 {
    INTERRUPT_COUNT.load(Ordering::Relaxed)
}

/// Number of interrupts taken so far on `vector` (always 0 for exceptions, 0-31).
pub fn vector_count(vector: u8) -> u64 {
    VECTOR_COUNTS[usize::from(vector)].load(Ordering::Relaxed)
}

/// Points `vector`'s gate at `handler` (a 64-bit interrupt gate in the runtime's code
/// segment: IF cleared on entry, the interrupted stack, returning with IRETQ).
///
/// # Safety
/// `handler` must be the address of code that handles that vector's frame (no error code
/// for vectors 2 and 32-255) and returns with IRETQ, preserving every register.
pub unsafe fn set_gate(vector: u8, handler: u64) {
    // SAFETY: the test's own thread is the only writer; a 16-byte gate write racing with a
    // delivery on this vector is excluded by the caller's contract (the vector is not
    // raised while it installs its handler).
    unsafe { (*IDT.0.get())[usize::from(vector)] = Gate::interrupt(handler) };
}
