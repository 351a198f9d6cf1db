//! Each check can fail: corrupt the built bytes and watch the parser reject them.

use super::parse::{ParseError, Sum};
use super::*;
use crate::layout::{DSDT_OFFSET, FADT_OFFSET, MADT_OFFSET, XSDT_OFFSET};

/// Parses `buf` (built at [`BASE`]) after `corrupt` changed it.
fn parse_after(corrupt: impl FnOnce(&mut [u8])) -> Result<Parsed, ParseError> {
    let (l, mut buf) = built_at(3, BASE);
    corrupt(&mut buf);
    parse(
        &Guest {
            base: BASE,
            bytes: &buf,
        },
        l.rsdp_gpa,
    )
}

fn flip(buf: &mut [u8], off: usize) {
    buf[off] ^= 0x01;
}

#[test]
fn untouched_tables_parse() {
    assert!(parse_after(|_| {}).is_ok());
}

#[test]
fn flipping_any_byte_of_a_table_breaks_its_checksum() {
    let tables = [
        (XSDT_OFFSET, 52, *b"XSDT"),
        (FADT_OFFSET, 276, *b"FACP"),
        (DSDT_OFFSET, 43, *b"DSDT"),
        (MADT_OFFSET, 44 + 3 * 8, *b"APIC"),
    ];
    for (off, len, sig) in tables {
        // From the revision byte on; signature and length corruption is caught before the
        // checksum, and so are XSDT entries (they would point at garbage).
        let end = if sig == *b"XSDT" { 36 } else { len };
        for i in 8..end {
            let got = parse_after(|b| flip(b, off + i));
            assert_eq!(
                got.unwrap_err(),
                ParseError::Checksum(Sum::Table(sig)),
                "{sig:?} byte {i}"
            );
        }
    }
}

#[test]
fn rsdp_checksums() {
    // Byte 9 (OEM ID) is covered by both checksums; the v1 one is checked first.
    assert_eq!(
        parse_after(|b| flip(b, 9)).unwrap_err(),
        ParseError::Checksum(Sum::RsdpV1)
    );
    // Byte 33 (reserved) is only covered by the extended checksum.
    assert_eq!(
        parse_after(|b| flip(b, 33)).unwrap_err(),
        ParseError::Checksum(Sum::RsdpExt)
    );
    assert_eq!(
        parse_after(|b| b[0] = b'X').unwrap_err(),
        ParseError::RsdpSignature
    );
}

#[test]
fn rsdp_revision_and_length_are_checked() {
    // Keep the v1 checksum valid while changing the revision (byte 15), via the checksum byte.
    let got = parse_after(|b| {
        b[15] = 0;
        b[8] = b[8].wrapping_add(2);
    });
    assert_eq!(got.unwrap_err(), ParseError::RsdpRevision(0));
    let got = parse_after(|b| {
        b[20] = 20; // Length is outside the v1 checksum; rebalance the extended one.
        b[32] = b[32].wrapping_add(16);
    });
    assert_eq!(got.unwrap_err(), ParseError::RsdpLength(20));
}

#[test]
fn xsdt_pointer_must_hit_an_xsdt() {
    // Point the RSDP 0x40 bytes further (at the FADT), fixing only the extended checksum.
    let got = parse_after(|b| {
        b[24] += 0x40;
        b[32] = b[32].wrapping_sub(0x40);
    });
    assert!(matches!(
        got.unwrap_err(),
        ParseError::Signature {
            expected: [b'X', b'S', b'D', b'T'],
            ..
        }
    ));
}

#[test]
fn xsdt_entry_pointing_outside_memory_is_rejected() {
    // Bump the FADT pointer's top byte and balance the XSDT checksum.
    let got = parse_after(|b| {
        b[XSDT_OFFSET + 36 + 7] = 0x10;
        b[XSDT_OFFSET + 9] = b[XSDT_OFFSET + 9].wrapping_sub(0x10);
    });
    assert!(matches!(got.unwrap_err(), ParseError::OutOfBounds { .. }));
}

#[test]
fn truncated_table_length_is_caught() {
    // A DSDT length of 40 cuts the AML and breaks the checksum; 8 is below a header.
    assert!(matches!(
        parse_after(|b| b[DSDT_OFFSET + 4] = 40).unwrap_err(),
        ParseError::Checksum(Sum::Table(_))
    ));
    assert_eq!(
        parse_after(|b| b[DSDT_OFFSET + 4] = 8).unwrap_err(),
        ParseError::TableLength {
            sig: *b"DSDT",
            len: 8
        }
    );
}

#[test]
fn zero_length_madt_entry_is_rejected() {
    let got = parse_after(|b| {
        b[MADT_OFFSET + 44 + 1] = 0;
        b[MADT_OFFSET + 9] = b[MADT_OFFSET + 9].wrapping_add(8);
    });
    assert_eq!(got.unwrap_err(), ParseError::MadtEntry { offset: 44 });
}

#[test]
fn dsdt_and_x_dsdt_must_agree() {
    let got = parse_after(|b| {
        b[FADT_OFFSET + 40] ^= 0x40;
        b[FADT_OFFSET + 9] = b[FADT_OFFSET + 9].wrapping_add(0x40);
    });
    assert!(matches!(got.unwrap_err(), ParseError::DsdtMismatch { .. }));
}
