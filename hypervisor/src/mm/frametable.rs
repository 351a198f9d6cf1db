//! Host frame ownership: one atomic word per managed frame, so a frame another domain
//! still maps outlives its owner.
//!
//! Word layout: bit 31 = [`OWNED`] (a live domain's RAM), bits 0..30 = extra references
//! (grant mappings, and transient ones while the hypervisor copies through a mapping).
//! * a domain's RAM frames are marked owned when it gets them ([`FrameRefs::set_owned`]);
//! * a new mapping takes a reference only while the owner bit is set
//!   ([`FrameRefs::get_owned`]), so it cannot race with the owner's teardown;
//! * the owner's teardown clears the bit ([`FrameRefs::disown`]) and frees only frames
//!   without references; the others are *orphans*;
//! * the last [`FrameRefs::put`] of an orphan frees it.
//!
//! Every transition is one atomic read-modify-write: no lock, and exactly one party sees
//! a frame become free. Orphans are counted nowhere else (they are neither free nor held
//! by a domain), so the frame balance shows them until their last mapping goes.
//!
//! The logic is plain Rust over a slice of atomics (host-tested); the global table over
//! all managed RAM lives in [`global`] (bare metal only).
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

/// The owner is alive.
pub const OWNED: u32 = 1 << 31;
/// Mask of the reference count.
pub const REFS: u32 = OWNED - 1;

/// Reference words for the frames `[0, words.len())` (frame number = physical address / 4 KiB).
pub struct FrameRefs<'a> {
    words: &'a [AtomicU32],
}

impl<'a> FrameRefs<'a> {
    pub const fn new(words: &'a [AtomicU32]) -> Self {
        FrameRefs { words }
    }

    fn word(&self, pa: u64) -> Option<&AtomicU32> {
        self.words.get(usize::try_from(pa >> 12).ok()?)
    }

    /// Marks a newly allocated frame as its domain's; false if the frame is not covered or
    /// its word was not clear (a bookkeeping bug: the frame is then never granted).
    pub fn set_owned(&self, pa: u64) -> bool {
        self.claim(pa).is_ok()
    }

    /// [`Self::set_owned`], saying why not: `Err(None)` for a frame the table does not
    /// cover, `Err(Some(word))` for one that already has an owner or references. A frame
    /// fresh from the allocator has neither, so the second is a frame handed out twice.
    pub fn claim(&self, pa: u64) -> Result<(), Option<u32>> {
        let w = self.word(pa).ok_or(None)?;
        w.compare_exchange(0, OWNED, SeqCst, SeqCst)
            .map(|_| ())
            .map_err(Some)
    }

    /// Takes a reference on an owned frame (a new mapping of a live domain's page); false
    /// if the owner is gone, the frame is not tracked, or the count would overflow.
    pub fn get_owned(&self, pa: u64) -> bool {
        self.word(pa).is_some_and(|w| {
            w.fetch_update(SeqCst, SeqCst, |v| {
                (v & OWNED != 0 && v & REFS < REFS).then_some(v.wrapping_add(1))
            })
            .is_ok()
        })
    }

    /// Takes one more reference on a frame someone already holds one on (owner alive or
    /// not); false if it has none (it may be free) or the count would overflow.
    pub fn get_extra(&self, pa: u64) -> bool {
        self.word(pa).is_some_and(|w| {
            w.fetch_update(SeqCst, SeqCst, |v| {
                (v & REFS != 0 && v & REFS < REFS).then_some(v.wrapping_add(1))
            })
            .is_ok()
        })
    }

    /// Drops a reference; true if the caller must now free the frame (it was the last
    /// reference of an orphan). A put without a reference is refused (false, unchanged).
    pub fn put(&self, pa: u64) -> bool {
        let Some(w) = self.word(pa) else {
            return false;
        };
        match w.fetch_update(SeqCst, SeqCst, |v| (v & REFS != 0).then(|| v - 1)) {
            Ok(old) => old == 1,
            Err(_) => {
                log::error!("frame {pa:#x}: reference dropped that was never taken");
                false
            }
        }
    }

    /// The owner lets go of the frame; true if the caller must free it now (no references).
    /// Untracked frames are always freed.
    pub fn disown(&self, pa: u64) -> bool {
        match self.word(pa) {
            Some(w) => w.fetch_and(!OWNED, SeqCst) & REFS == 0,
            None => true,
        }
    }

    /// References held on the frame.
    pub fn refs(&self, pa: u64) -> u32 {
        self.word(pa).map_or(0, |w| w.load(SeqCst) & REFS)
    }
}

/// The table over all managed RAM and the functions the rest of the hypervisor uses.
#[cfg(target_os = "none")]
pub mod global {
    use super::FrameRefs;
    use crate::mm::frame::FRAME_SIZE;
    use crate::mm::phys;
    use core::sync::atomic::AtomicU32;

    static TABLE: spin::Once<FrameRefs<'static>> = spin::Once::new();

    /// Allocates the table for frames below `top` (the direct map's end); once, at boot,
    /// before any domain exists. Without it, no frame is tracked: every grant map then
    /// fails with `bad_page` and teardown frees everything at once.
    pub fn init(top: u64) {
        let count = top / FRAME_SIZE;
        let bytes = count.saturating_mul(4);
        let frames = bytes.div_ceil(FRAME_SIZE);
        let Some(base) = phys::alloc_zeroed(frames, 1) else {
            log::error!("mm: no room for the {bytes}-byte frame table; grant mapping disabled");
            return;
        };
        log::info!(
            "mm: frame table: {count} frames, {} KiB at {base:#x}",
            bytes.div_ceil(1024)
        );
        TABLE.call_once(|| FrameRefs::new(words(base, count as usize)));
    }

    /// The words of a zeroed, never freed allocation, as atomics.
    fn words(base: u64, count: usize) -> &'static [AtomicU32] {
        // SAFETY: `base` starts `count * 4` bytes of zeroed frames allocated above, inside
        // the direct map, never freed and reached only through this slice (4-aligned, as
        // frames are); AtomicU32 has u32's layout, zero is a valid value, and every access
        // through the slice is atomic, so sharing it between CPUs is sound.
        unsafe { core::slice::from_raw_parts(phys::to_virt(base).cast::<AtomicU32>(), count) }
    }

    fn table() -> Option<&'static FrameRefs<'static>> {
        TABLE.get()
    }

    /// Frames whose owner is gone while another domain still maps them (freed by their
    /// last [`put`]): neither free nor held by a domain, so the frame balance misses them.
    static ORPHANS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

    /// How many orphaned frames are waiting for their last unmap.
    pub fn orphans() -> u64 {
        ORPHANS.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// See [`FrameRefs::set_owned`]. A frame that already had an owner or references (the
    /// allocator handed it out twice) is reported.
    pub fn set_owned(pa: u64) -> bool {
        match table().map(|t| t.claim(pa)) {
            Some(Ok(())) => true,
            Some(Err(Some(word))) => {
                log::error!("frame {pa:#x} handed out while in use (frame-table word {word:#x})");
                false
            }
            _ => false,
        }
    }

    /// See [`FrameRefs::get_owned`].
    pub fn get_owned(pa: u64) -> bool {
        table().is_some_and(|t| t.get_owned(pa))
    }

    /// See [`FrameRefs::get_extra`].
    pub fn get_extra(pa: u64) -> bool {
        table().is_some_and(|t| t.get_extra(pa))
    }

    /// Drops a reference and frees the frame if it was an orphan's last.
    pub fn put(pa: u64) {
        if table().is_some_and(|t| t.put(pa)) {
            ORPHANS.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
            phys::free_frames(pa, 1);
        }
    }

    /// The owner's teardown of `count` frames from `first`: frees those without
    /// references (in runs), leaves the others to their last [`put`].
    pub fn disown_and_free(first: u64, count: u64) {
        let mut run: Option<(u64, u64)> = None;
        for i in 0..count {
            let pa = first + i * FRAME_SIZE;
            let free = table().is_none_or(|t| t.disown(pa));
            run = match (run, free) {
                (Some((s, n)), true) => Some((s, n + 1)),
                (None, true) => Some((pa, 1)),
                (Some((s, n)), false) => {
                    ORPHANS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    phys::free_frames(s, n);
                    None
                }
                (None, false) => {
                    ORPHANS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    None
                }
            };
        }
        if let Some((s, n)) = run {
            phys::free_frames(s, n);
        }
    }

    /// A transient reference on a frame that is mapped (the hypervisor copying through a
    /// grant mapping): the frame cannot be freed while it lives.
    pub struct Hold(u64);

    impl Hold {
        /// Holds `pa` if someone already does (see [`FrameRefs::get_extra`]).
        pub fn new(pa: u64) -> Option<Hold> {
            let page = pa & !(FRAME_SIZE - 1);
            get_extra(page).then_some(Hold(page))
        }
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            put(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn owner_teardown_frees_unreferenced_frames_only() {
        let w = table(4);
        let t = FrameRefs::new(&w);
        assert!(t.set_owned(0x1000) && t.set_owned(0x2000));
        assert!(!t.set_owned(0x1000), "already owned");
        assert_eq!(t.claim(0x1000), Err(Some(OWNED)), "says what holds it");
        assert!(!t.set_owned(0x9000), "outside the table");
        assert_eq!(t.claim(0x9000), Err(None));
        assert!(t.get_owned(0x1000));
        assert!(!t.get_owned(0x3000), "never owned");
        assert_eq!(t.refs(0x1000), 1);
        // Teardown: 0x2000 is free at once, 0x1000 becomes an orphan.
        assert!(t.disown(0x2000));
        assert!(!t.disown(0x1000));
        // No new mappings of an orphan, but a holder can lend a transient reference.
        assert!(!t.get_owned(0x1000));
        assert!(t.get_extra(0x1000));
        assert!(!t.put(0x1000));
        // The last put frees it, exactly once.
        assert!(t.put(0x1000));
        assert_eq!(t.refs(0x1000), 0);
        assert!(!t.put(0x1000), "put without a reference is refused");
        assert!(!t.get_extra(0x1000), "a free frame cannot be held");
        // Reallocated later: owned again from a clear word.
        assert!(t.set_owned(0x1000));
    }

    #[test]
    fn puts_while_owned_never_free() {
        let w = table(2);
        let t = FrameRefs::new(&w);
        t.set_owned(0);
        assert!(t.get_owned(0) && t.get_owned(0));
        assert!(!t.put(0) && !t.put(0));
        assert!(t.disown(0), "no references left: the owner frees it");
        assert!(
            t.disown(0x5000),
            "untracked frames are freed by their owner"
        );
    }

    #[test]
    fn count_saturates_instead_of_wrapping_into_the_owner_bit() {
        let w = table(1);
        let t = FrameRefs::new(&w);
        t.set_owned(0);
        w[0].store(OWNED | (REFS - 1), SeqCst);
        assert!(t.get_owned(0));
        assert!(!t.get_owned(0));
        assert!(!t.get_extra(0));
        assert_eq!(w[0].load(SeqCst), OWNED | REFS);
    }
}
