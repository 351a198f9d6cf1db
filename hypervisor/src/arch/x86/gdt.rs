//! The hypervisor's GDT and TSS, with separate, guarded stacks for the exceptions that must
//! work even when the current stack is unusable (double fault, NMI, machine check).
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (1-based in the IDT, 0-based here) for double faults.
pub const IST_DOUBLE_FAULT: u16 = 0;
/// IST slot for NMI and machine check.
pub const IST_NMI_MCE: u16 = 1;

const IST_STACK_SIZE: usize = 16 * 1024;

/// A stack with an inaccessible page below it: the paging code leaves `guard` unmapped,
/// so an overflow faults instead of silently overwriting whatever lies below.
/// The cells make the linker place it in writable memory (.bss), not .rodata.
#[repr(C, align(4096))]
pub struct GuardedStack {
    guard: UnsafeCell<[u8; 4096]>,
    stack: UnsafeCell<[u8; IST_STACK_SIZE]>,
}

// SAFETY: Rust code never reads or writes the contents; only the CPU uses the stack, and
// each stack serves exactly one IST slot on one CPU.
unsafe impl Sync for GuardedStack {}

impl GuardedStack {
    const fn new() -> Self {
        GuardedStack {
            guard: UnsafeCell::new([0; 4096]),
            stack: UnsafeCell::new([0; IST_STACK_SIZE]),
        }
    }

    /// Address of the guard page.
    pub fn guard_page(&'static self) -> u64 {
        self.guard.get() as u64
    }

    fn top(&'static self) -> VirtAddr {
        VirtAddr::new(self.stack.get() as u64 + IST_STACK_SIZE as u64)
    }
}

static DOUBLE_FAULT_STACK: GuardedStack = GuardedStack::new();
static NMI_MCE_STACK: GuardedStack = GuardedStack::new();

/// Guard pages of the stacks defined here, for the paging code to leave unmapped.
pub fn guard_pages() -> [u64; 2] {
    [DOUBLE_FAULT_STACK.guard_page(), NMI_MCE_STACK.guard_page()]
}

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<Tables> = Once::new();

/// Loads the GDT and TSS on the boot CPU and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = DOUBLE_FAULT_STACK.top();
        tss.interrupt_stack_table[IST_NMI_MCE as usize] = NMI_MCE_STACK.top();
        tss
    });
    let tables = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables {
            gdt,
            code,
            data,
            tss,
        }
    });
    tables.gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives in a
    // static for the rest of the hypervisor's life; the TSS descriptor points at a static
    // TSS whose IST stacks are valid, and it is loaded exactly once on this CPU.
    unsafe {
        CS::set_reg(tables.code);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        SS::set_reg(tables.data);
        load_tss(tables.tss);
    }
}

/// Size of each IST stack of an AP (the boot CPU's are statics with guard pages; an AP's
/// come from the frame allocator, in the direct map, without guard pages).
pub const AP_IST_STACK_SIZE: u64 = IST_STACK_SIZE as u64;

/// Builds and loads this AP's own GDT and TSS (the same layout as the boot CPU's, so the
/// selectors are the same on every CPU) with IST stacks whose tops are `ist_tops`
/// (double fault, NMI/MCE), and reloads every segment register. Both tables are leaked:
/// they serve this CPU for the rest of the machine's life. Returns the GDT's address.
pub fn init_ap(ist_tops: [u64; 2]) -> u64 {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = VirtAddr::new(ist_tops[0]);
    tss.interrupt_stack_table[IST_NMI_MCE as usize] = VirtAddr::new(ist_tops[1]);
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    assert!(
        code.0 == code_selector() && tss_sel.0 == tss_selector(),
        "AP GDT layout differs from the boot CPU's"
    );
    let gdt: &'static GlobalDescriptorTable = alloc::boxed::Box::leak(alloc::boxed::Box::new(gdt));
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which is leaked and
    // so lives for the rest of the machine's life; the TSS descriptor points at this CPU's
    // own leaked TSS (never loaded by another CPU), whose IST stacks the caller allocated
    // for this CPU alone.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);
    }
    gdt as *const GlobalDescriptorTable as u64
}

/// Selector of the hypervisor code segment (host CS for VM exits).
pub fn code_selector() -> u16 {
    GDT.get().map_or(0, |t| t.code.0)
}

/// Selector of the TSS (host TR for VM exits).
pub fn tss_selector() -> u16 {
    GDT.get().map_or(0, |t| t.tss.0)
}
