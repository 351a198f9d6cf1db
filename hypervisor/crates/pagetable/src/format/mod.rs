//! Entry formats: how a [`Perm`]/[`MemType`]/address triple becomes 64 entry bits.
//!
//! All three formats share the 4-level, 512-entry, 9-bits-per-level shape, the 12..51 address
//! field and the large-page bit 7 at levels 2 and 3; they differ in permission, memory-type and
//! presence bits. A format is a zero-sized type: the engine is monomorphised per format.

mod ept;
mod host;
mod npt;
mod x86;

pub use ept::Ept;
pub use host::Host;
pub use npt::Npt;
pub use x86::PAT_MSR_VALUE;

use crate::{MapError, MemType, PageSize, Perm, Translation};

/// Address field of every entry (bits 12..51). Large leaves use only its upper part; the
/// engine masks the rest with the page size.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// First of the four leaf bits (52..55) that hold the software type
/// ([`Translation::kind`]): ignored by the hardware walker in EPT, NPT and IA-32e leaves
/// alike (EPT uses bit 63 only for suppress-#VE; x86 paging bits 59..62 only for protection
/// keys), and outside [`ADDR_MASK`].
pub const KIND_SHIFT: u32 = 52;
/// Largest software type.
pub const KIND_MAX: u8 = 0xf;

/// The software-type bits for `kind` (masked to [`KIND_MAX`]).
pub const fn kind_bits(kind: u8) -> u64 {
    ((kind & KIND_MAX) as u64) << KIND_SHIFT
}

/// The software type of a leaf entry.
pub const fn entry_kind(entry: u64) -> u8 {
    ((entry >> KIND_SHIFT) as u8) & KIND_MAX
}

/// Large-page bit (PS in x86 paging, bit 7 in EPT) at levels 2 and 3.
pub const LARGE: u64 = 1 << 7;

/// One page-table entry format.
pub trait Format {
    /// Short name for diagnostics.
    const NAME: &'static str;

    /// `true` if input addresses are canonical virtual addresses (sign-extended from bit 47);
    /// `false` if they are guest-physical addresses that must be below 2^48.
    const SIGN_EXTENDED_INPUT: bool;

    /// Rejects permission sets the format cannot express exactly.
    fn check_perm(perm: Perm) -> Result<(), MapError>;

    /// Entry pointing at the next-level table at `table`, granting everything so that leaves
    /// alone decide permissions.
    fn table_entry(table: u64) -> u64;

    /// Leaf entry for a page of `size` at `phys` (aligned to `size`; `perm` already checked).
    fn leaf_entry(phys: u64, size: PageSize, perm: Perm, memtype: MemType) -> u64;

    /// Inverse of [`leaf_entry`](Self::leaf_entry); `phys` is the page base.
    fn decode_leaf(entry: u64, size: PageSize) -> Translation;

    /// Whether the hardware walker would use the entry at all.
    fn is_present(entry: u64) -> bool;

    /// Whether a present entry at `level` (1..=4) maps a page rather than a table.
    fn is_leaf(entry: u64, level: u8) -> bool {
        level == 1 || (level <= 3 && entry & LARGE != 0)
    }

    /// Physical address of the table a present non-leaf entry points at.
    fn table_addr(entry: u64) -> u64 {
        entry & ADDR_MASK
    }
}

/// Base address of the page of `size` that a leaf entry maps.
fn leaf_addr(entry: u64, size: PageSize) -> u64 {
    entry & ADDR_MASK & !(size.bytes() - 1)
}
