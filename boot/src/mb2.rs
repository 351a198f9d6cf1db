//! Multiboot2 boot information (GRUB `multiboot2`), parsed with the `multiboot2` crate.
#![allow(unsafe_code)]

use crate::info::{
    copy_str, BootInfo, BootInfoError, MemoryKind, MemoryRegion, PhysRead, Protocol,
};
use multiboot2::{BootInformation, BootInformationHeader};

/// Largest information block we accept; GRUB's are a few KiB.
const MAX_INFO_SIZE: u32 = 1 << 20;

pub(crate) fn parse(addr: u64, mem: &impl PhysRead) -> Result<BootInfo, BootInfoError> {
    let total = mem
        .read_u32(addr)
        .ok_or(BootInfoError::Unreadable { addr, len: 8 })?;
    if !(16..=MAX_INFO_SIZE).contains(&total) || !addr.is_multiple_of(8) {
        return Err(BootInfoError::Malformed(
            "multiboot2 information size or alignment",
        ));
    }
    let bytes = mem
        .bytes(addr, u64::from(total))
        .ok_or(BootInfoError::Unreadable {
            addr,
            len: u64::from(total),
        })?;
    check_tags(bytes)?;
    // SAFETY: `bytes` is a live, readable slice of exactly `total` bytes that stays borrowed
    // (and therefore unchanged) for as long as `mbi` exists; the crate checks the size field
    // against the end tag before handing out any tag, and `check_tags` has checked every tag
    // the crate walks or casts, whose malformed sizes it would otherwise panic on.
    let mbi = unsafe { BootInformation::load(bytes.as_ptr().cast::<BootInformationHeader>()) }
        .map_err(|_| BootInfoError::Malformed("multiboot2 information has no valid end tag"))?;

    let mut info = BootInfo::new(Protocol::Multiboot2);
    info.info_range = (addr, addr + u64::from(total));
    if let Some(Ok(cmdline)) = mbi.command_line_tag().map(|t| t.cmdline()) {
        info.truncated |= copy_str(&mut info.cmdline, cmdline.as_bytes());
    }
    if let Some(Ok(name)) = mbi.boot_loader_name_tag().map(|t| t.name()) {
        info.truncated |= copy_str(&mut info.loader_name, name.as_bytes());
    }
    let map = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in map.memory_areas() {
        info.push_region(MemoryRegion {
            start: area.start_address(),
            len: area.size(),
            kind: MemoryKind::from_e820(u32::from(area.typ())),
        });
    }
    // A map tag with no entries, or only empty ones, is no map (as for multiboot1).
    if info.memory_map.is_empty() {
        return Err(BootInfoError::NoMemoryMap);
    }
    if let Some(rsdp) = rsdp_tag(bytes) {
        let n = rsdp.len().min(crate::info::MAX_RSDP);
        let _ = info.acpi_rsdp.try_extend_from_slice(&rsdp[..n]);
    }
    for module in mbi.module_tags() {
        let cmdline = module.cmdline().unwrap_or("");
        info.push_module(
            u64::from(module.start_address()),
            u64::from(module.end_address()),
            cmdline.as_bytes(),
        )?;
    }
    Ok(info)
}

/// Tag types whose layout [`parse`] relies on.
const TAG_END: u32 = 0;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
/// Size of one memory-map entry (base, length, type, reserved): the only one the crate reads.
const MMAP_ENTRY_SIZE: usize = 24;

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// The payload of the ACPI "new" RSDP tag, else of the "old" one. Only for a block that
/// [`check_tags`] accepted (every tag lies inside it).
fn rsdp_tag(bytes: &[u8]) -> Option<&[u8]> {
    let mut off = 8usize;
    let mut old = None;
    while let (Some(typ), Some(size)) = (u32_at(bytes, off), u32_at(bytes, off + 4)) {
        let end = off.checked_add(size as usize)?;
        let payload = bytes.get(off.checked_add(8)?..end);
        match typ {
            TAG_END => break,
            TAG_ACPI_NEW => return payload,
            TAG_ACPI_OLD => old = payload,
            _ => {}
        }
        off = end.max(off + 8).next_multiple_of(8);
    }
    old
}

/// Walks the tag list of the `bytes.len()`-byte information block as the `multiboot2` crate
/// will, refusing what would make the crate panic (it asserts on sizes instead of returning
/// errors; found by the `mb2` fuzz target): a tag shorter than its header or running past the
/// block, a module tag without its addresses, a memory map whose entries are not 24 bytes or
/// do not fill the tag, and anything but an end tag closing the block exactly.
fn check_tags(bytes: &[u8]) -> Result<(), BootInfoError> {
    let bad = BootInfoError::Malformed;
    let mut off = 8usize;
    loop {
        let (Some(typ), Some(size)) = (u32_at(bytes, off), u32_at(bytes, off + 4)) else {
            return Err(bad(
                "multiboot2 tag list runs past the block without an end tag",
            ));
        };
        let size = size as usize;
        let end = off.checked_add(size).filter(|&e| e <= bytes.len());
        let Some(end) = end.filter(|_| size >= 8) else {
            return Err(bad("multiboot2 tag size out of range"));
        };
        match typ {
            TAG_END => {
                return if size == 8 && end == bytes.len() {
                    Ok(())
                } else {
                    Err(bad("multiboot2 end tag is not the block's last 8 bytes"))
                };
            }
            TAG_MODULE if size < 16 => return Err(bad("multiboot2 module tag too short")),
            TAG_MMAP => {
                let entry = u32_at(bytes, off + 8).filter(|_| size >= 16);
                if entry != Some(MMAP_ENTRY_SIZE as u32)
                    || !(size - 16).is_multiple_of(MMAP_ENTRY_SIZE)
                {
                    return Err(bad("multiboot2 memory map entry size"));
                }
            }
            _ => {}
        }
        off = end.next_multiple_of(8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::tests::Buffer;
    use crate::MULTIBOOT2_BOOTLOADER_MAGIC;
    use multiboot2::{
        BootLoaderNameTag, Builder, CommandLineTag, MemoryArea, MemoryAreaType, MemoryMapTag,
        ModuleTag,
    };

    fn sample() -> Vec<u8> {
        let mbi = Builder::new()
            .cmdline(CommandLineTag::new("loglvl=debug dom0_mem=512M"))
            .bootloader(BootLoaderNameTag::new("GRUB 2.06"))
            .mmap(MemoryMapTag::new(&[
                MemoryArea::new(0, 0x9fc00, MemoryAreaType::Available),
                MemoryArea::new(0xf0000, 0x10000, MemoryAreaType::Reserved),
                MemoryArea::new(0x100000, 0x3fee0000, MemoryAreaType::Available),
                MemoryArea::new(0x3ffe0000, 0x20000, MemoryAreaType::AcpiAvailable),
            ]))
            .add_module(ModuleTag::new(0x800000, 0x801234, "vmlinuz console=hvc0"))
            .add_module(ModuleTag::new(0x900000, 0x980000, "initrd.img"))
            .build();
        bytes_of(&mbi)
    }

    /// The builder's result as the raw bytes a loader would leave in memory.
    fn bytes_of(mbi: &multiboot2_common::DynSizedStructure<BootInformationHeader>) -> Vec<u8> {
        let len = mbi.header().total_size() as usize;
        // SAFETY: (test only) the structure is one allocation that starts with its header and
        // is `total_size` bytes long, as the builder guarantees.
        unsafe { core::slice::from_raw_parts(mbi as *const _ as *const u8, len) }.to_vec()
    }

    #[test]
    fn keeps_the_acpi_rsdp_copy_preferring_the_new_one() {
        use multiboot2::{RsdpV1Tag, RsdpV2Tag};
        let base = || {
            Builder::new().mmap(MemoryMapTag::new(&[MemoryArea::new(
                0,
                0x9fc00,
                MemoryAreaType::Available,
            )]))
        };
        let parse = |b: Vec<u8>| {
            let mem = Buffer::at(0x10000, &b);
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem).unwrap()
        };
        let none = parse(bytes_of(&base().build()));
        assert!(none.acpi_rsdp.is_empty());
        let v1 = RsdpV1Tag::new(0x11, *b"OEMID ", 0, 0xe1000);
        let old = parse(bytes_of(&base().rsdpv1(v1).build()));
        assert_eq!(old.acpi_rsdp.len(), 20);
        assert_eq!(&old.acpi_rsdp[..8], b"RSD PTR ");
        assert_eq!(old.acpi_rsdp[16..20], 0xe1000u32.to_le_bytes());
        let v2 = RsdpV2Tag::new(0x22, *b"OEMID ", 2, 0xe1000, 36, 0xe2000, 0x33);
        let new = parse(bytes_of(&base().rsdpv1(v1).rsdpv2(v2).build()));
        assert_eq!(new.acpi_rsdp.len(), 36);
        assert_eq!(new.acpi_rsdp[24..32], 0xe2000u64.to_le_bytes());
    }

    #[test]
    fn parses_every_tag_we_use() {
        let mem = Buffer::at(0x10000, &sample());
        let info = BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.cmdline.as_str(), "loglvl=debug dom0_mem=512M");
        assert_eq!(info.loader_name.as_str(), "GRUB 2.06");
        assert_eq!(info.memory_map.len(), 4);
        assert_eq!(
            info.memory_map[2],
            MemoryRegion {
                start: 0x100000,
                len: 0x3fee0000,
                kind: MemoryKind::Usable
            }
        );
        assert_eq!(info.memory_map[3].kind, MemoryKind::AcpiReclaimable);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x3fee0000);
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].start, 0x800000);
        assert_eq!(info.modules[0].len, 0x1234);
        assert_eq!(info.modules[0].cmdline.as_str(), "vmlinuz console=hvc0");
        assert_eq!(info.modules[1].cmdline.as_str(), "initrd.img");
        assert!(!info.truncated);
    }

    #[test]
    fn missing_end_tag_is_rejected() {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[n - 8] = 0x55; // corrupt the end tag's type
        let mem = Buffer::at(0x10000, &bytes);
        assert!(matches!(
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem),
            Err(BootInfoError::Malformed(_))
        ));
    }

    #[test]
    fn size_field_beyond_readable_memory_is_rejected() {
        let mut bytes = sample();
        let n = bytes.len() as u32 + 64;
        bytes[0..4].copy_from_slice(&n.to_le_bytes());
        let mem = Buffer::at(0x10000, &bytes);
        assert!(matches!(
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem),
            Err(BootInfoError::Unreadable { .. })
        ));
    }

    #[test]
    fn absurd_size_and_misalignment_are_rejected() {
        let mut bytes = sample();
        bytes[0..4].copy_from_slice(&4u32.to_le_bytes());
        let mem = Buffer::at(0x10000, &bytes);
        assert!(BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem).is_err());
        let mem = Buffer::at(0x10004, &sample());
        assert!(BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10004, &mem).is_err());
    }

    /// The sample with the tag of type `typ` patched by `f(bytes, tag offset)`.
    fn patched(typ: u32, f: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
        let mut bytes = sample();
        let mut off = 8;
        while u32_at(&bytes, off).unwrap() != typ {
            off += (u32_at(&bytes, off + 4).unwrap() as usize).next_multiple_of(8);
        }
        f(&mut bytes, off);
        bytes
    }

    fn set32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn malformed(bytes: &[u8]) -> bool {
        let mem = Buffer::at(0x10000, bytes);
        matches!(
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x10000, &mem),
            Err(BootInfoError::Malformed(_))
        )
    }

    /// Found by the `mb2` fuzz target: each of these made the `multiboot2` crate panic
    /// (`assertion failed: self.size as usize >= mem::size_of::<Self>()` and its kin).
    #[test]
    fn malformed_tag_sizes_are_errors_not_panics() {
        // A tag shorter than its own header (the fuzzer's first find: size 0).
        for size in [0, 4, 7] {
            assert!(malformed(&patched(1, |b, off| set32(b, off + 4, size))));
        }
        // A tag running past the block.
        assert!(malformed(&patched(2, |b, off| set32(b, off + 4, 0x1000))));
        // A module tag too short for its addresses.
        assert!(malformed(&patched(3, |b, off| set32(b, off + 4, 12))));
        // Memory-map entries of another size, or not filling the tag.
        assert!(malformed(&patched(6, |b, off| set32(b, off + 8, 20))));
        assert!(malformed(&patched(6, |b, off| set32(b, off + 8, 0))));
        assert!(malformed(&patched(6, |b, off| {
            let size = u32_at(b, off + 4).unwrap();
            set32(b, off + 4, size - 8);
        })));
        // A map tag cut before its entry-size field.
        assert!(malformed(&patched(6, |b, off| set32(b, off + 4, 12))));
        // An end tag that is not last, or of the wrong size.
        assert!(malformed(&patched(1, |b, off| set32(b, off, 0))));
        let mut bytes = sample();
        let n = bytes.len();
        set32(&mut bytes, n - 4, 16);
        assert!(malformed(&bytes));
        // The untouched sample still parses.
        assert!(!malformed(&sample()));
    }

    /// Found by the `mb2` fuzz target: a memory-map tag without entries (or with only empty
    /// ones) was accepted as a boot information block with no memory at all.
    #[test]
    fn empty_memory_map_is_an_error() {
        for areas in [
            &[][..],
            &[MemoryArea::new(0x1000, 0, MemoryAreaType::Available)][..],
        ] {
            let mbi = Builder::new().mmap(MemoryMapTag::new(areas)).build();
            let mem = Buffer::at(0x2000, &bytes_of(&mbi));
            assert_eq!(
                BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x2000, &mem).unwrap_err(),
                BootInfoError::NoMemoryMap
            );
        }
    }

    #[test]
    fn no_memory_map_is_an_error() {
        let mbi = Builder::new().cmdline(CommandLineTag::new("x")).build();
        let mem = Buffer::at(0x2000, &bytes_of(&mbi));
        assert_eq!(
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x2000, &mem).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
    }

    #[test]
    fn module_ending_before_start_is_rejected() {
        let mbi = Builder::new()
            .mmap(MemoryMapTag::new(&[MemoryArea::new(
                0,
                0x1000,
                MemoryAreaType::Available,
            )]))
            .add_module(ModuleTag::new(0x8000, 0x9000, "backwards"))
            .build();
        let mut bytes = bytes_of(&mbi);
        // The builder refuses such a module, so patch mod_end of the module tag (type 3).
        let mut off = 8;
        while u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) != 3 {
            let size = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
            off += size.div_ceil(8) * 8;
        }
        bytes[off + 12..off + 16].copy_from_slice(&0x7000u32.to_le_bytes());
        let mem = Buffer::at(0x2000, &bytes);
        assert_eq!(
            BootInfo::parse(MULTIBOOT2_BOOTLOADER_MAGIC, 0x2000, &mem).unwrap_err(),
            BootInfoError::BadModule {
                start: 0x8000,
                end: 0x7000
            }
        );
    }
}
