//! The toolstack interface (fvctl) driven by a test guest acting as dom0: the
//! `toolstack` guest builds domUs from its own image, runs them, destroys them, checks
//! every error path, and checks that the host's free memory returns to the KiB. The
//! children check that fvctl refuses them (`-EPERM`).

use crate::build;

/// A line dom0 printed, with or without the `(d0) ` prefix (as `tests_dom0::d0!`).
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};
use crate::tests_multi::{built_copy, leak, line, pass, same_kib, shut_down, starts};

fn toolstack(
    prefix: &str,
    emulator: Emulator,
    cmdline: &'static str,
    cycles: u32,
    timeout: u64,
) -> Test {
    Test::new(leak(format!("{prefix}/toolstack/fvctl-cycles")), emulator)
        .cmdline(cmdline)
        .timeout_secs(timeout)
        .module(ModuleSpec::built(&build::GUEST_TOOLSTACK).args(leak(format!("cycles={cycles} mem_mib=4"))))
        .module(ModuleSpec::prepared(|| built_copy(&build::GUEST_TOOLSTACK, "toolstack-child")))
        .expect_group(&[
            starts(0, "guest-toolstack", None),
            line(0, "toolstack: error paths checked$"),
            line(0, r"toolstack: bad input: \d+ of \d+ checks as documented$"),
            line(0, r"toolstack: cycle 1: domain \d+ built, ran its checks, destroyed$"),
            line(
                0,
                &format!(
                    r"toolstack: {cycles} create/run/destroy cycles in \d+ ms \(last domain \d+\); free memory (\d+) KiB, \d+ KiB before$"
                ),
            ),
            pass(0, "toolstack"),
            shut_down(0, "guest-toolstack", "poweroff", 0),
        ])
        .expect_group(&[r"^\(d\d+\) toolstack: child: every fvctl call got -EPERM$", r"^\(d\d+\) guest toolstack: PASS$"])
}

pub fn all() -> Vec<Test> {
    vec![
        toolstack(
            "qemu-tcg",
            Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 dom0_mem=32M",
            100,
            240,
        ),
        toolstack(
            "bochs",
            Emulator::Bochs,
            "console=com1,e9 dom0_mem=32M",
            10,
            600,
        ),
        dom0_xenstored(),
        dom0_balloon(),
        linux_domu(),
        xl_cycle_bochs(),
    ]
    .into_iter()
    // The Linux domU under VMX (create, console, destroy) takes over 10 minutes of Bochs
    // (XZ decompression in dom0 userspace, then a second Linux boot): only with
    // XTASK_SLOW=1. The suite covers VMX with bochs/toolstack/fvctl-cycles and, through
    // `xl` in a Linux dom0, bochs/toolstack/xl-cycle (a test-guest domU).
    .chain(std::env::var_os("XTASK_SLOW").map(|_| linux_domu_bochs()))
    .chain(std::env::var_os("XTASK_SLOW").map(|_| dom0_balloon_bochs()))
    .collect()
}

/// dom0 with its toolstack daemons: xenstored serves dom0's kernel (which finishes its
/// xenbus probe), and the log shows no error.
pub fn dom0_xenstored() -> Test {
    crate::tests_dom0::dom0_boot(
        "qemu-tcg/toolstack/dom0-xenstored",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        crate::tests_dom0::QEMU_TIMEOUT,
    )
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(
        r"dom0: shell ready",
        "cat /var/log/xen/xenstored.log; ls /sys/bus/xen-backend/ && echo XB=ok\n",
    )
    .expect(&[r"XB=ok"])
    .send(r"XB=ok", "poweroff -f\n")
    .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// Shell helpers typed into dom0 first: `c` counts the domU's `tick` lines in its console
/// log (written by xenconsoled), `up` waits (up to 90 s) until the log has one more
/// `domU: shell ready` than `$n`, looking every 0.5 s (each look forks in dom0, and the
/// booting domU on the same CPU would lose that time). `back WHAT` waits (up to 10 s) until the host's free
/// memory, in KiB as dom0 reads it (`xl info --kib`), is back to `$k0` (taken before the
/// first create), prints both, then the domains under `/local/domain` in xenstore: once
/// the domUs are gone, every frame must be free again (no daemon in dom0 may keep a dead
/// domain's ring mapped) and only dom0's home left (`0,`).
pub(crate) const HELPERS: &str = "L=/var/log/xen/console/guest-example.log; \
    c() { grep -c '^tick' $L; }; \
    ready() { cat $L 2>/dev/null | grep -c 'domU: shell ready'; }; \
    up() { i=0; while [ $(ready) -le $n ]; do i=$((i+1)); [ $i -gt 180 ] && return 1; sleep 0.5; done; }; \
    free() { xl info | awk '/^free_memory/ { print $3 }'; }; \
    kib() { xl info --kib | awk '/^free_memory/ { print $3 }'; }; \
    back() { i=0; while [ \"$(kib)\" != \"$k0\" ] && [ $i -lt 50 ]; do i=$((i+1)); sleep 0.2; done; \
    echo FREE_KIB_$1=$k0,$(kib); echo XS_DOMAINS_$1=$(xenstore-list /local/domain | tr '\\n' ,); }; \
    xs-check --dom0; echo HELPERS=$((40 + 2))\n";

/// `xl create` of the example domU, timed from the command to the domU's shell (`-v`:
/// xl says where the kernel came from and how long building the domain took).
const CREATE: &str = "n=$(ready); f0=$(free); k0=$(kib); t0=$(cut -d' ' -f1 /proc/uptime); \
    xl -v create /etc/xen/example.cfg; echo CREATE=$?; \
    up && echo DOMU_UP_MS=$(awk -v a=$t0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN { printf \"%d\", (b - a) * 1000 }') \
    || echo DOMU_UP=never; \
    xl list | awk '$1 == \"example\" { print \"LIST=\" $3 \",\" $4 \",\" $5 }'\n";

/// Ticks counted from the console log: they advance, stop while paused, resume.
const PAUSE_CHECK: &str = "a=$(c); sleep 2; b=$(c); xl pause example; \
    xl list | awk '$1 == \"example\" { print \"PAUSED_STATE=\" $5 }'; sleep 1; p1=$(c); sleep 3; p2=$(c); \
    xl unpause example; sleep 2; u=$(c); echo TICKS=$a,$b,$p1,$p2,$u; \
    r=bad; [ $b -gt $a ] && [ $p2 -eq $p1 ] && [ $u -gt $p2 ] && r=ok; echo PAUSE_CHECK=$r\n";

/// Waits (10 s at most) until `example` is gone from `xl list`.
const GONE: &str =
    "for i in $(seq 50); do xl list | grep -q '^example ' || break; sleep 0.2; done; \
    echo GONE=$(xl list | grep -c '^example '); back POWEROFF\n";

/// A second `xl create` of the same kernel, which xl takes from its kernel cache (the
/// domU reaching its shell again proves the cached image boots; `KSRC` is where xl says
/// the kernel came from, `WARM_UP_MS` the time to the shell). Then `xl reboot`: the domU
/// reboots through its own kernel, and xl's monitor builds it again with the same config
/// (a new domain id, and its shell comes up once more).
const REBOOT: &str = "n=$(ready); t0=$(cut -d' ' -f1 /proc/uptime); \
    xl -v create /etc/xen/example.cfg 2>/tmp/xl-v.txt >/dev/null; up; \
    echo WARM_UP_MS=$(awk -v a=$t0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN { printf \"%d\", (b - a) * 1000 }'); \
    echo KSRC=$(awk '/^xl: kernel / { print $4 }' /tmp/xl-v.txt); n=$(ready); \
    id1=$(xl list | awk '$1 == \"example\" { print $2 }'); xl reboot example; up; \
    id2=$(xl list | awk '$1 == \"example\" { print $2 }'); echo IDS=$id1,$id2; \
    r=bad; [ -n \"$id2\" ] && [ \"$id1\" != \"$id2\" ] && r=ok; echo REBOOT=$r\n";

const DESTROY: &str = "xl destroy example; echo DESTROY=$?; \
    echo GONE2=$(xl list | grep -c '^example '); echo FREE_MIB=$f0,$(free); \
    back DESTROY\n";

fn ends_with_poweroff(t: Test) -> Test {
    t.expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// The toolstack with a Linux domU (QEMU): create → it reaches userspace; `list`; the
/// console round trip; pause stops its counter and unpause resumes it; its own
/// `poweroff` removes it; `xl reboot` rebuilds it; `destroy` ends it.
pub fn linux_domu() -> Test {
    let t = crate::tests_dom0::dom0_boot(
        "qemu-tcg/toolstack/linux-domu",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        600,
    )
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(r"dom0: shell ready", HELPERS)
    .expect(&[d0!(r"xs-check: 4 checks passed$"), d0!(r"HELPERS=42")])
    .send(r"HELPERS=42\r?\n", CREATE)
    .expect_value(d0!(r"CREATE=(\d+)$"), "0")
    .expect(&[d0!(r"DOMU_UP_MS=\d+$")])
    .expect(&[d0!(r"LIST=128,1,[-rb]{6}$")])
    .send(r"LIST=\S+\r?\n", "xl console example\n")
    .send(r"domU: shell ready", "echo CONSOLE=$((6 * 7))\n")
    .expect(&[d0!(r"CONSOLE=42")])
    // xenstore from inside the domU, through its kernel's /dev/xen/xenbus.
    .send(r"CONSOLE=42", "xs-check --domu\n")
    .expect(&[d0!(r"xs-check: 5 checks passed")])
    .send(
        r"xs-check: \d+ checks passed",
        "(i=0; while :; do i=$((i + 1)); echo tick $i; sleep 0.3; done) &\n",
    )
    .send(r"tick 3\r?\n", "\x1d")
    // Back at dom0's prompt (not anchored: ash follows it with a cursor query, ESC[6n,
    // which may arrive with it or later).
    .send(r"dom0# ", PAUSE_CHECK)
    .expect(&[d0!(r"PAUSED_STATE=[-rb]{2}p---$")])
    .expect_value(d0!(r"PAUSE_CHECK=(ok|bad)$"), "ok")
    .send(r"PAUSE_CHECK=(ok|bad)\r?\n", "xl console example\n")
    .send(r"tick \d+\r?\n", "poweroff\n")
    .expect(&[d0!(r".*domU: poweroff requested"), r"console closed"])
    // The prompt, not "console closed": keys typed while xl console still exits are lost.
    .send(r"dom0# ", GONE)
    .expect_value(d0!(r"GONE=(\d+)$"), "0")
    .expect_text(d0!(r"FREE_KIB_POWEROFF=(\d+,\d+)$"), same_kib)
    .expect_value(d0!(r"XS_DOMAINS_POWEROFF=([0-9,]+)$"), "0,")
    .send(r"XS_DOMAINS_POWEROFF=[0-9,]+\r?\n", REBOOT)
    .expect(&[d0!(r"WARM_UP_MS=\d+$")])
    .expect_value(d0!(r"KSRC=(\w*)$"), "Cached")
    .expect_value(d0!(r"REBOOT=(ok|bad)$"), "ok")
    .send(r"REBOOT=(ok|bad)\r?\n", DESTROY)
    .expect_value(d0!(r"DESTROY=(\d+)$"), "0")
    .expect_value(d0!(r"GONE2=(\d+)$"), "0")
    .expect(&[d0!(r"FREE_MIB=\d+,\d+$")])
    .expect_text(d0!(r"FREE_KIB_DESTROY=(\d+,\d+)$"), same_kib)
    .expect_value(d0!(r"XS_DOMAINS_DESTROY=([0-9,]+)$"), "0,")
    .send(r"XS_DOMAINS_DESTROY=[0-9,]+\r?\n", "poweroff -f\n");
    ends_with_poweroff(t)
}

/// The same toolstack on VMX (Bochs): create → console round trip → destroy.
pub fn linux_domu_bochs() -> Test {
    let t = crate::tests_dom0::dom0_boot(
        "bochs/toolstack/linux-domu",
        Emulator::Bochs,
        "console=com1,e9 dom0_mem=512M noreboot on_idle=poweroff",
        1500,
    )
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(r"dom0: shell ready", HELPERS)
    .send(r"HELPERS=42\r?\n", CREATE)
    .expect_value(d0!(r"CREATE=(\d+)$"), "0")
    .expect(&[d0!(r"DOMU_UP_MS=\d+$")])
    .send(r"LIST=\S+\r?\n", "xl console example\n")
    .send(r"domU: shell ready", "echo CONSOLE=$((6 * 7))\n")
    .expect(&[d0!(r"CONSOLE=42")])
    .send(r"CONSOLE=42", "\x1d")
    .send(r"dom0# ", DESTROY)
    .expect_value(d0!(r"DESTROY=(\d+)$"), "0")
    .expect_value(d0!(r"GONE2=(\d+)$"), "0")
    .expect_text(d0!(r"FREE_KIB_DESTROY=(\d+,\d+)$"), same_kib)
    .expect_value(d0!(r"XS_DOMAINS_DESTROY=([0-9,]+)$"), "0,")
    .send(r"XS_DOMAINS_DESTROY=[0-9,]+\r?\n", "poweroff -f\n");
    ends_with_poweroff(t)
}

/// dom0's balloon driver: dom0 shrinks by 64 MiB on `xl mem-set` (xenstore
/// `memory/target`, which the driver watches) and grows back through its sysfs
/// `target_kb`, and dom0 itself reports its balloon's `current_kb` and `MemTotal` moving
/// by exactly 65536 KiB each way, and `xl info`'s free memory (whole MiB) rising by
/// 64 MiB and falling back, ±1 MiB: the page tables and page lists of the 2 MiB regions
/// the balloon splits (it frees pages from anywhere in dom0's RAM) come from the same
/// pool and stay after the regrowth (first run: 463, 527, 462 MiB).
const BALLOON: &str = "B=/sys/devices/system/xen_memory/xen_memory0; \
    free() { xl info | awk '/^free_memory/ { print $3 }'; }; cur() { cat $B/info/current_kb; }; \
    mt() { awk '/^MemTotal/ { print $2 }' /proc/meminfo; }; \
    w() { i=0; while [ $(cur) -ne $1 ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.1; done; }; \
    k0=$(cur); f0=$(free); m0=$(mt); xl mem-set 0 $((k0 - 65536))k; echo MEMSET=$?; w $((k0 - 65536)); \
    k1=$(cur); f1=$(free); m1=$(mt); echo $k0 > $B/target_kb; w $k0; k2=$(cur); f2=$(free); m2=$(mt); \
    echo BALLOON_KB=$k0,$k1,$k2 FREE_MIB=$f0,$f1,$f2 MEMTOTAL_KB=$m0,$m1,$m2; \
    r=bad; [ $((k0 - k1)) -eq 65536 ] && [ $k2 -eq $k0 ] && [ $((m0 - m1)) -eq 65536 ] && [ $m2 -eq $m0 ] \
    && [ $((f1 - f0)) -ge 63 ] && [ $((f1 - f0)) -le 65 ] && [ $((f1 - f2)) -ge 63 ] && [ $((f1 - f2)) -le 65 ] \
    && r=ok; echo BALLOON=$r\n";

pub fn dom0_balloon() -> Test {
    dom0_balloon_on(
        "qemu-tcg/toolstack/dom0-balloon",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        crate::tests_dom0::QEMU_TIMEOUT,
    )
}

/// The same under VMX (Bochs): a dom0 boot of its own takes minutes, so only with
/// XTASK_SLOW=1.
fn dom0_balloon_bochs() -> Test {
    dom0_balloon_on(
        "bochs/toolstack/dom0-balloon",
        Emulator::Bochs,
        "console=com1,e9 dom0_mem=512M noreboot on_idle=poweroff",
        900,
    )
}

fn dom0_balloon_on(
    name: &'static str,
    emulator: Emulator,
    cmdline: &'static str,
    timeout: u64,
) -> Test {
    crate::tests_dom0::dom0_boot(name, emulator, cmdline, timeout)
        .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
        .send(r"dom0: shell ready", BALLOON)
        .expect_value(d0!(r"MEMSET=(\d+)$"), "0")
        .expect(&[d0!(
            r"BALLOON_KB=\d+,\d+,\d+ FREE_MIB=\d+,\d+,\d+ MEMTOTAL_KB=\d+,\d+,\d+$"
        )])
        .expect_value(d0!(r"BALLOON=(\S+)$"), "ok")
        .send(r"BALLOON=\w+\r?\n", "poweroff -f\n")
        .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// The test guest domU of [`xl_cycle_bochs`]: the `toolstack` guest (packed into dom0's
/// initramfs, linux.rs) in its `console` mode. `kib` is the host's free memory in KiB as
/// dom0 reads it, `k0` its value before the create.
const XL_CREATE: &str = "kib() { xl info --kib | awk '/^free_memory/ { print $3 }'; }; \
    printf 'name = \"tguest\"\\ntype = \"pvh\"\\nkernel = \"/usr/lib/ferrovisor/guest-toolstack\"\\n\
extra = \"console\"\\nmemory = 16\\nvcpus = 1\\n' > /tmp/tguest.cfg; \
    k0=$(kib); xl create /tmp/tguest.cfg; echo CREATE=$?; \
    xl list | awk '$1 == \"tguest\" { print \"LIST=\" $3 \",\" $4 }'\n";

/// `xl destroy`, then (10 s at most) until `tguest` is gone from `xl list` and the host's
/// free memory is back to `$k0`.
const XL_DESTROY: &str = "xl destroy tguest; echo DESTROY=$?; \
    for i in $(seq 50); do xl list | grep -q '^tguest ' || break; sleep 0.2; done; \
    echo GONE=$(xl list | grep -c '^tguest '); \
    i=0; while [ \"$(kib)\" != \"$k0\" ] && [ $i -lt 50 ]; do i=$((i+1)); sleep 0.2; done; \
    echo FREE_KIB=$k0,$(kib)\n";

/// Issue 9 on VMX (Bochs), in the suite: one `xl create` → `xl console` → `xl destroy`
/// cycle of a test-guest domU from a Linux dom0 (the Linux domU takes over 10 minutes of
/// Bochs: `bochs/toolstack/linux-domu`, XTASK_SLOW only). `xl list` shows the domU with
/// its 16 MiB; through `xl console` come what the guest wrote to its PV console before
/// the attach (xenconsoled's history) and its answer to a line typed there (the line
/// reversed, so the typed text itself cannot pass); after `xl destroy` it is gone from
/// `xl list` and the host's free memory is back to the KiB.
pub fn xl_cycle_bochs() -> Test {
    let t = crate::tests_dom0::dom0_boot(
        "bochs/toolstack/xl-cycle",
        Emulator::Bochs,
        crate::tests_dom0::BOCHS_CMDLINE,
        crate::tests_dom0::BOCHS_TIMEOUT,
    )
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(r"dom0: shell ready", XL_CREATE)
    .expect_value(d0!(r"CREATE=(\d+)$"), "0")
    .expect_value(d0!(r"LIST=(\S+)$"), "16,1")
    .send(r"LIST=\S+\r?\n", "xl console tguest\n")
    .expect(&[d0!(r"toolstack: console ready")])
    .send(r"toolstack: console ready\r?\n", "rosivorref\r")
    .expect_value(d0!(r"REPLY=(\S+)$"), "ferrovisor")
    .send(r"REPLY=\S+\r?\n", "\x1d")
    .send(r"dom0# ", XL_DESTROY)
    .expect_value(d0!(r"DESTROY=(\d+)$"), "0")
    .expect_value(d0!(r"GONE=(\d+)$"), "0")
    .expect_text(d0!(r"FREE_KIB=(\d+,\d+)$"), same_kib)
    .send(r"FREE_KIB=\d+,\d+\r?\n", "poweroff -f\n");
    ends_with_poweroff(t)
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn xl_cycle_checks_fail_on_wrong_answers_and_not_on_echoes() {
        assert!(same_kib("474184,474184").is_ok());
        assert!(same_kib("474184,470088").is_err());
        assert!(same_kib("474184").is_err());
        assert!(same_kib(",").is_err());
        let t = xl_cycle_bochs();
        for p in t.expect.iter().chain(t.values.iter().map(|v| &v.pattern)) {
            let re = Regex::new(p).unwrap_or_else(|e| panic!("bad regex {p:?}: {e}"));
            // The echo of a typed command must not satisfy any check.
            for cmd in [XL_CREATE, XL_DESTROY] {
                let echo = format!("dom0# {}", cmd.trim_end());
                assert!(!re.is_match(&echo), "{p} matches the echo {echo:?}");
            }
        }
        let reply = t
            .values
            .iter()
            .find(|v| v.pattern.contains("REPLY"))
            .expect("the reply check");
        let got = &Regex::new(reply.pattern)
            .unwrap()
            .captures("(d0) REPLY=ferrovisor")
            .unwrap()[1];
        assert!(matches!(reply.check, crate::spec::Check::Equals(e) if e == got));
        // The typed text itself, and the answer to a mistyped line, fail.
        assert!(!matches!(
            reply.check,
            crate::spec::Check::Equals("rosivorref")
        ));
        assert!(!matches!(
            reply.check,
            crate::spec::Check::Equals("ferrovistor")
        ));
    }
}
