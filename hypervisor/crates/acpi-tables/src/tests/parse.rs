//! A reader that walks the tables the way Linux 6.1 (ACPICA `tbxfroot.c`, `tbutils.c`,
//! `tbfadt.c`, `arch/x86/kernel/acpi/boot.c`) does: RSDP → XSDT → each listed table, FADT →
//! DSDT, then the MADT's entries, checking every signature, length and checksum on the way.
//!
//! It is stricter than ACPICA where ACPICA only warns (exact XSDT length, DSDT/X_DSDT
//! agreement, FADT length for its revision). Its byte offsets are written out here from the
//! spec, independently of the builder's constants.

use std::vec::Vec;

use crate::checksum;

/// Which checksum failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sum {
    /// RSDP bytes 0..20.
    RsdpV1,
    /// RSDP bytes 0..36.
    RsdpExt,
    /// A table, by signature.
    Table([u8; 4]),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseError {
    OutOfBounds {
        gpa: u64,
        len: usize,
    },
    RsdpSignature,
    RsdpRevision(u8),
    RsdpLength(u32),
    NoXsdt,
    Checksum(Sum),
    Signature {
        gpa: u64,
        expected: [u8; 4],
        found: [u8; 4],
    },
    TableLength {
        sig: [u8; 4],
        len: u32,
    },
    XsdtEntry {
        index: usize,
    },
    MissingTable([u8; 4]),
    DuplicateTable([u8; 4]),
    DsdtMismatch {
        dsdt32: u32,
        x_dsdt: u64,
    },
    MadtEntry {
        offset: usize,
    },
}

/// Guest memory: `bytes` at `base`.
pub struct Guest<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl Guest<'_> {
    fn read(&self, gpa: u64, len: usize) -> Result<&[u8], ParseError> {
        let oob = ParseError::OutOfBounds { gpa, len };
        let start = usize::try_from(gpa.checked_sub(self.base).ok_or(oob)?).map_err(|_| oob)?;
        self.bytes
            .get(start..start.checked_add(len).ok_or(oob)?)
            .ok_or(oob)
    }
}

pub fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A table with a valid header, length and checksum.
#[derive(Clone, Debug)]
pub struct Sdt {
    pub gpa: u64,
    pub bytes: Vec<u8>,
}

impl Sdt {
    pub fn signature(&self) -> [u8; 4] {
        self.bytes[0..4].try_into().unwrap()
    }
    pub fn revision(&self) -> u8 {
        self.bytes[8]
    }
    pub fn oem_id(&self) -> &[u8] {
        &self.bytes[10..16]
    }
    pub fn oem_table_id(&self) -> &[u8] {
        &self.bytes[16..24]
    }
    pub fn body(&self) -> &[u8] {
        &self.bytes[36..]
    }
}

/// One MADT processor entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cpu {
    pub entry_type: u8,
    pub uid: u32,
    pub apic_id: u32,
    pub flags: u32,
}

#[derive(Clone, Debug)]
pub struct Parsed {
    pub rsdp: Vec<u8>,
    pub xsdt: Sdt,
    pub xsdt_entries: Vec<u64>,
    pub fadt: Sdt,
    pub dsdt: Sdt,
    pub madt: Sdt,
    pub cpus: Vec<Cpu>,
    /// Types of MADT entries other than 0 and 9.
    pub other_madt_entries: Vec<u8>,
}

/// Reads the table at `gpa` like `acpi_tb_verify_temp_table`: header, length, checksum.
fn table(mem: &Guest, gpa: u64, expected: Option<[u8; 4]>) -> Result<Sdt, ParseError> {
    let hdr = mem.read(gpa, 36)?;
    let found: [u8; 4] = hdr[0..4].try_into().unwrap();
    if let Some(expected) = expected {
        if found != expected {
            return Err(ParseError::Signature {
                gpa,
                expected,
                found,
            });
        }
    }
    let len = u32_at(hdr, 4);
    if len < 36 {
        return Err(ParseError::TableLength { sig: found, len });
    }
    let bytes = mem.read(gpa, len as usize)?.to_vec();
    if checksum(&bytes) != 0 {
        return Err(ParseError::Checksum(Sum::Table(found)));
    }
    Ok(Sdt { gpa, bytes })
}

fn rsdp(mem: &Guest, gpa: u64) -> Result<Vec<u8>, ParseError> {
    let v1 = mem.read(gpa, 20)?;
    if &v1[0..8] != b"RSD PTR " {
        return Err(ParseError::RsdpSignature);
    }
    if checksum(v1) != 0 {
        return Err(ParseError::Checksum(Sum::RsdpV1));
    }
    if v1[15] < 2 {
        return Err(ParseError::RsdpRevision(v1[15]));
    }
    let full = mem.read(gpa, 36)?;
    let len = u32_at(full, 20);
    if len != 36 {
        return Err(ParseError::RsdpLength(len));
    }
    if checksum(full) != 0 {
        return Err(ParseError::Checksum(Sum::RsdpExt));
    }
    Ok(full.to_vec())
}

/// Finds the single XSDT entry with signature `sig`.
fn find(tables: &[Sdt], sig: [u8; 4]) -> Result<Sdt, ParseError> {
    let mut hits = tables.iter().filter(|t| t.signature() == sig);
    let first = hits.next().ok_or(ParseError::MissingTable(sig))?;
    if hits.next().is_some() {
        return Err(ParseError::DuplicateTable(sig));
    }
    Ok(first.clone())
}

/// Walks MADT entries like `acpi_parse_entries_array`.
fn madt_entries(madt: &Sdt) -> Result<(Vec<Cpu>, Vec<u8>), ParseError> {
    let b = &madt.bytes;
    if b.len() < 44 {
        return Err(ParseError::TableLength {
            sig: *b"APIC",
            len: b.len() as u32,
        });
    }
    let (mut cpus, mut other) = (Vec::new(), Vec::new());
    let mut off = 44;
    while off < b.len() {
        let bad = ParseError::MadtEntry { offset: off };
        if off + 2 > b.len() {
            return Err(bad);
        }
        let (ty, len) = (b[off], b[off + 1] as usize);
        if len < 2 || off + len > b.len() {
            return Err(bad);
        }
        let e = &b[off..off + len];
        match ty {
            0 if len >= 8 => cpus.push(Cpu {
                entry_type: 0,
                uid: u32::from(e[2]),
                apic_id: u32::from(e[3]),
                flags: u32_at(e, 4),
            }),
            9 if len >= 16 => cpus.push(Cpu {
                entry_type: 9,
                uid: u32_at(e, 12),
                apic_id: u32_at(e, 4),
                flags: u32_at(e, 8),
            }),
            0 | 9 => return Err(bad),
            _ => other.push(ty),
        }
        off += len;
    }
    Ok((cpus, other))
}

/// RSDP at `rsdp_gpa` → XSDT → FADT (→ DSDT) and MADT.
pub fn parse(mem: &Guest, rsdp_gpa: u64) -> Result<Parsed, ParseError> {
    let rsdp = rsdp(mem, rsdp_gpa)?;
    let xsdt_gpa = u64_at(&rsdp, 24);
    if xsdt_gpa == 0 {
        return Err(ParseError::NoXsdt);
    }
    let xsdt = table(mem, xsdt_gpa, Some(*b"XSDT"))?;
    let body = xsdt.body();
    if body.len() % 8 != 0 {
        return Err(ParseError::TableLength {
            sig: *b"XSDT",
            len: xsdt.bytes.len() as u32,
        });
    }
    let xsdt_entries: Vec<u64> = body.chunks_exact(8).map(|c| u64_at(c, 0)).collect();
    let mut tables = Vec::new();
    for (index, &gpa) in xsdt_entries.iter().enumerate() {
        if gpa == 0 {
            return Err(ParseError::XsdtEntry { index });
        }
        tables.push(table(mem, gpa, None)?);
    }

    let fadt = find(&tables, *b"FACP")?;
    // Revision 6 FADTs are 276 bytes; anything shorter would hide X_DSDT or the flags.
    if fadt.revision() >= 6 && fadt.bytes.len() != 276 || fadt.bytes.len() < 148 {
        return Err(ParseError::TableLength {
            sig: *b"FACP",
            len: fadt.bytes.len() as u32,
        });
    }
    let dsdt32 = u32_at(&fadt.bytes, 40);
    let x_dsdt = u64_at(&fadt.bytes, 140);
    if x_dsdt == 0 || (dsdt32 != 0 && u64::from(dsdt32) != x_dsdt) {
        return Err(ParseError::DsdtMismatch { dsdt32, x_dsdt });
    }
    let dsdt = table(mem, x_dsdt, Some(*b"DSDT"))?;

    let madt = find(&tables, *b"APIC")?;
    let (cpus, other_madt_entries) = madt_entries(&madt)?;
    Ok(Parsed {
        rsdp,
        xsdt,
        xsdt_entries,
        fadt,
        dsdt,
        madt,
        cpus,
        other_madt_entries,
    })
}
