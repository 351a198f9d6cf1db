//! Contents of each table, read back through the Linux-like parser.

use super::parse::{u16_at, u32_at, u64_at};
use super::*;
use crate::checksum;
use crate::layout::{DSDT_OFFSET, FADT_OFFSET, MADT_OFFSET, RSDP_OFFSET, XSDT_OFFSET};

#[test]
fn layout_offsets_are_fixed() {
    assert_eq!(
        (
            RSDP_OFFSET,
            XSDT_OFFSET,
            FADT_OFFSET,
            DSDT_OFFSET,
            MADT_OFFSET
        ),
        (0, 0x40, 0x80, 0x1C0, 0x200)
    );
    let (l, _) = parsed(4);
    assert_eq!(l.rsdp_gpa, BASE);
    assert_eq!(l.xsdt_gpa, BASE + 0x40);
    assert_eq!(l.fadt_gpa, BASE + 0x80);
    assert_eq!(l.dsdt_gpa, BASE + 0x1C0);
    assert_eq!(l.madt_gpa, BASE + 0x200);
    assert_eq!(l.total_len, 0x200 + 44 + 4 * 8);
}

#[test]
fn every_table_checksum_is_zero() {
    let (_, p) = parsed(3);
    assert_eq!(checksum(&p.rsdp[..20]), 0);
    assert_eq!(checksum(&p.rsdp), 0);
    for t in [&p.xsdt, &p.fadt, &p.dsdt, &p.madt] {
        assert_eq!(checksum(&t.bytes), 0, "{:?}", t.signature());
    }
}

#[test]
fn rsdp_fields() {
    let (l, p) = parsed(1);
    let r = &p.rsdp;
    assert_eq!(r.len(), 36);
    assert_eq!(&r[0..8], b"RSD PTR ");
    assert_eq!(&r[9..15], b"FERRO ");
    assert_eq!(r[15], 2, "revision");
    assert_eq!(u32_at(r, 16), 0, "no RSDT");
    assert_eq!(u32_at(r, 20), 36, "length");
    assert_eq!(u64_at(r, 24), l.xsdt_gpa);
    assert_eq!(&r[33..36], &[0, 0, 0], "reserved");
}

#[test]
fn xsdt_lists_exactly_fadt_then_madt() {
    let (l, p) = parsed(2);
    assert_eq!(p.xsdt.gpa, l.xsdt_gpa);
    assert_eq!(p.xsdt.revision(), 1);
    assert_eq!(p.xsdt.bytes.len(), 36 + 16);
    assert_eq!(p.xsdt_entries, [l.fadt_gpa, l.madt_gpa]);
    assert_eq!(p.fadt.gpa, l.fadt_gpa);
    assert_eq!(p.fadt.signature(), *b"FACP");
    assert_eq!(p.madt.gpa, l.madt_gpa);
    assert_eq!(p.madt.signature(), *b"APIC");
}

#[test]
fn fadt_is_hardware_reduced_and_points_at_dsdt() {
    let (l, p) = parsed(1);
    let f = &p.fadt.bytes;
    assert_eq!(f.len(), 276);
    assert_eq!((p.fadt.revision(), f[131]), (6, 3), "revision 6.3");
    let flags = u32_at(f, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_eq!(
        flags,
        (1 << 0) | (1 << 4) | (1 << 5) | (1 << 19) | (1 << 20)
    );
    let boot_arch = u16_at(f, 109);
    assert_eq!(
        boot_arch,
        (1 << 2) | (1 << 5),
        "NO_VGA | NO_CMOS_RTC, no 8042/legacy/MSI/ASPM"
    );
    assert_eq!(u64_at(f, 140), l.dsdt_gpa, "X_DSDT");
    assert_eq!(u64::from(u32_at(f, 40)), l.dsdt_gpa, "DSDT");
    assert_eq!(p.dsdt.gpa, l.dsdt_gpa);
    assert_eq!((u16_at(f, 96), u16_at(f, 98)), (101, 1001), "no C2/C3");
}

#[test]
fn fadt_has_no_legacy_resources() {
    let (_, p) = parsed(1);
    let f = &p.fadt.bytes;
    assert_eq!(u32_at(f, 36), 0, "FIRMWARE_CTRL");
    assert_eq!(u64_at(f, 132), 0, "X_FIRMWARE_CTRL");
    assert_eq!(u16_at(f, 46), 0, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
    assert!(
        f[56..88].iter().all(|&b| b == 0),
        "PM1/PM2/PM_TMR/GPE blocks"
    );
    assert!(f[88..96].iter().all(|&b| b == 0), "block lengths");
    assert!(
        f[116..129].iter().all(|&b| b == 0),
        "RESET_REG, RESET_VALUE"
    );
    assert!(
        f[148..276].iter().all(|&b| b == 0),
        "X_ blocks, sleep regs, vendor id"
    );
    assert_eq!(f[108], 0, "CENTURY");
}

#[test]
fn dsdt_is_an_empty_sb_scope() {
    let (_, p) = parsed(1);
    assert_eq!(p.dsdt.revision(), 2);
    assert_eq!(p.dsdt.bytes.len(), 43);
    assert_eq!(p.dsdt.body(), b"\x10\x06\\_SB_");
}

#[test]
fn every_header_carries_the_oem_ids() {
    let (_, p) = parsed(1);
    for t in [&p.xsdt, &p.fadt, &p.dsdt, &p.madt] {
        assert_eq!(t.oem_id(), b"FERRO ");
        assert_eq!(t.oem_table_id(), b"FERROVSR");
        assert_eq!(&t.bytes[28..32], b"FRVS");
    }
    let mut cfg = AcpiConfig::new(1);
    cfg.oem_id = *b"ABCDEF";
    cfg.oem_table_id = *b"12345678";
    let mut buf = vec![0; size_needed(&cfg)];
    let l = build(&cfg, 0, &mut buf).unwrap();
    let p = parse(
        &Guest {
            base: 0,
            bytes: &buf,
        },
        l.rsdp_gpa,
    )
    .unwrap();
    assert_eq!(&p.rsdp[9..15], b"ABCDEF");
    assert_eq!(p.madt.oem_table_id(), b"12345678");
}

#[test]
fn madt_has_one_enabled_lapic_per_vcpu() {
    for n in [1u32, 2, 8, 64] {
        let (_, p) = parsed(n);
        let m = &p.madt.bytes;
        assert_eq!(p.madt.revision(), 5);
        assert_eq!(u32_at(m, 36), 0xFEE0_0000, "LAPIC address");
        assert_eq!(u32_at(m, 40), 0, "no PCAT_COMPAT");
        assert_eq!(m.len(), 44 + 8 * n as usize);
        assert!(
            p.other_madt_entries.is_empty(),
            "no IOAPIC/override/NMI entries"
        );
        assert_eq!(p.cpus.len(), n as usize);
        for (i, cpu) in p.cpus.iter().enumerate() {
            let i = i as u32;
            assert_eq!(
                (cpu.entry_type, cpu.uid, cpu.apic_id, cpu.flags),
                (0, i, i, 1)
            );
        }
    }
}

#[test]
fn madt_switches_to_x2apic_entries_from_apic_id_255() {
    let (_, p) = parsed(300);
    assert_eq!(p.madt.bytes.len(), 44 + 255 * 8 + 45 * 16);
    assert_eq!(p.cpus.len(), 300);
    for (i, cpu) in p.cpus.iter().enumerate() {
        let i = i as u32;
        let ty = if i <= 254 { 0 } else { 9 };
        assert_eq!(
            (cpu.entry_type, cpu.uid, cpu.apic_id, cpu.flags),
            (ty, i, i, 1)
        );
    }
}

#[test]
fn madt_boundary_at_255_and_256_vcpus() {
    let (_, p) = parsed(255);
    assert!(p.cpus.iter().all(|c| c.entry_type == 0));
    assert_eq!(p.cpus.last().unwrap().apic_id, 254);
    let (_, p) = parsed(256);
    let last = *p.cpus.last().unwrap();
    assert_eq!((last.entry_type, last.uid, last.apic_id), (9, 255, 255));
    assert_eq!(p.cpus.iter().filter(|c| c.entry_type == 9).count(), 1);
}

#[test]
fn max_vcpus_builds_and_parses() {
    let (l, p) = parsed(crate::MAX_VCPUS);
    assert_eq!(p.cpus.len(), crate::MAX_VCPUS as usize);
    assert!(l.total_len < 0x1_0000);
}

#[test]
fn tables_at_base_zero_and_just_below_4g() {
    let (l, buf) = built_at(2, 0);
    assert_eq!(l.rsdp_gpa, 0);
    parse(
        &Guest {
            base: 0,
            bytes: &buf,
        },
        0,
    )
    .unwrap();
    let len = size_needed(&AcpiConfig::new(2)) as u64;
    let base = ((1u64 << 32) - len) & !0xF;
    let (l, buf) = built_at(2, base);
    assert!(l.madt_gpa + (l.total_len - MADT_OFFSET) as u64 <= 1 << 32);
    parse(&Guest { base, bytes: &buf }, l.rsdp_gpa).unwrap();
}
