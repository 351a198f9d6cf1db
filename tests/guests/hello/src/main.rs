//! `hello`: prints a greeting, checks that `hvm_start_info` is sane, passes and shuts down
//! with `SHUTDOWN_poweroff` (0).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::xen_abi::hvm::start_info::XEN_HVM_MEMMAP_TYPE_RAM;
use guest_rt::xen_abi::xen::{
    SIF_INITDOMAIN, SIF_MOD_START_PFN, SIF_MULTIBOOT_MOD, SIF_PM_MASK, SIF_PRIVILEGED,
    SIF_VIRT_P2M_4TOOLS,
};
use guest_rt::{ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Every `SIF_*` flag Xen defines.
const KNOWN_FLAGS: u32 = SIF_PRIVILEGED
    | SIF_INITDOMAIN
    | SIF_MULTIBOOT_MOD
    | SIF_MOD_START_PFN
    | SIF_VIRT_P2M_4TOOLS
    | SIF_PM_MASK;

fn test_main(si: &StartInfo) -> TestResult {
    println!("hello from a PVH guest");
    let r = &si.raw;
    println!(
        "start_info at {:#x}: version {} flags {:#x} nr_modules {} cmdline {:#x} rsdp {:#x} memmap {:#x} x {}",
        si.addr,
        r.version,
        r.flags,
        r.nr_modules,
        r.cmdline_paddr,
        r.rsdp_paddr,
        r.memmap_paddr,
        r.memmap_entries
    );
    if let Some(cmdline) = si.cmdline() {
        println!("cmdline: {cmdline:?}");
    }

    // The runtime already checked the magic before calling main.
    ensure!(
        r.version <= 1,
        "start_info version {} (expected 0 or 1)",
        r.version
    );
    ensure!(
        r.flags & !KNOWN_FLAGS == 0,
        "start_info flags {:#x} has unknown bits {:#x}",
        r.flags,
        r.flags & !KNOWN_FLAGS
    );
    ensure!(
        r.nr_modules <= 64,
        "implausible nr_modules {}",
        r.nr_modules
    );
    ensure!(
        r.nr_modules == 0 || r.modlist_paddr != 0,
        "{} modules but modlist_paddr is 0",
        r.nr_modules
    );
    ensure!(
        si.addr < 1 << 32,
        "start_info at {:#x}, above 4 GiB",
        si.addr
    );

    let (start, end) = guest_rt::image_range();
    ensure!(
        si.addr + 56 <= start || si.addr >= end,
        "start_info at {:#x} overlaps the image [{start:#x}, {end:#x})",
        si.addr
    );
    if r.version >= 1 && r.memmap_entries > 0 {
        ensure!(
            r.memmap_paddr != 0,
            "memmap_entries {} but memmap_paddr 0",
            r.memmap_entries
        );
        ensure!(
            r.memmap_entries <= 128,
            "memmap_entries {} > 128",
            r.memmap_entries
        );
        for (i, e) in si.memmap().enumerate() {
            println!(
                "memmap[{i}]: {:#x}..{:#x} type {}",
                e.addr,
                e.addr.saturating_add(e.size),
                e.ty
            );
        }
        ensure!(
            si.memmap_covers(start, end, XEN_HVM_MEMMAP_TYPE_RAM),
            "no RAM entry of the memory map covers the image [{start:#x}, {end:#x})"
        );
    }
    Ok(())
}
