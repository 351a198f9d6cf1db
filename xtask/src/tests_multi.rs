//! Many domains at once: boot-time domUs beside domain 0, interdomain event channels, a
//! preemptive scheduler with weights and caps, domains that end in every way while the
//! others run on, and Xen's error codes for bad domain/port/vCPU arguments.
//!
//! A boot module whose arguments start with `domu` is a domU kernel:
//! `<image> domu[:name=N,mem=16M,vcpus=1,weight=256,cap=0] [kernel command line]`; domU
//! ids count up from 1 in module order; the guest sees only the kernel command line.
//! Module 0 is domain 0, privileged only if its kernel has Xen's dom0 feature note (the
//! `reaper` guest has it; the other test guests do not).
//!
//! Concurrent domains print in an arbitrary interleaving, so each domain's lines are one
//! [`Test::expect_group`]: ordered within the domain, independent of the others. The
//! guests judge what they measured themselves (counts, shares, error codes) and print
//! `PASS` or `FAIL`; the patterns require their own result lines and reports.
//!
//! QEMU and Bochs both emulate one CPU (no `-smp`), so every domain shares one pCPU: the
//! share tests depend on that. QEMU runs the acceptance sizes (10,000 round trips, 5 s
//! burns); Bochs, about 20 times slower, smaller ones.
//!
//! The Linux tests (dom0 beside a spinner, dom0 surviving domUs, dom0 with two vCPUs) run
//! on both.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::build::{self, Artifact, Profile};
use crate::spec::{Check, Emulator, ModuleSpec, QemuBoot, Test, ValueCheck};
use crate::{linux, tests_dom0, util};

/// A line dom0 Linux printed, with or without the `(d0) ` prefix (as `tests_dom0::d0!`).
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}

pub(crate) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The hypervisor's last line of every run here.
const POWER_OFF: &str = r"^ferrovisor: power off, exit code 0";

/// A built guest under another file name (QEMU's `-kernel` boot needs unique module
/// names, and a domain is named after its image unless `name=` says otherwise).
pub(crate) fn built_copy(artifact: &Artifact, name: &str) -> Result<PathBuf> {
    let from = build::output_path(artifact, Profile::Release);
    let bytes = std::fs::read(&from)
        .with_context(|| format!("cannot read {} (run `cargo xtask build`)", from.display()))?;
    util::write_fixture(name, &bytes)
}

/// What differs between the emulators.
struct Scale {
    prefix: &'static str,
    emulator: fn() -> Emulator,
    /// Hypervisor command line.
    cmdline: &'static str,
    /// Round trips of the ping-pong (the issue's acceptance number on QEMU).
    pingpongs: u32,
    /// Seconds of burning measured by cpu-burn.
    burn_secs: u64,
    /// Absolute system time (ms) at which the cpu-burn window starts: after every
    /// boot-time domain has started.
    burn_from_ms: u64,
    /// How late (ms) the reaper's timer may wake beside busy domains.
    max_late_ms: u64,
    /// Multiplies the harness timeouts (and the guests' own, in system time).
    slow: u64,
}

const QEMU: Scale = Scale {
    prefix: "qemu-tcg",
    emulator: || Emulator::qemu_tcg(QemuBoot::Kernel),
    cmdline: "console=com1 on_idle=poweroff dom0_mem=32M",
    pingpongs: 10_000,
    burn_secs: 5,
    burn_from_ms: 3_000,
    max_late_ms: 100,
    slow: 1,
};

const BOCHS: Scale = Scale {
    prefix: "bochs",
    emulator: || Emulator::Bochs,
    cmdline: "console=com1,e9 on_idle=poweroff dom0_mem=32M",
    pingpongs: 10_000,
    burn_secs: 5,
    burn_from_ms: 5_000,
    max_late_ms: 200,
    slow: 5,
};

/// The hypervisor's line for a domain starting (`privileged (dom0), ` may precede
/// `starting`).
pub(crate) fn starts(domid: u32, name: &str, mib: Option<u32>) -> &'static str {
    let mib = mib.map_or(r"\d+".to_string(), |m| m.to_string());
    leak(format!(
        r"^\(I\) domain {domid} \({}\): {mib} MiB, (SVM|VMX) backend, .*starting",
        regex::escape(name)
    ))
}

/// The hypervisor's line for a domain that called `SCHEDOP_shutdown(reason)` (or was shut
/// down with it).
pub(crate) fn shut_down(domid: u32, name: &str, reason: &str, code: u32) -> &'static str {
    leak(format!(
        r"^\(I\) domain {domid} \({}\) shut down: {reason} \(reason {code}\)",
        regex::escape(name)
    ))
}

pub(crate) fn pass(domid: u32, guest: &str) -> &'static str {
    leak(format!(r"^\(d{domid}\) guest {guest}: PASS$"))
}

/// A domain's own line: `(dN) ` + `pattern`.
pub(crate) fn line(domid: u32, pattern: &str) -> &'static str {
    leak(format!(r"^\(d{domid}\) {pattern}"))
}

fn base(s: &Scale, name: &str, timeout_secs: u64) -> Test {
    Test::new(leak(format!("{}/multi/{name}", s.prefix)), (s.emulator)())
        .cmdline(s.cmdline)
        .timeout_secs(timeout_secs * s.slow)
}

/// Domain 0 = `evtchn-pingpong role=ping`, domain 1 = `role=pong`: each counts exactly
/// `pingpongs` events received and sent.
fn pingpong(s: &Scale) -> Test {
    let n = s.pingpongs;
    let timeout = 120 * s.slow;
    base(s, "pingpong", 180)
        .module(
            ModuleSpec::built(&build::GUEST_EVTCHN_PINGPONG).args(leak(format!(
                "role=ping peer=1 count={n} timeout={timeout}"
            ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_EVTCHN_PINGPONG, "pingpong-b")).args(
                leak(format!(
                    "domu:name=pong,mem=16M role=pong peer=0 count={n} timeout={timeout}"
                )),
            ),
        )
        .expect_group(&[
            starts(0, "guest-evtchn-pingpong", None),
            line(0, &format!("ping: domain 0, peer 1, {n} round trips")),
            line(0, r"ping: port \d+ unbound for domain 1$"),
            line(0, r"ping: port \d+ bound by domain 1 port \d+$"),
            line(0, "ping: hello received"),
            line(0, &format!("ping: received {n} events, sent {n}$")),
            line(0, r"ping: mean round trip \d+ ns"),
            pass(0, "evtchn-pingpong"),
            shut_down(0, "guest-evtchn-pingpong", "poweroff", 0),
        ])
        .expect_group(&[
            starts(1, "pong", Some(16)),
            line(1, &format!("pong: domain 1, peer 0, {n} round trips")),
            line(1, r"pong: bound domain 0 port \d+ as local port \d+$"),
            line(1, "pong: hello sent"),
            line(1, &format!("pong: received {n} events, sent {n}$")),
            line(1, r"pong: mean round trip \d+ ns"),
            pass(1, "evtchn-pingpong"),
            shut_down(1, "pong", "poweroff", 0),
        ])
}

/// The pair as `cargo xtask bench` runs it: ping with `loopback=N` also makes as many
/// round trips on a channel bound to itself, in blocks between those with pong, and ends
/// with both medians (timing belongs to the bench; here: exact counts, sane numbers).
fn pingpong_interleaved(s: &Scale) -> Test {
    let n = s.pingpongs / 10;
    let timeout = 60 * s.slow;
    base(s, "pingpong-interleaved", 120)
        .module(
            ModuleSpec::built(&build::GUEST_EVTCHN_PINGPONG).args(leak(format!(
                "role=ping peer=1 count={n} timeout={timeout} loopback=50"
            ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_EVTCHN_PINGPONG, "pingpong-b")).args(
                leak(format!(
                    "domu:name=pong,mem=16M role=pong peer=0 count={n} timeout={timeout}"
                )),
            ),
        )
        .expect_group(&[
            starts(0, "guest-evtchn-pingpong", None),
            line(0, "ping: hello received"),
            line(0, r"loopback: port \d+ bound to own port \d+$"),
            line(0, &format!("ping: received {n} events, sent {n}$")),
            line(0, &format!("loopback: received {n} events, sent {n}$")),
            line(
                0,
                r"ping: interdomain median [1-9]\d{0,7} ns, loopback median [1-9]\d{0,7} ns \(interleaved in blocks of 50\)$",
            ),
            pass(0, "evtchn-pingpong"),
            shut_down(0, "guest-evtchn-pingpong", "poweroff", 0),
        ])
        .expect_group(&[
            starts(1, "pong", Some(16)),
            line(1, &format!("pong: received {n} events, sent {n}$")),
            pass(1, "evtchn-pingpong"),
            shut_down(1, "pong", "poweroff", 0),
        ])
}

/// Domain 0 = the privileged reaper, domain 1 = a spinner (interrupts off, never yields),
/// domain 2 = `hlt-wake`: hlt-wake's timer wake-ups and the reaper's ticks still happen
/// beside the spinner; the reaper ends the spinner with `SCHEDOP_remote_shutdown` once
/// hlt-wake is gone, then powers the machine off.
fn spinner(s: &Scale) -> Test {
    let timeout = 60 * s.slow;
    // One CPU: the point is that the spinner never keeps it from the others.
    base(s, "spinner", 120)
        .cpus(1)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=2 reap=1 alive_ms=100 min_ticks=10 after_ticks=3 max_late_ms={} timeout={timeout}",
            s.max_late_ms
        ))))
        .module(ModuleSpec::built(&build::GUEST_SPINNER).args("domu:name=spinner,mem=16M"))
        .module(ModuleSpec::built(&build::GUEST_HLT_WAKE).args("domu:name=hlt-wake,mem=16M"))
        .expect_group(&[
            starts(0, "guest-reaper", None),
            line(0, "reaper: domain 0, control domain: true"),
            line(0, r"reaper: alive 1 "),
            line(0, r"reaper: domain 2 gone after \d+ ms$"),
            line(0, r"reaper: remote_shutdown\(domain 1, poweroff\) returned 0$"),
            line(0, r"reaper: domain 1 gone after \d+ ms \(remote_shutdown\)"),
            line(0, r"reaper: \d+ alive ticks, timer at most \d+ us late"),
            pass(0, "reaper"),
            shut_down(0, "guest-reaper", "poweroff", 0),
        ])
        .expect_group(&[
            starts(1, "spinner", Some(16)),
            line(1, "spinner: domain 1 spinning with interrupts off, never yielding"),
            shut_down(1, "spinner", "poweroff", 0),
        ])
        .expect_group(&[
            starts(2, "hlt-wake", Some(16)),
            line(2, r"timer \+20 ms: woke after \d+ us"),
            line(2, r"timer in the past: woke after \d+ us"),
            pass(2, "hlt-wake"),
            shut_down(2, "hlt-wake", "poweroff", 0),
        ])
}

/// The lines of one cpu-burn domU that checks its own share.
pub(crate) fn burner_group(domid: u32, name: &str, label: &str, share: &str) -> Vec<&'static str> {
    vec![
        starts(domid, name, Some(16)),
        line(
            domid,
            &format!(r"cpu-burn {label}: domain {domid} started at \d+ ms"),
        ),
        line(
            domid,
            &format!(r"cpu-burn {label}: ran \d+ ms of \d+ ms wall \([0-9.]+ %\)"),
        ),
        line(
            domid,
            &format!(r"cpu-burn {label}: share within {}", regex::escape(share)),
        ),
        pass(domid, "cpu-burn"),
        shut_down(domid, name, "poweroff", 0),
    ]
}

/// The reaper as an idle domain 0 that waits for `domains` to end, then powers off.
fn idle_reaper(s: &Scale, domains: &str) -> ModuleSpec {
    ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
        "await={domains} alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms={} timeout={}",
        s.max_late_ms * 5,
        (s.burn_from_ms / 1000 + s.burn_secs + 60) * s.slow
    )))
}

/// The idle reaper's lines (the burners end in either order, so no per-domain lines).
pub(crate) fn reaper_group() -> Vec<&'static str> {
    vec![
        starts(0, "guest-reaper", None),
        line(0, "reaper: domain 0, control domain: true"),
        line(0, r"reaper: every watched domain is gone"),
        pass(0, "reaper"),
        shut_down(0, "guest-reaper", "poweroff", 0),
    ]
}

/// Two cpu-burn domUs, weight 256 and 512, on one pCPU: they get 1/3 and 2/3 of it (each
/// within 2.3 points, i.e. a ratio of about 2.0 +- 0.2), measured over the same window.
fn weights(s: &Scale) -> Test {
    let window = format!("from_ms={} secs={}", s.burn_from_ms, s.burn_secs);
    // One CPU whatever XTASK_TEST_CPUS says: the two must share it.
    let mut t = base(s, "weights", s.burn_from_ms / 1000 + s.burn_secs + 90)
        .cpus(1)
        .module(idle_reaper(s, "1,2"))
        .module(
            ModuleSpec::built(&build::GUEST_CPU_BURN).args(leak(format!(
                "domu:name=w256,mem=16M,weight=256 label=w256 {window} expect_share=33.3 tolerance=2.3"
            ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_CPU_BURN, "cpu-burn-b")).args(leak(
                format!(
                    "domu:name=w512,mem=16M,weight=512 label=w512 {window} expect_share=66.7 tolerance=2.3"
                ),
            )),
        )
        .expect_group(&reaper_group());
    for g in [
        burner_group(1, "w256", "w256", "33.3"),
        burner_group(2, "w512", "w512", "66.7"),
    ] {
        t = t.expect_group(&g);
    }
    // The ratio of the two running times the guests measured over the same window:
    // 2.0 +- 0.2 (each line is also required, in order, by its domain's group).
    let bochs = s.prefix == BOCHS.prefix;
    let checks: [TextCheck; 2] = if bochs {
        [weight_ratio::<1, 0>, weight_ratio::<1, 1>]
    } else {
        [weight_ratio::<0, 0>, weight_ratio::<0, 1>]
    };
    for (domid, (label, check)) in [(1, ("w256", checks[0])), (2, ("w512", checks[1]))] {
        t.values.push(ValueCheck {
            pattern: line(
                domid,
                &format!(r"cpu-burn {label}: running (\d+) ns in window \[\d+ ms, \d+ ms\)"),
            ),
            check: Check::Text(check),
        });
    }
    t
}

type TextCheck = fn(&str) -> Result<(), String>;

/// Running times (ns) the two burners of [`weights`] measured, per scale (0 QEMU,
/// 1 Bochs) and weight (0: 256, 1: 512). A value check sees one line; the ratio needs
/// both, so each check records its own and the second one judges the pair.
static BURN_NS: std::sync::Mutex<[[Option<u64>; 2]; 2]> = std::sync::Mutex::new([[None; 2]; 2]);

/// Records one burner's running time; once both are in, their ratio (weight 512 over
/// weight 256) must be 2.0 +- 0.2.
fn weight_ratio<const SCALE: usize, const HEAVY: usize>(v: &str) -> Result<(), String> {
    let ns: u64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    let mut all = BURN_NS.lock().map_err(|_| "poisoned".to_string())?;
    all[SCALE][HEAVY] = Some(ns);
    match all[SCALE] {
        [Some(light), Some(heavy)] => ratio_within(heavy, light, 2.0, 0.2),
        _ => Ok(()),
    }
}

/// `heavy / light` within `want +- tol`.
pub(crate) fn ratio_within(heavy: u64, light: u64, want: f64, tol: f64) -> Result<(), String> {
    if light == 0 {
        return Err(format!("weight 256 ran 0 ns (weight 512: {heavy} ns)"));
    }
    let r = heavy as f64 / light as f64;
    if (r - want).abs() <= tol {
        Ok(())
    } else {
        Err(format!(
            "running time ratio 512:256 = {heavy}/{light} = {r:.3}, expected {want} +- {tol}"
        ))
    }
}

/// `BASELINE,NOW` (KiB), the host's free memory as a Linux dom0 test prints it: back to
/// the last KiB, so every frame came back.
pub(crate) fn same_kib(v: &str) -> Result<(), String> {
    match v.split_once(',') {
        Some((a, b)) if !a.is_empty() && a == b => Ok(()),
        _ => Err(format!(
            "free memory (baseline,now KiB) {v}: not back to the baseline"
        )),
    }
}

/// One cpu-burn domU capped at 25 % of a CPU beside an idle domain 0: 25 +- 5 %.
fn cap(s: &Scale) -> Test {
    let window = format!("from_ms={} secs={}", s.burn_from_ms, s.burn_secs);
    base(s, "cap", s.burn_from_ms / 1000 + s.burn_secs + 90)
        .module(idle_reaper(s, "1"))
        .module(ModuleSpec::built(&build::GUEST_CPU_BURN).args(leak(format!(
            "domu:name=cap25,mem=16M,cap=25 label=cap25 {window} expect_share=25 tolerance=5"
        ))))
        .expect_group(&reaper_group())
        .expect_group(&burner_group(1, "cap25", "cap25", "25.0"))
}

/// Domain 0 (the reaper) stays alive while domUs end by poweroff, crash, triple fault and
/// deadlock (blocked with nothing that could ever wake it: the hypervisor reports it and
/// destroys it), sees each one go, keeps ticking, and powers off.
fn domu_ends(s: &Scale) -> Test {
    let t = base(s, "domu-ends", 120)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=1,2,3,4 alive_ms=100 min_ticks=5 after_ticks=5 max_late_ms={} timeout={}",
            // The hypervisor prints each crash report synchronously on the serial line
            // (a dozen lines; Bochs models the UART's speed), so the reaper's tick may
            // come later here than beside a spinner.
            s.max_late_ms * 5,
            60 * s.slow
        ))))
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-1"))
                .args("domu:name=end-shutdown,mem=16M how=shutdown after_ms=300"),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-2"))
                .args("domu:name=end-crash,mem=16M how=crash after_ms=600"),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-3"))
                .args("domu:name=end-triple-fault,mem=16M how=triple-fault after_ms=900"),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-4"))
                .args("domu:name=end-deadlock,mem=16M how=deadlock"),
        )
        .expect_group(&[
            starts(0, "guest-reaper", None),
            line(0, "reaper: domain 0, control domain: true"),
            line(0, r"reaper: alive 1 "),
            line(0, r"reaper: domain 1 gone after \d+ ms$"),
            line(0, r"reaper: domain 2 gone after \d+ ms$"),
            line(0, r"reaper: domain 3 gone after \d+ ms$"),
            line(0, r"reaper: every watched domain is gone"),
            // dom0 keeps running after all of them.
            line(0, r"reaper: alive \d+ "),
            line(0, r"reaper: \d+ alive ticks, timer at most \d+ us late"),
            pass(0, "reaper"),
            shut_down(0, "guest-reaper", "poweroff", 0),
        ])
        .expect_group(&[
            starts(1, "end-shutdown", Some(16)),
            line(1, "domu-end: domain 1 ending by shutdown"),
            shut_down(1, "end-shutdown", "poweroff", 0),
        ])
        .expect_group(&[
            starts(2, "end-crash", Some(16)),
            line(2, "domu-end: domain 2 ending by crash"),
            shut_down(2, "end-crash", "crash", 3),
        ])
        .expect_group(&[
            starts(3, "end-triple-fault", Some(16)),
            line(3, "domu-end: domain 3 ending by triple-fault"),
            r"^\(E\) domain 3 crashed: triple fault",
            r"^\(I\) domain 3 \(end-triple-fault\) crashed",
        ])
        .expect_group(&[
            starts(4, "end-deadlock", Some(16)),
            line(4, "domu-end: domain 4 ending by deadlock"),
            r"^\(W\) domain 4: vCPU 0 blocked in SCHEDOP_block with no timer and no event source",
            r"^\(I\) domain 4 \(end-deadlock\) blocked forever",
        ])
        // Every frame the domUs held came back: free frames plus what domain 0 holds are
        // what they were before the domUs were built (the allocator's own count).
        .expect_group(&[r"^\(I\) all domUs gone: frame balance \+0 \("]);
    // The triple fault is provoked: only the hypervisor's own failures are forbidden.
    t.no_default_forbid()
        .forbid(&[r"panic", r"PANIC", r"EXCEPTION", r"page fault", r"FAIL"])
}

/// bad-args as domain 0 with a second domain to aim at (a domU that lives 3 s and then
/// powers off): every error code as Xen's.
fn bad_args(s: &Scale) -> Test {
    base(s, "bad-args", 90)
        .module(ModuleSpec::built(&build::GUEST_BAD_ARGS).args("other=1"))
        .module(ModuleSpec::built(&build::GUEST_DOMU_END).args(leak(format!(
            "domu:name=target,mem=16M how=shutdown after_ms={}",
            3000 * s.slow
        ))))
        .expect_group(&[
            starts(0, "guest-bad-args", None),
            line(0, "bad-args: domain 0, checks against another domain: 1"),
            line(0, r"bind_interdomain\(domain 999, port 1\): got -ESRCH"),
            line(0, r"send\(unbound port \d+\): got 0 expected 0$"),
            line(0, r"bind_virq\(VIRQ_TIMER, vcpu 1\): got -ENOENT"),
            line(
                0,
                r"vcpu_op\(get_runstate_info, vcpu 0xffffffff\): got -ENOENT",
            ),
            line(0, r"sched_op\(remote_shutdown, own domain 0\): got -EPERM"),
            line(0, r"alloc_unbound\(domain 1, remote self\): got -EPERM"),
            line(0, r"status\(domain 1, port 0\): got -EPERM"),
            line(0, r"sched_op\(remote_shutdown, domain 1\): got -EPERM"),
            line(0, r"bad-args: \d+ of \d+ checks as Xen"),
            pass(0, "bad-args"),
            shut_down(0, "guest-bad-args", "poweroff", 0),
        ])
        .expect_group(&[
            starts(1, "target", Some(16)),
            line(1, "domu-end: domain 1 ending by shutdown"),
            shut_down(1, "target", "poweroff", 0),
        ])
}

/// Single-domain runs of the new guests (they need no second domain, so they also run on
/// a hypervisor with one domain): bad-args without another domain, evtchn-pingpong's
/// loopback, the reaper's privilege and timer ticks, cpu-burn's share when alone (all of
/// one CPU).
fn single(s: &Scale) -> Vec<Test> {
    vec![
        base(s, "bad-args-alone", 60)
            .module(ModuleSpec::built(&build::GUEST_BAD_ARGS))
            .expect(&[
                r"^\(d0\) bad-args: domain 0, checks against another domain: -1",
                r"^\(d0\) sched_op\(remote_shutdown, own domain 0\): got -EPERM",
                r"^\(d0\) bad-args: \d+ of \d+ checks as Xen",
                r"^\(d0\) guest bad-args: PASS$",
                r"^\(I\) domain 0 \(guest-bad-args\) shut down: poweroff \(reason 0\)",
            ]),
        // The reference of `cargo xtask bench`'s interdomain round trip; timing belongs
        // there, so here only: exact counts, and mean, min and median positive and below
        // 0.1 s.
        base(s, "evtchn-loopback", 60)
            .module(ModuleSpec::built(&build::GUEST_EVTCHN_PINGPONG).args(leak(format!(
                "role=loopback count={} timeout={}",
                s.pingpongs / 10,
                30 * s.slow
            ))))
            .expect(&[
                starts(0, "guest-evtchn-pingpong", None),
                line(0, &format!("loopback: domain 0, {} round trips, waiting with sti; hlt$", s.pingpongs / 10)),
                line(0, r"loopback: port \d+ bound to own port \d+$"),
                line(0, &format!("loopback: received {n} events, sent {n}$", n = s.pingpongs / 10)),
                line(
                    0,
                    r"loopback: mean round trip [1-9]\d{0,7} ns \(min [1-9]\d{0,7} ns, median [1-9]\d{0,7} ns, max \d+ ns\)$",
                ),
                pass(0, "evtchn-pingpong"),
                shut_down(0, "guest-evtchn-pingpong", "poweroff", 0),
            ]),
        base(s, "reaper-alone", 60)
            .module(
                ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
                    "alive_ms=50 min_ticks=10 after_ticks=0 max_late_ms={}",
                    s.max_late_ms
                ))),
            )
            .expect(&[
                r"^\(I\) domain 0 \(guest-reaper\): \d+ MiB, (SVM|VMX) backend, privileged \(dom0\), starting",
                r"^\(d0\) reaper: domain 0, control domain: true",
                r"^\(d0\) reaper: alive 10 ",
                r"^\(d0\) guest reaper: PASS$",
                r"^\(I\) domain 0 \(guest-reaper\) shut down: poweroff \(reason 0\)",
            ]),
        base(s, "cpu-burn-alone", 60)
            .module(ModuleSpec::built(&build::GUEST_CPU_BURN).args(leak(format!(
                "label=alone secs={} expect_share=100 tolerance=5",
                s.burn_secs.min(2)
            ))))
            .expect(&[
                r"^\(d0\) cpu-burn alone: ran \d+ ms of \d+ ms wall \([0-9.]+ %\)",
                r"^\(d0\) cpu-burn alone: share within 100\.0 \+- 5\.0 %",
                r"^\(d0\) guest cpu-burn: PASS$",
            ]),
    ]
}

fn scaled(s: &Scale) -> Vec<Test> {
    let mut v = single(s);
    v.extend([
        pingpong(s),
        pingpong_interleaved(s),
        spinner(s),
        weights(s),
        cap(s),
        domu_ends(s),
        bad_args(s),
    ]);
    // Last of all: the machine powers off cleanly.
    v.into_iter().map(|t| t.expect(&[POWER_OFF])).collect()
}

// ---------------------------------------------------------------------------
// Linux dom0 beside domUs (Bochs takes minutes per dom0 boot)

/// A Linux dom0 test on Bochs or QEMU (`names`: Bochs's, QEMU's), with the usual
/// command line and `scale` times the usual timeout.
fn linux_dom0(bochs: bool, names: [&'static str; 2], scale: u64) -> Test {
    if bochs {
        tests_dom0::dom0_boot(
            names[0],
            Emulator::Bochs,
            tests_dom0::BOCHS_CMDLINE,
            scale * tests_dom0::BOCHS_TIMEOUT,
        )
    } else {
        tests_dom0::dom0_boot(
            names[1],
            Emulator::qemu_tcg(QemuBoot::Kernel),
            tests_dom0::QEMU_CMDLINE,
            scale * tests_dom0::QEMU_TIMEOUT,
        )
    }
}

/// Module 2: a spinner domU after dom0's kernel and initramfs.
fn spinner_domu() -> ModuleSpec {
    ModuleSpec::built(&build::GUEST_SPINNER).args("domu:name=spinner,mem=16M")
}

/// dom0's `sleep 2` takes 2 s +- 10 % by its own clock while a domU spins on the same
/// (only) pCPU without ever yielding; on QEMU its wall clock also stays with the host's.
fn dom0_beside_spinner(bochs: bool) -> Test {
    // Half the CPU goes to the spinner: twice the usual time.
    let t = linux_dom0(
        bochs,
        ["bochs/dom0-beside-spinner", "qemu-tcg/dom0-beside-spinner"],
        2,
    )
    .module(spinner_domu())
    // One CPU: the point is that the spinner never keeps it from dom0.
    .cpus(1)
    .expect_group(&[
        starts(1, "spinner", Some(16)),
        line(
            1,
            "spinner: domain 1 spinning with interrupts off, never yielding",
        ),
    ])
    .send(r"dom0: shell ready", linux::SLEEP_CHECK)
    .expect_number(d0!(r"SLEPT_MS=(\d+)$"), tests_dom0::slept_two_seconds);
    if bochs {
        // No host-date check: Bochs's clocks (its RTC included) run on instruction count
        // (`clock: sync=none`, bochs.rs), so dom0's date is only as close to the host's as
        // the emulator's pace, minutes off (bochs/dom0 only checks it is plausible). The
        // sleep check above is what a stolen pCPU would break: dom0 measures it itself.
        t.send(r"SLEPT_MS=\d+\r?\n", "poweroff -f\n")
            .expect(tests_dom0::POWEROFF_EXPECT)
    } else {
        t.send(r"SLEPT_MS=\d+\r?\n", linux::DATE_CHECK)
            .expect_number(d0!(r"EPOCH=(\d+)$"), tests_dom0::date_matches_host)
            .send(r"EPOCH=\d+\r?\n", "poweroff -f\n")
            .expect(tests_dom0::POWEROFF_EXPECT)
    }
}

/// Linux dom0 beside domUs that end by triple fault, crash and shutdown while it boots:
/// each end is reported and the domU destroyed, every frame comes back, and dom0's shell
/// still answers afterwards (the domUs end within a second; dom0's shell is ready after
/// several).
fn dom0_survives_domus(bochs: bool) -> Test {
    linux_dom0(
        bochs,
        ["bochs/dom0-survives-domus", "qemu-tcg/dom0-survives-domus"],
        1,
    )
    .module(
        ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-tf"))
            .args("domu:name=end-triple-fault,mem=16M how=triple-fault after_ms=200"),
    )
    .module(
        ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-crash"))
            .args("domu:name=end-crash,mem=16M how=crash after_ms=400"),
    )
    .module(
        ModuleSpec::prepared(|| built_copy(&build::GUEST_DOMU_END, "domu-end-off"))
            .args("domu:name=end-shutdown,mem=16M how=shutdown after_ms=600"),
    )
    .expect_group(&[
        starts(1, "end-triple-fault", Some(16)),
        r"^\(E\) domain 1 crashed: triple fault",
        r"^\(I\) domain 1 \(end-triple-fault\) destroyed",
    ])
    .expect_group(&[
        starts(2, "end-crash", Some(16)),
        shut_down(2, "end-crash", "crash", 3),
        r"^\(I\) domain 2 \(end-crash\) destroyed",
    ])
    .expect_group(&[
        starts(3, "end-shutdown", Some(16)),
        shut_down(3, "end-shutdown", "poweroff", 0),
        r"^\(I\) domain 3 \(end-shutdown\) destroyed",
        r"^\(I\) all domUs gone: frame balance \+0 \(",
    ])
    .send(r"dom0: shell ready", "echo ALIVE=$((6 * 7))\n")
    .expect(&[d0!(r"ALIVE=42$")])
    // The whole line first: typed too early, the command's echo joins the answer's line.
    .send(r"ALIVE=42\r?\n", "poweroff -f\n")
    .expect(tests_dom0::POWEROFF_EXPECT)
    // The domUs' triple fault is provoked: only failures of the hypervisor or of dom0
    // fail the test.
    .no_default_forbid()
    .forbid(&[r"panic", r"PANIC", r"EXCEPTION", r"page fault", r"FAIL"])
}

/// The command that reports whether both vCPUs took timer interrupts: Linux names its
/// per-CPU Xen timer IRQs `timer0`, `timer1` (arch/x86/xen/time.c, `xen_setup_timer`);
/// column 2 of /proc/interrupts counts CPU 0, column 3 CPU 1.
const TIMERS_CHECK: &str = "echo TIMERS=$(awk '/ timer0$/ { a = $2 } / timer1$/ { b = $3 } \
    END { if (a > 0 && b > 0) print \"both\"; else print \"timer0:\" a \",timer1:\" b }' /proc/interrupts)\n";

/// Two busy shell loops in parallel, then `wait`.
const BUSY_CHECK: &str =
    "for i in 1 2; do ( j=0; while [ $j -lt 50000 ]; do j=$((j+1)); done ) & done; \
    wait; echo BUSY=done\n";

/// dom0 with `dom0_max_vcpus=2`: Linux sees 2 CPUs, both take Xen timer interrupts, and
/// two busy loops finish.
fn dom0_two_vcpus(bochs: bool) -> Test {
    let t = if bochs {
        tests_dom0::dom0_boot(
            "bochs/dom0-2vcpus",
            Emulator::Bochs,
            "console=com1,e9 dom0_mem=512M noreboot on_idle=poweroff dom0_max_vcpus=2",
            900,
        )
    } else {
        tests_dom0::dom0_boot(
            "qemu-tcg/dom0-2vcpus",
            Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 dom0_mem=512M noreboot on_idle=poweroff dom0_max_vcpus=2",
            tests_dom0::QEMU_TIMEOUT,
        )
    };
    // One CPU: two vCPUs of one domain share it (issue 8); smp/xl-2x2 runs them apart.
    t.cpus(1)
        .send(
            r"dom0: shell ready",
            "echo NPROC=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)\n",
        )
        .expect_value(d0!(r"NPROC=(\S*)$"), "2")
        .send(r"NPROC=\d+\r?\n", TIMERS_CHECK)
        .expect_value(d0!(r"TIMERS=(\S*)$"), "both")
        .send(r"TIMERS=\S+\r?\n", BUSY_CHECK)
        .expect_value(d0!(r"BUSY=(\S*)$"), "done")
        // SysRq-l: Linux sends an NMI to every other CPU, and each prints its own backtrace
        // from its NMI handler (nothing comes from a CPU the NMI never reached).
        .send(r"BUSY=\S+\r?\n", NMI_CHECK)
        .expect(&[d0!(r"NMI_BT=[1-9]\d*$")])
        .send(r"NMI_BT=\d+\r?\n", "poweroff -f\n")
        .expect(tests_dom0::POWEROFF_EXPECT)
}

/// Asks dom0 for a backtrace of all CPUs (by NMI) and counts vCPU 1's.
const NMI_CHECK: &str = "echo l > /proc/sysrq-trigger; sleep 1; \
    echo NMI_BT=$(dmesg | grep -c 'NMI backtrace for cpu 1')\n";

/// Every many-domain test, QEMU first.
pub fn all() -> Vec<Test> {
    let mut v = scaled(&QEMU);
    v.push(dom0_beside_spinner(false));
    v.push(dom0_two_vcpus(false));
    v.push(dom0_survives_domus(false));
    v.extend(scaled(&BOCHS));
    // The APs start in real mode: on VMX that needs unrestricted guest (Bochs).
    v.push(dom0_two_vcpus(true));
    v.push(dom0_beside_spinner(true));
    v.push(dom0_survives_domus(true));
    v
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn patterns_compile_and_match_the_guests_lines() {
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
        assert!(re(starts(1, "pong", Some(16)))
            .is_match("(I) domain 1 (pong): 16 MiB, SVM backend, starting"));
        assert!(re(starts(0, "guest-reaper", None)).is_match(
            "(I) domain 0 (guest-reaper): 32 MiB, VMX backend, privileged (dom0), starting"
        ));
        assert!(re(line(0, "ping: received 10000 events, sent 10000$"))
            .is_match("(d0) ping: received 10000 events, sent 10000"));
        assert!(!re(line(0, "ping: received 10000 events, sent 10000$"))
            .is_match("(d0) ping: received 10000 events, sent 100000"));
        assert!(re(shut_down(2, "end-crash", "crash", 3)).is_match(
            "(I) domain 2 (end-crash) shut down: crash (reason 3); 40 exits, 9 hypercalls"
        ));
        let loopback = all()
            .into_iter()
            .find(|t| t.name == "qemu-tcg/multi/evtchn-loopback")
            .expect("the loopback test");
        let seen = "(d0) loopback: mean round trip 194386 ns (min 95467 ns, median 188980 ns, max 1930032 ns)";
        assert!(loopback.expect.iter().any(|p| re(p).is_match(seen)));
        let zero = "(d0) loopback: mean round trip 0 ns (min 0 ns, median 0 ns, max 0 ns)";
        assert!(!loopback.expect.iter().any(|p| re(p).is_match(zero)));
        assert!(re(line(1, r"cpu-burn w256: share within 33\.3"))
            .is_match("(d1) cpu-burn w256: share within 33.3 +- 2.3 %"));
    }

    #[test]
    fn weights_check_the_ratio_of_the_running_times() {
        assert!(ratio_within(3_320_000_000, 1_663_259_343, 2.0, 0.2).is_ok());
        assert!(ratio_within(3_700_000_000, 1_663_259_343, 2.0, 0.2).is_err());
        assert!(ratio_within(2_900_000_000, 1_663_259_343, 2.0, 0.2).is_err());
        assert!(ratio_within(1, 0, 2.0, 0.2).is_err());
        let t = weights(&QEMU);
        let mut checks = Vec::new();
        for l in [
            "(d2) cpu-burn w512: running 3400000000 ns in window [3000 ms, 8000 ms)",
            "(d1) cpu-burn w256: running 1500000000 ns in window [3000 ms, 8000 ms)",
        ] {
            for v in &t.values {
                if let Some(c) = Regex::new(v.pattern).unwrap().captures(l) {
                    let Check::Text(f) = v.check else {
                        panic!("a text check")
                    };
                    checks.push(f(&c[1]));
                }
            }
        }
        // 3.4 / 1.5 = 2.27: the second line's check fails the pair.
        assert_eq!(checks.len(), 2);
        assert!(checks[0].is_ok());
        assert!(checks[1].as_ref().unwrap_err().contains("2.267"));
    }

    #[test]
    fn shell_checks_do_not_match_their_own_echo() {
        for (cmd, pattern) in [
            (TIMERS_CHECK, d0!(r"TIMERS=(\S*)$")),
            (BUSY_CHECK, d0!(r"BUSY=(\S*)$")),
        ] {
            let echo = format!("dom0# {}", cmd.trim_end());
            assert!(
                !Regex::new(pattern).unwrap().is_match(&echo),
                "{pattern} matches {echo:?}"
            );
        }
    }
}
