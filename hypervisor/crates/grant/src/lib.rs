//! Grant tables v1, mapping side: the pure logic behind `GNTTABOP_map_grant_ref` and
//! `GNTTABOP_unmap_grant_ref` (facts: `docs` §8.3, Xen `xen/common/grant_table.c`).
//!
//! * [`pin_word`] / [`unpin_word`]: how the granter's shared `{flags, domid}` word changes
//!   when a mapping pins or unpins an entry. The caller applies them with a bounded
//!   compare-exchange loop on the live word ([`MAX_CAS_RETRIES`]), so the guest's own
//!   cmpxchg on `flags` (revoking a grant) and ours never lose each other's update.
//! * [`ActiveTable`]: per granting domain, the entries that are pinned: read/write pin
//!   counts, the mapping domain, and the granted frame captured at the first pin (later
//!   guest edits of the shared entry do not affect live mappings).
//! * [`Maptrack`]: per mapping domain, the handles its mappings are known by.
//!
//! No memory is touched here: the hypervisor owns the p2m changes, the frame references
//! and the guest-memory accesses, and calls into this crate under the domains' locks.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use xen_abi::grant_table::{
    GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR, GNTST_NO_SPACE, GTF_PERMIT_ACCESS, GTF_READING,
    GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};

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

/// A mapping domain's handles: a bounded table with free-slot reuse (lowest first).
#[derive(Debug)]
pub struct Maptrack {
    slots: Vec<Option<Mapping>>,
    free: Vec<u32>,
    used: usize,
    limit: u32,
}

impl Maptrack {
    /// A table of at most `limit` handles.
    pub const fn new(limit: u32) -> Self {
        Maptrack {
            slots: Vec::new(),
            free: Vec::new(),
            used: 0,
            limit,
        }
    }

    /// Live mappings.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether [`Maptrack::insert`] would fail.
    pub fn is_full(&self) -> bool {
        self.free.is_empty() && self.slots.len() >= self.limit as usize
    }

    /// Records `m` under a new handle; `no_space` when the table is full.
    pub fn insert(&mut self, m: Mapping) -> Result<u32, Status> {
        if let Some(h) = self.free.pop() {
            self.slots[h as usize] = Some(m);
            self.used += 1;
            return Ok(h);
        }
        let h = u32::try_from(self.slots.len()).map_err(|_| GNTST_NO_SPACE)?;
        if h >= self.limit {
            return Err(GNTST_NO_SPACE);
        }
        self.slots.push(Some(m));
        self.used += 1;
        Ok(h)
    }

    /// The mapping under `handle`.
    pub fn get(&self, handle: u32) -> Result<&Mapping, Status> {
        self.slots
            .get(handle as usize)
            .and_then(Option::as_ref)
            .ok_or(GNTST_BAD_HANDLE)
    }

    /// Whether any live mapping sits at `gpa`.
    pub fn maps_at(&self, gpa: u64) -> bool {
        self.slots.iter().flatten().any(|m| m.gpa == gpa)
    }

    /// Forgets `handle`; `bad_handle` if it is not live.
    pub fn remove(&mut self, handle: u32) -> Result<Mapping, Status> {
        let m = self
            .slots
            .get_mut(handle as usize)
            .and_then(Option::take)
            .ok_or(GNTST_BAD_HANDLE)?;
        self.used -= 1;
        self.free.push(handle);
        // Reuse the lowest free handle first (deterministic handles for tests and logs).
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        Ok(m)
    }

    /// Some live handle, for teardown (removing each in turn empties the table).
    pub fn any(&self) -> Option<u32> {
        self.slots
            .iter()
            .position(Option::is_some)
            .map(|h| h as u32)
    }
}

#[cfg(test)]
mod tests;
