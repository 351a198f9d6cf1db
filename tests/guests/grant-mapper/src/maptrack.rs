//! `role=maptrack`: the mass-mapping side of the maptrack test (with `grant-granter
//! mode=maptrack`): blkback keeps up to 16384 persistent grants mapped per device, so a
//! domain must hold that many live mappings.
//!
//! Maps the granter's ref 9 (phase page), then ref 8 read-only [`MAPS`] times at distinct
//! addresses, in batches of [`STEP`] ops: every op succeeds, the handles are distinct,
//! the first and last mappings read the page; phase 1, waits for the granter's look at
//! the flags; unmaps them all (every op succeeds), checks a freed handle is reused and a
//! second unmap is `bad_handle`; phase 2.

use guest_rt::grant::{self, map_batch, read_word, status_name, unmap_batch, write_word, Page};
use guest_rt::xen_abi::grant_table::{
    GnttabMapGrantRef, GnttabUnmapGrantRef, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_HANDLE,
};
use guest_rt::{fail, TestResult};

use super::Run;

/// Shared with `grant-granter`'s maptrack module (same numbers there).
mod proto {
    pub const P_PATTERN: u64 = 0x6d74_0000_0000_0000;
    pub const Q_PHASE: usize = 0;
    pub const Q_ACK: usize = 1;
}

/// Live mappings made at once (Linux blkback's persistent-grant maximum).
const MAPS: usize = 16384;
/// Ops per hypercall.
const STEP: usize = 256;
/// Handles the hypervisor may hand out (Xen's default maptrack: 1024 frames of 256).
const LIMIT: u32 = 1024 * 256;

/// The handles, one per u64 word (512 per page).
static HANDLES: [Page; MAPS / 512] = [const { Page::new() }; MAPS / 512];
/// A bitmap over [`LIMIT`] handles (4096 words, 512 per page).
static SEEN: [Page; (LIMIT as usize / 64) / 512] =
    [const { Page::new() }; (LIMIT as usize / 64) / 512];

fn handle(k: usize) -> u32 {
    read_word(HANDLES[k / 512].gpa(), k % 512) as u32
}

fn set_handle(k: usize, h: u32) {
    write_word(HANDLES[k / 512].gpa(), k % 512, u64::from(h));
}

/// Marks `h` seen; false if it was already (or is beyond the limit).
fn first_sight(h: u32) -> bool {
    if h >= LIMIT {
        return false;
    }
    let (word, bit) = ((h / 64) as usize, h % 64);
    let page = SEEN[word / 512].gpa();
    let w = read_word(page, word % 512);
    write_word(page, word % 512, w | 1 << bit);
    w & 1 << bit == 0
}

pub fn run(run: &mut Run, granter: u16, x: impl Fn(u64) -> u64) -> TestResult {
    let q = x(MAPS as u64);
    let hq = run.map_when_granted(granter, 9, q, false)?;
    run.map_when_granted(granter, 8, x(0), true).and_then(|h| {
        grant::unmap(x(0), h)
            .map_err(|s| guest_rt::Fail::new(format_args!("unmap: {}", status_name(s))))
    })?;

    // Map ref 8 MAPS times.
    let mut mapped = 0usize;
    let mut fresh = true;
    for base in (0..MAPS).step_by(STEP) {
        let mut ops = [GnttabMapGrantRef::default(); STEP];
        for (i, op) in ops.iter_mut().enumerate() {
            *op = GnttabMapGrantRef {
                host_addr: x((base + i) as u64),
                flags: GNTMAP_HOST_MAP | GNTMAP_READONLY,
                ref_: 8,
                dom: granter,
                status: 1,
                handle: u32::MAX,
                dev_bus_addr: 0,
            };
        }
        let rc = map_batch(&mut ops);
        if rc != 0 {
            fail!("map batch at {base}: hypercall returned {rc} after {mapped} maps");
        }
        for (i, op) in ops.iter().enumerate() {
            if op.status != 0 {
                fail!(
                    "map {} of ref 8: {} ({}) after {mapped} maps",
                    base + i,
                    status_name(i64::from(op.status)),
                    op.status
                );
            }
            set_handle(base + i, op.handle);
            fresh &= first_sight(op.handle);
            mapped += 1;
        }
    }
    run.check(mapped == MAPS, "16384 read-only maps of ref 8 live at once")?;
    run.check(
        fresh,
        "their 16384 handles are distinct and below the maptrack limit",
    )?;
    run.check(
        read_word(x(0), 3) == proto::P_PATTERN | 3
            && read_word(x(MAPS as u64 - 1), 511) == proto::P_PATTERN | 511,
        "the first and the last mapping read the granted page",
    )?;

    write_word(q, proto::Q_PHASE, 1);
    run.wait("the granter's acknowledgement", || {
        read_word(q, proto::Q_ACK) == 1
    })?;

    // Unmap them all.
    let mut unmapped = 0usize;
    for base in (0..MAPS).step_by(STEP) {
        let mut ops = [GnttabUnmapGrantRef::default(); STEP];
        for (i, op) in ops.iter_mut().enumerate() {
            op.host_addr = x((base + i) as u64);
            op.handle = handle(base + i);
            op.status = 1;
        }
        let rc = unmap_batch(&mut ops);
        if rc != 0 {
            fail!("unmap batch at {base}: hypercall returned {rc}");
        }
        unmapped += ops.iter().filter(|o| o.status == 0).count();
    }
    run.check(unmapped == MAPS, "all 16384 mappings unmapped")?;
    run.expect_err(
        grant::unmap(x(0), handle(0)),
        GNTST_BAD_HANDLE,
        "a second unmap of a handle: bad_handle",
    )?;
    let lowest = (0..MAPS).map(handle).min().unwrap_or(0);
    match grant::map(granter, 8, x(0), true) {
        Ok(h) => {
            run.check(h == lowest, "a new map reuses the lowest free handle")?;
            run.check(grant::unmap(x(0), h).is_ok(), "and unmaps")?;
        }
        Err(s) => fail!("map after the unmaps: {}", status_name(s)),
    }
    write_word(q, proto::Q_PHASE, 2);
    run.check(grant::unmap(q, hq).is_ok(), "the phase page unmapped")?;
    guest_rt::println!("grant-mapper maptrack: {} checks passed", run.checks);
    Ok(())
}
