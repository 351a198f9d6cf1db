//! `grant-mapper`: the mapping side of the grant-mapping test (with `grant-granter`).
//!
//! Command line: `granter=<domid> [role=rw|ro] [timeout=S]`.
//!
//! `role=rw` (default): checks the `GNTST_*` codes of bad map/unmap ops (`bad_handle`,
//! `bad_gntref`, `bad_domain`, `bad_virt_addr`, `general_error` for a read-only grant
//! mapped writable, someone else's grant, an address holding RAM or a mapping, PV-only
//! flags), batches with good and bad ops, then maps the granter's refs 8 (rw + ro) and 11
//! (ro) and 10 (rw): reads the pattern, writes [`proto::B_DATA`] for the granter to see,
//! unmaps, sees its new map of the ended ref 8 fail with `general_error`, and finally,
//! after the granter has ended, re-reads the final pattern through ref 10's mapping (the
//! page outlives its owner), writes through it, gets `bad_domain` for a new map, and
//! unmaps it (which frees the page). Prints `grant-mapper: N checks passed`.
//!
//! `role=ro`: maps ref 9 read-only, checks a writable map is refused and the pattern
//! reads, prints `grant-mapper ro: N checks passed` and `about to write through a
//! read-only grant mapping`, and writes: the hypervisor must crash the domain. If the
//! write returns, FAIL.
//!
//! `role=copy` and `role=maptrack`: the copying and mass-mapping sides of the copy and
//! maptrack tests (see [`copy`] and [`maptrack`]; the granter runs `mode=copy` or
//! `mode=maptrack`).
//!
//! Mappings go at guest-physical addresses outside the memory map (as Linux uses
//! unpopulated ranges).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::grant::{self, read_word, status_name, write_word, Page};
use guest_rt::hypercall::{describe, sched_yield};
use guest_rt::xen_abi::grant_table::{
    GnttabMapGrantRef, GnttabUnmapGrantRef, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY,
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_VIRT_ADDR, GNTST_GENERAL_ERROR,
};
use guest_rt::{ensure, evtchn, fail, println, pvclock, Fail, StartInfo, TestResult};

mod copy;
mod maptrack;

guest_rt::entry!(test_main);

/// Shared with `grant-granter` (same numbers there).
mod proto {
    pub const WORDS: usize = 256;
    pub const P1_PATTERN: u64 = 0xa1a1_0000_0000_0000;
    pub const P2_FINAL: u64 = 0xa3a3_0000_0000_0000;
    pub const P1_B_DATA: usize = 257;
    pub const B_DATA: u64 = 0xb0b0_1234_5678_9abc;
    pub const P1_A_ACK: usize = 258;
    pub const P2_A_PHASE: usize = 300;
    pub const P2_B_PHASE: usize = 301;
}

/// Ops in the long batches (more than the hypervisor's 32 per step).
const BIG: usize = 40;

/// A page of this domain's own RAM (mapping over it must be refused).
static OWN: Page = Page::new();

/// Candidate bases for the mappings (2 MiB aligned, below 4 GiB: identity-mapped by the
/// runtime); the first the memory map does not cover is used.
const CANDIDATES: [u64; 4] = [0xC000_0000, 0xE000_0000, 0x8000_0000, 0x4000_0000];

struct Run {
    name: &'static str,
    deadline: u64,
    checks: u32,
}

impl Run {
    fn check(&mut self, ok: bool, what: &str) -> TestResult {
        ensure!(ok, "{what}");
        self.checks += 1;
        println!("{}: ok: {what}", self.name);
        Ok(())
    }

    /// Checks that `r` is the error `want`.
    fn expect_err<T>(&mut self, r: Result<T, i64>, want: i16, what: &str) -> TestResult {
        match r {
            Err(s) if s == i64::from(want) => self.check(true, what),
            Err(s) => fail!("{what}: got {} ({s})", status_name(s)),
            Ok(_) => fail!("{what}: succeeded"),
        }
    }

    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
        while !cond() {
            if evtchn::now()? >= self.deadline {
                fail!("timed out waiting for {what}");
            }
            sched_yield();
        }
        Ok(())
    }

    /// Maps until the granter has made the grant (`general_error`/`bad_domain` before).
    fn map_when_granted(&self, dom: u16, gref: u32, gpa: u64, ro: bool) -> Result<u32, Fail> {
        loop {
            match grant::map(dom, gref, gpa, ro) {
                Ok(h) => return Ok(h),
                Err(s)
                    if s == i64::from(GNTST_GENERAL_ERROR) || s == i64::from(GNTST_BAD_DOMAIN) => {}
                Err(s) => fail!("map of ref {gref}: {} ({s})", status_name(s)),
            }
            if evtchn::now()? >= self.deadline {
                fail!("timed out waiting for domain {dom} to grant ref {gref}");
            }
            sched_yield();
        }
    }
}

/// Whether domain `d` exists (`EVTCHNOP_status` answers `-ESRCH` only for missing ones).
fn exists(d: u16) -> bool {
    !matches!(evtchn::status(d, 0), Err(-3))
}

fn pattern_ok(gpa: u64, base: u64) -> bool {
    (0..proto::WORDS).all(|i| read_word(gpa, i) == base | i as u64)
}

fn test_main(si: &StartInfo) -> TestResult {
    let granter = si.arg_u64("granter", 1)? as u16;
    let timeout = si.arg_u64("timeout", 60)?;
    let rc = pvclock::map_shared_info();
    ensure!(rc == 0, "map shared_info: {}", describe(rc));
    // 64 MiB + 2 MiB: room for the maptrack test's 16384 mappings and one more page.
    let Some(base) = CANDIDATES
        .iter()
        .copied()
        .find(|&a| !si.memmap_overlaps(a, a + 0x420_0000))
    else {
        fail!("no free guest-physical range for the mappings");
    };
    let x = |k: u64| base + k * 0x1000;
    let role = si.arg("role").unwrap_or("rw");
    let mut run = Run {
        name: match role {
            "ro" => "grant-mapper ro",
            "copy" => "grant-mapper copy",
            "maptrack" => "grant-mapper maptrack",
            _ => "grant-mapper",
        },
        deadline: evtchn::now()? + timeout * 1_000_000_000,
        checks: 0,
    };
    match role {
        "rw" => rw(&mut run, granter, x),
        "ro" => ro(&mut run, granter, x),
        "copy" => copy::run(&mut run, granter, x),
        "maptrack" => maptrack::run(&mut run, granter, x),
        _ => fail!("role={role}: expected rw, ro, copy or maptrack"),
    }
}

fn ro(run: &mut Run, granter: u16, x: impl Fn(u64) -> u64) -> TestResult {
    run.map_when_granted(granter, 9, x(0), true)?;
    run.expect_err(
        grant::map(granter, 9, x(1), false),
        GNTST_GENERAL_ERROR,
        "a read-only grant cannot be mapped writable",
    )?;
    run.check(
        pattern_ok(x(0), proto::P1_PATTERN),
        "the read-only mapping reads the granter's pattern",
    )?;
    println!("grant-mapper ro: {} checks passed", run.checks);
    println!(
        "about to write through a read-only grant mapping (GPA {:#x})",
        x(0)
    );
    write_word(x(0), 0, 0x0bad_0bad_0bad_0bad);
    fail!("the write through a read-only grant mapping returned")
}

fn rw(run: &mut Run, granter: u16, x: impl Fn(u64) -> u64) -> TestResult {
    // Errors that need no grant.
    run.expect_err(
        grant::unmap(x(0), 12345),
        GNTST_BAD_HANDLE,
        "unmap of an unknown handle: bad_handle",
    )?;
    run.expect_err(
        grant::map_flags(granter, 8, x(0), 0),
        GNTST_BAD_GNTREF,
        "map without GNTMAP_host_map: bad_gntref",
    )?;
    run.expect_err(
        grant::map(100, 8, x(0), false),
        GNTST_BAD_DOMAIN,
        "map from a missing domain: bad_domain",
    )?;

    // The survivor page first (ref 10), then ref 8 read/write and read-only, ref 11.
    let h4 = run.map_when_granted(granter, 10, x(4), false)?;
    let h0 = run.map_when_granted(granter, 8, x(0), false)?;
    run.check(
        pattern_ok(x(0), proto::P1_PATTERN),
        "ref 8 maps the granter's pattern",
    )?;
    write_word(x(0), proto::P1_B_DATA, proto::B_DATA);
    let h1 = match grant::map(granter, 8, x(1), true) {
        Ok(h) => h,
        Err(s) => fail!("read-only map of ref 8: {}", status_name(s)),
    };
    run.check(
        h1 != h0 && read_word(x(1), proto::P1_B_DATA) == proto::B_DATA,
        "a second, read-only mapping of ref 8 shows the same page (own handle)",
    )?;
    let h2 = match grant::map(granter, 11, x(2), true) {
        Ok(h) => h,
        Err(s) => fail!("read-only map of ref 11: {}", status_name(s)),
    };
    run.check(pattern_ok(x(2), proto::P1_PATTERN), "ref 11 maps read-only")?;

    // Errors against real grants.
    run.expect_err(
        grant::map(granter, 11, x(3), false),
        GNTST_GENERAL_ERROR,
        "read-only ref 11 mapped writable: general_error",
    )?;
    run.expect_err(
        grant::map(granter, 9, x(3), true),
        GNTST_GENERAL_ERROR,
        "ref 9 (granted to another domain): general_error",
    )?;
    run.expect_err(
        grant::map(granter, 100_000, x(3), false),
        GNTST_BAD_GNTREF,
        "ref beyond the table: bad_gntref",
    )?;
    run.expect_err(
        grant::map(granter, 8, x(3) + 8, false),
        GNTST_BAD_VIRT_ADDR,
        "unaligned host_addr: bad_virt_addr",
    )?;
    run.expect_err(
        grant::map(granter, 8, 1 << 60, false),
        GNTST_BAD_VIRT_ADDR,
        "host_addr beyond the physical address width: bad_virt_addr",
    )?;
    run.expect_err(
        grant::map(granter, 8, OWN.gpa(), false),
        GNTST_GENERAL_ERROR,
        "map over own RAM: general_error",
    )?;
    run.expect_err(
        grant::map(granter, 8, x(0), false),
        GNTST_GENERAL_ERROR,
        "map over an existing mapping: general_error",
    )?;
    run.expect_err(
        grant::map_flags(granter, 8, x(3), GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP),
        GNTST_GENERAL_ERROR,
        "GNTMAP_device_map from an auto-translated domain: general_error",
    )?;
    run.check(
        read_word(OWN.gpa(), 0) == 0,
        "own RAM untouched by the refused map",
    )?;

    // A batch with a good and a bad op: processed in full (0), one status each.
    let op = |gref: u32, gpa: u64| GnttabMapGrantRef {
        host_addr: gpa,
        flags: GNTMAP_HOST_MAP,
        ref_: gref,
        dom: granter,
        status: 1,
        handle: u32::MAX,
        dev_bus_addr: 0,
    };
    let mut ops = [op(8, x(3)), op(100_000, x(5))];
    let rc = grant::map_batch(&mut ops);
    run.check(
        rc == 0 && ops[0].status == 0 && ops[1].status == GNTST_BAD_GNTREF,
        "a map batch returns 0 with a status per op",
    )
    .map_err(|e| {
        Fail::new(format_args!(
            "{e}: rc {rc}, statuses {} {}",
            ops[0].status, ops[1].status
        ))
    })?;
    let mut unops = [
        GnttabUnmapGrantRef {
            host_addr: x(3),
            dev_bus_addr: 0,
            handle: ops[0].handle,
            status: 1,
            _pad0: 0,
        },
        GnttabUnmapGrantRef {
            host_addr: x(3),
            dev_bus_addr: 0,
            handle: ops[0].handle,
            status: 1,
            _pad0: 0,
        },
    ];
    let rc = grant::unmap_batch(&mut unops);
    run.check(
        rc == 0 && unops[0].status == 0 && unops[1].status == GNTST_BAD_HANDLE,
        "an unmap batch: the first unmap works, the repeated handle is bad_handle",
    )?;

    // A batch longer than the hypervisor's step (32 ops per exit: a continuation runs the
    // rest), 40 read-only maps of ref 8, then 40 unmaps in one batch.
    let mut big = [op(8, 0); BIG];
    for (k, o) in big.iter_mut().enumerate() {
        o.host_addr = x(8 + k as u64);
        o.flags |= GNTMAP_READONLY;
    }
    let rc = grant::map_batch(&mut big);
    let handles_distinct = big
        .iter()
        .enumerate()
        .all(|(i, a)| big[..i].iter().all(|b| b.handle != a.handle));
    run.check(
        rc == 0
            && big.iter().all(|o| o.status == 0)
            && handles_distinct
            && (0..BIG).all(|k| read_word(x(8 + k as u64), proto::P1_B_DATA) == proto::B_DATA),
        "a 40-op map batch (continued) maps every op",
    )?;
    let mut unbig = [GnttabUnmapGrantRef::default(); BIG];
    for (u, o) in unbig.iter_mut().zip(&big) {
        u.host_addr = o.host_addr;
        u.handle = o.handle;
        u.status = 1;
    }
    let rc = grant::unmap_batch(&mut unbig);
    run.check(
        rc == 0 && unbig.iter().all(|u| u.status == 0),
        "a 40-op unmap batch (continued) unmaps every op",
    )?;

    // The granter sees the write, then everything of P1 is unmapped.
    run.wait("the granter's acknowledgement", || {
        read_word(x(0), proto::P1_A_ACK) == 1
    })?;
    run.expect_err(
        grant::unmap(x(0), h1),
        GNTST_GENERAL_ERROR,
        "unmap at another address than the handle's: general_error",
    )?;
    let unmapped = [(x(0), h0), (x(1), h1), (x(2), h2)]
        .iter()
        .all(|&(a, h)| grant::unmap(a, h).is_ok());
    run.check(unmapped, "refs 8 (rw, ro) and 11 unmapped")?;
    run.expect_err(
        grant::unmap(x(0), h0),
        GNTST_BAD_HANDLE,
        "a second unmap of the same handle: bad_handle",
    )?;
    write_word(x(4), proto::P2_B_PHASE, 1);

    // The granter ends ref 8: a new map fails.
    run.wait("the granter to end ref 8", || {
        read_word(x(4), proto::P2_A_PHASE) >= 1
    })?;
    run.expect_err(
        grant::map(granter, 8, x(0), false),
        GNTST_GENERAL_ERROR,
        "map of the ended ref 8: general_error",
    )?;
    write_word(x(4), proto::P2_B_PHASE, 2);

    // The granter ends while ref 10 is mapped here: the page stays valid until unmapped.
    run.wait("the granter's last phase", || {
        read_word(x(4), proto::P2_A_PHASE) == 2
    })?;
    run.wait("the granter domain to be gone", || !exists(granter))?;
    run.check(
        pattern_ok(x(4), proto::P2_FINAL),
        "ref 10's page still holds the granter's final pattern after the granter is gone",
    )?;
    write_word(x(4), 400, 0x5555_aaaa_5555_aaaa);
    run.check(
        read_word(x(4), 400) == 0x5555_aaaa_5555_aaaa,
        "the orphaned page is still writable through the mapping",
    )?;
    run.expect_err(
        grant::map(granter, 10, x(5), false),
        GNTST_BAD_DOMAIN,
        "a new map from the ended granter: bad_domain",
    )?;
    run.check(
        grant::unmap(x(4), h4).is_ok(),
        "the last mapping of the orphaned page is unmapped",
    )?;
    println!("grant-mapper: {} checks passed", run.checks);
    Ok(())
}
