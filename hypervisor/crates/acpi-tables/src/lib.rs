//! The minimal ACPI tables a PVH dom0/domU needs, laid out into guest memory.
//!
//! Linux finds them through `hvm_start_info.rsdp_paddr` (no legacy scan): the RSDP points at an
//! XSDT listing a hardware-reduced FADT (whose `X_DSDT` names an almost empty DSDT) and a MADT
//! with one enabled local APIC entry per vCPU. That is enough for SMP bring-up and keeps Linux
//! away from legacy hardware we do not emulate (8259 PIC, PIT, PM timer, CMOS RTC, VGA, i8042);
//! see `docs/xen-pvh-abi.md` §6.2, §6.3 and §11.
//!
//! # Using it
//! [`build`] writes every table into a caller-provided byte buffer that stands for guest memory
//! at `base_gpa`, fixes every checksum and returns the guest-physical address of each table in
//! an [`AcpiLayout`]. The caller copies the bytes into the guest, marks
//! `[base_gpa, base_gpa + total_len)` as e820 `ACPI` (type 3), and puts
//! [`AcpiLayout::rsdp_gpa`] into `hvm_start_info.rsdp_paddr`. [`size_needed`] sizes the buffer.
//!
//! # Invariants
//! - vCPU `i` has ACPI processor UID `i` and APIC ID [`vcpu_apic_id`]`(i)` = `i`. Linux uses
//!   the UID as the Xen vCPU id, and the APIC ID must match CPUID leaves 1/0xB/0x1F and the
//!   x2APIC ID MSR.
//! - Tables sit at fixed offsets from `base_gpa`, each 64-byte aligned relative to it, the MADT
//!   last because only its size depends on the configuration (see [`layout`]).
//! - Nothing is written unless every check passes; then `out[..total_len]` is overwritten
//!   entirely (padding is zeroed, so no stale host bytes reach the guest) and nothing past it
//!   is touched.
//!
//! Everything here is safe, allocation-free byte writing with explicit offsets.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
mod bytes;
mod dsdt;
mod error;
mod fadt;
pub mod layout;
mod madt;
mod rsdp;
mod xsdt;

#[cfg(test)]
mod tests;

pub use build::{
    build, size_needed, AcpiConfig, AcpiLayout, IoApicEntry, OverrideEntry, MAX_IOAPICS,
    MAX_OVERRIDES,
};
pub use error::AcpiError;
pub use madt::{vcpu_apic_id, MAX_VCPUS};

/// Sum of `bytes` modulo 256.
///
/// An ACPI table (or the RSDP's checksummed prefix) is valid when this is 0 over its whole
/// length; Linux (ACPICA `acpi_tb_verify_checksum`) rejects it otherwise.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}
