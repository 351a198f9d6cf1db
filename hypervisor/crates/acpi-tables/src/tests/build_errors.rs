//! Refused configurations and buffers, the untouched-on-error promise, and padding.

use std::string::ToString;

use super::*;
use crate::{checksum, AcpiError, MAX_VCPUS};

/// Runs `build` on a 0xAA-filled buffer of `len` bytes, checks it stayed untouched on error.
fn build_err(cfg: &AcpiConfig, base: u64, len: usize) -> AcpiError {
    let mut buf = vec![0xAAu8; len];
    let err = build(cfg, base, &mut buf).unwrap_err();
    assert!(
        buf.iter().all(|&b| b == 0xAA),
        "buffer written despite {err:?}"
    );
    err
}

#[test]
fn buffer_too_small() {
    let cfg = AcpiConfig::new(4);
    let needed = size_needed(&cfg);
    assert_eq!(
        build_err(&cfg, BASE, needed - 1),
        AcpiError::BufferTooSmall {
            needed,
            given: needed - 1
        }
    );
    assert_eq!(
        build_err(&cfg, BASE, 0),
        AcpiError::BufferTooSmall { needed, given: 0 }
    );
}

#[test]
fn larger_buffer_is_untouched_past_total_len_and_gaps_are_zeroed() {
    let cfg = AcpiConfig::new(4);
    let needed = size_needed(&cfg);
    let mut buf = vec![0xAAu8; needed + 100];
    let l = build(&cfg, BASE, &mut buf).unwrap();
    assert_eq!(l.total_len, needed);
    assert!(
        buf[needed..].iter().all(|&b| b == 0xAA),
        "wrote past total_len"
    );
    // Gaps between tables: after RSDP (36), XSDT (0x40 + 52), FADT (0x80 + 276), DSDT (0x1C0 + 43).
    for gap in [36..0x40, 0x74..0x80, 0x194..0x1C0, 0x1EB..0x200] {
        assert!(
            buf[gap.clone()].iter().all(|&b| b == 0),
            "gap {gap:?} not zeroed"
        );
    }
}

#[test]
fn size_needed_matches_layout() {
    for n in [1, 2, 254, 255, 256, 1000, MAX_VCPUS] {
        let (l, buf) = built_at(n, BASE);
        assert_eq!(l.total_len, size_needed(&AcpiConfig::new(n)));
        assert_eq!(buf.len(), l.total_len);
        let x2 = n.saturating_sub(255) as usize;
        assert_eq!(l.total_len, 0x200 + 44 + 8 * (n as usize - x2) + 16 * x2);
    }
}

#[test]
fn vcpu_count_limits() {
    let big = vec![0u8; 1 << 20];
    assert_eq!(
        build_err(&AcpiConfig::new(0), BASE, big.len()),
        AcpiError::NoVcpus
    );
    assert_eq!(
        build_err(&AcpiConfig::new(MAX_VCPUS + 1), BASE, big.len()),
        AcpiError::TooManyVcpus {
            vcpus: MAX_VCPUS + 1,
            max: MAX_VCPUS
        }
    );
}

#[test]
fn base_must_be_16_byte_aligned() {
    let cfg = AcpiConfig::new(1);
    let n = size_needed(&cfg);
    assert_eq!(
        build_err(&cfg, BASE + 8, n),
        AcpiError::MisalignedBase { base_gpa: BASE + 8 }
    );
    assert!(build(&cfg, BASE + 16, &mut vec![0; n]).is_ok());
}

#[test]
fn tables_must_end_below_4g() {
    let cfg = AcpiConfig::new(1);
    let len = size_needed(&cfg);
    let last_ok = (1u64 << 32) - (len as u64).next_multiple_of(16);
    assert!(build(&cfg, last_ok, &mut vec![0; len]).is_ok());
    for base in [last_ok + 16, 1 << 32, !0xFu64] {
        assert_eq!(
            build_err(&cfg, base, len),
            AcpiError::AboveFourGiB {
                base_gpa: base,
                len
            }
        );
    }
}

#[test]
fn error_messages() {
    let cases = [
        (AcpiError::NoVcpus, "no vCPUs to describe in the MADT"),
        (
            AcpiError::TooManyVcpus {
                vcpus: 5000,
                max: 4096,
            },
            "5000 vCPUs requested, at most 4096 supported",
        ),
        (
            AcpiError::MisalignedBase { base_gpa: 0x1008 },
            "ACPI base 0x1008 is not 16-byte aligned",
        ),
        (
            AcpiError::AboveFourGiB {
                base_gpa: 0x1_0000_0000,
                len: 0x234,
            },
            "ACPI tables at 0x100000000 (0x234 bytes) do not end below 4 GiB",
        ),
        (
            AcpiError::BufferTooSmall {
                needed: 0x254,
                given: 0x10,
            },
            "ACPI tables need 0x254 bytes, buffer has 0x10",
        ),
    ];
    for (err, msg) in cases {
        assert_eq!(err.to_string(), msg);
    }
}

#[test]
fn checksum_helper() {
    assert_eq!(checksum(&[]), 0);
    assert_eq!(checksum(&[0x80, 0x80]), 0);
    assert_eq!(checksum(&[1, 2, 3]), 6);
    assert_eq!(checksum(&[0xFF, 0x02]), 1);
}
