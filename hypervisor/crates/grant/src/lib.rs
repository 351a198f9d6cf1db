//! Grant tables v1: the pure logic behind `GNTTABOP_map_grant_ref`,
//! `GNTTABOP_unmap_grant_ref` and `GNTTABOP_copy` (facts: `docs` §8.3–8.4, Xen
//! `xen/common/grant_table.c`).
//!
//! * [`pin_word`] / [`unpin_word`]: how the granter's shared `{flags, domid}` word changes
//!   when a mapping pins or unpins an entry. The caller applies them with a bounded
//!   compare-exchange loop on the live word ([`MAX_CAS_RETRIES`]), so the guest's own
//!   cmpxchg on `flags` (revoking a grant) and ours never lose each other's update.
//! * [`ActiveTable`]: per granting domain, the entries that are pinned: read/write pin
//!   counts, the mapping domain, and the granted frame captured at the first pin (later
//!   guest edits of the shared entry do not affect live mappings).
//! * [`Maptrack`]: per mapping domain, the handles its mappings are known by (limit from
//!   the domain's maptrack frames, [`maptrack_limit`]; storage grows as handles are used).
//! * [`copy_side`] / [`copy_fits`]: the argument rules of a copy op. A copy pins its grant
//!   sides transiently with the same [`ActiveTable`] pins and shared-word transitions as
//!   a mapping (so it respects, and is respected by, concurrent mappings).
//!
//! No memory is touched here: the hypervisor owns the p2m changes, the frame references
//! and the guest-memory accesses, and calls into this crate under the domains' locks.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;
use core::cmp::Reverse;
use xen_abi::grant_table::{
    GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR, GNTST_NO_SPACE, GNTST_PERMISSION_DENIED,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};
use xen_abi::xen::DOMID_SELF;

/// A `GNTST_*` per-op status (0 = okay, negative = error).
pub type Status = i16;

/// Attempts at updating a shared entry word before giving up with `general_error` (the
/// guest keeps changing it under us).
pub const MAX_CAS_RETRIES: u32 = 16;

/// Most pins (of one kind) an active entry may hold; Xen refuses beyond its 8-bit
/// counters, we allow more but still bound them.
pub const MAX_PINS: u32 = 0xffff;

/// The shared word of a v1 entry: `flags` in bits 0..15, `domid` in bits 16..31 (the first
/// four bytes of `grant_entry_v1`, little endian).
pub const fn word(flags: u16, domid: u16) -> u32 {
    flags as u32 | (domid as u32) << 16
}

/// `flags` of a shared word.
pub const fn word_flags(w: u32) -> u16 {
    w as u16
}

/// `domid` of a shared word.
pub const fn word_domid(w: u32) -> u16 {
    (w >> 16) as u16
}

/// The new shared word when `mapper` pins an entry whose word is `old`.
///
/// `check` is true when the shared entry must be (re)validated: on the first pin, and on
/// the first writable pin of an entry pinned read-only so far (Xen's `_set_status_v1`):
/// the type must be exactly `GTF_permit_access` (no sub-page), `domid` must be the mapper,
/// and a writable pin needs `!GTF_readonly`. `GTF_reading` is set, plus `GTF_writing` for
/// a writable pin. Without `check` the word only gains the bits (an existing pin already
/// validated it). Any failure is `general_error`.
pub fn pin_word(old: u32, mapper: u16, writable: bool, check: bool) -> Result<u32, Status> {
    let flags = word_flags(old);
    if check {
        if flags & (GTF_TYPE_MASK | GTF_SUB_PAGE) != GTF_PERMIT_ACCESS {
            return Err(GNTST_GENERAL_ERROR);
        }
        if word_domid(old) != mapper {
            return Err(GNTST_GENERAL_ERROR);
        }
        if writable && flags & GTF_READONLY != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
    }
    let mut set = GTF_READING;
    if writable {
        set |= GTF_WRITING;
    }
    Ok(word(flags | set, word_domid(old)))
}

/// The new shared word after an unpin: `GTF_writing` cleared if no write pin remains,
/// `GTF_reading` if no pin remains.
pub fn unpin_word(old: u32, clear_writing: bool, clear_reading: bool) -> u32 {
    let mut clear = 0;
    if clear_writing {
        clear |= GTF_WRITING;
    }
    if clear_reading {
        clear |= GTF_READING;
    }
    word(word_flags(old) & !clear, word_domid(old))
}

/// Bytes in a page, the most a `GNTTABOP_copy` side may span.
pub const COPY_PAGE: u32 = 4096;

/// Whether a copy of `len` bytes at `offset` stays inside one page (Xen:
/// `offset + len <= PAGE_SIZE` on each side, `bad_copy_arg` otherwise).
pub const fn copy_fits(offset: u16, len: u16) -> bool {
    offset as u32 + len as u32 <= COPY_PAGE
}

/// How one side of a `GNTTABOP_copy` names its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopySide {
    /// Grant `gref` of domain `domid` (`DOMID_SELF` or an id, the caller's own included).
    Gref { domid: u16, gref: u32 },
    /// The caller's own guest frame `gmfn`.
    Gmfn { gmfn: u64 },
}

/// Classifies a copy side: `is_gref` is its `GNTCOPY_*_gref` flag, `u` the union, `domid`
/// as given. A frame side must say `DOMID_SELF` literally: Xen refuses even the caller's
/// own numeric id there (`permission_denied`, `gnttab_copy_lock_domain`).
pub fn copy_side(is_gref: bool, u: u64, domid: u16) -> Result<CopySide, Status> {
    if is_gref {
        // `u.ref` is the low 32 bits of the union (little endian).
        Ok(CopySide::Gref {
            domid,
            gref: u as u32,
        })
    } else if domid == DOMID_SELF {
        Ok(CopySide::Gmfn { gmfn: u })
    } else {
        Err(GNTST_PERMISSION_DENIED)
    }
}

/// One pinned grant entry of a granting domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveEntry {
    /// The domain whose mappings hold the pins.
    pub mapper: u16,
    /// Read-only pins.
    pub ro_pins: u32,
    /// Writable pins.
    pub rw_pins: u32,
    /// The granted frame number (GFN in the granter's p2m), captured at the first pin.
    pub gfn: u32,
    /// The host frame it translated to (with a frame reference held per pin by the caller).
    pub host: u64,
}

/// What the caller must do before [`ActiveTable::pin`] can be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinPlan {
    /// The entry is not active: read `frame` from the shared entry, translate it and
    /// capture it with [`ActiveTable::pin`].
    pub first: bool,
    /// The shared word must be updated with [`pin_word`] (`check` = this flag: the first
    /// pin, or the first writable one).
    pub update_shared: bool,
}

/// What an unpin did: which shared bits to clear, and the entry if it became inactive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unpinned {
    pub clear_writing: bool,
    pub clear_reading: bool,
    /// The host frame the pin was on.
    pub host: u64,
}

/// The active entries of one granting domain.
#[derive(Debug, Default)]
pub struct ActiveTable {
    entries: BTreeMap<u32, ActiveEntry>,
}

impl ActiveTable {
    pub const fn new() -> Self {
        ActiveTable {
            entries: BTreeMap::new(),
        }
    }

    /// The active entry for `gref`, if pinned.
    pub fn get(&self, gref: u32) -> Option<&ActiveEntry> {
        self.entries.get(&gref)
    }

    /// Active entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a pin of `gref` by `mapper` against the active entry (Xen: an active entry
    /// belongs to one mapping domain, and its counters must not overflow) and says what
    /// the caller must do first. Changes nothing.
    pub fn plan(&self, gref: u32, mapper: u16, writable: bool) -> Result<PinPlan, Status> {
        match self.entries.get(&gref) {
            None => Ok(PinPlan {
                first: true,
                update_shared: true,
            }),
            Some(a) => {
                if a.mapper != mapper {
                    return Err(GNTST_GENERAL_ERROR);
                }
                let pins = if writable { a.rw_pins } else { a.ro_pins };
                if pins >= MAX_PINS {
                    return Err(GNTST_GENERAL_ERROR);
                }
                Ok(PinPlan {
                    first: false,
                    update_shared: writable && a.rw_pins == 0,
                })
            }
        }
    }

    /// Commits a pin planned with [`ActiveTable::plan`]; `capture` is `(gfn, host)` for a
    /// first pin (ignored otherwise). Returns the host frame the pin is on.
    pub fn pin(
        &mut self,
        gref: u32,
        mapper: u16,
        writable: bool,
        capture: (u32, u64),
    ) -> Result<u64, Status> {
        self.plan(gref, mapper, writable)?;
        let a = self.entries.entry(gref).or_insert(ActiveEntry {
            mapper,
            ro_pins: 0,
            rw_pins: 0,
            gfn: capture.0,
            host: capture.1,
        });
        if writable {
            a.rw_pins += 1;
        } else {
            a.ro_pins += 1;
        }
        Ok(a.host)
    }

    /// Drops one pin of `gref` (writable or not) held by `mapper`.
    pub fn unpin(&mut self, gref: u32, mapper: u16, writable: bool) -> Result<Unpinned, Status> {
        let a = self
            .entries
            .get_mut(&gref)
            .filter(|a| a.mapper == mapper)
            .ok_or(GNTST_GENERAL_ERROR)?;
        let pins = if writable {
            &mut a.rw_pins
        } else {
            &mut a.ro_pins
        };
        *pins = pins.checked_sub(1).ok_or(GNTST_GENERAL_ERROR)?;
        let out = Unpinned {
            clear_writing: a.rw_pins == 0,
            clear_reading: a.rw_pins == 0 && a.ro_pins == 0,
            host: a.host,
        };
        if out.clear_reading {
            self.entries.remove(&gref);
        }
        Ok(out)
    }
}

/// One mapping a domain made, known by its maptrack handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Granting domain.
    pub granter: u16,
    /// Grant reference in the granter's table.
    pub gref: u32,
    /// Mapped read-only.
    pub readonly: bool,
    /// Where, in the mapper's physmap (page-aligned guest-physical address).
    pub gpa: u64,
    /// The host frame mapped there.
    pub host: u64,
}

/// Entries per maptrack frame in Xen (`PAGE_SIZE / sizeof(struct grant_mapping)`, a
/// 16-byte record): a domain's limit is `max_maptrack_frames` times this.
pub const MAPTRACK_PER_FRAME: u32 = 256;

/// The handle limit of a domain allowed `frames` maptrack frames (Xen's `maptrack_limit`).
pub const fn maptrack_limit(frames: u32) -> u32 {
    frames.saturating_mul(MAPTRACK_PER_FRAME)
}

/// Handles per storage chunk: the table grows a chunk at a time, as handles are used.
const CHUNK: usize = MAPTRACK_PER_FRAME as usize;

/// A mapping domain's handles: a bounded table that grows in chunks of
/// [`MAPTRACK_PER_FRAME`] slots as it fills (never up front), with free-slot reuse
/// (lowest free handle first, from a min-heap).
///
/// Costs: [`Maptrack::get`] O(1); [`Maptrack::insert`] and [`Maptrack::remove`]
/// O(log n) (the free heap); [`Maptrack::next_live`] scans forward, so walking every
/// live handle with it is O(size) in total. Chunk and heap growth use fallible
/// allocation: running out of memory is `no_space`, never a panic.
#[derive(Debug)]
pub struct Maptrack {
    chunks: Vec<Vec<Option<Mapping>>>,
    /// Handles below this were handed out at least once (slots exist up to the chunks').
    next: u32,
    /// Freed handles below `next`, lowest first.
    free: BinaryHeap<Reverse<u32>>,
    used: usize,
    limit: u32,
}

impl Maptrack {
    /// A table of at most `limit` handles (see [`maptrack_limit`]).
    pub const fn new(limit: u32) -> Self {
        Maptrack {
            chunks: Vec::new(),
            next: 0,
            free: BinaryHeap::new(),
            used: 0,
            limit,
        }
    }

    /// Most live handles.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Live mappings.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether every handle is in use ([`Maptrack::insert`] then fails; it may also fail
    /// when memory for a new chunk runs out).
    pub fn is_full(&self) -> bool {
        self.free.is_empty() && self.next >= self.limit
    }

    fn slot(&self, handle: u32) -> Option<&Option<Mapping>> {
        let h = usize::try_from(handle).ok()?;
        self.chunks.get(h / CHUNK)?.get(h % CHUNK)
    }

    fn slot_mut(&mut self, handle: u32) -> Option<&mut Option<Mapping>> {
        let h = usize::try_from(handle).ok()?;
        self.chunks.get_mut(h / CHUNK)?.get_mut(h % CHUNK)
    }

    /// Records `m` under a new handle; `no_space` when the table is full (or no memory
    /// is left for its next chunk).
    pub fn insert(&mut self, m: Mapping) -> Result<u32, Status> {
        let h = match self.free.peek() {
            Some(&Reverse(h)) => h,
            None => {
                if self.next >= self.limit {
                    return Err(GNTST_NO_SPACE);
                }
                let h = self.next;
                if h as usize / CHUNK >= self.chunks.len() {
                    self.grow()?;
                }
                h
            }
        };
        let slot = self.slot_mut(h).ok_or(GNTST_NO_SPACE)?;
        *slot = Some(m);
        if h == self.next {
            self.next += 1;
        } else {
            self.free.pop();
        }
        self.used += 1;
        Ok(h)
    }

    /// One more chunk of free slots; the free heap is made large enough for every slot
    /// then (so [`Maptrack::remove`] never allocates).
    fn grow(&mut self) -> Result<(), Status> {
        let mut chunk = Vec::new();
        chunk.try_reserve_exact(CHUNK).map_err(|_| GNTST_NO_SPACE)?;
        chunk.resize(CHUNK, None);
        self.chunks.try_reserve(1).map_err(|_| GNTST_NO_SPACE)?;
        let slots = (self.chunks.len() + 1) * CHUNK;
        self.free
            .try_reserve(slots.saturating_sub(self.free.len()))
            .map_err(|_| GNTST_NO_SPACE)?;
        self.chunks.push(chunk);
        Ok(())
    }

    /// The mapping under `handle`.
    pub fn get(&self, handle: u32) -> Result<&Mapping, Status> {
        self.slot(handle)
            .and_then(Option::as_ref)
            .ok_or(GNTST_BAD_HANDLE)
    }

    /// Forgets `handle`; `bad_handle` if it is not live.
    pub fn remove(&mut self, handle: u32) -> Result<Mapping, Status> {
        let m = self
            .slot_mut(handle)
            .and_then(Option::take)
            .ok_or(GNTST_BAD_HANDLE)?;
        self.used -= 1;
        // Capacity for every slot was reserved when its chunk came: no allocation here.
        self.free.push(Reverse(handle));
        Ok(m)
    }

    /// The lowest live handle at or above `from`, for teardown (removing each one found
    /// and going on from the next handle visits every mapping once).
    pub fn next_live(&self, from: u32) -> Option<u32> {
        (from..self.next).find(|&h| matches!(self.slot(h), Some(Some(_))))
    }
}

#[cfg(test)]
mod tests;
