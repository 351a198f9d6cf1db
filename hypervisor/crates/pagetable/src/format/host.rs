//! IA-32e (4-level) paging for the hypervisor's own address space.
//!
//! Leaves are supervisor-only (US clear) and non-global (G clear: the hypervisor switches CR3
//! rarely, and global pages would need CR4.PGE toggling to flush). Non-executable leaves set
//! NX, which requires EFER.NXE. Tables are P|RW so that leaves alone decide permissions.

use super::{x86, Format};
use crate::{MapError, MemType, PageSize, Perm, Translation};

/// Host (CR3) page-table format. The root goes straight into CR3 (PCD/PWT clear).
#[derive(Clone, Copy, Debug)]
pub enum Host {}

impl Format for Host {
    const NAME: &'static str = "host";
    const SIGN_EXTENDED_INPUT: bool = true;

    fn check_perm(perm: Perm) -> Result<(), MapError> {
        x86::check_perm(perm)
    }

    fn table_entry(table: u64) -> u64 {
        table | x86::P | x86::RW
    }

    fn leaf_entry(phys: u64, size: PageSize, perm: Perm, memtype: MemType) -> u64 {
        x86::leaf_entry(phys, size, perm, memtype, false)
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Translation {
        x86::decode_leaf(entry, size)
    }

    fn is_present(entry: u64) -> bool {
        entry & x86::P != 0
    }
}
