//! `mem-isolation`: writes to a guest-physical address outside the domain's RAM. The
//! hypervisor must not let the write reach host memory; the expected outcome is that it
//! crashes the domain (an EPT violation / nested page fault on an unbacked GPA). If the write
//! returns, the guest reports FAIL.
//!
//! Address: the first of [`CANDIDATES`] that no entry of the start_info memory map covers
//! (all of them are below 4 GiB, so the runtime's identity map covers them, and none is a
//! LAPIC/IOAPIC/special-page address); with no memory map, the first candidate.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::{fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Candidate target addresses, in order of preference (2 MiB aligned, below 4 GiB).
const CANDIDATES: [u64; 4] = [0xC000_0000, 0xE000_0000, 0x8000_0000, 0x4000_0000];

fn test_main(si: &StartInfo) -> TestResult {
    let Some(target) = CANDIDATES
        .iter()
        .copied()
        .find(|&a| !si.memmap_overlaps(a, a + 0x20_0000))
    else {
        fail!("every candidate address is in the memory map; nothing is outside the domain");
    };
    println!("about to touch memory outside the domain (write to GPA {target:#x})");
    // SAFETY: deliberately invalid: the address is not RAM of this domain, and the hypervisor
    // is expected to crash the domain at this write.
    unsafe { core::ptr::write_volatile(target as *mut u64, 0x5afe_dead_beef_0bad) };
    fail!("access outside memory returned (write to GPA {target:#x})")
}
