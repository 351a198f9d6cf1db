//! One generic 4-level page-table engine for host paging ([`Host`]), Intel EPT ([`Ept`]) and
//! AMD NPT ([`Npt`]).
//!
//! # Shape
//! [`PageTable<F>`] is just a root physical address; everything else lives in the tables, so a
//! table can be rebuilt from its root ([`PageTable::from_root`]). The engine reaches memory only
//! through [`PhysMem`] (read/write one entry) and gets frames from [`FrameSource`], so it is
//! safe code, host-testable with a fake memory, and the one `unsafe` impl lives in the
//! hypervisor's direct map.
//!
//! # Invariants
//! - Every non-root table reachable from the root holds at least one present entry: unmapping
//!   frees tables that become empty, and a failed map frees what it allocated.
//! - Nothing is overwritten silently: mapping over an existing leaf or over smaller mappings
//!   fails ([`MapError::AlreadyMapped`], [`MapError::SmallerPagesPresent`]).
//! - New paths are built completely before one store links them in, and a large page is split
//!   by filling the replacement table before it replaces the leaf, so a concurrent hardware
//!   walk sees either the old or the new translation.
//!
//! # TLB contract (callers must read this)
//! The engine never flushes. After [`unmap`](PageTable::unmap),
//! [`unmap_range`](PageTable::unmap_range) (if it returned non-zero, or failed) or
//! [`protect`](PageTable::protect) (always) on live tables, the caller must flush: `invlpg`/CR3
//! reload for [`Host`], INVEPT for [`Ept`], a new ASID or TLB_CONTROL for [`Npt`]. `map` only
//! fills non-present slots and needs no flush. Freed table frames may still sit in
//! paging-structure caches, so a [`FrameSource`] serving live tables must not reuse freed
//! frames before that flush.
//!
//! # Concurrency
//! None: the caller serialises all operations on one table (e.g. a per-domain p2m lock).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod attr;
mod error;
pub mod format;
#[cfg(test)]
mod tests;

use core::fmt;
use core::marker::PhantomData;

pub use attr::{MemType, PageSize, Perm, Translation};
pub use error::MapError;
use format::{entry_kind, kind_bits};
pub use format::{Ept, Format, Host, Npt, ADDR_MASK, KIND_MAX, PAT_MSR_VALUE};

/// Entries per table.
pub const ENTRIES: usize = 512;

/// How the engine reads and writes entries of a table given the table's physical address.
///
/// The hypervisor implements it over its direct map. Requirements on an implementation:
/// `table` is always a frame the engine got from its [`FrameSource`] (or the root), `index` is
/// below [`ENTRIES`], and each access is a single aligned 64-bit load/store (e.g. a volatile or
/// relaxed-atomic `u64` access) so the hardware walker never sees a torn entry.
pub trait PhysMem {
    /// Reads entry `index` of the table at physical address `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at physical address `table`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// Where table frames come from and go back to.
pub trait FrameSource {
    /// A 4 KiB-aligned frame below 2^52, or `None` when memory is exhausted. Its contents do
    /// not matter: the engine clears every new table before use.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Returns a frame obtained from `alloc_table` (see the TLB contract on reuse).
    fn free_table(&mut self, table: u64);
}

/// A 4-level page table of format `F`, identified by its root (PML4) physical address.
pub struct PageTable<F: Format> {
    root: u64,
    _format: PhantomData<fn() -> F>,
}

impl<F: Format> fmt::Debug for PageTable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageTable<{}>({:#x})", F::NAME, self.root)
    }
}

/// One step of a walk: the table at some level and the index used in it.
type Slot = (u64, usize);

/// Result of descending towards an address: the slot where the walk stopped and the path of
/// slots above it (`path[level - 1]` is the slot at `level`).
struct Walk {
    path: [Slot; 4],
    level: u8,
    entry: u64,
}

impl Walk {
    fn slot(&self) -> Slot {
        self.path[self.level as usize - 1]
    }
}

/// What a range operation does to each fully covered leaf.
#[derive(Clone, Copy)]
enum RangeOp {
    /// Remove leaves, skip holes.
    Unmap,
    /// Fail on holes, touch nothing (dry run before `Protect`).
    CheckMapped,
    /// Rewrite leaves with new permissions.
    Protect(Perm),
}

/// Bytes covered by one entry at `level`.
const fn span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Index into the table at `level` for `addr`.
const fn index(addr: u64, level: u8) -> usize {
    ((addr >> (12 + 9 * (level as u32 - 1))) as usize) & (ENTRIES - 1)
}

/// Decodes a leaf with its software type.
fn decode<F: Format>(entry: u64, size: PageSize) -> Translation {
    let mut t = F::decode_leaf(entry, size);
    t.kind = entry_kind(entry);
    t
}

fn level_size(level: u8) -> PageSize {
    PageSize::from_level(level).expect("leaf at the PML4 level")
}

/// Allocates a table and clears it.
fn new_table(mem: &mut impl PhysMem, alloc: &mut impl FrameSource) -> Result<u64, MapError> {
    let table = alloc.alloc_table().ok_or(MapError::OutOfMemory)?;
    assert_eq!(
        table & !ADDR_MASK,
        0,
        "FrameSource returned a misaligned or out-of-range table frame"
    );
    for i in 0..ENTRIES {
        mem.write_entry(table, i, 0);
    }
    Ok(table)
}

/// Picks the largest page no bigger than `max` that both addresses are aligned to and that fits
/// in `remaining` bytes.
fn best_size(addr: u64, phys: u64, remaining: u64, max: PageSize) -> PageSize {
    [PageSize::Size1G, PageSize::Size2M]
        .into_iter()
        .find(|&s| s <= max && (addr | phys) & (s.bytes() - 1) == 0 && remaining >= s.bytes())
        .unwrap_or(PageSize::Size4K)
}

impl<F: Format> PageTable<F> {
    /// Allocates an empty root table.
    pub fn new(mem: &mut impl PhysMem, alloc: &mut impl FrameSource) -> Result<Self, MapError> {
        Ok(Self::from_root(new_table(mem, alloc)?))
    }

    /// Adopts an existing root, e.g. one built earlier or read back from CR3/EPTP/nCR3.
    pub fn from_root(root: u64) -> Self {
        PageTable {
            root,
            _format: PhantomData,
        }
    }

    /// Physical address of the root table: CR3 for [`Host`], nCR3 for [`Npt`]; for [`Ept`] use
    /// [`Ept::eptp`].
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps one page of `size` at `addr` to `phys`.
    ///
    /// Fails without changing anything if an address is misaligned or out of range, `perm` is
    /// not expressible, the page overlaps an existing leaf, or (for large pages) the region
    /// already holds smaller mappings. Needs no TLB flush: only non-present slots are filled.
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        phys: u64,
        size: PageSize,
        perm: Perm,
        memtype: MemType,
    ) -> Result<(), MapError> {
        self.map_kind(mem, alloc, addr, phys, size, perm, memtype, 0)
    }

    /// [`map`](Self::map) with a software type `kind` (at most [`KIND_MAX`]) stored in bits
    /// the hardware ignores and reported by [`translate`](Self::translate); splits and
    /// [`protect`](Self::protect) keep it. The hypervisor uses it for p2m entry types.
    #[allow(clippy::too_many_arguments)]
    pub fn map_kind(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        phys: u64,
        size: PageSize,
        perm: Perm,
        memtype: MemType,
        kind: u8,
    ) -> Result<(), MapError> {
        if kind > KIND_MAX {
            return Err(MapError::BadKind { kind });
        }
        Self::check_page(addr, size)?;
        Self::check_phys(phys, size.bytes())?;
        if phys & (size.bytes() - 1) != 0 {
            return Err(MapError::Misaligned { addr: phys, size });
        }
        F::check_perm(perm)?;

        let target = size.level();
        let walk = self.walk(mem, addr, target);
        if F::is_present(walk.entry) {
            return Err(if F::is_leaf(walk.entry, walk.level) {
                let size = level_size(walk.level);
                MapError::AlreadyMapped {
                    addr: addr & !(size.bytes() - 1),
                    size,
                }
            } else {
                MapError::SmallerPagesPresent { addr, size }
            });
        }

        // Tables are missing from just below `walk.level` down to `target`. Allocate them all
        // first so that running out of memory leaves the tree untouched.
        let missing = (walk.level - target) as usize;
        let mut tables = [0u64; 3];
        for i in 0..missing {
            match new_table(mem, alloc) {
                Ok(t) => tables[i] = t,
                Err(e) => {
                    tables[..i].iter().for_each(|&t| alloc.free_table(t));
                    return Err(e);
                }
            }
        }
        // Link bottom-up; tables[i] sits at level target + i. The final store publishes it all.
        let mut entry = F::leaf_entry(phys, size, perm, memtype) | kind_bits(kind);
        for (i, &table) in tables[..missing].iter().enumerate() {
            mem.write_entry(table, index(addr, target + i as u8), entry);
            entry = F::table_entry(table);
        }
        let (table, idx) = walk.slot();
        mem.write_entry(table, idx, entry);
        Ok(())
    }

    /// Maps `len` bytes at `addr` to `phys`, using the largest pages (up to `max`) that the
    /// alignment of both addresses allows: pass `Size1G` only if the CPU supports 1 GiB pages
    /// in this format. On any error, pages mapped by this call are removed again (flush if the
    /// tables are live: a hardware walk may have cached them meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub fn map_range(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        phys: u64,
        len: u64,
        perm: Perm,
        memtype: MemType,
        max: PageSize,
    ) -> Result<(), MapError> {
        Self::check_range(addr, len)?;
        if phys & (PageSize::Size4K.bytes() - 1) != 0 {
            return Err(MapError::Misaligned {
                addr: phys,
                size: PageSize::Size4K,
            });
        }
        Self::check_phys(phys, len)?;
        F::check_perm(perm)?;

        let mut done = 0;
        while done < len {
            let size = best_size(addr + done, phys + done, len - done, max);
            let result = self.map(mem, alloc, addr + done, phys + done, size, perm, memtype);
            if let Err(e) = result {
                if done > 0 {
                    // Removing exactly the leaves we created never splits, so never allocates.
                    let undone = self.apply_range(mem, alloc, addr, done, RangeOp::Unmap);
                    debug_assert_eq!(undone, Ok(done));
                }
                return Err(e);
            }
            done += size.bytes();
        }
        Ok(())
    }

    /// Unmaps the page of `size` at `addr` and returns what it mapped (`phys` is the page base).
    ///
    /// If a larger page covers it, that page is split first (allocating tables, so this can
    /// fail with `OutOfMemory`); if the region holds smaller pages, fails with
    /// `SmallerPagesPresent` (use [`unmap_range`](Self::unmap_range)). Requires a TLB flush.
    pub fn unmap(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        size: PageSize,
    ) -> Result<Translation, MapError> {
        Self::check_page(addr, size)?;
        let target = size.level();
        loop {
            let walk = self.walk(mem, addr, target);
            if !F::is_present(walk.entry) {
                return Err(MapError::NotMapped { addr });
            }
            if !F::is_leaf(walk.entry, walk.level) {
                return Err(MapError::SmallerPagesPresent { addr, size });
            }
            if walk.level > target {
                self.split(mem, alloc, &walk)?;
                continue;
            }
            let removed = decode::<F>(walk.entry, size);
            self.clear_and_prune(mem, alloc, &walk);
            return Ok(removed);
        }
    }

    /// Unmaps everything in `len` bytes at `addr`, whatever the page sizes; holes are skipped
    /// and large pages straddling the edges are split. Returns the number of bytes unmapped:
    /// non-zero means the caller must flush. On error (only `OutOfMemory` once validation has
    /// passed) part of the range may already be unmapped, so flush then too.
    pub fn unmap_range(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        len: u64,
    ) -> Result<u64, MapError> {
        self.apply_range(mem, alloc, addr, len, RangeOp::Unmap)
    }

    /// Sets the permissions of every page in `len` bytes at `addr`, keeping addresses and
    /// memory types; large pages straddling the edges are split. Fails with `NotMapped` (and
    /// changes nothing) if the range has a hole. Always requires a TLB flush; on
    /// `OutOfMemory` some pages may already have the new permissions.
    pub fn protect(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        len: u64,
        perm: Perm,
    ) -> Result<(), MapError> {
        F::check_perm(perm)?;
        self.apply_range(mem, alloc, addr, len, RangeOp::CheckMapped)?;
        self.apply_range(mem, alloc, addr, len, RangeOp::Protect(perm))?;
        Ok(())
    }

    /// Looks up `addr`; `phys` in the result includes the offset into the page.
    pub fn translate(&self, mem: &impl PhysMem, addr: u64) -> Option<Translation> {
        Self::check_input(addr).ok()?;
        let walk = self.walk(mem, addr, 1);
        if !F::is_present(walk.entry) {
            return None;
        }
        let size = level_size(walk.level);
        let mut t = decode::<F>(walk.entry, size);
        t.phys += addr & (size.bytes() - 1);
        Some(t)
    }

    /// Calls `f(addr, translation)` for every leaf, in increasing table order (for [`Host`],
    /// lower half first, upper-half addresses sign-extended). Used e.g. for the boot-time W^X
    /// audit.
    pub fn for_each_leaf(&self, mem: &impl PhysMem, mut f: impl FnMut(u64, Translation)) {
        self.visit(mem, self.root, 4, 0, &mut f);
    }

    /// Frees every table, root included. Mapped frames are not touched: the tables never own
    /// them. The table must no longer be in use by any CPU (CR3/EPTP/nCR3 switched away and
    /// flushed).
    pub fn destroy(self, mem: &mut impl PhysMem, alloc: &mut impl FrameSource) {
        Self::free_tree(mem, alloc, self.root, 4);
    }

    fn visit(
        &self,
        mem: &impl PhysMem,
        table: u64,
        level: u8,
        base: u64,
        f: &mut impl FnMut(u64, Translation),
    ) {
        for i in 0..ENTRIES {
            let entry = mem.read_entry(table, i);
            if !F::is_present(entry) {
                continue;
            }
            let mut addr = base | (i as u64) << (12 + 9 * (level as u32 - 1));
            if level == 4 && F::SIGN_EXTENDED_INPUT && i >= ENTRIES / 2 {
                addr |= 0xffff_0000_0000_0000;
            }
            if F::is_leaf(entry, level) {
                f(addr, decode::<F>(entry, level_size(level)));
            } else {
                self.visit(mem, F::table_addr(entry), level - 1, addr, f);
            }
        }
    }

    fn free_tree(mem: &mut impl PhysMem, alloc: &mut impl FrameSource, table: u64, level: u8) {
        if level > 1 {
            for i in 0..ENTRIES {
                let entry = mem.read_entry(table, i);
                if F::is_present(entry) && !F::is_leaf(entry, level) {
                    Self::free_tree(mem, alloc, F::table_addr(entry), level - 1);
                }
            }
        }
        alloc.free_table(table);
    }

    /// Descends towards `addr` and stops at the first entry that is non-present or a leaf, or
    /// at level `stop`.
    fn walk(&self, mem: &impl PhysMem, addr: u64, stop: u8) -> Walk {
        let mut path = [(0, 0); 4];
        let mut table = self.root;
        let mut level = 4;
        loop {
            let idx = index(addr, level);
            path[level as usize - 1] = (table, idx);
            let entry = mem.read_entry(table, idx);
            if level == stop || !F::is_present(entry) || F::is_leaf(entry, level) {
                return Walk { path, level, entry };
            }
            table = F::table_addr(entry);
            level -= 1;
        }
    }

    /// Replaces the large leaf the walk stopped at with a table of 512 next-smaller leaves that
    /// map the same memory with the same attributes.
    fn split(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        walk: &Walk,
    ) -> Result<(), MapError> {
        let big = decode::<F>(walk.entry, level_size(walk.level));
        let small = level_size(walk.level - 1);
        let table = new_table(mem, alloc)?;
        for i in 0..ENTRIES {
            let phys = big.phys + i as u64 * small.bytes();
            let e = F::leaf_entry(phys, small, big.perm, big.memtype) | kind_bits(big.kind);
            mem.write_entry(table, i, e);
        }
        let (parent, idx) = walk.slot();
        mem.write_entry(parent, idx, F::table_entry(table));
        Ok(())
    }

    /// Clears the entry the walk stopped at, then frees tables that became empty, bottom-up
    /// (never the root). Each table is unlinked before it is freed.
    fn clear_and_prune(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        walk: &Walk,
    ) {
        let (table, idx) = walk.slot();
        mem.write_entry(table, idx, 0);
        for level in walk.level..4 {
            let (table, _) = walk.path[level as usize - 1];
            if (0..ENTRIES).any(|i| F::is_present(mem.read_entry(table, i))) {
                break;
            }
            let (parent, idx) = walk.path[level as usize];
            mem.write_entry(parent, idx, 0);
            alloc.free_table(table);
        }
    }

    /// Applies `op` to every leaf in the range, splitting leaves that straddle its edges.
    /// Returns the bytes of leaves acted on.
    fn apply_range(
        &mut self,
        mem: &mut impl PhysMem,
        alloc: &mut impl FrameSource,
        addr: u64,
        len: u64,
        op: RangeOp,
    ) -> Result<u64, MapError> {
        let last = Self::check_range(addr, len)?;
        let mut cur = addr;
        let mut done = 0;
        loop {
            let walk = self.walk(mem, cur, 1);
            let span = span(walk.level);
            let base = cur & !(span - 1);
            let end = base + (span - 1); // inclusive: the top page's end would overflow
            if !F::is_present(walk.entry) {
                if !matches!(op, RangeOp::Unmap) {
                    return Err(MapError::NotMapped { addr: cur });
                }
            } else if base < addr || end > last {
                // Straddles an edge. Splitting changes no translation, so a dry run needn't.
                if !matches!(op, RangeOp::CheckMapped) {
                    self.split(mem, alloc, &walk)?;
                    continue;
                }
            } else {
                match op {
                    RangeOp::Unmap => self.clear_and_prune(mem, alloc, &walk),
                    RangeOp::CheckMapped => {}
                    RangeOp::Protect(perm) => {
                        let size = level_size(walk.level);
                        let old = decode::<F>(walk.entry, size);
                        let (table, idx) = walk.slot();
                        let new =
                            F::leaf_entry(old.phys, size, perm, old.memtype) | kind_bits(old.kind);
                        mem.write_entry(table, idx, new);
                    }
                }
                done += span;
            }
            if end >= last {
                return Ok(done);
            }
            cur = end + 1;
        }
    }

    /// Checks an input address alone.
    fn check_input(addr: u64) -> Result<(), MapError> {
        if F::SIGN_EXTENDED_INPUT {
            if ((addr << 16) as i64 >> 16) as u64 != addr {
                return Err(MapError::NonCanonical { addr });
            }
        } else if addr >> 48 != 0 {
            return Err(MapError::AddressTooLarge { addr });
        }
        Ok(())
    }

    /// Checks an input address and its alignment to `size`.
    fn check_page(addr: u64, size: PageSize) -> Result<(), MapError> {
        Self::check_input(addr)?;
        if addr & (size.bytes() - 1) != 0 {
            return Err(MapError::Misaligned { addr, size });
        }
        Ok(())
    }

    /// Checks an input range and returns its last byte's address. The range must be 4 KiB
    /// aligned, non-empty and, for [`Host`], stay within one canonical half.
    fn check_range(addr: u64, len: u64) -> Result<u64, MapError> {
        Self::check_page(addr, PageSize::Size4K)?;
        if len == 0 || len & (PageSize::Size4K.bytes() - 1) != 0 {
            return Err(MapError::BadLength { addr, len });
        }
        let last = addr
            .checked_add(len - 1)
            .ok_or(MapError::BadLength { addr, len })?;
        // Report the first bad address in the range; `addr` itself is valid.
        if F::SIGN_EXTENDED_INPUT {
            // Both ends in one half implies everything between is canonical.
            if (addr ^ last) >> 47 != 0 {
                return Err(MapError::NonCanonical { addr: 1 << 47 });
            }
        } else if last >> 48 != 0 {
            return Err(MapError::AddressTooLarge { addr: 1 << 48 });
        }
        Ok(last)
    }

    /// Checks that `len` bytes from `phys` fit the 52-bit address field.
    fn check_phys(phys: u64, len: u64) -> Result<(), MapError> {
        match phys.checked_add(len - 1) {
            Some(last) if last <= ADDR_MASK | 0xfff => Ok(()),
            _ => Err(MapError::PhysTooLarge { phys }),
        }
    }
}

impl PageTable<Ept> {
    /// EPT pointer for this table (see [`Ept::eptp`]).
    pub fn eptp(&self, accessed_dirty: bool) -> u64 {
        Ept::eptp(self.root, accessed_dirty)
    }
}
