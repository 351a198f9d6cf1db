//! Format-independent mapping attributes: permissions, memory types, page sizes.
//!
//! Callers describe *what* a mapping should allow; each [`Format`](crate::Format) decides how
//! (or whether) that can be expressed in its entry bits.

use core::fmt;
use core::ops::{BitAnd, BitOr};

/// Access permissions of a mapping, as a small bit set (`Perm::R | Perm::W`).
///
/// Not every format can express every set: x86 host paging and NPT cannot make a page
/// non-readable, and EPT forbids write-without-read. [`Format::check_perm`](crate::Format)
/// rejects such sets with [`MapError::UnsupportedPerm`](crate::MapError) instead of silently
/// widening them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perm(u8);

impl Perm {
    /// No access (never a valid mapping; useful as a starting value).
    pub const NONE: Perm = Perm(0);
    /// Read.
    pub const R: Perm = Perm(1);
    /// Write.
    pub const W: Perm = Perm(2);
    /// Execute (instruction fetch).
    pub const X: Perm = Perm(4);
    /// Read + write (data).
    pub const RW: Perm = Perm(3);
    /// Read + execute (code).
    pub const RX: Perm = Perm(5);
    /// Everything (what guest RAM usually gets in a p2m).
    pub const RWX: Perm = Perm(7);

    /// Builds a set from three booleans.
    pub const fn new(read: bool, write: bool, execute: bool) -> Perm {
        Perm(read as u8 | (write as u8) << 1 | (execute as u8) << 2)
    }

    /// True if every permission in `other` is also in `self`.
    pub const fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no permission is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Read permission.
    pub const fn read(self) -> bool {
        self.contains(Perm::R)
    }

    /// Write permission.
    pub const fn write(self) -> bool {
        self.contains(Perm::W)
    }

    /// Execute permission.
    pub const fn execute(self) -> bool {
        self.contains(Perm::X)
    }
}

impl BitOr for Perm {
    type Output = Perm;
    fn bitor(self, rhs: Perm) -> Perm {
        Perm(self.0 | rhs.0)
    }
}

impl BitAnd for Perm {
    type Output = Perm;
    fn bitand(self, rhs: Perm) -> Perm {
        Perm(self.0 & rhs.0)
    }
}

/// Printed as `rwx`, with `-` for missing permissions (like `ls -l`).
impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on: bool, ch: char| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read(), 'r'),
            c(self.write(), 'w'),
            c(self.execute(), 'x')
        )
    }
}

impl fmt::Debug for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Perm({self})")
    }
}

/// Memory type of a mapping (the five x86 types software can request).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemType {
    /// UC: MMIO registers.
    Uncacheable,
    /// WC: frame buffers.
    WriteCombining,
    /// WT.
    WriteThrough,
    /// WP.
    WriteProtect,
    /// WB: ordinary RAM.
    WriteBack,
}

impl MemType {
    /// The architectural encoding shared by the PAT MSR, MTRRs and EPT bits 3..5.
    pub const fn encoding(self) -> u64 {
        match self {
            MemType::Uncacheable => 0,
            MemType::WriteCombining => 1,
            MemType::WriteThrough => 4,
            MemType::WriteProtect => 5,
            MemType::WriteBack => 6,
        }
    }

    /// Inverse of [`encoding`](Self::encoding). Reserved values and UC- (7) read as
    /// `Uncacheable`, the strongest type, so a decode never claims more caching than exists.
    pub const fn from_encoding(value: u64) -> MemType {
        match value {
            1 => MemType::WriteCombining,
            4 => MemType::WriteThrough,
            5 => MemType::WriteProtect,
            6 => MemType::WriteBack,
            _ => MemType::Uncacheable,
        }
    }
}

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemType::Uncacheable => "UC",
            MemType::WriteCombining => "WC",
            MemType::WriteThrough => "WT",
            MemType::WriteProtect => "WP",
            MemType::WriteBack => "WB",
        })
    }
}

/// Size of one leaf mapping. Ordered small to large.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PageSize {
    /// 4 KiB, a PTE (level 1).
    Size4K,
    /// 2 MiB, a PDE with the large-page bit (level 2).
    Size2M,
    /// 1 GiB, a PDPTE with the large-page bit (level 3). Check CPUID before using it.
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << (12 + 9 * (self.level() as u32 - 1))
    }

    /// Table level holding a leaf of this size (1 = page table, 4 = PML4).
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }

    /// Size of a leaf stored at `level`; `None` for the PML4, which cannot hold leaves.
    pub const fn from_level(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4K => "4 KiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size1G => "1 GiB",
        })
    }
}

/// What one address maps to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// Physical (host) address corresponding to the queried address, offset included.
    pub phys: u64,
    /// Size of the leaf that holds the mapping.
    pub size: PageSize,
    /// Permissions of that leaf.
    pub perm: Perm,
    /// Memory type of that leaf.
    pub memtype: MemType,
    /// The software type stored with the leaf ([`map_kind`](crate::PageTable::map_kind)),
    /// 0 for plain mappings.
    pub kind: u8,
}
