//! `grant-granter`: the granting side of the grant-mapping test (with `grant-mapper`).
//!
//! Command line: `mapper=<domid> reader=<domid> [timeout=S]`.
//!
//! Grants (refs below 8 are the toolstack's): ref 8 = page P1 to `mapper` read/write,
//! ref 9 = P1 to `reader` read-only, ref 10 = page P2 to `mapper` read/write, ref 11 = P1
//! to `mapper` read-only. P1 and P2 start with a pattern in words 0..256; the rest of the
//! protocol uses control words (see [`proto`], shared with `grant-mapper`). Then:
//! 1. waits for the mapper's value in P1 ([`proto::B_DATA`]): its writes through the
//!    mapping reach this page; checks that ref 8 shows `GTF_reading | GTF_writing` and
//!    that ending it is refused while mapped; acknowledges;
//! 2. waits until the mapper has unmapped refs 8 and 11: both entries are back to their
//!    plain flags, and ending them succeeds (Linux's deferred-free condition);
//! 3. waits until the reader domain is gone (crashed by the hypervisor for writing through
//!    its read-only mapping): ref 9 lost `GTF_reading` with its teardown, ends, and P1's
//!    pattern is intact (the write never landed);
//! 4. tells the mapper ref 8 is ended, waits for it to see its new map fail, writes a
//!    final pattern into P2 and ends (powers off) with P2 still mapped by the mapper.
//!
//! Prints `grant-granter: N checks passed` before its result line.
//!
//! `mode=copy` and `mode=maptrack` run the granting side of the copy and maptrack tests
//! instead (see [`copy`] and [`maptrack`]; `mapper=<domid>` is then the copier or mapper).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::grant::{read_word, write_word, Page, Table};
use guest_rt::hypercall::{describe, sched_yield};
use guest_rt::xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use guest_rt::{ensure, evtchn, fail, println, pvclock, StartInfo, TestResult};

mod copy;
mod maptrack;

guest_rt::entry!(test_main);

/// Shared with `grant-mapper` (same numbers there).
mod proto {
    /// Pattern words: `P1_PATTERN | i`, `P2_PATTERN | i`, `P2_FINAL | i` for i in 0..256.
    pub const WORDS: usize = 256;
    pub const P1_PATTERN: u64 = 0xa1a1_0000_0000_0000;
    pub const P2_PATTERN: u64 = 0xa2a2_0000_0000_0000;
    pub const P2_FINAL: u64 = 0xa3a3_0000_0000_0000;
    /// P1 word: the mapper's value, written through its mapping.
    pub const P1_B_DATA: usize = 257;
    pub const B_DATA: u64 = 0xb0b0_1234_5678_9abc;
    /// P1 word: the granter saw it (1).
    pub const P1_A_ACK: usize = 258;
    /// P2 word: the granter's phase: 1 = ref 8 ended, 2 = final pattern written, ending.
    pub const P2_A_PHASE: usize = 300;
    /// P2 word: the mapper's phase: 1 = refs 8 and 11 unmapped, 2 = re-map of 8 refused.
    pub const P2_B_PHASE: usize = 301;
}

static TABLE_PAGE: Page = Page::new();
static P1: Page = Page::new();
static P2: Page = Page::new();

struct Run {
    deadline: u64,
    checks: u32,
}

impl Run {
    fn check(&mut self, ok: bool, what: &str) -> TestResult {
        ensure!(ok, "{what}");
        self.checks += 1;
        println!("granter: ok: {what}");
        Ok(())
    }

    /// Yields until `cond` holds; fails at the deadline.
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

/// Whether domain `d` exists (`EVTCHNOP_status` answers `-ESRCH` only for missing ones).
fn exists(d: u16) -> bool {
    !matches!(evtchn::status(d, 0), Err(-3))
}

fn test_main(si: &StartInfo) -> TestResult {
    let mapper = si.arg_u64("mapper", 2)? as u16;
    let reader = si.arg_u64("reader", 3)? as u16;
    let timeout = si.arg_u64("timeout", 60)?;
    let rc = pvclock::map_shared_info();
    ensure!(rc == 0, "map shared_info: {}", describe(rc));
    let mut run = Run {
        deadline: evtchn::now()? + timeout * 1_000_000_000,
        checks: 0,
    };
    let t = match Table::setup(&TABLE_PAGE) {
        Ok(t) => t,
        Err(rc) => fail!("XENMEM_add_to_physmap(grant table 0): {}", describe(rc)),
    };
    match si.arg("mode").unwrap_or("map") {
        "map" => map_test(&mut run, &t, mapper, reader),
        "copy" => copy::run(&mut run, &t, mapper),
        "maptrack" => maptrack::run(&mut run, &t, mapper),
        m => fail!("mode={m}: expected map, copy or maptrack"),
    }
}

/// The map/unmap test (see the crate documentation).
fn map_test(run: &mut Run, t: &Table, mapper: u16, reader: u16) -> TestResult {
    let (p1, p2) = (P1.gpa(), P2.gpa());
    for i in 0..proto::WORDS {
        write_word(p1, i, proto::P1_PATTERN | i as u64);
        write_word(p2, i, proto::P2_PATTERN | i as u64);
    }
    run.check(t.flags(8) == 0, "ref 8 starts invalid")?;
    t.grant(8, mapper, (p1 >> 12) as u32, false);
    t.grant(9, reader, (p1 >> 12) as u32, true);
    t.grant(10, mapper, (p2 >> 12) as u32, false);
    t.grant(11, mapper, (p1 >> 12) as u32, true);
    println!(
        "granter: refs 8 (rw), 11 (ro) and 10 (rw) to domain {mapper}, 9 (ro) to domain {reader}"
    );

    // 1. The mapper writes through its mapping.
    run.wait("the mapper's write into P1", || {
        read_word(p1, proto::P1_B_DATA) == proto::B_DATA
    })?;
    run.check(true, "the mapper's write through its mapping reached P1")?;
    let f8 = t.flags(8);
    run.check(
        f8 == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        "ref 8 shows GTF_reading|GTF_writing while mapped writable",
    )
    .map_err(|e| guest_rt::Fail::new(format_args!("{e} (flags {f8:#x})")))?;
    run.check(
        t.end(8).is_err(),
        "ending ref 8 is refused while it is mapped",
    )?;
    write_word(p1, proto::P1_A_ACK, 1);

    // 2. The mapper unmaps refs 8 and 11.
    run.wait("the mapper's unmaps", || {
        read_word(p2, proto::P2_B_PHASE) >= 1
    })?;
    let (f8, f11) = (t.flags(8), t.flags(11));
    run.check(
        f8 == GTF_PERMIT_ACCESS && f11 == GTF_PERMIT_ACCESS | GTF_READONLY,
        "refs 8 and 11 lost GTF_reading/GTF_writing with the unmaps",
    )
    .map_err(|e| guest_rt::Fail::new(format_args!("{e} (flags {f8:#x}, {f11:#x})")))?;
    run.check(
        t.end(8).is_ok() && t.end(11).is_ok() && t.flags(8) == 0,
        "ending refs 8 and 11 succeeds after the unmaps",
    )?;
    write_word(p2, proto::P2_A_PHASE, 1);

    // 3. The reader is crashed for writing through its read-only mapping.
    run.wait("the reader domain to be gone", || !exists(reader))?;
    let f9 = t.flags(9);
    run.check(
        f9 == GTF_PERMIT_ACCESS | GTF_READONLY,
        "ref 9 lost GTF_reading when the reader was destroyed",
    )
    .map_err(|e| guest_rt::Fail::new(format_args!("{e} (flags {f9:#x})")))?;
    run.check(t.end(9).is_ok(), "ending ref 9 succeeds")?;
    run.check(
        (0..proto::WORDS).all(|i| read_word(p1, i) == proto::P1_PATTERN | i as u64),
        "P1's pattern is intact (the read-only write never landed)",
    )?;

    // 4. The mapper's new map of ref 8 fails; then end with P2 still mapped.
    run.wait("the mapper's refused re-map", || {
        read_word(p2, proto::P2_B_PHASE) >= 2
    })?;
    for i in 0..proto::WORDS {
        write_word(p2, i, proto::P2_FINAL | i as u64);
    }
    let w10 = t.word(10);
    run.check(
        w10 & 0xffff == u32::from(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
            && w10 >> 16 == u32::from(mapper),
        "ref 10 is still mapped writable by the mapper",
    )?;
    write_word(p2, proto::P2_A_PHASE, 2);
    println!("grant-granter: {} checks passed", run.checks);
    println!("granter: ending with ref 10 still mapped by domain {mapper}");
    Ok(())
}
