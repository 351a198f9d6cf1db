//! XSDT (ACPI 6.3 §5.2.8): the list of 64-bit table addresses, here the FADT then the MADT.
//!
//! The FADT comes first by convention (Xen's libacpi does the same); ACPICA finds it by
//! signature anyway. The DSDT is reached through the FADT, never listed here.

use crate::bytes::{put_sdt_header, put_u64, seal, HDR_CHECKSUM, SDT_HEADER_LEN};
use crate::AcpiConfig;

/// Number of entries: FADT and MADT.
pub(crate) const XSDT_ENTRIES: usize = 2;
/// Length of the XSDT.
pub(crate) const XSDT_LEN: usize = SDT_HEADER_LEN + 8 * XSDT_ENTRIES;
/// XSDT revision (ACPI 2.0 onwards).
pub(crate) const XSDT_REVISION: u8 = 1;

/// Writes the XSDT into `xsdt` (exactly [`XSDT_LEN`] bytes).
pub(crate) fn write(xsdt: &mut [u8], cfg: &AcpiConfig, entries: [u64; XSDT_ENTRIES]) {
    put_sdt_header(xsdt, b"XSDT", XSDT_REVISION, cfg);
    for (i, gpa) in entries.into_iter().enumerate() {
        put_u64(xsdt, SDT_HEADER_LEN + 8 * i, gpa);
    }
    seal(xsdt, HDR_CHECKSUM);
}
