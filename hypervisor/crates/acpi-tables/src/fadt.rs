//! FADT, revision 6.3 (ACPI 6.3 §5.2.9), describing a *hardware-reduced* ACPI platform.
//!
//! Each non-zero choice, and what Linux 6.1 does with it (`arch/x86/kernel/acpi/boot.c`
//! `acpi_parse_fadt`/`acpi_reduced_hw_init`, `drivers/acpi/scan.c`, ACPICA `tbfadt.c`):
//!
//! * `Flags.HW_REDUCED_ACPI` (bit 20): there is no PM1/GPE/PM-timer hardware. Linux installs
//!   the null legacy PIC, skips `timer_init` (no PIT/HPET probing), ACPICA installs no SCI
//!   handler and never tries to switch into ACPI mode, and no FACS is needed.
//! * `Flags.WBINVD` (bit 0): the spec requires it on every ACPI 2.0+ system; it only promises
//!   that WBINVD works, which matters for sleep states we do not offer.
//! * `Flags.PWR_BUTTON` | `SLP_BUTTON` (bits 4, 5): "no fixed-feature buttons". With them clear
//!   `acpi_bus_scan_fixed()` fabricates LNXPWRBN/LNXSLPBN devices even in hardware-reduced
//!   mode. Xen's libacpi sets both when the guest has no buttons.
//! * `Flags.FORCE_APIC_PHYSICAL_DESTINATION_MODE` (bit 19): Linux already uses x2APIC physical
//!   mode on Xen (no interrupt remapping), so this changes nothing today, but it states the
//!   contract our vLAPIC relies on: no logical/cluster destinations.
//! * `IAPC_BOOT_ARCH` = `VGA_NOT_PRESENT` (bit 2) | `CMOS_RTC_NOT_PRESENT` (bit 5), as in
//!   `docs/xen-pvh-abi.md` §6.3. Linux then never probes VGA and does not register the rtc-cmos
//!   platform device (ports 0x70/0x71 read all ones here; wallclock comes from Xen's shared
//!   info). Deliberately clear: `LEGACY_DEVICES` (bit 0; clear = no ISA/PnP BIOS devices),
//!   `8042` (bit 1; clear = no keyboard controller, so i8042 stays off), `MSI_NOT_SUPPORTED`
//!   (bit 3; a dom0 driving real devices needs MSI) and `PCIE_ASPM_CONTROLS` (bit 4; clear
//!   lets the OS manage ASPM, the normal setting). Xen's libacpi sets `NO_VGA` the same way;
//!   Xen's PVH dom0 passes the host FADT through instead, which we cannot do.
//! * `P_LVL2_LAT` = 101, `P_LVL3_LAT` = 1001: the spec's values for "C2/C3 not supported".
//! * `DSDT` and `X_DSDT` both name the DSDT (equal, so ACPICA sees no 32/64-bit mismatch).
//!
//! Left zero: FACS pointers, `SCI_INT`, `SMI_CMD` and the ACPI enable/disable values (always
//! in ACPI mode), every PM1/PM2/GPE block and `PM_TMR_BLK`/`X_PM_TMR_BLK` (no `acpi_pm`
//! clocksource), `RESET_REG` (reboot goes through `SCHEDOP_shutdown`), the sleep
//! control/status registers (no S-states; poweroff is "all vCPUs HLT"), `CENTURY`,
//! `Preferred_PM_Profile` (unspecified) and the hypervisor vendor identity.

use crate::bytes::{put_sdt_header, put_u16, put_u32, put_u64, put_u8, seal, HDR_CHECKSUM};
use crate::AcpiConfig;

/// Length of a revision-6 FADT (ACPI 6.0 to 6.5).
pub(crate) const FADT_LEN: usize = 276;
/// FADT major revision.
pub(crate) const FADT_REVISION: u8 = 6;
/// FADT minor revision (ACPI 6.3, matching the MADT revision).
pub(crate) const FADT_MINOR_REVISION: u8 = 3;

// Offsets of the fields we write (everything else stays 0) and landmarks for the layout checks
// below. The test parser has its own offsets, so a wrong one here cannot hide behind a reader
// that shares it.
pub(crate) const FADT_DSDT: usize = 40;
pub(crate) const FADT_P_LVL2_LAT: usize = 96;
pub(crate) const FADT_P_LVL3_LAT: usize = 98;
pub(crate) const FADT_IAPC_BOOT_ARCH: usize = 109;
pub(crate) const FADT_FLAGS: usize = 112;
pub(crate) const FADT_RESET_REG: usize = 116;
pub(crate) const FADT_MINOR: usize = 131;
pub(crate) const FADT_X_DSDT: usize = 140;
pub(crate) const FADT_X_PM_TMR_BLK: usize = 208;
pub(crate) const FADT_SLEEP_CONTROL_REG: usize = 244;
pub(crate) const FADT_HYPERVISOR_VENDOR_ID: usize = 268;

/// Size of a Generic Address Structure.
const GAS_LEN: usize = 12;
const _: () = assert!(FADT_RESET_REG + GAS_LEN + 1 + 2 == FADT_MINOR);
const _: () = assert!(FADT_X_DSDT + 8 + 8 * GAS_LEN == FADT_SLEEP_CONTROL_REG);
const _: () = assert!(FADT_X_PM_TMR_BLK == FADT_X_DSDT + 8 + 5 * GAS_LEN);
const _: () = assert!(FADT_SLEEP_CONTROL_REG + 2 * GAS_LEN == FADT_HYPERVISOR_VENDOR_ID);
const _: () = assert!(FADT_HYPERVISOR_VENDOR_ID + 8 == FADT_LEN);

// `Flags` bits.
pub(crate) const FLAG_WBINVD: u32 = 1 << 0;
pub(crate) const FLAG_PWR_BUTTON: u32 = 1 << 4;
pub(crate) const FLAG_SLP_BUTTON: u32 = 1 << 5;
pub(crate) const FLAG_APIC_PHYSICAL: u32 = 1 << 19;
pub(crate) const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

// `IAPC_BOOT_ARCH` bits we set (the ones left clear are listed in the module docs).
pub(crate) const BOOT_NO_VGA: u16 = 1 << 2;
pub(crate) const BOOT_NO_CMOS_RTC: u16 = 1 << 5;

/// `Flags` we set.
pub(crate) const FADT_FLAGS_VALUE: u32 =
    FLAG_WBINVD | FLAG_PWR_BUTTON | FLAG_SLP_BUTTON | FLAG_APIC_PHYSICAL | FLAG_HW_REDUCED_ACPI;
/// `IAPC_BOOT_ARCH` we set.
pub(crate) const IAPC_BOOT_ARCH_VALUE: u16 = BOOT_NO_VGA | BOOT_NO_CMOS_RTC;

/// Spec values meaning "C2 not supported" (> 100 us) and "C3 not supported" (> 1000 us).
const P_LVL2_LAT_NONE: u16 = 101;
const P_LVL3_LAT_NONE: u16 = 1001;

/// Writes the FADT into `fadt` (exactly [`FADT_LEN`] bytes). `dsdt_gpa` is below 4 GiB.
pub(crate) fn write(fadt: &mut [u8], cfg: &AcpiConfig, dsdt_gpa: u64) {
    let dsdt32 = u32::try_from(dsdt_gpa).expect("DSDT below 4 GiB, checked by build()");
    fadt.fill(0);
    put_sdt_header(fadt, b"FACP", FADT_REVISION, cfg);
    put_u32(fadt, FADT_DSDT, dsdt32);
    put_u16(fadt, FADT_P_LVL2_LAT, P_LVL2_LAT_NONE);
    put_u16(fadt, FADT_P_LVL3_LAT, P_LVL3_LAT_NONE);
    put_u16(fadt, FADT_IAPC_BOOT_ARCH, IAPC_BOOT_ARCH_VALUE);
    put_u32(fadt, FADT_FLAGS, FADT_FLAGS_VALUE);
    put_u8(fadt, FADT_MINOR, FADT_MINOR_REVISION);
    put_u64(fadt, FADT_X_DSDT, dsdt_gpa);
    seal(fadt, HDR_CHECKSUM);
}
