//! `role=copy`: the copying side of the copy test (with `grant-granter mode=copy`; the
//! refs and pages are described there).
//!
//! Copies gref to gmfn (a full page of ref 8, odd offsets and lengths, sides aligned
//! differently), within a page of its own overlapping both ways (as memmove), gmfn to gref
//! (a page of its own into ref 9), gref to gref (ref 8 into ref 9, same granter), a ref
//! onto itself (overlapping) and zero bytes, checking the data by checksum; then the
//! statuses of bad ops (`bad_gntref`, `general_error` for a read-only destination grant
//! and for a ref granted to someone else, `permission_denied` for a frame side naming a
//! domain, `bad_copy_arg` on either side, `bad_domain`, `bad_page`, and the claim checked
//! before `offset + len`), a 40-op batch (continued past the hypervisor's 32 per exit)
//! whose op 17 fails while the others copy, a frame side that is a grant mapping (read
//! from: allowed; a read-only one written to: `general_error`); finally, with ref 12
//! mapped and then revoked by force by the granter, a copy from it still reads the
//! captured page, a write through the mapping lands, the unmap succeeds, and a copy after
//! it is refused.

use guest_rt::grant::{
    self, checksum, checksum_of, copy, copy_batch, copy_op, read_word, status_name, write_word,
    Page, Side,
};
use guest_rt::xen_abi::grant_table::{
    GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_PAGE, GNTST_GENERAL_ERROR,
    GNTST_PERMISSION_DENIED,
};
use guest_rt::{evtchn, fail, hypercall::sched_yield, TestResult};

use super::Run;

/// Shared with `grant-granter`'s copy module (same numbers there).
mod proto {
    pub const S_PATTERN: u64 = 0x5151_0000_0000_0000;
    pub const R_PATTERN: u64 = 0x5252_0000_0000_0000;
    pub const C_PATTERN: u64 = 0xc0c0_0000_0000_0000;
    pub const D_PHASE: usize = 255;
    pub const R_WRITE_WORD: usize = 5;
    pub const R_WRITE: u64 = 0x7777_1234_7777_5678;
    pub const NOBODY: u16 = 100;
}

/// Ops in the long batch, and the one that fails.
const BATCH: usize = 40;
const BAD_OP: usize = 17;

static L: Page = Page::new();
static L2: Page = Page::new();
static L3: Page = Page::new();
static L4: Page = Page::new();
static L5: Page = Page::new();
static PH: Page = Page::new();

fn pattern_byte(base: u64, i: usize) -> u8 {
    (base | (i / 8) as u64).to_le_bytes()[i % 8]
}

fn page_sum(base: u64) -> u64 {
    checksum_of(4096, |i| pattern_byte(base, i))
}

pub fn run(run: &mut Run, granter: u16, x: impl Fn(u64) -> u64) -> TestResult {
    let gref = |gref: u32, offset: u16| Side::Gref {
        dom: granter,
        gref,
        offset,
    };
    let own = |p: &Page, offset: u64| Side::own(p.gpa() + offset);

    // Every grant exists once ref 13 (granted last) can be copied from.
    loop {
        match copy(gref(13, 0), own(&L, 0), 8) {
            Ok(()) => break,
            Err(s) if s == i64::from(GNTST_GENERAL_ERROR) || s == i64::from(GNTST_BAD_DOMAIN) => {}
            Err(s) => fail!("copy from ref 13: {} ({s})", status_name(s)),
        }
        if evtchn::now()? >= run.deadline {
            fail!("timed out waiting for domain {granter} to grant ref 13");
        }
        sched_yield();
    }

    run.check(
        copy(gref(9, 0), gref(9, 0), 0).is_ok(),
        "a zero-length copy succeeds",
    )?;
    run.check(
        copy(gref(9, 0), gref(9, 64), 256).is_ok(),
        "a ref copied onto itself, overlapping, succeeds",
    )?;

    // gref -> gmfn, a full page, then odd offsets and lengths.
    let r = copy(gref(8, 0), own(&L, 0), 4096);
    run.check(
        r.is_ok() && checksum(L.gpa(), 4096) == page_sum(proto::S_PATTERN),
        "gref to gmfn: a full page of ref 8 arrives (checksum)",
    )?;
    for i in 0..512 {
        write_word(L.gpa(), i, 0);
    }
    let r = copy(gref(8, 1001), own(&L, 3001), 77);
    let want = checksum_of(77, |i| pattern_byte(proto::S_PATTERN, 1001 + i));
    run.check(
        r.is_ok()
            && checksum(L.gpa() + 3001, 77) == want
            && checksum(L.gpa(), 3001) == checksum_of(3001, |_| 0)
            && checksum(L.gpa() + 3078, 4096 - 3078) == checksum_of(4096 - 3078, |_| 0),
        "gref to gmfn at odd offsets: exactly those 77 bytes arrive",
    )?;

    // Sides aligned differently (2 and 5 bytes past a word: netback's usual case), into a
    // zeroed page: exactly those bytes arrive.
    for i in 0..512 {
        write_word(L.gpa(), i, 0);
    }
    let r = copy(gref(8, 5), own(&L, 2), 1234);
    let want = checksum_of(1234, |i| pattern_byte(proto::S_PATTERN, 5 + i));
    run.check(
        r.is_ok()
            && checksum(L.gpa() + 2, 1234) == want
            && checksum(L.gpa(), 2) == checksum_of(2, |_| 0)
            && checksum(L.gpa() + 1236, 4096 - 1236) == checksum_of(4096 - 1236, |_| 0),
        "gref to gmfn, sides 3 bytes apart in alignment: exactly those 1234 bytes arrive",
    )?;
    // Overlapping copies within one page of its own, as memmove: up by 3 (the destination
    // inside the source), then down by 7 (the destination below it).
    for i in 0..512 {
        write_word(L.gpa(), i, proto::C_PATTERN | i as u64);
    }
    let orig = |i: usize| pattern_byte(proto::C_PATTERN, i);
    let up = |i: usize| {
        if (103..603).contains(&i) {
            orig(i - 3)
        } else {
            orig(i)
        }
    };
    let r = copy(own(&L, 100), own(&L, 103), 500);
    run.check(
        r.is_ok() && checksum(L.gpa(), 4096) == checksum_of(4096, up),
        "an overlapping copy upwards within a page moves the bytes as memmove",
    )?;
    let down = |i: usize| {
        if (93..593).contains(&i) {
            up(i + 7)
        } else {
            up(i)
        }
    };
    let r = copy(own(&L, 100), own(&L, 93), 500);
    run.check(
        r.is_ok() && checksum(L.gpa(), 4096) == checksum_of(4096, down),
        "an overlapping copy downwards within a page moves the bytes as memmove",
    )?;

    // gmfn -> gref (the whole page), then gref -> gref (S's first half into D's second).
    for i in 0..512 {
        write_word(L2.gpa(), i, proto::C_PATTERN | i as u64);
    }
    run.check(
        copy(own(&L2, 0), gref(9, 0), 4096).is_ok(),
        "gmfn to gref: a full page into ref 9",
    )?;
    run.check(
        copy(gref(8, 0), gref(9, 2048), 2048).is_ok(),
        "gref to gref (ref 8 into ref 9 of the same granter)",
    )?;
    let r = copy(gref(9, 0), own(&L3, 0), 4096);
    let want = checksum_of(4096, |i| {
        if i < 2048 {
            pattern_byte(proto::C_PATTERN, i)
        } else {
            pattern_byte(proto::S_PATTERN, i - 2048)
        }
    });
    run.check(
        r.is_ok() && checksum(L3.gpa(), 4096) == want,
        "ref 9 reads back as both copies wrote it (checksum)",
    )?;

    // Statuses of bad ops.
    let cases: [(Side, Side, u16, i16, &str); 12] = [
        (
            gref(100_000, 0),
            own(&L, 0),
            8,
            GNTST_BAD_GNTREF,
            "a ref beyond the table: bad_gntref",
        ),
        (
            own(&L2, 0),
            gref(10, 0),
            8,
            GNTST_GENERAL_ERROR,
            "a read-only grant as destination: general_error",
        ),
        (
            gref(11, 0),
            own(&L, 0),
            8,
            GNTST_GENERAL_ERROR,
            "a ref granted to another domain: general_error",
        ),
        (
            Side::Gmfn {
                dom: granter,
                gmfn: L2.gpa() >> 12,
                offset: 0,
            },
            gref(9, 0),
            8,
            GNTST_PERMISSION_DENIED,
            "a gmfn source naming another domain: permission_denied",
        ),
        (
            gref(8, 0),
            Side::Gmfn {
                dom: 0,
                gmfn: L.gpa() >> 12,
                offset: 0,
            },
            8,
            GNTST_PERMISSION_DENIED,
            "a gmfn destination naming another domain: permission_denied",
        ),
        (
            gref(8, 4000),
            own(&L, 0),
            200,
            GNTST_BAD_COPY_ARG,
            "source offset+len > 4096: bad_copy_arg",
        ),
        (
            gref(8, 0),
            Side::Gmfn {
                dom: guest_rt::xen_abi::xen::DOMID_SELF,
                gmfn: L.gpa() >> 12,
                offset: 4095,
            },
            2,
            GNTST_BAD_COPY_ARG,
            "destination offset+len > 4096: bad_copy_arg",
        ),
        (
            gref(8, 0),
            own(&L, 0),
            4097,
            GNTST_BAD_COPY_ARG,
            "len 4097: bad_copy_arg",
        ),
        (
            Side::Gref {
                dom: proto::NOBODY,
                gref: 8,
                offset: 0,
            },
            own(&L, 0),
            8,
            GNTST_BAD_DOMAIN,
            "a grant of a missing domain: bad_domain",
        ),
        (
            own(&L2, 0),
            Side::own(x(0)),
            8,
            GNTST_BAD_PAGE,
            "a gmfn that is not RAM: bad_page",
        ),
        (
            Side::own(x(0)),
            gref(9, 0),
            8,
            GNTST_BAD_PAGE,
            "a gmfn source that is not RAM: bad_page",
        ),
        (
            gref(100_000, 4000),
            own(&L, 0),
            200,
            GNTST_BAD_GNTREF,
            "the ref is checked before offset+len (Xen's order)",
        ),
    ];
    for (src, dst, len, want, what) in cases {
        run.expect_err(copy(src, dst, len), want, what)?;
    }

    // A batch longer than the hypervisor's step, op BAD_OP failing in the middle.
    let mut ops = [copy_op(gref(8, 0), own(&L4, 0), 64); BATCH];
    for (i, op) in ops.iter_mut().enumerate() {
        let off = (i * 64) as u16;
        *op = copy_op(
            gref(if i == BAD_OP { 100_000 } else { 8 }, off),
            own(&L4, u64::from(off)),
            64,
        );
    }
    for i in 0..512 {
        write_word(L4.gpa(), i, 0xeeee_eeee_eeee_eeee);
    }
    let rc = copy_batch(&mut ops);
    let statuses_ok = ops
        .iter()
        .enumerate()
        .all(|(i, o)| o.status == if i == BAD_OP { GNTST_BAD_GNTREF } else { 0 });
    let data_ok = (0..BATCH).all(|i| {
        let got = checksum(L4.gpa() + (i * 64) as u64, 64);
        got == if i == BAD_OP {
            checksum_of(64, |_| 0xee)
        } else {
            checksum_of(64, |k| pattern_byte(proto::S_PATTERN, i * 64 + k))
        }
    });
    run.check(
        rc == 0 && statuses_ok && data_ok,
        "a 40-op copy batch (continued) copies every op but the failing 17th",
    )
    .map_err(|e| {
        guest_rt::Fail::new(format_args!(
            "{e}: rc {rc}, status[{BAD_OP}] {}, statuses ok {statuses_ok}, data ok {data_ok}",
            ops[BAD_OP].status
        ))
    })?;

    // Frame sides that are grant mappings.
    let h12 = match grant::map(granter, 12, x(0), false) {
        Ok(h) => h,
        Err(s) => fail!("map of ref 12: {}", status_name(s)),
    };
    let r = copy(Side::own(x(0)), own(&L5, 0), 4096);
    run.check(
        r.is_ok() && checksum(L5.gpa(), 4096) == page_sum(proto::R_PATTERN),
        "a gmfn source that is a grant mapping is read (checksum)",
    )?;
    let h8 = match grant::map(granter, 8, x(1), true) {
        Ok(h) => h,
        Err(s) => fail!("read-only map of ref 8: {}", status_name(s)),
    };
    run.expect_err(
        copy(own(&L2, 0), Side::own(x(1)), 8),
        GNTST_GENERAL_ERROR,
        "a read-only grant mapping as gmfn destination: general_error",
    )?;
    run.check(
        grant::unmap(x(1), h8).is_ok(),
        "ref 8's read-only mapping unmapped",
    )?;

    // Phase 1: ref 12 is mapped; the granter revokes it by force.
    write_word(PH.gpa(), 0, 1);
    run.check(
        copy(own(&PH, 0), gref(9, (proto::D_PHASE * 8) as u16), 8).is_ok(),
        "phase 1 copied into ref 9",
    )?;
    run.wait("the granter's revocation of ref 12", || {
        copy(gref(13, 0), own(&L, 0), 8).is_ok() && read_word(L.gpa(), 0) == 1
    })?;
    for i in 0..512 {
        write_word(L5.gpa(), i, 0);
    }
    let r = copy(gref(12, 0), own(&L5, 0), 4096);
    run.check(
        r.is_ok() && checksum(L5.gpa(), 4096) == page_sum(proto::R_PATTERN),
        "a copy from the revoked but still mapped ref 12 reads its captured page",
    )?;
    write_word(x(0), proto::R_WRITE_WORD, proto::R_WRITE);
    run.check(
        read_word(x(0), proto::R_WRITE_WORD) == proto::R_WRITE,
        "the revoked mapping stays usable until unmapped",
    )?;
    run.check(
        grant::unmap(x(0), h12).is_ok(),
        "the unmap of the revoked ref 12 succeeds",
    )?;
    run.expect_err(
        copy(gref(12, 0), own(&L5, 0), 8),
        GNTST_GENERAL_ERROR,
        "a copy from ref 12 once revoked and unmapped: general_error",
    )?;

    // Phase 2: done.
    write_word(PH.gpa(), 0, 2);
    run.check(
        copy(own(&PH, 0), gref(9, (proto::D_PHASE * 8) as u16), 8).is_ok(),
        "phase 2 copied into ref 9",
    )?;
    guest_rt::println!("grant-mapper copy: {} checks passed", run.checks);
    Ok(())
}
