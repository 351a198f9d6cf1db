use super::*;

/// Fake physical memory: `bytes` at `base`.
struct Mem {
    base: u64,
    bytes: Vec<u8>,
}

impl PhysMem for Mem {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = off.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(off..end)
    }
}

const BASE: u64 = 0xe0000;

/// The guest tables the hypervisor builds (RSDP rev 2 → XSDT → MADT) for `vcpus` CPUs.
fn guest_tables(vcpus: u32) -> (Mem, acpi_tables::AcpiLayout) {
    let cfg = acpi_tables::AcpiConfig::new(vcpus);
    let mut buf = vec![0u8; acpi_tables::size_needed(&cfg) + 64];
    let layout = acpi_tables::build(&cfg, BASE, &mut buf).unwrap();
    (
        Mem {
            base: BASE,
            bytes: buf,
        },
        layout,
    )
}

fn seal(table: &mut [u8], checksum_off: usize) {
    table[checksum_off] = 0;
    table[checksum_off] = 0u8.wrapping_sub(checksum(table));
}

fn header(sig: &[u8; 4], len: usize) -> Vec<u8> {
    let mut t = vec![0u8; len];
    t[..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    t[8] = 1;
    t
}

/// A MADT with these entries, checksum sealed.
fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
    let len = 44 + entries.iter().map(Vec::len).sum::<usize>();
    let mut t = header(b"APIC", len);
    t[36..40].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
    t[40] = 1;
    let mut off = 44;
    for e in entries {
        t[off..off + e.len()].copy_from_slice(e);
        off += e.len();
    }
    seal(&mut t, 9);
    t
}

fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
    let mut e = vec![0, 8, uid, id];
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

fn x2apic(id: u32, flags: u32, uid: u32) -> Vec<u8> {
    let mut e = vec![9, 16, 0, 0];
    e.extend_from_slice(&id.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&uid.to_le_bytes());
    e
}

#[test]
fn reads_the_guest_tables_through_the_xsdt() {
    let (mem, layout) = guest_tables(4);
    let (addr, rsdp) = scan_rsdp(&mem.bytes, BASE).expect("RSDP found by scanning");
    assert_eq!(addr, layout.rsdp_gpa);
    assert_eq!(rsdp.xsdt, Some(layout.xsdt_gpa));
    let m = read_madt(&mem, &rsdp).unwrap();
    let ids: Vec<u32> = m.enabled().map(|c| c.apic_id).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    assert_eq!(m.lapic_addr, 0xfee0_0000);
    assert_eq!((m.disabled, m.duplicates, m.dropped), (0, 0, 0));
}

#[test]
fn many_cpus_use_x2apic_entries_and_are_capped() {
    let (mem, _) = guest_tables(300);
    let (_, rsdp) = scan_rsdp(&mem.bytes, BASE).unwrap();
    let m = read_madt(&mem, &rsdp).unwrap();
    assert_eq!(m.cpus.len(), MAX_MADT_CPUS);
    assert_eq!(m.dropped, 300 - MAX_MADT_CPUS as u32);
    assert!(m.cpus.iter().any(|c| c.x2apic_entry));
}

#[test]
fn rsdp_checks() {
    let (mem, layout) = guest_tables(1);
    let off = (layout.rsdp_gpa - BASE) as usize;
    let good = mem.bytes[off..off + 36].to_vec();
    assert!(parse_rsdp(&good).is_ok());
    assert_eq!(
        parse_rsdp(&good[..19]),
        Err(Error::BadRsdp("shorter than 20 bytes"))
    );
    assert!(matches!(parse_rsdp(&good[..30]), Err(Error::BadRsdp(_))));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(parse_rsdp(&bad).is_err());
    let mut bad = good.clone();
    bad[9] ^= 1; // first checksum
    assert_eq!(
        parse_rsdp(&bad),
        Err(Error::BadRsdp("checksum of the first 20 bytes is wrong"))
    );
    let mut bad = good.clone();
    bad[32] ^= 1; // extended checksum
    assert_eq!(
        parse_rsdp(&bad),
        Err(Error::BadRsdp("extended checksum is wrong"))
    );
    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // absurd length
    seal(&mut bad[..20], 8); // (the length is outside the first checksum)
    assert!(matches!(parse_rsdp(&bad), Err(Error::BadRsdp(_))));
    // A corrupted RSDP is not found by the scan either.
    let mut m2 = mem.bytes.clone();
    m2[off + 9] ^= 1;
    assert_eq!(scan_rsdp(&m2, BASE), None);
}

#[test]
fn scan_honours_16_byte_boundaries() {
    let (mem, layout) = guest_tables(1);
    let off = (layout.rsdp_gpa - BASE) as usize;
    // The same bytes 8 bytes later are not on a boundary: not found.
    let mut area = vec![0u8; 8];
    area.extend_from_slice(&mem.bytes[off..off + 36]);
    assert_eq!(scan_rsdp(&area, 0x1000), None);
    // A base that is itself misaligned by 8 puts them back on one.
    assert_eq!(scan_rsdp(&area, 0x1008).map(|(a, _)| a), Some(0x1010));
    // A truncated area never reads past its end.
    assert_eq!(scan_rsdp(&mem.bytes[off..off + 19], layout.rsdp_gpa), None);
}

#[test]
fn rsdt_path_for_acpi_1() {
    // RSDP rev 0 at 0x0, RSDT at 0x40, MADT at 0x80.
    let mut mem = vec![0u8; 0x200];
    let mut rsdp = vec![0u8; 20];
    rsdp[..8].copy_from_slice(b"RSD PTR ");
    rsdp[16..20].copy_from_slice(&0x40u32.to_le_bytes());
    seal(&mut rsdp, 8);
    mem[..20].copy_from_slice(&rsdp);
    let mut rsdt = header(b"RSDT", 36 + 8);
    rsdt[36..40].copy_from_slice(&0x1234_0000u32.to_le_bytes()); // unreadable: skipped
    rsdt[40..44].copy_from_slice(&0x80u32.to_le_bytes());
    seal(&mut rsdt, 9);
    mem[0x40..0x40 + rsdt.len()].copy_from_slice(&rsdt);
    let t = madt(&[lapic(0, 0, 1), lapic(1, 2, 1)]);
    mem[0x80..0x80 + t.len()].copy_from_slice(&t);
    let mem = Mem {
        base: 0,
        bytes: mem,
    };
    let r = parse_rsdp(&mem.bytes).unwrap();
    assert_eq!((r.revision, r.xsdt), (0, None));
    let m = read_madt(&mem, &r).unwrap();
    assert_eq!(m.enabled().map(|c| c.apic_id).collect::<Vec<_>>(), [0, 2]);
    assert!(m.pcat_compat);
}

#[test]
fn flags_duplicates_and_overrides() {
    let mut over = vec![5, 12, 0, 0];
    over.extend_from_slice(&0xfed0_0000u64.to_le_bytes());
    let t = madt(&[
        lapic(0, 0, 1),
        lapic(1, 1, 0),                                  // disabled
        lapic(2, 2, 2),                                  // online capable
        lapic(3, 0, 1),                                  // duplicate of id 0
        lapic(4, 0xff, 1),                               // broadcast id: not a CPU
        vec![1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0], // an I/O APIC: ignored
        x2apic(300, 1, 7),
        x2apic(u32::MAX, 1, 8), // not a CPU
        over,
    ]);
    let m = parse_madt(&t).unwrap();
    assert_eq!(m.lapic_addr, 0xfed0_0000);
    assert_eq!(
        m.cpus.as_slice(),
        &[
            MadtCpu {
                apic_id: 0,
                uid: 0,
                state: CpuState::Enabled,
                x2apic_entry: false
            },
            MadtCpu {
                apic_id: 2,
                uid: 2,
                state: CpuState::OnlineCapable,
                x2apic_entry: false
            },
            MadtCpu {
                apic_id: 300,
                uid: 7,
                state: CpuState::Enabled,
                x2apic_entry: true
            },
        ]
    );
    assert_eq!((m.disabled, m.duplicates), (1, 1));
    assert_eq!(m.enabled().count(), 2);
}

#[test]
fn malformed_madts_are_errors() {
    let good = madt(&[lapic(0, 0, 1), x2apic(1, 1, 1)]);
    assert!(parse_madt(&good).is_ok());
    // Bad checksum.
    let mut t = good.clone();
    t[50] ^= 0x10;
    assert_eq!(parse_madt(&t), Err(Error::BadChecksum { sig: *b"APIC" }));
    // Length field not the table's length, absurd, or below the header.
    for len in [good.len() as u32 + 1, u32::MAX, 10, 0] {
        let mut t = good.clone();
        t[4..8].copy_from_slice(&len.to_le_bytes());
        seal(&mut t, 9);
        assert!(
            matches!(parse_madt(&t), Err(Error::BadLength { .. })),
            "len {len}"
        );
    }
    // Entry of length 0 (would loop forever), 1, shorter than its type, past the end.
    for (typ, elen) in [(0u8, 0u8), (0, 1), (0, 4), (9, 8), (5, 4), (0, 200)] {
        let mut e = lapic(0, 0, 1);
        e[0] = typ;
        e[1] = elen;
        let t = madt(&[e]);
        assert!(
            matches!(parse_madt(&t), Err(Error::BadEntry { offset: 44, .. })),
            "{typ} {elen}"
        );
    }
    // Wrong signature; too short for a header.
    let mut t = good.clone();
    t[0] = b'X';
    assert!(matches!(parse_madt(&t), Err(Error::BadSignature { .. })));
    assert!(parse_madt(b"AP").is_err());
    assert!(parse_madt(b"APIC").is_err());
}

#[test]
fn every_truncation_and_corruption_is_handled() {
    let good = madt(&[lapic(0, 0, 1), x2apic(5, 1, 1), lapic(1, 1, 2)]);
    for cut in 0..good.len() {
        // Cut short with a consistent length field and checksum: only entry checks remain.
        let mut t = good[..cut].to_vec();
        if cut >= 10 {
            t[4..8].copy_from_slice(&(cut as u32).to_le_bytes());
            seal(&mut t, 9);
        }
        let _ = parse_madt(&t);
    }
    for i in 0..good.len() {
        for v in [0u8, 1, 0x7f, 0xff] {
            let mut t = good.clone();
            t[i] = v;
            seal(&mut t, 9);
            let _ = parse_madt(&t);
        }
    }
}

#[test]
fn table_reads_are_bounded_by_memory() {
    let (mut mem, layout) = guest_tables(2);
    let (_, rsdp) = scan_rsdp(&mem.bytes, BASE).unwrap();
    // Memory ending inside the MADT: unreadable, not a panic.
    let madt_end = (layout.madt_gpa - BASE) as usize + 44;
    mem.bytes.truncate(madt_end);
    assert_eq!(
        read_madt(&mem, &rsdp),
        Err(Error::Unreadable {
            addr: layout.madt_gpa
        })
    );
    // A corrupted XSDT length: bounded.
    let (mut mem, layout) = guest_tables(2);
    let x = (layout.xsdt_gpa - BASE) as usize;
    mem.bytes[x + 4..x + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(read_madt(&mem, &rsdp), Err(Error::BadLength { sig, .. }) if &sig == b"XSDT"));
    // An XSDT without a MADT.
    let (mut mem, layout) = guest_tables(2);
    let x = (layout.xsdt_gpa - BASE) as usize;
    let n = u32::from_le_bytes(mem.bytes[x + 4..x + 8].try_into().unwrap()) as usize;
    for k in (x + 36..x + n).step_by(8) {
        mem.bytes[k..k + 8].copy_from_slice(&0u64.to_le_bytes());
    }
    seal(&mut mem.bytes[x..x + n], 9);
    assert_eq!(read_madt(&mem, &rsdp), Err(Error::NoMadt));
    // A MADT whose checksum is wrong is reported as such.
    let (mut mem, layout) = guest_tables(2);
    mem.bytes[(layout.madt_gpa - BASE) as usize + 44] ^= 1;
    assert_eq!(
        read_madt(&mem, &rsdp),
        Err(Error::BadChecksum { sig: *b"APIC" })
    );
}

#[test]
fn errors_display() {
    let s = format!("{}", Error::BadChecksum { sig: *b"APIC" });
    assert!(s.contains("APIC") && s.contains("checksum"), "{s}");
    let s = format!(
        "{}",
        Error::BadEntry {
            offset: 44,
            typ: 0,
            len: 0
        }
    );
    assert!(s.contains("44"), "{s}");
}

fn ioapic(id: u8, addr: u32, gsi_base: u32) -> Vec<u8> {
    let mut e = vec![1, 12, id, 0];
    e.extend_from_slice(&addr.to_le_bytes());
    e.extend_from_slice(&gsi_base.to_le_bytes());
    e
}

fn iso(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut e = vec![2, 10, 0, source];
    e.extend_from_slice(&gsi.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

#[test]
fn ioapics_and_overrides_are_kept_in_order() {
    // QEMU's i440FX MADT: one IOAPIC at 0xfec00000 with GSI base 0, IRQ 0 → GSI 2, and
    // the PCI-style level/active-high overrides for IRQs 5, 9, 10, 11.
    let t = madt(&[
        lapic(0, 0, 1),
        ioapic(0, 0xfec0_0000, 0),
        iso(0, 2, 0),
        iso(5, 5, 0xd),
        iso(9, 9, 0xd),
        iso(9, 20, 0xf),
        ioapic(1, 0xfec0_1000, 24),
    ]);
    let m = parse_madt(&t).unwrap();
    assert_eq!(
        m.ioapics.as_slice(),
        [
            MadtIoApic {
                id: 0,
                addr: 0xfec0_0000,
                gsi_base: 0
            },
            MadtIoApic {
                id: 1,
                addr: 0xfec0_1000,
                gsi_base: 24
            }
        ]
    );
    let o: Vec<(u8, u32, u16)> = m
        .overrides
        .iter()
        .map(|o| (o.source, o.gsi, o.flags))
        .collect();
    assert_eq!(
        o,
        [(0, 2, 0), (5, 5, 0xd), (9, 9, 0xd)],
        "a repeated IRQ keeps the first"
    );
    assert_eq!(m.dropped_io, 1);
    assert_eq!(m.cpus.len(), 1);
}

#[test]
fn too_many_ioapics_are_counted_and_short_entries_refused() {
    let many: Vec<Vec<u8>> = (0..MAX_MADT_IOAPICS as u8 + 2)
        .map(|i| ioapic(i, 0xfec0_0000 + u32::from(i) * 0x1000, u32::from(i) * 24))
        .collect();
    let m = parse_madt(&madt(&many)).unwrap();
    assert_eq!(m.ioapics.len(), MAX_MADT_IOAPICS);
    assert_eq!(m.dropped_io, 2);
    for (typ, elen) in [(1u8, 11u8), (2, 9)] {
        let mut e = ioapic(0, 0, 0);
        e[0] = typ;
        e[1] = elen;
        assert!(
            matches!(
                parse_madt(&madt(&[e])),
                Err(Error::BadEntry { offset: 44, .. })
            ),
            "{typ} {elen}"
        );
    }
}

#[test]
fn dom0_tables_list_the_ioapics_and_overrides_given() {
    let mut cfg = acpi_tables::AcpiConfig::new(2);
    cfg.ioapics[0] = Some(acpi_tables::IoApicEntry {
        id: 0,
        addr: 0xfec0_0000,
        gsi_base: 0,
    });
    cfg.overrides[0] = Some(acpi_tables::OverrideEntry {
        source: 0,
        gsi: 2,
        flags: 0,
    });
    cfg.overrides[3] = Some(acpi_tables::OverrideEntry {
        source: 9,
        gsi: 9,
        flags: 0xd,
    });
    let mut buf = vec![0u8; acpi_tables::size_needed(&cfg)];
    acpi_tables::build(&cfg, BASE, &mut buf).unwrap();
    let mem = Mem {
        base: BASE,
        bytes: buf,
    };
    let (_, rsdp) = scan_rsdp(&mem.bytes, BASE).unwrap();
    let m = read_madt(&mem, &rsdp).unwrap();
    assert_eq!(m.enabled().count(), 2);
    assert_eq!(
        m.ioapics.as_slice(),
        [MadtIoApic {
            id: 0,
            addr: 0xfec0_0000,
            gsi_base: 0
        }]
    );
    let o: Vec<(u8, u8, u32, u16)> = m
        .overrides
        .iter()
        .map(|o| (o.bus, o.source, o.gsi, o.flags))
        .collect();
    assert_eq!(o, [(0, 0, 2, 0), (0, 9, 9, 0xd)]);
    // Without them (a domU), none.
    let (mem, _) = guest_tables(2);
    let (_, rsdp) = scan_rsdp(&mem.bytes, BASE).unwrap();
    let m = read_madt(&mem, &rsdp).unwrap();
    assert!(m.ioapics.is_empty() && m.overrides.is_empty());
}
