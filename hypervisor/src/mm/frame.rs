//! The physical frame allocator: a bitmap over the usable RAM the boot loader reported.
//!
//! Usable memory is first reduced to page-aligned [`PhysRange`]s with everything reserved
//! taken out ([`usable_ranges`]): firmware regions, the hypervisor image, boot modules and
//! the first MiB. The allocator keeps one bit per frame of those ranges (set = free), which
//! makes double frees detectable: freeing a frame whose bit is already set is an error,
//! never a silent corruption. Allocation is lowest-address first, so early boot (which can
//! only reach the first 4 GiB) is served from low memory.
//!
//! The bitmap's storage is handed in by the caller, so this module is plain Rust and is
//! unit-tested on the host.

use arrayvec::ArrayVec;
use core::fmt;
use ferrovisor_boot::{MemoryKind, MemoryRegion};

/// Size of a frame (and of a small page).
pub const FRAME_SIZE: u64 = 4096;
/// Most disjoint usable ranges tracked.
pub const MAX_RANGES: usize = 128;

/// A 4 KiB-aligned physical frame, named by its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(u64);

impl Frame {
    /// The frame starting at `addr`, if `addr` is frame aligned.
    pub const fn from_addr(addr: u64) -> Option<Frame> {
        if addr.is_multiple_of(FRAME_SIZE) {
            Some(Frame(addr))
        } else {
            None
        }
    }

    /// Physical address of the first byte.
    pub const fn addr(self) -> u64 {
        self.0
    }

    /// Frame number (address / 4096).
    pub const fn number(self) -> u64 {
        self.0 / FRAME_SIZE
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn new(start: u64, end: u64) -> Self {
        PhysRange { start, end }
    }

    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Shrinks to whole frames inside the range.
    fn frames_inside(self) -> PhysRange {
        PhysRange::new(align_up(self.start), self.end & !(FRAME_SIZE - 1))
    }

    /// Grows to whole frames covering the range.
    fn frames_covering(self) -> PhysRange {
        PhysRange::new(self.start & !(FRAME_SIZE - 1), align_up(self.end))
    }
}

fn align_up(a: u64) -> u64 {
    a.checked_add(FRAME_SIZE - 1)
        .map_or(!(FRAME_SIZE - 1), |v| v & !(FRAME_SIZE - 1))
}

/// The frame-aligned usable memory: every `Usable` map entry, minus every other map entry
/// (firmware maps sometimes overlap; the stricter kind wins) and minus `reserved`.
/// Sorted by address. Returns the ranges and how many had to be dropped for lack of room.
pub fn usable_ranges(
    map: &[MemoryRegion],
    reserved: &[PhysRange],
) -> (ArrayVec<PhysRange, MAX_RANGES>, usize) {
    let mut out: ArrayVec<PhysRange, MAX_RANGES> = ArrayVec::new();
    let mut dropped = 0;
    for r in map.iter().filter(|r| r.kind == MemoryKind::Usable) {
        let range = PhysRange::new(r.start, r.end()).frames_inside();
        if !range.is_empty() && out.try_push(range).is_err() {
            dropped += 1;
        }
    }
    let holes = map
        .iter()
        .filter(|r| r.kind != MemoryKind::Usable)
        .map(|r| PhysRange::new(r.start, r.end()))
        .chain(reserved.iter().copied());
    for hole in holes {
        let hole = hole.frames_covering();
        let mut rest = ArrayVec::new();
        for r in out {
            let pieces = if hole.end <= r.start || hole.start >= r.end {
                [r, PhysRange::new(0, 0)]
            } else {
                [
                    PhysRange::new(r.start, hole.start),
                    PhysRange::new(hole.end, r.end),
                ]
            };
            for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
                if rest.try_push(piece).is_err() {
                    dropped += 1;
                }
            }
        }
        out = rest;
    }
    // Overlapping usable entries (seen in broken maps) would double-count frames: merge.
    (merge_sorted(out), dropped)
}

/// Physical memory that holds RAM of any kind (usable, ACPI, NVS, defective), grown to whole
/// frames, sorted and merged: what the hypervisor's direct map covers. Firmware-reserved
/// ranges (often MMIO) are left out.
pub fn ram_ranges(map: &[MemoryRegion]) -> (ArrayVec<PhysRange, MAX_RANGES>, usize) {
    let mut out: ArrayVec<PhysRange, MAX_RANGES> = ArrayVec::new();
    let mut dropped = 0;
    for r in map.iter().filter(|r| r.kind != MemoryKind::Reserved) {
        let range = PhysRange::new(r.start, r.end()).frames_covering();
        if !range.is_empty() && out.try_push(range).is_err() {
            dropped += 1;
        }
    }
    (merge_sorted(out), dropped)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge_sorted(mut ranges: ArrayVec<PhysRange, MAX_RANGES>) -> ArrayVec<PhysRange, MAX_RANGES> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: ArrayVec<PhysRange, MAX_RANGES> = ArrayVec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Number of `u64` bitmap words needed to track `ranges`.
pub fn bitmap_words(ranges: &[PhysRange]) -> usize {
    let frames: u64 = ranges.iter().map(|r| r.len() / FRAME_SIZE).sum();
    usize::try_from(frames.div_ceil(64)).unwrap_or(usize::MAX)
}

/// Picks where to keep the bitmap itself: the lowest range that can hold `bytes` and lies
/// entirely below `limit` (the part of memory reachable during early boot).
pub fn place_bitmap(ranges: &[PhysRange], bytes: u64, limit: u64) -> Option<PhysRange> {
    let len = align_up(bytes);
    ranges
        .iter()
        .find(|r| r.len() >= len && r.start.checked_add(len).is_some_and(|e| e <= limit))
        .map(|r| PhysRange::new(r.start, r.start + len))
}

/// Adds the frame at `at` to `runs` (sorted, disjoint), merging it with its neighbours.
/// Returns false (and changes nothing) if `runs` is full or already holds the frame.
pub fn insert_frame<const N: usize>(runs: &mut ArrayVec<PhysRange, N>, at: u64) -> bool {
    let i = runs.partition_point(|r| r.end <= at);
    if i < runs.len() && runs[i].start <= at {
        return false;
    }
    let joins_left = i > 0 && runs[i - 1].end == at;
    let joins_right = i < runs.len() && runs[i].start == at + FRAME_SIZE;
    match (joins_left, joins_right) {
        (true, true) => {
            runs[i - 1].end = runs[i].end;
            runs.remove(i);
        }
        (true, false) => runs[i - 1].end += FRAME_SIZE,
        (false, true) => runs[i].start = at,
        (false, false) => {
            if runs
                .try_insert(i, PhysRange::new(at, at + FRAME_SIZE))
                .is_err()
            {
                return false;
            }
        }
    }
    true
}

/// Takes the lowest `frames` frames of `runs` (sorted, disjoint) out of it, as runs;
/// fewer if `runs` holds fewer.
pub fn take_lowest<const N: usize>(
    runs: &mut ArrayVec<PhysRange, N>,
    frames: u64,
) -> ArrayVec<PhysRange, N> {
    let mut left = frames;
    let mut out = ArrayVec::new();
    while left > 0 && !runs.is_empty() {
        let r = &mut runs[0];
        let n = (r.len() / FRAME_SIZE).min(left);
        out.push(PhysRange::new(r.start, r.start + n * FRAME_SIZE));
        r.start += n * FRAME_SIZE;
        left -= n;
        if r.is_empty() {
            runs.remove(0);
        }
    }
    out
}

/// Why an allocation or free failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame (or no free run of the requested length and alignment).
    OutOfMemory { requested: u64 },
    /// The frame was already free: a double free.
    DoubleFree { addr: u64 },
    /// The address is not a frame this allocator manages.
    NotManaged { addr: u64 },
    /// The storage handed to [`FrameAllocator::new`] is too small.
    BitmapTooSmall {
        needed_words: usize,
        given_words: usize,
    },
    /// A zero-length or zero-alignment request.
    BadRequest,
    /// The frame is one of the hypervisor's own for good (its page tables, heap, bitmap:
    /// [`FrameAllocator::pin_allocated`]); whoever frees it holds a wrong address.
    Pinned { addr: u64 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory { requested } => {
                write!(f, "out of physical memory ({requested} frame(s) requested)")
            }
            FrameError::DoubleFree { addr } => write!(f, "double free of frame {addr:#x}"),
            FrameError::Pinned { addr } => {
                write!(f, "frame {addr:#x} belongs to the hypervisor for good")
            }
            FrameError::NotManaged { addr } => {
                write!(f, "frame {addr:#x} is not managed by the allocator")
            }
            FrameError::BitmapTooSmall {
                needed_words,
                given_words,
            } => {
                write!(
                    f,
                    "frame bitmap too small: {given_words} words given, {needed_words} needed"
                )
            }
            FrameError::BadRequest => write!(f, "zero-sized or zero-aligned frame request"),
        }
    }
}

/// A usable range as the bitmap sees it.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// First frame number of the range.
    first_frame: u64,
    /// Frames in the range.
    frames: u64,
    /// Bitmap index of the range's first frame.
    first_bit: u64,
}

/// Bitmap allocator over a set of usable ranges.
pub struct FrameAllocator<'a> {
    spans: ArrayVec<Span, MAX_RANGES>,
    /// One bit per frame, set = free.
    bitmap: &'a mut [u64],
    total: u64,
    free: u64,
    /// Word to start the next single-frame search at; every word below it is all zero.
    hint: usize,
    /// Runs of frames allocated when [`Self::pin_allocated`] ran: never freed.
    pinned: ArrayVec<PhysRange, MAX_PINNED>,
}

/// Most runs of frames [`FrameAllocator::pin_allocated`] pins (boot allocates a handful).
pub const MAX_PINNED: usize = 16;
/// Most runs [`FrameAllocator::hold_from`] returns.
pub const MAX_HELD_RUNS: usize = 32;

impl<'a> FrameAllocator<'a> {
    /// An allocator with every frame of `ranges` free. `ranges` must be sorted and disjoint
    /// (as [`usable_ranges`] returns them).
    pub fn new(ranges: &[PhysRange], bitmap: &'a mut [u64]) -> Result<Self, FrameError> {
        let needed = bitmap_words(ranges);
        if bitmap.len() < needed {
            return Err(FrameError::BitmapTooSmall {
                needed_words: needed,
                given_words: bitmap.len(),
            });
        }
        bitmap.fill(0);
        let mut spans = ArrayVec::new();
        let mut bit = 0u64;
        for r in ranges.iter().take(MAX_RANGES) {
            let r = r.frames_inside();
            if r.is_empty() {
                continue;
            }
            let frames = r.len() / FRAME_SIZE;
            spans.push(Span {
                first_frame: r.start / FRAME_SIZE,
                frames,
                first_bit: bit,
            });
            bit += frames;
        }
        let mut alloc = FrameAllocator {
            spans,
            bitmap,
            total: bit,
            free: 0,
            hint: 0,
            pinned: ArrayVec::new(),
        };
        for b in 0..bit {
            alloc.set_bit(b, true);
        }
        alloc.free = bit;
        Ok(alloc)
    }

    /// Frames managed in all.
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Allocates one frame (the lowest free one).
    pub fn alloc(&mut self) -> Result<Frame, FrameError> {
        for w in self.hint..self.bitmap.len() {
            let word = self.bitmap[w];
            if word != 0 {
                self.hint = w;
                let bit = w as u64 * 64 + u64::from(word.trailing_zeros());
                self.set_bit(bit, false);
                self.free -= 1;
                return Ok(Frame(self.frame_of_bit(bit)));
            }
        }
        self.hint = self.bitmap.len();
        Err(FrameError::OutOfMemory { requested: 1 })
    }

    /// Allocates `count` physically contiguous frames whose first frame number is a
    /// multiple of `align` (in frames; 512 gives a 2 MiB-aligned run).
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Result<Frame, FrameError> {
        if count == 0 || align == 0 {
            return Err(FrameError::BadRequest);
        }
        for s in 0..self.spans.len() {
            let span = self.spans[s];
            let end = span.first_frame + span.frames;
            let mut start = span.first_frame.div_ceil(align) * align;
            while start.checked_add(count).is_some_and(|e| e <= end) {
                let busy = (start..start + count)
                    .find(|&f| !self.bit(span.first_bit + (f - span.first_frame)));
                if let Some(f) = busy {
                    start = (f + 1).div_ceil(align) * align;
                    continue;
                }
                for f in start..start + count {
                    self.set_bit(span.first_bit + (f - span.first_frame), false);
                }
                self.free -= count;
                return Ok(Frame(start * FRAME_SIZE));
            }
        }
        Err(FrameError::OutOfMemory { requested: count })
    }

    /// Allocates the frame at `frame` itself, if it is managed and free.
    pub fn take(&mut self, frame: Frame) -> Result<(), FrameError> {
        let bit = self
            .bit_of_frame(frame.addr())
            .ok_or(FrameError::NotManaged { addr: frame.addr() })?;
        if !self.bit(bit) {
            return Err(FrameError::OutOfMemory { requested: 1 });
        }
        self.set_bit(bit, false);
        self.free -= 1;
        Ok(())
    }

    /// Returns a frame. Freeing a free frame, a pinned one or one we do not manage is an
    /// error, and the frame stays as it was.
    pub fn free(&mut self, frame: Frame) -> Result<(), FrameError> {
        let bit = self
            .bit_of_frame(frame.addr())
            .ok_or(FrameError::NotManaged { addr: frame.addr() })?;
        if self
            .pinned
            .iter()
            .any(|r| (r.start..r.end).contains(&frame.addr()))
        {
            return Err(FrameError::Pinned { addr: frame.addr() });
        }
        if self.bit(bit) {
            return Err(FrameError::DoubleFree { addr: frame.addr() });
        }
        self.set_bit(bit, true);
        self.free += 1;
        self.hint = self.hint.min((bit / 64) as usize);
        Ok(())
    }

    /// Returns `count` contiguous frames starting at `first`; stops at the first error.
    pub fn free_contiguous(&mut self, first: Frame, count: u64) -> Result<(), FrameError> {
        for i in 0..count {
            self.free(Frame(first.addr() + i * FRAME_SIZE))?;
        }
        Ok(())
    }

    /// Marks every managed frame overlapping `range` as in use (for memory taken before the
    /// allocator existed, such as the bitmap itself). Returns how many frames changed.
    pub fn reserve(&mut self, range: PhysRange) -> u64 {
        let range = range.frames_covering();
        let mut changed = 0;
        let mut addr = range.start;
        while addr < range.end {
            if let Some(bit) = self.bit_of_frame(addr) {
                if self.bit(bit) {
                    self.set_bit(bit, false);
                    self.free -= 1;
                    changed += 1;
                }
            }
            addr += FRAME_SIZE;
        }
        changed
    }

    /// Takes the free frames from `from` upwards until `count` frames are taken (or the
    /// managed memory ends), marking them in use, and returns them as runs (sorted, each
    /// the frames of one span that were free side by side). For memory held back at boot
    /// for a later owner (dom0's identity-mapped RAM) while boot allocates above it.
    /// Past [`MAX_HELD_RUNS`] runs it stops early.
    pub fn hold_from(&mut self, from: u64, count: u64) -> ArrayVec<PhysRange, MAX_HELD_RUNS> {
        let mut runs: ArrayVec<PhysRange, MAX_HELD_RUNS> = ArrayVec::new();
        let mut taken = 0;
        for s in 0..self.spans.len() {
            let span = self.spans[s];
            for i in 0..span.frames {
                if taken == count {
                    return runs;
                }
                let addr = (span.first_frame + i) * FRAME_SIZE;
                let bit = span.first_bit + i;
                if addr < from || !self.bit(bit) {
                    continue;
                }
                match runs.last_mut() {
                    Some(r) if r.end == addr => r.end += FRAME_SIZE,
                    _ => {
                        if runs
                            .try_push(PhysRange::new(addr, addr + FRAME_SIZE))
                            .is_err()
                        {
                            return runs;
                        }
                    }
                }
                self.set_bit(bit, false);
                self.free -= 1;
                taken += 1;
            }
        }
        runs
    }

    /// Pins every frame allocated so far (at boot: the hypervisor's page tables, heap and
    /// frame table, which are never freed) except those in `except` (memory held for a
    /// later owner): [`Self::free`] refuses them from now on.
    /// Returns the runs pinned; past [`MAX_PINNED`] runs, the highest stay unpinned.
    pub fn pin_allocated(&mut self, except: &[PhysRange]) -> &[PhysRange] {
        self.pinned.clear();
        for s in &self.spans {
            let mut run: Option<u64> = None;
            let mut i = 0;
            while i <= s.frames {
                let bit = s.first_bit + i;
                // Outside a run, a whole word of free frames is skipped at once (most of
                // memory, at boot).
                if run.is_none()
                    && bit % 64 == 0
                    && i + 64 <= s.frames
                    && self.bitmap[(bit / 64) as usize] == u64::MAX
                {
                    i += 64;
                    continue;
                }
                let addr = (s.first_frame + i) * FRAME_SIZE;
                let used = i < s.frames
                    && !self.bit(bit)
                    && !except.iter().any(|r| (r.start..r.end).contains(&addr));
                match (run, used) {
                    (None, true) => run = Some(addr),
                    (Some(start), false) => {
                        run = None;
                        if self.pinned.try_push(PhysRange::new(start, addr)).is_err() {
                            return &self.pinned;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        &self.pinned
    }

    /// Whether `frame` is managed and currently allocated.
    pub fn is_allocated(&self, frame: Frame) -> bool {
        self.bit_of_frame(frame.addr())
            .is_some_and(|b| !self.bit(b))
    }

    fn bit(&self, bit: u64) -> bool {
        self.bitmap[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set_bit(&mut self, bit: u64, free: bool) {
        let word = &mut self.bitmap[(bit / 64) as usize];
        if free {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }

    fn frame_of_bit(&self, bit: u64) -> u64 {
        let idx = self.spans.partition_point(|s| s.first_bit <= bit) - 1;
        let s = self.spans[idx];
        (s.first_frame + (bit - s.first_bit)) * FRAME_SIZE
    }

    fn bit_of_frame(&self, addr: u64) -> Option<u64> {
        if !addr.is_multiple_of(FRAME_SIZE) {
            return None;
        }
        let n = addr / FRAME_SIZE;
        let idx = self
            .spans
            .partition_point(|s| s.first_frame <= n)
            .checked_sub(1)?;
        let s = self.spans[idx];
        (n < s.first_frame + s.frames).then(|| s.first_bit + (n - s.first_frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    #[test]
    fn hold_from_takes_free_frames_upwards_in_runs() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x20_0000),
            PhysRange::new(0x30_0000, 0x40_0000),
        ];
        let mut bits = vec![0u64; bitmap_words(&ranges)];
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        // Something allocated at 0x100000 and 0x180000 before the hold.
        a.reserve(PhysRange::new(0x10_0000, 0x10_1000));
        a.reserve(PhysRange::new(0x18_0000, 0x18_2000));
        let free = a.free_frames();
        let runs = a.hold_from(0x10_0000, 0x90);
        assert_eq!(
            runs.as_slice(),
            &[
                PhysRange::new(0x10_1000, 0x18_0000),
                PhysRange::new(0x18_2000, 0x19_3000)
            ]
        );
        assert_eq!(a.free_frames(), free - 0x90);
        // Held frames are in use; the next allocation comes from above them.
        assert_eq!(a.alloc().unwrap().addr(), 0x19_3000);
        // Not pinned when excepted; freed one by one afterwards.
        let pinned: Vec<PhysRange> = a.pin_allocated(&runs).to_vec();
        assert!(pinned
            .iter()
            .all(|p| runs.iter().all(|r| p.end <= r.start || p.start >= r.end)));
        a.free(Frame(0x10_1000)).unwrap();
        // A hold across the gap between spans, and one asking for more than there is.
        let runs = a.hold_from(0x1f_f000, 3);
        assert_eq!(
            runs.as_slice(),
            &[
                PhysRange::new(0x1f_f000, 0x20_0000),
                PhysRange::new(0x30_0000, 0x30_2000)
            ]
        );
        let left = a.free_frames();
        let runs = a.hold_from(0, u64::MAX);
        assert_eq!(runs.iter().map(|r| r.len() / FRAME_SIZE).sum::<u64>(), left);
        assert_eq!(a.free_frames(), 0);
    }

    #[test]
    fn runs_take_frames_in_order_and_merge() {
        let mut w: ArrayVec<PhysRange, 4> = ArrayVec::new();
        assert!(insert_frame(&mut w, 0x5000));
        assert!(insert_frame(&mut w, 0x3000));
        assert!(insert_frame(&mut w, 0x4000)); // joins both
        assert_eq!(w.as_slice(), &[PhysRange::new(0x3000, 0x6000)]);
        assert!(!insert_frame(&mut w, 0x4000), "already there");
        assert!(insert_frame(&mut w, 0x9000));
        assert!(insert_frame(&mut w, 0x8000)); // joins the right one
        assert!(insert_frame(&mut w, 0x6000)); // joins the left one
        assert!(insert_frame(&mut w, 0x1000));
        assert!(insert_frame(&mut w, 0xc000));
        assert!(!insert_frame(&mut w, 0xe000), "full");
        assert!(insert_frame(&mut w, 0xd000), "full, but it merges");
        assert_eq!(
            w.as_slice(),
            &[
                PhysRange::new(0x1000, 0x2000),
                PhysRange::new(0x3000, 0x7000),
                PhysRange::new(0x8000, 0xa000),
                PhysRange::new(0xc000, 0xe000),
            ][..],
            "{w:?}"
        );
        let got = take_lowest(&mut w, 3);
        assert_eq!(
            got.as_slice(),
            &[
                PhysRange::new(0x1000, 0x2000),
                PhysRange::new(0x3000, 0x5000)
            ]
        );
        assert_eq!(w[0], PhysRange::new(0x5000, 0x7000));
        let rest = take_lowest(&mut w, 100);
        assert_eq!(rest.iter().map(|r| r.len()).sum::<u64>(), 6 * FRAME_SIZE);
        assert!(w.is_empty());
    }

    #[test]
    fn take_allocates_that_frame_only_if_free() {
        let ranges = [PhysRange::new(0x10_0000, 0x20_0000)];
        let mut bits = vec![0u64; bitmap_words(&ranges)];
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        a.take(Frame(0x15_0000)).unwrap();
        assert!(a.is_allocated(Frame(0x15_0000)));
        assert_eq!(
            a.take(Frame(0x15_0000)),
            Err(FrameError::OutOfMemory { requested: 1 })
        );
        assert_eq!(
            a.take(Frame(0x20_0000)),
            Err(FrameError::NotManaged { addr: 0x20_0000 })
        );
        assert_eq!(a.alloc().unwrap().addr(), 0x10_0000);
    }

    const MIB: u64 = 1 << 20;

    fn region(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    fn qemu_like_map() -> Vec<MemoryRegion> {
        vec![
            region(0, 0x9fc00, MemoryKind::Usable),
            region(0x9fc00, 0x400, MemoryKind::Reserved),
            region(0xf0000, 0x10000, MemoryKind::Reserved),
            region(0x10_0000, 0x3fee_0000, MemoryKind::Usable),
            region(0x3ffe_0000, 0x20000, MemoryKind::Reserved),
            region(0xfffc_0000, 0x40000, MemoryKind::Reserved),
        ]
    }

    #[test]
    fn usable_ranges_subtract_reservations_and_align() {
        let reserved = [
            PhysRange::new(0, MIB),
            PhysRange::new(0x20_0000, 0x23_4567),
            PhysRange::new(0x80_0100, 0x80_0200),
        ];
        let (ranges, dropped) = usable_ranges(&qemu_like_map(), &reserved);
        assert_eq!(dropped, 0);
        assert_eq!(
            ranges.as_slice(),
            &[
                PhysRange::new(0x10_0000, 0x20_0000),
                PhysRange::new(0x23_5000, 0x80_0000),
                PhysRange::new(0x80_1000, 0x3ffe_0000),
            ]
        );
    }

    #[test]
    fn overlapping_reserved_entry_wins_over_usable() {
        let map = [
            region(0x10_0000, 0x10_0000, MemoryKind::Usable),
            region(0x18_0000, 0x1000, MemoryKind::AcpiNvs),
        ];
        let (ranges, _) = usable_ranges(&map, &[]);
        assert_eq!(
            ranges.as_slice(),
            &[
                PhysRange::new(0x10_0000, 0x18_0000),
                PhysRange::new(0x18_1000, 0x20_0000)
            ]
        );
    }

    #[test]
    fn overlapping_usable_entries_are_merged() {
        let map = [
            region(0x10_0000, 0x10_0000, MemoryKind::Usable),
            region(0x18_0000, 0x10_0000, MemoryKind::Usable),
        ];
        let (ranges, _) = usable_ranges(&map, &[]);
        assert_eq!(ranges.as_slice(), &[PhysRange::new(0x10_0000, 0x28_0000)]);
    }

    #[test]
    fn ram_ranges_cover_ram_kinds_and_skip_reserved() {
        let (ranges, dropped) = ram_ranges(&qemu_like_map());
        assert_eq!(dropped, 0);
        // 0..0x9fc00 grows to a whole frame and is followed by reserved firmware ranges;
        // the ACPI-free QEMU map has one big RAM range from 1 MiB.
        assert_eq!(
            ranges.as_slice(),
            &[
                PhysRange::new(0, 0xa0000),
                PhysRange::new(0x10_0000, 0x3ffe_0000)
            ]
        );
        let map = [
            region(0x10_0000, 0x1000, MemoryKind::Usable),
            region(0x10_1000, 0x800, MemoryKind::AcpiReclaimable),
        ];
        assert_eq!(
            ram_ranges(&map).0.as_slice(),
            &[PhysRange::new(0x10_0000, 0x10_2000)]
        );
    }

    #[test]
    fn unaligned_tiny_usable_entry_vanishes() {
        let map = [region(0x1001, 0xffe, MemoryKind::Usable)];
        assert!(usable_ranges(&map, &[]).0.is_empty());
    }

    fn allocator(ranges: &[PhysRange]) -> (Vec<u64>, usize) {
        let words = bitmap_words(ranges);
        (vec![0u64; words], words)
    }

    #[test]
    fn allocates_lowest_first_and_counts() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x10_4000),
            PhysRange::new(0x20_0000, 0x20_2000),
        ];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        assert_eq!(a.total_frames(), 6);
        let got: Vec<u64> = (0..6).map(|_| a.alloc().unwrap().addr()).collect();
        assert_eq!(
            got,
            [0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000, 0x20_0000, 0x20_1000]
        );
        assert_eq!(a.free_frames(), 0);
    }

    #[test]
    fn exhaustion_is_an_error_and_recovers_after_free() {
        let ranges = [PhysRange::new(0x10_0000, 0x10_3000)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        let frames: Vec<Frame> = (0..3).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.alloc(), Err(FrameError::OutOfMemory { requested: 1 }));
        assert_eq!(
            a.alloc(),
            Err(FrameError::OutOfMemory { requested: 1 }),
            "stays exhausted"
        );
        a.free(frames[1]).unwrap();
        assert_eq!(a.alloc(), Ok(frames[1]));
    }

    #[test]
    fn double_free_is_detected() {
        let ranges = [PhysRange::new(0x10_0000, 0x10_8000)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        let f = a.alloc().unwrap();
        a.free(f).unwrap();
        assert_eq!(a.free(f), Err(FrameError::DoubleFree { addr: 0x10_0000 }));
        assert_eq!(a.free_frames(), 8, "a rejected double free changes nothing");
        let never = Frame::from_addr(0x10_7000).unwrap();
        assert_eq!(
            a.free(never),
            Err(FrameError::DoubleFree { addr: 0x10_7000 })
        );
    }

    #[test]
    fn pinned_frames_are_never_freed() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x10_3000),
            PhysRange::new(0x30_0000, 0x30_4000),
        ];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        let boot: Vec<Frame> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(boot[3].addr(), 0x30_0000, "the first span is used up");
        // A run that is not at the bottom (as the heap, above the image, is).
        let heap = a.alloc_contiguous(2, 2).unwrap();
        assert_eq!(heap.addr(), 0x30_2000);
        assert_eq!(
            a.pin_allocated(&[]),
            [
                PhysRange::new(0x10_0000, 0x10_3000),
                PhysRange::new(0x30_0000, 0x30_1000),
                PhysRange::new(0x30_2000, 0x30_4000),
            ]
        );
        let later = a.alloc().unwrap();
        assert_eq!(later.addr(), 0x30_1000);
        assert_eq!(a.free(heap), Err(FrameError::Pinned { addr: heap.addr() }));
        for f in &boot {
            assert_eq!(a.free(*f), Err(FrameError::Pinned { addr: f.addr() }));
        }
        assert_eq!(a.free_frames(), 0, "a refused free changes nothing");
        a.free(later).unwrap();
        assert_eq!(
            a.alloc().unwrap(),
            later,
            "frames above the pin come and go"
        );
    }

    #[test]
    fn pinning_finds_runs_past_whole_free_words() {
        // A span that starts mid-word (its first bit is not word aligned) and is long enough
        // for whole free words between the runs.
        let ranges = [
            PhysRange::new(0x10_0000, 0x10_5000),
            PhysRange::new(0x100_0000, 0x100_0000 + 1000 * FRAME_SIZE),
        ];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        for _ in 0..130 {
            a.alloc().unwrap();
        }
        let far = a.alloc_contiguous(5, 512).unwrap();
        assert_eq!(far.addr(), 0x100_0000 + 512 * FRAME_SIZE);
        assert_eq!(
            a.pin_allocated(&[]),
            [
                PhysRange::new(0x10_0000, 0x10_5000),
                PhysRange::new(0x100_0000, 0x100_0000 + 125 * FRAME_SIZE),
                PhysRange::new(far.addr(), far.addr() + 5 * FRAME_SIZE),
            ]
        );
    }

    #[test]
    fn foreign_frames_are_rejected() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x10_2000),
            PhysRange::new(0x30_0000, 0x30_1000),
        ];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        for addr in [0, 0x10_2000, 0x2f_f000, 0x30_1000, !0xfff] {
            let f = Frame::from_addr(addr).unwrap();
            assert_eq!(a.free(f), Err(FrameError::NotManaged { addr }));
        }
        assert!(Frame::from_addr(0x10_0800).is_none());
    }

    #[test]
    fn contiguous_aligned_runs() {
        // 0x1ff000..0x600000: the first 2 MiB-aligned run of 512 frames starts at 0x200000.
        let ranges = [PhysRange::new(0x1f_f000, 0x60_0000)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        let one = a.alloc().unwrap();
        assert_eq!(one.addr(), 0x1f_f000);
        let big = a.alloc_contiguous(512, 512).unwrap();
        assert_eq!(big.addr(), 0x20_0000);
        let big2 = a.alloc_contiguous(512, 512).unwrap();
        assert_eq!(big2.addr(), 0x40_0000);
        assert_eq!(
            a.alloc_contiguous(512, 512),
            Err(FrameError::OutOfMemory { requested: 512 })
        );
        assert_eq!(a.alloc_contiguous(0, 1), Err(FrameError::BadRequest));
        a.free_contiguous(big, 512).unwrap();
        assert_eq!(a.alloc_contiguous(3, 1).unwrap().addr(), 0x20_0000);
    }

    #[test]
    fn contiguous_skips_holes() {
        let ranges = [PhysRange::new(0x10_0000, 0x10_8000)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        a.reserve(PhysRange::new(0x10_2000, 0x10_3000));
        assert_eq!(a.alloc_contiguous(4, 1).unwrap().addr(), 0x10_3000);
        assert_eq!(a.alloc_contiguous(2, 1).unwrap().addr(), 0x10_0000);
        assert!(a.alloc_contiguous(2, 1).is_err());
    }

    #[test]
    fn reserve_takes_frames_out_once() {
        let ranges = [PhysRange::new(0x10_0000, 0x10_4000)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        assert_eq!(a.reserve(PhysRange::new(0x10_0800, 0x10_1001)), 2);
        assert_eq!(a.reserve(PhysRange::new(0x10_0000, 0x10_2000)), 0);
        assert_eq!(a.free_frames(), 2);
        assert_eq!(a.alloc().unwrap().addr(), 0x10_2000);
        assert!(a.is_allocated(Frame::from_addr(0x10_0000).unwrap()));
    }

    #[test]
    fn bitmap_size_is_checked() {
        let ranges = [PhysRange::new(0, 65 * FRAME_SIZE)];
        assert_eq!(bitmap_words(&ranges), 2);
        let mut small = [0u64; 1];
        assert_eq!(
            FrameAllocator::new(&ranges, &mut small).err(),
            Some(FrameError::BitmapTooSmall {
                needed_words: 2,
                given_words: 1
            })
        );
    }

    #[test]
    fn bitmap_placement_respects_limit() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x10_2000),
            PhysRange::new(0x20_0000, 0x40_0000),
            PhysRange::new(0x1_0000_0000, 0x2_0000_0000),
        ];
        assert_eq!(
            place_bitmap(&ranges, 5000, 1 << 32),
            Some(PhysRange::new(0x10_0000, 0x10_2000))
        );
        assert_eq!(
            place_bitmap(&ranges, 0x10_0000, 1 << 32),
            Some(PhysRange::new(0x20_0000, 0x30_0000))
        );
        assert_eq!(place_bitmap(&ranges, 0x30_0000, 1 << 32), None);
    }

    #[test]
    fn many_frames_round_trip() {
        let ranges = [PhysRange::new(0x10_0000, 0x10_0000 + 1000 * FRAME_SIZE)];
        let (mut bits, _) = allocator(&ranges);
        let mut a = FrameAllocator::new(&ranges, &mut bits).unwrap();
        let mut frames: Vec<Frame> = (0..1000).map(|_| a.alloc().unwrap()).collect();
        frames.sort();
        frames.dedup();
        assert_eq!(frames.len(), 1000, "no frame handed out twice");
        for f in frames.iter().rev() {
            a.free(*f).unwrap();
        }
        assert_eq!(a.free_frames(), 1000);
        assert_eq!(
            a.alloc().unwrap().addr(),
            0x10_0000,
            "hint rewinds after frees"
        );
    }
}
