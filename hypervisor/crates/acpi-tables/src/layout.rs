//! Where each table lands, as byte offsets from the base address given to
//! [`build`](crate::build).
//!
//! The order is fixed and every offset but the total is a constant, so the hypervisor (and a
//! reader of a guest memory dump) can find each table without parsing:
//!
//! | offset | table | length |
//! |---|---|---|
//! | 0x000 | RSDP | 36 |
//! | 0x040 | XSDT | 52 |
//! | 0x080 | FADT | 276 |
//! | 0x1C0 | DSDT | 43 |
//! | 0x200 | MADT | 44 + 8 per vCPU (16 per vCPU from APIC ID 255 on) |
//!
//! Each table starts 64-byte aligned relative to the base (a cache line; ACPI itself only asks
//! 16 bytes of the RSDP), and the MADT comes last because it is the only variable-sized table.

use crate::dsdt::DSDT_LEN;
use crate::fadt::FADT_LEN;
use crate::rsdp::RSDP_LEN;
use crate::xsdt::XSDT_LEN;

/// Alignment of each table relative to the base.
pub const TABLE_ALIGN: usize = 64;

const fn next(off: usize, len: usize) -> usize {
    (off + len).next_multiple_of(TABLE_ALIGN)
}

/// Offset of the RSDP.
pub const RSDP_OFFSET: usize = 0;
/// Offset of the XSDT.
pub const XSDT_OFFSET: usize = next(RSDP_OFFSET, RSDP_LEN);
/// Offset of the FADT.
pub const FADT_OFFSET: usize = next(XSDT_OFFSET, XSDT_LEN);
/// Offset of the DSDT.
pub const DSDT_OFFSET: usize = next(FADT_OFFSET, FADT_LEN);
/// Offset of the MADT, the last table.
pub const MADT_OFFSET: usize = next(DSDT_OFFSET, DSDT_LEN);

const _: () = assert!(XSDT_OFFSET == 0x40);
const _: () = assert!(FADT_OFFSET == 0x80);
const _: () = assert!(DSDT_OFFSET == 0x1C0);
const _: () = assert!(MADT_OFFSET == 0x200);
