//! Multiboot1 boot information (QEMU `-kernel`, GRUB `multiboot`).
//!
//! Layout from the Multiboot 0.6.96 specification, section 3.3: a flags word says which of
//! the fixed-offset fields are valid.

use crate::info::{BootInfo, BootInfoError, MemoryKind, MemoryRegion, PhysRead, Protocol};

const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
const FLAG_LOADER_NAME: u32 = 1 << 9;

const OFF_MEM_LOWER: u64 = 4;
const OFF_MEM_UPPER: u64 = 8;
const OFF_CMDLINE: u64 = 16;
const OFF_MODS_COUNT: u64 = 20;
const OFF_MODS_ADDR: u64 = 24;
const OFF_MMAP_LENGTH: u64 = 44;
const OFF_MMAP_ADDR: u64 = 48;
const OFF_LOADER_NAME: u64 = 64;
/// Size of the information block up to and including `boot_loader_name`.
const INFO_SIZE: u64 = 68;
/// Size of one module entry: start, end, string, reserved.
const MODULE_ENTRY_SIZE: u64 = 16;
/// Smallest memory-map entry: base (8), length (8), type (4), after the size word.
const MIN_MMAP_ENTRY: u32 = 20;

pub(crate) fn parse(addr: u64, mem: &impl PhysRead) -> Result<BootInfo, BootInfoError> {
    let unreadable = |a: u64, len: u64| BootInfoError::Unreadable { addr: a, len };
    let u32_at = |off: u64| mem.read_u32(addr + off).ok_or(unreadable(addr + off, 4));
    mem.bytes(addr, INFO_SIZE)
        .ok_or(unreadable(addr, INFO_SIZE))?;
    let flags = u32_at(0)?;

    let mut info = BootInfo::new(Protocol::Multiboot1);
    info.info_range = (addr, addr + INFO_SIZE);
    if flags & FLAG_CMDLINE != 0 {
        info.truncated |= mem.read_cstr(u64::from(u32_at(OFF_CMDLINE)?), &mut info.cmdline);
    }
    if flags & FLAG_LOADER_NAME != 0 {
        info.truncated |= mem.read_cstr(u64::from(u32_at(OFF_LOADER_NAME)?), &mut info.loader_name);
    }

    if flags & FLAG_MMAP != 0 {
        let start = u64::from(u32_at(OFF_MMAP_ADDR)?);
        let end = start + u64::from(u32_at(OFF_MMAP_LENGTH)?);
        let mut entry = start;
        while entry < end {
            let size = mem.read_u32(entry).ok_or(unreadable(entry, 4))?;
            if size < MIN_MMAP_ENTRY {
                return Err(BootInfoError::Malformed(
                    "multiboot1 memory-map entry too small",
                ));
            }
            let base = mem.read_u64(entry + 4).ok_or(unreadable(entry + 4, 8))?;
            let len = mem.read_u64(entry + 12).ok_or(unreadable(entry + 12, 8))?;
            let kind = mem.read_u32(entry + 20).ok_or(unreadable(entry + 20, 4))?;
            info.push_region(MemoryRegion {
                start: base,
                len,
                kind: MemoryKind::from_e820(kind),
            });
            entry += u64::from(size) + 4;
        }
    } else if flags & FLAG_MEM != 0 {
        // No e820 map: fall back to the two sizes in KiB (conventional and extended memory).
        let lower = u64::from(u32_at(OFF_MEM_LOWER)?) * 1024;
        let upper = u64::from(u32_at(OFF_MEM_UPPER)?) * 1024;
        info.push_region(MemoryRegion {
            start: 0,
            len: lower,
            kind: MemoryKind::Usable,
        });
        info.push_region(MemoryRegion {
            start: 0x10_0000,
            len: upper,
            kind: MemoryKind::Usable,
        });
    }
    if info.memory_map.is_empty() {
        return Err(BootInfoError::NoMemoryMap);
    }

    if flags & FLAG_MODS != 0 {
        let count = u64::from(u32_at(OFF_MODS_COUNT)?);
        let table = u64::from(u32_at(OFF_MODS_ADDR)?);
        for i in 0..count.min(crate::info::MAX_MODULES as u64 + 1) {
            let e = table + i * MODULE_ENTRY_SIZE;
            let field = |off: u64| {
                mem.read_u32(e + off)
                    .map(u64::from)
                    .ok_or(unreadable(e + off, 4))
            };
            let (start, end, string) = (field(0)?, field(4)?, field(8)?);
            let mut name = arrayvec::ArrayString::<{ crate::info::MAX_CMDLINE }>::new();
            info.truncated |= string != 0 && mem.read_cstr(string, &mut name);
            info.push_module(start, end, name.as_bytes())?;
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::tests::Buffer;
    use crate::MULTIBOOT1_BOOTLOADER_MAGIC;

    const BASE: u64 = 0x9000;

    /// Builds a multiboot1 block at BASE: header, then strings, module table and memory map.
    fn sample(mmap_entry_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        let put32 =
            |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put32(
            &mut b,
            0,
            FLAG_MEM | FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP | FLAG_LOADER_NAME,
        );
        put32(&mut b, 4, 639);
        put32(&mut b, 8, 1023 * 1024);
        b[0x100..0x100 + 31].copy_from_slice(b"/boot/ferrovisor loglvl=debug\0\0");
        put32(&mut b, 16, (BASE + 0x100) as u32);
        b[0x140..0x148].copy_from_slice(b"qemu\0\0\0\0");
        put32(&mut b, 64, (BASE + 0x140) as u32);
        b[0x160..0x16c].copy_from_slice(b"mod-a alpha\0");
        put32(&mut b, 20, 2);
        put32(&mut b, 24, (BASE + 0x180) as u32);
        put32(&mut b, 0x180, 0x20_0000);
        put32(&mut b, 0x184, 0x20_1000);
        put32(&mut b, 0x188, (BASE + 0x160) as u32);
        put32(&mut b, 0x190, 0x30_0000);
        put32(&mut b, 0x194, 0x30_0010);
        put32(&mut b, 0x198, 0); // no string
        let stride = mmap_entry_size as usize + 4;
        let entries = [
            (0u64, 0x9fc00u64, 1u32),
            (0x10_0000, 0x3ff0_0000, 1),
            (0xfffc_0000, 0x4_0000, 2),
        ];
        for (i, (base, len, kind)) in entries.iter().enumerate() {
            let e = 0x200 + i * stride;
            put32(&mut b, e, mmap_entry_size);
            put64(&mut b, e + 4, *base);
            put64(&mut b, e + 12, *len);
            put32(&mut b, e + 20, *kind);
        }
        put32(&mut b, 48, (BASE + 0x200) as u32);
        put32(&mut b, 44, (entries.len() * stride) as u32);
        b
    }

    #[test]
    fn parses_cmdline_loader_modules_and_map() {
        let mem = Buffer::at(BASE, &sample(20));
        let info = BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot1);
        assert_eq!(info.cmdline.as_str(), "/boot/ferrovisor loglvl=debug");
        assert_eq!(info.loader_name.as_str(), "qemu");
        assert_eq!(info.memory_map.len(), 3);
        assert_eq!(
            info.memory_map[1],
            MemoryRegion {
                start: 0x10_0000,
                len: 0x3ff0_0000,
                kind: MemoryKind::Usable
            }
        );
        assert_eq!(info.memory_map[2].kind, MemoryKind::Reserved);
        assert_eq!(info.modules.len(), 2);
        assert_eq!(
            (info.modules[0].start, info.modules[0].len),
            (0x20_0000, 0x1000)
        );
        assert_eq!(info.modules[0].cmdline.as_str(), "mod-a alpha");
        assert_eq!(info.modules[1].cmdline.as_str(), "");
        assert_eq!(info.modules[1].len, 0x10);
    }

    #[test]
    fn honours_larger_mmap_entry_size() {
        let mem = Buffer::at(BASE, &sample(24));
        let info = BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap();
        assert_eq!(info.memory_map.len(), 3);
        assert_eq!(info.memory_map[2].start, 0xfffc_0000);
    }

    #[test]
    fn tiny_mmap_entry_is_malformed_not_an_endless_loop() {
        let mut b = sample(20);
        b[0x200..0x204].copy_from_slice(&0u32.to_le_bytes());
        let mem = Buffer::at(BASE, &b);
        assert!(matches!(
            BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem),
            Err(BootInfoError::Malformed(_))
        ));
    }

    #[test]
    fn falls_back_to_mem_lower_upper() {
        let mut b = sample(20);
        b[0..4].copy_from_slice(&FLAG_MEM.to_le_bytes());
        let mem = Buffer::at(BASE, &b);
        let info = BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap();
        assert_eq!(info.memory_map.len(), 2);
        assert_eq!(info.memory_map[0].len, 639 * 1024);
        assert_eq!(
            info.memory_map[1],
            MemoryRegion {
                start: 0x10_0000,
                len: 1023 * 1024 * 1024,
                kind: MemoryKind::Usable
            }
        );
        assert!(info.modules.is_empty());
        assert!(info.cmdline.is_empty());
    }

    #[test]
    fn no_memory_information_is_an_error() {
        let mut b = sample(20);
        b[0..4].copy_from_slice(&FLAG_CMDLINE.to_le_bytes());
        let mem = Buffer::at(BASE, &b);
        assert_eq!(
            BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
    }

    #[test]
    fn pointers_outside_memory_are_reported() {
        let mut b = sample(20);
        b[24..28].copy_from_slice(&0xdead_0000u32.to_le_bytes()); // module table
        let mem = Buffer::at(BASE, &b);
        assert_eq!(
            BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap_err(),
            BootInfoError::Unreadable {
                addr: 0xdead_0000,
                len: 4
            }
        );
        let mem = Buffer::at(BASE, &b[..40]);
        assert!(matches!(
            BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem),
            Err(BootInfoError::Unreadable { .. })
        ));
    }

    #[test]
    fn unknown_magic_is_rejected() {
        let mem = Buffer::at(BASE, &sample(20));
        assert_eq!(
            BootInfo::parse(0x1234, BASE, &mem).unwrap_err(),
            BootInfoError::BadMagic(0x1234)
        );
    }

    #[test]
    fn too_many_modules_are_cut_and_flagged() {
        let mut b = sample(20);
        b.resize(0x800, 0);
        let count = crate::info::MAX_MODULES as u32 + 3;
        b[20..24].copy_from_slice(&count.to_le_bytes());
        b[24..28].copy_from_slice(&((BASE + 0x400) as u32).to_le_bytes());
        for i in 0..count as usize {
            let e = 0x400 + i * 16;
            b[e..e + 4].copy_from_slice(&0x100000u32.to_le_bytes());
            b[e + 4..e + 8].copy_from_slice(&0x100100u32.to_le_bytes());
        }
        let mem = Buffer::at(BASE, &b);
        let info = BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, BASE, &mem).unwrap();
        assert_eq!(info.modules.len(), crate::info::MAX_MODULES);
        assert!(info.truncated);
    }
}
