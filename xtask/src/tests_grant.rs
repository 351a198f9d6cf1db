//! Grant mapping between domains (`GNTTABOP_map_grant_ref` / `unmap_grant_ref`), on both
//! backends: domain 0 is an idle `reaper` that waits for the three domUs,
//! 1 = `grant-granter`, 2 = `grant-mapper` (read/write side), 3 = `grant-mapper role=ro`.
//!
//! * 2 maps 1's grants, writes, 1 sees the data and the `GTF_reading/writing` bits;
//! * 3 writes through a read-only mapping: the hypervisor crashes 3 (with its report),
//!   1 keeps running and sees 3's pin go with it, its page untouched;
//! * 2 unmaps, 1 ends the grant (which needs the bits cleared), 2's new map fails with
//!   `general_error`;
//! * 1 ends while 2 still maps a page: 2 re-reads 1's last pattern, writes, unmaps;
//! * every frame comes back: the balance is exact once all domUs are gone (the orphaned
//!   page is freed by 2's unmap, or the balance would be off by one).
//!
//! The guests judge their own checks and print `... N checks passed` and `PASS`; the
//! patterns require those lines (and the hypervisor's report of the crash it caused).
//!
//! `grant/copy` (`GNTTABOP_copy`): 1 = `grant-granter mode=copy`, 2 = `grant-mapper
//! role=copy` copies gref to gmfn, gmfn to gref and gref to gref (checksums on both
//! sides), gets the status of each kind of bad op, runs a 40-op batch with a failure in
//! the middle, copies through grant mappings, and copies from and unmaps a grant the
//! granter revoked by force while mapped (the granter sees no flag come back).
//!
//! `grant/maptrack-16k`: 2 = `grant-mapper role=maptrack` holds 16384 mappings of one
//! grant of 1 at once (blkback's persistent grants), then unmaps them all.

use crate::build;
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};
use crate::tests_multi::built_copy;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn line(domid: u32, pattern: &str) -> &'static str {
    leak(format!(r"^\(d{domid}\) {pattern}"))
}

fn starts(domid: u32, name: &str) -> &'static str {
    leak(format!(
        r"^\(I\) domain {domid} \({}\): \d+ MiB, (SVM|VMX) backend, .*starting",
        regex::escape(name)
    ))
}

fn shut_down(domid: u32, name: &str) -> &'static str {
    leak(format!(
        r"^\(I\) domain {domid} \({}\) shut down: poweroff \(reason 0\)",
        regex::escape(name)
    ))
}

/// Checks the granter counts (keep in step with the guests).
const GRANTER_CHECKS: u32 = 10;
const MAPPER_CHECKS: u32 = 27;
const READER_CHECKS: u32 = 2;

fn scenario(prefix: &str, emulator: Emulator, cmdline: &'static str, slow: u64) -> Test {
    let timeout = 60 * slow;
    Test::new(leak(format!("{prefix}/grant/map-unmap")), emulator)
        .cmdline(cmdline)
        .timeout_secs(120 * slow)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=1,2,3 alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms={} timeout={timeout}",
            1000 * slow
        ))))
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_GRANTER, "grant-granter-a"))
                .args(leak(format!(
                    "domu:name=granter,mem=16M mapper=2 reader=3 timeout={timeout}"
                ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_MAPPER, "grant-mapper-b"))
                .args(leak(format!(
                    "domu:name=mapper,mem=16M granter=1 role=rw timeout={timeout}"
                ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_MAPPER, "grant-mapper-c"))
                .args(leak(format!(
                    "domu:name=reader,mem=16M granter=1 role=ro timeout={timeout}"
                ))),
        )
        .expect_group(&[
            starts(0, "guest-reaper"),
            line(0, "reaper: every watched domain is gone"),
            line(0, "guest reaper: PASS$"),
        ])
        .expect_group(&[
            starts(1, "granter"),
            line(1, &format!("grant-granter: {GRANTER_CHECKS} checks passed$")),
            line(1, "guest grant-granter: PASS$"),
            shut_down(1, "granter"),
        ])
        .expect_group(&[
            starts(2, "mapper"),
            line(2, &format!("grant-mapper: {MAPPER_CHECKS} checks passed$")),
            line(2, "guest grant-mapper: PASS$"),
            shut_down(2, "mapper"),
        ])
        .expect_group(&[
            starts(3, "reader"),
            line(3, &format!("grant-mapper ro: {READER_CHECKS} checks passed$")),
            line(3, "about to write through a read-only grant mapping"),
            r"^\(E\) domain 3 crashed: write access to guest-physical 0x[0-9a-f]+ .*not permitted by its p2m \(GrantRo page\)",
            r"^\(I\) domain 3 \(reader\) crashed",
        ])
        // Every frame came back, the granter's orphaned page included (freed by the
        // mapper's last unmap, before the mapper itself ended).
        .expect_group(&[r"^\(I\) all domUs gone: frame balance \+0 \("])
        .forbid(&[
            r"release failed",
            r"reference dropped that was never taken",
            r"not released",
            r"bookkeeping failed",
        ])
}

/// Checks of the copy and maptrack scenarios (keep in step with the guests).
const COPY_GRANTER_CHECKS: u32 = 8;
const COPIER_CHECKS: u32 = 32;
const MAPTRACK_GRANTER_CHECKS: u32 = 4;
const MAPTRACK_MAPPER_CHECKS: u32 = 8;

/// A two-domain scenario: the reaper as dom0, 1 = `grant-granter mode=<mode>`, 2 =
/// `grant-mapper role=<mode>`, each with its expected check count.
fn pair(
    name: &str,
    mode: &str,
    checks: (u32, u32),
    emulator: Emulator,
    cmdline: &'static str,
    slow: u64,
) -> Test {
    let timeout = 60 * slow;
    Test::new(leak(name.to_string()), emulator)
        .cmdline(cmdline)
        .timeout_secs(120 * slow)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=1,2 alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms={} timeout={timeout}",
            1000 * slow
        ))))
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_GRANTER, "grant-granter-a"))
                .args(leak(format!(
                    "domu:name=granter,mem=16M mode={mode} mapper=2 timeout={timeout}"
                ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_MAPPER, "grant-mapper-b")).args(
                leak(format!(
                    "domu:name={mode},mem=16M granter=1 role={mode} timeout={timeout}"
                )),
            ),
        )
        .expect_group(&[
            starts(0, "guest-reaper"),
            line(0, "reaper: every watched domain is gone"),
            line(0, "guest reaper: PASS$"),
        ])
        .expect_group(&[
            starts(1, "granter"),
            line(1, &format!("grant-granter: {} checks passed$", checks.0)),
            line(1, "guest grant-granter: PASS$"),
            shut_down(1, "granter"),
        ])
        .expect_group(&[
            starts(2, mode),
            line(
                2,
                &format!("grant-mapper {mode}: {} checks passed$", checks.1),
            ),
            line(2, "guest grant-mapper: PASS$"),
            shut_down(2, mode),
        ])
        .expect_group(&[r"^\(I\) all domUs gone: frame balance \+0 \("])
        .forbid(&[
            r"release failed",
            r"reference dropped that was never taken",
            r"not released",
            r"bookkeeping failed",
            r"pin of ref \d+ missing",
            r"crashed",
        ])
}

fn copy(prefix: &str, emulator: Emulator, cmdline: &'static str, slow: u64) -> Test {
    pair(
        &format!("{prefix}/grant/copy"),
        "copy",
        (COPY_GRANTER_CHECKS, COPIER_CHECKS),
        emulator,
        cmdline,
        slow,
    )
}

fn maptrack(prefix: &str, emulator: Emulator, cmdline: &'static str, slow: u64) -> Test {
    pair(
        &format!("{prefix}/grant/maptrack-16k"),
        "maptrack",
        (MAPTRACK_GRANTER_CHECKS, MAPTRACK_MAPPER_CHECKS),
        emulator,
        cmdline,
        slow,
    )
}

/// The grant tests, QEMU first.
pub fn all() -> Vec<Test> {
    const QEMU: &str = "console=com1 on_idle=poweroff dom0_mem=32M";
    const BOCHS: &str = "console=com1,e9 on_idle=poweroff dom0_mem=32M";
    let qemu = || Emulator::qemu_tcg(QemuBoot::Kernel);
    vec![
        scenario("qemu-tcg", qemu(), QEMU, 1),
        copy("qemu-tcg", qemu(), QEMU, 1),
        maptrack("qemu-tcg", qemu(), QEMU, 1),
        scenario("bochs", Emulator::Bochs, BOCHS, 5),
        copy("bochs", Emulator::Bochs, BOCHS, 5),
        maptrack("bochs", Emulator::Bochs, BOCHS, 5),
    ]
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn patterns_compile_and_match() {
        for t in all() {
            for p in t
                .expect
                .iter()
                .chain(&t.forbid)
                .chain(t.expect_groups.iter().flatten())
            {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: bad regex {p:?}: {e}", t.name));
            }
        }
        let re = |p: &str| Regex::new(p).unwrap();
        assert!(re(line(2, "grant-mapper: 25 checks passed$"))
            .is_match("(d2) grant-mapper: 25 checks passed"));
        assert!(!re(line(2, "grant-mapper: 25 checks passed$"))
            .is_match("(d2) grant-mapper: 2 checks passed"));
        assert!(re(starts(1, "granter"))
            .is_match("(I) domain 1 (granter): 16 MiB, SVM backend, starting"));
    }
}
