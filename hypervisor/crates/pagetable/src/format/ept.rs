//! Intel extended page tables (guest-physical to host-physical).
//!
//! Bits: R (0), W (1), X (2) — an entry is present if any is set; leaf memory type in 3..5;
//! ignore-PAT (6) left clear so the guest's PAT still combines with it; large page (7) at
//! levels 2/3; accessed/dirty (8/9) left clear, so enabling A/D in the EPTP makes the CPU set
//! them; user-execute (10, MBEC) unused. Tables are R|W|X.

use super::{leaf_addr, Format, LARGE};
use crate::{MapError, MemType, PageSize, Perm, Translation};

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const MEMTYPE_SHIFT: u32 = 3;

/// EPT format.
#[derive(Clone, Copy, Debug)]
pub enum Ept {}

impl Ept {
    /// EPT pointer for the VMCS: WB paging-structure memory type (6) in bits 0..2, page-walk
    /// length minus one (3) in bits 3..5, A/D-flag enable in bit 6 (only if the CPU reports it
    /// in IA32_VMX_EPT_VPID_CAP bit 21), and the PML4 address.
    pub const fn eptp(pml4: u64, accessed_dirty: bool) -> u64 {
        pml4 | 6 | 3 << 3 | (accessed_dirty as u64) << 6
    }
}

impl Format for Ept {
    const NAME: &'static str = "ept";
    const SIGN_EXTENDED_INPUT: bool = false;

    /// Empty sets would be non-present entries, and write without read is an EPT
    /// misconfiguration. Execute-only is accepted; the caller must check that the CPU supports
    /// it (IA32_VMX_EPT_VPID_CAP bit 0).
    fn check_perm(perm: Perm) -> Result<(), MapError> {
        if perm.is_empty() || (perm.write() && !perm.read()) {
            Err(MapError::UnsupportedPerm { perm })
        } else {
            Ok(())
        }
    }

    fn table_entry(table: u64) -> u64 {
        table | R | W | X
    }

    fn leaf_entry(phys: u64, size: PageSize, perm: Perm, memtype: MemType) -> u64 {
        let mut e = phys | memtype.encoding() << MEMTYPE_SHIFT;
        if perm.read() {
            e |= R;
        }
        if perm.write() {
            e |= W;
        }
        if perm.execute() {
            e |= X;
        }
        if size != PageSize::Size4K {
            e |= LARGE;
        }
        e
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Translation {
        Translation {
            phys: leaf_addr(entry, size),
            size,
            perm: Perm::new(entry & R != 0, entry & W != 0, entry & X != 0),
            memtype: MemType::from_encoding((entry >> MEMTYPE_SHIFT) & 7),
            kind: 0,
        }
    }

    fn is_present(entry: u64) -> bool {
        entry & (R | W | X) != 0
    }
}
