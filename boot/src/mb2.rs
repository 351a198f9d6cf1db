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
    // SAFETY: `bytes` is a live, readable slice of exactly `total` bytes that stays borrowed
    // (and therefore unchanged) for as long as `mbi` exists; the crate checks the size field
    // against the end tag before handing out any tag.
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
