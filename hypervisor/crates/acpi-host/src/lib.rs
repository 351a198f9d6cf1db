//! Reads the firmware's ACPI tables to enumerate the host's CPUs: the RSDP (from the boot
//! loader's copy or a BIOS-area scan), the RSDT or XSDT it points at, and the MADT's local
//! APIC and local x2APIC entries.
//!
//! Firmware bytes are not trusted: every length is bounded (a table is at least its header
//! and at most [`MAX_TABLE_LEN`]), every checksum is verified, every entry must lie inside
//! its table and be at least as long as its type needs, and all arithmetic on addresses and
//! lengths is checked. A malformed table is an [`Error`] naming what was wrong, never a panic.
//!
//! Memory is reached through [`PhysMem`], so the same code reads the direct map in the
//! hypervisor and byte buffers in tests.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use arrayvec::ArrayVec;
use core::fmt;

/// Largest table accepted. Real MADTs are a few KiB even on machines with hundreds of CPUs.
pub const MAX_TABLE_LEN: u32 = 1 << 20;
/// Most CPUs kept from the MADT; further entries are counted in [`Madt::dropped`].
pub const MAX_MADT_CPUS: usize = 256;
/// I/O APIC entries kept from the MADT (more are counted in [`Madt::dropped_io`]).
pub const MAX_MADT_IOAPICS: usize = 8;
/// Interrupt source override entries kept from the MADT (one per ISA IRQ at most).
pub const MAX_MADT_OVERRIDES: usize = 16;
/// Length of the common header of every system description table.
pub const SDT_HEADER_LEN: usize = 36;
/// Length of the ACPI 1.0 RSDP (the part its first checksum covers).
pub const RSDP_V1_LEN: usize = 20;
/// Length of the ACPI 2.0+ RSDP.
pub const RSDP_V2_LEN: usize = 36;
const MADT_HEADER_LEN: usize = 44;

/// Read-only access to physical memory.
pub trait PhysMem {
    /// The `len` bytes at physical `addr`, or None if any of them cannot be read.
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]>;
}

/// What went wrong while reading the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No RSDP: the boot loader gave none and the BIOS areas hold none.
    NoRsdp,
    /// The RSDP's signature or a checksum is wrong, or it is too short.
    BadRsdp(&'static str),
    /// Memory at this address could not be read.
    Unreadable {
        /// Physical address.
        addr: u64,
    },
    /// A table's signature is not what pointed there promised.
    BadSignature {
        /// What was expected.
        expected: [u8; 4],
        /// What was found.
        found: [u8; 4],
    },
    /// A table's length is below its header or above [`MAX_TABLE_LEN`].
    BadLength {
        /// The table's signature.
        sig: [u8; 4],
        /// Its length field.
        len: u32,
    },
    /// A table's bytes do not sum to 0.
    BadChecksum {
        /// The table's signature.
        sig: [u8; 4],
    },
    /// The root table lists no MADT.
    NoMadt,
    /// A MADT entry is shorter than its type needs or runs past the table.
    BadEntry {
        /// Offset of the entry in the MADT.
        offset: usize,
        /// Its type.
        typ: u8,
        /// Its length field.
        len: u8,
    },
}

fn sig_str(sig: &[u8; 4]) -> &str {
    core::str::from_utf8(sig).unwrap_or("????")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoRsdp => {
                f.write_str("no ACPI RSDP (none from the boot loader, none in the BIOS areas)")
            }
            Error::BadRsdp(why) => write!(f, "bad RSDP: {why}"),
            Error::Unreadable { addr } => write!(f, "ACPI memory at {addr:#x} is not readable"),
            Error::BadSignature { expected, found } => write!(
                f,
                "expected an ACPI {} table, found signature {:02x?}",
                sig_str(expected),
                found
            ),
            Error::BadLength { sig, len } => {
                write!(
                    f,
                    "ACPI {} table has an impossible length {len}",
                    sig_str(sig)
                )
            }
            Error::BadChecksum { sig } => {
                write!(f, "ACPI {} table checksum is wrong", sig_str(sig))
            }
            Error::NoMadt => f.write_str("the ACPI root table lists no MADT"),
            Error::BadEntry { offset, typ, len } => write!(
                f,
                "MADT entry at offset {offset} (type {typ}, length {len}) is malformed"
            ),
        }
    }
}

/// Sum of `bytes` modulo 256 (0 for a valid table).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Where the root table is, from a valid RSDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// The RSDP's revision (0: ACPI 1.0, 2: ACPI 2.0+).
    pub revision: u8,
    /// Physical address of the RSDT.
    pub rsdt: u32,
    /// Physical address of the XSDT (revision 2+, non-zero).
    pub xsdt: Option<u64>,
}

/// Checks an RSDP (signature, the 20-byte checksum, and for revision 2+ its length and the
/// extended checksum) and returns where the root tables are.
pub fn parse_rsdp(b: &[u8]) -> Result<Rsdp, Error> {
    let v1 = b
        .get(..RSDP_V1_LEN)
        .ok_or(Error::BadRsdp("shorter than 20 bytes"))?;
    if &v1[..8] != b"RSD PTR " {
        return Err(Error::BadRsdp("no \"RSD PTR \" signature"));
    }
    if checksum(v1) != 0 {
        return Err(Error::BadRsdp("checksum of the first 20 bytes is wrong"));
    }
    let revision = v1[15];
    let rsdt = u32_at(v1, 16).ok_or(Error::BadRsdp("truncated"))?;
    if revision < 2 {
        return Ok(Rsdp {
            revision,
            rsdt,
            xsdt: None,
        });
    }
    let len = u32_at(b, 20).ok_or(Error::BadRsdp("revision 2 but shorter than 36 bytes"))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if !(RSDP_V2_LEN..=1024).contains(&len) {
        return Err(Error::BadRsdp("revision 2 with an impossible length"));
    }
    let all = b
        .get(..len)
        .ok_or(Error::BadRsdp("shorter than its length field"))?;
    if checksum(all) != 0 {
        return Err(Error::BadRsdp("extended checksum is wrong"));
    }
    let xsdt = u64_at(all, 24).filter(|&a| a != 0);
    Ok(Rsdp {
        revision,
        rsdt,
        xsdt,
    })
}

/// Scans `area` (the bytes of physical memory from `base`) at 16-byte boundaries for a
/// valid RSDP, as the ACPI specification tells BIOS systems to look for it. Returns the
/// RSDP's physical address and its bytes.
pub fn scan_rsdp(area: &[u8], base: u64) -> Option<(u64, Rsdp)> {
    let skip = (base.wrapping_neg() % 16) as usize;
    let mut off = skip;
    while off
        .checked_add(RSDP_V1_LEN)
        .is_some_and(|e| e <= area.len())
    {
        if let Ok(r) = parse_rsdp(&area[off..]) {
            return Some((base.checked_add(off as u64)?, r));
        }
        off += 16;
    }
    None
}

/// Reads the whole table at `addr` whose signature must be `sig`: header, bounded length,
/// checksum.
pub fn read_table<'m>(mem: &'m impl PhysMem, addr: u64, sig: &[u8; 4]) -> Result<&'m [u8], Error> {
    let hdr = mem
        .bytes(addr, SDT_HEADER_LEN as u64)
        .ok_or(Error::Unreadable { addr })?;
    let mut found = [0u8; 4];
    found.copy_from_slice(&hdr[..4]);
    if &found != sig {
        return Err(Error::BadSignature {
            expected: *sig,
            found,
        });
    }
    let len = u32_at(hdr, 4).ok_or(Error::Unreadable { addr })?;
    if (len as usize) < SDT_HEADER_LEN || len > MAX_TABLE_LEN {
        return Err(Error::BadLength { sig: *sig, len });
    }
    let all = mem
        .bytes(addr, u64::from(len))
        .ok_or(Error::Unreadable { addr })?;
    if checksum(all) != 0 {
        return Err(Error::BadChecksum { sig: *sig });
    }
    Ok(all)
}

/// Finds the table with signature `sig` through the RSDP's XSDT (preferred) or RSDT.
/// Entries whose header cannot be read or whose signature differs are passed over; the
/// first entry with the signature is read and checked (an error if it is malformed).
pub fn find_table<'m>(
    mem: &'m impl PhysMem,
    rsdp: &Rsdp,
    sig: &[u8; 4],
) -> Result<&'m [u8], Error> {
    let (root, width) = match rsdp.xsdt {
        Some(x) => (read_table(mem, x, b"XSDT")?, 8),
        None => (read_table(mem, u64::from(rsdp.rsdt), b"RSDT")?, 4),
    };
    let entries = &root[SDT_HEADER_LEN..];
    for e in entries.chunks_exact(width) {
        let addr = if width == 8 {
            u64_at(e, 0)
        } else {
            u32_at(e, 0).map(u64::from)
        };
        let Some(addr) = addr.filter(|&a| a != 0) else {
            continue;
        };
        let Some(head) = mem.bytes(addr, 4) else {
            continue;
        };
        if head == sig {
            return read_table(mem, addr, sig);
        }
    }
    Err(Error::NoMadt)
}

/// How the MADT describes one processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuState {
    /// Present and usable now (flags bit 0).
    Enabled,
    /// Not enabled but may be brought online later (ACPI 6.3 "online capable", bit 1).
    OnlineCapable,
}

/// One processor of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    /// Its local APIC id (x2APIC id for a type-9 entry).
    pub apic_id: u32,
    /// Its ACPI processor UID.
    pub uid: u32,
    /// Enabled or online capable (disabled entries are not kept).
    pub state: CpuState,
    /// Described by a Local x2APIC entry (type 9) rather than a Local APIC entry (type 0).
    pub x2apic_entry: bool,
}

/// One I/O APIC of the MADT (entry type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtIoApic {
    /// Its I/O APIC id.
    pub id: u8,
    /// Physical address of its registers (IOREGSEL; IOWIN at +0x10).
    pub addr: u32,
    /// The first GSI its pins carry.
    pub gsi_base: u32,
}

/// One interrupt source override of the MADT (entry type 2): ISA IRQ `source` arrives at
/// `gsi` with the polarity and trigger mode in `flags` (MPS INTI flags: bits 0-1 polarity,
/// 2-3 trigger; 0 means "as the bus says": ISA is active high, edge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtOverride {
    /// Bus (0: ISA).
    pub bus: u8,
    /// The bus-relative IRQ (ISA IRQ 0..15).
    pub source: u8,
    /// The GSI it is wired to.
    pub gsi: u32,
    /// MPS INTI flags.
    pub flags: u16,
}

/// What the MADT says about the processors and the interrupt controllers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madt {
    /// Physical address of the local APIC registers (after any address override entry).
    pub lapic_addr: u64,
    /// The MADT's PCAT_COMPAT flag: the machine also has 8259 PICs.
    pub pcat_compat: bool,
    /// Enabled and online-capable processors, in table order, without duplicates.
    pub cpus: ArrayVec<MadtCpu, MAX_MADT_CPUS>,
    /// Entries neither enabled nor online capable.
    pub disabled: u32,
    /// Entries repeating an APIC id already listed (ignored).
    pub duplicates: u32,
    /// Usable entries that did not fit in `cpus`.
    pub dropped: u32,
    /// I/O APICs in table order (ids and GSI bases not checked against each other here).
    pub ioapics: ArrayVec<MadtIoApic, MAX_MADT_IOAPICS>,
    /// Interrupt source overrides in table order (a repeated ISA IRQ keeps the first).
    pub overrides: ArrayVec<MadtOverride, MAX_MADT_OVERRIDES>,
    /// I/O APIC and override entries that did not fit or repeated a source.
    pub dropped_io: u32,
}

impl Madt {
    /// The enabled processors.
    pub fn enabled(&self) -> impl Iterator<Item = &MadtCpu> {
        self.cpus.iter().filter(|c| c.state == CpuState::Enabled)
    }
}

const FLAG_ENABLED: u32 = 1 << 0;
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

/// Parses a whole MADT (`b` is exactly the table: its length field must match, and the
/// checksum must hold).
pub fn parse_madt(b: &[u8]) -> Result<Madt, Error> {
    let sig = *b"APIC";
    if b.get(..4) != Some(&sig[..]) {
        let mut found = [0u8; 4];
        for (d, s) in found.iter_mut().zip(b) {
            *d = *s;
        }
        return Err(Error::BadSignature {
            expected: sig,
            found,
        });
    }
    let len = u32_at(b, 4).ok_or(Error::BadLength {
        sig,
        len: b.len() as u32,
    })?;
    if (len as usize) < MADT_HEADER_LEN || len > MAX_TABLE_LEN || len as usize != b.len() {
        return Err(Error::BadLength { sig, len });
    }
    if checksum(b) != 0 {
        return Err(Error::BadChecksum { sig });
    }
    let mut madt = Madt {
        lapic_addr: u64::from(u32_at(b, 36).unwrap_or(0)),
        pcat_compat: u32_at(b, 40).unwrap_or(0) & 1 != 0,
        cpus: ArrayVec::new(),
        disabled: 0,
        duplicates: 0,
        dropped: 0,
        ioapics: ArrayVec::new(),
        overrides: ArrayVec::new(),
        dropped_io: 0,
    };
    let mut off = MADT_HEADER_LEN;
    while off < b.len() {
        let typ = b[off];
        let elen = b.get(off + 1).copied().unwrap_or(0);
        let bad = Error::BadEntry {
            offset: off,
            typ,
            len: elen,
        };
        let end = off.checked_add(usize::from(elen)).filter(|&e| e <= b.len());
        let Some(end) = end.filter(|_| elen >= 2) else {
            return Err(bad);
        };
        let e = &b[off..end];
        let cpu = match typ {
            0 => {
                if e.len() < 8 {
                    return Err(bad);
                }
                let flags = u32_at(e, 4).ok_or(bad)?;
                // APIC id 0xff is not a processor (the broadcast id).
                (e[3] != 0xff).then_some((u32::from(e[3]), u32::from(e[2]), flags, false))
            }
            9 => {
                if e.len() < 16 {
                    return Err(bad);
                }
                let id = u32_at(e, 4).ok_or(bad)?;
                let flags = u32_at(e, 8).ok_or(bad)?;
                let uid = u32_at(e, 12).ok_or(bad)?;
                (id != u32::MAX).then_some((id, uid, flags, true))
            }
            5 => {
                if e.len() < 12 {
                    return Err(bad);
                }
                madt.lapic_addr = u64_at(e, 4).ok_or(bad)?;
                None
            }
            1 => {
                if e.len() < 12 {
                    return Err(bad);
                }
                let io = MadtIoApic {
                    id: e[2],
                    addr: u32_at(e, 4).ok_or(bad)?,
                    gsi_base: u32_at(e, 8).ok_or(bad)?,
                };
                if madt.ioapics.try_push(io).is_err() {
                    madt.dropped_io += 1;
                }
                None
            }
            2 => {
                if e.len() < 10 {
                    return Err(bad);
                }
                let o = MadtOverride {
                    bus: e[2],
                    source: e[3],
                    gsi: u32_at(e, 4).ok_or(bad)?,
                    flags: u16::from_le_bytes([e[8], e[9]]),
                };
                let repeated = madt
                    .overrides
                    .iter()
                    .any(|k| k.bus == o.bus && k.source == o.source);
                if repeated || madt.overrides.try_push(o).is_err() {
                    madt.dropped_io += 1;
                }
                None
            }
            _ => None,
        };
        if let Some((apic_id, uid, flags, x2apic_entry)) = cpu {
            let state = if flags & FLAG_ENABLED != 0 {
                Some(CpuState::Enabled)
            } else if flags & FLAG_ONLINE_CAPABLE != 0 {
                Some(CpuState::OnlineCapable)
            } else {
                None
            };
            match state {
                None => madt.disabled += 1,
                Some(_) if madt.cpus.iter().any(|c| c.apic_id == apic_id) => madt.duplicates += 1,
                Some(state) => {
                    let c = MadtCpu {
                        apic_id,
                        uid,
                        state,
                        x2apic_entry,
                    };
                    if madt.cpus.try_push(c).is_err() {
                        madt.dropped += 1;
                    }
                }
            }
        }
        off = end;
    }
    Ok(madt)
}

/// The whole look-up: the RSDP bytes (from the boot loader or [`scan_rsdp`]), then the root
/// table, then the MADT.
pub fn read_madt(mem: &impl PhysMem, rsdp: &Rsdp) -> Result<Madt, Error> {
    parse_madt(find_table(mem, rsdp, b"APIC")?)
}

#[cfg(test)]
mod tests;
