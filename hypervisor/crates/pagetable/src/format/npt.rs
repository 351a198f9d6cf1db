//! AMD nested page tables (guest-physical to host-physical).
//!
//! The format is ordinary x86-64 paging, but the nested walk counts as a user access, so every
//! level sets US; leaves use RW and NX for permissions and the host PAT for memory types (WB is
//! all-zero). Tables are P|RW|US.

use super::{x86, Format};
use crate::{MapError, MemType, PageSize, Perm, Translation};

/// NPT format. The root goes into the VMCB's nCR3 as is.
#[derive(Clone, Copy, Debug)]
pub enum Npt {}

impl Format for Npt {
    const NAME: &'static str = "npt";
    const SIGN_EXTENDED_INPUT: bool = false;

    fn check_perm(perm: Perm) -> Result<(), MapError> {
        x86::check_perm(perm)
    }

    fn table_entry(table: u64) -> u64 {
        table | x86::P | x86::RW | x86::US
    }

    fn leaf_entry(phys: u64, size: PageSize, perm: Perm, memtype: MemType) -> u64 {
        x86::leaf_entry(phys, size, perm, memtype, true)
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Translation {
        x86::decode_leaf(entry, size)
    }

    fn is_present(entry: u64) -> bool {
        entry & x86::P != 0
    }
}
