//! The hypervisor's own address space, built once at boot.
//!
//! * The image at its link address, page by page: text read+execute, rodata read-only,
//!   data and BSS read+write and never executable. Stack guard pages are left unmapped.
//! * The direct map: all RAM at `DIRECT_MAP_BASE`, read+write, never executable.
//! * The xAPIC register page (when the CPU has no x2APIC) in its direct-map slot,
//!   read+write, uncacheable, never executable.
//!
//! Nothing else is mapped: no identity map of low memory (so null and small-address
//! dereferences fault). Before switching to the new tables, every leaf is audited and the
//! boot stops if any page is both writable and executable.
#![allow(unsafe_code)]

use super::frame::{self, FrameAllocator, PhysRange, FRAME_SIZE};
use super::phys::{self, DirectMap, TableFrames};
use crate::arch::x86::gdt;
use ferrovisor_boot::entry::{ImageLayout, DIRECT_MAP_BASE};
use ferrovisor_boot::BootInfo;
use pagetable::{Host, MapError, MemType, PageSize, PageTable, Perm};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// The host's RAM of every kind (what the direct map covers), kept for checks that must
/// keep device mappings off RAM (`hvm::vpci`).
static HOST_RAM: spin::Once<arrayvec::ArrayVec<PhysRange, { frame::MAX_RANGES }>> =
    spin::Once::new();

/// The host's RAM ranges (usable, ACPI, NVS, defective), sorted and merged; empty before
/// [`init`].
pub fn host_ram() -> &'static [PhysRange] {
    HOST_RAM.get().map_or(&[], |r| r.as_slice())
}

/// What the W^X audit found.
pub struct WxReport {
    /// 4 KiB pages covered by all leaves.
    pub pages: u64,
    /// Leaf mappings visited.
    pub leaves: u64,
    /// Leaves that are writable and executable (must be zero).
    pub violations: u64,
}

/// Builds the final tables, audits them and, if clean, loads them into CR3.
pub fn init(
    boot: &BootInfo,
    image: &ImageLayout,
    frames: &mut FrameAllocator<'static>,
    page_1g: bool,
) -> Result<WxReport, MapError> {
    let mut mem = DirectMap;
    let mut alloc = TableFrames(frames);
    let mut table = PageTable::<Host>::new(&mut mem, &mut alloc)?;

    let guards = [
        image.boot_stack_guard,
        gdt::guard_pages()[0],
        gdt::guard_pages()[1],
    ];
    let sections = [
        (image.image_start, image.text_end, Perm::RX),
        (image.rodata_start, image.rodata_end, Perm::R),
        (image.data_start, image.image_end, Perm::RW),
    ];
    for (start, end, perm) in sections {
        for page in (start..end).step_by(FRAME_SIZE as usize) {
            if !guards.contains(&page) {
                table.map(
                    &mut mem,
                    &mut alloc,
                    page,
                    page,
                    PageSize::Size4K,
                    perm,
                    MemType::WriteBack,
                )?;
            }
        }
    }

    let max = if page_1g {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let (ram, dropped) = frame::ram_ranges(&boot.memory_map);
    if dropped > 0 {
        log::warn!("mm: {dropped} RAM ranges left out of the direct map (too many)");
    }
    HOST_RAM.call_once(|| ram.clone());
    let mut top = 0;
    for r in &ram {
        table.map_range(
            &mut mem,
            &mut alloc,
            DIRECT_MAP_BASE + r.start,
            r.start,
            r.len(),
            Perm::RW,
            MemType::WriteBack,
            max,
        )?;
        top = top.max(r.end);
    }

    if let Some(apic) = crate::arch::x86::lapic::mmio_page() {
        table.map(
            &mut mem,
            &mut alloc,
            DIRECT_MAP_BASE + apic,
            apic,
            PageSize::Size4K,
            Perm::RW,
            MemType::Uncacheable,
        )?;
    }

    for page in crate::arch::x86::ioapic::mmio_pages() {
        table.map(
            &mut mem,
            &mut alloc,
            DIRECT_MAP_BASE + page,
            page,
            PageSize::Size4K,
            Perm::RW,
            MemType::Uncacheable,
        )?;
    }

    let report = audit(&table, &mem);
    if report.violations == 0 {
        let root = PhysFrame::from_start_address(PhysAddr::new(table.root()))
            .map_err(|_| MapError::OutOfMemory)?;
        // SAFETY: the new tables map the running code (text), the current stack and all
        // statics at the same virtual addresses as the boot tables, and the direct map at
        // the same base, so every address in use stays valid across the switch.
        unsafe { Cr3::write(root, Cr3Flags::empty()) };
        phys::set_mapped_limit(top);
    }
    Ok(report)
}

/// Walks every leaf and counts writable+executable ones, naming each on the console.
pub fn audit(table: &PageTable<Host>, mem: &DirectMap) -> WxReport {
    let mut report = WxReport {
        pages: 0,
        leaves: 0,
        violations: 0,
    };
    table.for_each_leaf(mem, |addr, t| {
        report.leaves += 1;
        report.pages += t.size.bytes() / FRAME_SIZE;
        if t.perm.contains(Perm::W | Perm::X) {
            report.violations += 1;
            log::error!(
                "W^X violation: {addr:#x} -> {:#x} ({:?}) is {}",
                t.phys,
                t.size,
                t.perm
            );
        }
    });
    report
}

/// The image's physical range, for the frame allocator to keep out.
pub fn image_range(image: &ImageLayout) -> PhysRange {
    PhysRange::new(image.image_start, image.image_end)
}
