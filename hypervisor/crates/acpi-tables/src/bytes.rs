//! Little-endian field writers and the common 36-byte system description table header.
//!
//! Tables are written field by field at explicit byte offsets (named constants in each table
//! module, taken from the ACPI 6.3 spec) rather than through `#[repr(C, packed)]` structs: the
//! layouts are mostly unaligned, and offsets next to the spec's tables are easy to review.
//! Every writer is handed a slice of exactly its table's length, so an offset bug panics in
//! tests instead of spilling into a neighbouring table.

use crate::{checksum, AcpiConfig};

/// Length of the common table header (`struct acpi_table_header`).
pub(crate) const SDT_HEADER_LEN: usize = 36;

// Header field offsets.
pub(crate) const HDR_SIGNATURE: usize = 0;
pub(crate) const HDR_LENGTH: usize = 4;
pub(crate) const HDR_REVISION: usize = 8;
pub(crate) const HDR_CHECKSUM: usize = 9;
pub(crate) const HDR_OEM_ID: usize = 10;
pub(crate) const HDR_OEM_TABLE_ID: usize = 16;
pub(crate) const HDR_OEM_REVISION: usize = 24;
pub(crate) const HDR_CREATOR_ID: usize = 28;
pub(crate) const HDR_CREATOR_REVISION: usize = 32;

const _: () = assert!(HDR_CREATOR_REVISION + 4 == SDT_HEADER_LEN);

pub(crate) fn put_bytes(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

pub(crate) fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    buf[off] = v;
}

pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    put_bytes(buf, off, &v.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    put_bytes(buf, off, &v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    put_bytes(buf, off, &v.to_le_bytes());
}

/// Writes the common header of a table occupying all of `table`; the checksum is left 0 for
/// [`seal`].
pub(crate) fn put_sdt_header(
    table: &mut [u8],
    signature: &[u8; 4],
    revision: u8,
    cfg: &AcpiConfig,
) {
    let len = u32::try_from(table.len()).expect("ACPI table length fits u32");
    put_bytes(table, HDR_SIGNATURE, signature);
    put_u32(table, HDR_LENGTH, len);
    put_u8(table, HDR_REVISION, revision);
    put_u8(table, HDR_CHECKSUM, 0);
    put_bytes(table, HDR_OEM_ID, &cfg.oem_id);
    put_bytes(table, HDR_OEM_TABLE_ID, &cfg.oem_table_id);
    put_u32(table, HDR_OEM_REVISION, cfg.oem_revision);
    put_bytes(table, HDR_CREATOR_ID, &cfg.creator_id);
    put_u32(table, HDR_CREATOR_REVISION, cfg.creator_revision);
}

/// Sets the byte at `checksum_off` so that all of `region` sums to 0 modulo 256.
pub(crate) fn seal(region: &mut [u8], checksum_off: usize) {
    region[checksum_off] = 0;
    region[checksum_off] = 0u8.wrapping_sub(checksum(region));
}
