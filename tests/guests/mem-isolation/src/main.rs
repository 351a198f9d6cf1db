//! `mem-isolation`: writes to a guest-physical address outside the domain's RAM. The
//! hypervisor must not let the write reach host memory; the expected outcome is that it
//! crashes the domain (an EPT violation / nested page fault on an unbacked GPA). If the write
//! returns, the guest reports FAIL.
//!
//! Address: 5 GiB (GPA 0x1_4000_0000), above the MMIO hole below 4 GiB (where an unbacked
//! access reads all ones and a write is dropped, as on Xen) and beyond the domain's RAM.
//! The runtime identity-maps only the first 4 GiB, so the guest maps the 2 MiB page at
//! 5 GiB itself (a page directory of its own in PDPT slot 5).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::{arch, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The target: 5 GiB.
const TARGET: u64 = 0x1_4000_0000;

/// A page directory for the 1 GiB at `TARGET` (only its first entry is used).
#[repr(C, align(4096))]
struct PageDirectory([u64; 512]);

static mut PD: PageDirectory = PageDirectory([0; 512]);

/// Present, writable, and (in a page-directory entry) a 2 MiB page.
const P: u64 = 1;
const W: u64 = 2;
const PS: u64 = 1 << 7;

fn test_main(si: &StartInfo) -> TestResult {
    if si.memmap_overlaps(TARGET, TARGET + 0x20_0000) {
        fail!("{TARGET:#x} is in the memory map; nothing is outside the domain there");
    }
    // SAFETY: the runtime's page tables are identity-mapped RAM: CR3's PML4, its entry 0's
    // PDPT. Slot 5 of that PDPT is unused (the runtime maps slots 0-3), and `PD` is a
    // page-aligned static only this function touches, so installing it changes no
    // existing mapping; the CR3 reload flushes the TLB.
    unsafe {
        let pml4 = (arch::read_cr3() & !0xfff) as *const u64;
        let pdpt = (pml4.read_volatile() & 0x000f_ffff_ffff_f000) as *mut u64;
        let pd = core::ptr::addr_of_mut!(PD);
        (*pd).0[0] = TARGET | P | W | PS;
        pdpt.add(5).write_volatile(pd as u64 | P | W);
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
    println!("about to touch memory outside the domain (write to GPA {TARGET:#x})");
    // SAFETY: deliberately invalid: the address is not RAM of this domain, and the hypervisor
    // is expected to crash the domain at this write.
    unsafe { core::ptr::write_volatile(TARGET as *mut u64, 0x5afe_dead_beef_0bad) };
    fail!("access outside memory returned (write to GPA {TARGET:#x})")
}
