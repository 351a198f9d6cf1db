//! The PV console ring (`xencons_interface`, `xen/include/public/io/console.h`): the
//! backend consumes `out` (guest → dom0) and produces `in` (dom0 → guest).
//!
//! The page is shared with a guest that may be hostile: every index it writes is
//! checked (`prod - cons` must not exceed the ring size) before any byte is read, and
//! every access stays inside the page by masking.

use xen_abi::io::console::{mask_in_idx, mask_out_idx, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

/// Byte offsets in the page.
pub const OFF_IN: usize = 0;
pub const OFF_OUT: usize = 1024;
pub const OFF_IN_CONS: usize = 3072;
pub const OFF_IN_PROD: usize = 3076;
pub const OFF_OUT_CONS: usize = 3080;
pub const OFF_OUT_PROD: usize = 3084;

/// Access to the shared page: 32-bit index words and single bytes, at offsets below
/// 4096. Implementations order these accesses as written (volatile, with fences where
/// the ring protocol needs them).
pub trait RingMem {
    fn read_u32(&self, off: usize) -> u32;
    fn write_u32(&self, off: usize, v: u32);
    fn read_u8(&self, off: usize) -> u8;
    fn write_u8(&self, off: usize, v: u8);
    /// Orders the index read before the data reads / the data writes before the index
    /// write (a full fence).
    fn fence(&self);
}

/// The guest broke the ring protocol.
#[derive(Debug, PartialEq, Eq)]
pub struct BadIndexes {
    pub cons: u32,
    pub prod: u32,
}

/// Takes every byte the guest produced on `out`; advances `out_cons`.
pub fn drain_output(m: &dyn RingMem, out: &mut Vec<u8>) -> Result<usize, BadIndexes> {
    let cons = m.read_u32(OFF_OUT_CONS);
    let prod = m.read_u32(OFF_OUT_PROD);
    m.fence();
    let avail = prod.wrapping_sub(cons);
    if avail as usize > XENCONS_OUT_SIZE {
        return Err(BadIndexes { cons, prod });
    }
    let mut i = cons;
    while i != prod {
        out.push(m.read_u8(OFF_OUT + mask_out_idx(i)));
        i = i.wrapping_add(1);
    }
    m.fence();
    m.write_u32(OFF_OUT_CONS, prod);
    Ok(avail as usize)
}

/// Drops whatever the guest produced (after [`BadIndexes`]): `out_cons = out_prod`.
pub fn resync_output(m: &dyn RingMem) {
    let prod = m.read_u32(OFF_OUT_PROD);
    m.write_u32(OFF_OUT_CONS, prod);
}

/// Puts as much of `data` as fits into `in`; returns how many bytes went in.
pub fn push_input(m: &dyn RingMem, data: &[u8]) -> Result<usize, BadIndexes> {
    let cons = m.read_u32(OFF_IN_CONS);
    let prod = m.read_u32(OFF_IN_PROD);
    m.fence();
    let used = prod.wrapping_sub(cons) as usize;
    if used > XENCONS_IN_SIZE {
        return Err(BadIndexes { cons, prod });
    }
    let n = data.len().min(XENCONS_IN_SIZE - used);
    let mut p = prod;
    for &b in &data[..n] {
        m.write_u8(OFF_IN + mask_in_idx(p), b);
        p = p.wrapping_add(1);
    }
    m.fence();
    m.write_u32(OFF_IN_PROD, p);
    Ok(n)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A page in ordinary memory.
    pub struct Page(pub RefCell<Vec<u8>>);

    impl Page {
        pub fn new() -> Self {
            Page(RefCell::new(vec![0; 4096]))
        }
        /// What a guest does to print `s`.
        pub fn guest_write(&self, s: &[u8]) {
            let prod = self.read_u32(OFF_OUT_PROD);
            for (k, &b) in s.iter().enumerate() {
                self.write_u8(OFF_OUT + mask_out_idx(prod.wrapping_add(k as u32)), b);
            }
            self.write_u32(OFF_OUT_PROD, prod.wrapping_add(s.len() as u32));
        }
        /// What a guest does to read its input.
        pub fn guest_read(&self) -> Vec<u8> {
            let (mut c, p) = (self.read_u32(OFF_IN_CONS), self.read_u32(OFF_IN_PROD));
            let mut v = Vec::new();
            while c != p {
                v.push(self.read_u8(OFF_IN + mask_in_idx(c)));
                c = c.wrapping_add(1);
            }
            self.write_u32(OFF_IN_CONS, c);
            v
        }
    }

    impl RingMem for Page {
        fn read_u32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0.borrow()[off..off + 4].try_into().unwrap())
        }
        fn write_u32(&self, off: usize, v: u32) {
            self.0.borrow_mut()[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn read_u8(&self, off: usize) -> u8 {
            self.0.borrow()[off]
        }
        fn write_u8(&self, off: usize, v: u8) {
            self.0.borrow_mut()[off] = v;
        }
        fn fence(&self) {}
    }

    #[test]
    fn output_drains_and_wraps() {
        let p = Page::new();
        // Start near the u32 wrap and the ring's end.
        p.write_u32(OFF_OUT_CONS, u32::MAX - 5);
        p.write_u32(OFF_OUT_PROD, u32::MAX - 5);
        p.guest_write(b"hello, world");
        let mut out = Vec::new();
        assert_eq!(drain_output(&p, &mut out), Ok(12));
        assert_eq!(out, b"hello, world");
        assert_eq!(p.read_u32(OFF_OUT_CONS), p.read_u32(OFF_OUT_PROD));
        assert_eq!(drain_output(&p, &mut out), Ok(0));
        // A full ring is fine.
        p.guest_write(&[b'x'; XENCONS_OUT_SIZE]);
        out.clear();
        assert_eq!(drain_output(&p, &mut out), Ok(XENCONS_OUT_SIZE));
        assert!(out.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn hostile_output_indexes_are_refused() {
        let p = Page::new();
        p.write_u32(OFF_OUT_CONS, 10);
        p.write_u32(OFF_OUT_PROD, 10 + XENCONS_OUT_SIZE as u32 + 1);
        let mut out = Vec::new();
        assert!(drain_output(&p, &mut out).is_err());
        assert!(out.is_empty());
        // prod behind cons looks like a huge count: refused too.
        p.write_u32(OFF_OUT_PROD, 5);
        assert!(drain_output(&p, &mut out).is_err());
        resync_output(&p);
        assert_eq!(drain_output(&p, &mut out), Ok(0));
    }

    #[test]
    fn input_fills_up_to_the_free_space() {
        let p = Page::new();
        assert_eq!(push_input(&p, b"ls\r"), Ok(3));
        assert_eq!(p.guest_read(), b"ls\r");
        let big = vec![b'a'; 3000];
        assert_eq!(push_input(&p, &big), Ok(XENCONS_IN_SIZE));
        assert_eq!(push_input(&p, b"more"), Ok(0));
        assert_eq!(p.guest_read().len(), XENCONS_IN_SIZE);
        assert_eq!(push_input(&p, b"more"), Ok(4));
        // A guest claiming to have consumed what was never produced.
        p.write_u32(OFF_IN_CONS, p.read_u32(OFF_IN_PROD).wrapping_add(1));
        assert!(push_input(&p, b"x").is_err());
    }

    #[test]
    fn random_indexes_never_panic() {
        let p = Page::new();
        let mut s = 0x9e37_79b9u32;
        for _ in 0..5000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let off = [OFF_IN_CONS, OFF_IN_PROD, OFF_OUT_CONS, OFF_OUT_PROD][(s >> 30) as usize];
            p.write_u32(off, s.rotate_left(7) % 8192);
            let mut out = Vec::new();
            if let Ok(n) = drain_output(&p, &mut out) {
                assert!(n <= XENCONS_OUT_SIZE);
            }
            if let Ok(n) = push_input(&p, b"abc") {
                assert!(n <= 3);
            }
        }
    }
}
