//! The one error type of this crate; every variant carries the offending values.

use core::fmt;

use crate::{PageSize, Perm};

/// Why a page-table operation was refused.
///
/// Validation errors (everything but [`OutOfMemory`](Self::OutOfMemory)) are detected before any
/// entry is written, so the tables are unchanged when they are returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// `addr` (input or output address) is not aligned to `size`.
    Misaligned { addr: u64, size: PageSize },
    /// A range length is zero, not a multiple of 4 KiB, or makes `addr + len` wrap.
    BadLength { addr: u64, len: u64 },
    /// Host format only: `addr` is not a canonical 48-bit virtual address, or a range crosses
    /// the non-canonical hole (then `addr` is the first non-canonical address in it).
    NonCanonical { addr: u64 },
    /// EPT/NPT only: guest-physical `addr` is at or above 2^48, beyond a 4-level walk.
    AddressTooLarge { addr: u64 },
    /// Output address `phys` does not fit the 52-bit physical address field.
    PhysTooLarge { phys: u64 },
    /// The format cannot express `perm` (see [`Format::check_perm`](crate::Format)).
    UnsupportedPerm { perm: Perm },
    /// A leaf of `size` starting at `addr` already maps (part of) the requested page.
    AlreadyMapped { addr: u64, size: PageSize },
    /// The `size` region at `addr` is already split into smaller mappings, so it can be neither
    /// mapped as one page nor unmapped as one.
    SmallerPagesPresent { addr: u64, size: PageSize },
    /// Nothing is mapped at `addr`.
    NotMapped { addr: u64 },
    /// The [`FrameSource`](crate::FrameSource) had no frame for a new table.
    OutOfMemory,
    /// A software type above [`KIND_MAX`](crate::KIND_MAX).
    BadKind { kind: u8 },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Misaligned { addr, size } => {
                write!(f, "address {addr:#x} is not {size} aligned")
            }
            MapError::BadLength { addr, len } => {
                write!(f, "bad range length {len:#x} at {addr:#x}")
            }
            MapError::NonCanonical { addr } => {
                write!(f, "address {addr:#x} is not canonical")
            }
            MapError::AddressTooLarge { addr } => {
                write!(f, "guest-physical address {addr:#x} is beyond 48 bits")
            }
            MapError::PhysTooLarge { phys } => {
                write!(f, "physical address {phys:#x} is beyond 52 bits")
            }
            MapError::UnsupportedPerm { perm } => {
                write!(f, "permissions {perm} cannot be expressed in this format")
            }
            MapError::AlreadyMapped { addr, size } => {
                write!(f, "{size} page at {addr:#x} is already mapped")
            }
            MapError::SmallerPagesPresent { addr, size } => {
                write!(f, "{size} region at {addr:#x} contains smaller mappings")
            }
            MapError::NotMapped { addr } => write!(f, "address {addr:#x} is not mapped"),
            MapError::OutOfMemory => f.write_str("out of memory for page-table frames"),
            MapError::BadKind { kind } => write!(f, "software type {kind} out of range"),
        }
    }
}
