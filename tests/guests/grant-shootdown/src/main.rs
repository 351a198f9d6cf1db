//! `grant-shootdown`: a grant unmap must take effect on every vCPU of the mapper before
//! the hypercall returns (issue 11's TLB shootdown), checked by the granter's page.
//!
//! Command line: `role=granter mapper=<domid>` or `role=mapper granter=<domid>` (the
//! mapper needs 2 vCPUs), both `[rounds=N] [timeout=S]`.
//!
//! The granter grants page P (ref 8, read/write) and a control page C (ref 9) to the
//! mapper, which maps C for the whole run. The mapper's vCPU 1 (started with
//! `VCPUOP_initialise` + `up`) writes an increasing sequence number into P's word 1
//! through P's guest-physical address in the mapper without pause (the address is a hole
//! while unmapped: the writes are dropped). Each round:
//! 1. the granter grants ref 8 and announces round r in C;
//! 2. the mapper's vCPU 0 maps ref 8, writes `r << 32 | k` into word 0 and waits until
//!    vCPU 1's number has reached P through the mapping; unmaps; reads the sequence
//!    number `s` after the unmap returned and reports it with r in C;
//! 3. the granter checks: word 0 is vCPU 0's last value; word 1 is non-zero and at most
//!    `s` (no write issued after the unmap returned landed); both stay unchanged over
//!    many yields while vCPU 1 keeps writing; ref 8 lost `GTF_reading|GTF_writing` and
//!    ends; P is cleared, the verdict r goes to C.
//!
//! Each side prints `grant-shootdown <role>: N rounds, ...` before its result line.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use guest_rt::grant::{self, read_word, status_name, write_word, Page, Table};
use guest_rt::hypercall::{describe, sched_yield};
use guest_rt::xen_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_GENERAL_ERROR, GTF_PERMIT_ACCESS, GTF_READING, GTF_WRITING,
};
use guest_rt::{ensure, evtchn, fail, println, pvclock, smp, Fail, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Refs and control words (C's u64 words).
mod proto {
    pub const REF_P: u32 = 8;
    pub const REF_C: u32 = 9;
    /// Round announced by the granter (ref 8 granted).
    pub const C_READY: usize = 0;
    /// Round the mapper has unmapped.
    pub const C_UNMAPPED: usize = 1;
    /// vCPU 1's sequence number read after that unmap returned.
    pub const C_SEQ: usize = 2;
    /// Round the granter has checked.
    pub const C_VERDICT: usize = 3;
    /// 1: the mapper is done and unmaps C.
    pub const C_DONE: usize = 4;
    /// P's words: vCPU 0's and vCPU 1's.
    pub const P_V0: usize = 0;
    pub const P_V1: usize = 1;
}

/// vCPU 0's writes per round.
const V0_WRITES: u64 = 8;
/// Yields the granter watches P for after an unmap.
const WATCH_YIELDS: u32 = 40;
/// vCPU 1's writes between yields.
const BURST: u32 = 256;

static TABLE_PAGE: Page = Page::new();
static P: Page = Page::new();
static C: Page = Page::new();

/// Candidate bases for the mapper's mappings (outside its memory map, below 4 GiB).
const CANDIDATES: [u64; 4] = [0xC000_0000, 0xE000_0000, 0x8000_0000, 0x4000_0000];

/// The mapper's state shared by its two vCPUs.
static SEQ: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicU32 = AtomicU32::new(0);
static WRITER_DONE: AtomicU32 = AtomicU32::new(0);

struct Run {
    deadline: u64,
}

impl Run {
    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
        while !cond() {
            if evtchn::now()? >= self.deadline {
                fail!("timed out waiting for {what}");
            }
            sched_yield();
        }
        Ok(())
    }
}

fn test_main(si: &StartInfo) -> TestResult {
    let timeout = si.arg_u64("timeout", 60)?;
    let rounds = si.arg_u64("rounds", 50)?;
    let rc = pvclock::map_shared_info();
    ensure!(rc == 0, "map shared_info: {}", describe(rc));
    let run = Run {
        deadline: evtchn::now()? + timeout * 1_000_000_000,
    };
    match si.arg("role").unwrap_or("") {
        "granter" => granter(&run, si.arg_u64("mapper", 2)? as u16, rounds),
        "mapper" => {
            let Some(base) = CANDIDATES
                .iter()
                .copied()
                .find(|&a| !si.memmap_overlaps(a, a + 0x2000))
            else {
                fail!("no free guest-physical range for the mappings");
            };
            mapper(&run, si.arg_u64("granter", 1)? as u16, rounds, base)
        }
        r => fail!("role={r}: expected granter or mapper"),
    }
}

fn granter(run: &Run, mapper: u16, rounds: u64) -> TestResult {
    let t = match Table::setup(&TABLE_PAGE) {
        Ok(t) => t,
        Err(rc) => fail!("XENMEM_add_to_physmap(grant table 0): {}", describe(rc)),
    };
    let (p, c) = (P.gpa(), C.gpa());
    t.grant(proto::REF_C, mapper, (c >> 12) as u32, false);
    let mut landed = 0u64;
    for r in 1..=rounds {
        write_word(p, proto::P_V0, 0);
        write_word(p, proto::P_V1, 0);
        t.grant(proto::REF_P, mapper, (p >> 12) as u32, false);
        write_word(c, proto::C_READY, r);
        run.wait("the mapper's unmap", || {
            read_word(c, proto::C_UNMAPPED) == r
        })?;
        let s = read_word(c, proto::C_SEQ);
        let (v0, v1) = (read_word(p, proto::P_V0), read_word(p, proto::P_V1));
        ensure!(
            v0 == r << 32 | V0_WRITES,
            "round {r}: vCPU 0's last write {:#x} is not in P ({v0:#x})",
            r << 32 | V0_WRITES
        );
        ensure!(
            v1 != 0 && v1 <= s,
            "round {r}: P holds vCPU 1's number {v1}, but the unmap returned at {s}"
        );
        for _ in 0..WATCH_YIELDS {
            sched_yield();
        }
        let (w0, w1) = (read_word(p, proto::P_V0), read_word(p, proto::P_V1));
        ensure!(
            (w0, w1) == (v0, v1),
            "round {r}: P changed after the unmap: ({v0:#x}, {v1}) became ({w0:#x}, {w1})"
        );
        let f = t.flags(proto::REF_P);
        ensure!(
            f == GTF_PERMIT_ACCESS,
            "round {r}: ref 8 flags {f:#x} after the unmap"
        );
        ensure!(
            t.end(proto::REF_P).is_ok(),
            "round {r}: ending ref 8 failed"
        );
        landed += 1;
        write_word(c, proto::C_VERDICT, r);
    }
    run.wait("the mapper to finish", || read_word(c, proto::C_DONE) == 1)?;
    run.wait("the mapper to unmap C", || {
        t.flags(proto::REF_C) & (GTF_READING | GTF_WRITING) == 0
    })?;
    ensure!(t.end(proto::REF_C).is_ok(), "ending ref 9 failed");
    println!(
        "grant-shootdown granter: {rounds} rounds, both writers' values in P while mapped in {landed}; no write after an unmap returned, P unchanged after each"
    );
    Ok(())
}

/// Maps until the granter has made the grant.
fn map_when_granted(run: &Run, dom: u16, gref: u32, gpa: u64) -> Result<u32, Fail> {
    loop {
        match grant::map(dom, gref, gpa, false) {
            Ok(h) => return Ok(h),
            Err(s) if s == i64::from(GNTST_GENERAL_ERROR) || s == i64::from(GNTST_BAD_DOMAIN) => {}
            Err(s) => fail!("map of ref {gref}: {} ({s})", status_name(s)),
        }
        if evtchn::now()? >= run.deadline {
            fail!("timed out waiting for domain {dom} to grant ref {gref}");
        }
        sched_yield();
    }
}

/// vCPU 1: writes the next sequence number into word 1 at the target address, always.
fn writer(_me: u32) {
    let at = TARGET.load(Ordering::SeqCst);
    while STOP.load(Ordering::SeqCst) == 0 {
        for _ in 0..BURST {
            let s = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
            write_word(at, proto::P_V1, s);
        }
        sched_yield();
    }
    WRITER_DONE.store(1, Ordering::SeqCst);
}

fn mapper(run: &Run, granter: u16, rounds: u64, base: u64) -> TestResult {
    let (g, c) = (base, base + 0x1000);
    let hc = map_when_granted(run, granter, proto::REF_C, c)?;
    TARGET.store(g, Ordering::SeqCst);
    smp::start(1, writer)?;
    let mut attempted = 0u64;
    for r in 1..=rounds {
        run.wait("the granter's next round", || {
            read_word(c, proto::C_READY) == r
        })?;
        let h = map_when_granted(run, granter, proto::REF_P, g)?;
        let at_map = SEQ.load(Ordering::SeqCst);
        for k in 1..=V0_WRITES {
            write_word(g, proto::P_V0, r << 32 | k);
            sched_yield();
        }
        // vCPU 1's writes reach the page through the mapping.
        run.wait("vCPU 1's write through the mapping", || {
            read_word(g, proto::P_V1) > at_map
        })?;
        if let Err(s) = grant::unmap(g, h) {
            fail!("round {r}: unmap: {} ({s})", status_name(s));
        }
        let s = SEQ.load(Ordering::SeqCst);
        attempted += s - at_map;
        write_word(c, proto::C_SEQ, s);
        write_word(c, proto::C_UNMAPPED, r);
        run.wait("the granter's verdict", || {
            read_word(c, proto::C_VERDICT) == r
        })?;
    }
    STOP.store(1, Ordering::SeqCst);
    run.wait("vCPU 1 to stop", || WRITER_DONE.load(Ordering::SeqCst) == 1)?;
    write_word(c, proto::C_DONE, 1);
    if let Err(s) = grant::unmap(c, hc) {
        fail!("unmap of C: {} ({s})", status_name(s));
    }
    println!(
        "grant-shootdown mapper: {rounds} rounds, vCPU 1 wrote {attempted} times while vCPU 0 held the mapping, {} in all",
        SEQ.load(Ordering::SeqCst)
    );
    Ok(())
}
