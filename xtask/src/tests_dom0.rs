//! The dom0 tests: the stock Debian kernel as a PVH dom0 with the test
//! initramfs (`tests/linux/init`), on QEMU TCG (SVM) and Bochs (VMX), and
//! the hypervisor's answer to broken dom0 images.
//!
//! All of them are marked [`Test::dom0`], so `cargo xtask test --skip-dom0`
//! skips them; the kernel is downloaded on first use (`cargo xtask
//! dom0-assets`). Boots are expensive (Bochs: minutes), so each emulator gets
//! one boot that runs every shell check in sequence, plus boots of their own
//! only for the checks that end dom0 (crash; on QEMU also power-off).
//!
//! dom0's console lines may reach the hypervisor console with a `(d0) `
//! prefix or without one; patterns accept both ([`d0!`]). The shell commands
//! print `NAME=value` markers whose pattern cannot match the echo of the
//! typed command itself (`$(...)` stands where the value will be).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::linux;
use crate::spec::{Emulator, Exit, ModuleSpec, QemuBoot, Test};
use crate::util;

/// A pattern for a line dom0 printed: optional `(d0) ` prefix, then `$p`
/// (a literal regex, matched from the start of dom0's text).
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}

/// Hypervisor command lines: dom0 gets 512 MiB; a crashed dom0 halts
/// (`noreboot`) and the halt powers off (`on_idle=poweroff`).
pub(crate) const QEMU_CMDLINE: &str = "console=com1 dom0_mem=512M noreboot on_idle=poweroff";
pub(crate) const BOCHS_CMDLINE: &str = "console=com1,e9 dom0_mem=512M noreboot on_idle=poweroff";

/// Generous limits: Linux alone reaches userspace in about 6 s (QEMU TCG) and
/// 80 s (Bochs); Xen's dom0 took 20 s and 146 s (docs/test-bed.md).
pub(crate) const QEMU_TIMEOUT: u64 = 240;
pub(crate) const BOCHS_TIMEOUT: u64 = 600;
/// Bad images never start a guest.
const QEMU_BAD_TIMEOUT: u64 = 60;
const BOCHS_BAD_TIMEOUT: u64 = 300;

/// Module 0: the Debian bzImage, `console=hvc0 earlyprintk=xen`.
fn vmlinuz() -> ModuleSpec {
    ModuleSpec::prepared(|| Ok(linux::assets()?.vmlinuz.clone())).args(linux::DOM0_KERNEL_CMDLINE)
}

/// Module 1: the initramfs.
fn initramfs() -> ModuleSpec {
    ModuleSpec::prepared(|| Ok(linux::assets()?.initramfs.clone()))
}

/// What every dom0 boot prints up to the shell, in order.
const BOOT: &[&str] = &[
    r"^\(I\) domain 0 \(vmlinuz-\S+\): 512 MiB, (SVM|VMX) backend, .*starting",
    d0!(r".*Linux version \d+\.\d+\.\d+"),
    d0!(r".*Booting (?:paravirtualized )?kernel on Xen PVH"),
    d0!(r"dom0: xen modules loaded: .*xenfs"),
    d0!(r"dom0: userspace up, kernel \S+, hypervisor xen, console hvc0, uptime [0-9.]+ s"),
    d0!(r"dom0: shell ready on /dev/hvc0"),
];

/// Console lines that fail any dom0 test that does not provoke them: Linux
/// oopses and warnings, our init's own complaints, and the QEMU TCG FPU
/// quirk (docs/test-bed.md) that breaks userspace later.
const DOM0_FORBID: &[&str] = &[
    r"dom0: insmod .* failed",
    r"BUG: ",
    r"Oops",
    r"WARNING: CPU: ",
    r"general protection fault",
    r"invalid opcode",
    r"Bad FPU state",
    r"Kernel panic",
    // A process killed by a fault it never had (Linux: "sh[138]: segfault at 427700 ip
    // ... error 7"): the sign of guest state the hypervisor lost, such as CR2 across a
    // vCPU switch. Fails the test at once instead of at its timeout.
    r"\bsegfault at [0-9a-f]+ ip ",
];

/// QEMU: dom0's `date +%s` must be within this many seconds of the host's.
const DATE_TOLERANCE_S: f64 = 5.0;

pub(crate) fn date_matches_host(value: f64, host: f64) -> Result<(), String> {
    let off = value - host;
    if off.abs() <= DATE_TOLERANCE_S {
        Ok(())
    } else {
        Err(format!(
            "dom0's clock is {off:+.0} s from the host's (tolerance {DATE_TOLERANCE_S} s)"
        ))
    }
}

/// Bochs: with `clock: sync=none` (bochs.rs) the emulated clocks, the CMOS
/// RTC included, run on instruction count, not on the host's clock. With
/// Bochs's default 4 MIPS, Linux alone on Bochs (`cargo xtask dom0-baseline
/// --emulator bochs`) read a date 19 to 20 minutes ahead of the host; with
/// `ips=40000000` dom0 under ferrovisor reads about a minute ahead
/// (`clock: sync=realtime` was tried and read seven minutes ahead). No hypervisor can do better than the emulated RTC, so this only
/// checks that dom0's wall clock was set from it at all: not behind the host
/// (an unset clock reads 1970, a wrong time zone hours), and ahead by no more
/// than an emulator could account for. On a loaded machine Bochs executes fewer
/// instructions per second than `ips` says, and its clock falls behind the host's,
/// by at most the time the run has taken so far: a few minutes, where an unset
/// clock or a wrong time zone is hours off.
const BOCHS_DATE_AHEAD_MAX_S: f64 = 3.0 * 3600.0;
const BOCHS_DATE_BEHIND_MAX_S: f64 = 900.0;

fn date_plausible_on_bochs(value: f64, host: f64) -> Result<(), String> {
    let off = value - host;
    if (-BOCHS_DATE_BEHIND_MAX_S..=BOCHS_DATE_AHEAD_MAX_S).contains(&off) {
        Ok(())
    } else {
        Err(format!(
            "dom0's clock is {off:+.0} s from the host's; Bochs's emulated RTC may run \
             ahead by up to {BOCHS_DATE_AHEAD_MAX_S} s, or behind by at most the run's \
             length ({BOCHS_DATE_BEHIND_MAX_S} s)"
        ))
    }
}

/// `sleep 2` by dom0's own clock: 2 s ± 10 %.
pub(crate) fn slept_two_seconds(ms: f64, _host: f64) -> Result<(), String> {
    if (1800.0..=2200.0).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "sleep 2 took {ms} ms by /proc/uptime, expected 1800..2200"
        ))
    }
}

/// One boot, every shell check in sequence: (when, what to type).
/// `when` is matched against raw console text since the previous send.
const SHELL_SENDS: &[(&str, &str)] = &[
    (r"dom0: shell ready", "echo HV=$(cat /sys/hypervisor/type)\n"),
    (
        r"HV=\w*\r?\n",
        "echo XENFS=$(grep -c ' /proc/xen xenfs ' /proc/mounts) \
         caps=$(cat /proc/xen/capabilities 2>&1)\n",
    ),
    (
        r"XENFS=\d+.*\r?\n",
        "dmesg | grep -i clocksource; \
         echo CLOCKSOURCE=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) \
         LAST_SWITCH=$(dmesg | grep 'Switched to clocksource' | tail -n 1 | sed 's/.* clocksource //')\n",
    ),
    (r"LAST_SWITCH=\S*\r?\n", linux::DATE_CHECK),
    (r"EPOCH=\d+\r?\n", linux::SLEEP_CHECK),
    (r"SLEPT_MS=\d+\r?\n", "echo INTERACTIVE=$((6 * 7))\n"),
];

/// The answers to [`SHELL_SENDS`], in order. Each is a value check, so a
/// wrong answer fails the test at once.
fn shell_checks(t: Test, date: fn(f64, f64) -> Result<(), String>) -> Test {
    // `cat /sys/hypervisor/type` says xen.
    t.expect_value(d0!(r"HV=(\S*)$"), "xen")
        // init mounted xenfs on /proc/xen, and we are the control domain.
        .expect_value(d0!(r"(XENFS=\d+ caps=.*)$"), "XENFS=1 caps=control_d")
        // The Xen clocksource is in use: the current one, and the last
        // "clocksource: Switched to clocksource ..." line of dmesg.
        .expect_value(
            d0!(r"(CLOCKSOURCE=\S* LAST_SWITCH=\S*)$"),
            "CLOCKSOURCE=xen LAST_SWITCH=xen",
        )
        .expect_number(d0!(r"EPOCH=(\d+)$"), date)
        .expect_number(d0!(r"SLEPT_MS=(\d+)$"), slept_two_seconds)
        // A typed command's output comes back.
        .expect_value(d0!(r"INTERACTIVE=(\S*)$"), "42")
}

fn with_sends(mut t: Test, sends: &[(&'static str, &'static str)]) -> Test {
    for (when, text) in sends {
        t = t.send(when, text);
    }
    t
}

/// A dom0 boot on one emulator, up to its shell.
pub(crate) fn dom0_boot(
    name: &'static str,
    emulator: Emulator,
    cmdline: &'static str,
    timeout: u64,
) -> Test {
    let mut t = Test::new(name, emulator)
        .dom0()
        .cmdline(cmdline)
        .module(vmlinuz())
        .module(initramfs())
        .expect(BOOT)
        .forbid(DOM0_FORBID)
        .timeout_secs(timeout);
    if t.emulator.is_bochs() {
        // dom0_mem=512M plus the hypervisor.
        t = t.memory_mib(1024);
    }
    t
}

/// `poweroff -f` in dom0: Linux's power-off reaches the hypervisor, which
/// reports dom0's shutdown and powers the machine off cleanly.
pub(crate) const POWEROFF_EXPECT: &[&str] = &[
    r"^\(I\) domain 0 \(vmlinuz-\S+\) shut down: poweroff",
    r"^ferrovisor: power off, exit code 0",
];

/// A crash in dom0 (`echo c > /proc/sysrq-trigger`): Linux panics, its panic
/// notifier reports the crash (SCHEDOP_shutdown/crash), the hypervisor says
/// so and, with `noreboot`, halts, which `on_idle=poweroff` turns into a
/// power-off.
fn crash_test(name: &'static str, emulator: Emulator, cmdline: &'static str, timeout: u64) -> Test {
    let t = dom0_boot(name, emulator, cmdline, timeout)
        .send(r"dom0: shell ready", "echo c > /proc/sysrq-trigger\n")
        .expect(&[
            d0!(r".*sysrq: Trigger a crash"),
            d0!(r".*Kernel panic - not syncing: sysrq triggered crash"),
            r"^\([EWI]\) (?:domain 0 .*crash|dom0 .*(?:crash|panic))",
            r"^\(I\) dom0 is gone; halting \(noreboot\)",
            r"^ferrovisor: power off, exit code 0",
        ])
        // The hypervisor itself is fine: dom0's end halts it (noreboot) and the idle
        // policy powers off with success.
        .exit(Exit::Code(0));
    // Linux's panic and oops are the point here; only the hypervisor must
    // not fail.
    let mut t = t;
    t.forbid = vec![
        r"HYPERVISOR PANIC",
        r"ferrovisor: FATAL",
        r"EXCEPTION",
        r"triple fault",
        r"dom0: insmod .* failed",
    ];
    t
}

// ---------------------------------------------------------------------------
// Bad images

/// The first 64 KiB of the real bzImage: a valid setup header whose payload
/// is cut off.
fn truncated_vmlinuz() -> Result<PathBuf> {
    let a = linux::assets()?;
    let bytes = std::fs::read(&a.vmlinuz)?;
    util::write_fixture("vmlinuz-truncated", &bytes[..bytes.len().min(64 << 10)])
}

/// A valid ELF kernel without the PVH entry note: the `hello` test guest
/// with its Xen notes' owner renamed, so no XEN_ELFNOTE_PHYS32_ENTRY exists.
fn not_pvh_kernel() -> Result<PathBuf> {
    let guest = build::output_path(&build::GUEST_HELLO, Profile::Release);
    let mut elf = std::fs::read(&guest)
        .with_context(|| format!("cannot read {} (run `cargo xtask build`)", guest.display()))?;
    let renamed = rename_xen_notes(&mut elf)?;
    if renamed == 0 {
        bail!("{} has no Xen notes to remove", guest.display());
    }
    util::write_fixture("guest-hello-no-pvh-note", &elf)
}

/// The initramfs handed over as the kernel: neither bzImage nor ELF.
fn initramfs_as_kernel() -> Result<PathBuf> {
    Ok(linux::assets()?.initramfs.clone())
}

/// Renames the owner of every `Xen` ELF note in the PT_NOTE segments to
/// `Xxx`; returns how many notes it changed.
fn rename_xen_notes(elf: &mut [u8]) -> Result<usize> {
    let u32_at = |b: &[u8], o| crate::util::le_field(b, o, 4);
    let u64_at = |b: &[u8], o| crate::util::le_field(b, o, 8);
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("not an ELF64 file");
    }
    let bad = || anyhow::anyhow!("malformed ELF");
    let headers = crate::util::elf64_program_headers(elf).ok_or_else(bad)?;
    let mut renamed = 0;
    // Offsets come from the file: every sum is checked (an overflow is a malformed file).
    let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(bad);
    for ph in headers {
        let ph = ph.ok_or_else(bad)?;
        if u32_at(elf, ph).ok_or_else(bad)? != 4 {
            continue; // not PT_NOTE
        }
        let offset = u64_at(elf, add(ph, 0x08)?).ok_or_else(bad)?;
        let size = u64_at(elf, add(ph, 0x20)?).ok_or_else(bad)?;
        let end = add(offset, size)?;
        let mut at = offset;
        while add(at, 12)? <= end {
            let namesz = u32_at(elf, at).ok_or_else(bad)?;
            let descsz = u32_at(elf, at + 4).ok_or_else(bad)?;
            let name = at + 12;
            if namesz == 4 && elf.get(name..name + 4) == Some(b"Xen\0") {
                elf[name..name + 3].copy_from_slice(b"Xxx");
                renamed += 1;
            }
            at = add(
                add(name, namesz.next_multiple_of(4))?,
                descsz.next_multiple_of(4),
            )?;
        }
    }
    Ok(renamed)
}

/// One bad-image test: the hypervisor must refuse to build dom0 with an
/// error line and power off (never hang, never crash).
fn bad_image(
    name: &'static str,
    emulator: Emulator,
    cmdline: &'static str,
    timeout: u64,
    kernel: ModuleSpec,
    reason: &'static str,
) -> Test {
    Test::new(name, emulator)
        .dom0()
        .cmdline(cmdline)
        .module(kernel.args(linux::DOM0_KERNEL_CMDLINE))
        .expect(&[
            reason,
            r"^\(I\) nothing to run; powering off",
            r"^ferrovisor: power off, exit code 0",
        ])
        .forbid(&[
            r"^\(I\) domain 0 .*starting",
            r"HYPERVISOR PANIC",
            r"ferrovisor: FATAL",
        ])
        // A refused image is a clean outcome for the hypervisor: nothing to run, code 0.
        .exit(Exit::Code(0))
        .timeout_secs(timeout)
}

fn bad_images(
    prefix: &str,
    emulator: fn() -> Emulator,
    cmdline: &'static str,
    timeout: u64,
) -> Vec<Test> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        bad_image(
            leak(format!("{prefix}/dom0-bad-truncated")),
            emulator(),
            cmdline,
            timeout,
            ModuleSpec::prepared(truncated_vmlinuz),
            r"^\(E\) domain 0 \(vmlinuz-truncated\):? .*cannot build: .*\S",
        ),
        bad_image(
            leak(format!("{prefix}/dom0-bad-not-pvh")),
            emulator(),
            cmdline,
            timeout,
            ModuleSpec::prepared(not_pvh_kernel),
            r"^\(E\) domain 0 \(guest-hello-no-pvh-note\):? .*cannot build: .*(PVH|PHYS32_ENTRY)",
        ),
        bad_image(
            leak(format!("{prefix}/dom0-bad-not-a-kernel")),
            emulator(),
            cmdline,
            timeout,
            ModuleSpec::prepared(initramfs_as_kernel),
            r"^\(E\) domain 0 \(initramfs\.cpio\.gz\):? .*cannot build: .*\S",
        ),
        bad_image(
            leak(format!("{prefix}/dom0-bad-empty")),
            emulator(),
            cmdline,
            timeout,
            ModuleSpec::fixture("empty-kernel", Vec::new),
            r"^\(E\) domain 0 \(empty-kernel\):? .*cannot build: .*\S",
        ),
    ]
}

/// Every dom0 test, in the order they run: the quick bad-image boots first.
pub fn all() -> Vec<Test> {
    let qemu = || Emulator::qemu_tcg(QemuBoot::Kernel);
    let mut tests = bad_images("qemu-tcg", qemu, QEMU_CMDLINE, QEMU_BAD_TIMEOUT);

    // QEMU: the shell checks (the run ends once all are seen), power-off, crash.
    // Linux's own log says which event-channel ABI it set up: FIFO, since the hypervisor
    // offers it (issue 13).
    let shell = dom0_boot("qemu-tcg/dom0-shell", qemu(), QEMU_CMDLINE, QEMU_TIMEOUT)
        .expect_group(&[d0!(r".*xen:events: Using FIFO-based ABI")]);
    tests.push(
        shell_checks(with_sends(shell, SHELL_SENDS), date_matches_host).exit(Exit::WhenExpected),
    );
    // First the debug keys (hypervisor/src/debugkeys.rs): three Ctrl-As give the console
    // input to the hypervisor, `q` dumps its domains, three more give the input back.
    // dom0 must then get the next command whole, and a lone Ctrl-A as a character of
    // its own (`read` counts 3 characters in "a^Ab").
    tests.push(
        dom0_boot("qemu-tcg/dom0-poweroff", qemu(), QEMU_CMDLINE, QEMU_TIMEOUT)
            .send(
                r"dom0: shell ready",
                "\x01\x01\x01q\x01\x01\x01read -r x; echo KEYS=${#x}\n",
            )
            .send(r"echo KEYS=\$\{#x\}\r?\n", "a\x01b\n")
            .expect(&[d0!(r"KEYS=3\r?$")])
            .send(r"KEYS=\d+\r?\n", "poweroff -f\n")
            .expect(POWEROFF_EXPECT),
    );
    tests.push(crash_test(
        "qemu-tcg/dom0-crash",
        qemu(),
        QEMU_CMDLINE,
        QEMU_TIMEOUT,
    ));
    // `reboot -f`: Linux asks for SHUTDOWN_reboot and the hypervisor resets the
    // machine. QEMU runs with -no-reboot, so the reset ends it with status 0, which
    // the harness checks (Exit::Reset); the hypervisor's own lines are not the proof.
    tests.push(
        dom0_boot("qemu-tcg/dom0-reboot", qemu(), QEMU_CMDLINE, QEMU_TIMEOUT)
            .send(r"dom0: shell ready", "reboot -f\n")
            .expect(&[r"^\(I\) domain 0 \(vmlinuz-\S+\) shut down: reboot \(reason 1\)"])
            .forbid(&[r"ferrovisor: power off"])
            .exit(Exit::Reset),
    );

    tests.extend(bad_images(
        "bochs",
        || Emulator::Bochs,
        BOCHS_CMDLINE,
        BOCHS_BAD_TIMEOUT,
    ));
    // Bochs: one boot for every shell check, ending with the power-off.
    let mut sends = SHELL_SENDS.to_vec();
    sends.push((r"INTERACTIVE=\d+\r?\n", "poweroff -f\n"));
    let shell = dom0_boot("bochs/dom0", Emulator::Bochs, BOCHS_CMDLINE, BOCHS_TIMEOUT);
    tests.push(
        shell_checks(with_sends(shell, &sends), date_plausible_on_bochs).expect(POWEROFF_EXPECT),
    );
    tests.push(crash_test(
        "bochs/dom0-crash",
        Emulator::Bochs,
        BOCHS_CMDLINE,
        BOCHS_TIMEOUT,
    ));
    tests
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn patterns_compile_and_accept_both_console_forms() {
        for t in all() {
            assert!(t.dom0, "{} is not marked dom0", t.name);
            for p in t.expect.iter().chain(&t.forbid) {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: bad regex {p:?}: {e}", t.name));
            }
        }
        let re = Regex::new(d0!(r"HV=xen$")).unwrap();
        assert!(re.is_match("HV=xen"));
        assert!(re.is_match("(d0) HV=xen"));
        let epoch = Regex::new(d0!(r"EPOCH=(\d+)$")).unwrap();
        assert_eq!(
            &epoch.captures("(d0) EPOCH=1700000000").unwrap()[1],
            "1700000000"
        );
        // The echo of the typed command must not satisfy its own check.
        for (_, text) in SHELL_SENDS {
            let echo = format!("dom0# {}", text.trim_end());
            for p in shell_checks(Test::new("x", Emulator::Bochs), date_matches_host).expect {
                assert!(
                    !Regex::new(p).unwrap().is_match(&echo),
                    "{p} matches the echo {echo:?}"
                );
            }
        }
    }

    #[test]
    fn a_userspace_segfault_is_forbidden() {
        let forbidden = |line: &str| {
            DOM0_FORBID
                .iter()
                .any(|p| Regex::new(p).unwrap().is_match(line))
        };
        // The lines of the CI run of be41603 (bochs/dom0-2vcpus, CR2 not switched).
        assert!(forbidden(
            "(d0) [   97.865544] sh[138]: segfault at 427700 ip 0000000000529f7f sp 00007fffd49a0380 error 7 in busybox[401000+184000]"
        ));
        assert!(forbidden(
            "(d0) [   96.714968] exe[136]: segfault at 7f97e0a56000 ip 0000000000436a85 sp 00007ffd6d555850 error 4"
        ));
        // The shell's own report of it, or the word in a command, is not the kernel's.
        assert!(!forbidden("(d0) Segmentation fault"));
        assert!(!forbidden("(d0) dom0# echo segfault at home"));
    }

    #[test]
    fn number_checks() {
        assert!(date_matches_host(1000.0, 1004.0).is_ok());
        assert!(date_matches_host(1000.0, 1010.0).is_err());
        assert!(slept_two_seconds(2010.0, 0.0).is_ok());
        assert!(slept_two_seconds(2300.0, 0.0).is_err());
        assert!(slept_two_seconds(1700.0, 0.0).is_err());
        assert!(date_plausible_on_bochs(1000.0 + 1141.0, 1000.0).is_ok());
        assert!(date_plausible_on_bochs(0.0, 1.7e9).is_err());
    }

    #[test]
    fn xen_notes_renamed() {
        // A minimal ELF64 with one PT_NOTE holding one "Xen" note, type 18.
        let mut elf = crate::util::testing::elf64_header(0x100, 0x40, 1);
        elf[0x40..0x44].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        elf[0x48..0x50].copy_from_slice(&0xa0u64.to_le_bytes()); // p_offset
        elf[0x60..0x68].copy_from_slice(&20u64.to_le_bytes()); // p_filesz
        elf[0xa0..0xa4].copy_from_slice(&4u32.to_le_bytes());
        elf[0xa4..0xa8].copy_from_slice(&4u32.to_le_bytes());
        elf[0xa8..0xac].copy_from_slice(&18u32.to_le_bytes());
        elf[0xac..0xb0].copy_from_slice(b"Xen\0");
        assert_eq!(rename_xen_notes(&mut elf).unwrap(), 1);
        assert_eq!(&elf[0xac..0xb0], b"Xxx\0");
        assert_eq!(rename_xen_notes(&mut elf).unwrap(), 0);
        // Offsets whose sums overflow are a malformed file, not a panic.
        let mut huge = elf.clone();
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        huge[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        assert!(rename_xen_notes(&mut huge).is_err());
        let mut huge = elf;
        huge[0x60..0x68].copy_from_slice(&u64::MAX.to_le_bytes()); // p_filesz
        assert!(rename_xen_notes(&mut huge).is_err());
    }
}
