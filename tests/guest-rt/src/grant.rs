//! Grant tables v1 from the guest side: the domain's own table (frame 0, mapped with
//! `XENMEM_add_to_physmap`), granting and ending grants as Linux does, and
//! `GNTTABOP_map_grant_ref` / `unmap_grant_ref` with `GNTMAP_host_map` at guest-physical
//! addresses (auto-translated guests), and `GNTTABOP_copy`.

use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

use xen_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_DEST_GREF,
    GNTCOPY_SOURCE_GREF, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_UNMAP_GRANT_REF, GTF_PERMIT_ACCESS, GTF_READONLY,
};
use xen_abi::memory::{XenAddToPhysmap, XENMAPSPACE_GRANT_TABLE};
use xen_abi::xen::{DOMID_SELF, HYPERVISOR_GRANT_TABLE_OP};
use xen_abi::DomId;

use crate::hypercall;

/// A 4 KiB-aligned page, for grant frames and granted pages.
#[repr(C, align(4096))]
pub struct Page(pub core::cell::UnsafeCell<[u8; 4096]>);

// SAFETY: every access goes through raw pointers with volatile or atomic operations.
unsafe impl Sync for Page {}

impl Page {
    /// A zeroed page.
    pub const fn new() -> Self {
        Page(core::cell::UnsafeCell::new([0; 4096]))
    }

    /// Its guest-physical address (the runtime identity-maps memory).
    pub fn gpa(&self) -> u64 {
        self.0.get() as u64
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads u64 word `i` (0..512) of the page at `gpa` (volatile).
pub fn read_word(gpa: u64, i: usize) -> u64 {
    assert!(i < 512);
    // SAFETY: `gpa` is a mapped page (caller's contract: its own page or a grant mapping),
    // identity-mapped; `i` is in range; a volatile read tolerates concurrent writers.
    unsafe { ((gpa as *const u64).add(i)).read_volatile() }
}

/// Writes u64 word `i` (0..512) of the page at `gpa` (volatile).
pub fn write_word(gpa: u64, i: usize, v: u64) {
    assert!(i < 512);
    // SAFETY: as in `read_word`, and the page is writable (else the hypervisor crashes the
    // domain, which is what the read-only test wants).
    unsafe { ((gpa as *mut u64).add(i)).write_volatile(v) }
}

/// The domain's own grant table, frame 0 (refs 0..511), mapped over `page`.
pub struct Table {
    base: u64,
}

impl Table {
    /// Maps grant frame 0 over `page` (which is then the hypervisor's frame).
    pub fn setup(page: &'static Page) -> Result<Table, i64> {
        let xatp = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_GRANT_TABLE,
            idx: 0,
            gpfn: page.gpa() >> 12,
        };
        // SAFETY: the page is reserved for the grant table and only accessed through
        // `Table` (volatile and atomic accesses).
        let rc = unsafe { hypercall::add_to_physmap(&xatp) };
        if rc != 0 {
            return Err(rc);
        }
        Ok(Table { base: page.gpa() })
    }

    fn entry(&self, gref: u32) -> u64 {
        assert!(gref < 512, "only frame 0 is mapped");
        self.base + u64::from(gref) * 8
    }

    fn flags_atomic(&self, gref: u32) -> &AtomicU16 {
        // SAFETY: the entry lies in the mapped grant frame, 2-aligned; the hypervisor
        // changes it only with atomic operations, and so do we.
        unsafe { &*(self.entry(gref) as *const AtomicU16) }
    }

    /// Grants `domid` access to the frame `gfn`, as Linux does: `domid` and `frame`, a
    /// write barrier, then `flags`.
    pub fn grant(&self, gref: u32, domid: DomId, gfn: u32, readonly: bool) {
        let e = self.entry(gref);
        // SAFETY: fields of an entry in the mapped grant frame (aligned), plain stores.
        unsafe {
            ((e + 2) as *mut u16).write_volatile(domid);
            ((e + 4) as *mut u32).write_volatile(gfn);
        }
        fence(Ordering::SeqCst);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.flags_atomic(gref).store(flags, Ordering::SeqCst);
    }

    /// Revokes the grant by force, as a hostile or buggy granter may: stores `flags = 0`
    /// whatever the hypervisor has set (no cmpxchg, no check for `GTF_reading`).
    pub fn revoke(&self, gref: u32) {
        self.flags_atomic(gref).store(0, Ordering::SeqCst);
    }

    /// The entry's `flags` now.
    pub fn flags(&self, gref: u32) -> u16 {
        self.flags_atomic(gref).load(Ordering::SeqCst)
    }

    /// The entry's `{flags, domid}` word now.
    pub fn word(&self, gref: u32) -> u32 {
        // SAFETY: as in `flags_atomic`, 4-aligned.
        unsafe { &*(self.entry(gref) as *const AtomicU32) }.load(Ordering::SeqCst)
    }

    /// Ends the grant as Linux does: cmpxchg `flags` to 0, which fails (returning the
    /// flags seen) while the hypervisor has `GTF_reading`/`GTF_writing` set.
    pub fn end(&self, gref: u32) -> Result<(), u16> {
        let f = self.flags_atomic(gref);
        let cur = f.load(Ordering::SeqCst);
        if cur & (xen_abi::grant_table::GTF_READING | xen_abi::grant_table::GTF_WRITING) != 0 {
            return Err(cur);
        }
        f.compare_exchange(cur, 0, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
    }
}

/// `grant_table_op(cmd, uop, count)`.
///
/// # Safety
/// `uop` must point to `count` structures of the layout `cmd` reads and writes.
pub unsafe fn op(cmd: u64, uop: u64, count: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall::hypercall3(HYPERVISOR_GRANT_TABLE_OP, cmd, uop, count) }
}

/// Runs the map ops in `ops` as one batch; the hypercall's result (0 = processed).
pub fn map_batch(ops: &mut [GnttabMapGrantRef]) -> i64 {
    // SAFETY: `ops` is a live, writable array of map ops.
    unsafe {
        op(
            GNTTABOP_MAP_GRANT_REF,
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
        )
    }
}

/// Runs the unmap ops in `ops` as one batch; the hypercall's result.
pub fn unmap_batch(ops: &mut [GnttabUnmapGrantRef]) -> i64 {
    // SAFETY: `ops` is a live, writable array of unmap ops.
    unsafe {
        op(
            GNTTABOP_UNMAP_GRANT_REF,
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
        )
    }
}

/// Maps `dom`'s grant `gref` at guest-physical `gpa` (`GNTMAP_host_map`, plus
/// `GNTMAP_readonly` if `readonly`): `Ok(handle)` or `Err(status)` (`GNTST_*`, or the
/// hypercall's own error if it failed as a whole).
pub fn map(dom: DomId, gref: u32, gpa: u64, readonly: bool) -> Result<u32, i64> {
    let flags = GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 };
    map_flags(dom, gref, gpa, flags)
}

/// [`map`] with explicit `GNTMAP_*` flags.
pub fn map_flags(dom: DomId, gref: u32, gpa: u64, flags: u32) -> Result<u32, i64> {
    let mut ops = [GnttabMapGrantRef {
        host_addr: gpa,
        flags,
        ref_: gref,
        dom,
        status: 1, // not a GNTST value: proves the hypervisor wrote it
        handle: u32::MAX,
        dev_bus_addr: u64::MAX,
    }];
    let rc = map_batch(&mut ops);
    if rc != 0 {
        return Err(rc);
    }
    match ops[0].status {
        0 => Ok(ops[0].handle),
        s => Err(i64::from(s)),
    }
}

/// Unmaps `handle` at `gpa`: `Ok(())` or `Err(status)`.
pub fn unmap(gpa: u64, handle: u32) -> Result<(), i64> {
    let mut ops = [GnttabUnmapGrantRef {
        host_addr: gpa,
        dev_bus_addr: 0,
        handle,
        status: 1,
        _pad0: 0,
    }];
    let rc = unmap_batch(&mut ops);
    if rc != 0 {
        return Err(rc);
    }
    match ops[0].status {
        0 => Ok(()),
        s => Err(i64::from(s)),
    }
}

/// One side of a copy: a grant of some domain, or a frame of the caller's.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    /// A grant, at byte `offset` of its page.
    Gref {
        /// Granting domain.
        dom: DomId,
        /// Grant reference.
        gref: u32,
        /// Byte offset in the page.
        offset: u16,
    },
    /// A frame of the caller's, at byte `offset`.
    Gmfn {
        /// The domain named (`DOMID_SELF` is the valid choice).
        dom: DomId,
        /// Guest frame number.
        gmfn: u64,
        /// Byte offset in the page.
        offset: u16,
    },
}

impl Side {
    /// The caller's own page at guest-physical `gpa` (the frame, and the offset in it).
    pub fn own(gpa: u64) -> Side {
        Side::Gmfn {
            dom: DOMID_SELF,
            gmfn: gpa >> 12,
            offset: (gpa & 0xfff) as u16,
        }
    }

    fn ptr(self) -> (GnttabCopyPtr, bool) {
        match self {
            Side::Gref { dom, gref, offset } => (GnttabCopyPtr::from_gref(gref, dom, offset), true),
            Side::Gmfn { dom, gmfn, offset } => {
                (GnttabCopyPtr::from_gmfn(gmfn, dom, offset), false)
            }
        }
    }
}

/// A copy op of `len` bytes from `src` to `dst` (status preset to 1, not a GNTST value).
pub fn copy_op(src: Side, dst: Side, len: u16) -> GnttabCopy {
    let (source, sg) = src.ptr();
    let (dest, dg) = dst.ptr();
    GnttabCopy {
        source,
        dest,
        len,
        flags: if sg { GNTCOPY_SOURCE_GREF } else { 0 } | if dg { GNTCOPY_DEST_GREF } else { 0 },
        status: 1,
        _pad0: 0,
    }
}

/// Runs the copy ops in `ops` as one batch; the hypercall's result (0 = processed).
pub fn copy_batch(ops: &mut [GnttabCopy]) -> i64 {
    // SAFETY: `ops` is a live, writable array of copy ops.
    unsafe { op(GNTTABOP_COPY, ops.as_mut_ptr() as u64, ops.len() as u64) }
}

/// Copies `len` bytes from `src` to `dst`: `Ok(())` or `Err(status)` (`GNTST_*`, or the
/// hypercall's own error).
pub fn copy(src: Side, dst: Side, len: u16) -> Result<(), i64> {
    let mut ops = [copy_op(src, dst, len)];
    let rc = copy_batch(&mut ops);
    if rc != 0 {
        return Err(rc);
    }
    match ops[0].status {
        0 => Ok(()),
        s => Err(i64::from(s)),
    }
}

/// FNV-1a over `len` bytes of guest-physical memory at `gpa` (volatile reads).
pub fn checksum(gpa: u64, len: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..len as u64 {
        // SAFETY: the caller names readable memory (its own page or a mapping); volatile
        // reads tolerate concurrent writers.
        let b = unsafe { ((gpa + i) as *const u8).read_volatile() };
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// FNV-1a of the bytes `f(0), f(1), ...` (`len` of them): the checksum a page filled by
/// a known generator must have.
pub fn checksum_of(len: usize, f: impl Fn(usize) -> u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..len {
        h = (h ^ u64::from(f(i))).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The `GNTST_*` name of a status (or the number).
pub fn status_name(s: i64) -> &'static str {
    i16::try_from(s)
        .ok()
        .and_then(xen_abi::grant_table::gntst_name)
        .unwrap_or("?")
}
