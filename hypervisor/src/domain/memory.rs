//! A domain's guest-physical memory: its RAM, its nested page table (p2m) and the only
//! sanctioned way for the hypervisor to read or write guest memory.
//!
//! RAM is allocated in 2 MiB-aligned chunks so the p2m can use large pages. Every access
//! on a guest's behalf goes through [`GuestMemory::read`] / [`GuestMemory::write`], which
//! translate page by page through the p2m (so a page replaced by `add_to_physmap`, such as
//! shared_info, is honoured), check the p2m permissions, and copy with volatile accesses
//! (the guest may be changing the memory at the same time). Nothing ever holds a Rust
//! reference into guest memory.
//!
//! Every p2m leaf carries a [`P2mType`] in bits the hardware ignores: the domain's own
//! RAM, a hypervisor frame shared with it (shared_info, grant-table frames), or another
//! domain's page mapped through a grant (read/write or read-only). RAM frames are owned in
//! the frame table ([`crate::mm::frametable`]): on teardown each is freed unless a grant
//! mapping still holds it, and then freed by that mapping's last unmap.
#![allow(unsafe_code)]

use crate::mm::frame::FRAME_SIZE;
use crate::mm::frametable::global as frametable;
use crate::mm::phys::{self, DirectMap, TableFrames};
use crate::sync::{Level, Lock};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use frametable::Hold;
use guest_walk::GuestPhysRead;
use pagetable::{Format, MapError, MemType, PageSize, PageTable, Perm};

/// Granule of guest RAM allocation and of large p2m pages.
pub const CHUNK: u64 = 2 << 20;

/// End of the guest-physical space the p2m covers (48-bit addresses, 4 levels).
pub const MAX_GPA: u64 = 1 << 48;

/// What a p2m entry maps (stored with the leaf, see `pagetable::PageTable::map_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mType {
    /// The domain's own RAM.
    Ram,
    /// A hypervisor frame shared with the domain (shared_info, grant-table frames).
    XenShared,
    /// Another domain's page mapped through a writable grant.
    GrantRw,
    /// Another domain's page mapped through a read-only grant.
    GrantRo,
    /// Reserved: a foreign page mapped by a privileged domain (not used yet).
    Foreign,
    /// A host device's MMIO page, identity-mapped (gfn == mfn) into the control domain
    /// for a PCI BAR (`hvm::vpci`); never RAM, never reached by hypercall copies.
    Mmio,
}

impl P2mType {
    const fn kind(self) -> u8 {
        match self {
            P2mType::Ram => 0,
            P2mType::XenShared => 1,
            P2mType::GrantRw => 2,
            P2mType::GrantRo => 3,
            P2mType::Foreign => 4,
            P2mType::Mmio => 5,
        }
    }

    /// The type of a leaf with software type `kind` (unknown values read as Foreign, which
    /// nothing accepts).
    pub const fn from_kind(kind: u8) -> P2mType {
        match kind {
            0 => P2mType::Ram,
            1 => P2mType::XenShared,
            2 => P2mType::GrantRw,
            3 => P2mType::GrantRo,
            5 => P2mType::Mmio,
            _ => P2mType::Foreign,
        }
    }

    /// Whether the page belongs to another domain through a grant mapping.
    pub const fn is_grant(self) -> bool {
        matches!(self, P2mType::GrantRw | P2mType::GrantRo)
    }
}

/// Why a grant mapping could not be added to or removed from the p2m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantP2mError {
    /// Something (RAM, a shared frame, another mapping) is mapped at that address already.
    Occupied,
    /// Not the grant mapping of that frame.
    NotThatMapping,
    /// The p2m refused (address range, out of memory for tables).
    P2m(MapError),
}

/// Why device pages could not be identity-mapped ([`GuestMemory::map_mmio`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioP2mError {
    /// Not page-aligned, wrapping, or beyond the p2m's reach.
    BadRange,
    /// Something other than the same MMIO page is mapped at this address.
    Occupied { gpa: u64 },
    /// The p2m refused (out of memory for tables).
    P2m(MapError),
}

/// Why a page cannot be a `GNTTABOP_copy` frame side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFrameError {
    /// Nothing, or not RAM nor a grant mapping (`bad_page`).
    NotRam,
    /// A read-only grant mapping as the destination.
    ReadOnly,
}

/// A guest access the p2m does not allow (or that lies outside guest memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub gpa: u64,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest-physical address {:#x} is not accessible",
            self.gpa
        )
    }
}

/// Where RAM laid out from guest-physical 0 must end: the MMIO hole (Xen's default for
/// HVM guests) runs from here to 4 GiB.
pub const RAM_BELOW_HOLE: u64 = 0xf000_0000;

/// Why guest memory could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// Not enough free host memory for the domain.
    OutOfMemory { requested: u64 },
    /// RAM from guest-physical 0 this large would cover the MMIO hole below 4 GiB (the
    /// LAPIC page, unbacked device space); RAM above 4 GiB is not laid out yet.
    CoversHole { requested: u64 },
    /// The p2m refused a mapping.
    P2m(MapError),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::OutOfMemory { requested } => {
                write!(f, "out of host memory ({} MiB requested)", requested >> 20)
            }
            MemoryError::CoversHole { requested } => write!(
                f,
                "{} MiB of RAM from address 0 would cover the MMIO hole below 4 GiB (at most {} MiB; RAM above 4 GiB is not supported yet)",
                requested >> 20,
                RAM_BELOW_HOLE >> 20
            ),
            MemoryError::P2m(e) => write!(f, "nested page table: {e}"),
        }
    }
}

impl From<MapError> for MemoryError {
    fn from(e: MapError) -> Self {
        MemoryError::P2m(e)
    }
}

/// Guest RAM plus the p2m of format `F` (EPT or NPT).
///
/// Shared by every vCPU of the domain (and by other domains delivering events into it):
/// all methods take `&self`. The p2m, the overlay list and the RAM chunks sit behind one
/// lock, taken for the duration of a translation or a change (never across a VM entry);
/// RAM only grows ([`GuestMemory::populate`]) until the domain is destroyed.
pub struct GuestMemory<F: Format> {
    p2m: Lock<P2m<F>>,
    /// Root of the p2m (fixed for the domain's life).
    root: u64,
}

/// The mutable half of [`GuestMemory`].
/// Free frames an overlay change needs at most: splitting large pages at the old and the
/// new place, and the table path to the new place.
const OVERLAY_FRAMES_NEEDED: u64 = 16;

/// The frame source for changes to a live p2m. Tables come from the allocator; a table
/// that an unmap empties is unlinked but only *retired*: until the domain's vCPUs are
/// synchronised, another CPU may still hold it in its paging-structure caches or be in the
/// middle of a walk through it (under QEMU's multi-threaded TCG, a vCPU thread can sit
/// mid-walk for milliseconds), and a reused frame read as a p2m table maps arbitrary host
/// memory into the guest. [`GuestMemory::free_retired`], which
/// `Domain::p2m_changed` calls after that synchronisation, frees them.
struct P2mFrames<'a>(&'a mut crate::mm::frame::FrameAllocator<'static>, Vec<u64>);

impl pagetable::FrameSource for P2mFrames<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        TableFrames(&mut *self.0).alloc_table()
    }

    fn free_table(&mut self, table: u64) {
        self.1.push(table);
    }
}

struct P2m<F: Format> {
    table: PageTable<F>,
    /// Extra hypervisor-owned frames mapped into the guest (shared_info, ...), as
    /// (gpa, host frame); the RAM page they displaced is kept and restored on unmap.
    overlays: Vec<(u64, u64)>,
    /// Frames the p2m's own tables and the page lists of split slots use (root included),
    /// for per-domain accounting.
    tables: u64,
    /// The domain's RAM by 2 MiB slot of guest-physical space (slot = gpa / 2 MiB).
    chunks: BTreeMap<u64, Chunk>,
    /// Slots [`GuestMemory::populate`] filled, contiguous from guest-physical 0 (the RAM
    /// size the domain was built with; ballooning does not change it).
    span: u64,
    /// RAM pages the domain holds (Xen's `tot_pages`).
    pages: u64,
    /// Highest guest frame number ever mapped (Xen's `max_mapped_pfn`).
    max_mapped_gfn: u64,
    /// Whether RAM may be mapped with 2 MiB pages.
    large_pages: bool,
    /// RAM above the first 2 MiB is identity-mapped (gfn == mfn, [`GuestMemory::new_identity`]),
    /// and pages the domain populates later are too.
    identity: bool,
    /// Tables an unmap emptied and unlinked, not yet freed ([`P2mFrames`]).
    retired: Vec<u64>,
}

/// Pages per 2 MiB slot.
const SLOT_PAGES: u64 = CHUNK / FRAME_SIZE;

/// The RAM of one 2 MiB slot of guest-physical space.
enum Chunk {
    /// All 512 pages present, backed by 512 contiguous host frames from this address.
    Whole(u64),
    /// Some pages present (ballooned out, or populated page by page).
    Split(PageList),
}

/// The host frame of each page of a split slot (0 for a hole), kept in one hypervisor
/// frame of 512 entries, so a domain that splits all its RAM costs the hypervisor heap
/// nothing (the frames count as p2m overhead).
struct PageList {
    frame: u64,
    present: u64,
}

impl PageList {
    fn get(&self, i: u64) -> u64 {
        phys::read_u64(self.frame + (i % SLOT_PAGES) * 8)
    }

    fn set(&mut self, i: u64, host: u64) {
        let old = self.get(i);
        phys::write_u64(self.frame + (i % SLOT_PAGES) * 8, host);
        match (old != 0, host != 0) {
            (false, true) => self.present += 1,
            (true, false) => self.present -= 1,
            _ => {}
        }
    }
}

impl Chunk {
    /// The host frame of page `i` of the slot, if present.
    fn page(&self, i: u64) -> Option<u64> {
        match self {
            Chunk::Whole(h) => Some(h + (i % SLOT_PAGES) * FRAME_SIZE),
            Chunk::Split(l) => Some(l.get(i)).filter(|&h| h != 0),
        }
    }
}

/// Why a page could not be removed from the domain (`XENMEM_decrease_reservation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveError {
    /// Nothing, or not the domain's own RAM (a shared frame, a grant mapping), is there.
    NotRam,
    /// No frame for a page table or a page list.
    OutOfMemory,
}

/// Why a page could not be added to the domain (`XENMEM_populate_physmap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopulateError {
    /// The extent is not aligned to its size or lies beyond the p2m's reach.
    BadAddress,
    /// Something is mapped in the extent already.
    Occupied,
    /// The domain would hold more than its maximum.
    OverMax,
    /// The host has no (suitable) frames left.
    OutOfMemory,
}

/// Where the frames of new RAM pages come from ([`populate_locked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Any free frames below host address `limit`, zeroed.
    Any { limit: u64 },
    /// The free frame at the page's own address (gfn == mfn), zeroed.
    Identity,
    /// The frame at the page's own address, already allocated to the caller (held for
    /// this domain), not zeroed.
    Held,
}

/// Whether RAM is zeroed before a domain gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scrub {
    /// Every frame: nothing a frame held before reaches the domain.
    All,
    /// Only the first 2 MiB chunk (the legacy area below 1 MiB, where Linux looks for
    /// firmware tables by signature, must hold nothing that looks like one); the rest keeps
    /// what it held. For the initial control domain built at boot, as Xen builds a PVH
    /// dom0 (`MEMF_no_scrub`): it is built before any domain has run, so free memory holds
    /// nothing a domain owned, and it may map every other domain's memory anyway. Its
    /// builder writes every byte it hands over with meaning (kernel segments with their
    /// BSS, modules, boot data). Under an emulator this also leaves the pages the guest
    /// never touches unallocated in the host.
    FirstChunk,
}

impl<F: Format> GuestMemory<F> {
    /// Allocates `bytes` of RAM (rounded up to 2 MiB) mapped read/write/execute from
    /// guest-physical 0, zeroed as `scrub` says. Either everything is allocated or nothing
    /// is kept.
    pub fn new(bytes: u64, large_pages: bool, scrub: Scrub) -> Result<Self, MemoryError> {
        let mem = Self::empty(large_pages)?;
        mem.populate_scrub(bytes, u64::MAX, scrub)?;
        Ok(mem)
    }

    /// The control domain's memory laid out on the host's own (Xen on Arm builds a dom0
    /// without an IOMMU the same way): the first 2 MiB are any frames, as [`Self::new`]
    /// gives them (the legacy area, boot data), and then the host frames of `runs`, each
    /// mapped at its own address (gfn == mfn), so that the addresses the domain programs
    /// into a device for DMA are the host's. The frames of `runs` (at or above 2 MiB,
    /// sorted) are the caller's, allocated and held for this: they become the domain's,
    /// or are freed on failure. They are not zeroed (`Scrub::FirstChunk`). Pages the
    /// domain populates later are mapped the same way.
    pub fn new_identity(
        runs: &[crate::mm::frame::PhysRange],
        large_pages: bool,
    ) -> Result<Self, MemoryError> {
        let mut taken = 0;
        let r = Self::identity_runs(runs, large_pages, &mut taken);
        if r.is_err() {
            // Frames of `runs` past those the domain took are still ours: give them back
            // (a failed extent gave back its own already).
            let mut seen = 0;
            if let Some(a) = phys::FRAMES.lock().as_mut() {
                for run in runs {
                    for at in (run.start..run.end).step_by(FRAME_SIZE as usize) {
                        if let Some(f) = crate::mm::frame::Frame::from_addr(at) {
                            if seen >= taken && a.is_allocated(f) {
                                phys::released(a.free(f));
                            }
                        }
                        seen += 1;
                    }
                }
            }
        }
        r
    }

    fn identity_runs(
        runs: &[crate::mm::frame::PhysRange],
        large_pages: bool,
        taken: &mut u64,
    ) -> Result<Self, MemoryError> {
        let requested = runs.iter().map(|r| r.len()).sum::<u64>() + CHUNK;
        let oom = MemoryError::OutOfMemory { requested };
        let mem = Self::empty(large_pages)?;
        mem.populate_scrub(CHUNK, u64::MAX, Scrub::FirstChunk)?;
        for r in runs {
            if r.start < CHUNK || r.end > RAM_BELOW_HOLE || r.start % FRAME_SIZE != 0 {
                return Err(oom);
            }
            // Slot by slot, so the p2m can use large pages for whole ones.
            let mut at = r.start;
            while at < r.end {
                let slot_end = (at / CHUNK + 1) * CHUNK;
                let n = (r.end.min(slot_end) - at) / FRAME_SIZE;
                populate_counted(&mut mem.p2m.lock(), at, n, Source::Held).map_err(|_| oom)?;
                *taken += n;
                at += n * FRAME_SIZE;
            }
        }
        let mut p2m = mem.p2m.lock();
        p2m.identity = true;
        p2m.span = p2m.chunks.keys().next_back().map_or(0, |s| s + 1);
        drop(p2m);
        Ok(mem)
    }

    /// Whether RAM is laid out on the host's addresses ([`Self::new_identity`]).
    pub fn is_identity(&self) -> bool {
        self.p2m.lock().identity
    }

    /// The domain's RAM as runs of guest-physical addresses `[start, end)`, in order.
    pub fn ram_runs(&self) -> Vec<(u64, u64)> {
        let p2m = self.p2m.lock();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (&slot, chunk) in &p2m.chunks {
            for i in 0..SLOT_PAGES {
                let gpa = slot * CHUNK + i * FRAME_SIZE;
                let present = match chunk {
                    Chunk::Whole(_) => true,
                    Chunk::Split(l) => l.get(i) != 0,
                };
                if !present || p2m.overlays.iter().any(|&(g, _)| g == gpa) {
                    continue;
                }
                match runs.last_mut() {
                    Some(r) if r.1 == gpa => r.1 += FRAME_SIZE,
                    _ => runs.push((gpa, gpa + FRAME_SIZE)),
                }
            }
        }
        runs
    }

    /// Guest memory without RAM (a p2m root only), to be given RAM by [`Self::populate`].
    pub fn empty(large_pages: bool) -> Result<Self, MemoryError> {
        let table = Self::new_p2m()?;
        Ok(GuestMemory {
            root: table.root(),
            p2m: Lock::new(
                Level::P2m,
                P2m {
                    table,
                    overlays: Vec::new(),
                    tables: 1,
                    chunks: BTreeMap::new(),
                    span: 0,
                    pages: 0,
                    max_mapped_gfn: 0,
                    large_pages,
                    identity: false,
                    retired: Vec::new(),
                },
            ),
        })
    }

    /// Grows RAM (contiguous from guest-physical 0) towards `target` bytes (rounded up to
    /// 2 MiB), adding at most `max_step` bytes (at least one chunk) in this call; returns
    /// the RAM size after. Refuses at once, allocating nothing, when the host cannot
    /// hold the whole target; on a failure midway, the chunks added so far stay (the
    /// domain owns them and returns them when destroyed).
    pub fn populate(&self, target: u64, max_step: u64) -> Result<u64, MemoryError> {
        self.populate_scrub(target, max_step, Scrub::All)
    }

    /// [`Self::populate`], zeroing as `scrub` says.
    fn populate_scrub(&self, target: u64, max_step: u64, scrub: Scrub) -> Result<u64, MemoryError> {
        if target > RAM_BELOW_HOLE {
            return Err(MemoryError::CoversHole { requested: target });
        }
        let want = target.div_ceil(CHUNK);
        let have = self.p2m.lock().span;
        if want <= have {
            return Ok(have * CHUNK);
        }
        let missing = want - have;
        // Refuse at once what cannot fit, rather than after allocating (and zeroing) all
        // that does.
        let free = phys::FRAMES.lock().as_ref().map_or(0, |f| f.free_frames());
        if missing.saturating_mul(CHUNK / FRAME_SIZE) > free {
            return Err(MemoryError::OutOfMemory {
                requested: missing.saturating_mul(CHUNK),
            });
        }
        let step = (max_step / CHUNK).clamp(1, missing);
        for i in 0..step {
            let frames = CHUNK / FRAME_SIZE;
            let zero = scrub == Scrub::All || (have + i == 0);
            let host = if zero {
                phys::alloc_zeroed(frames, frames)
            } else {
                phys::alloc_unscrubbed(frames, frames)
            }
            .ok_or(MemoryError::OutOfMemory {
                requested: missing * CHUNK,
            })?;
            let pushed = self.with_p2m(|p2m, m, a| {
                let gpa = p2m.span * CHUNK;
                let max = if p2m.large_pages {
                    PageSize::Size2M
                } else {
                    PageSize::Size4K
                };
                if p2m.chunks.contains_key(&p2m.span) {
                    // The guest populated pages there itself.
                    return Err(MapError::AlreadyMapped {
                        addr: gpa,
                        size: PageSize::Size2M,
                    });
                }
                p2m.table
                    .map_range(m, a, gpa, host, CHUNK, Perm::RWX, MemType::WriteBack, max)?;
                p2m.chunks.insert(p2m.span, Chunk::Whole(host));
                p2m.span += 1;
                p2m.pages += SLOT_PAGES;
                p2m.max_mapped_gfn = p2m.max_mapped_gfn.max((gpa + CHUNK) / FRAME_SIZE - 1);
                Ok(())
            });
            if let Err(e) = pushed {
                phys::free_frames(host, CHUNK / FRAME_SIZE);
                return Err(e);
            }
            let tracked = (0..CHUNK / FRAME_SIZE)
                .filter(|i| frametable::set_owned(host + i * FRAME_SIZE))
                .count();
            if tracked as u64 != CHUNK / FRAME_SIZE {
                log::debug!(
                    "RAM chunk {host:#x}: {tracked} frames tracked (the others cannot be granted)"
                );
            }
        }
        Ok(self.ram_size())
    }

    fn new_p2m() -> Result<PageTable<F>, MemoryError> {
        let mut guard = phys::FRAMES.lock();
        let frames = guard.as_mut().ok_or(MemoryError::OutOfMemory {
            requested: FRAME_SIZE,
        })?;
        Ok(PageTable::new(&mut DirectMap, &mut TableFrames(frames))?)
    }

    /// Runs `f` on the p2m with the frame allocator (lock order: p2m, then frames).
    fn with_p2m<R>(
        &self,
        f: impl FnOnce(&mut P2m<F>, &mut DirectMap, &mut P2mFrames<'_>) -> Result<R, MapError>,
    ) -> Result<R, MemoryError> {
        let mut p2m = self.p2m.lock();
        let mut guard = phys::FRAMES.lock();
        let frames = guard.as_mut().ok_or(MemoryError::OutOfMemory {
            requested: FRAME_SIZE,
        })?;
        // The allocator is locked throughout, so the change in free frames is exactly
        // what the p2m's tables took or gave back.
        let before = frames.free_frames();
        let mut a = P2mFrames(frames, Vec::new());
        let r = f(&mut p2m, &mut DirectMap, &mut a);
        let after = a.0.free_frames();
        p2m.tables = (p2m.tables + before).saturating_sub(after);
        p2m.retired.append(&mut a.1);
        Ok(r?)
    }

    /// Frees the p2m tables unmaps retired ([`P2mFrames`]). Only once no CPU can still
    /// walk them: after every vCPU of the domain was synchronised (`Domain::p2m_changed`)
    /// or when none runs any more.
    pub fn free_retired(&self) {
        let mut p2m = self.p2m.lock();
        if p2m.retired.is_empty() {
            return;
        }
        let retired = core::mem::take(&mut p2m.retired);
        if let Some(frames) = phys::FRAMES.lock().as_mut() {
            free_tables(&mut TableFrames(frames), &retired);
        }
        p2m.tables = p2m.tables.saturating_sub(retired.len() as u64);
    }

    /// Root of the p2m, for the backend (EPTP / nCR3).
    pub fn p2m_root(&self) -> u64 {
        self.root
    }

    /// Bytes of guest-physical space the domain's RAM was built to fill from 0 (pages
    /// given back by the balloon since leave holes in it).
    pub fn ram_size(&self) -> u64 {
        self.p2m.lock().span * CHUNK
    }

    /// Host frames this memory holds as RAM (Xen's `tot_pages`), for per-domain accounting.
    pub fn host_frames(&self) -> u64 {
        self.p2m.lock().pages
    }

    /// Highest guest frame number ever mapped (Xen's `max_mapped_pfn`).
    pub fn max_mapped_gfn(&self) -> u64 {
        self.p2m.lock().max_mapped_gfn
    }

    /// Frames the p2m's tables use.
    pub fn table_frames(&self) -> u64 {
        self.p2m.lock().tables
    }

    /// Maps hypervisor frame `host` (shared_info, a grant-table frame) at guest page
    /// `gpa`, read/write and not executable, as Xen's `add_to_physmap` does: the frame
    /// moves if it was mapped elsewhere (the RAM page it displaced there comes back), and
    /// whatever RAM page was at `gpa` is hidden until the frame moves away. So a guest
    /// cannot grow the p2m without bound by mapping one frame at many places. The
    /// caller must flush the vCPUs' nested TLBs.
    pub fn map_overlay(&self, gpa: u64, host: u64) -> Result<(), MemoryError> {
        let gpa = gpa & !(FRAME_SIZE - 1);
        self.with_p2m(|p2m, m, a| {
            if p2m.overlays.contains(&(gpa, host)) {
                return Ok(());
            }
            // All or nothing: every step below that can fail does so only for want of a
            // table frame, so refuse up front unless enough are free (the allocator stays
            // locked throughout). Tables emptied by the unmaps go back, so moving an
            // overlay around costs nothing lasting.
            if a.0.free_frames() < OVERLAY_FRAMES_NEEDED {
                return Err(MapError::OutOfMemory);
            }
            // A grant mapping is removed only by its unmap (its maptrack entry and frame
            // reference go with it).
            if let Some(t) = p2m.table.translate(&DirectMap, gpa) {
                if P2mType::from_kind(t.kind).is_grant() {
                    return Err(MapError::AlreadyMapped {
                        addr: gpa,
                        size: PageSize::Size4K,
                    });
                }
            }
            if let Some(&(old, _)) = p2m.overlays.iter().find(|o| o.1 == host) {
                let ram = ram_host_addr(&p2m.chunks, old);
                unmap_overlay(p2m, m, a, old, ram)?;
            }
            if p2m.overlays.iter().any(|o| o.0 == gpa) {
                let ram = ram_host_addr(&p2m.chunks, gpa);
                unmap_overlay(p2m, m, a, gpa, ram)?;
            }
            unmap_page(&mut p2m.table, m, a, gpa)?;
            p2m.table.map_kind(
                m,
                a,
                gpa,
                host,
                PageSize::Size4K,
                Perm::RW,
                MemType::WriteBack,
                P2mType::XenShared.kind(),
            )?;
            p2m.overlays.push((gpa, host));
            p2m.max_mapped_gfn = p2m.max_mapped_gfn.max(gpa / FRAME_SIZE);
            Ok(())
        })
    }

    /// Takes the domain's own RAM page `gfn` out of the p2m (`XENMEM_decrease_reservation`),
    /// splitting a 2 MiB mapping where needed; the page becomes a hole that neither the
    /// guest nor a hypercall copy can reach. Returns its host frame, which the caller must
    /// hand to [`Self::release`] only after every vCPU of the domain has dropped its
    /// nested-TLB entries (`Domain::p2m_changed`). Shared frames, grant mappings and holes
    /// are refused ([`RemoveError::NotRam`]), changing nothing.
    pub fn remove_page(&self, gfn: u64) -> Result<u64, RemoveError> {
        let gpa = gfn.checked_mul(FRAME_SIZE).ok_or(RemoveError::NotRam)?;
        let r = self.with_p2m(|p2m, m, a| {
            let Some(t) = p2m.table.translate(&DirectMap, gpa) else {
                return Ok(Err(RemoveError::NotRam));
            };
            let host = t.phys & !(FRAME_SIZE - 1);
            let slot = gpa / CHUNK;
            if P2mType::from_kind(t.kind) != P2mType::Ram
                || p2m.chunks.get(&slot).and_then(|c| c.page(gfn)) != Some(host)
            {
                return Ok(Err(RemoveError::NotRam));
            }
            // A whole slot gets a page list first (its own frame, counted as p2m
            // overhead by `with_p2m`).
            if let Some(Chunk::Whole(base)) = p2m.chunks.get(&slot) {
                let base = *base;
                let Some(frame) = alloc_list_frame(a) else {
                    return Ok(Err(RemoveError::OutOfMemory));
                };
                let mut list = PageList {
                    frame: frame.addr(),
                    present: 0,
                };
                for i in 0..SLOT_PAGES {
                    list.set(i, base + i * FRAME_SIZE);
                }
                p2m.chunks.insert(slot, Chunk::Split(list));
            }
            match p2m.table.unmap(m, a, gpa, PageSize::Size4K) {
                Ok(_) => {}
                Err(MapError::OutOfMemory) => return Ok(Err(RemoveError::OutOfMemory)),
                Err(e) => return Err(e),
            }
            let empty = match p2m.chunks.get_mut(&slot) {
                Some(Chunk::Split(list)) => {
                    list.set(gfn, 0);
                    (list.present == 0).then_some(list.frame)
                }
                _ => None,
            };
            if let Some(frame) = empty {
                p2m.chunks.remove(&slot);
                if let Some(f) = crate::mm::frame::Frame::from_addr(frame) {
                    phys::released(a.0.free(f));
                }
            }
            p2m.pages -= 1;
            Ok(Ok(host))
        });
        match r {
            Ok(inner) => inner,
            Err(_) => Err(RemoveError::OutOfMemory),
        }
    }

    /// Returns frames [`Self::remove_page`] took out to the hypervisor's free pool (or
    /// leaves each to its last grant unmap if another domain still maps it). Call only
    /// once no vCPU can still use a translation to them.
    pub fn release(frames: &[u64]) {
        for &host in frames {
            frametable::disown_and_free(host, 1);
        }
    }

    /// Gives the domain `2^order` fresh, zeroed pages at guest frames `gfn..` (aligned to
    /// the extent's size; `XENMEM_populate_physmap`), each below host address `limit`,
    /// unless that would take it over `max_pages`. All or nothing.
    pub fn populate_extent(
        &self,
        gfn: u64,
        order: u32,
        max_pages: u64,
        limit: u64,
    ) -> Result<(), PopulateError> {
        let count = 1u64.checked_shl(order).ok_or(PopulateError::BadAddress)?;
        let gpa = gfn
            .checked_mul(FRAME_SIZE)
            .ok_or(PopulateError::BadAddress)?;
        let bytes = count * FRAME_SIZE;
        if !gfn.is_multiple_of(count) || gpa.checked_add(bytes).is_none_or(|e| e > MAX_GPA) {
            return Err(PopulateError::BadAddress);
        }
        let mut p2m = self.p2m.lock();
        if p2m.pages.saturating_add(count) > max_pages {
            return Err(PopulateError::OverMax);
        }
        // Nothing may be mapped in the extent (a 2 MiB slot present as a whole maps it all).
        for g in gfn..gfn + count {
            if p2m.table.translate(&DirectMap, g * FRAME_SIZE).is_some() {
                return Err(PopulateError::Occupied);
            }
        }
        let src = if p2m.identity {
            Source::Identity
        } else {
            Source::Any { limit }
        };
        populate_counted(&mut p2m, gpa, count, src)
    }

    /// Host-physical address backing `gpa`, if the p2m allows `perm` there. For a page
    /// mapped through a grant, also a hold on the frame: its unmap (on another CPU) may
    /// drop the mapping's reference meanwhile, and the access must not reach a freed
    /// frame. The hypervisor accesses such a page with the mapping's permissions only.
    fn host_addr(&self, gpa: u64, write: bool) -> Result<(u64, Option<Hold>), GuestFault> {
        let p2m = self.p2m.lock();
        let t = p2m
            .table
            .translate(&DirectMap, gpa)
            .ok_or(GuestFault { gpa })?;
        let needed = if write { Perm::W } else { Perm::R };
        if !t.perm.contains(needed) {
            return Err(GuestFault { gpa });
        }
        let hold = match P2mType::from_kind(t.kind) {
            P2mType::Ram | P2mType::XenShared => None,
            P2mType::GrantRw | P2mType::GrantRo => {
                Some(Hold::new(t.phys).ok_or(GuestFault { gpa })?)
            }
            P2mType::Foreign | P2mType::Mmio => return Err(GuestFault { gpa }),
        };
        Ok((t.phys, hold))
    }

    /// The host frame behind the domain's own page `gpa` for a `GNTTABOP_copy` frame
    /// side (`write` for the destination), with a hold on it if it is a grant mapping.
    ///
    /// As Xen's `get_paged_frame` (`get_page_from_gfn` accepts RAM and grant-mapped
    /// pages, taking a reference on the foreign owner's page): RAM, and a page mapped
    /// through a grant. Unlike Xen, a destination mapped through a *read-only* grant is
    /// refused ([`CopyFrameError::ReadOnly`]: the hypervisor writes a granted page only
    /// with the mapping's permissions), and so are the hypervisor frames shared with the
    /// domain (shared_info, grant frames: [`CopyFrameError::NotRam`]) and holes.
    pub fn copy_frame(&self, gpa: u64, write: bool) -> Result<(u64, Option<Hold>), CopyFrameError> {
        let p2m = self.p2m.lock();
        let t = p2m
            .table
            .translate(&DirectMap, gpa)
            .ok_or(CopyFrameError::NotRam)?;
        let page = t.phys & !(FRAME_SIZE - 1);
        let writable = t.perm.contains(Perm::W);
        match P2mType::from_kind(t.kind) {
            P2mType::Ram if !write || writable => Ok((page, None)),
            P2mType::GrantRw | P2mType::GrantRo if write && !writable => {
                Err(CopyFrameError::ReadOnly)
            }
            P2mType::GrantRw | P2mType::GrantRo => {
                // The mapping holds a reference until its unmap, which needs the domain
                // lock and this p2m lock; the hold outlives both.
                Hold::new(page)
                    .map(|h| (page, Some(h)))
                    .ok_or(CopyFrameError::NotRam)
            }
            _ => Err(CopyFrameError::NotRam),
        }
    }

    /// Maps `host` (another domain's page, on which the caller holds a frame reference)
    /// at the free guest page `gpa`, read-only or read/write, never executable. Refuses
    /// an address where anything is mapped: RAM, a shared frame or another grant (Linux
    /// maps grants at unpopulated addresses). Needs no flush (a non-present slot fills).
    pub fn map_grant(&self, gpa: u64, host: u64, readonly: bool) -> Result<(), GrantP2mError> {
        let (perm, ty) = if readonly {
            (Perm::R, P2mType::GrantRo)
        } else {
            (Perm::RW, P2mType::GrantRw)
        };
        let r = self.with_p2m(|p2m, m, a| {
            if p2m.table.translate(&DirectMap, gpa).is_some() {
                return Ok(Err(GrantP2mError::Occupied));
            }
            p2m.table.map_kind(
                m,
                a,
                gpa,
                host,
                PageSize::Size4K,
                perm,
                MemType::WriteBack,
                ty.kind(),
            )?;
            p2m.max_mapped_gfn = p2m.max_mapped_gfn.max(gpa / FRAME_SIZE);
            Ok(Ok(()))
        });
        match r {
            Ok(inner) => inner,
            Err(MemoryError::P2m(e)) => Err(GrantP2mError::P2m(e)),
            Err(MemoryError::OutOfMemory { .. } | MemoryError::CoversHole { .. }) => {
                Err(GrantP2mError::P2m(MapError::OutOfMemory))
            }
        }
    }

    /// Removes the grant mapping of `host` at `gpa`; fails, changing nothing, if `gpa`
    /// holds anything else. The caller must flush every vCPU's nested TLB before the frame
    /// reference the mapping held is dropped.
    pub fn unmap_grant(&self, gpa: u64, host: u64) -> Result<(), GrantP2mError> {
        let r = self.with_p2m(|p2m, m, a| {
            match p2m.table.translate(&DirectMap, gpa) {
                Some(t) if P2mType::from_kind(t.kind).is_grant() && t.phys == host => {}
                _ => return Ok(Err(GrantP2mError::NotThatMapping)),
            }
            p2m.table.unmap(m, a, gpa, PageSize::Size4K)?;
            Ok(Ok(()))
        });
        match r {
            Ok(inner) => inner,
            Err(MemoryError::P2m(e)) => Err(GrantP2mError::P2m(e)),
            Err(MemoryError::OutOfMemory { .. } | MemoryError::CoversHole { .. }) => {
                Err(GrantP2mError::P2m(MapError::OutOfMemory))
            }
        }
    }

    /// Identity-maps the host device pages `[gpa, gpa + len)` (page-aligned) as
    /// [`P2mType::Mmio`]: read/write, uncacheable, never executable. Pages already mapped
    /// there as the same MMIO page (another BAR sharing the page) are kept; anything else
    /// mapped in the range (RAM, a shared frame, a grant) refuses the whole range, as does
    /// running out of table frames (nothing of this call stays then). Returns the pages
    /// newly mapped. Needs no flush (only empty slots fill). The caller has checked that
    /// the range is device memory, not host RAM.
    pub fn map_mmio(&self, gpa: u64, len: u64) -> Result<u64, MmioP2mError> {
        let end = gpa.checked_add(len).ok_or(MmioP2mError::BadRange)?;
        if !gpa.is_multiple_of(FRAME_SIZE) || !len.is_multiple_of(FRAME_SIZE) || end > MAX_GPA {
            return Err(MmioP2mError::BadRange);
        }
        let r = self.with_p2m(|p2m, m, a| {
            // First pass: refuse before changing anything; note the pages another BAR
            // mapped already.
            let mut pre = Vec::new();
            for page in (gpa..end).step_by(FRAME_SIZE as usize) {
                match p2m.table.translate(&DirectMap, page) {
                    None => {}
                    Some(t) if is_mmio_identity(t, page) => pre.push(page),
                    Some(_) => return Ok(Err(MmioP2mError::Occupied { gpa: page })),
                }
            }
            let mut added = 0u64;
            for page in (gpa..end).step_by(FRAME_SIZE as usize) {
                if p2m.table.translate(&DirectMap, page).is_some() {
                    continue;
                }
                let mapped = p2m.table.map_kind(
                    m,
                    a,
                    page,
                    page,
                    PageSize::Size4K,
                    Perm::RW,
                    MemType::Uncacheable,
                    P2mType::Mmio.kind(),
                );
                if let Err(e) = mapped {
                    // Undo this call's pages only: the ones mapped before it started are
                    // another BAR's. No vCPU ran meanwhile, so no flush is owed.
                    for p in (gpa..page).step_by(FRAME_SIZE as usize) {
                        if !pre.contains(&p) {
                            let _ = p2m.table.unmap(m, a, p, PageSize::Size4K);
                        }
                    }
                    return Ok(Err(MmioP2mError::P2m(e)));
                }
                added += 1;
            }
            Ok(Ok(added))
        });
        match r {
            Ok(inner) => inner,
            Err(MemoryError::P2m(e)) => Err(MmioP2mError::P2m(e)),
            Err(MemoryError::OutOfMemory { .. } | MemoryError::CoversHole { .. }) => {
                Err(MmioP2mError::P2m(MapError::OutOfMemory))
            }
        }
    }

    /// Removes the identity MMIO pages in `[gpa, gpa + len)` except those `keep` names
    /// (pages another mapped BAR still uses); anything else there is left alone. Returns
    /// how many pages went: if any, the caller must make every vCPU flush
    /// (`Domain::p2m_changed`) before it runs again.
    pub fn unmap_mmio(&self, gpa: u64, len: u64, keep: impl Fn(u64) -> bool) -> u64 {
        let Some(end) = gpa.checked_add(len).filter(|&e| e <= MAX_GPA) else {
            return 0;
        };
        let start = gpa & !(FRAME_SIZE - 1);
        let r = self.with_p2m(|p2m, m, a| {
            let mut removed = 0u64;
            for page in (start..end).step_by(FRAME_SIZE as usize) {
                let Some(t) = p2m.table.translate(&DirectMap, page) else {
                    continue;
                };
                // Only 4 KiB MMIO leaves exist, so this never splits (allocates).
                if is_mmio_identity(t, page)
                    && !keep(page)
                    && p2m.table.unmap(m, a, page, PageSize::Size4K).is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        });
        r.unwrap_or(0)
    }

    /// The type of the p2m entry at `gpa`, if anything is mapped there (for diagnostics).
    /// Whether the p2m entry at `gpa` now allows this access (read, write, execute as
    /// asked). A nested page fault on such a page was spurious: another CPU changed the
    /// entry (a grant mapped, a page populated) between the fault and its handling.
    pub fn permits(&self, gpa: u64, read: bool, write: bool, execute: bool) -> bool {
        let Some(t) = self.p2m.lock().table.translate(&DirectMap, gpa) else {
            return false;
        };
        (!read || t.perm.read()) && (!write || t.perm.write()) && (!execute || t.perm.execute())
    }

    pub fn p2m_type(&self, gpa: u64) -> Option<P2mType> {
        let t = self.p2m.lock().table.translate(&DirectMap, gpa)?;
        Some(P2mType::from_kind(t.kind))
    }

    /// The host frame of the domain's own RAM page at `gpa` (p2m type RAM), for granting;
    /// None for anything else (a shared frame, a grant mapping, a hole).
    pub fn ram_frame(&self, gpa: u64) -> Option<u64> {
        let t = self.p2m.lock().table.translate(&DirectMap, gpa)?;
        (P2mType::from_kind(t.kind) == P2mType::Ram).then_some(t.phys & !(FRAME_SIZE - 1))
    }

    /// Copies guest memory at `gpa` into `buf`; fails (copying nothing useful) if any byte
    /// is not readable guest memory.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        self.for_each_page(gpa, buf.len(), false, |host, off, len| {
            // SAFETY: `host..host+len` lies within one frame translated through this
            // domain's p2m: its own RAM or an overlay frame (both live as long as the
            // domain), or a granted page kept allocated by the hold `for_each_page` keeps
            // during this call; reached through the direct map; volatile loads tolerate
            // concurrent guest writes.
            unsafe { phys::load_volatile(phys::to_virt(host), &mut buf[off..off + len]) };
        })
    }

    /// Copies `data` into guest memory at `gpa`; fails if any byte is not writable.
    /// Nothing is written unless the whole range is writable.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), GuestFault> {
        self.check(gpa, data.len(), true)?;
        self.for_each_page(gpa, data.len(), true, |host, off, len| {
            // SAFETY: as in `read`, and the p2m grants the guest write access here, so the
            // frame is writable memory of the domain (or granted to it writable).
            unsafe { phys::store_volatile(phys::to_virt(host), &data[off..off + len]) };
        })
    }

    /// Checks that every byte of `[gpa, gpa+len)` is accessible (writable if `write`).
    pub fn check(&self, gpa: u64, len: usize, write: bool) -> Result<(), GuestFault> {
        self.for_each_page(gpa, len, write, |_, _, _| {})
    }

    /// Calls `f(host_addr, buf_offset, len)` for each page-sized piece of `[gpa, gpa+len)`.
    fn for_each_page(
        &self,
        gpa: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), GuestFault> {
        let mut done = 0usize;
        while done < len {
            let addr = gpa.checked_add(done as u64).ok_or(GuestFault { gpa })?;
            let in_page = (FRAME_SIZE - (addr & (FRAME_SIZE - 1))) as usize;
            let n = in_page.min(len - done);
            let (host, _hold) = self.host_addr(addr, write)?;
            f(host, done, n);
            done += n;
        }
        Ok(())
    }

    /// Atomically ORs `bits` into the aligned u64 at `gpa` (one locked instruction on the
    /// host frame, so the guest's own locked operations on it are not lost, and no retry
    /// loop a guest flipping bits could stretch); returns the old value. Fails if `gpa` is
    /// unaligned or not writable.
    pub fn fetch_or_u64(&self, gpa: u64, bits: u64) -> Result<u64, GuestFault> {
        if !gpa.is_multiple_of(8) {
            return Err(GuestFault { gpa });
        }
        let (host, _hold) = self.host_addr(gpa, true)?;
        // SAFETY: `host` is an 8-aligned address inside a frame the p2m lets this guest
        // write (its own RAM or an overlay frame, which stay allocated while the domain,
        // and so `self`, lives; or a granted page, held by `_hold` until the end of this
        // call), reached through the direct map; AtomicU64 has u64's layout and only
        // atomic operations are made through it.
        let word = unsafe { &*phys::to_virt(host).cast::<core::sync::atomic::AtomicU64>() };
        Ok(word.fetch_or(bits, core::sync::atomic::Ordering::SeqCst))
    }

    /// Runs `f` on the aligned u32 at `gpa` as an atomic (the FIFO event-channel words:
    /// locked operations shared with the guest's own); fails if `gpa` is unaligned or not
    /// writable. `f` must not block: a granted page is held only for this call.
    pub fn with_atomic_u32<R>(
        &self,
        gpa: u64,
        f: impl FnOnce(&core::sync::atomic::AtomicU32) -> R,
    ) -> Result<R, GuestFault> {
        if !gpa.is_multiple_of(4) {
            return Err(GuestFault { gpa });
        }
        let (host, _hold) = self.host_addr(gpa, true)?;
        // SAFETY: as in `fetch_or_u64`: a 4-aligned address inside a frame the p2m lets this
        // guest write, alive for this call; AtomicU32 has u32's layout and only atomic
        // operations are made through it.
        let word = unsafe { &*phys::to_virt(host).cast::<core::sync::atomic::AtomicU32>() };
        Ok(f(word))
    }

    /// Writes a plain value.
    pub fn write_obj<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &self,
        gpa: u64,
        v: &T,
    ) -> Result<(), GuestFault> {
        self.write(gpa, v.as_bytes())
    }
}

/// [`populate_locked`] with the frame allocator locked (lock order: p2m, then frames),
/// keeping the p2m's count of its own frames: the change in free frames is its tables
/// and page lists, plus the RAM frames taken from the free pool (all but held ones).
fn populate_counted<F: Format>(
    p2m: &mut P2m<F>,
    gpa: u64,
    count: u64,
    src: Source,
) -> Result<(), PopulateError> {
    let mut guard = phys::FRAMES.lock();
    let frames = guard.as_mut().ok_or(PopulateError::OutOfMemory)?;
    let before = frames.free_frames();
    let mut a = P2mFrames(frames, Vec::new());
    let r = populate_locked(p2m, &mut a, gpa, count, src);
    let after = a.0.free_frames();
    p2m.retired.append(&mut a.1);
    let ram = if r.is_ok() && src != Source::Held {
        count
    } else {
        0
    };
    p2m.tables = (p2m.tables + before).saturating_sub(after + ram);
    r
}

/// The part of [`GuestMemory::populate_extent`] under the p2m and frame-allocator locks:
/// the extent is free and within the domain's maximum. Whole 2 MiB slots get one
/// contiguous run (a large page where allowed), the rest page by page; on a failure every
/// page added so far is taken out again and freed (none was visible to the guest: its
/// vCPUs are not running this hypercall's changes until it returns).
fn populate_locked<F: Format>(
    p2m: &mut P2m<F>,
    a: &mut P2mFrames<'_>,
    gpa: u64,
    count: u64,
    src: Source,
) -> Result<(), PopulateError> {
    let limit = match src {
        Source::Any { limit } => limit.min(phys::mapped_limit()),
        Source::Identity | Source::Held => phys::mapped_limit(),
    };
    let zero = src != Source::Held;
    let mut done = 0u64;
    let mut added: Vec<(u64, u64)> = Vec::new();
    let mut fail = None;
    while done < count {
        let at = gpa + done * FRAME_SIZE;
        let slot = at / CHUNK;
        if at.is_multiple_of(CHUNK) && count - done >= SLOT_PAGES && !p2m.chunks.contains_key(&slot)
        {
            let run = match src {
                Source::Any { .. } => a.0.alloc_contiguous(SLOT_PAGES, SLOT_PAGES).ok(),
                Source::Identity => take_identity(a, at, SLOT_PAGES),
                Source::Held => crate::mm::frame::Frame::from_addr(at),
            };
            let Some(run) = run else {
                if src == Source::Identity {
                    // Some frame of the slot is not free: page by page, below.
                    fail = take_page(p2m, a, at, slot, src, limit, zero).err();
                    if fail.is_some() {
                        break;
                    }
                    added.push((at, 1));
                    done += 1;
                    continue;
                }
                fail = Some(PopulateError::OutOfMemory);
                break;
            };
            let host = run.addr();
            if host + CHUNK > limit {
                phys::released(a.0.free_contiguous(run, SLOT_PAGES));
                fail = Some(PopulateError::OutOfMemory);
                break;
            }
            if zero {
                for i in 0..SLOT_PAGES {
                    phys::zero_frame(host + i * FRAME_SIZE);
                }
            }
            let max = if p2m.large_pages {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            let m = &mut DirectMap;
            if p2m
                .table
                .map_range(m, a, at, host, CHUNK, Perm::RWX, MemType::WriteBack, max)
                .is_err()
            {
                let _ = p2m.table.unmap_range(m, a, at, CHUNK);
                phys::released(a.0.free_contiguous(run, SLOT_PAGES));
                fail = Some(PopulateError::OutOfMemory);
                break;
            }
            p2m.chunks.insert(slot, Chunk::Whole(host));
            added.push((at, SLOT_PAGES));
            done += SLOT_PAGES;
            continue;
        }
        // One page, into the slot's page list (created on first use).
        if let Err(e) = take_page(p2m, a, at, slot, src, limit, zero) {
            fail = Some(e);
            break;
        }
        added.push((at, 1));
        done += 1;
    }
    if let Some(e) = fail {
        // Undo: nothing of a failed extent stays.
        for &(at, n) in added.iter().rev() {
            let slot = at / CHUNK;
            let _ = p2m.table.unmap_range(&mut DirectMap, a, at, n * FRAME_SIZE);
            match p2m.chunks.get_mut(&slot) {
                Some(Chunk::Whole(host)) => {
                    if let Some(f) = crate::mm::frame::Frame::from_addr(*host) {
                        phys::released(a.0.free_contiguous(f, SLOT_PAGES));
                    }
                    p2m.chunks.remove(&slot);
                }
                Some(Chunk::Split(list)) => {
                    let host = list.get(at / FRAME_SIZE);
                    list.set(at / FRAME_SIZE, 0);
                    if let Some(f) = crate::mm::frame::Frame::from_addr(host) {
                        phys::released(a.0.free(f));
                    }
                    drop_empty_list(p2m, a, slot);
                }
                None => {}
            }
        }
        return Err(e);
    }
    // The domain owns the new frames (nothing can hold a reference to a frame just taken
    // from the free pool, so marking cannot fail but for an untracked frame).
    for &(at, n) in &added {
        let base = ram_host_addr(&p2m.chunks, at).unwrap_or(0);
        for i in 0..n {
            let host = if n == 1 { base } else { base + i * FRAME_SIZE };
            frametable::set_owned(host);
        }
    }
    p2m.pages += count;
    p2m.max_mapped_gfn = p2m.max_mapped_gfn.max((gpa / FRAME_SIZE) + count - 1);
    Ok(())
}

/// Gives retired p2m tables ([`P2mFrames`]) back to the allocator.
fn free_tables(a: &mut TableFrames<'_>, tables: &[u64]) {
    for &t in tables {
        pagetable::FrameSource::free_table(a, t);
    }
}

/// Adds the single page `at` (in 2 MiB slot `slot`) to the slot's page list, its frame
/// from `src` below `limit`, zeroed if `zero`. On failure nothing of it stays.
fn take_page<F: Format>(
    p2m: &mut P2m<F>,
    a: &mut P2mFrames<'_>,
    at: u64,
    slot: u64,
    src: Source,
    limit: u64,
    zero: bool,
) -> Result<(), PopulateError> {
    if let alloc::collections::btree_map::Entry::Vacant(e) = p2m.chunks.entry(slot) {
        let frame = alloc_list_frame(a).ok_or(PopulateError::OutOfMemory)?;
        e.insert(Chunk::Split(PageList {
            frame: frame.addr(),
            present: 0,
        }));
    }
    let frame = match src {
        Source::Any { .. } => a.0.alloc().ok(),
        Source::Identity => take_identity(a, at, 1),
        Source::Held => crate::mm::frame::Frame::from_addr(at),
    };
    let host = match frame {
        Some(f) if f.addr() + FRAME_SIZE <= limit => f.addr(),
        other => {
            if let Some(f) = other {
                phys::released(a.0.free(f));
            }
            drop_empty_list(p2m, a, slot);
            return Err(PopulateError::OutOfMemory);
        }
    };
    if zero {
        phys::zero_frame(host);
    }
    let mapped = p2m.table.map(
        &mut DirectMap,
        a,
        at,
        host,
        PageSize::Size4K,
        Perm::RWX,
        MemType::WriteBack,
    );
    match (mapped, p2m.chunks.get_mut(&slot)) {
        (Ok(()), Some(Chunk::Split(list))) => {
            list.set(at / FRAME_SIZE, host);
            Ok(())
        }
        (r, _) => {
            if r.is_ok() {
                let _ = p2m.table.unmap(&mut DirectMap, a, at, PageSize::Size4K);
            }
            if let Some(f) = crate::mm::frame::Frame::from_addr(host) {
                phys::released(a.0.free(f));
            }
            drop_empty_list(p2m, a, slot);
            Err(PopulateError::OutOfMemory)
        }
    }
}

/// Takes the `count` frames from host address `at` from the allocator if every one of
/// them is free; otherwise takes none.
fn take_identity(a: &mut P2mFrames<'_>, at: u64, count: u64) -> Option<crate::mm::frame::Frame> {
    use crate::mm::frame::Frame;
    for i in 0..count {
        let f = Frame::from_addr(at + i * FRAME_SIZE)?;
        if a.0.take(f).is_err() {
            for j in 0..i {
                if let Some(f) = Frame::from_addr(at + j * FRAME_SIZE) {
                    phys::released(a.0.free(f));
                }
            }
            return None;
        }
    }
    Frame::from_addr(at)
}

/// A zeroed frame inside the direct map for a page list.
fn alloc_list_frame(a: &mut P2mFrames<'_>) -> Option<crate::mm::frame::Frame> {
    let frame = a.0.alloc().ok()?;
    if frame.addr() + FRAME_SIZE > phys::mapped_limit() {
        phys::released(a.0.free(frame));
        return None;
    }
    phys::zero_frame(frame.addr());
    Some(frame)
}

/// Frees the page list of `slot` if no page is left in it.
fn drop_empty_list<F: Format>(p2m: &mut P2m<F>, a: &mut P2mFrames<'_>, slot: u64) {
    if let Some(Chunk::Split(list)) = p2m.chunks.get(&slot) {
        if list.present == 0 {
            let frame = list.frame;
            p2m.chunks.remove(&slot);
            if let Some(f) = crate::mm::frame::Frame::from_addr(frame) {
                phys::released(a.0.free(f));
            }
        }
    }
}

/// Whether a p2m translation of page `page` is the identity MMIO mapping of that page.
fn is_mmio_identity(t: pagetable::Translation, page: u64) -> bool {
    P2mType::from_kind(t.kind) == P2mType::Mmio && t.phys & !(FRAME_SIZE - 1) == page
}

/// The RAM frame that backs `gpa` in the domain's allocation (ignoring overlays).
fn ram_host_addr(chunks: &BTreeMap<u64, Chunk>, gpa: u64) -> Option<u64> {
    chunks.get(&(gpa / CHUNK))?.page(gpa / FRAME_SIZE)
}

/// Removes the overlay at `gpa`, putting back the RAM page `ram` it hid (if any).
fn unmap_overlay<F: Format>(
    p2m: &mut P2m<F>,
    m: &mut DirectMap,
    a: &mut P2mFrames<'_>,
    gpa: u64,
    ram: Option<u64>,
) -> Result<(), MapError> {
    unmap_page(&mut p2m.table, m, a, gpa)?;
    if let Some(host) = ram {
        p2m.table.map(
            m,
            a,
            gpa,
            host,
            PageSize::Size4K,
            Perm::RWX,
            MemType::WriteBack,
        )?;
    }
    p2m.overlays.retain(|o| o.0 != gpa);
    Ok(())
}

/// Unmaps the 4 KiB page at `gpa` (splitting a large page), if anything is mapped there.
fn unmap_page<F: Format>(
    p2m: &mut PageTable<F>,
    mem: &mut DirectMap,
    alloc: &mut P2mFrames<'_>,
    gpa: u64,
) -> Result<(), MapError> {
    match p2m.unmap(mem, alloc, gpa, PageSize::Size4K) {
        Ok(_) | Err(MapError::NotMapped { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl<F: Format> GuestPhysRead for GuestMemory<F> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).ok().map(|_| u64::from_le_bytes(b))
    }

    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b).ok().map(|_| u32::from_le_bytes(b))
    }
}

impl<F: Format> Drop for GuestMemory<F> {
    fn drop(&mut self) {
        let root = self.root;
        let p2m = core::mem::replace(&mut self.p2m.get_mut().table, PageTable::from_root(root));
        let retired = core::mem::take(&mut self.p2m.get_mut().retired);
        if let Some(frames) = phys::FRAMES.lock().as_mut() {
            let mut a = TableFrames(frames);
            free_tables(&mut a, &retired);
            p2m.destroy(&mut DirectMap, &mut a);
        }
        // Frames still mapped by other domains stay until their last unmap.
        for chunk in core::mem::take(&mut self.p2m.get_mut().chunks).into_values() {
            match chunk {
                Chunk::Whole(host) => frametable::disown_and_free(host, SLOT_PAGES),
                Chunk::Split(list) => {
                    for i in 0..SLOT_PAGES {
                        let host = list.get(i);
                        if host != 0 {
                            frametable::disown_and_free(host, 1);
                        }
                    }
                    phys::free_frames(list.frame, 1);
                }
            }
        }
    }
}
