//! `mode=maptrack`: the granting side of the maptrack test (with `grant-mapper
//! role=maptrack`).
//!
//! Grants ref 8 = page P (read-only, a pattern) and ref 9 = page Q (read/write: the
//! mapper's phase word) to the mapper, which maps ref 8 16384 times. Phase 1
//! (all mapped): ref 8 shows `GTF_reading` and ending it is refused; this side
//! acknowledges (Q word 1). Phase 2 (all unmapped): ref 8 is back to its plain flags and
//! ends.

use guest_rt::grant::{read_word, write_word, Page, Table};
use guest_rt::xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY};
use guest_rt::{println, TestResult};

use super::Run;

/// Shared with `grant-mapper`'s maptrack module (same numbers there).
pub mod proto {
    /// P (ref 8): word i = `P_PATTERN | i`.
    pub const P_PATTERN: u64 = 0x6d74_0000_0000_0000;
    /// Q word: the mapper's phase (1: all mapped, 2: all unmapped).
    pub const Q_PHASE: usize = 0;
    /// Q word: this side's acknowledgement of phase 1.
    pub const Q_ACK: usize = 1;
}

static P: Page = Page::new();
static Q: Page = Page::new();

pub fn run(run: &mut Run, t: &Table, mapper: u16) -> TestResult {
    let (p, q) = (P.gpa(), Q.gpa());
    for i in 0..512 {
        write_word(p, i, proto::P_PATTERN | i as u64);
    }
    t.grant(8, mapper, (p >> 12) as u32, true);
    t.grant(9, mapper, (q >> 12) as u32, false);
    println!("granter: refs 8 (ro) and 9 (rw) to domain {mapper}");
    run.wait("the mapper's phase 1 (all mapped)", || {
        read_word(q, proto::Q_PHASE) >= 1
    })?;
    let f8 = t.flags(8);
    run.check(
        f8 == GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING,
        "ref 8 shows GTF_reading while mapped many times",
    )?;
    run.check(
        t.end(8).is_err(),
        "ending ref 8 is refused while it is mapped",
    )?;
    write_word(q, proto::Q_ACK, 1);
    run.wait("the mapper's phase 2 (all unmapped)", || {
        read_word(q, proto::Q_PHASE) >= 2
    })?;
    let f8 = t.flags(8);
    run.check(
        f8 == GTF_PERMIT_ACCESS | GTF_READONLY,
        "ref 8 lost GTF_reading with the last of the unmaps",
    )
    .map_err(|e| guest_rt::Fail::new(format_args!("{e} (flags {f8:#x})")))?;
    run.check(t.end(8).is_ok(), "ending ref 8 succeeds after the unmaps")?;
    println!("grant-granter: {} checks passed", run.checks);
    Ok(())
}
