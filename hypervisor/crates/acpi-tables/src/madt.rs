//! MADT (ACPI 6.3 §5.2.12): one enabled local APIC per vCPU, nothing else.
//!
//! * `LocalApicAddress` = 0xFEE00000 (unused once Linux runs in x2APIC mode, but it must be
//!   the architectural default), `Flags` = 0: no `PCAT_COMPAT`, because we emulate no 8259.
//! * vCPU `i` gets processor UID `i` and APIC ID `i` ([`vcpu_apic_id`]). Linux takes the UID as
//!   the Xen vCPU id (`xen_cpu_up_prepare_hvm`), so it must be the vCPU index; Xen's dom0 uses
//!   APIC ID `2i`, we keep the identity so CPUID topology stays simple.
//! * APIC IDs 0..=254 use a Processor Local APIC entry (type 0, 8 bytes; its ID and UID fields
//!   are 8-bit, and 0xFF means "broadcast"/ignored). From 255 on, a Local x2APIC entry (type 9,
//!   16 bytes), as the spec requires. Linux parses x2APIC entries first, so those CPUs get
//!   lower logical numbers than their index; only UIDs matter to Xen. Note that Linux limits
//!   APIC IDs to 255 without interrupt remapping unless the Xen CPUID leaf advertises
//!   `XEN_HVM_CPUID_EXT_DEST_ID`.
//! * No I/O APIC, interrupt source override or NMI entries for a guest without devices
//!   (`docs/xen-pvh-abi.md` §6.3, §11). The control domain gets an I/O APIC entry per
//!   virtual I/O APIC (the host's ids, addresses and GSI bases) and the host's interrupt
//!   source overrides (`AcpiConfig::ioapics`, `overrides`), after the processors, as Xen
//!   builds a PVH hardware domain's MADT.
//! * Revision 5 (ACPI 6.3): every entry is `Enabled`, so the 6.3 "online capable" bit is moot.

use crate::bytes::{put_sdt_header, put_u32, put_u8, seal, HDR_CHECKSUM, SDT_HEADER_LEN};
use crate::AcpiConfig;

/// Largest vCPU count [`build`](crate::build) accepts. Any bound works for the format; this one
/// keeps the MADT under 64 KiB and is far above what the hypervisor runs.
pub const MAX_VCPUS: u32 = 4096;

/// Length of the MADT before its entries.
pub(crate) const MADT_HEADER_LEN: usize = 44;
/// MADT revision (ACPI 6.3).
pub(crate) const MADT_REVISION: u8 = 5;
pub(crate) const MADT_LAPIC_ADDR: usize = 36;
pub(crate) const MADT_FLAGS: usize = 40;
const _: () = assert!(SDT_HEADER_LEN + 4 + 4 == MADT_HEADER_LEN);

/// Architectural local APIC base.
pub(crate) const LAPIC_BASE: u32 = 0xFEE0_0000;

/// Processor Local APIC entry: type, length, UID (u8), APIC ID (u8), flags (u32).
pub(crate) const TYPE_LAPIC: u8 = 0;
pub(crate) const LAPIC_ENTRY_LEN: usize = 8;
/// Local x2APIC entry: type, length, reserved (2), x2APIC ID (u32), flags (u32), UID (u32).
pub(crate) const TYPE_X2APIC: u8 = 9;
pub(crate) const X2APIC_ENTRY_LEN: usize = 16;
/// I/O APIC entry: type, length, id, reserved, address (u32), GSI base (u32).
pub(crate) const TYPE_IOAPIC: u8 = 1;
pub(crate) const IOAPIC_ENTRY_LEN: usize = 12;
/// Interrupt source override: type, length, bus, source, GSI (u32), flags (u16).
pub(crate) const TYPE_OVERRIDE: u8 = 2;
pub(crate) const OVERRIDE_ENTRY_LEN: usize = 10;
/// `Enabled` bit of the local APIC flags.
pub(crate) const LAPIC_ENABLED: u32 = 1 << 0;
/// Highest APIC ID a type-0 entry may carry (0xFF is reserved).
pub(crate) const MAX_XAPIC_ID: u32 = 254;

/// APIC ID (and x2APIC ID) of vCPU `vcpu`: the identity. CPUID leaves 1, 0xB and 0x1F and the
/// x2APIC ID MSR must report the same value.
pub const fn vcpu_apic_id(vcpu: u32) -> u32 {
    vcpu
}

/// `(UID, APIC ID)` of `vcpu` if both fit a type-0 entry, else `None` (use type 9).
fn xapic_ids(vcpu: u32) -> Option<(u8, u8)> {
    let apic_id = vcpu_apic_id(vcpu);
    if apic_id > MAX_XAPIC_ID {
        return None;
    }
    Some((u8::try_from(vcpu).ok()?, u8::try_from(apic_id).ok()?))
}

fn entry_len(vcpu: u32) -> usize {
    match xapic_ids(vcpu) {
        Some(_) => LAPIC_ENTRY_LEN,
        None => X2APIC_ENTRY_LEN,
    }
}

/// Length of the MADT for `vcpus` vCPUs, in O(1) even for absurd counts: with identity APIC
/// IDs, vCPUs `0..=254` take type-0 entries and the rest type 9 (checked against
/// [`entry_len`] by the tests).
pub(crate) fn madt_len(vcpus: u32) -> usize {
    let xapic = vcpus.min(MAX_XAPIC_ID + 1) as usize;
    let x2apic = vcpus as usize - xapic;
    MADT_HEADER_LEN + xapic * LAPIC_ENTRY_LEN + x2apic * X2APIC_ENTRY_LEN
}

/// Bytes of the I/O APIC and override entries of `cfg`.
pub(crate) fn io_len(cfg: &AcpiConfig) -> usize {
    cfg.ioapics.iter().flatten().count() * IOAPIC_ENTRY_LEN
        + cfg.overrides.iter().flatten().count() * OVERRIDE_ENTRY_LEN
}

/// Writes the MADT into `madt` (exactly [`madt_len`]`(cfg.vcpus) + `[`io_len`]`(cfg)`
/// bytes).
pub(crate) fn write(madt: &mut [u8], cfg: &AcpiConfig) {
    madt.fill(0);
    put_sdt_header(madt, b"APIC", MADT_REVISION, cfg);
    put_u32(madt, MADT_LAPIC_ADDR, LAPIC_BASE);
    put_u32(madt, MADT_FLAGS, 0);
    let mut off = MADT_HEADER_LEN;
    for vcpu in 0..cfg.vcpus {
        let len = entry_len(vcpu);
        let entry = &mut madt[off..off + len];
        match xapic_ids(vcpu) {
            Some((uid, apic_id)) => {
                put_u8(entry, 0, TYPE_LAPIC);
                put_u8(entry, 1, LAPIC_ENTRY_LEN as u8);
                put_u8(entry, 2, uid);
                put_u8(entry, 3, apic_id);
                put_u32(entry, 4, LAPIC_ENABLED);
            }
            None => {
                put_u8(entry, 0, TYPE_X2APIC);
                put_u8(entry, 1, X2APIC_ENTRY_LEN as u8);
                put_u32(entry, 4, vcpu_apic_id(vcpu));
                put_u32(entry, 8, LAPIC_ENABLED);
                put_u32(entry, 12, vcpu);
            }
        }
        off += len;
    }
    for io in cfg.ioapics.iter().flatten() {
        let entry = &mut madt[off..off + IOAPIC_ENTRY_LEN];
        put_u8(entry, 0, TYPE_IOAPIC);
        put_u8(entry, 1, IOAPIC_ENTRY_LEN as u8);
        put_u8(entry, 2, io.id);
        put_u32(entry, 4, io.addr);
        put_u32(entry, 8, io.gsi_base);
        off += IOAPIC_ENTRY_LEN;
    }
    for o in cfg.overrides.iter().flatten() {
        let entry = &mut madt[off..off + OVERRIDE_ENTRY_LEN];
        put_u8(entry, 0, TYPE_OVERRIDE);
        put_u8(entry, 1, OVERRIDE_ENTRY_LEN as u8);
        put_u8(entry, 3, o.source);
        put_u32(entry, 4, o.gsi);
        entry[8..10].copy_from_slice(&o.flags.to_le_bytes());
        off += OVERRIDE_ENTRY_LEN;
    }
    debug_assert_eq!(off, madt.len());
    seal(madt, HDR_CHECKSUM);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madt_len_matches_entry_by_entry_sum() {
        for n in (0..600).chain([MAX_VCPUS, MAX_VCPUS + 1]) {
            let sum: usize = (0..n).map(entry_len).sum();
            assert_eq!(madt_len(n), MADT_HEADER_LEN + sum, "{n} vCPUs");
        }
        // Huge counts are computed, not iterated (`build` rejects them before writing).
        assert_eq!(
            madt_len(u32::MAX),
            44 + 255 * 8 + (u32::MAX as usize - 255) * 16
        );
    }
}
