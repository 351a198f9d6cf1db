//! DSDT (ACPI 6.3 §5.2.11.1): the mandatory AML table, here with an empty body scope.
//!
//! A hardware-reduced guest with no ACPI-enumerated devices needs no AML at all, but ACPICA
//! requires a DSDT to exist. The body is one empty `Scope (\_SB) {}` (ACPICA predefines
//! `\_SB`), which is valid AML that `iasl -d` decodes, and a natural place to grow devices
//! later. Revision 2 selects 64-bit AML integers.

use crate::bytes::{put_bytes, put_sdt_header, seal, HDR_CHECKSUM, SDT_HEADER_LEN};
use crate::AcpiConfig;

/// AML body: `ScopeOp`, `PkgLength` (1 byte, counting itself and the name), `\_SB_`.
pub(crate) const DSDT_AML: [u8; 7] = [0x10, 0x06, b'\\', b'_', b'S', b'B', b'_'];
/// Length of the DSDT.
pub(crate) const DSDT_LEN: usize = SDT_HEADER_LEN + DSDT_AML.len();
/// DSDT revision: 2 or more means 64-bit integers in AML.
pub(crate) const DSDT_REVISION: u8 = 2;

/// Writes the DSDT into `dsdt` (exactly [`DSDT_LEN`] bytes).
pub(crate) fn write(dsdt: &mut [u8], cfg: &AcpiConfig) {
    put_sdt_header(dsdt, b"DSDT", DSDT_REVISION, cfg);
    put_bytes(dsdt, SDT_HEADER_LEN, &DSDT_AML);
    seal(dsdt, HDR_CHECKSUM);
}
