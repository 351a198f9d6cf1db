//! `grant_table_op` (20), version 1: the table's frames and their size, mapping and
//! unmapping other domains' grants (`GNTTABOP_map_grant_ref` / `unmap_grant_ref`, for
//! auto-translated callers: `GNTMAP_host_map` with `host_addr` a guest-physical address),
//! and copying between grants and the caller's frames (`GNTTABOP_copy`).
//!
//! # Mapping
//! The pure rules (shared-word transitions, active entries, maptrack) are in the `grant`
//! crate; this module applies them. One map op from domain M against granter G, under
//! both domain locks (ascending domid order; one lock when M maps its own grant):
//! 1. flags, G, maptrack space, `ref`, `host_addr` are checked (see [`map_one`]);
//! 2. the granter's shared `{flags, domid}` word is updated with a bounded compare-exchange
//!    (`GTF_reading`, and `GTF_writing` for writable maps) when the pin is G's first or
//!    first writable one;
//! 3. on the first pin, `frame` is read from the entry, translated through G's p2m (it must
//!    be G's own RAM) and captured in G's active entry; each mapping takes a frame-table
//!    reference on that page ([`crate::mm::frametable`]), so it outlives G;
//! 4. the page is mapped at `host_addr` in M's p2m as a grant type (RW or RO). Addresses
//!    where anything is mapped already (RAM, shared frames, other grants) are refused with
//!    `general_error`: Linux maps grants at unpopulated addresses, and refusing keeps the
//!    p2m simple (nothing to restore on unmap);
//! 5. a maptrack handle in M records (G, ref, readonly, address, frame).
//!
//! Any failure undoes the steps before it. An unmap removes the p2m entry, flushes M's
//! nested TLBs ([`flush_mapper`]), drops the pin (clearing `GTF_writing` / `GTF_reading`
//! in G's entry when the last such pin goes) and then the frame reference; if G is gone,
//! only the reference goes, and the last one frees G's orphaned page.
//!
//! # Maptrack
//! A mapper's handles ([`grant::Maptrack`]): at most 256 per maptrack frame (Xen's 16-byte
//! `struct grant_mapping`), from the domain's `max_maptrack_frames` (the toolstack's
//! value; Xen's default 1024 frames, 262144 handles, for the domains built at boot, so
//! blkback's persistent grants fit). Slots come a 256-handle chunk at a time as handles
//! are used; the lowest free handle is reused first (a min-heap): get O(1), insert and
//! remove O(log n). The map path has no other per-mapping cost: the occupied-address check
//! is a p2m look-up, pins live in a B-tree keyed by ref.
//!
//! # Copying
//! One copy op from domain C ([`copy_one`]): each side is a grant `{ref, domid}` or one of
//! C's own frames `{gmfn, DOMID_SELF}` (a frame side naming any domid but `DOMID_SELF`,
//! C's own numeric id included, is `permission_denied`, as Xen). A grant side is pinned
//! transiently in its granter's active entry exactly as a mapping pins it (read pin for
//! the source, write pin and `!GTF_readonly` for the destination; the first pin checks
//! type, grantee = C, and captures the frame; a live mapping's pins and captured frame are
//! shared), with a frame reference on the page; the pin goes (and with it `GTF_writing` /
//! `GTF_reading` when no pin of that kind is left) right after the op. A frame side is
//! translated through C's p2m: C's RAM, or a page mapped into C through a grant (as Xen's
//! `get_paged_frame`, whose `get_page_from_gfn` accepts `p2m_grant_map_rw/ro` and takes a
//! reference on the foreign page; here a transient frame hold), but never written through
//! a read-only mapping (`general_error`; Xen would write it) and never a hypervisor frame
//! shared with C (`bad_page`). Bytes move host frame to host frame (memmove semantics:
//! a ref copied onto itself is fine), after both claims, `offset + len <= 4096` checked
//! last as Xen does.
//!
//! Lock order: a copy never holds two domain locks. Each grant side is pinned and later
//! unpinned under its granter's lock alone (then that granter's p2m lock, for the frame
//! translation); the copy itself holds no lock, the frames being kept by the frame
//! references and the granters by `Arc`s. So the three domains involved (C, the source's
//! granter, the destination's) need no order among themselves, whichever are equal. Map
//! and unmap take the mapper's and the granter's locks in ascending domid order (one when
//! equal); every path takes domain locks before p2m locks, and the frame allocator last.
//!
//! # Revocation
//! A granter may overwrite a mapped entry (flags = 0, or a new grant) at any time: live
//! mappings keep the frame captured at the first pin and their frame references; unmaps
//! and copy releases only clear `GTF_writing` / `GTF_reading` from whatever word is there
//! now (Xen's `gnttab_clear_flags`), never restore what the guest removed; new first
//! (or first writable) pins re-validate the entry and fail (`general_error`), while further
//! read pins of an entry still pinned use the captured frame (as Xen).
//!
//! Batches are processed in full (status per op; the hypercall returns 0 once all ran), at
//! most [`OPS_PER_STEP`] ops per VM exit: a longer batch continues with a hypercall
//! continuation ([`Reply::Again`]: `uop` and `count` advanced in the guest's registers,
//! the instruction executed again), so the scheduler runs in between, as Xen does.
#![allow(unsafe_code)]

use super::guest_access::{read_arg, write_arg};
use super::Cx;
use super::Reply;
use crate::domain::memory::{CopyFrameError, GrantP2mError};
use crate::domain::{DomState, Domain, Life, MAX_GRANT_FRAMES};
use crate::hvm::{Backend, Vcpu as _};
use crate::mm::frametable::global as frametable;
use crate::mm::phys;
use crate::schedule::Hv;
use alloc::sync::Arc;
use grant::{ActiveTable, CopySide, Mapping, Maptrack, Status};
use xen_abi::errno::Errno;
use xen_abi::grant_table::{
    GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion,
    GnttabUnmapGrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_APPLICATION_MAP,
    GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_COPY_ARG,
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_BAD_VIRT_ADDR,
    GNTST_GENERAL_ERROR, GNTST_NO_SPACE, GNTST_OKAY, GNTTABOP_COPY, GNTTABOP_GET_VERSION,
    GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_UNMAP_GRANT_REF,
    GNTTAB_V1_ENTRIES_PER_FRAME,
};

/// Ops of a map or unmap batch processed per VM exit (see the module documentation).
pub const OPS_PER_STEP: u64 = 32;

/// Largest `count` (Xen takes it as a non-negative `int`).
const MAX_COUNT: u64 = i32::MAX as u64;

/// Maptrack frames of the domains built at boot (dom0 and boot-time domUs): Xen's default
/// `gnttab_max_maptrack_frames`, 1024 frames of 256 handles (262144 live mappings).
pub const DEFAULT_MAPTRACK_FRAMES: u32 = 1024;

/// Highest guest frame number a mapping may target: the 4-level p2m takes 48-bit
/// guest-physical addresses.
const MAX_GPFN: u64 = (1 << 36) - 1;

/// A domain's grant mapping state (in its [`DomState`]).
#[derive(Debug)]
pub struct GrantState {
    /// Its entries other domains have pinned.
    pub active: ActiveTable,
    /// The mappings it made.
    pub maptrack: Maptrack,
}

impl GrantState {
    /// The state of a domain allowed `maptrack_frames` maptrack frames (its handle limit
    /// is Xen's: 256 per frame, [`grant::maptrack_limit`]). Nothing is allocated yet.
    pub const fn new(maptrack_frames: u32) -> Self {
        GrantState {
            active: ActiveTable::new(),
            maptrack: Maptrack::new(grant::maptrack_limit(maptrack_frames)),
        }
    }
}

/// `HYPERVISOR_grant_table_op(cmd, uop, count)`.
pub fn grant_table_op<B: Backend>(
    cx: &mut Cx<'_, B>,
    cmd: u64,
    uop: u64,
    count: u64,
) -> Result<Reply, Errno> {
    match cmd {
        GNTTABOP_QUERY_SIZE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut q: GnttabQuerySize = read_arg(cx, uop)?;
            if !cx.is_self(q.dom) {
                return Err(Errno::ESRCH);
            }
            q.nr_frames = cx.dom.st.lock().grant_frames.len() as u32;
            q.max_nr_frames = cx.dom.max_grant_frames;
            q.status = GNTST_OKAY;
            write_arg(cx, uop, &q)?;
            Ok(Reply::Value(0))
        }
        GNTTABOP_MAP_GRANT_REF => batch::<GnttabMapGrantRef, B>(cx, uop, count, |cx, op| {
            match map_one(cx, op) {
                Ok(handle) => {
                    op.handle = handle;
                    op.status = GNTST_OKAY;
                }
                Err(status) => op.status = status,
            }
            op.dev_bus_addr = 0;
        }),
        GNTTABOP_UNMAP_GRANT_REF => batch::<GnttabUnmapGrantRef, B>(cx, uop, count, |cx, op| {
            op.status = match unmap_one(cx, op) {
                Ok(()) => GNTST_OKAY,
                Err(status) => status,
            };
        }),
        GNTTABOP_COPY => batch::<GnttabCopy, B>(cx, uop, count, |cx, op| {
            op.status = match copy_one(cx, op) {
                Ok(()) => GNTST_OKAY,
                Err(status) => status,
            };
        }),
        GNTTABOP_SET_VERSION => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let v: GnttabSetVersion = read_arg(cx, uop)?;
            // Only version 1 exists here.
            if v.version != 1 {
                return Err(Errno::EINVAL);
            }
            Ok(Reply::Value(0))
        }
        GNTTABOP_GET_VERSION => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut v: GnttabGetVersion = read_arg(cx, uop)?;
            if !cx.is_self(v.dom) {
                return Err(Errno::ESRCH);
            }
            v.version = 1;
            write_arg(cx, uop, &v)?;
            Ok(Reply::Value(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Host frame `idx` of the domain's grant table, allocating frames up to it (zeroed, as
/// an empty table) on first use; None beyond the maximum or when memory is exhausted.
pub fn frame<B: Backend>(cx: &Cx<'_, B>, idx: u64) -> Option<u64> {
    let idx = usize::try_from(idx)
        .ok()
        .filter(|&i| i < MAX_GRANT_FRAMES && i < cx.dom.max_grant_frames as usize)?;
    let mut st = cx.dom.st.lock();
    while st.grant_frames.len() <= idx {
        let f = phys::alloc_zeroed(1, 1)?;
        st.grant_frames.push(f);
    }
    Some(st.grant_frames[idx])
}

/// Runs `f` on each of the `count` ops of type `T` at guest address `uop`, copying each in
/// and its result back out, [`OPS_PER_STEP`] at a time (then a continuation with the rest).
/// Returns 0 once every op ran (their statuses say how each went); `-EFAULT` if an op
/// cannot be read or written (ops before it took effect); `-EINVAL` for a negative count.
fn batch<T, B: Backend>(
    cx: &mut Cx<'_, B>,
    uop: u64,
    count: u64,
    mut f: impl FnMut(&mut Cx<'_, B>, &mut T),
) -> Result<Reply, Errno>
where
    T: zerocopy::FromBytes + zerocopy::IntoBytes + zerocopy::Immutable,
{
    if count > MAX_COUNT {
        return Err(Errno::EINVAL);
    }
    let size = core::mem::size_of::<T>() as u64;
    let step = count.min(OPS_PER_STEP);
    for i in 0..step {
        let at = i
            .checked_mul(size)
            .and_then(|o| uop.checked_add(o))
            .ok_or(Errno::EFAULT)?;
        let mut op: T = read_arg(cx, at)?;
        f(cx, &mut op);
        write_arg(cx, at, &op)?;
    }
    if step == count {
        return Ok(Reply::Value(0));
    }
    // The rest next time: same command (RDI), advanced `uop` (RSI) and `count` (RDX).
    let next = uop.checked_add(step * size).ok_or(Errno::EFAULT)?;
    let regs = cx.v.hw.regs();
    regs.rsi = next;
    regs.rdx = count - step;
    Ok(Reply::Again)
}

/// The granter's side of a mapping operation: its active entries, grant frames and life.
struct Granter<'a> {
    active: &'a mut ActiveTable,
    frames: &'a [u64],
    life: Life,
}

impl<'a> Granter<'a> {
    /// `bad_gntref` unless `gref` is inside the table. The table has at least one frame
    /// (as Xen's, from creation) even before the guest sets one up: its entries read as
    /// invalid until then.
    fn check_ref(&self, gref: u32) -> Result<(), Status> {
        let entries = self.frames.len().max(1) as u64 * u64::from(GNTTAB_V1_ENTRIES_PER_FRAME);
        if u64::from(gref) >= entries {
            return Err(GNTST_BAD_GNTREF);
        }
        Ok(())
    }

    /// Shared entry `gref`: `bad_gntref` outside the table, `general_error` when the
    /// guest has not set up the frame holding it.
    fn entry(&self, gref: u32) -> Result<shared_entry::Entry<'a>, Status> {
        self.check_ref(gref)?;
        shared_entry::Entry::of(self.frames, gref).ok_or(GNTST_GENERAL_ERROR)
    }

    /// The steps a map and a copy share to pin `gref` (at `entry`) for `grantee`: the
    /// plan against the active entry, the shared word's `GTF_reading`/`GTF_writing` (with
    /// the guest's type and grantee checks) when the plan says so, and a frame reference
    /// on the page: on the first pin the page `frame` names in the granter's RAM
    /// (`bad_page` otherwise), later the page the active entry captured. Nothing is
    /// recorded in the active entry until [`PreparedPin::commit`].
    fn prepare_pin<B: Backend>(
        &self,
        g: &Domain<B>,
        entry: shared_entry::Entry<'a>,
        gref: u32,
        grantee: u16,
        writable: bool,
    ) -> Result<PreparedPin<'a>, Status> {
        let plan = self.active.plan(gref, grantee, writable)?;
        if plan.update_shared {
            entry.update(|old| grant::pin_word(old, grantee, writable, true))?;
        }
        let mut pin = PreparedPin {
            entry,
            plan,
            gref,
            grantee,
            writable,
            gfn: 0,
            host: 0,
        };
        let frame = if plan.first {
            let gfn = entry.frame();
            match g.mem.ram_frame(u64::from(gfn) * phys_frame()) {
                Some(h) if frametable::get_owned(h) => Ok((gfn, h)),
                _ => Err(GNTST_BAD_PAGE),
            }
        } else {
            match self.active.get(gref).copied() {
                Some(a) if frametable::get_extra(a.host) => Ok((a.gfn, a.host)),
                _ => Err(GNTST_GENERAL_ERROR),
            }
        };
        match frame {
            Ok((gfn, host)) => {
                (pin.gfn, pin.host) = (gfn, host);
                Ok(pin)
            }
            Err(e) => {
                pin.undo_shared();
                Err(e)
            }
        }
    }
}

/// A pin of a grant entry prepared by [`Granter::prepare_pin`] under the granter's lock:
/// the shared word is updated and a frame reference on `host` is held. It must be
/// committed or aborted under the same lock.
#[must_use]
struct PreparedPin<'a> {
    entry: shared_entry::Entry<'a>,
    plan: grant::PinPlan,
    gref: u32,
    grantee: u16,
    writable: bool,
    gfn: u32,
    /// Host-physical address of the granted page.
    host: u64,
}

impl PreparedPin<'_> {
    /// Records the pin in the active entry (capturing the frame on the first pin).
    /// Cannot fail after a successful plan under the same lock; if it does, everything is
    /// undone and the op fails with `general_error`.
    fn commit(self, active: &mut ActiveTable) -> Result<(), Status> {
        match active.pin(
            self.gref,
            self.grantee,
            self.writable,
            (self.gfn, self.host),
        ) {
            Ok(_) => Ok(()),
            Err(_) => {
                log::error!(
                    "grant pin bookkeeping of ref {} failed after the checks",
                    self.gref
                );
                self.abort();
                Err(GNTST_GENERAL_ERROR)
            }
        }
    }

    /// Drops the frame reference and undoes the shared-word change.
    fn abort(self) {
        frametable::put(self.host);
        self.undo_shared();
    }

    /// Clears the bits this pin set in the shared word (only those).
    fn undo_shared(&self) {
        if self.plan.update_shared {
            let (clear_w, clear_r) = (self.writable, self.plan.first);
            let _ = self
                .entry
                .update(|old| Ok(grant::unpin_word(old, clear_w, clear_r)));
        }
    }
}

/// Runs `f` with the mapper's maptrack and, if `g` is given, the granter's side, holding
/// the domain locks in ascending domid order (one lock when they are the same domain).
fn with_states<B: Backend, R>(
    m: &Domain<B>,
    g: Option<&Domain<B>>,
    f: impl FnOnce(&mut Maptrack, Option<Granter<'_>>) -> R,
) -> R {
    fn split(st: &mut DomState) -> (&mut Maptrack, Granter<'_>) {
        let life = st.life;
        (
            &mut st.grant.maptrack,
            Granter {
                active: &mut st.grant.active,
                frames: &st.grant_frames,
                life,
            },
        )
    }
    match g {
        None => f(&mut m.st.lock().grant.maptrack, None),
        Some(g) if g.id == m.id => {
            let mut st = m.st.lock();
            let (mt, gr) = split(&mut st);
            f(mt, Some(gr))
        }
        Some(g) => {
            let (mut ms, mut gs) = super::events::lock_pair(m, g);
            let life = gs.life;
            let gs = &mut *gs;
            f(
                &mut ms.grant.maptrack,
                Some(Granter {
                    active: &mut gs.grant.active,
                    frames: &gs.grant_frames,
                    life,
                }),
            )
        }
    }
}

/// Atomic access to a granter's shared entries (its grant-table frames).
mod shared_entry {
    use super::{phys, GNTST_GENERAL_ERROR, GNTTAB_V1_ENTRIES_PER_FRAME};
    use core::marker::PhantomData;
    use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use grant::{Status, MAX_CAS_RETRIES};

    /// Entry `gref` of a granter's table, valid while the borrow of its frame list (taken
    /// under its domain lock) lasts.
    #[derive(Clone, Copy)]
    pub struct Entry<'a> {
        addr: u64,
        _frames: PhantomData<&'a [u64]>,
    }

    impl<'a> Entry<'a> {
        /// Entry `gref` in the grant frames `frames`, if the table has it.
        pub fn of(frames: &'a [u64], gref: u32) -> Option<Entry<'a>> {
            let per = GNTTAB_V1_ENTRIES_PER_FRAME;
            let frame = frames.get(usize::try_from(gref / per).ok()?)?;
            Some(Entry {
                addr: frame + u64::from(gref % per) * 8,
                _frames: PhantomData,
            })
        }

        /// The 32-bit word at byte `offset` (0 or 4) of the entry.
        fn word(&self, offset: u64) -> &'a AtomicU32 {
            // SAFETY: `addr` is an 8-aligned entry inside a grant-table frame of the
            // granter (`of` took it from its frame list), a hypervisor frame in the direct
            // map; `offset` is 0 or 4, so the word is 4-aligned and inside the frame. The
            // frame list is borrowed for 'a from the granter's locked state, and grant
            // frames are only freed when the domain is dropped, so the frame outlives the
            // reference. The guest changes the word concurrently, but only with its own
            // atomic operations or plain stores; AtomicU32 has u32's layout and only atomic
            // operations are made through it.
            unsafe { &*phys::to_virt(self.addr + offset).cast::<AtomicU32>() }
        }

        /// Replaces the `{flags, domid}` word with `f(old)`, retrying a bounded number of
        /// times while the guest changes it; `f`'s error, or `general_error` when the
        /// retries run out.
        pub fn update(&self, f: impl Fn(u32) -> Result<u32, Status>) -> Result<(), Status> {
            let w = self.word(0);
            let mut old = w.load(SeqCst);
            for _ in 0..MAX_CAS_RETRIES {
                let new = f(old)?;
                match w.compare_exchange(old, new, SeqCst, SeqCst) {
                    Ok(_) => return Ok(()),
                    Err(now) => old = now,
                }
            }
            Err(GNTST_GENERAL_ERROR)
        }

        /// The entry's `frame` field.
        pub fn frame(&self) -> u32 {
            self.word(4).load(SeqCst)
        }
    }
}

/// One `GNTTABOP_map_grant_ref` op from the calling domain; the maptrack handle, or the
/// `GNTST_*` status. Checks in Xen's order: flags (`bad_gntref` without `host_map`,
/// `general_error` for PV-only flags), the granter (`bad_domain`), a free handle
/// (`no_space`), `ref` (`bad_gntref`), the address (`bad_virt_addr`), the entry
/// (`general_error`), the granted page (`bad_page`), the mapper's p2m (`general_error`).
fn map_one<B: Backend>(cx: &Cx<'_, B>, op: &GnttabMapGrantRef) -> Result<u32, Status> {
    if op.flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
        return Err(GNTST_BAD_GNTREF);
    }
    if op.flags & (GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE) != 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    let m = cx.dom;
    let gid = cx.resolve(op.dom);
    let g = if gid == m.id {
        m.clone()
    } else {
        cx.hv.domains.get(gid).ok_or(GNTST_BAD_DOMAIN)?
    };
    let writable = op.flags & GNTMAP_READONLY == 0;
    let (gref, gpa) = (op.ref_, op.host_addr);
    with_states(m, Some(&g), |maptrack, granter| {
        let Some(gr) = granter else {
            return Err(GNTST_GENERAL_ERROR);
        };
        if gr.life != Life::Running {
            return Err(GNTST_BAD_DOMAIN);
        }
        if maptrack.is_full() {
            return Err(GNTST_NO_SPACE);
        }
        gr.check_ref(gref)?;
        if gpa % phys_frame() != 0 || gpa / phys_frame() > MAX_GPFN {
            return Err(GNTST_BAD_VIRT_ADDR);
        }
        let entry = shared_entry::Entry::of(gr.frames, gref).ok_or(GNTST_GENERAL_ERROR)?;
        // Refused before the granter's entry is touched (map_grant checks it again
        // under the p2m lock): anything mapped there, RAM, shared frames or a mapping.
        if m.mem.p2m_type(gpa).is_some() {
            return Err(GNTST_GENERAL_ERROR);
        }
        let pin = gr.prepare_pin(&g, entry, gref, m.id, writable)?;
        let host = pin.host;
        if let Err(e) = m.mem.map_grant(gpa, host, !writable) {
            if !matches!(e, GrantP2mError::Occupied) {
                log::debug!("d{}: grant map at {gpa:#x}: {e:?}", m.id);
            }
            pin.abort();
            return Err(GNTST_GENERAL_ERROR);
        }
        // Neither can fail now: the plan and the free handle were checked under these locks.
        pin.commit(gr.active)?;
        maptrack
            .insert(Mapping {
                granter: g.id,
                gref,
                readonly: !writable,
                gpa,
                host,
            })
            .map_err(|_| {
                log::error!("d{}: grant map bookkeeping failed after the checks", m.id);
                GNTST_GENERAL_ERROR
            })
    })
}

/// One `GNTTABOP_copy` op from the calling domain C. Checks in Xen's order
/// (`gnttab_copy_one`): the source's and then the destination's domain
/// (`permission_denied` for a frame side not `DOMID_SELF`, `bad_domain`), then the source
/// is claimed, then the destination (a grant side: `bad_gntref`, `general_error`,
/// `bad_page`, as a map; a frame side: `bad_page`), and only then `offset + len`
/// (`bad_copy_arg`). A zero length copies nothing and succeeds.
///
/// No two domain locks are ever held together: each grant side is pinned under its
/// granter's lock alone, which is then dropped; the bytes move between the two held host
/// frames with no domain lock; each pin is dropped again under its granter's lock alone
/// (destination first). So any three domains (C, the source's and the destination's
/// granter, equal or not) can be involved without a lock-order question.
fn copy_one<B: Backend>(cx: &Cx<'_, B>, op: &GnttabCopy) -> Result<(), Status> {
    let src_side = grant::copy_side(
        op.flags & GNTCOPY_SOURCE_GREF != 0,
        op.source.u,
        op.source.domid,
    )?;
    let src_dom = side_domain(cx, src_side)?;
    let dst_side = grant::copy_side(op.flags & GNTCOPY_DEST_GREF != 0, op.dest.u, op.dest.domid)?;
    let dst_dom = side_domain(cx, dst_side)?;
    let src = claim(cx, src_side, src_dom, false)?;
    let dst = claim(cx, dst_side, dst_dom, true)?;
    if !grant::copy_fits(op.source.offset, op.len) || !grant::copy_fits(op.dest.offset, op.len) {
        return Err(GNTST_BAD_COPY_ARG);
    }
    // In range: each offset + len is at most a page (checked above).
    phys::copy_in_frames(
        dst.host + u64::from(op.dest.offset),
        src.host + u64::from(op.source.offset),
        usize::from(op.len),
    );
    Ok(())
    // `dst`, then `src`, are released here.
}

/// The granting domain of a grant side (`None` for a frame side: the caller's own page).
fn side_domain<B: Backend>(
    cx: &Cx<'_, B>,
    side: CopySide,
) -> Result<Option<Arc<Domain<B>>>, Status> {
    match side {
        CopySide::Gmfn { .. } => Ok(None),
        CopySide::Gref { domid, .. } => {
            let id = cx.resolve(domid);
            if id == cx.dom.id {
                Ok(Some(cx.dom.clone()))
            } else {
                cx.hv.domains.get(id).map(Some).ok_or(GNTST_BAD_DOMAIN)
            }
        }
    }
}

/// One side of a copy, claimed: the host page, kept allocated until this is dropped.
struct Claim<B: Backend> {
    /// Host-physical address of the page.
    host: u64,
    /// A grant side's pin: (granter, ref, writable, copier); dropped with the frame
    /// reference the claim took.
    pin: Option<(Arc<Domain<B>>, u32, bool, u16)>,
    /// A frame side through a grant mapping of the caller's: a transient frame reference.
    _hold: Option<frametable::Hold>,
}

impl<B: Backend> Drop for Claim<B> {
    fn drop(&mut self) {
        if let Some((g, gref, writable, copier)) = self.pin.take() {
            unpin_copy(&g, gref, writable, copier);
            frametable::put(self.host);
        }
    }
}

/// Claims one side of a copy for the calling domain (`write` for the destination).
fn claim<B: Backend>(
    cx: &Cx<'_, B>,
    side: CopySide,
    granter: Option<Arc<Domain<B>>>,
    write: bool,
) -> Result<Claim<B>, Status> {
    match (side, granter) {
        (CopySide::Gmfn { gmfn }, _) => {
            let gpa = gmfn
                .checked_mul(phys_frame())
                .filter(|_| gmfn <= MAX_GPFN)
                .ok_or(GNTST_BAD_PAGE)?;
            match cx.dom.mem.copy_frame(gpa, write) {
                Ok((host, hold)) => Ok(Claim {
                    host,
                    pin: None,
                    _hold: hold,
                }),
                Err(CopyFrameError::NotRam) => Err(GNTST_BAD_PAGE),
                Err(CopyFrameError::ReadOnly) => Err(GNTST_GENERAL_ERROR),
            }
        }
        (CopySide::Gref { gref, .. }, Some(g)) => {
            let host = pin_copy(&g, gref, write, cx.dom.id)?;
            Ok(Claim {
                host,
                pin: Some((g, gref, write, cx.dom.id)),
                _hold: None,
            })
        }
        (CopySide::Gref { .. }, None) => Err(GNTST_GENERAL_ERROR),
    }
}

/// Pins grant `gref` of `g` for a copy by domain `copier` (Xen's `acquire_grant_for_copy`,
/// v1): a read pin, or a write pin for the destination, counted in the same active entry
/// as mappings, so the entry's frame, its `GTF_reading`/`GTF_writing` bits and its single
/// grantee are shared with any live mapping. Takes a frame reference on the page; returns
/// its host address. Under `g`'s lock only.
fn pin_copy<B: Backend>(
    g: &Domain<B>,
    gref: u32,
    writable: bool,
    copier: u16,
) -> Result<u64, Status> {
    let mut guard = g.st.lock();
    let st = &mut *guard;
    let gr = Granter {
        active: &mut st.grant.active,
        frames: &st.grant_frames,
        life: st.life,
    };
    if gr.life != Life::Running {
        return Err(GNTST_BAD_DOMAIN);
    }
    let entry = gr.entry(gref)?;
    let pin = gr.prepare_pin(g, entry, gref, copier, writable)?;
    let host = pin.host;
    pin.commit(gr.active)?;
    Ok(host)
}

/// Drops a copy's pin of `gref` in `g` (Xen's `release_grant_for_copy`): `GTF_writing`
/// goes when no write pin is left, `GTF_reading` when no pin is; only those bits are
/// cleared from whatever the guest's word holds now. Under `g`'s lock only; the caller
/// drops the frame reference afterwards.
fn unpin_copy<B: Backend>(g: &Domain<B>, gref: u32, writable: bool, copier: u16) {
    let mut guard = g.st.lock();
    let st = &mut *guard;
    match st.grant.active.unpin(gref, copier, writable) {
        Ok(u) => {
            if let Some(entry) = shared_entry::Entry::of(&st.grant_frames, gref) {
                let _ = entry
                    .update(|old| Ok(grant::unpin_word(old, u.clear_writing, u.clear_reading)));
            }
        }
        Err(_) => log::error!("d{}: grant copy pin of ref {gref} missing at release", g.id),
    }
}

const fn phys_frame() -> u64 {
    crate::mm::frame::FRAME_SIZE
}

/// One `GNTTABOP_unmap_grant_ref` op from the calling domain.
fn unmap_one<B: Backend>(cx: &Cx<'_, B>, op: &GnttabUnmapGrantRef) -> Result<(), Status> {
    let m = cx.dom;
    let mapping = *m.st.lock().grant.maptrack.get(op.handle)?;
    if op.host_addr != mapping.gpa {
        return Err(GNTST_GENERAL_ERROR);
    }
    release(cx.hv, m, op.handle, mapping, false)
}

/// Removes mapping `handle` (= `mapping`) of domain `m`: its p2m entry, then (after the
/// flush) the pin in the granter, if it still lives, and the frame reference. With
/// `force` (teardown of `m`, whose vCPUs never run again) the bookkeeping goes even if the
/// p2m entry cannot be removed.
fn release<B: Backend>(
    hv: &Hv<B>,
    m: &Domain<B>,
    handle: u32,
    mapping: Mapping,
    force: bool,
) -> Result<(), Status> {
    let g = hv.domains.get(mapping.granter);
    // The p2m entry and the handle go first, under the locks.
    with_states(m, None, |maptrack, _| {
        // Another vCPU of `m` may have unmapped it meanwhile (the lock was dropped).
        if maptrack.get(handle) != Ok(&mapping) {
            return Err(GNTST_BAD_HANDLE);
        }
        if let Err(e) = m.mem.unmap_grant(mapping.gpa, mapping.host) {
            log::warn!("d{}: grant unmap at {:#x}: {e:?}", m.id, mapping.gpa);
            if !force {
                return Err(GNTST_GENERAL_ERROR);
            }
        }
        let _ = maptrack.remove(handle);
        Ok(())
    })?;
    // Then, with no lock held (another CPU running a vCPU of `m` may be waiting for one),
    // every CPU that may still hold the translation drops it.
    flush_mapper(m);
    // Only now may the granter see the page unmapped. The granter may be gone, or its id
    // reused: only an active entry this mapping pinned (same mapper, same frame, which
    // our reference kept from being reused) is unpinned.
    with_states(m, g.as_deref(), |_, granter| {
        if let Some(gr) = granter {
            let ours = gr
                .active
                .get(mapping.gref)
                .is_some_and(|a| a.mapper == m.id && a.host == mapping.host);
            if ours {
                if let Ok(u) = gr.active.unpin(mapping.gref, m.id, !mapping.readonly) {
                    if let Some(entry) = shared_entry::Entry::of(gr.frames, mapping.gref) {
                        let _ = entry.update(|old| {
                            Ok(grant::unpin_word(old, u.clear_writing, u.clear_reading))
                        });
                    }
                }
            }
        }
    });
    // After the flush: no vCPU of `m` can reach the frame any more.
    frametable::put(mapping.host);
    Ok(())
}

/// Makes sure no vCPU of `m` uses a p2m translation removed before this call once the
/// frame behind it is released.
///
/// Every vCPU compares the domain's flush generation with its own before each VM entry
/// and flushes its nested TLB (INVEPT / new ASID) if it changed; `Domain::p2m_changed`
/// bumps it and waits until every other CPU running a vCPU of `m` has left guest mode,
/// so no translation removed before this call survives it.
fn flush_mapper<B: Backend>(m: &Domain<B>) {
    m.p2m_changed();
}

/// Unmaps every mapping `dom` made (its teardown): pins and frame references go back, and
/// granters' pages orphaned meanwhile are freed by their last unmap here.
pub fn unmap_all<B: Backend>(hv: &Hv<B>, dom: &Domain<B>) {
    // Handles in ascending order: one pass over the table (nothing maps meanwhile: the
    // domain's vCPUs never run again).
    let mut from = 0;
    loop {
        let next = {
            let st = dom.st.lock();
            let mt = &st.grant.maptrack;
            mt.next_live(from)
                .and_then(|h| mt.get(h).ok().map(|m| (h, *m)))
        };
        let Some((handle, mapping)) = next else {
            break;
        };
        if release(hv, dom, handle, mapping, true).is_err() {
            // Cannot happen (teardown is the only user now); never loop forever.
            log::error!("d{}: grant handle {handle} not released", dom.id);
            break;
        }
        from = handle.saturating_add(1);
        if handle == u32::MAX {
            break;
        }
    }
}
