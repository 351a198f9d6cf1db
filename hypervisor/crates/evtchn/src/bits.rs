//! The guest-visible 2-level bits, behind a trait.
//!
//! `evtchn_pending[]` and `evtchn_mask[]` live in the domain's `shared_info` page;
//! `evtchn_pending_sel` and `evtchn_upcall_pending` live in each vCPU's `vcpu_info` (inside
//! `shared_info` for vCPUs 0..32 until the guest registers its own with
//! `VCPUOP_register_vcpu_info`). The guest reads and writes all of them concurrently, so the
//! hypervisor implements [`SharedBits`] with locked (atomic) bit operations on the mapped
//! frames, exactly like Xen's `guest_test_and_set_bit` & co. [`VecBits`] is an in-memory
//! implementation for tests.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::{Port, BITS_PER_WORD, NR_PORTS};

/// Atomic access to a domain's 2-level event bits.
///
/// Every `test_and_*` method must be a single atomic read-modify-write on guest memory
/// (`lock bts`/`lock btr` on x86) returning the **previous** value of the bit. `port` is always
/// `< NR_PORTS`, `word = port / 64` and `vcpu` is always a vCPU id of the domain.
/// If a vCPU has no `vcpu_info` mapped, the implementation may treat its bits as a sink
/// (report "was already set", so that no kick is requested).
pub trait SharedBits {
    /// Sets bit `port` of `shared_info.evtchn_pending`; returns its previous value.
    fn test_and_set_pending(&mut self, port: Port) -> bool;
    /// Clears bit `port` of `shared_info.evtchn_pending`.
    fn clear_pending(&mut self, port: Port);
    /// Reads bit `port` of `shared_info.evtchn_pending`.
    fn is_pending(&self, port: Port) -> bool;
    /// Reads bit `port` of `shared_info.evtchn_mask`.
    fn is_masked(&self, port: Port) -> bool;
    /// Clears bit `port` of `shared_info.evtchn_mask`; returns its previous value.
    fn test_and_clear_mask(&mut self, port: Port) -> bool;
    /// Sets bit `word` of `vcpu_info[vcpu].evtchn_pending_sel`; returns its previous value.
    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool;
    /// Sets `vcpu_info[vcpu].evtchn_upcall_pending` (a byte, set to 1); returns whether it
    /// was already non-zero.
    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool;

    // FIFO ABI: the event array and control blocks are ordinary guest pages.

    /// Whether guest frame `gfn` is a writable RAM page of the domain, usable for an event
    /// array or control block (Xen's `map_guest_page`).
    fn frame_ok(&self, gfn: u64) -> bool;
    /// Atomically reads the 4-aligned `u32` at guest-physical `gpa`; `None` if it is not
    /// writable guest RAM (any more).
    fn load_u32(&self, gpa: u64) -> Option<u32>;
    /// Atomically ORs `bits` into the `u32` at `gpa`; returns the previous value.
    fn fetch_or_u32(&mut self, gpa: u64, bits: u32) -> Option<u32>;
    /// Atomically ANDs `bits` into the `u32` at `gpa`; returns the previous value.
    fn fetch_and_u32(&mut self, gpa: u64, bits: u32) -> Option<u32>;
    /// One compare-and-exchange of the `u32` at `gpa`: writes `new` iff it holds `old`;
    /// returns the value found (equal to `old` on success).
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<u32>;
    /// Atomically writes `v` to the `u32` at `gpa`; false if not writable.
    fn store_u32(&mut self, gpa: u64, v: u32) -> bool;
}

const WORDS: usize = (NR_PORTS / BITS_PER_WORD) as usize;

/// A plain in-memory [`SharedBits`] (for tests and models), with guest-side helpers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecBits {
    pending: [u64; WORDS],
    mask: [u64; WORDS],
    pending_sel: Vec<u64>,
    upcall_pending: Vec<u8>,
    /// Guest RAM pages for the FIFO ABI: GFN → 1024 words.
    ram: BTreeMap<u64, Vec<u32>>,
}

fn split(port: Port) -> (usize, u64) {
    (
        (port / BITS_PER_WORD) as usize,
        1u64 << (port % BITS_PER_WORD),
    )
}

impl VecBits {
    /// All bits clear (as in a fresh `shared_info`), for `nr_vcpus` vCPUs.
    pub fn new(nr_vcpus: u32) -> Self {
        VecBits {
            pending: [0; WORDS],
            mask: [0; WORDS],
            pending_sel: vec![0; nr_vcpus as usize],
            upcall_pending: vec![0; nr_vcpus as usize],
            ram: BTreeMap::new(),
        }
    }

    /// Guest: masks every port (what Linux does at init).
    pub fn mask_all(&mut self) {
        self.mask = [u64::MAX; WORDS];
    }

    /// Guest: sets the mask bit of `port`.
    pub fn mask(&mut self, port: Port) {
        let (w, b) = split(port);
        self.mask[w] |= b;
    }

    /// Guest: clears the mask bit of `port` directly (no hypercall; no propagation).
    pub fn clear_mask(&mut self, port: Port) {
        let (w, b) = split(port);
        self.mask[w] &= !b;
    }

    /// Guest: clears the pending bit of `port` (after handling it).
    pub fn guest_clear_pending(&mut self, port: Port) {
        self.clear_pending(port);
    }

    /// `vcpu_info[vcpu].evtchn_pending_sel`.
    pub fn pending_sel(&self, vcpu: u32) -> u64 {
        self.pending_sel[vcpu as usize]
    }

    /// `vcpu_info[vcpu].evtchn_upcall_pending`.
    pub fn upcall_pending(&self, vcpu: u32) -> bool {
        self.upcall_pending[vcpu as usize] != 0
    }

    /// Guest upcall entry: clears `upcall_pending` and takes (zeroes) the selector, as Linux's
    /// `xen_evtchn_handle_events` does; returns the old selector.
    pub fn guest_take_upcall(&mut self, vcpu: u32) -> u64 {
        self.upcall_pending[vcpu as usize] = 0;
        core::mem::take(&mut self.pending_sel[vcpu as usize])
    }

    /// Guest: makes `gfn` a (zeroed) writable RAM page.
    pub fn add_ram(&mut self, gfn: u64) {
        self.ram.insert(gfn, vec![0; 1024]);
    }

    /// Guest: gives page `gfn` away (it stops being RAM).
    pub fn remove_ram(&mut self, gfn: u64) {
        self.ram.remove(&gfn);
    }

    /// Guest: the `u32` at `gpa` (plain read), `None` outside RAM or unaligned.
    pub fn peek_u32(&self, gpa: u64) -> Option<u32> {
        self.slot(gpa).map(|(g, i)| self.ram[&g][i])
    }

    /// Guest: writes the `u32` at `gpa` (plain write); false outside RAM.
    pub fn poke_u32(&mut self, gpa: u64, v: u32) -> bool {
        match self.slot(gpa) {
            Some((g, i)) => {
                if let Some(p) = self.ram.get_mut(&g) {
                    p[i] = v;
                }
                true
            }
            None => false,
        }
    }

    fn slot(&self, gpa: u64) -> Option<(u64, usize)> {
        let g = gpa / 4096;
        (gpa.is_multiple_of(4) && self.ram.contains_key(&g))
            .then_some((g, (gpa % 4096 / 4) as usize))
    }

    fn update_u32(&mut self, gpa: u64, f: impl FnOnce(u32) -> u32) -> Option<u32> {
        let (g, i) = self.slot(gpa)?;
        let w = &mut self.ram.get_mut(&g)?[i];
        let old = *w;
        *w = f(old);
        Some(old)
    }

    /// Word `w` of `evtchn_pending`.
    pub fn pending_word(&self, w: usize) -> u64 {
        self.pending[w]
    }
}

impl SharedBits for VecBits {
    fn test_and_set_pending(&mut self, port: Port) -> bool {
        let (w, b) = split(port);
        let old = self.pending[w] & b != 0;
        self.pending[w] |= b;
        old
    }

    fn clear_pending(&mut self, port: Port) {
        let (w, b) = split(port);
        self.pending[w] &= !b;
    }

    fn is_pending(&self, port: Port) -> bool {
        let (w, b) = split(port);
        self.pending[w] & b != 0
    }

    fn is_masked(&self, port: Port) -> bool {
        let (w, b) = split(port);
        self.mask[w] & b != 0
    }

    fn test_and_clear_mask(&mut self, port: Port) -> bool {
        let (w, b) = split(port);
        let old = self.mask[w] & b != 0;
        self.mask[w] &= !b;
        old
    }

    fn test_and_set_pending_sel(&mut self, vcpu: u32, word: u32) -> bool {
        let sel = &mut self.pending_sel[vcpu as usize];
        let b = 1u64 << word;
        let old = *sel & b != 0;
        *sel |= b;
        old
    }

    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool {
        let u = &mut self.upcall_pending[vcpu as usize];
        let old = *u != 0;
        *u = 1;
        old
    }

    fn frame_ok(&self, gfn: u64) -> bool {
        self.ram.contains_key(&gfn)
    }

    fn load_u32(&self, gpa: u64) -> Option<u32> {
        self.peek_u32(gpa)
    }

    fn fetch_or_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.update_u32(gpa, |w| w | bits)
    }

    fn fetch_and_u32(&mut self, gpa: u64, bits: u32) -> Option<u32> {
        self.update_u32(gpa, |w| w & bits)
    }

    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        self.update_u32(gpa, |w| if w == old { new } else { w })
    }

    fn store_u32(&mut self, gpa: u64, v: u32) -> bool {
        self.update_u32(gpa, |_| v).is_some()
    }
}
