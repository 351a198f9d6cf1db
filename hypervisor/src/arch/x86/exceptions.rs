//! CPU exceptions in the hypervisor itself: the IDT, the entry stubs, and the fatal report.
//!
//! Every exception the hypervisor takes is a hypervisor bug (guest faults arrive as VM
//! exits, not here), so the handler prints everything useful (vector, name, error code,
//! RIP, CR2, all registers) and halts. Double fault, NMI and machine check run on their
//! own IST stacks so that a blown stack still produces a report.
//!
//! NMIs are not fatal: their gate goes to `irq`'s NMI stub, which counts them and
//! returns. Vectors 32-255 go to `irq`'s interrupt stubs.
#![allow(unsafe_code)]

use super::gdt;
use super::regs::control_registers;
use crate::{console, println};
use core::cell::UnsafeCell;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// Registers saved by the entry stub, lowest address first (the stub pushes in reverse).
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security exception",
    "reserved",
];

/// An interrupt gate: 16 bytes in long mode.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0..2: IST index (0 = none).
    ist: u8,
    /// Present, DPL 0, 64-bit interrupt gate.
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn new(handler: u64, selector: u16, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: the table is written only by `init`, on the boot CPU, before it is loaded; after
// that the CPU alone reads it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

extern "C" {
    static exc_stub_table: [u64; 32];
}

/// Fills and loads the IDT. Call once, after [`gdt::init`].
pub fn init() {
    let cs = gdt::code_selector();
    // SAFETY: `exc_stub_table` is a read-only table of 32 stub addresses emitted by the
    // assembly below; reading it has no side effects.
    let stubs = unsafe { exc_stub_table };
    // SAFETY: single-threaded boot: no other reference to the IDT exists and it has not been
    // loaded yet, so writing it cannot race with the CPU reading it.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, &stub) in stubs.iter().enumerate() {
        let ist = match vector {
            8 => gdt::IST_DOUBLE_FAULT + 1,
            2 | 18 => gdt::IST_NMI_MCE + 1,
            _ => 0,
        };
        idt[vector] = Gate::new(stub, cs, ist as u8);
    }
    idt[2] = Gate::new(
        super::irq::nmi_stub_address(),
        cs,
        (gdt::IST_NMI_MCE + 1) as u8,
    );
    for vector in 32..=255u8 {
        idt[usize::from(vector)] = Gate::new(super::irq::stub_address(vector), cs, 0);
    }
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the IDT is a static, every present gate points at a stub below with a valid
    // code selector, and IST indices refer to stacks set up by `gdt::init`.
    unsafe { lidt(&ptr) };
}

/// Loads the IDT [`init`] built on this CPU (an AP: every CPU shares the one IDT; the IST
/// indices in its gates name slots of each CPU's own TSS).
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the IDT was filled by `init` on the boot CPU before any AP started and is
    // never written again; its gates point at the stubs below, with the code selector
    // every CPU's GDT has at the same index, and IST slots each CPU's TSS fills.
    unsafe { lidt(&ptr) };
}

/// Called by `exc_common` with a pointer to the saved registers; never returns.
#[no_mangle]
extern "C" fn ferrovisor_exception(frame: &ExceptionFrame) -> ! {
    console::force_unlock();
    let cr = control_registers();
    let name = NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    println!();
    println!(
        "*** HYPERVISOR EXCEPTION {} ({name}), error code {:#x}",
        frame.vector, frame.error_code
    );
    println!(
        "    RIP {:#018x}  CS {:#06x}  RFLAGS {:#010x}",
        frame.rip, frame.cs, frame.rflags
    );
    println!("    RSP {:#018x}  SS {:#06x}", frame.rsp, frame.ss);
    println!(
        "    CR0 {:#018x}  CR2 {:#018x}  CR3 {:#018x}  CR4 {:#018x}",
        cr.cr0, cr.cr2, cr.cr3, cr.cr4
    );
    println!(
        "    RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx
    );
    println!(
        "    RSI {:#018x}  RDI {:#018x}  RBP {:#018x}  R8  {:#018x}",
        frame.rsi, frame.rdi, frame.rbp, frame.r8
    );
    println!(
        "    R9  {:#018x}  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}",
        frame.r9, frame.r10, frame.r11, frame.r12
    );
    println!(
        "    R13 {:#018x}  R14 {:#018x}  R15 {:#018x}",
        frame.r13, frame.r14, frame.r15
    );
    crate::fatal_stop()
}

core::arch::global_asm!(
    r#"
    .section .text.exceptions, "ax"
exc_common:
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
    cld
    mov rdi, rsp
    call ferrovisor_exception
    ud2

exc_stub_0:
    push 0
    push 0
    jmp exc_common
exc_stub_1:
    push 0
    push 1
    jmp exc_common
exc_stub_2:
    push 0
    push 2
    jmp exc_common
exc_stub_3:
    push 0
    push 3
    jmp exc_common
exc_stub_4:
    push 0
    push 4
    jmp exc_common
exc_stub_5:
    push 0
    push 5
    jmp exc_common
exc_stub_6:
    push 0
    push 6
    jmp exc_common
exc_stub_7:
    push 0
    push 7
    jmp exc_common
exc_stub_8:
    push 8
    jmp exc_common
exc_stub_9:
    push 0
    push 9
    jmp exc_common
exc_stub_10:
    push 10
    jmp exc_common
exc_stub_11:
    push 11
    jmp exc_common
exc_stub_12:
    push 12
    jmp exc_common
exc_stub_13:
    push 13
    jmp exc_common
exc_stub_14:
    push 14
    jmp exc_common
exc_stub_15:
    push 0
    push 15
    jmp exc_common
exc_stub_16:
    push 0
    push 16
    jmp exc_common
exc_stub_17:
    push 17
    jmp exc_common
exc_stub_18:
    push 0
    push 18
    jmp exc_common
exc_stub_19:
    push 0
    push 19
    jmp exc_common
exc_stub_20:
    push 0
    push 20
    jmp exc_common
exc_stub_21:
    push 21
    jmp exc_common
exc_stub_22:
    push 0
    push 22
    jmp exc_common
exc_stub_23:
    push 0
    push 23
    jmp exc_common
exc_stub_24:
    push 0
    push 24
    jmp exc_common
exc_stub_25:
    push 0
    push 25
    jmp exc_common
exc_stub_26:
    push 0
    push 26
    jmp exc_common
exc_stub_27:
    push 0
    push 27
    jmp exc_common
exc_stub_28:
    push 0
    push 28
    jmp exc_common
exc_stub_29:
    push 29
    jmp exc_common
exc_stub_30:
    push 30
    jmp exc_common
exc_stub_31:
    push 0
    push 31
    jmp exc_common

    .section .rodata.exc_stub_table, "a"
    .balign 8
    .global exc_stub_table
exc_stub_table:
    .quad exc_stub_0
    .quad exc_stub_1
    .quad exc_stub_2
    .quad exc_stub_3
    .quad exc_stub_4
    .quad exc_stub_5
    .quad exc_stub_6
    .quad exc_stub_7
    .quad exc_stub_8
    .quad exc_stub_9
    .quad exc_stub_10
    .quad exc_stub_11
    .quad exc_stub_12
    .quad exc_stub_13
    .quad exc_stub_14
    .quad exc_stub_15
    .quad exc_stub_16
    .quad exc_stub_17
    .quad exc_stub_18
    .quad exc_stub_19
    .quad exc_stub_20
    .quad exc_stub_21
    .quad exc_stub_22
    .quad exc_stub_23
    .quad exc_stub_24
    .quad exc_stub_25
    .quad exc_stub_26
    .quad exc_stub_27
    .quad exc_stub_28
    .quad exc_stub_29
    .quad exc_stub_30
    .quad exc_stub_31
    .text
    "#
);
