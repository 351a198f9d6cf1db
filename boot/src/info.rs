//! The boot loader's hand-over, normalised.
//!
//! Both multiboot flavours are parsed into [`BootInfo`], which owns copies of every string
//! and list it needs. Nothing here points back into the loader's memory, so once parsing is
//! done only the modules' contents must be kept away from the frame allocator.

use arrayvec::{ArrayString, ArrayVec};
use core::fmt;

/// Most memory-map entries kept; real firmware reports a few dozen at most.
pub const MAX_MEMORY_REGIONS: usize = 128;
/// Most boot modules kept (dom0 kernel, initramfs, test payloads).
pub const MAX_MODULES: usize = 16;
/// Longest command line kept, in bytes, for the hypervisor and for each module.
pub const MAX_CMDLINE: usize = 1024;
/// Longest boot loader name kept.
pub const MAX_LOADER_NAME: usize = 64;

/// What the firmware says a range of physical memory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM the hypervisor may use.
    Usable,
    /// ACPI tables; reclaimable once they are parsed.
    AcpiReclaimable,
    /// ACPI non-volatile storage; must be preserved.
    AcpiNvs,
    /// RAM with errors.
    Defective,
    /// Anything else: firmware, MMIO, unknown types.
    Reserved,
}

impl MemoryKind {
    /// Maps the e820 type numbers that both multiboot flavours use.
    pub fn from_e820(kind: u32) -> Self {
        match kind {
            1 => MemoryKind::Usable,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Defective,
            _ => MemoryKind::Reserved,
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryKind::Usable => "usable",
            MemoryKind::AcpiReclaimable => "ACPI data",
            MemoryKind::AcpiNvs => "ACPI NVS",
            MemoryKind::Defective => "defective",
            MemoryKind::Reserved => "reserved",
        })
    }
}

/// One entry of the firmware memory map: `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// Exclusive end, saturating so that a hostile or broken map cannot wrap.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A module handed over by the boot loader (a kernel, an initramfs, a test guest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Physical address of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The module's own command line; by convention its first word names the file.
    pub cmdline: ArrayString<MAX_CMDLINE>,
}

impl Module {
    /// Exclusive physical end address.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// Which boot protocol delivered us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Multiboot1,
    Multiboot2,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Multiboot1 => "multiboot1",
            Protocol::Multiboot2 => "multiboot2",
        })
    }
}

/// Everything the hypervisor needs from the boot loader.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: Protocol,
    pub loader_name: ArrayString<MAX_LOADER_NAME>,
    pub cmdline: ArrayString<MAX_CMDLINE>,
    pub memory_map: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS>,
    pub modules: ArrayVec<Module, MAX_MODULES>,
    /// Physical range of the boot information block itself.
    pub info_range: (u64, u64),
    /// Set when a list or string was longer than we keep; reported, not fatal.
    pub truncated: bool,
    /// The loader's copy of the ACPI RSDP (multiboot2 tag 15, else 14; at most
    /// [`MAX_RSDP`] bytes, unchecked), empty when it gave none.
    pub acpi_rsdp: ArrayVec<u8, MAX_RSDP>,
}

/// Most RSDP bytes kept (an ACPI 2.0+ RSDP is 36).
pub const MAX_RSDP: usize = 64;

impl BootInfo {
    pub(crate) fn new(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            loader_name: ArrayString::new(),
            cmdline: ArrayString::new(),
            memory_map: ArrayVec::new(),
            modules: ArrayVec::new(),
            info_range: (0, 0),
            truncated: false,
            acpi_rsdp: ArrayVec::new(),
        }
    }

    /// Parses the block the loader left at physical `addr`, choosing the flavour by `magic`.
    pub fn parse(magic: u32, addr: u64, mem: &impl PhysRead) -> Result<BootInfo, BootInfoError> {
        match magic {
            crate::MULTIBOOT1_BOOTLOADER_MAGIC => crate::mb1::parse(addr, mem),
            crate::MULTIBOOT2_BOOTLOADER_MAGIC => crate::mb2::parse(addr, mem),
            other => Err(BootInfoError::BadMagic(other)),
        }
    }

    /// Total bytes of usable RAM in the map, saturating: the lengths come from the loader
    /// and a hostile or broken map may add up past `u64::MAX`.
    pub fn usable_bytes(&self) -> u64 {
        self.memory_map
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .fold(0u64, |sum, r| sum.saturating_add(r.len))
    }

    pub(crate) fn push_region(&mut self, region: MemoryRegion) {
        if region.len == 0 {
            return;
        }
        if self.memory_map.try_push(region).is_err() {
            self.truncated = true;
        }
    }

    pub(crate) fn push_module(
        &mut self,
        start: u64,
        end: u64,
        cmdline: &[u8],
    ) -> Result<(), BootInfoError> {
        if end < start {
            return Err(BootInfoError::BadModule { start, end });
        }
        let mut module = Module {
            start,
            len: end - start,
            cmdline: ArrayString::new(),
        };
        self.truncated |= copy_str(&mut module.cmdline, cmdline);
        if self.modules.try_push(module).is_err() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// Copies a NUL-terminated or plain byte string, replacing non-UTF-8 bytes with `?`.
/// Returns true when the string had to be cut short.
pub(crate) fn copy_str<const N: usize>(dst: &mut ArrayString<N>, src: &[u8]) -> bool {
    let src = src.split(|&b| b == 0).next().unwrap_or(&[]);
    for &b in src {
        let c = if b.is_ascii() && !b.is_ascii_control() {
            b as char
        } else {
            '?'
        };
        if dst.try_push(c).is_err() {
            return true;
        }
    }
    false
}

/// Why the boot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX held neither multiboot magic value.
    BadMagic(u32),
    /// The block at this address could not be read.
    Unreadable { addr: u64, len: u64 },
    /// The block is malformed (bad size, bad tag alignment, ...).
    Malformed(&'static str),
    /// A module ends before it starts.
    BadModule { start: u64, end: u64 },
    /// The loader gave no memory map at all.
    NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => {
                write!(f, "not started by a multiboot loader (eax={m:#x})")
            }
            BootInfoError::Unreadable { addr, len } => {
                write!(
                    f,
                    "boot information at {addr:#x} (+{len:#x}) is not readable"
                )
            }
            BootInfoError::Malformed(why) => write!(f, "malformed boot information: {why}"),
            BootInfoError::BadModule { start, end } => {
                write!(f, "module ends ({end:#x}) before it starts ({start:#x})")
            }
            BootInfoError::NoMemoryMap => write!(f, "the boot loader gave no memory map"),
        }
    }
}

/// Read access to physical memory while parsing. The hypervisor reads through its boot-time
/// identity map; tests hand out slices of a buffer.
pub trait PhysRead {
    /// The `len` bytes at physical `addr`, or `None` if any of them is not readable.
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]>;

    /// Reads a little-endian u32.
    fn read_u32(&self, addr: u64) -> Option<u32> {
        let b = self.bytes(addr, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// Reads a little-endian u64.
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let b = self.bytes(addr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Copies the NUL-terminated string at `addr` into `dst`; returns true if it was cut short.
    fn read_cstr<const N: usize>(&self, addr: u64, dst: &mut ArrayString<N>) -> bool {
        for i in 0..N as u64 {
            match self.bytes(addr.saturating_add(i), 1) {
                Some([0]) | None => return false,
                Some(b) => {
                    if copy_str(dst, b) {
                        return true;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // a byte view of the test buffer (see `Buffer::bytes`)
pub(crate) mod tests {
    use super::*;

    /// A piece of fake physical memory at a fixed address, 8-byte aligned like real MBIs.
    pub(crate) struct Buffer {
        base: u64,
        words: Vec<u64>,
        len: usize,
    }

    impl Buffer {
        pub(crate) fn at(base: u64, bytes: &[u8]) -> Buffer {
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            for (i, chunk) in bytes.chunks(8).enumerate() {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                words[i] = u64::from_le_bytes(w);
            }
            Buffer {
                base,
                words,
                len: bytes.len(),
            }
        }
    }

    impl PhysRead for Buffer {
        fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
            let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            let end = off.checked_add(usize::try_from(len).ok()?)?;
            if end > self.len {
                return None;
            }
            // SAFETY: (test only) the words vector is initialised and at least `self.len`
            // bytes long; u8 has no alignment or validity requirements.
            let all =
                unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) };
            Some(&all[off..end])
        }
    }

    #[test]
    fn copy_str_stops_at_nul_and_sanitises() {
        let mut s = ArrayString::<8>::new();
        assert!(!copy_str(&mut s, b"a\x01b\xffc\0tail"));
        assert_eq!(s.as_str(), "a?b?c");
        let mut s = ArrayString::<4>::new();
        assert!(copy_str(&mut s, b"toolong"));
        assert_eq!(s.as_str(), "tool");
    }

    #[test]
    fn region_end_saturates() {
        let r = MemoryRegion {
            start: u64::MAX - 1,
            len: 10,
            kind: MemoryKind::Usable,
        };
        assert_eq!(r.end(), u64::MAX);
    }

    /// Found by the `mb1` fuzz target: two usable regions whose lengths add up past
    /// `u64::MAX` overflowed the sum (a panic in a debug build).
    #[test]
    fn usable_bytes_saturates() {
        let mut info = BootInfo::new(Protocol::Multiboot1);
        for start in [0, 1 << 63] {
            info.push_region(MemoryRegion {
                start,
                len: u64::MAX,
                kind: MemoryKind::Usable,
            });
        }
        assert_eq!(info.usable_bytes(), u64::MAX);
    }
}
