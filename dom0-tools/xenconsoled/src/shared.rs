//! The console page mapped from the guest through gntdev: volatile accesses only, as
//! the guest changes it concurrently. The only unsafe code in xenconsoled besides
//! `sys::poll`.
#![allow(unsafe_code)]

use crate::ring::RingMem;
use std::sync::atomic::{fence, Ordering};
use xenctrl::GrantMap;

const PAGE: usize = 4096;

/// A mapped console page.
pub struct SharedPage {
    map: GrantMap,
}

impl SharedPage {
    /// Wraps a mapping; `None` if it has no address.
    pub fn new(map: GrantMap) -> Option<SharedPage> {
        (!map.as_ptr().is_null()).then_some(SharedPage { map })
    }

    fn ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        // Offsets come from constants and masked indexes; check anyway so no access can
        // leave the page whatever a caller passes.
        (off.checked_add(len)? <= PAGE).then(|| self.map.as_ptr().wrapping_add(off))
    }
}

impl RingMem for SharedPage {
    fn read_u32(&self, off: usize) -> u32 {
        match self.ptr(off, 4) {
            // SAFETY: `p` is inside the 4096-byte page the GrantMap keeps mapped for our
            // lifetime; index offsets are multiples of 4 in a page-aligned mapping, so the
            // read is aligned. Volatile: the guest writes the page concurrently.
            Some(p) if off.is_multiple_of(4) => unsafe { std::ptr::read_volatile(p.cast::<u32>()) },
            _ => 0,
        }
    }
    fn write_u32(&self, off: usize, v: u32) {
        if let Some(p) = self.ptr(off, 4).filter(|_| off.is_multiple_of(4)) {
            // SAFETY: as in read_u32; the page is mapped writable.
            unsafe { std::ptr::write_volatile(p.cast::<u32>(), v) }
        }
    }
    fn read_u8(&self, off: usize) -> u8 {
        match self.ptr(off, 1) {
            // SAFETY: `p` is inside the mapped page (checked above).
            Some(p) => unsafe { std::ptr::read_volatile(p) },
            None => 0,
        }
    }
    fn write_u8(&self, off: usize, v: u8) {
        if let Some(p) = self.ptr(off, 1) {
            // SAFETY: `p` is inside the mapped, writable page (checked above).
            unsafe { std::ptr::write_volatile(p, v) }
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}
