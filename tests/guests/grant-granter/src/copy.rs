//! `mode=copy`: the granting side of the copy test (with `grant-mapper role=copy`, the
//! copier).
//!
//! Grants to the copier: ref 8 = page S (read-only, [`proto::S_PATTERN`] in all 512
//! words), ref 9 = page D (read/write, zero), ref 10 = page D2 (read-only), ref 12 = page R
//! (read/write, [`proto::R_PATTERN`]) and, last, ref 13 = page G (read-only: this side's
//! phase word, so the copier knows every grant exists once it can copy from 13); ref 11 =
//! S to a domain that does not exist. The copier copies in both directions, and reports
//! its phase in D's word [`proto::D_PHASE`] (by a copy into ref 9). Then:
//! 1. phase 1: the copier maps ref 12 writable; this side sees `GTF_reading|GTF_writing`
//!    and revokes ref 12 by force (`flags = 0` while mapped), tells it (G word 0 = 1);
//! 2. phase 2: the copier has copied from the revoked, still mapped ref 12, written
//!    through the mapping and unmapped it: ref 12 stays revoked (no flags come back), its
//!    write reached R, no copy left a pin (`GTF_reading/writing`) on any ref, D holds the
//!    copier's pattern and S's first half, S and D2 are untouched.

use guest_rt::grant::{checksum, checksum_of, read_word, write_word, Page, Table};
use guest_rt::xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_WRITING};
use guest_rt::{println, TestResult};

use super::Run;

/// Shared with `grant-mapper`'s copy module (same numbers there).
pub mod proto {
    /// S (ref 8): word i = `S_PATTERN | i`, for all 512 words.
    pub const S_PATTERN: u64 = 0x5151_0000_0000_0000;
    /// R (ref 12): word i = `R_PATTERN | i`.
    pub const R_PATTERN: u64 = 0x5252_0000_0000_0000;
    /// The copier's page copied into D (ref 9): word i = `C_PATTERN | i`.
    pub const C_PATTERN: u64 = 0xc0c0_0000_0000_0000;
    /// D word: the copier's phase (1: ref 12 mapped, 2: done); compared exactly, as the
    /// copier's full-page copy into D puts its pattern there first.
    pub const D_PHASE: usize = 255;
    /// R word the copier writes through its mapping of the revoked ref 12.
    pub const R_WRITE_WORD: usize = 5;
    pub const R_WRITE: u64 = 0x7777_1234_7777_5678;
    /// A domain id that does not exist (ref 11 is granted to it).
    pub const NOBODY: u16 = 100;
}

static S: Page = Page::new();
static D: Page = Page::new();
static D2: Page = Page::new();
static R: Page = Page::new();
static G: Page = Page::new();

/// Byte `i` of a page whose u64 word `w` is `base | w`.
fn pattern_byte(base: u64, i: usize) -> u8 {
    (base | (i / 8) as u64).to_le_bytes()[i % 8]
}

pub fn run(run: &mut Run, t: &Table, copier: u16) -> TestResult {
    let (s, d, d2, r, g) = (S.gpa(), D.gpa(), D2.gpa(), R.gpa(), G.gpa());
    for i in 0..512 {
        write_word(s, i, proto::S_PATTERN | i as u64);
        write_word(r, i, proto::R_PATTERN | i as u64);
        write_word(d2, i, 0xd2d2_d2d2_d2d2_d2d2);
    }
    let gfn = |a: u64| (a >> 12) as u32;
    t.grant(8, copier, gfn(s), true);
    t.grant(9, copier, gfn(d), false);
    t.grant(10, copier, gfn(d2), true);
    t.grant(11, proto::NOBODY, gfn(s), false);
    t.grant(12, copier, gfn(r), false);
    t.grant(13, copier, gfn(g), true);
    println!(
        "granter: refs 8 (S ro), 9 (D rw), 10 (D2 ro), 12 (R rw), 13 (G ro) to domain {copier}"
    );

    // 1. The copier maps ref 12; revoke it by force while it is mapped.
    run.wait("the copier's phase 1", || read_word(d, proto::D_PHASE) == 1)?;
    let f12 = t.flags(12);
    run.check(
        f12 == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        "ref 12 shows GTF_reading|GTF_writing while the copier maps it",
    )?;
    t.revoke(12);
    write_word(g, 0, 1);

    // 2. The copier is done.
    run.wait("the copier's phase 2", || read_word(d, proto::D_PHASE) == 2)?;
    let w12 = t.word(12);
    run.check(
        w12 == u32::from(copier) << 16,
        "the revoked ref 12 stays revoked after the copier's unmap (no flag comes back)",
    )
    .map_err(|e| guest_rt::Fail::new(format_args!("{e} (word {w12:#x})")))?;
    run.check(
        read_word(r, proto::R_WRITE_WORD) == proto::R_WRITE,
        "the copier's write through the revoked mapping reached R (the captured frame)",
    )?;
    let busy = [8u32, 9, 10, 13]
        .iter()
        .map(|&g| t.flags(g) & (GTF_READING | GTF_WRITING))
        .fold(0, |a, b| a | b);
    run.check(
        busy == 0,
        "no copy left GTF_reading/GTF_writing on refs 8, 9, 10, 13",
    )?;
    // D: the copier's pattern in words 0..255 (255 is its phase word), S's first half in
    // words 256..512 (the gref-to-gref copy).
    let want_c = checksum_of(255 * 8, |i| pattern_byte(proto::C_PATTERN, i));
    run.check(
        checksum(d, 255 * 8) == want_c,
        "D's first half holds the copier's page (gmfn to gref, checksum)",
    )?;
    let want_s = checksum_of(2048, |i| pattern_byte(proto::S_PATTERN, i));
    run.check(
        checksum(d + 2048, 2048) == want_s,
        "D's second half holds S's first half (gref to gref, checksum)",
    )?;
    run.check(
        checksum(s, 4096) == checksum_of(4096, |i| pattern_byte(proto::S_PATTERN, i)),
        "S (the source) is untouched",
    )?;
    run.check(
        (0..512).all(|i| read_word(d2, i) == 0xd2d2_d2d2_d2d2_d2d2),
        "D2 (granted read-only) was never written",
    )?;
    write_word(g, 0, 2);
    println!("grant-granter: {} checks passed", run.checks);
    Ok(())
}
