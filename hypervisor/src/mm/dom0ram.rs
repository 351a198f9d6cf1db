//! dom0's RAM held at boot, so that dom0 can have it at the host's own addresses.
//!
//! There is no IOMMU: a device dom0 drives reads and writes host memory at the addresses
//! dom0 programs into it. So dom0's RAM above its first 2 MiB is identity-mapped (gfn ==
//! mfn, `GuestMemory::new_identity`), as Xen on Arm lays out a dom0 without an SMMU. A
//! Linux PVH kernel loads at a fixed address (16 MiB), so the low memory must still be
//! free when dom0 is built; left alone, boot would fill it first (the allocator is
//! lowest-first) and the boot loader's modules sit there too.
//!
//! Right after the allocator exists, [`hold`] takes the free frames from 2 MiB up for
//! dom0 (so the hypervisor's own page tables, heap and frame table come from above them),
//! [`relocate_modules`] copies the boot modules above them and adds the frames they left
//! to the window, dom0's builder [`take`]s what it needs, and [`release`] frees the rest
//! before any other domain is built. All of it runs on the boot CPU before any domain
//! runs, so nothing else allocates meanwhile. The window's lock (a plain spin lock,
//! boot-time only) is never held together with the frame allocator's.

use super::frame::{Frame, PhysRange, FRAME_SIZE, MAX_HELD_RUNS};
use super::phys;
use arrayvec::ArrayVec;
use ferrovisor_boot::BootInfo;
use spin::Mutex;

/// dom0's window starts here: the first 2 MiB of dom0's RAM are not identity-mapped.
pub const WINDOW_START: u64 = 2 << 20;

/// Most runs the window keeps (held runs and the frames the modules left).
pub const MAX_RUNS: usize = MAX_HELD_RUNS + 16;

/// Runs of frames held for dom0: allocated, owned by nobody yet. Sorted, disjoint.
pub type Runs = ArrayVec<PhysRange, MAX_RUNS>;

static WINDOW: Mutex<Runs> = Mutex::new(ArrayVec::new_const());

/// Holds free frames from [`WINDOW_START`] up for dom0 until `bytes` are held.
pub fn hold(bytes: u64) {
    let Some(runs) = phys::FRAMES
        .lock()
        .as_mut()
        .map(|a| a.hold_from(WINDOW_START, bytes / FRAME_SIZE))
    else {
        return;
    };
    let mut w = WINDOW.lock();
    for r in runs {
        let _ = w.try_push(r);
    }
}

/// The runs held now (for pinning everything else).
pub fn runs() -> Runs {
    WINDOW.lock().clone()
}

/// Frames held now.
pub fn held_frames() -> u64 {
    WINDOW.lock().iter().map(|r| r.len() / FRAME_SIZE).sum()
}

/// Copies each boot module that lies (partly) at or above [`WINDOW_START`] and below the
/// window's end to fresh frames above the window, updates `boot` to the copy, and adds
/// the frames it occupied to the window. Returns how many modules moved; a module that
/// cannot be copied (no room) stays where it is.
pub fn relocate_modules(boot: &mut BootInfo) -> usize {
    let Some(end) = WINDOW.lock().last().map(|r| r.end) else {
        return 0;
    };
    let mut moved = 0;
    let mut freed: ArrayVec<PhysRange, 16> = ArrayVec::new();
    for m in boot.modules.iter_mut() {
        if m.end() <= WINDOW_START || m.start >= end || m.len == 0 {
            continue;
        }
        let count = m.len.div_ceil(FRAME_SIZE);
        let Some(bytes) = ferrovisor_boot::PhysRead::bytes(&phys::BootMemory, m.start, m.len)
        else {
            continue;
        };
        let Some(to) = phys::alloc_unscrubbed(count, 1) else {
            log::warn!(
                "dom0 RAM: no room to move the module at {:#x} ({} KiB); dom0 has a hole there",
                m.start,
                m.len >> 10
            );
            continue;
        };
        // Fresh frames above the window: the copy never overlaps the module.
        phys::write_bytes(to, bytes);
        // Whole frames the module alone covered (it was page-aligned by the loader at its
        // start; a frame shared with the next module is kept until that one moves too).
        let old = PhysRange::new(
            m.start.max(WINDOW_START),
            m.end().div_ceil(FRAME_SIZE) * FRAME_SIZE,
        );
        let _ = freed.try_push(old);
        m.start = to;
        moved += 1;
    }
    // Frames that several modules shared count once; frames some unmoved module still
    // covers are not added.
    // (The frame allocator's lock and the window's are never held together.)
    let mut frames = alloc::vec::Vec::new();
    if let Some(a) = phys::FRAMES.lock().as_ref() {
        for r in freed {
            let mut at = r.start & !(FRAME_SIZE - 1);
            while at < r.end {
                let still_used = boot
                    .modules
                    .iter()
                    .any(|m| m.start < at + FRAME_SIZE && m.end() > at);
                let ours = Frame::from_addr(at).is_some_and(|f| a.is_allocated(f));
                if ours && !still_used && at >= WINDOW_START {
                    frames.push(at);
                }
                at += FRAME_SIZE;
            }
        }
    }
    let mut w = WINDOW.lock();
    for at in frames {
        // A frame two modules shared is listed twice: added once.
        let already = w.iter().any(|x| x.start <= at && at < x.end);
        if !already && !super::frame::insert_frame(&mut w, at) {
            log::warn!("dom0 RAM: window full; frame {at:#x} stays with the hypervisor");
        }
    }
    moved
}

/// Takes the lowest `bytes` of the window for dom0's identity-mapped RAM (the caller
/// owns the frames from now on). Returns fewer if the window is smaller.
pub fn take(bytes: u64) -> Runs {
    super::frame::take_lowest(&mut WINDOW.lock(), bytes / FRAME_SIZE)
}

/// Frees what is left of the window (dom0 is built, or is not a Linux dom0 that wants
/// identity-mapped RAM). Returns the frames freed.
pub fn release() -> u64 {
    let runs = core::mem::take(&mut *WINDOW.lock());
    free_runs(&runs)
}

/// Frees runs [`take`] gave out and their taker did not use.
pub fn free_runs(runs: &[PhysRange]) -> u64 {
    let mut n = 0;
    let mut guard = phys::FRAMES.lock();
    let Some(a) = guard.as_mut() else {
        return 0;
    };
    for r in runs {
        let mut at = r.start;
        while at < r.end {
            if let Some(f) = Frame::from_addr(at) {
                phys::released(a.free(f));
                n += 1;
            }
            at += FRAME_SIZE;
        }
    }
    n
}
