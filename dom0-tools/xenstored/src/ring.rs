//! Access to a shared `xenstore_domain_interface` page: the only unsafe code in xenstored.
//!
//! The other side (a guest, or dom0's kernel) may change any byte of the page at any time, so
//! every access is volatile, the indexes are re-read and validated on each call
//! (`prod - cons <= 1024`, else the ring is corrupt), and the fences follow
//! `docs/misc/xenstore-ring.txt`: read the producer index, then the data; write the data, then
//! the producer index; finish reading data before moving the consumer index.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use xenstore::wire::ring::{self, RING_SIZE};

/// Bytes of the shared page.
pub const PAGE_SIZE: usize = 4096;

/// The indexes of a ring are inconsistent: the peer is broken or hostile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt;

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ring indexes are corrupt (producer more than 1024 bytes ahead of consumer)")
    }
}

impl std::error::Error for Corrupt {}

/// A mapped page shared with a peer, unmapped when dropped.
///
/// # Safety
///
/// Implementors promise that [`SharedPage::base`] is page-aligned and valid for reads and
/// writes of [`PAGE_SIZE`] bytes for as long as the object lives, and that nothing else in this
/// process accesses the page except through the [`Ring`] that owns the object.
pub unsafe trait SharedPage {
    /// Start of the mapping.
    fn base(&self) -> NonNull<u8>;
}

/// A mapped interface page.
pub struct Ring {
    base: NonNull<u8>,
    /// Keeps the mapping alive; dropped (unmapped) with the ring.
    _page: Box<dyn SharedPage>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("base", &self.base).finish()
    }
}

impl Ring {
    /// Takes ownership of a mapped page.
    pub fn new(page: Box<dyn SharedPage>) -> Ring {
        Ring {
            base: page.base(),
            _page: page,
        }
    }

    fn load(&self, off: usize) -> u32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= PAGE_SIZE);
        // SAFETY: `off` is one of the index offsets (< 2080, 4-aligned), inside the page that
        // the owned `SharedPage` keeps mapped and aligned; volatile because the peer writes it.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    fn store(&mut self, off: usize, v: u32) {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= PAGE_SIZE);
        // SAFETY: as in `load`; the page is writable per the `SharedPage` contract.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().write_volatile(v) }
    }

    /// Copies up to `max` request bytes from the guest into `out`, advancing `req_cons`.
    /// Returns how many were taken (0: none available).
    pub fn read_requests(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, Corrupt> {
        let cons = self.load(ring::REQ_CONS);
        let prod = self.load(ring::REQ_PROD);
        // Read the data only after reading the producer index.
        fence(Ordering::Acquire);
        let (off, len) = ring::readable(cons, prod).ok_or(Corrupt)?;
        let len = len.min(max);
        out.reserve(len);
        for i in 0..len {
            let at = ring::REQ + off + i;
            debug_assert!(at < ring::REQ + RING_SIZE as usize);
            // SAFETY: `off + i < RING_SIZE` (from `readable`), so `at` lies in the request ring
            // inside the mapped page.
            out.push(unsafe { self.base.as_ptr().add(at).read_volatile() });
        }
        // Finish reading the data before handing the space back.
        fence(Ordering::SeqCst);
        self.store(ring::REQ_CONS, cons.wrapping_add(len as u32));
        Ok(len)
    }

    /// Copies as much of `data` as fits into the response ring, advancing `rsp_prod`.
    /// Returns how many bytes were written (0: ring full).
    pub fn write_responses(&mut self, data: &[u8]) -> Result<usize, Corrupt> {
        let cons = self.load(ring::RSP_CONS);
        let prod = self.load(ring::RSP_PROD);
        // Don't write into space before seeing that the guest has consumed it.
        fence(Ordering::SeqCst);
        let (off, room) = ring::writable(cons, prod).ok_or(Corrupt)?;
        let len = room.min(data.len());
        for (i, b) in data[..len].iter().enumerate() {
            let at = ring::RSP + off + i;
            debug_assert!(at < ring::RSP + RING_SIZE as usize);
            // SAFETY: `off + i < RING_SIZE` (from `writable`), so `at` lies in the response ring
            // inside the mapped page.
            unsafe { self.base.as_ptr().add(at).write_volatile(*b) }
        }
        // The data must be visible before the new producer index.
        fence(Ordering::Release);
        self.store(ring::RSP_PROD, prod.wrapping_add(len as u32));
        Ok(len)
    }

    /// Whether the guest has requests waiting (false if corrupt; the next read reports that).
    pub fn has_requests(&self) -> bool {
        ring::used(self.load(ring::REQ_CONS), self.load(ring::REQ_PROD)).is_some_and(|n| n > 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A page in ordinary memory standing in for the shared one, playing the guest's side
    /// through the same raw pointer.
    pub struct HeapPage(NonNull<u32>);

    impl HeapPage {
        pub fn new() -> HeapPage {
            let b: Box<[u32; PAGE_SIZE / 4]> = Box::new([0; PAGE_SIZE / 4]);
            HeapPage(NonNull::new(Box::into_raw(b).cast::<u32>()).unwrap())
        }
    }

    impl Drop for HeapPage {
        fn drop(&mut self) {
            // SAFETY: the pointer came from `Box::into_raw` of this type in `new`, once.
            drop(unsafe { Box::from_raw(self.0.as_ptr().cast::<[u32; PAGE_SIZE / 4]>()) });
        }
    }

    // SAFETY: the allocation is 4096 bytes, u32-aligned (all the ring needs), and lives until
    // the `HeapPage` is dropped.
    unsafe impl SharedPage for HeapPage {
        fn base(&self) -> NonNull<u8> {
            self.0.cast()
        }
    }

    /// The guest's view: a raw pointer to the same page.
    #[derive(Clone)]
    pub struct Guest(NonNull<u32>);

    impl Guest {
        pub fn word(&self, off: usize) -> u32 {
            // SAFETY: `off` < 4096 and 4-aligned in these tests; the page is alive while the
            // ring owning it is, and the test is single-threaded.
            unsafe { self.0.as_ptr().add(off / 4).read_volatile() }
        }
        pub fn set_word(&self, off: usize, v: u32) {
            // SAFETY: as in `word`.
            unsafe { self.0.as_ptr().add(off / 4).write_volatile(v) }
        }
        pub fn set_byte(&self, off: usize, v: u8) {
            // SAFETY: as in `word`; `off` < 4096.
            unsafe { self.0.as_ptr().cast::<u8>().add(off).write_volatile(v) }
        }
        pub fn byte(&self, off: usize) -> u8 {
            // SAFETY: as in `word`; `off` < 4096.
            unsafe { self.0.as_ptr().cast::<u8>().add(off).read_volatile() }
        }
    }

    /// A fresh heap page and the guest's handle to it (valid while the page lives).
    pub fn heap_page() -> (HeapPage, Guest) {
        let page = HeapPage::new();
        let g = Guest(page.0);
        (page, g)
    }

    /// A ring over a fresh heap page and the guest's handle to the page.
    pub fn heap_ring() -> (Ring, Guest) {
        let (page, g) = heap_page();
        (Ring::new(Box::new(page)), g)
    }

    /// Plays the guest: writes `data` into the request ring.
    pub fn guest_send(g: &Guest, data: &[u8]) {
        let prod = g.word(ring::REQ_PROD);
        for (i, b) in data.iter().enumerate() {
            g.set_byte(ring::REQ + ring::mask(prod.wrapping_add(i as u32)), *b);
        }
        g.set_word(ring::REQ_PROD, prod.wrapping_add(data.len() as u32));
    }

    /// Plays the guest: takes everything from the response ring.
    pub fn guest_recv(g: &Guest) -> Vec<u8> {
        let cons = g.word(ring::RSP_CONS);
        let prod = g.word(ring::RSP_PROD);
        let v = (0..prod.wrapping_sub(cons))
            .map(|i| g.byte(ring::RSP + ring::mask(cons.wrapping_add(i))))
            .collect();
        g.set_word(ring::RSP_CONS, prod);
        v
    }

    #[test]
    fn requests_are_read_across_the_wrap() {
        let (mut r, g) = heap_ring();
        g.set_word(ring::REQ_CONS, 1020);
        g.set_word(ring::REQ_PROD, 1020);
        guest_send(&g, b"abcdefgh");
        assert!(r.has_requests());
        let mut out = Vec::new();
        let mut total = 0;
        loop {
            let n = r.read_requests(&mut out, 4096).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 8);
        assert_eq!(out, b"abcdefgh");
        assert_eq!(g.word(ring::REQ_CONS), 1028);
    }

    #[test]
    fn responses_fill_the_ring_and_stop() {
        let (mut r, g) = heap_ring();
        g.set_word(ring::RSP_CONS, u32::MAX - 10);
        g.set_word(ring::RSP_PROD, u32::MAX - 10);
        let data = vec![7u8; 2000];
        let mut written = 0;
        loop {
            let n = r.write_responses(&data[written..]).unwrap();
            if n == 0 {
                break;
            }
            written += n;
        }
        assert_eq!(written, 1024, "a full ring holds 1024 bytes");
        assert_eq!(g.word(ring::RSP_PROD), (u32::MAX - 10).wrapping_add(1024));
        assert_eq!(guest_recv(&g), vec![7u8; 1024]);
        // The next write stops at the end of the buffer; the one after continues at its start.
        let first = r.write_responses(&data[..976]).unwrap();
        assert!(first < 976);
        assert_eq!(r.write_responses(&data[first..976]).unwrap(), 976 - first);
        assert_eq!(guest_recv(&g).len(), 976);
    }

    #[test]
    fn hostile_indexes_are_reported_not_followed() {
        let (mut r, g) = heap_ring();
        g.set_word(ring::REQ_PROD, 5000);
        g.set_word(ring::RSP_PROD, 3000);
        assert_eq!(r.read_requests(&mut Vec::new(), 4096), Err(Corrupt));
        assert_eq!(r.write_responses(b"x"), Err(Corrupt));
        assert!(!r.has_requests());
    }
}
