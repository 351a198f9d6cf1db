//! Cross-check with ACPICA's own disassembler, `iasl` (Debian `acpica-tools`, installed by
//! `cargo xtask test` through its prerequisites). Under `cargo xtask test`, which sets
//! `FERROVISOR_REQUIRE_IASL`, a missing `iasl` fails the test; a plain `cargo test` without
//! it says so on stderr and passes without checking.

use std::format;
use std::fs;
use std::process::Command;
use std::string::String;

use super::*;

/// Set by `cargo xtask test` (xtask's `prereq::REQUIRE_IASL_ENV`).
const REQUIRE_IASL_ENV: &str = "FERROVISOR_REQUIRE_IASL";

/// Whether `iasl` can be run (`iasl -v` prints its version and exits 0).
fn iasl_present() -> bool {
    Command::new("iasl")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn iasl_disassembles_every_table() {
    if !iasl_present() {
        assert!(
            std::env::var_os(REQUIRE_IASL_ENV).is_none(),
            "iasl (acpica-tools) is missing but {REQUIRE_IASL_ENV} requires the cross-check"
        );
        std::eprintln!("iasl_disassembles_every_table: iasl not found; NOT checked");
        return;
    }
    // 256 vCPUs: 255 type-0 entries and one x2APIC entry.
    let (l, buf) = built_at(256, BASE);
    let dir = std::env::temp_dir().join(format!("acpi-tables-iasl-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let madt_len = l.total_len - crate::layout::MADT_OFFSET;
    let tables = [
        ("xsdt", l.xsdt_gpa, 52),
        ("facp", l.fadt_gpa, 276),
        ("dsdt", l.dsdt_gpa, 43),
        ("apic", l.madt_gpa, madt_len),
    ];
    for (name, gpa, len) in tables {
        let off = (gpa - BASE) as usize;
        let aml = dir.join(format!("{name}.dat"));
        fs::write(&aml, &buf[off..off + len]).unwrap();
        let out = Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .output()
            .expect("run iasl");
        assert!(
            out.status.success(),
            "iasl -d {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dsl = fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        assert!(!dsl.contains("Incorrect checksum"), "{name}: {dsl}");
        assert!(!dsl.to_lowercase().contains("error"), "{name}: {dsl}");
        if name == "apic" {
            assert_eq!(dsl.matches("[Processor Local APIC]").count(), 255, "{dsl}");
            assert_eq!(dsl.matches("[Processor Local x2APIC]").count(), 1, "{dsl}");
        }
        if name == "dsdt" {
            assert!(dsl.contains("DefinitionBlock"), "{dsl}");
            assert!(dsl.contains("Scope (\\_SB)"), "{dsl}");
        }
    }
    if std::env::var_os("KEEP_IASL").is_none() {
        fs::remove_dir_all(&dir).unwrap();
    }
}
