//! Host tests. Every check of the built bytes goes through [`parse::parse`], a reader that
//! walks the tables as Linux does, so the tests exercise the path the guest takes.

use std::vec;
use std::vec::Vec;

use crate::{build, size_needed, AcpiConfig, AcpiLayout};

mod build_errors;
mod corrupt;
mod iasl;
mod parse;
mod tables;

use parse::{parse, Guest, Parsed};

/// A base like Xen's `ACPI_INFO_PHYSICAL_ADDRESS` for PVH domUs.
const BASE: u64 = 0xFC00_0000;

/// Builds the tables for `vcpus` at `base` into a buffer of exactly the needed size.
fn built_at(vcpus: u32, base: u64) -> (AcpiLayout, Vec<u8>) {
    let cfg = AcpiConfig::new(vcpus);
    let mut buf = vec![0u8; size_needed(&cfg)];
    let layout = build(&cfg, base, &mut buf).expect("build");
    assert_eq!(layout.total_len, buf.len());
    (layout, buf)
}

/// Builds and parses the tables for `vcpus` at [`BASE`].
fn parsed(vcpus: u32) -> (AcpiLayout, Parsed) {
    let (layout, buf) = built_at(vcpus, BASE);
    let guest = Guest {
        base: BASE,
        bytes: &buf,
    };
    let p = parse(&guest, layout.rsdp_gpa).expect("tables parse");
    (layout, p)
}
