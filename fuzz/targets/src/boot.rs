//! Multiboot1 and multiboot2 boot-information parsers (`boot/`).
//!
//! The input is a piece of physical memory with the information block at its start. For
//! multiboot1 that is physical address 0, so the block's pointers (command line, memory map,
//! module table) reach into the input by their plain offsets; for multiboot2 it is 8-byte
//! aligned at 0x10000, as a loader leaves it.

use ferrovisor_boot::info::{MAX_CMDLINE, MAX_LOADER_NAME, MAX_MEMORY_REGIONS, MAX_MODULES};
use ferrovisor_boot::{
    BootInfo, PhysRead, MULTIBOOT1_BOOTLOADER_MAGIC, MULTIBOOT2_BOOTLOADER_MAGIC,
};

/// Fake physical memory: the input's bytes at `base`, 8-byte aligned in host memory (the
/// multiboot2 crate reads its structures through aligned references).
struct Memory {
    base: u64,
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Memory {
    fn new(base: u64, data: &[u8]) -> Memory {
        let mut buf = vec![0u8; data.len() + 8];
        let off = buf.as_ptr().align_offset(8).min(8);
        buf[off..off + data.len()].copy_from_slice(data);
        Memory {
            base,
            buf,
            off,
            len: data.len(),
        }
    }
}

impl PhysRead for Memory {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        self.buf.get(self.off + start..self.off + end)
    }
}

/// What every successful parse must satisfy, whatever the flavour.
fn check(info: &BootInfo, base: u64, data_len: usize) {
    assert!(!info.memory_map.is_empty(), "Ok without a memory map");
    assert!(info.memory_map.len() <= MAX_MEMORY_REGIONS);
    assert!(info.modules.len() <= MAX_MODULES);
    for r in &info.memory_map {
        assert_ne!(r.len, 0, "empty regions are dropped");
        assert!(r.end() >= r.start);
    }
    for m in &info.modules {
        assert!(m.end() >= m.start);
        assert!(m.cmdline.len() <= MAX_CMDLINE);
        assert!(m
            .cmdline
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_control()));
    }
    assert!(info.cmdline.len() <= MAX_CMDLINE);
    assert!(info.loader_name.len() <= MAX_LOADER_NAME);
    for s in [info.cmdline.as_str(), info.loader_name.as_str()] {
        assert!(s.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()));
    }
    // The block itself lies inside the memory it was read from.
    let (start, end) = info.info_range;
    assert_eq!(start, base);
    assert!(end >= start && end - start <= data_len as u64);
    // Summaries the hypervisor computes from a map must not overflow on hostile lengths.
    let usable = info.usable_bytes();
    let sum: u128 = info
        .memory_map
        .iter()
        .filter(|r| r.kind == ferrovisor_boot::MemoryKind::Usable)
        .map(|r| u128::from(r.len))
        .sum();
    assert_eq!(u128::from(usable), sum.min(u128::from(u64::MAX)));
    let _ = format!("{info:?}");
}

/// Multiboot1: the input is the memory from physical address 0, the block at 0.
pub fn target_mb1(data: &[u8]) {
    let mem = Memory::new(0, data);
    match BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, 0, &mem) {
        Ok(info) => check(&info, 0, 68.max(data.len())),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Physical address of the multiboot2 block.
const MB2_BASE: u64 = 0x10000;

/// Multiboot2: the input is the block (and whatever follows it) at 0x10000.
pub fn target_mb2(data: &[u8]) {
    let mem = Memory::new(MB2_BASE, data);
    match BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, MB2_BASE, &mem) {
        Ok(info) => check(&info, MB2_BASE, data.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
