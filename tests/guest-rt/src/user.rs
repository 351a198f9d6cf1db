//! Running a snippet in ring 3, to check what an unprivileged guest program can do.
//!
//! [`init`] (idempotent, called by [`run`]) replaces the boot GDT with one that adds
//! user code and data segments and a 64-bit TSS (its RSP0 is a stack of its own, used by
//! exceptions taken in ring 3), loads TR, and sets the user bit in every entry of the
//! runtime's identity map, so the whole image (code, statics, stacks) is reachable from
//! ring 3: this is a test harness, not an isolation boundary. Selectors: 0x08 kernel
//! code (as at boot), 0x10 kernel data, 0x18 user data, 0x20 user code, 0x28 TSS.
//!
//! Only built for the bare-metal target.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub use crate::fault::Fault;

const STACK: usize = 16384;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK]>);

// SAFETY: each stack is used by one CPU mode at a time on the only vCPU.
unsafe impl Sync for Stack {}

/// Where ring-3 snippets run.
static USER_STACK: Stack = Stack(UnsafeCell::new([0; STACK]));
/// RSP0: where exceptions taken in ring 3 are delivered.
static KERNEL_STACK: Stack = Stack(UnsafeCell::new([0; STACK]));

#[repr(C, align(16))]
struct Tables(UnsafeCell<([u64; 7], [u32; 26])>);

// SAFETY: written once by `init` with interrupts off on the only vCPU.
unsafe impl Sync for Tables {}

/// GDT (7 slots: the TSS descriptor takes two) and a 104-byte TSS.
static TABLES: Tables = Tables(UnsafeCell::new(([0; 7], [0; 26])));
static READY: AtomicBool = AtomicBool::new(false);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

fn top(stack: &Stack) -> u64 {
    stack.0.get() as u64 + STACK as u64
}

/// Sets the user bit in the identity map the boot path built (PML4[0], the 4 PDPT
/// entries, 2048 PDEs of 2 MiB), then flushes the TLB.
fn open_page_tables() {
    let cr3 = crate::arch::read_cr3() & !0xfff;
    let entry = |table: u64, i: u64| (table + 8 * i) as *mut u64;
    // SAFETY: CR3 names the boot path's tables, identity-mapped and owned by the runtime;
    // only the user bit of present entries changes, so no translation moves.
    unsafe {
        let pml4e = entry(cr3, 0);
        *pml4e |= 4;
        let pdpt = *pml4e & 0x000f_ffff_ffff_f000;
        for i in 0..4 {
            let pdpte = entry(pdpt, i);
            if *pdpte & 1 == 0 {
                continue;
            }
            *pdpte |= 4;
            let pd = *pdpte & 0x000f_ffff_ffff_f000;
            for j in 0..512 {
                let pde = entry(pd, j);
                if *pde & 1 != 0 {
                    *pde |= 4;
                }
            }
        }
        asm!("mov cr3, {}", in(reg) cr3 | (crate::arch::read_cr3() & 0xfff), options(nostack, preserves_flags));
    }
}

/// Installs the GDT with user segments and the TSS, and opens the page tables to ring 3.
pub fn init() {
    if READY.swap(true, Ordering::SeqCst) {
        return;
    }
    crate::fault::install();
    let t = TABLES.0.get();
    // SAFETY: single vCPU, interrupts off; the tables are statics that live for ever.
    unsafe {
        let (gdt, tss) = &mut *t;
        gdt[1] = 0x00af_9b00_0000_ffff; // kernel code, 64-bit
        gdt[2] = 0x00cf_9300_0000_ffff; // kernel data
        gdt[3] = 0x00cf_f300_0000_ffff; // user data, DPL 3
        gdt[4] = 0x00af_fb00_0000_ffff; // user code, 64-bit, DPL 3
        let rsp0 = top(&KERNEL_STACK);
        tss[1] = rsp0 as u32;
        tss[2] = (rsp0 >> 32) as u32;
        // I/O map base past the limit: no I/O permission bitmap (ring 3 ports #GP).
        tss[25] = 104 << 16;
        let base = tss.as_ptr() as u64;
        let limit = 103u64;
        gdt[5] = limit
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, 64-bit available TSS
            | ((base >> 24) & 0xff) << 56;
        gdt[6] = base >> 32;
        let ptr = DescriptorPointer {
            limit: (core::mem::size_of::<[u64; 7]>() - 1) as u16,
            base: gdt.as_ptr() as u64,
        };
        asm!("lgdt [{}]", in(reg) core::ptr::addr_of!(ptr), options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) 0x28u16, options(nostack, preserves_flags));
    }
    open_page_tables();
}

/// Runs `f` in ring 3 (interrupts off, IOPL 0) on a stack of its own: Ok(()) if it
/// returned, Err with the exception otherwise. `f` must own nothing that needs dropping.
pub fn run<F: FnOnce()>(f: F) -> Result<(), Fault> {
    init();
    crate::fault::call_user(f, top(&USER_STACK))
}
