//! Access to `struct hvm_start_info` (the PVH boot information EBX points at on entry).
//!
//! Invariant: the runtime validates the magic before `main` runs and keeps a copy of the
//! 56-byte structure; the memory map and command line are read from guest memory on demand
//! with unaligned volatile-free copies (nothing else writes them while the test runs).

use core::ptr;

use xen_abi::hvm::start_info::{HvmMemmapTableEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE};

/// Longest command line the runtime reads (Linux copies at most 2048 bytes too).
pub const MAX_CMDLINE: usize = 2048;

/// Most memory-map entries the runtime iterates over (the Xen table holds 128).
pub const MAX_MEMMAP_ENTRIES: u32 = 128;

/// The boot information handed to the guest, with the address it was found at.
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// Guest-physical address of the structure (EBX at entry).
    pub addr: u64,
    /// A copy of the structure.
    pub raw: HvmStartInfo,
}

/// Why the start info was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// EBX was 0.
    Null,
    /// The magic field held this value instead of `0x336ec578`.
    BadMagic(u32),
}

impl StartInfo {
    /// Reads and validates the structure at `addr`.
    ///
    /// # Safety
    /// `addr` must be 0 or readable for 56 bytes (the runtime identity-maps the first 4 GiB,
    /// so any address below 4 GiB is mapped; reading outside RAM is up to the hypervisor).
    pub unsafe fn from_addr(addr: u64) -> Result<StartInfo, StartInfoError> {
        if addr == 0 {
            return Err(StartInfoError::Null);
        }
        // SAFETY: the caller guarantees the address is readable; an unaligned read copes with
        // any placement.
        let magic = unsafe { ptr::read_unaligned(addr as *const u32) };
        if magic != XEN_HVM_START_MAGIC_VALUE {
            return Err(StartInfoError::BadMagic(magic));
        }
        // SAFETY: as above, for the whole 56-byte structure.
        let raw = unsafe { ptr::read_unaligned(addr as *const HvmStartInfo) };
        Ok(StartInfo { addr, raw })
    }

    /// The memory-map entries (empty for a version-0 structure or `memmap_entries == 0`).
    pub fn memmap(&self) -> impl Iterator<Item = HvmMemmapTableEntry> + '_ {
        let n = if self.raw.version >= 1 && self.raw.memmap_paddr != 0 {
            self.raw.memmap_entries.min(MAX_MEMMAP_ENTRIES)
        } else {
            0
        };
        let base = self.raw.memmap_paddr;
        (0..u64::from(n)).map(move |i| {
            let at = base + i * core::mem::size_of::<HvmMemmapTableEntry>() as u64;
            // SAFETY: the hypervisor placed `memmap_entries` entries at `memmap_paddr`, below
            // 4 GiB and thus identity-mapped by the runtime.
            unsafe { ptr::read_unaligned(at as *const HvmMemmapTableEntry) }
        })
    }

    /// Whether `[start, end)` lies inside one memory-map entry of type `ty`.
    pub fn memmap_covers(&self, start: u64, end: u64, ty: u32) -> bool {
        self.memmap()
            .any(|e| e.ty == ty && e.addr <= start && end <= e.addr.saturating_add(e.size))
    }

    /// Whether any memory-map entry (of any type) overlaps `[start, end)`.
    pub fn memmap_overlaps(&self, start: u64, end: u64) -> bool {
        self.memmap()
            .any(|e| e.addr < end && start < e.addr.saturating_add(e.size))
    }

    /// The value of `key=value` on the command line (the first such word), `Some("")` for a
    /// bare `key`, `None` if absent.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        arg_in(self.cmdline()?, key)
    }

    /// [`StartInfo::arg`] parsed as a number (decimal, or hex with `0x`); `Err` names the
    /// key and the bad value.
    pub fn arg_u64(&self, key: &str, default: u64) -> Result<u64, crate::Fail> {
        match self.arg(key) {
            None => Ok(default),
            Some(v) => parse_u64(v).ok_or_else(|| {
                crate::Fail::new(format_args!("command line: {key}={v:?} is not a number"))
            }),
        }
    }

    /// The command line, if `cmdline_paddr` is set and the string is NUL-terminated UTF-8
    /// within [`MAX_CMDLINE`] bytes.
    pub fn cmdline(&self) -> Option<&'static str> {
        let base = self.raw.cmdline_paddr;
        if base == 0 {
            return None;
        }
        // SAFETY: the hypervisor put a NUL-terminated string at `cmdline_paddr` (below 4 GiB,
        // identity-mapped); at most MAX_CMDLINE bytes are read and nothing writes them.
        let bytes = unsafe { core::slice::from_raw_parts(base as *const u8, MAX_CMDLINE) };
        let len = bytes.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&bytes[..len]).ok()
    }
}

/// The value of `key` among the whitespace-separated `key=value` words of `cmdline`.
pub fn arg_in<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|w| match w.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if w == key => Some(""),
            _ => None,
        })
}

/// A decimal or `0x` hexadecimal number.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_arguments() {
        let c = "role=ping peer=1 count=10000 verbose";
        assert_eq!(arg_in(c, "role"), Some("ping"));
        assert_eq!(arg_in(c, "count"), Some("10000"));
        assert_eq!(arg_in(c, "verbose"), Some(""));
        assert_eq!(arg_in(c, "pe"), None);
        assert_eq!(arg_in("a=1 a=2", "a"), Some("1"));
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("12"), Some(12));
        assert_eq!(parse_u64("x"), None);
    }
}
