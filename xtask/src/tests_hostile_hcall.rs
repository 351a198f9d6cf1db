//! Hostile hypercalls (`tests/guests/hostile-hcall`), with a neighbour victim.
//!
//! `hostile/hcall-neighbour` (QEMU and Bochs): domain 0 is an idle `reaper` waiting for
//! both domUs; 1 = `hostile-hcall role=attacker victim=2` runs its cases (bad pointers for
//! every hypercall, timers, HVM params, vcpu_info, add_to_physmap, attacks on domain 2,
//! console forgery and a flood) and judges each itself; 2 = `hostile-hcall role=victim`
//! checks its own memory and events until 1 is gone. The patterns require the attacker's
//! case count, the victim's "undisturbed" report, that no forged line appears without
//! its prefix, and that the flood was cut by the rate limit (its first lines arrive, the
//! late ones do not).
//!
//! `debug/hostile-hcall` runs the same scenario on a debug build of the hypervisor, so
//! arithmetic overflow checks are live.
//!
//! `hostile/nmi` (QEMU): NMIs sent from QEMU's monitor while a guest works; the guest
//! must finish its checked work and the machine power off cleanly.

use crate::build::{self, Profile};
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};
use crate::tests_multi::built_copy;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn line(domid: u32, pattern: &str) -> &'static str {
    leak(format!(r"^\(d{domid}\) {pattern}"))
}

/// Cases the attacker runs (keep in step with the guest).
pub const ATTACKER_CASES: u32 = 153;

fn neighbour(name: &'static str, emulator: Emulator, cmdline: &'static str, slow: u64) -> Test {
    let timeout = 120 * slow;
    Test::new(name, emulator)
        .cmdline(cmdline)
        .timeout_secs(timeout + 60)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=1,2 alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms={} timeout={timeout}",
            1000 * slow
        ))))
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_HOSTILE_HCALL, "hostile-attacker"))
                .args("domu:name=attacker,mem=16M role=attacker victim=2"),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_HOSTILE_HCALL, "hostile-victim"))
                .args(leak(format!(
                    "domu:name=victim,mem=16M role=victim attacker=1 timeout_ms={}",
                    timeout * 1000
                ))),
        )
        .expect_group(&[
            line(0, "reaper: every watched domain is gone"),
            line(0, "guest reaper: PASS$"),
        ])
        .expect_group(&[
            line(1, "case console_io\\(write\\) unmapped: expect -EFAULT"),
            line(1, "flood 00000"),
            line(
                1,
                &format!("hostile-hcall: {ATTACKER_CASES}/{ATTACKER_CASES} cases passed$"),
            ),
            line(1, "guest hostile-hcall: PASS$"),
        ])
        .expect_group(&[
            line(2, "victim: watching domain 1"),
            line(
                2,
                r"victim: undisturbed: \d+ checks, \d+ timer ticks, memory intact",
            ),
            line(2, "guest hostile-hcall: PASS$"),
        ])
        .forbid(&[
            // A forged line must never appear without its domain prefix.
            r"^\(E\) forged",
            r"^[^(]+\(E\) forged",
            // The flood is rate-limited: 16 KiB pass (256 lines), the late ones never.
            r"^\(d1\) flood 0[1-3]\d{3}",
            r"^\(E\) domain \d+ crashed",
        ])
}

fn nmi() -> Test {
    Test::new("qemu-tcg/hostile/nmi", Emulator::qemu_tcg(QemuBoot::Kernel))
        .cmdline("console=com1 on_idle=poweroff")
        .timeout_secs(90)
        .module(ModuleSpec::built(&build::GUEST_HOSTILE_HCALL).args("role=nmi-target work_ms=4000"))
        // QEMU's monitor (multiplexed on the serial line): Ctrl-A c, `nmi`, Ctrl-A c.
        .send(r"\(d0\) nmi-target: ready", "\x01cnmi\n\x01c")
        .send(r"\(qemu\)|\(d0\)", "\x01cnmi\n\x01c")
        .expect(&[
            r"^\(d0\) nmi-target: ready",
            // Evidence the NMI reached the machine (the pass criterion is the guest's).
            r"^\(W\) \d+ NMI\(s\) received",
            r"^\(d0\) nmi-target: finished \d+ rounds of work",
            r"^\(d0\) guest hostile-hcall: PASS",
        ])
}

pub fn all() -> Vec<Test> {
    const QEMU: &str = "console=com1 on_idle=poweroff dom0_mem=32M";
    const BOCHS: &str = "console=com1,e9 on_idle=poweroff dom0_mem=32M";
    let qemu = || Emulator::qemu_tcg(QemuBoot::Kernel);
    vec![
        neighbour("qemu-tcg/hostile/hcall-neighbour", qemu(), QEMU, 1),
        neighbour("bochs/hostile/hcall-neighbour", Emulator::Bochs, BOCHS, 5),
        neighbour("qemu-tcg/debug/hostile-hcall", qemu(), QEMU, 2).hypervisor(Profile::Debug),
        nmi(),
    ]
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn patterns_compile() {
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
        let forged = Regex::new(r"^[^(]+\(E\) forged").unwrap();
        assert!(forged.is_match("partial (E) forged hypervisor line"));
        assert!(!forged.is_match("(d1) partial (E) forged hypervisor line"));
    }
}
