//! The builder: validate everything, then write the five tables at their
//! [`layout`](crate::layout) offsets and seal their checksums.

use crate::layout::{DSDT_OFFSET, FADT_OFFSET, MADT_OFFSET, RSDP_OFFSET, XSDT_OFFSET};
use crate::{dsdt, fadt, madt, rsdp, xsdt, AcpiError, MAX_VCPUS};

/// What goes into the tables.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AcpiConfig {
    /// vCPUs `0..vcpus`, all enabled in the MADT (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// OEM ID of the RSDP and of every table header.
    pub oem_id: [u8; 6],
    /// OEM table ID of every table header.
    pub oem_table_id: [u8; 8],
    /// OEM revision of every table header.
    pub oem_revision: u32,
    /// Creator ID (the tool that built the tables) of every table header.
    pub creator_id: [u8; 4],
    /// Creator revision of every table header.
    pub creator_revision: u32,
    /// I/O APIC entries for the MADT (the control domain's vIOAPICs); `None` slots are
    /// skipped. A domain without devices has none.
    pub ioapics: [Option<IoApicEntry>; MAX_IOAPICS],
    /// Interrupt source override entries for the MADT (the host's, for the control
    /// domain).
    pub overrides: [Option<OverrideEntry>; MAX_OVERRIDES],
}

/// I/O APICs a MADT built here may list.
pub const MAX_IOAPICS: usize = 8;
/// Interrupt source overrides a MADT built here may list.
pub const MAX_OVERRIDES: usize = 16;

/// A MADT I/O APIC entry (type 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoApicEntry {
    /// Its I/O APIC id.
    pub id: u8,
    /// Physical address of its registers.
    pub addr: u32,
    /// The first GSI of its pins.
    pub gsi_base: u32,
}

/// A MADT interrupt source override entry (type 2): bus 0 (ISA) IRQ `source` arrives at
/// `gsi`, with MPS INTI `flags`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OverrideEntry {
    /// The ISA IRQ.
    pub source: u8,
    /// The GSI it arrives at.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 0-1, trigger mode bits 2-3).
    pub flags: u16,
}

impl AcpiConfig {
    /// ferrovisor's identification with `vcpus` vCPUs. The IDs match no Linux quirk table
    /// (those key on vendor OEM IDs such as `"SGI"` or `"NUMASC"`).
    pub const fn new(vcpus: u32) -> Self {
        AcpiConfig {
            vcpus,
            oem_id: *b"FERRO ",
            oem_table_id: *b"FERROVSR",
            oem_revision: 1,
            creator_id: *b"FRVS",
            creator_revision: 1,
            ioapics: [None; MAX_IOAPICS],
            overrides: [None; MAX_OVERRIDES],
        }
    }
}

/// Guest-physical addresses of the tables [`build`] wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AcpiLayout {
    /// RSDP: goes into `hvm_start_info.rsdp_paddr`.
    pub rsdp_gpa: u64,
    /// XSDT.
    pub xsdt_gpa: u64,
    /// FADT.
    pub fadt_gpa: u64,
    /// DSDT.
    pub dsdt_gpa: u64,
    /// MADT.
    pub madt_gpa: u64,
    /// Bytes written from the base: the range to mark e820 `ACPI`.
    pub total_len: usize,
}

/// Bytes [`build`] writes for `cfg` (not checking `cfg`).
pub fn size_needed(cfg: &AcpiConfig) -> usize {
    MADT_OFFSET + madt::madt_len(cfg.vcpus) + madt::io_len(cfg)
}

/// Lays out the RSDP, XSDT, FADT, DSDT and MADT for `cfg` into `out`, which stands for guest
/// memory starting at `base_gpa`.
///
/// Fails, leaving `out` untouched, if `cfg.vcpus` is 0 or above [`MAX_VCPUS`], `base_gpa` is
/// not 16-byte aligned, the tables would not end at or below 4 GiB, or `out` is shorter than
/// [`size_needed`]. On success `out[..total_len]` is fully overwritten (gaps zeroed) and the
/// rest of `out` is untouched.
pub fn build(cfg: &AcpiConfig, base_gpa: u64, out: &mut [u8]) -> Result<AcpiLayout, AcpiError> {
    if cfg.vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    if cfg.vcpus > MAX_VCPUS {
        return Err(AcpiError::TooManyVcpus {
            vcpus: cfg.vcpus,
            max: MAX_VCPUS,
        });
    }
    if !base_gpa.is_multiple_of(16) {
        return Err(AcpiError::MisalignedBase { base_gpa });
    }
    let len = size_needed(cfg);
    let end = u64::try_from(len)
        .ok()
        .and_then(|l| base_gpa.checked_add(l));
    if end.is_none_or(|end| end > 1 << 32) {
        return Err(AcpiError::AboveFourGiB { base_gpa, len });
    }
    let given = out.len();
    let out = out
        .get_mut(..len)
        .ok_or(AcpiError::BufferTooSmall { needed: len, given })?;

    // Offsets are below `len`, which fits below 4 GiB with `base_gpa`: no overflow.
    let gpa = |off: usize| base_gpa + off as u64;
    let layout = AcpiLayout {
        rsdp_gpa: gpa(RSDP_OFFSET),
        xsdt_gpa: gpa(XSDT_OFFSET),
        fadt_gpa: gpa(FADT_OFFSET),
        dsdt_gpa: gpa(DSDT_OFFSET),
        madt_gpa: gpa(MADT_OFFSET),
        total_len: len,
    };

    out.fill(0);
    // Every address is known up front and each checksum covers only its own table, so the
    // order is free; leaves first reads naturally.
    dsdt::write(table(out, DSDT_OFFSET, dsdt::DSDT_LEN), cfg);
    fadt::write(
        table(out, FADT_OFFSET, fadt::FADT_LEN),
        cfg,
        layout.dsdt_gpa,
    );
    madt::write(&mut out[MADT_OFFSET..len], cfg);
    xsdt::write(
        table(out, XSDT_OFFSET, xsdt::XSDT_LEN),
        cfg,
        [layout.fadt_gpa, layout.madt_gpa],
    );
    rsdp::write(
        table(out, RSDP_OFFSET, rsdp::RSDP_LEN),
        cfg,
        layout.xsdt_gpa,
    );
    Ok(layout)
}

/// The `len` bytes of `out` at `off`.
fn table(out: &mut [u8], off: usize, len: usize) -> &mut [u8] {
    &mut out[off..off + len]
}
