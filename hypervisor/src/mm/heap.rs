//! The hypervisor heap: one contiguous run of frames, reached through the direct map.
#![allow(unsafe_code)]

use super::frame::{FrameAllocator, FRAME_SIZE};
use super::phys::to_virt;
use linked_list_allocator::LockedHeap;

/// Heap size. Domains' large memory never comes from here (it comes in frames).
pub const HEAP_SIZE: u64 = 16 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Takes `HEAP_SIZE` bytes of frames and hands them to the heap.
pub fn init(frames: &mut FrameAllocator<'static>) -> Result<(u64, u64), super::frame::FrameError> {
    let first = frames.alloc_contiguous(HEAP_SIZE / FRAME_SIZE, 1)?;
    // SAFETY: the frames were just allocated for the heap alone, are mapped read-write in
    // the direct map, and are never freed; `init` runs once, before any allocation.
    unsafe { HEAP.lock().init(to_virt(first.addr()), HEAP_SIZE as usize) };
    Ok((first.addr(), HEAP_SIZE))
}

/// Bytes currently allocated and free in the heap.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}
