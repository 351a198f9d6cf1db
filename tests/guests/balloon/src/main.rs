//! `balloon`: memory reservation as a Xen guest's balloon driver uses it.
//!
//! The guest fills 16 MiB of its RAM with a pattern, gives those 4096 pages back with
//! `XENMEM_decrease_reservation` (one call: the hypervisor continues it in steps), and
//! checks the count returned and `XENMEM_current_reservation` dropping by 4096. A hypercall
//! that copies to or from a ballooned page fails with `-EFAULT` (the page is a hole). It
//! takes the pages back with `XENMEM_populate_physmap`, which stops at the domain's
//! maximum, and finds every byte zero. The same again with 2 MiB extents. Then Xen's
//! argument checks: every refusal of a reservation op returns the number of extents done
//! (0 here), not an errno, while the query ops answer errnos.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::hypercall::{console_io_write, describe, memory_op};
use guest_rt::xen_abi::memory::{
    XenMemoryDomain, XenMemoryMap, XenMemoryReservation, MEMOP_EXTENT_SHIFT,
    XENMEM_CURRENT_RESERVATION, XENMEM_DECREASE_RESERVATION, XENMEM_INCREASE_RESERVATION,
    XENMEM_MAXIMUM_GPFN, XENMEM_MAXIMUM_RESERVATION, XENMEM_MEMORY_MAP, XENMEM_POPULATE_PHYSMAP,
};
use guest_rt::xen_abi::xen::DOMID_SELF;
use guest_rt::xen_abi::{DomId, Errno, GuestHandle};
use guest_rt::{ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The 16 MiB given back: 2 MiB aligned, inside the 64 MiB of RAM the test gives.
const REGION: u64 = 32 << 20;
const REGION_LEN: u64 = 16 << 20;
const PAGES: u64 = REGION_LEN / 4096;
/// A guest frame in the MMIO hole, where nothing is mapped (for the maximum check).
const SPARE_GFN: u64 = 0xc000_0000 / 4096;
/// Unmapped in the runtime's page tables (it maps the first 4 GiB only).
const UNMAPPED: u64 = 0x1_4000_0000;
/// Xen's `E820_RAM`.
const E820_RAM: u32 = 1;

/// The extent list (GFNs), read by the hypervisor.
static LIST: [AtomicU64; PAGES as usize + 1] = [const { AtomicU64::new(0) }; PAGES as usize + 1];

fn list_addr() -> u64 {
    LIST.as_ptr() as u64
}

fn reservation(op: u64, start: u64, list: u64, nr: u64, order: u32, domid: DomId) -> i64 {
    let r = XenMemoryReservation {
        extent_start: GuestHandle::new(list),
        nr_extents: nr,
        extent_order: order,
        mem_flags: 0,
        domid,
        _pad0: [0; 6],
    };
    // SAFETY: `r` is a valid reservation; the pages it names are the test region, which
    // nothing but this test touches.
    unsafe {
        memory_op(
            op | (start << MEMOP_EXTENT_SHIFT),
            core::ptr::from_ref(&r) as u64,
        )
    }
}

fn query(op: u64, domid: DomId) -> i64 {
    let q = XenMemoryDomain { domid };
    // SAFETY: a read-only query on a valid structure.
    unsafe { memory_op(op, core::ptr::from_ref(&q) as u64) }
}

fn current() -> i64 {
    query(XENMEM_CURRENT_RESERVATION, DOMID_SELF)
}

fn fill_list(first_gfn: u64, step: u64, n: u64) {
    for i in 0..n {
        LIST[i as usize].store(first_gfn + i * step, Ordering::SeqCst);
    }
}

fn pattern(addr: u64) -> u64 {
    addr ^ 0x5a5a_a5a5_0f0f_f0f0
}

fn write_pattern() {
    for a in (REGION..REGION + REGION_LEN).step_by(8) {
        // SAFETY: the region is this guest's RAM (checked against the memory map), used by
        // nothing else, and identity-mapped by the runtime.
        unsafe { write_volatile(a as *mut u64, pattern(a)) };
    }
}

fn check_pattern() -> TestResult {
    for a in (REGION..REGION + REGION_LEN).step_by(4096) {
        // SAFETY: as in `write_pattern`.
        let v = unsafe { read_volatile(a as *const u64) };
        ensure!(v == pattern(a), "pattern lost at {a:#x}: {v:#x}");
    }
    Ok(())
}

fn check_zero() -> TestResult {
    for a in (REGION..REGION + REGION_LEN).step_by(8) {
        // SAFETY: as in `write_pattern` (the pages are populated again).
        let v = unsafe { read_volatile(a as *const u64) };
        ensure!(v == 0, "repopulated page not zeroed: {v:#x} at {a:#x}");
    }
    Ok(())
}

/// Gives the region back as `n` extents of `order` and checks the count and the
/// reservation; then checks that hypercall copies to and from it fail.
fn give_back(order: u32, cur0: i64) -> TestResult {
    let n = PAGES >> order;
    fill_list(REGION / 4096, 1 << order, n);
    let rc = reservation(
        XENMEM_DECREASE_RESERVATION,
        0,
        list_addr(),
        n,
        order,
        DOMID_SELF,
    );
    ensure!(
        rc == n as i64,
        "decrease_reservation of {n} order-{order} extents: {}",
        describe(rc)
    );
    let cur = current();
    ensure!(
        cur == cur0 - PAGES as i64,
        "current_reservation {cur} after giving back {PAGES} pages of {cur0}"
    );
    // The guest's own accesses find a hole: below 4 GiB, as on Xen without a device
    // model, reads return all ones and writes are dropped.
    // SAFETY: the page is a hole in this guest's memory that nothing else uses; the
    // accesses are emulated by the hypervisor.
    let v = unsafe {
        write_volatile(REGION as *mut u64, 0);
        read_volatile(REGION as *const u64)
    };
    ensure!(
        v == u64::MAX,
        "a ballooned page reads {v:#x} (expected all ones)"
    );
    // A hypercall writing into a ballooned page: the memory map into its middle.
    let mut map = XenMemoryMap {
        nr_entries: 4,
        _pad0: 0,
        buffer: GuestHandle::new(REGION + REGION_LEN / 2),
    };
    // SAFETY: a valid structure; the buffer is a hole, which the hypervisor must refuse.
    let rc = unsafe { memory_op(XENMEM_MEMORY_MAP, core::ptr::from_mut(&mut map) as u64) };
    ensure!(
        rc == Errno::EFAULT.to_ret(),
        "memory_map into a ballooned page: {} (expected -EFAULT)",
        describe(rc)
    );
    // And one reading from it: console output whose buffer is a hole.
    // SAFETY: the slice is never read by this guest (a ballooned page); only its address
    // and length reach the hypervisor.
    let hole = unsafe { core::slice::from_raw_parts(REGION as *const u8, 16) };
    let rc = console_io_write(hole);
    ensure!(
        rc == Errno::EFAULT.to_ret(),
        "console write from a ballooned page: {} (expected -EFAULT)",
        describe(rc)
    );
    // Giving back a hole again does nothing.
    let rc = reservation(
        XENMEM_DECREASE_RESERVATION,
        0,
        list_addr(),
        1,
        order,
        DOMID_SELF,
    );
    ensure!(
        rc == 0,
        "decrease_reservation of a hole: {} (expected 0)",
        describe(rc)
    );
    Ok(())
}

/// Gives the region's first page back (so the domain is below its maximum).
fn give_back_first_page() -> TestResult {
    fill_list(REGION / 4096, 1, 1);
    let rc = reservation(
        XENMEM_DECREASE_RESERVATION,
        0,
        list_addr(),
        1,
        0,
        DOMID_SELF,
    );
    ensure!(rc == 1, "decrease of one page: {}", describe(rc));
    Ok(())
}

fn test_main(si: &StartInfo) -> TestResult {
    let (_, image_end) = guest_rt::image_range();
    ensure!(
        image_end <= REGION && si.memmap_covers(REGION, REGION + REGION_LEN, E820_RAM),
        "the test region [{REGION:#x}, +16 MiB) is not free RAM of this guest (image ends at {image_end:#x}): give it 64 MiB"
    );
    let mut passed = 0u32;
    let mut case = |name: &str, r: TestResult| -> TestResult {
        r?;
        passed += 1;
        println!("balloon: {name}: ok");
        Ok(())
    };

    let cur0 = current();
    let max0 = query(XENMEM_MAXIMUM_RESERVATION, DOMID_SELF);
    let gpfn0 = query(XENMEM_MAXIMUM_GPFN, DOMID_SELF);
    case(
        "current and maximum reservation, maximum GPFN",
        (|| {
            ensure!(
                cur0 >= 16384 && max0 >= cur0,
                "current {cur0}, maximum {max0} pages"
            );
            ensure!(
                gpfn0 >= (64 << 20) / 4096 - 1,
                "maximum_gpfn {gpfn0} below the end of RAM"
            );
            println!("balloon: current {cur0} pages, maximum {max0}, maximum GPFN {gpfn0:#x}");
            Ok(())
        })(),
    )?;

    write_pattern();
    check_pattern()?;
    case(
        "4096 pages given back, copies to them fail",
        give_back(0, cur0),
    )?;

    // Take them back: one extent more than the maximum allows, which stops the call there.
    fill_list(REGION / 4096, 1, PAGES);
    let extra_ok = cur0 < max0;
    LIST[PAGES as usize].store(SPARE_GFN, Ordering::SeqCst);
    case(
        "populate_physmap takes them back, stopping at the maximum",
        (|| {
            let rc = reservation(
                XENMEM_POPULATE_PHYSMAP,
                0,
                list_addr(),
                PAGES + 1,
                0,
                DOMID_SELF,
            );
            let want = if extra_ok { PAGES + 1 } else { PAGES };
            ensure!(
                rc == want as i64,
                "populate_physmap of {} extents at maximum {max0}: {} (expected {want})",
                PAGES + 1,
                describe(rc)
            );
            let cur = current();
            ensure!(
                cur == cur0 + (want - PAGES) as i64,
                "current_reservation {cur} after taking them back (was {cur0})"
            );
            Ok(())
        })(),
    )?;
    case("repopulated pages read as zero", check_zero())?;

    write_pattern();
    case("2 MiB extents given back", give_back(9, cur0))?;
    case(
        "2 MiB extents taken back and zeroed",
        (|| {
            let rc = reservation(
                XENMEM_POPULATE_PHYSMAP,
                0,
                list_addr(),
                PAGES >> 9,
                9,
                DOMID_SELF,
            );
            ensure!(
                rc == (PAGES >> 9) as i64,
                "populate_physmap of 8 order-9 extents: {}",
                describe(rc)
            );
            ensure!(
                current() == cur0,
                "current_reservation {} (expected {cur0})",
                current()
            );
            check_zero()
        })(),
    )?;

    // increase_reservation populates too for a translated guest; give one page back first.
    case(
        "increase_reservation populates as populate_physmap",
        (|| {
            give_back_first_page()?;
            let rc = reservation(
                XENMEM_INCREASE_RESERVATION,
                0,
                list_addr(),
                1,
                0,
                DOMID_SELF,
            );
            ensure!(
                rc == 1,
                "increase_reservation of one page: {}",
                describe(rc)
            );
            ensure!(
                current() == cur0,
                "current_reservation {} (expected {cur0})",
                current()
            );
            Ok(())
        })(),
    )?;

    // Argument checks: every refusal returns the extents done (0), changing nothing.
    let refused = |what: &str, rc: i64| -> TestResult {
        ensure!(rc == 0, "{what}: {} (expected 0 extents)", describe(rc));
        ensure!(
            current() == cur0,
            "{what}: current_reservation {} changed (was {cur0})",
            current()
        );
        Ok(())
    };
    case(
        "extent orders above a domU's 9 are refused",
        (|| {
            fill_list(REGION / 4096, 1024, 1);
            refused(
                "decrease, order 10",
                reservation(
                    XENMEM_DECREASE_RESERVATION,
                    0,
                    list_addr(),
                    1,
                    10,
                    DOMID_SELF,
                ),
            )?;
            fill_list(SPARE_GFN & !1023, 1024, 1);
            refused(
                "populate, order 10",
                reservation(XENMEM_POPULATE_PHYSMAP, 0, list_addr(), 1, 10, DOMID_SELF),
            )?;
            refused(
                "populate, order 32",
                reservation(XENMEM_POPULATE_PHYSMAP, 0, list_addr(), 1, 32, DOMID_SELF),
            )
        })(),
    )?;
    case(
        "bad extent lists and reservation structures",
        (|| {
            refused(
                "unmapped extent list",
                reservation(XENMEM_DECREASE_RESERVATION, 0, UNMAPPED, 4, 0, DOMID_SELF),
            )?;
            refused(
                "non-canonical extent list",
                reservation(
                    XENMEM_DECREASE_RESERVATION,
                    0,
                    0x8000_0000_0000_0000,
                    4,
                    0,
                    DOMID_SELF,
                ),
            )?;
            refused(
                "nr_extents above UINT_MAX >> 6",
                reservation(
                    XENMEM_DECREASE_RESERVATION,
                    0,
                    list_addr(),
                    1 << 26,
                    0,
                    DOMID_SELF,
                ),
            )?;
            // SAFETY: the structure's address is unmapped; the hypervisor must not write there.
            let rc = unsafe { memory_op(XENMEM_DECREASE_RESERVATION, UNMAPPED) };
            refused("unreadable reservation structure", rc)?;
            // A continuation index at the end returns it unchanged.
            fill_list(REGION / 4096, 1, 5);
            let rc = reservation(
                XENMEM_DECREASE_RESERVATION,
                5,
                list_addr(),
                5,
                0,
                DOMID_SELF,
            );
            ensure!(
                rc == 5,
                "start extent 5 of 5: {} (expected 5)",
                describe(rc)
            );
            ensure!(
                current() == cur0,
                "start extent 5 of 5 changed the reservation"
            );
            Ok(())
        })(),
    )?;
    case(
        "misaligned, occupied and out-of-range GFNs",
        (|| {
            // Populating where RAM is already, or a 2 MiB extent at an odd GFN, or beyond the
            // p2m: nothing done. (Give a page back first so the maximum is not what stops it.)
            give_back_first_page()?;
            let cur1 = cur0 - 1;
            for (what, gfn, order) in [
                ("occupied GFN", REGION / 4096 + 1, 0u32),
                ("misaligned 2 MiB extent", SPARE_GFN + 1, 9),
                ("GFN beyond the p2m", 1 << 40, 0),
                ("GFN wrapping around", u64::MAX, 0),
            ] {
                fill_list(gfn, 1, 1);
                let rc = reservation(
                    XENMEM_POPULATE_PHYSMAP,
                    0,
                    list_addr(),
                    1,
                    order,
                    DOMID_SELF,
                );
                ensure!(rc == 0, "populate at {what}: {} (expected 0)", describe(rc));
                ensure!(
                    current() == cur1,
                    "populate at {what} changed the reservation"
                );
            }
            // Giving back what is not RAM (a hole, a GFN beyond everything): nothing done.
            fill_list(u64::MAX, 1, 1);
            let rc = reservation(
                XENMEM_DECREASE_RESERVATION,
                0,
                list_addr(),
                1,
                0,
                DOMID_SELF,
            );
            ensure!(rc == 0, "decrease at GFN 2^64-1: {}", describe(rc));
            fill_list(REGION / 4096, 1, 1);
            let rc = reservation(XENMEM_POPULATE_PHYSMAP, 0, list_addr(), 1, 0, DOMID_SELF);
            ensure!(
                rc == 1 && current() == cur0,
                "populate back: {}",
                describe(rc)
            );
            Ok(())
        })(),
    )?;
    case(
        "other domains and queries",
        (|| {
            fill_list(REGION / 4096, 1, 1);
            refused(
                "decrease in domain 100",
                reservation(XENMEM_DECREASE_RESERVATION, 0, list_addr(), 1, 0, 100),
            )?;
            let rc = query(XENMEM_CURRENT_RESERVATION, 100);
            ensure!(
                rc == Errno::ESRCH.to_ret(),
                "current_reservation of domain 100: {}",
                describe(rc)
            );
            // SAFETY: unmapped structure address: the hypervisor must fail the copy.
            let rc = unsafe { memory_op(XENMEM_MAXIMUM_RESERVATION, UNMAPPED) };
            ensure!(
                rc == Errno::EFAULT.to_ret(),
                "maximum_reservation, bad pointer: {}",
                describe(rc)
            );
            let q = XenMemoryDomain { domid: DOMID_SELF };
            // SAFETY: a valid structure; the continuation index makes it invalid.
            let rc = unsafe {
                memory_op(
                    XENMEM_CURRENT_RESERVATION | (1 << MEMOP_EXTENT_SHIFT),
                    core::ptr::from_ref(&q) as u64,
                )
            };
            ensure!(
                rc == Errno::EINVAL.to_ret(),
                "current_reservation with a start extent: {}",
                describe(rc)
            );
            Ok(())
        })(),
    )?;
    case("the 16 MiB still read as zero", check_zero())?;
    println!("balloon: {passed} cases passed");
    Ok(())
}
