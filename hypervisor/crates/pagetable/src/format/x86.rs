//! Bits shared by IA-32e host paging and AMD nested paging, which use the same entry layout.
//!
//! Memory types are selected through the PAT: bits PWT (3), PCD (4) and PAT (bit 7 in a 4 KiB
//! PTE, bit 12 in a 2 MiB/1 GiB leaf, where bit 7 is the page-size bit) form an index into the
//! IA32_PAT MSR. The layout this crate assumes is [`PAT_MSR_VALUE`].

use super::{leaf_addr, LARGE};
use crate::{MapError, MemType, PageSize, Perm, Translation};

pub(super) const P: u64 = 1 << 0;
pub(super) const RW: u64 = 1 << 1;
pub(super) const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PAT_4K: u64 = 1 << 7;
const PAT_LARGE: u64 = 1 << 12;
pub(super) const NX: u64 = 1 << 63;

/// IA32_PAT value the hypervisor must load (on every CPU) for memory types to mean what the
/// entries say. Host paging and NPT walks both use the host PAT.
///
/// Entries 0..3 equal the power-on default (WB, WT, UC-, UC), so WB/WT/UC mappings are already
/// right before the MSR is written; entry 4 becomes WC and entry 5 WP (defaults: WB, WT).
/// WB is index 0, i.e. no PAT bits at all. Entries 6 and 7 (UC-, UC) are never produced.
pub const PAT_MSR_VALUE: u64 = 0x0007_0501_0007_0406;

/// PAT index for each memory type, consistent with [`PAT_MSR_VALUE`].
const fn pat_index(mt: MemType) -> u64 {
    match mt {
        MemType::WriteBack => 0,
        MemType::WriteThrough => 1,
        MemType::Uncacheable => 3,
        MemType::WriteCombining => 4,
        MemType::WriteProtect => 5,
    }
}

fn pat_bit(size: PageSize) -> u64 {
    if size == PageSize::Size4K {
        PAT_4K
    } else {
        PAT_LARGE
    }
}

/// Only readable sets are expressible: a present x86 page is always readable.
pub(super) fn check_perm(perm: Perm) -> Result<(), MapError> {
    if perm.read() {
        Ok(())
    } else {
        Err(MapError::UnsupportedPerm { perm })
    }
}

/// Leaf entry; `user` sets US (NPT needs it, host mappings are supervisor-only).
/// Accessed/dirty are left clear: nothing in the hypervisor reads them.
pub(super) fn leaf_entry(phys: u64, size: PageSize, perm: Perm, mt: MemType, user: bool) -> u64 {
    let idx = pat_index(mt);
    let mut e = phys | P;
    if perm.write() {
        e |= RW;
    }
    if !perm.execute() {
        e |= NX;
    }
    if user {
        e |= US;
    }
    if idx & 1 != 0 {
        e |= PWT;
    }
    if idx & 2 != 0 {
        e |= PCD;
    }
    if idx & 4 != 0 {
        e |= pat_bit(size);
    }
    if size != PageSize::Size4K {
        e |= LARGE;
    }
    e
}

pub(super) fn decode_leaf(entry: u64, size: PageSize) -> Translation {
    let idx = (entry & PWT != 0) as u64
        | ((entry & PCD != 0) as u64) << 1
        | ((entry & pat_bit(size) != 0) as u64) << 2;
    let encoding = (PAT_MSR_VALUE >> (idx * 8)) & 0xff;
    Translation {
        phys: leaf_addr(entry, size),
        size,
        perm: Perm::new(true, entry & RW != 0, entry & NX == 0),
        memtype: MemType::from_encoding(encoding),
        kind: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index table and the MSR value must agree, or every non-WB mapping is wrong.
    #[test]
    fn pat_layout_matches_msr_value() {
        for mt in [
            MemType::Uncacheable,
            MemType::WriteCombining,
            MemType::WriteThrough,
            MemType::WriteProtect,
            MemType::WriteBack,
        ] {
            let byte = (PAT_MSR_VALUE >> (pat_index(mt) * 8)) & 0xff;
            assert_eq!(byte, mt.encoding(), "{mt}");
        }
        // Power-on default for the low four entries.
        assert_eq!(PAT_MSR_VALUE & 0xffff_ffff, 0x0007_0406);
    }
}
