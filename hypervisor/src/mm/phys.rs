//! The direct map: every RAM byte at `DIRECT_MAP_BASE + physical address`.
//!
//! The boot tables map the first 4 GiB there; the final tables map all RAM (see `paging`).
//! This module holds the only raw accesses to physical memory through that window.
#![allow(unsafe_code)]

use super::frame::{FrameAllocator, FRAME_SIZE};
use crate::sync::{Level, Lock};
use ferrovisor_boot::entry::DIRECT_MAP_BASE;
use ferrovisor_boot::PhysRead;

/// The global frame allocator, set up once by `mm::paging::init`.
pub static FRAMES: Lock<Option<FrameAllocator<'static>>> = Lock::new(Level::Frames, None);

/// How much of physical memory the direct map covers right now. Starts at the 4 GiB of the
/// boot tables; raised when the final tables are live.
static MAPPED_LIMIT: Lock<u64> = Lock::new(Level::MappedLimit, 1 << 32);

/// Records how far the direct map reaches.
pub fn set_mapped_limit(limit: u64) {
    *MAPPED_LIMIT.lock() = limit;
}

/// The highest physical address (exclusive) the direct map currently covers.
pub fn mapped_limit() -> u64 {
    *MAPPED_LIMIT.lock()
}

/// Virtual address of physical address `pa` in the direct map.
pub fn to_virt(pa: u64) -> *mut u8 {
    (DIRECT_MAP_BASE + pa) as *mut u8
}

/// Fills a frame with zeros.
pub fn zero_frame(pa: u64) {
    assert!(
        pa.is_multiple_of(FRAME_SIZE) && pa + FRAME_SIZE <= mapped_limit(),
        "zero_frame({pa:#x}) outside the direct map"
    );
    // SAFETY: the frame lies inside the direct map (checked above), is 4 KiB aligned, and
    // the caller owns it (it came from the frame allocator), so nothing else is using it.
    unsafe { core::ptr::write_bytes(to_virt(pa), 0, FRAME_SIZE as usize) };
}

/// Stores `data` at `dst` with volatile accesses: bytes up to an 8-byte boundary, then
/// aligned 8-byte words, then the tail bytes. A guest may access the memory at the same
/// time: each aligned access is one instruction, so it sees every byte old or new, as
/// with byte copies, at an eighth of the accesses (this is what loads kernels into guests
/// and serves grant copies).
///
/// # Safety
/// `dst..dst + data.len()` must be direct-map memory the caller may write.
pub unsafe fn store_volatile(dst: *mut u8, data: &[u8]) {
    let head = dst.align_offset(8).min(data.len());
    let (first, rest) = data.split_at(head);
    let mut words = rest.chunks_exact(8);
    let mut p = dst;
    // `p` stays inside `dst..dst + data.len()`: it advances by what has been stored.
    for &b in first {
        // SAFETY: `p` is inside the caller's writable range.
        unsafe { p.write_volatile(b) };
        p = p.wrapping_add(1);
    }
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        // SAFETY: the 8 bytes at `p` are inside the caller's writable range, and `p` is
        // 8-byte aligned (past the `head` bytes).
        unsafe { p.cast::<u64>().write_volatile(u64::from_ne_bytes(word)) };
        p = p.wrapping_add(8);
    }
    for &b in words.remainder() {
        // SAFETY: `p` is inside the caller's writable range.
        unsafe { p.write_volatile(b) };
        p = p.wrapping_add(1);
    }
}

/// Loads `buf.len()` bytes from `src` into `buf` with volatile accesses, as
/// [`store_volatile`] stores them.
///
/// # Safety
/// `src..src + buf.len()` must be direct-map memory the caller may read.
pub unsafe fn load_volatile(src: *const u8, buf: &mut [u8]) {
    let head = src.align_offset(8).min(buf.len());
    let (first, rest) = buf.split_at_mut(head);
    let mut words = rest.chunks_exact_mut(8);
    let mut p = src;
    // `p` stays inside `src..src + buf.len()`: it advances by what has been loaded.
    for b in first {
        // SAFETY: `p` is inside the caller's readable range.
        *b = unsafe { p.read_volatile() };
        p = p.wrapping_add(1);
    }
    for w in &mut words {
        // SAFETY: the 8 bytes at `p` are inside the caller's readable range, and `p` is
        // 8-byte aligned (past the `head` bytes).
        let word = unsafe { p.cast::<u64>().read_volatile() };
        w.copy_from_slice(&word.to_ne_bytes());
        p = p.wrapping_add(8);
    }
    for b in words.into_remainder() {
        // SAFETY: `p` is inside the caller's readable range.
        *b = unsafe { p.read_volatile() };
        p = p.wrapping_add(1);
    }
}

/// Writes `data` at physical address `pa`, which must lie in a frame the caller owns
/// (a hypervisor frame such as a grant-table page); volatile, as a guest may map it.
pub fn write_bytes(pa: u64, data: &[u8]) {
    let end = pa.checked_add(data.len() as u64);
    assert!(
        end.is_some_and(|e| e <= mapped_limit()),
        "write_bytes({pa:#x}) outside the direct map"
    );
    // SAFETY: inside the direct map (checked above), in memory the caller owns.
    unsafe { store_volatile(to_virt(pa), data) };
}

/// Copies `len` bytes from physical address `src` to `dst` (overlap allowed, as memmove),
/// for a grant copy between frames the caller holds: a granted page with a frame
/// reference, or its own domain's RAM. Each range must lie inside one frame of the direct
/// map (checked: a violation is a hypervisor bug and panics).
pub fn copy_in_frames(dst: u64, src: u64, len: usize) {
    let within = |pa: u64| {
        let end = pa.checked_add(len as u64);
        end.is_some_and(|e| {
            e <= mapped_limit() && (len == 0 || pa / FRAME_SIZE == (e - 1) / FRAME_SIZE)
        })
    };
    assert!(
        within(dst) && within(src),
        "copy_in_frames({dst:#x}, {src:#x}, {len}) outside one frame of the direct map"
    );
    let (d, s) = (to_virt(dst), to_virt(src));
    // Backwards when the destination starts inside the source (same frame, overlapping).
    if dst > src && dst < src + len as u64 {
        for i in (0..len).rev() {
            // SAFETY: `src + i` and `dst + i` lie inside one direct-mapped frame each
            // (checked above); the caller holds both frames (frame references or its own
            // domain's RAM), so they stay allocated for this call. Guests may access the
            // bytes concurrently: byte-wide volatile accesses tolerate that (no Rust
            // reference is formed).
            unsafe {
                d.wrapping_add(i)
                    .write_volatile(s.wrapping_add(i).read_volatile())
            };
        }
        return;
    }
    // Forwards (a correct memmove when the destination is below the source): 8-byte moves,
    // however each side is aligned (netback's copies are often 2 bytes apart), then the
    // tail. One string instruction each: emulators run them far faster than a loop of
    // single loads and stores.
    // SAFETY: both ranges lie inside one direct-mapped frame each (checked above), held by
    // the caller for this call; the moves touch exactly `[src, src+len)` and
    // `[dst, dst+len)`. Guests may access them concurrently, which the assembly (opaque to
    // the compiler, no Rust reference formed) tolerates: each byte is seen old or new. The
    // direction flag is clear (the ABI guarantees it at any asm block) and string moves
    // change no flags.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            "mov ecx, {tail:e}",
            "rep movsb",
            tail = in(reg) len % 8,
            inout("rcx") len / 8 => _,
            inout("rsi") s => _,
            inout("rdi") d => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Reads boot-loader structures through the direct map.
pub struct BootMemory;

impl PhysRead for BootMemory {
    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let end = addr.checked_add(len)?;
        if end > mapped_limit() {
            return None;
        }
        // SAFETY: `[addr, end)` lies in the direct map (checked above). Boot-loader data is
        // only read, and nothing writes it while the returned borrow lives (the frame
        // allocator never hands out module or boot-information memory, which it reserves).
        Some(unsafe { core::slice::from_raw_parts(to_virt(addr), len as usize) })
    }
}

/// Page-table entry access through the direct map, for the `pagetable` engine.
pub struct DirectMap;

impl DirectMap {
    fn entry_ptr(table: u64, index: usize) -> *mut u64 {
        assert!(
            table.is_multiple_of(FRAME_SIZE)
                && table + FRAME_SIZE <= mapped_limit()
                && index < pagetable::ENTRIES
        );
        to_virt(table).cast::<u64>().wrapping_add(index)
    }
}

impl pagetable::PhysMem for DirectMap {
    fn read_entry(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `entry_ptr` checked the table is a mapped, aligned frame and the index is
        // in range, so the pointer is valid and 8-byte aligned; a volatile load is a single
        // 64-bit access, as the hardware walker requires.
        unsafe { Self::entry_ptr(table, index).read_volatile() }
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as for `read_entry`; the engine only writes tables it owns.
        unsafe { Self::entry_ptr(table, index).write_volatile(value) }
    }
}

/// Reports a frame release the allocator refused (a double free, a pinned or an unmanaged
/// frame): a hypervisor bug, whose frame stays as it was rather than go back to the pool.
/// Checked builds stop there.
#[track_caller]
pub fn released(r: Result<(), super::frame::FrameError>) {
    if let Err(e) = r {
        let at = core::panic::Location::caller();
        log::error!("frame release refused at {at}: {e}");
        debug_assert!(false, "frame release refused: {e}");
    }
}

/// Hands page-table frames from the global allocator to the `pagetable` engine.
pub struct TableFrames<'a>(pub &'a mut FrameAllocator<'static>);

impl pagetable::FrameSource for TableFrames<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let frame = self.0.alloc().ok()?;
        if frame.addr() + FRAME_SIZE > mapped_limit() {
            // Not reachable yet through the direct map: give it back and report exhaustion.
            released(self.0.free(frame));
            return None;
        }
        zero_frame(frame.addr());
        Some(frame.addr())
    }

    fn free_table(&mut self, table: u64) {
        if let Some(frame) = super::frame::Frame::from_addr(table) {
            released(self.0.free(frame));
        }
    }
}

/// Allocates `count` contiguous zeroed frames aligned to `align` frames from the global
/// allocator; None when memory is exhausted. For VMCS/VMCB pages, bitmaps and guest RAM.
pub fn alloc_zeroed(count: u64, align: u64) -> Option<u64> {
    let first = alloc_unscrubbed(count, align)?;
    for i in 0..count {
        zero_frame(first + i * FRAME_SIZE);
    }
    Some(first)
}

/// [`alloc_zeroed`] without the zeroing: the frames hold whatever they held when freed.
/// Only for memory whose receiver may see that (the initial control domain's RAM at boot,
/// [`crate::domain::memory::Scrub`]).
pub fn alloc_unscrubbed(count: u64, align: u64) -> Option<u64> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut()?;
    let first = frames.alloc_contiguous(count, align).ok()?;
    Some(first.addr())
}

/// Returns frames obtained from [`alloc_zeroed`]. A double free is a hypervisor bug and is
/// reported, not ignored.
#[track_caller]
pub fn free_frames(first: u64, count: u64) {
    let mut guard = FRAMES.lock();
    if let (Some(frames), Some(f)) = (guard.as_mut(), super::frame::Frame::from_addr(first)) {
        released(frames.free_contiguous(f, count));
    }
}

/// A run of contiguous frames owned by the hypervisor (decompression buffers and the
/// like), freed when dropped. Reached only through the slices it hands out.
pub struct FrameBuf {
    first: u64,
    count: u64,
}

impl FrameBuf {
    /// Allocates `bytes` (rounded up to frames) of zeroed memory; None if there is not
    /// enough contiguous free memory inside the direct map.
    pub fn new(bytes: u64) -> Option<FrameBuf> {
        let count = bytes.div_ceil(FRAME_SIZE).max(1);
        let first = alloc_zeroed(count, 1)?;
        if first + count * FRAME_SIZE > mapped_limit() {
            free_frames(first, count);
            return None;
        }
        Some(FrameBuf { first, count })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        (self.count * FRAME_SIZE) as usize
    }

    /// Whether it holds no bytes (never: `new` allocates at least one frame).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the frames were allocated for this buffer alone, lie inside the direct
        // map (checked in `new`) and stay allocated until `drop`; the borrow of `self`
        // prevents a concurrent `as_mut_slice`.
        unsafe { core::slice::from_raw_parts(to_virt(self.first), self.len()) }
    }

    /// The contents, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, with exclusive access through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(to_virt(self.first), self.len()) }
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        free_frames(self.first, self.count);
    }
}

/// Reads the u64 at the 8-aligned physical address `pa` of a frame the caller owns (a
/// hypervisor bookkeeping frame).
pub fn read_u64(pa: u64) -> u64 {
    assert!(
        pa.is_multiple_of(8) && pa + 8 <= mapped_limit(),
        "read_u64({pa:#x}) outside the direct map"
    );
    // SAFETY: 8-aligned, inside the direct map (checked above), in a frame the caller owns
    // (nothing else writes it concurrently).
    unsafe { to_virt(pa).cast::<u64>().read() }
}

/// Writes the u64 at the 8-aligned physical address `pa` of a frame the caller owns.
pub fn write_u64(pa: u64, v: u64) {
    assert!(
        pa.is_multiple_of(8) && pa + 8 <= mapped_limit(),
        "write_u64({pa:#x}) outside the direct map"
    );
    // SAFETY: as in `read_u64`; the caller owns the frame, so no one else accesses it.
    unsafe { to_virt(pa).cast::<u64>().write(v) };
}
