//! ACPI tables (`hypervisor/crates/acpi-tables`). The crate builds tables rather than parsing
//! them, so the target builds them from a fuzzed configuration, base address and buffer size,
//! then walks the result as a guest's ACPI code would (RSDP → XSDT → FADT → DSDT, MADT),
//! with offsets written out here from the specification.
//!
//! Checks: a refused build leaves the buffer untouched; a successful one writes exactly
//! `size_needed` bytes, ends at or below 4 GiB, every signature, length and checksum is right,
//! the pointers lead to the tables the layout reports, every header carries the configured
//! IDs, and the MADT lists each vCPU once, enabled, with its APIC ID.

use std::cell::RefCell;

use acpi_tables::{build, size_needed, vcpu_apic_id, AcpiConfig, MAX_VCPUS};

use crate::input::Input;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// The table at `gpa` in `mem` (guest memory from `base`): checks its signature, length and
/// checksum and the configured header IDs, and returns its bytes.
fn table<'a>(mem: &'a [u8], base: u64, gpa: u64, sig: &[u8; 4], cfg: &AcpiConfig) -> &'a [u8] {
    let off = usize::try_from(gpa.checked_sub(base).expect("table below base")).unwrap();
    let hdr = &mem[off..off + 36];
    assert_eq!(&hdr[0..4], sig);
    let len = u32_at(hdr, 4) as usize;
    assert!(len >= 36);
    let t = &mem[off..off + len];
    assert_eq!(sum(t), 0, "checksum of {}", String::from_utf8_lossy(sig));
    assert_eq!(&t[10..16], &cfg.oem_id);
    assert_eq!(&t[16..24], &cfg.oem_table_id);
    assert_eq!(u32_at(t, 24), cfg.oem_revision);
    assert_eq!(&t[28..32], &cfg.creator_id);
    assert_eq!(u32_at(t, 32), cfg.creator_revision);
    t
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 80 << 10]);
}

/// The ACPI target.
pub fn target_acpi(data: &[u8]) {
    let mut inp = Input::new(data);
    // Mostly small counts (the MADT of thousands of vCPUs is slow to build and walk).
    let vcpus = match inp.u8() {
        0..=239 => inp.u8().into(),
        240..=250 => u32::from(inp.u16()) % (MAX_VCPUS + 8),
        _ => inp.u32(),
    };
    let mut cfg = AcpiConfig::new(vcpus);
    if inp.bool() {
        cfg.oem_id.copy_from_slice(&inp.u64().to_le_bytes()[..6]);
        cfg.oem_table_id = inp.u64().to_le_bytes();
        cfg.oem_revision = inp.u32();
        cfg.creator_id = inp.u32().to_le_bytes();
        cfg.creator_revision = inp.u32();
    }
    let base = match inp.u8() % 4 {
        0 => u64::from(inp.u32()) & !0xf,
        1 => (1u64 << 32) - (u64::from(inp.u16()) << 4),
        2 => u64::from(inp.u32()),
        _ => inp.u64(),
    };
    let needed = size_needed(&cfg);
    BUF.with(|b| {
        let b = &mut *b.borrow_mut();
        let len = match inp.u8() % 3 {
            0 => needed,
            1 => needed.saturating_sub(usize::from(inp.u8())),
            _ => needed.saturating_add(usize::from(inp.u8())),
        }
        .min(b.len());
        let fill = inp.u8();
        let out = &mut b[..len];
        out.fill(fill);
        let layout = match build(&cfg, base, out) {
            Ok(l) => l,
            Err(e) => {
                let _ = e.to_string();
                assert!(out.iter().all(|&x| x == fill), "a refused build wrote");
                return;
            }
        };
        assert!((1..=MAX_VCPUS).contains(&vcpus) && base % 16 == 0);
        assert_eq!(layout.total_len, needed);
        assert!(needed <= len);
        assert!(base + needed as u64 <= 1 << 32);
        assert!(
            out[needed..].iter().all(|&x| x == fill),
            "wrote past total_len"
        );
        let mem = &out[..needed];

        // RSDP.
        assert_eq!(layout.rsdp_gpa, base);
        let rsdp = &mem[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(&rsdp[9..15], &cfg.oem_id);
        assert_eq!(rsdp[15], 2);
        assert_eq!(u32_at(rsdp, 20), 36);
        assert_eq!(sum(rsdp), 0);
        assert_eq!(u64_at(rsdp, 24), layout.xsdt_gpa);

        // XSDT: exactly FADT and MADT.
        let xsdt = table(mem, base, layout.xsdt_gpa, b"XSDT", &cfg);
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!((xsdt.len() - 36) % 8, 0);
        let mut sigs = Vec::new();
        for &e in &entries {
            let off = (e - base) as usize;
            sigs.push(&mem[off..off + 4]);
        }
        sigs.sort();
        assert_eq!(sigs, [&b"APIC"[..], &b"FACP"[..]]);
        assert!(entries.contains(&layout.fadt_gpa) && entries.contains(&layout.madt_gpa));

        // FADT → DSDT (32- and 64-bit pointers agree).
        let fadt = table(mem, base, layout.fadt_gpa, b"FACP", &cfg);
        assert_eq!(u64::from(u32_at(fadt, 40)), layout.dsdt_gpa);
        assert_eq!(u64_at(fadt, 140), layout.dsdt_gpa);
        table(mem, base, layout.dsdt_gpa, b"DSDT", &cfg);

        // MADT: one enabled entry per vCPU with its APIC ID.
        let madt = table(mem, base, layout.madt_gpa, b"APIC", &cfg);
        assert_eq!(
            layout.madt_gpa as usize - base as usize + madt.len(),
            needed
        );
        let mut seen = vec![false; vcpus as usize];
        let mut off = 44;
        while off < madt.len() {
            let (ty, elen) = (madt[off], usize::from(madt[off + 1]));
            let e = &madt[off..off + elen];
            let (uid, apic, flags) = match (ty, elen) {
                (0, 8) => (u32::from(e[2]), u32::from(e[3]), u32_at(e, 4)),
                (9, 16) => (u32_at(e, 12), u32_at(e, 4), u32_at(e, 8)),
                other => panic!("unexpected MADT entry {other:?}"),
            };
            assert!(
                uid < vcpus && !seen[uid as usize],
                "UID {uid} twice or out of range"
            );
            seen[uid as usize] = true;
            assert_eq!(apic, vcpu_apic_id(uid));
            assert_eq!(flags & 1, 1);
            off += elen;
        }
        assert_eq!(off, madt.len());
        assert!(seen.iter().all(|&s| s));
    });
}
