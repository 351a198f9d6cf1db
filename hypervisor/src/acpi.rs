//! The host's ACPI tables: which CPUs the firmware lists (MADT), read once at boot while
//! the boot page tables still map the first 4 GiB (firmware tables lie in reserved or ACPI
//! memory, which the final direct map leaves out). The parsing itself is the host-tested
//! `acpi-host` crate; this module only finds the RSDP and reads through the direct map.

use crate::mm::phys::BootMemory;
use acpi_host::{Madt, Rsdp};
use ferrovisor_boot::{BootInfo, PhysRead};

struct Mem;

impl acpi_host::PhysMem for Mem {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        BootMemory.bytes(addr, len)
    }
}

/// Where the RSDP came from, for the boot log.
#[derive(Clone, Copy, Debug)]
pub enum RsdpSource {
    /// The multiboot2 loader's copy.
    Loader,
    /// Found at this address by scanning the BIOS areas.
    Scan(u64),
}

impl core::fmt::Display for RsdpSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RsdpSource::Loader => f.write_str("from the boot loader"),
            RsdpSource::Scan(a) => write!(f, "at {a:#x}"),
        }
    }
}

/// Names the root table an RSDP points at, for the boot log.
pub struct RootTable<'a>(pub &'a Rsdp);

impl core::fmt::Display for RootTable<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0.xsdt {
            Some(x) => write!(f, "XSDT at {x:#x}"),
            None => write!(f, "RSDT at {:#x}", self.0.rsdt),
        }
    }
}

/// The RSDP: the boot loader's copy if it gave one, else a scan of the first KiB of the
/// EBDA and of 0xE0000-0xFFFFF, as the ACPI specification describes for BIOS systems.
fn find_rsdp(boot: &BootInfo) -> Result<(Rsdp, RsdpSource), acpi_host::Error> {
    if !boot.acpi_rsdp.is_empty() {
        return acpi_host::parse_rsdp(&boot.acpi_rsdp).map(|r| (r, RsdpSource::Loader));
    }
    let ebda = BootMemory
        .bytes(0x40e, 2)
        .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])) << 4)
        .filter(|&a| (0x400..0xa0000).contains(&a));
    let areas = ebda
        .map(|a| (a, 1024u64.min(0xa0000 - a)))
        .into_iter()
        .chain(core::iter::once((0xe0000, 0x20000)));
    for (base, len) in areas {
        if let Some(found) = BootMemory
            .bytes(base, len)
            .and_then(|b| acpi_host::scan_rsdp(b, base))
        {
            return Ok((found.1, RsdpSource::Scan(found.0)));
        }
    }
    Err(acpi_host::Error::NoRsdp)
}

/// Reads the MADT. Call before `mm::paging::init` replaces the boot tables.
pub fn read_madt(boot: &BootInfo) -> Result<(Madt, Rsdp, RsdpSource), acpi_host::Error> {
    let (rsdp, source) = find_rsdp(boot)?;
    let madt = acpi_host::read_madt(&Mem, &rsdp)?;
    Ok((madt, rsdp, source))
}
