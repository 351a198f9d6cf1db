//! ELF32/ELF64 parsing for PVH kernels: `PT_LOAD` segments and Xen ELF notes.

use core::fmt;

use xen_abi::elfnote::{elfnote_name, XEN_ELFNOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY};

use crate::fixed::FixedVec;

pub(crate) const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const EI_NIDENT: usize = 16;
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const EI_VERSION: usize = 6;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// Maximum number of non-empty `PT_LOAD` segments accepted (Linux has 4).
pub const MAX_SEGMENTS: usize = 16;
/// Maximum number of Xen notes accepted (Linux 6.1 has about 17).
pub const MAX_NOTES: usize = 48;

/// ELF class of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ElfClass {
    /// ELF32 (`EM_386`).
    Elf32,
    /// ELF64 (`EM_X86_64`).
    #[default]
    Elf64,
}

/// One loadable segment (a `PT_LOAD` program header with `p_memsz > 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Index of the program header.
    pub index: u16,
    /// Guest physical load address (`p_paddr`).
    pub paddr: u64,
    /// Virtual address (`p_vaddr`), informational only.
    pub vaddr: u64,
    /// Offset of the file bytes (`p_offset`).
    pub offset: u64,
    /// Bytes taken from the file (`p_filesz`).
    pub filesz: u64,
    /// Bytes occupied in memory (`p_memsz`); the tail after `filesz` is zero-filled.
    pub memsz: u64,
    /// `PF_*` flags (`PF_X` = 1, `PF_W` = 2, `PF_R` = 4).
    pub flags: u32,
}

impl Segment {
    /// End of the segment in guest physical memory (exclusive). Never overflows: checked
    /// during parsing.
    pub const fn paddr_end(&self) -> u64 {
        self.paddr.saturating_add(self.memsz)
    }
    /// Number of bytes to zero-fill after the file bytes.
    pub const fn zero_len(&self) -> u64 {
        self.memsz.saturating_sub(self.filesz)
    }
}

/// A Xen ELF note: its type and raw descriptor bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNote<'a> {
    /// `XEN_ELFNOTE_*` type.
    pub ty: u32,
    /// Descriptor bytes.
    pub desc: &'a [u8],
}

impl<'a> XenNote<'a> {
    /// The descriptor as a little-endian integer, if it is 1, 2, 4 or 8 bytes long.
    pub fn value(&self) -> Option<u64> {
        let mut b = [0u8; 8];
        match self.desc.len() {
            1 | 2 | 4 | 8 => {
                b.get_mut(..self.desc.len())?.copy_from_slice(self.desc);
                Some(u64::from_le_bytes(b))
            }
            _ => None,
        }
    }

    /// The descriptor as a string (up to the first NUL), if it is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        let end = self
            .desc
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.desc.len());
        core::str::from_utf8(self.desc.get(..end)?).ok()
    }

    /// The Xen name of the note type, if known.
    pub fn name(&self) -> Option<&'static str> {
        elfnote_name(self.ty)
    }
}

/// A parsed PVH kernel image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhImage<'a> {
    /// 32-bit physical entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub entry: u32,
    /// ELF class.
    pub class: ElfClass,
    /// Loadable segments, in program-header order.
    pub segments: FixedVec<Segment, MAX_SEGMENTS>,
    /// Lowest `p_paddr` of any segment.
    pub lowest_paddr: u64,
    /// Highest `p_paddr + p_memsz` of any segment (exclusive).
    pub highest_paddr_end: u64,
    /// All Xen notes, in file order.
    pub notes: FixedVec<XenNote<'a>, MAX_NOTES>,
    image: &'a [u8],
}

impl<'a> PvhImage<'a> {
    /// The file bytes of `seg` (`filesz` bytes at `offset`), or an empty slice for a segment
    /// not from this image.
    pub fn segment_data(&self, seg: &Segment) -> &'a [u8] {
        self.segment_range(seg).map_or(&[], |r| &self.image[r])
    }

    /// Where a segment's file bytes lie in the image; None if outside it.
    pub fn segment_range(&self, seg: &Segment) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(seg.offset).ok()?;
        let end = start.checked_add(usize::try_from(seg.filesz).ok()?)?;
        (end <= self.image.len()).then_some(start..end)
    }

    /// The first note of type `ty`.
    pub fn note(&self, ty: u32) -> Option<&XenNote<'a>> {
        self.notes.iter().find(|n| n.ty == ty)
    }

    /// `XEN_ELFNOTE_SUPPORTED_FEATURES` as a `XENFEAT_*` bitmap: submap 0, the
    /// descriptor's first little-endian u32, OR-ed over every such note as Xen does. As in
    /// Xen, a descriptor that is not a whole number of u32s contributes nothing (but the
    /// note still counts as present); `None` when the image has no such note.
    pub fn supported_features(&self) -> Option<u32> {
        let ty = xen_abi::elfnote::XEN_ELFNOTE_SUPPORTED_FEATURES;
        self.notes
            .iter()
            .filter(|n| n.ty == ty)
            .fold(None, |acc, n| {
                let submap0 = match n.desc.get(..4) {
                    Some(&[a, b, c, d]) if n.desc.len() % 4 == 0 => {
                        u32::from_le_bytes([a, b, c, d])
                    }
                    _ => 0,
                };
                Some(acc.unwrap_or(0) | submap0)
            })
    }

    /// Whether the kernel may be built as the control domain, by Xen's rule: unless it
    /// has a `SUPPORTED_FEATURES` note, in which case only if the note has `XENFEAT_dom0`.
    /// (Xen refuses to build dom0 from a kernel whose note lacks it; ferrovisor runs such
    /// a kernel as an unprivileged domain 0 instead.)
    pub fn dom0_capable(&self) -> bool {
        let dom0 = xen_abi::features::xenfeat_bit(xen_abi::features::XENFEAT_DOM0);
        self.supported_features().is_none_or(|f| f & dom0 != 0)
    }

    /// `XEN_ELFNOTE_HYPERCALL_PAGE` (a virtual address), if present.
    pub fn hypercall_page(&self) -> Option<u64> {
        self.note(xen_abi::elfnote::XEN_ELFNOTE_HYPERCALL_PAGE)
            .and_then(XenNote::value)
    }

    /// `XEN_ELFNOTE_VIRT_BASE`, if present.
    pub fn virt_base(&self) -> Option<u64> {
        self.note(xen_abi::elfnote::XEN_ELFNOTE_VIRT_BASE)
            .and_then(XenNote::value)
    }

    /// `XEN_ELFNOTE_GUEST_OS` (e.g. `"linux"`), if present.
    pub fn guest_os(&self) -> Option<&'a str> {
        self.note(xen_abi::elfnote::XEN_ELFNOTE_GUEST_OS)
            .and_then(|n| n.as_str())
    }

    /// Copies the image into guest memory; see [`load_segments`].
    pub fn load<E, F>(&self, dest: F) -> Result<(), E>
    where
        F: FnMut(u64, &[u8], u64) -> Result<(), E>,
    {
        load_segments(self, dest)
    }
}

/// Why an image could not be parsed as a PVH kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The file is shorter than the ELF header.
    TooShort {
        /// File length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The file does not start with `\x7fELF`.
    BadMagic {
        /// The first bytes found.
        found: [u8; 4],
    },
    /// `EI_CLASS` is neither ELF32 nor ELF64.
    BadClass {
        /// `EI_CLASS`.
        class: u8,
    },
    /// The image is not little-endian.
    BadEndianness {
        /// `EI_DATA`.
        data: u8,
    },
    /// `EI_VERSION` or `e_version` is not 1.
    BadVersion {
        /// The version found.
        version: u32,
    },
    /// `e_type` is not `ET_EXEC`.
    BadType {
        /// `e_type`.
        e_type: u16,
    },
    /// `e_machine` is neither x86-64 nor i386 (either is accepted with either class).
    BadMachine {
        /// The class.
        class: ElfClass,
        /// `e_machine`.
        machine: u16,
    },
    /// `e_phentsize` is not the size of a program header of this class.
    BadPhentsize {
        /// `e_phentsize`.
        phentsize: u16,
        /// Expected size.
        expected: u16,
    },
    /// The program-header table lies (partly) outside the file.
    PhdrsOutOfFile {
        /// `e_phoff`.
        phoff: u64,
        /// `e_phnum`.
        phnum: u16,
        /// File length.
        file_len: usize,
    },
    /// There is no `PT_LOAD` segment with a non-zero size.
    NoLoadSegments,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments {
        /// The limit.
        max: usize,
    },
    /// `p_offset + p_filesz` overflows.
    SegmentOffsetOverflow {
        /// Program-header index.
        index: u16,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
    },
    /// A segment's file bytes lie (partly) outside the file.
    SegmentOutOfFile {
        /// Program-header index.
        index: u16,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// File length.
        file_len: usize,
    },
    /// `p_filesz > p_memsz`.
    FileszExceedsMemsz {
        /// Program-header index.
        index: u16,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// `p_paddr + p_memsz` overflows.
    SegmentAddressOverflow {
        /// Program-header index.
        index: u16,
        /// `p_paddr`.
        paddr: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// Two loadable segments overlap in guest physical memory.
    OverlappingSegments {
        /// First program-header index.
        first: u16,
        /// Second program-header index.
        second: u16,
        /// Start of the overlap.
        paddr: u64,
    },
    /// A note entry's header, name or descriptor runs past its `PT_NOTE` segment.
    MalformedNote {
        /// Program-header index of the note segment.
        index: u16,
        /// File offset of the bad note entry.
        offset: u64,
    },
    /// More than [`MAX_NOTES`] Xen notes.
    TooManyNotes {
        /// The limit.
        max: usize,
    },
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note: not a PVH kernel.
    NoPvhNote,
    /// The `PHYS32_ENTRY` descriptor is neither 4 nor 8 bytes.
    BadEntryNoteSize {
        /// Descriptor length.
        len: usize,
    },
    /// The 8-byte `PHYS32_ENTRY` value does not fit in 32 bits.
    EntryNot32Bit {
        /// The value.
        entry: u64,
    },
    /// The entry point is not inside any loadable segment.
    EntryOutsideSegments {
        /// The entry point.
        entry: u32,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len, needed } => {
                write!(f, "image is {len} bytes, too short for an ELF header ({needed} bytes)")
            }
            Self::BadMagic { found } => write!(f, "not an ELF image: magic {found:02x?}"),
            Self::BadClass { class } => write!(f, "unsupported ELF class {class}"),
            Self::BadEndianness { data } => {
                write!(f, "unsupported ELF data encoding {data}: only little-endian is supported")
            }
            Self::BadVersion { version } => write!(f, "unsupported ELF version {version}"),
            Self::BadType { e_type } => write!(f, "ELF type {e_type} is not ET_EXEC"),
            Self::BadMachine { class, machine } => {
                write!(f, "ELF machine {machine} ({class:?}) is not x86 (i386 or x86-64)")
            }
            Self::BadPhentsize { phentsize, expected } => {
                write!(f, "program header entry size {phentsize}, expected {expected}")
            }
            Self::PhdrsOutOfFile { phoff, phnum, file_len } => write!(
                f,
                "{phnum} program headers at offset {phoff:#x} do not fit in the {file_len}-byte image"
            ),
            Self::NoLoadSegments => write!(f, "image has no loadable segment"),
            Self::TooManySegments { max } => write!(f, "image has more than {max} loadable segments"),
            Self::SegmentOffsetOverflow { index, offset, filesz } => write!(
                f,
                "segment {index}: offset {offset:#x} + file size {filesz:#x} overflows"
            ),
            Self::SegmentOutOfFile { index, offset, filesz, file_len } => write!(
                f,
                "segment {index}: bytes {offset:#x}+{filesz:#x} lie outside the {file_len}-byte image"
            ),
            Self::FileszExceedsMemsz { index, filesz, memsz } => write!(
                f,
                "segment {index}: file size {filesz:#x} exceeds memory size {memsz:#x}"
            ),
            Self::SegmentAddressOverflow { index, paddr, memsz } => write!(
                f,
                "segment {index}: physical address {paddr:#x} + size {memsz:#x} overflows"
            ),
            Self::OverlappingSegments { first, second, paddr } => write!(
                f,
                "segments {first} and {second} overlap at physical address {paddr:#x}"
            ),
            Self::MalformedNote { index, offset } => {
                write!(f, "note segment {index}: malformed note at offset {offset:#x}")
            }
            Self::TooManyNotes { max } => write!(f, "image has more than {max} Xen notes"),
            Self::NoPvhNote => {
                write!(f, "kernel has no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel")
            }
            Self::BadEntryNoteSize { len } => {
                write!(f, "XEN_ELFNOTE_PHYS32_ENTRY descriptor is {len} bytes, expected 4 or 8")
            }
            Self::EntryNot32Bit { entry } => {
                write!(f, "XEN_ELFNOTE_PHYS32_ENTRY {entry:#x} does not fit in 32 bits")
            }
            Self::EntryOutsideSegments { entry } => {
                write!(f, "entry point {entry:#x} is not inside any loadable segment")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checked little-endian readers.
// ---------------------------------------------------------------------------------------

fn bytes<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    buf.get(off..end)?.try_into().ok()
}
fn rd_u16(buf: &[u8], off: usize) -> Option<u16> {
    bytes(buf, off).map(u16::from_le_bytes)
}
fn rd_u32(buf: &[u8], off: usize) -> Option<u32> {
    bytes(buf, off).map(u32::from_le_bytes)
}
fn rd_u64(buf: &[u8], off: usize) -> Option<u64> {
    bytes(buf, off).map(u64::from_le_bytes)
}
/// A word of the class's natural size (`Elf32_Addr`/`Elf32_Off` or the 64-bit ones).
fn rd_word(buf: &[u8], off: usize, class: ElfClass) -> Option<u64> {
    match class {
        ElfClass::Elf32 => rd_u32(buf, off).map(u64::from),
        ElfClass::Elf64 => rd_u64(buf, off),
    }
}

/// Layout of the class-dependent header fields.
struct Layout {
    ehdr_size: usize,
    phoff: usize,
    phentsize_off: usize,
    phnum_off: usize,
    phdr_size: u16,
    // Offsets within a program header.
    p_offset: usize,
    p_vaddr: usize,
    p_paddr: usize,
    p_filesz: usize,
    p_memsz: usize,
    p_flags: usize,
    p_align: usize,
}

const LAYOUT32: Layout = Layout {
    ehdr_size: 52,
    phoff: 28,
    phentsize_off: 42,
    phnum_off: 44,
    phdr_size: 32,
    p_offset: 4,
    p_vaddr: 8,
    p_paddr: 12,
    p_filesz: 16,
    p_memsz: 20,
    p_flags: 24,
    p_align: 28,
};

const LAYOUT64: Layout = Layout {
    ehdr_size: 64,
    phoff: 32,
    phentsize_off: 54,
    phnum_off: 56,
    phdr_size: 56,
    p_offset: 8,
    p_vaddr: 16,
    p_paddr: 24,
    p_filesz: 32,
    p_memsz: 40,
    p_flags: 4,
    p_align: 48,
};

/// A program header, widened to 64 bits.
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// Parses a PVH kernel image: an ELF64 (x86-64) or ELF32 (i386) executable carrying a
/// `XEN_ELFNOTE_PHYS32_ENTRY` note. Bytes after the ELF contents (e.g. Linux's relocation
/// table) are ignored.
pub fn parse_pvh(image: &[u8]) -> Result<PvhImage<'_>, LoadError> {
    let file_len = image.len();
    let ident: [u8; EI_NIDENT] = bytes(image, 0).ok_or(LoadError::TooShort {
        len: file_len,
        needed: EI_NIDENT,
    })?;
    let magic = [ident[0], ident[1], ident[2], ident[3]];
    if magic != ELF_MAGIC {
        return Err(LoadError::BadMagic { found: magic });
    }
    // The class says only how the headers are laid out; the machine is checked on its own
    // (a 64-bit kernel is often shipped as ELF32 with machine x86-64, and Xen's PVH loader
    // takes it, since a PVH entry runs in 32-bit mode whatever the image says).
    let (class, lay) = match ident[EI_CLASS] {
        ELFCLASS32 => (ElfClass::Elf32, &LAYOUT32),
        ELFCLASS64 => (ElfClass::Elf64, &LAYOUT64),
        class => return Err(LoadError::BadClass { class }),
    };
    if ident[EI_DATA] != ELFDATA2LSB {
        return Err(LoadError::BadEndianness {
            data: ident[EI_DATA],
        });
    }
    if u32::from(ident[EI_VERSION]) != EV_CURRENT {
        return Err(LoadError::BadVersion {
            version: ident[EI_VERSION].into(),
        });
    }
    if file_len < lay.ehdr_size {
        return Err(LoadError::TooShort {
            len: file_len,
            needed: lay.ehdr_size,
        });
    }
    let short = LoadError::TooShort {
        len: file_len,
        needed: lay.ehdr_size,
    };
    let e_type = rd_u16(image, 16).ok_or(short)?;
    let machine = rd_u16(image, 18).ok_or(short)?;
    let version = rd_u32(image, 20).ok_or(short)?;
    let phoff = rd_word(image, lay.phoff, class).ok_or(short)?;
    let phentsize = rd_u16(image, lay.phentsize_off).ok_or(short)?;
    let phnum = rd_u16(image, lay.phnum_off).ok_or(short)?;

    if version != EV_CURRENT {
        return Err(LoadError::BadVersion { version });
    }
    if e_type != ET_EXEC {
        return Err(LoadError::BadType { e_type });
    }
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(LoadError::BadMachine { class, machine });
    }
    if phentsize != lay.phdr_size {
        return Err(LoadError::BadPhentsize {
            phentsize,
            expected: lay.phdr_size,
        });
    }
    let phdrs_out = LoadError::PhdrsOutOfFile {
        phoff,
        phnum,
        file_len,
    };
    let phoff_us = usize::try_from(phoff).map_err(|_| phdrs_out)?;
    let table_len = usize::from(phnum)
        .checked_mul(usize::from(phentsize))
        .ok_or(phdrs_out)?;
    let table_end = phoff_us.checked_add(table_len).ok_or(phdrs_out)?;
    if table_end > file_len {
        return Err(phdrs_out);
    }

    let read_phdr = |i: u16| -> Option<Phdr> {
        let base = phoff_us.checked_add(usize::from(i).checked_mul(usize::from(phentsize))?)?;
        let at = |o: usize| base.checked_add(o);
        Some(Phdr {
            p_type: rd_u32(image, base)?,
            flags: rd_u32(image, at(lay.p_flags)?)?,
            offset: rd_word(image, at(lay.p_offset)?, class)?,
            vaddr: rd_word(image, at(lay.p_vaddr)?, class)?,
            paddr: rd_word(image, at(lay.p_paddr)?, class)?,
            filesz: rd_word(image, at(lay.p_filesz)?, class)?,
            memsz: rd_word(image, at(lay.p_memsz)?, class)?,
            align: rd_word(image, at(lay.p_align)?, class)?,
        })
    };

    let mut segments = FixedVec::<Segment, MAX_SEGMENTS>::new();
    let mut notes = FixedVec::<XenNote<'_>, MAX_NOTES>::new();

    for index in 0..phnum {
        // The table was bounds-checked above, so this cannot fail; stay defensive anyway.
        let ph = read_phdr(index).ok_or(phdrs_out)?;
        if ph.p_type != PT_LOAD && ph.p_type != PT_NOTE {
            continue;
        }
        let file_range = file_range(index, ph.offset, ph.filesz, file_len)?;
        if ph.p_type == PT_NOTE {
            parse_notes(image, file_range, index, ph.offset, ph.align, &mut notes)?;
            continue;
        }
        if ph.filesz > ph.memsz {
            return Err(LoadError::FileszExceedsMemsz {
                index,
                filesz: ph.filesz,
                memsz: ph.memsz,
            });
        }
        if ph.memsz == 0 {
            continue;
        }
        let end = ph
            .paddr
            .checked_add(ph.memsz)
            .ok_or(LoadError::SegmentAddressOverflow {
                index,
                paddr: ph.paddr,
                memsz: ph.memsz,
            })?;
        let seg = Segment {
            index,
            paddr: ph.paddr,
            vaddr: ph.vaddr,
            offset: ph.offset,
            filesz: ph.filesz,
            memsz: ph.memsz,
            flags: ph.flags,
        };
        for other in segments.iter() {
            if seg.paddr < other.paddr_end() && other.paddr < end {
                return Err(LoadError::OverlappingSegments {
                    first: other.index,
                    second: index,
                    paddr: seg.paddr.max(other.paddr),
                });
            }
        }
        segments
            .push(seg)
            .map_err(|_| LoadError::TooManySegments { max: MAX_SEGMENTS })?;
    }

    if segments.is_empty() {
        return Err(LoadError::NoLoadSegments);
    }
    let lowest_paddr = segments.iter().map(|s| s.paddr).min().unwrap_or(0);
    let highest_paddr_end = segments.iter().map(Segment::paddr_end).max().unwrap_or(0);

    let entry_note = notes
        .iter()
        .find(|n| n.ty == XEN_ELFNOTE_PHYS32_ENTRY)
        .ok_or(LoadError::NoPvhNote)?;
    let entry = match entry_note.desc.len() {
        4 | 8 => {
            let v = entry_note.value().ok_or(LoadError::BadEntryNoteSize {
                len: entry_note.desc.len(),
            })?;
            u32::try_from(v).map_err(|_| LoadError::EntryNot32Bit { entry: v })?
        }
        len => return Err(LoadError::BadEntryNoteSize { len }),
    };
    let e = u64::from(entry);
    if !segments.iter().any(|s| s.paddr <= e && e < s.paddr_end()) {
        return Err(LoadError::EntryOutsideSegments { entry });
    }

    Ok(PvhImage {
        entry,
        class,
        segments,
        lowest_paddr,
        highest_paddr_end,
        notes,
        image,
    })
}

/// Checks that `[offset, offset + filesz)` lies in the file and returns it as `usize`s.
fn file_range(
    index: u16,
    offset: u64,
    filesz: u64,
    file_len: usize,
) -> Result<(usize, usize), LoadError> {
    let end = offset
        .checked_add(filesz)
        .ok_or(LoadError::SegmentOffsetOverflow {
            index,
            offset,
            filesz,
        })?;
    let out = LoadError::SegmentOutOfFile {
        index,
        offset,
        filesz,
        file_len,
    };
    let start = usize::try_from(offset).map_err(|_| out)?;
    let end = usize::try_from(end).map_err(|_| out)?;
    if end > file_len {
        return Err(out);
    }
    Ok((start, end))
}

fn align_up(v: usize, align: usize) -> Option<usize> {
    // `align` is 4 or 8.
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Walks the note entries of one `PT_NOTE` segment, keeping those owned by `"Xen"`.
fn parse_notes<'a>(
    image: &'a [u8],
    (start, end): (usize, usize),
    index: u16,
    seg_offset: u64,
    p_align: u64,
    notes: &mut FixedVec<XenNote<'a>, MAX_NOTES>,
) -> Result<(), LoadError> {
    let data = image.get(start..end).unwrap_or(&[]);
    let align = if p_align == 8 { 8 } else { 4 };
    let mut pos = 0usize;
    while pos < data.len() {
        let bad = LoadError::MalformedNote {
            index,
            offset: seg_offset.saturating_add(pos as u64),
        };
        let namesz = rd_u32(data, pos).ok_or(bad)?;
        let descsz = rd_u32(data, pos.checked_add(4).ok_or(bad)?).ok_or(bad)?;
        let ty = rd_u32(data, pos.checked_add(8).ok_or(bad)?).ok_or(bad)?;
        let name_start = pos.checked_add(12).ok_or(bad)?;
        let name_end = name_start
            .checked_add(usize::try_from(namesz).map_err(|_| bad)?)
            .ok_or(bad)?;
        let name = data.get(name_start..name_end).ok_or(bad)?;
        let desc_start = align_up(name_end, align).ok_or(bad)?;
        let desc_end = desc_start
            .checked_add(usize::try_from(descsz).map_err(|_| bad)?)
            .ok_or(bad)?;
        let desc = data.get(desc_start..desc_end).ok_or(bad)?;
        if trim_nul(name) == XEN_ELFNOTE_NAME {
            notes
                .push(XenNote { ty, desc })
                .map_err(|_| LoadError::TooManyNotes { max: MAX_NOTES })?;
        }
        // Padding after the last descriptor may be cut off by the segment end.
        pos = align_up(desc_end, align).ok_or(bad)?;
    }
    Ok(())
}

fn trim_nul(name: &[u8]) -> &[u8] {
    let mut n = name;
    while let [rest @ .., 0] = n {
        n = rest;
    }
    n
}

/// Copies every segment of `img` into guest memory through `dest`.
///
/// `dest(paddr, bytes, zero_len)` must write `bytes` at guest physical address `paddr` and
/// then zero `zero_len` bytes right after them (the BSS tail, `p_memsz - p_filesz`). It is
/// called once per segment in program-header order; the first error stops the load.
pub fn load_segments<E, F>(img: &PvhImage<'_>, mut dest: F) -> Result<(), E>
where
    F: FnMut(u64, &[u8], u64) -> Result<(), E>,
{
    for seg in img.segments.iter() {
        dest(seg.paddr, img.segment_data(seg), seg.zero_len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
