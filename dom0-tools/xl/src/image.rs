//! The boot image of a PVH domU, laid out as the hypervisor's own builder
//! (`hypervisor/src/domain/build.rs`) lays out dom0: `hvm_start_info` at
//! [`START_INFO_GPA`], the module list after it, the memory map at [`MEMMAP_GPA`], the
//! command line at [`CMDLINE_GPA`], ACPI tables at [`ACPI_GPA`], the kernel's segments,
//! the ramdisk page-aligned after the kernel, and the console and xenstore ring pages in
//! the top two pages of RAM, reported reserved.

use pvh_loader::{parse_bzimage, parse_pvh, Compression, ImageFormat};
use xen_abi::fvctl::MemmapEntry;
use xen_abi::hvm::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};
use zerocopy::IntoBytes;

pub const START_INFO_GPA: u64 = 0x6000;
pub const MODLIST_GPA: u64 = 0x6040;
pub const MEMMAP_GPA: u64 = 0x7000;
pub const CMDLINE_GPA: u64 = 0x8000;
const CMDLINE_MAX: usize = 4096;
const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);
pub const ACPI_GPA: u64 = 0xe_0000;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_NVS: u32 = 4;
const PAGE: u64 = 4096;
/// Populate works in 2 MiB steps: RAM is a multiple of this.
pub const RAM_ALIGN: u64 = 2 << 20;
/// Largest decompressed kernel accepted.
const MAX_KERNEL: u64 = 256 << 20;
/// LZMA2 dictionary for a bzImage's XZ payload (Linux uses up to 32 MiB).
const XZ_DICT: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a PVH kernel: {0}")]
    Elf(pvh_loader::LoadError),
    #[error("bad bzImage: {0}")]
    BzImage(pvh_loader::BzImageError),
    #[error("bzImage payload is {0:?}-compressed; only XZ is supported")]
    Compression(Compression),
    #[error("bzImage gives a bad uncompressed size ({0} bytes)")]
    BadSize(u32),
    #[error("decompressing bzImage: {0}")]
    Xz(pvh_loader::xz::XzError),
    #[error("neither an ELF nor a bzImage")]
    UnknownFormat,
    #[error("kernel segment at {paddr:#x} (+{len:#x}) does not fit in {} MiB of guest memory", ram >> 20)]
    SegmentOutsideMemory { paddr: u64, len: u64, ram: u64 },
    #[error("ramdisk ({} KiB) does not fit after the kernel in {} MiB of guest memory", len >> 10, ram >> 20)]
    RamdiskTooLarge { len: u64, ram: u64 },
    #[error("command line of {0} bytes exceeds {CMDLINE_MAX}")]
    CmdlineTooLong(usize),
    #[error("{0} MiB of memory is too little (at least 4 MiB)")]
    TooSmall(u64),
    #[error("ACPI tables: {0}")]
    Acpi(acpi_tables::AcpiError),
}

/// Extracts the kernel's ELF: as is, or decompressed from a bzImage's XZ payload.
pub fn kernel_elf(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ImageError> {
    match ImageFormat::detect(bytes) {
        ImageFormat::Elf => Ok(bytes.into()),
        ImageFormat::BzImage => {
            let bz = parse_bzimage(bytes).map_err(ImageError::BzImage)?;
            if bz.compression != Compression::Xz {
                return Err(ImageError::Compression(bz.compression));
            }
            let size = bz.uncompressed_size_hint().ok_or(ImageError::BadSize(0))?;
            if size == 0 || u64::from(size) > MAX_KERNEL {
                return Err(ImageError::BadSize(size));
            }
            let mut dict = vec![0u8; XZ_DICT];
            let mut out = vec![0u8; size as usize];
            let n = pvh_loader::xz::decompress(bz.payload, &mut dict, &mut out)
                .map_err(ImageError::Xz)?;
            out.truncate(n);
            Ok(out.into())
        }
        ImageFormat::Unknown => Err(ImageError::UnknownFormat),
    }
}

/// Checks that `bytes` is a loadable PVH kernel (without building anything).
#[cfg(test)]
pub fn check_kernel(bytes: &[u8]) -> Result<(), ImageError> {
    let elf = kernel_elf(bytes)?;
    parse_pvh(&elf).map(|_| ()).map_err(ImageError::Elf)
}

/// Bytes of a [`BootImage`] piece: a range of the kernel's ELF image, the ramdisk as
/// given, or built here. Nothing large is copied before it goes to the domain.
#[derive(Debug)]
pub enum Bytes<'a> {
    Elf(core::ops::Range<usize>),
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

/// What to put where in a new domain. Kernel segments carry their file bytes only: the
/// BSS after them is zero because populated memory is (`docs/toolstack.md`, POPULATE).
#[derive(Debug)]
pub struct BootImage<'a> {
    /// RAM size (bytes, a multiple of [`RAM_ALIGN`]).
    pub ram: u64,
    /// The kernel's ELF image (decompressed from a bzImage, or the file itself).
    elf: std::borrow::Cow<'a, [u8]>,
    /// (guest-physical address, bytes) to copy.
    pieces: Vec<(u64, Bytes<'a>)>,
    pub memmap: Vec<MemmapEntry>,
    /// PVH entry point.
    pub entry: u64,
    pub console_gfn: u64,
    pub store_gfn: u64,
}

impl BootImage<'_> {
    /// (guest-physical address, bytes) to copy into the domain, in layout order.
    pub fn pieces(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.pieces.iter().map(|(gpa, b)| {
            let bytes: &[u8] = match b {
                Bytes::Elf(r) => &self.elf[r.clone()],
                Bytes::Borrowed(b) => b,
                Bytes::Owned(v) => v,
            };
            (*gpa, bytes)
        })
    }
}

/// Lays out a PVH domU of `memory_bytes` (rounded up to 2 MiB).
pub fn build<'a>(
    kernel: &'a [u8],
    ramdisk: Option<&'a [u8]>,
    cmdline: &str,
    memory_bytes: u64,
    vcpus: u32,
) -> Result<BootImage<'a>, ImageError> {
    let ram = memory_bytes.div_ceil(RAM_ALIGN) * RAM_ALIGN;
    if ram < 4 << 20 {
        return Err(ImageError::TooSmall(memory_bytes >> 20));
    }
    if cmdline.len() >= CMDLINE_MAX {
        return Err(ImageError::CmdlineTooLong(cmdline.len()));
    }
    let elf = kernel_elf(kernel)?;
    let image = parse_pvh(&elf).map_err(ImageError::Elf)?;
    let entry = u64::from(image.entry);
    // The rings live in the top two pages, outside what the guest may use.
    let console_gfn = ram / PAGE - 2;
    let store_gfn = ram / PAGE - 1;
    let usable_end = console_gfn * PAGE;

    let mut pieces = Vec::new();
    for seg in image.segments.iter() {
        let (paddr, len) = (seg.paddr, seg.memsz);
        let fits = paddr
            .checked_add(len)
            .is_some_and(|e| e <= usable_end && paddr >= LEGACY_HOLE.1);
        if !fits {
            return Err(ImageError::SegmentOutsideMemory { paddr, len, ram });
        }
        // parse_pvh checked that the file bytes lie inside the image (as segment_data,
        // nothing for a segment outside it).
        let range = image.segment_range(seg).unwrap_or(0..0);
        pieces.push((paddr, Bytes::Elf(range)));
    }

    let mut modules = Vec::new();
    if let Some(rd) = ramdisk {
        let at = image.highest_paddr_end.div_ceil(PAGE) * PAGE;
        let len = rd.len() as u64;
        if at.checked_add(len).is_none_or(|end| end > usable_end) {
            return Err(ImageError::RamdiskTooLarge { len, ram });
        }
        pieces.push((at, Bytes::Borrowed(rd)));
        modules.push(HvmModlistEntry {
            paddr: at,
            size: len,
            cmdline_paddr: 0,
            reserved: 0,
        });
    }

    let acpi_cfg = acpi_tables::AcpiConfig::new(vcpus);
    let mut acpi = vec![0u8; acpi_tables::size_needed(&acpi_cfg).max(4096)];
    let layout = acpi_tables::build(&acpi_cfg, ACPI_GPA, &mut acpi).map_err(ImageError::Acpi)?;
    acpi.truncate(layout.total_len);
    pieces.push((ACPI_GPA, Bytes::Owned(acpi)));

    let map = memory_map(ram);
    let mut memmap_bytes = Vec::new();
    for e in &map {
        let t = HvmMemmapTableEntry {
            addr: e.addr,
            size: e.size,
            ty: e.ty,
            reserved: 0,
        };
        memmap_bytes.extend_from_slice(t.as_bytes());
    }
    pieces.push((MEMMAP_GPA, Bytes::Owned(memmap_bytes)));

    let mut cl = cmdline.as_bytes().to_vec();
    cl.push(0);
    pieces.push((CMDLINE_GPA, Bytes::Owned(cl)));

    let info = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_GPA },
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: layout.rsdp_gpa,
        memmap_paddr: MEMMAP_GPA,
        memmap_entries: map.len() as u32,
        reserved: 0,
    };
    let mut si = info.as_bytes().to_vec();
    si.resize((MODLIST_GPA - START_INFO_GPA) as usize, 0);
    for m in &modules {
        si.extend_from_slice(m.as_bytes());
    }
    pieces.push((START_INFO_GPA, Bytes::Owned(si)));
    // Fresh, zeroed ring pages.
    pieces.push((console_gfn * PAGE, Bytes::Owned(vec![0; PAGE as usize])));
    pieces.push((store_gfn * PAGE, Bytes::Owned(vec![0; PAGE as usize])));

    Ok(BootImage {
        ram,
        elf,
        pieces,
        memmap: map,
        entry,
        console_gfn,
        store_gfn,
    })
}

/// The parts of `data` (to go to guest-physical `gpa`) that must be copied: whole guest
/// pages that are all zero are left out, because a domain's populated memory is zero
/// already (`docs/toolstack.md`, POPULATE). Half of a Debian kernel's loadable bytes are
/// zero pages (its BSS, brk and scratch areas lie inside the file image). Runs of
/// non-zero pages come back merged, in order; a partial page at either end counts as a
/// page.
pub fn nonzero_runs(gpa: u64, data: &[u8]) -> Vec<(u64, &[u8])> {
    let mut runs: Vec<(u64, &[u8])> = Vec::new();
    // Offsets in `data` where each guest page starts (the first may be partial).
    let first = (PAGE - gpa % PAGE) % PAGE;
    let first = (first as usize).min(data.len());
    let mut start = None;
    let mut at = 0usize;
    let mut next = if first == 0 { PAGE as usize } else { first };
    while at < data.len() {
        let end = next.min(data.len());
        let zero = all_zero(&data[at..end]);
        match (zero, start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                runs.push((gpa + s as u64, &data[s..at]));
                start = None;
            }
            _ => {}
        }
        at = end;
        next = end + PAGE as usize;
    }
    if let Some(s) = start {
        runs.push((gpa + s as u64, &data[s..]));
    }
    runs
}

/// Whether `bytes` are all zero: 64-byte blocks OR-folded (which vectorizes), stopping
/// at the first block that is not (most pages that are not zero show it early).
fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |a, &b| a | b) == 0)
}

/// The e820 map: low RAM, the legacy hole (reserved, ACPI tables in NVS), RAM, and the
/// two ring pages at the top reserved.
pub fn memory_map(ram: u64) -> Vec<MemmapEntry> {
    let e = |addr, size, ty| MemmapEntry {
        addr,
        size,
        ty,
        _pad: 0,
    };
    vec![
        e(0, LEGACY_HOLE.0, E820_RAM),
        e(LEGACY_HOLE.0, ACPI_GPA - LEGACY_HOLE.0, E820_RESERVED),
        e(ACPI_GPA, LEGACY_HOLE.1 - ACPI_GPA, E820_NVS),
        e(LEGACY_HOLE.1, ram - 2 * PAGE - LEGACY_HOLE.1, E820_RAM),
        e(ram - 2 * PAGE, 2 * PAGE, E820_RESERVED),
    ]
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use xen_abi::elfnote::XEN_ELFNOTE_PHYS32_ENTRY;

    /// A minimal ELF64 PVH kernel: one PT_LOAD at 1 MiB (`code`, `memsz`) and a PT_NOTE
    /// with the Xen PHYS32_ENTRY note (when `entry` is given).
    pub fn tiny_kernel(code: &[u8], memsz: u64, entry: Option<u32>) -> Vec<u8> {
        let mut note = Vec::new();
        if let Some(entry) = entry {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
        }
        let phoff = 64u64;
        let phnum = 2u16;
        let data_off = phoff + 56 * u64::from(phnum);
        let note_off = data_off + code.len() as u64;
        let mut f = vec![0u8; 64];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&phnum.to_le_bytes());
        let ph = |ty: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[4..8].copy_from_slice(&5u32.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&addr.to_le_bytes());
            p[24..32].copy_from_slice(&addr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            p[48..56].copy_from_slice(&4u64.to_le_bytes());
            p
        };
        f.extend(ph(1, data_off, 0x10_0000, code.len() as u64, memsz));
        f.extend(ph(4, note_off, 0, note.len() as u64, note.len() as u64));
        f.extend_from_slice(code);
        f.extend_from_slice(&note);
        f
    }

    fn piece<'b>(img: &'b BootImage<'_>, gpa: u64) -> &'b [u8] {
        img.pieces().find(|(a, _)| *a == gpa).expect("piece").1
    }

    #[test]
    fn layout_matches_the_hypervisor_builder_plus_ring_pages() {
        let k = tiny_kernel(&[0x90; 100], 0x3000, Some(0x10_0040));
        let rd = vec![0xab; 5000];
        let img = build(&k, Some(&rd), "console=hvc0", 63 << 20, 2).unwrap();
        assert_eq!(img.ram, 64 << 20);
        assert_eq!(img.entry, 0x10_0040);
        assert_eq!(img.console_gfn, (64 << 8) - 2);
        assert_eq!(img.store_gfn, (64 << 8) - 1);
        // The kernel's file bytes; its BSS (to 0x3000) is left to populated memory,
        // which is zero, and nothing else is placed there.
        let kern = piece(&img, 0x10_0000);
        assert_eq!(kern, &[0x90; 100][..]);
        // Ramdisk page-aligned after the kernel's end.
        assert_eq!(piece(&img, 0x10_3000), &rd[..]);
        // Memmap: reserved ring pages at the top.
        let m = &img.memmap;
        assert_eq!(m.len(), 5);
        assert_eq!(
            (m[3].addr, m[3].addr + m[3].size, m[3].ty),
            (0x10_0000, (64 << 20) - 8192, 1)
        );
        assert_eq!(
            (m[4].addr, m[4].size, m[4].ty),
            ((64 << 20) - 8192, 8192, 2)
        );
        for w in m.windows(2) {
            assert_eq!(w[0].addr + w[0].size, w[1].addr, "contiguous, sorted");
        }
        // start_info.
        let si = piece(&img, START_INFO_GPA);
        let info = HvmStartInfo::read_from_bytes_prefix(si);
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, MODLIST_GPA);
        assert_eq!(info.cmdline_paddr, CMDLINE_GPA);
        assert_eq!(info.memmap_paddr, MEMMAP_GPA);
        assert_eq!(info.memmap_entries, 5);
        assert!(info.rsdp_paddr >= ACPI_GPA && info.rsdp_paddr < 0x10_0000);
        let ml = &si[(MODLIST_GPA - START_INFO_GPA) as usize..];
        assert_eq!(u64::from_le_bytes(ml[0..8].try_into().unwrap()), 0x10_3000);
        assert_eq!(u64::from_le_bytes(ml[8..16].try_into().unwrap()), 5000);
        assert_eq!(piece(&img, CMDLINE_GPA), b"console=hvc0\0");
        assert_eq!(&piece(&img, ACPI_GPA)[..8], b"RSD PTR ");
        assert_eq!(piece(&img, MEMMAP_GPA).len(), 5 * 24);
        // No piece overlaps another or the ring pages' neighbours beyond RAM.
        let mut spans: Vec<(u64, u64)> =
            img.pieces().map(|(a, d)| (a, a + d.len() as u64)).collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:?}");
        }
        assert!(spans.last().unwrap().1 <= img.ram);
    }

    trait ReadPrefix {
        fn read_from_bytes_prefix(b: &[u8]) -> Self;
    }
    impl ReadPrefix for HvmStartInfo {
        fn read_from_bytes_prefix(b: &[u8]) -> Self {
            <HvmStartInfo as zerocopy::FromBytes>::read_from_prefix(b)
                .unwrap()
                .0
        }
    }

    #[test]
    fn zero_pages_are_not_copied() {
        let mut d = vec![0u8; 5 * 4096];
        d[10] = 1; // page 0
        d[2 * 4096 + 5] = 2; // page 2
        d[3 * 4096] = 3; // page 3
        let runs = nonzero_runs(0x10_0000, &d);
        let spans: Vec<(u64, usize)> = runs.iter().map(|(a, b)| (*a, b.len())).collect();
        assert_eq!(spans, [(0x10_0000, 4096), (0x10_2000, 2 * 4096)]);
        assert_eq!(runs[1].1, &d[2 * 4096..4 * 4096]);
        // Not page-aligned: pages are the guest's, partial ends count.
        let runs = nonzero_runs(0x10_0ffe, &[0, 0, 7, 0, 0]);
        assert_eq!(runs, [(0x10_1000, &[7u8, 0, 0][..])]);
        let runs = nonzero_runs(0x10_0ffe, &[0, 9, 0, 0]);
        assert_eq!(runs, [(0x10_0ffe, &[0u8, 9][..])]);
        assert!(nonzero_runs(0, &[0; 9000]).is_empty());
        assert!(nonzero_runs(0, &[]).is_empty());
        // Every non-zero byte is covered, and only zeros are left out.
        let mut x = 1u32;
        let d: Vec<u8> = (0..40_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if (x >> 16).is_multiple_of(7) {
                    (x >> 24) as u8
                } else {
                    0
                }
            })
            .collect();
        let mut rebuilt = vec![0u8; d.len()];
        for (a, b) in nonzero_runs(0x1234, &d) {
            let o = (a - 0x1234) as usize;
            rebuilt[o..o + b.len()].copy_from_slice(b);
        }
        assert_eq!(rebuilt, d);
    }

    #[test]
    fn kernel_without_pvh_note_is_refused() {
        let k = tiny_kernel(&[0x90; 16], 16, None);
        let e = build(&k, None, "", 64 << 20, 1).unwrap_err();
        assert!(matches!(e, ImageError::Elf(_)), "{e}");
        assert!(check_kernel(&k).is_err());
        assert!(matches!(
            check_kernel(b"garbage").unwrap_err(),
            ImageError::UnknownFormat
        ));
    }

    #[test]
    fn things_that_do_not_fit_are_refused() {
        let k = tiny_kernel(&[0x90; 16], 16, Some(0x10_0000));
        let rd = vec![0; 8 << 20];
        assert!(matches!(
            build(&k, Some(&rd), "", 8 << 20, 1).unwrap_err(),
            ImageError::RamdiskTooLarge { .. }
        ));
        // A ramdisk that would just touch the ring pages is refused too.
        let rd = vec![0; (8 << 20) - 0x10_1000 - 4096];
        assert!(build(&k, Some(&rd), "", 8 << 20, 1).is_err());
        let rd = vec![0; (8 << 20) - 0x10_1000 - 8192];
        assert!(build(&k, Some(&rd), "", 8 << 20, 1).is_ok());
        let big = tiny_kernel(&[0x90; 16], 64 << 20, Some(0x10_0000));
        assert!(matches!(
            build(&big, None, "", 8 << 20, 1).unwrap_err(),
            ImageError::SegmentOutsideMemory { .. }
        ));
        assert!(matches!(
            build(&k, None, &"x".repeat(5000), 8 << 20, 1).unwrap_err(),
            ImageError::CmdlineTooLong(5000)
        ));
        assert!(matches!(
            build(&k, None, "", 2 << 20, 1).unwrap_err(),
            ImageError::TooSmall(2)
        ));
    }

    /// A real kernel (e.g. Debian's bzImage) given by `XL_TEST_KERNEL`; skipped without it.
    #[test]
    fn real_kernel_from_env_lays_out() {
        let Ok(path) = std::env::var("XL_TEST_KERNEL") else {
            return;
        };
        let k = std::fs::read(&path).unwrap();
        let rd = vec![0x5a; 3 << 20];
        let img = build(&k, Some(&rd), "console=hvc0", 128 << 20, 1).unwrap();
        assert!(img.entry >= 0x10_0000 && img.entry < 128 << 20);
        let (rd_at, _) = img.pieces().find(|(_, d)| d.len() == 3 << 20).unwrap();
        assert_eq!(rd_at % 4096, 0);
        assert!(rd_at + (3 << 20) <= img.console_gfn * 4096);
        eprintln!("entry {:#x}, ramdisk at {rd_at:#x}", img.entry);
    }
}
