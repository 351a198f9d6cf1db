//! RSDP, revision 2 (ACPI 6.3 §5.2.5.3): the root pointer `hvm_start_info.rsdp_paddr` names.
//!
//! Only the XSDT address is filled in; `RsdtAddress` stays 0, as in Xen's PVH dom0 RSDP
//! (`pvh_setup_acpi`). ACPICA uses the XSDT whenever the revision is at least 2 and the XSDT
//! address is non-zero, so the only thing lost is the `acpi=rsdt` command-line override.
//! Both checksums are set: the ACPI 1.0 one over the first 20 bytes, the extended one over all
//! 36.

use crate::bytes::{put_bytes, put_u32, put_u64, put_u8, seal};
use crate::AcpiConfig;

/// Length of a revision-2 RSDP.
pub(crate) const RSDP_LEN: usize = 36;
/// Length covered by the ACPI 1.0 checksum.
pub(crate) const RSDP_V1_LEN: usize = 20;
/// `"RSD PTR "`.
pub(crate) const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// RSDP revision for ACPI 2.0 and later (XSDT present).
pub(crate) const RSDP_REVISION: u8 = 2;

pub(crate) const RSDP_CHECKSUM: usize = 8;
pub(crate) const RSDP_OEM_ID: usize = 9;
pub(crate) const RSDP_REVISION_OFF: usize = 15;
pub(crate) const RSDP_RSDT_ADDRESS: usize = 16;
pub(crate) const RSDP_LENGTH: usize = 20;
pub(crate) const RSDP_XSDT_ADDRESS: usize = 24;
pub(crate) const RSDP_EXT_CHECKSUM: usize = 32;

// Three reserved bytes follow the extended checksum.
const _: () = assert!(RSDP_EXT_CHECKSUM + 1 + 3 == RSDP_LEN);
const _: () = assert!(RSDP_LENGTH == RSDP_V1_LEN);

/// Writes the RSDP into `rsdp` (exactly [`RSDP_LEN`] bytes).
pub(crate) fn write(rsdp: &mut [u8], cfg: &AcpiConfig, xsdt_gpa: u64) {
    rsdp.fill(0);
    put_bytes(rsdp, 0, RSDP_SIGNATURE);
    put_bytes(rsdp, RSDP_OEM_ID, &cfg.oem_id);
    put_u8(rsdp, RSDP_REVISION_OFF, RSDP_REVISION);
    put_u32(rsdp, RSDP_RSDT_ADDRESS, 0);
    put_u32(rsdp, RSDP_LENGTH, RSDP_LEN as u32);
    put_u64(rsdp, RSDP_XSDT_ADDRESS, xsdt_gpa);
    // The v1 checksum first: the extended checksum covers the v1 checksum byte too.
    seal(&mut rsdp[..RSDP_V1_LEN], RSDP_CHECKSUM);
    seal(rsdp, RSDP_EXT_CHECKSUM);
}
