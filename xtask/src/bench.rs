//! `cargo xtask bench`: ferrovisor's figures against a reference measured in
//! the same run, on QEMU TCG and Bochs.
//!
//! A [`Setup`] is one way of booting something plus the console line that
//! ends its run; a [`Figure`] reads one number from the runs of a setup
//! (ferrovisor's) and one from a reference setup, each a [`Source`]: a
//! median over a setup's runs of a number on its line, or of a number
//! derived from two on the same line (the context switch: half the
//! difference of two round trips measured in the same run). Each emulator
//! runs every setup its figures need, alternating (A B C D A B C D ...) so
//! that drift in the machine's load hits all of them alike; a figure is the
//! median over its runs. Adding a figure = adding a row to [`FIGURES`] (and a
//! [`Setup`] when nothing boots the right thing yet).
//!
//! Timing here is wall-clock time on a shared machine: nothing of it belongs
//! in `cargo xtask test`, which only checks that the bench guest prints sane
//! numbers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use regex::Regex;

use crate::build::{self, Profile};
use crate::image::{self, Loader, Module};
use crate::linux::{self, Session};
use crate::{bochs, prereq, qemu, util, xen};

/// The emulators a figure is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emu {
    QemuTcg,
    Bochs,
}

impl Emu {
    fn name(self) -> &'static str {
        match self {
            Emu::QemuTcg => "qemu-tcg",
            Emu::Bochs => "bochs",
        }
    }
}

/// What every run boots.
struct Ctx {
    hypervisor: PathBuf,
}

/// One way of booting something, and the console line that ends the run.
pub struct Setup {
    pub name: &'static str,
    /// Regex; its first match ends the run (and is what figures read).
    pub until: &'static str,
    /// Time limit under QEMU TCG; Bochs gets ten times as much.
    pub qemu_timeout_s: u64,
    /// Prepares the files in the run's directory and starts the emulator.
    boot: fn(Emu, &Ctx, &Path) -> Result<Session>,
    /// Typed into the console once the first pattern appears (a shell command).
    pub command: Option<(&'static str, &'static str)>,
    /// Why it is not run on Bochs (`None`: it is).
    pub not_on_bochs: Option<&'static str>,
}

/// What a figure reads from a run.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// Seconds from emulator start to the setup's `until` line.
    TimeToLine,
    /// Capture group 1 of this regex on the `until` line, in nanoseconds.
    Nanos(&'static str),
    /// Capture group 1 of this regex on the `until` line, in milliseconds (a duration
    /// the guest measured itself; shown and compared in seconds, as [`TimeToLine`]).
    ///
    /// [`TimeToLine`]: Metric::TimeToLine
    Millis(&'static str),
    /// Capture group 1 of this regex on the `until` line, a throughput in this unit
    /// (higher is better: the ratio is ferrovisor's share of the reference).
    Rate(&'static str, &'static str),
    /// A ratio of two numbers on the same line ([`Source::Ratio`]); not read by itself.
    Ratio,
}

/// Where one side of a figure comes from.
#[derive(Clone, Copy)]
pub enum Source {
    /// The metric's median over a setup's runs.
    Median(&'static Setup, Metric),
    /// The median over a setup's runs of `(a − b) / 2`, both read from the same run's
    /// line: the cost of each of two events that `a` has on top of `b`.
    HalfDifference {
        setup: &'static Setup,
        a: Metric,
        b: Metric,
    },
    /// The median over a setup's runs of `a / b`, both read from the same run's line: a
    /// domU's figure as a share of dom0's own, measured side by side.
    Ratio {
        setup: &'static Setup,
        a: Metric,
        b: Metric,
    },
}

impl Source {
    /// What the value is (for formatting).
    fn metric(self) -> Metric {
        match self {
            Source::Median(_, m) | Source::HalfDifference { a: m, .. } => m,
            Source::Ratio { .. } => Metric::Ratio,
        }
    }

    fn setup(self) -> &'static Setup {
        match self {
            Source::Median(s, _)
            | Source::HalfDifference { setup: s, .. }
            | Source::Ratio { setup: s, .. } => s,
        }
    }

    /// The value in one sample.
    fn sample_value(self, sample: &Sample) -> Option<f64> {
        match self {
            Source::Median(_, m) => value(m, sample),
            Source::HalfDifference { a, b, .. } => {
                half_difference(value(a, sample)?, value(b, sample)?)
            }
            Source::Ratio { a, b, .. } => ratio(value(a, sample)?, value(b, sample)?),
        }
    }

    /// The median over the runs of `emu`, or why there is none.
    fn value(self, emu: Emu, runs: &Runs) -> Result<f64, String> {
        match runs.get(&(emu, self.setup().name)) {
            None => Err("not run".into()),
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(samples)) => {
                let values: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| self.sample_value(s))
                    .collect();
                median(&values).ok_or_else(|| "no value in the output".into())
            }
        }
    }
}

/// `(a − b) / 2`; `None` unless `a > b` (a negative cost is noise, not a figure).
pub fn half_difference(a: f64, b: f64) -> Option<f64> {
    (a > b).then(|| (a - b) / 2.0)
}

/// `a / b`; `None` unless `b > 0`.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// A row of the table.
pub struct Figure {
    pub name: &'static str,
    /// ferrovisor's side; `None` until the feature it needs exists.
    pub subject: Option<Source>,
    /// The reference and what it is, e.g. `(Source::Median(&XEN_BENCH, ..), "Xen 4.17")`.
    pub reference: Option<(Source, &'static str)>,
    /// Shown while `subject` is `None`: the feature the figure waits for.
    pub pending: &'static str,
    /// The notes column: e.g. a known figure measured elsewhere (never a value of this
    /// run, which goes in `reference`).
    pub note: &'static str,
}

/// The line `tests/guests/bench` prints.
const BENCH_LINE: &str = r"bench: hypercall_ns=\d+ cpuid_ns=\d+ .*";

static FERROVISOR_DOM0: Setup = Setup {
    name: "ferrovisor + Debian dom0",
    until: linux::BANNER_PATTERN,
    qemu_timeout_s: 180,
    boot: boot_ferrovisor_dom0,
    command: None,
    not_on_bochs: None,
};
/// One PV I/O figure: the domU's value and dom0's reference, both read from the line
/// `pvio-test bench` prints in `setup`'s run.
const fn pvio(
    setup: &'static Setup,
    name: &'static str,
    (subject, reference, what): (Metric, Metric, &'static str),
    note: &'static str,
) -> Figure {
    Figure {
        name,
        subject: Some(Source::Median(setup, subject)),
        reference: Some((Source::Median(setup, reference), what)),
        pending: "",
        note,
    }
}

/// A block figure against Xen 4.17 running the same bench (`xen`): the domU's share of
/// dom0's own on each hypervisor ([`Source::Ratio`]).
const fn share_vs_xen(
    ours: &'static Setup,
    xen: &'static Setup,
    name: &'static str,
    (domu, dom0, _): PvioPair,
    note: &'static str,
) -> Figure {
    Figure {
        name,
        subject: Some(Source::Ratio {
            setup: ours,
            a: domu,
            b: dom0,
        }),
        reference: Some((
            Source::Ratio {
                setup: xen,
                a: domu,
                b: dom0,
            },
            "Xen 4.17",
        )),
        pending: "",
        note,
    }
}

/// A network figure against Xen 4.17 running the same bench (`xen`): the domU's own.
const fn vs_xen(
    ours: &'static Setup,
    xen: &'static Setup,
    name: &'static str,
    (domu, _, _): PvioPair,
    note: &'static str,
) -> Figure {
    Figure {
        name,
        subject: Some(Source::Median(ours, domu)),
        reference: Some((Source::Median(xen, domu), "Xen 4.17")),
        pending: "",
        note,
    }
}

type PvioPair = (Metric, Metric, &'static str);
const PVIO_READ: PvioPair = (
    Metric::Rate(r"domu_read_kbs=(\d+)", "KiB/s"),
    Metric::Rate(r"dom0_read_kbs=(\d+)", "KiB/s"),
    "dom0 on the backing loop device",
);
const PVIO_WRITE: PvioPair = (
    Metric::Rate(r"domu_write_kbs=(\d+)", "KiB/s"),
    Metric::Rate(r"dom0_write_kbs=(\d+)", "KiB/s"),
    "dom0 on the backing loop device",
);
const PVIO_LOOPBACK: Metric = Metric::Rate(r"dom0_loopback_mbps=([\d.]+)", "Mbit/s");
const PVIO_TO_DOM0: PvioPair = (
    Metric::Rate(r"domu_to_dom0_mbps=([\d.]+)", "Mbit/s"),
    PVIO_LOOPBACK,
    "dom0 loopback",
);
const PVIO_FROM_DOM0: PvioPair = (
    Metric::Rate(r"dom0_to_domu_mbps=([\d.]+)", "Mbit/s"),
    PVIO_LOOPBACK,
    "dom0 loopback",
);
const PVIO_PING: PvioPair = (
    Metric::Nanos(r"domu_ping_ns=(\d+)"),
    Metric::Nanos(r"dom0_ping_ns=(\d+)"),
    "dom0 loopback",
);
const PVIO_2_NOTE: &str = "QEMU only; dom0 on CPU 0, the domU on CPU 1";

/// Why the setups that boot a Linux domU are not run on Bochs.
const LINUX_DOMU_NOT_ON_BOCHS: Option<&str> =
    Some("not run on Bochs: a Linux domU there takes over 10 minutes");

/// A PV I/O setup: `boot`, then `command` (`pvio-test bench ...`) typed at dom0's shell,
/// until its [`PVIO_LINE`].
const fn pvio_setup(
    name: &'static str,
    boot: fn(Emu, &Ctx, &Path) -> Result<Session>,
    command: &'static str,
    qemu_timeout_s: u64,
) -> Setup {
    Setup {
        name,
        until: PVIO_LINE,
        qemu_timeout_s,
        boot,
        command: Some((r"dom0: shell ready", command)),
        not_on_bochs: LINUX_DOMU_NOT_ON_BOCHS,
    }
}

/// `pvio-test bench`'s line: a domU's block and network figures next to dom0's own on
/// the same loop device and its own loopback (tests/linux/pvio-test).
/// Ends the run even when a value is missing (the figure then says so).
const PVIO_LINE: &str = r"pvio-bench: domu_read_kbs=\S* .*";
static FERROVISOR_PVIO: Setup = pvio_setup(
    "ferrovisor + dom0 + PV I/O domU",
    boot_ferrovisor_dom0,
    "pvio-test bench\n",
    600,
);
/// As [`FERROVISOR_PVIO`] on a machine with two CPUs: dom0 pinned to CPU 0
/// (`dom0_cpus=0`), the domU to CPU 1 (`cpus="1"`), so that neither waits for the
/// other's time slice and no I/O request needs a domain switch.
static FERROVISOR_PVIO_2: Setup = pvio_setup(
    "ferrovisor + dom0 + PV I/O domU, 2 CPUs",
    boot_ferrovisor_dom0_2cpus,
    "pvio-test bench 1\n",
    600,
);
/// The references for [`FERROVISOR_PVIO`] and [`FERROVISOR_PVIO_2`]: the same dom0 kernel,
/// initramfs, domU and `pvio-test bench` on Xen 4.17, with Xen's own toolstack, xenstored,
/// xenconsoled and hotplug scripts in dom0 ([`linux::xen_dom0_initramfs`]).
static XEN_PVIO: Setup = pvio_setup(
    "Xen 4.17 + dom0 + PV I/O domU",
    boot_xen_dom0,
    "pvio-test bench\n",
    900,
);
static XEN_PVIO_2: Setup = pvio_setup(
    "Xen 4.17 + dom0 + PV I/O domU, 2 CPUs",
    boot_xen_dom0_2cpus,
    "pvio-test bench 1\n",
    900,
);
/// The same boots as [`FERROVISOR_DOM0`] and [`LINUX_BARE`], timed to `/init`'s first line:
/// the kernel booted, before dom0 loads its Xen drivers and brings up its bridge (work the
/// bare kernel does not do, inside the other pair's figure).
static FERROVISOR_DOM0_INIT: Setup = Setup {
    name: "ferrovisor + Debian dom0, to /init",
    until: linux::INIT_PATTERN,
    qemu_timeout_s: 180,
    boot: boot_ferrovisor_dom0,
    command: None,
    not_on_bochs: None,
};
static LINUX_BARE_INIT: Setup = Setup {
    name: "Debian kernel, bare, to /init",
    until: linux::INIT_PATTERN,
    qemu_timeout_s: 120,
    boot: boot_linux_bare,
    command: None,
    not_on_bochs: None,
};
static LINUX_BARE: Setup = Setup {
    name: "Debian kernel, bare",
    until: linux::BANNER_PATTERN,
    qemu_timeout_s: 120,
    boot: boot_linux_bare,
    command: None,
    not_on_bochs: None,
};
static FERROVISOR_BENCH: Setup = Setup {
    name: "ferrovisor + bench guest",
    until: BENCH_LINE,
    qemu_timeout_s: 120,
    boot: boot_ferrovisor_bench,
    command: None,
    not_on_bochs: None,
};
static XEN_BENCH: Setup = Setup {
    name: "Xen + bench guest",
    until: BENCH_LINE,
    qemu_timeout_s: 180,
    boot: boot_xen_bench,
    command: None,
    not_on_bochs: None,
};
/// ping's last line with `loopback=N`: both medians of one run.
const INTERLEAVED_LINE: &str = r"ping: interdomain median \d+ ns, loopback median \d+ ns";
static FERROVISOR_PINGPONG: Setup = Setup {
    name: "ferrovisor + evtchn ping/pong domains",
    until: INTERLEAVED_LINE,
    qemu_timeout_s: 180,
    boot: boot_ferrovisor_pingpong,
    command: None,
    not_on_bochs: None,
};

/// `xl create` of the example domU (tests/linux/example.cfg: the Debian kernel, its small
/// initramfs, 128 MiB, a disk and a vif), timed by dom0's clock (`/proc/uptime`, 10 ms):
/// `xl create -p` (read the files, decompress the kernel, build the domain, its xenstore
/// nodes and devices), then `xl unpause` until the domU's console log (xenconsoled's,
/// opened anew for each domain) holds its `domU: shell ready` line. The wait looks every
/// 0.2 s with one `grep` and sleeps in the shell itself (`read -t` on a FIFO), so that
/// dom0, sharing the CPU with the booting domU, forks as little as possible. Twice:
/// `cold` is the first create since dom0 booted, `warm` a second one of the same kernel
/// after `xl destroy` (xl's kernel cache, docs/toolstack.md, then skips the
/// decompression).
const CREATE_BENCH: &str = "L=/var/log/xen/console/guest-example.log; \
    F=/tmp/create-bench.fifo; rm -f $F; mkfifo $F; exec 4<>$F; \
    ms() { read u x </proc/uptime; echo $((${u%.*} * 1000 + 1${u#*.}0 - 1000)); }; \
    one() { [ -e $L ] && mv $L $L.old; t0=$(ms); xl create -p /etc/xen/example.cfg >/dev/null 2>&1; t1=$(ms); \
    xl unpause example; i=0; until grep -q 'domU: shell ready' $L 2>/dev/null || [ $i -ge 600 ]; \
    do i=$((i+1)); read -t 0.2 -u 4 z; done; \
    t2=$(ms); [ $i -lt 600 ] && echo \"$1_create_p_ms=$((t1 - t0)) $1_unpause_up_ms=$((t2 - t1)) $1_total_ms=$((t2 - t0))\"; }; \
    c=$(one cold); xl destroy example; \
    for i in $(seq 50); do xl list | grep -q '^example ' || break; sleep 0.2; done; \
    w=$(one warm); echo \"create-bench: $c $w end\"\n";
/// [`CREATE_BENCH`]'s last line (ends the run even when a value is missing).
const CREATE_LINE: &str = r"create-bench: [\w= ]*end";
static FERROVISOR_CREATE: Setup = Setup {
    name: "ferrovisor + dom0 + xl create domU",
    until: CREATE_LINE,
    qemu_timeout_s: 300,
    boot: boot_ferrovisor_dom0,
    command: Some((r"dom0: shell ready", CREATE_BENCH)),
    not_on_bochs: LINUX_DOMU_NOT_ON_BOCHS,
};
/// The example domU's kernel and initramfs booted by QEMU itself (`-kernel`, 128 MiB as
/// the domU has), to its shell: the same kernel decompression (in the guest's boot stub
/// instead of xl) and the same boot, without a hypervisor or toolstack.
static DOMU_BARE: Setup = Setup {
    name: "domU kernel + initramfs, bare",
    until: linux::SHELL_READY_PATTERN,
    qemu_timeout_s: 120,
    boot: boot_domu_bare,
    command: None,
    not_on_bochs: Some("not run on Bochs: its figure is QEMU only"),
};
const COLD_TOTAL: Metric = Metric::Millis(r"cold_total_ms=(\d+)");

const HYPERCALL_NS: Metric = Metric::Nanos(r"hypercall_ns=(\d+)");
/// The median round trips of `tests/guests/evtchn-pingpong`: with pong, and the
/// loopback's in ping's domain, interleaved in the same run.
const INTERDOMAIN_NS: Metric = Metric::Nanos(r"interdomain median (\d+) ns");
const LOOPBACK_NS: Metric = Metric::Nanos(r"loopback median (\d+) ns");

/// The table, in the order printed.
pub static FIGURES: &[Figure] = &[
    Figure {
        name: "boot to dom0 /init",
        subject: Some(Source::Median(&FERROVISOR_DOM0_INIT, Metric::TimeToLine)),
        reference: Some((
            Source::Median(&LINUX_BARE_INIT, Metric::TimeToLine),
            "same kernel, bare",
        )),
        pending: "",
        note: "/init's first line: the kernel booted",
    },
    Figure {
        name: "boot to dom0 userspace",
        subject: Some(Source::Median(&FERROVISOR_DOM0, Metric::TimeToLine)),
        reference: Some((
            Source::Median(&LINUX_BARE, Metric::TimeToLine),
            "same kernel, bare",
        )),
        pending: "",
        note:
            "dom0 has loaded its 14 Xen and bridge modules and set up xenbr0 first; bare loads none",
    },
    Figure {
        name: "hypercall round trip",
        subject: Some(Source::Median(&FERROVISOR_BENCH, HYPERCALL_NS)),
        reference: Some((Source::Median(&XEN_BENCH, HYPERCALL_NS), "Xen 4.17")),
        pending: "",
        note: "",
    },
    Figure {
        name: "trivial exit (CPUID)",
        subject: Some(Source::Median(
            &FERROVISOR_BENCH,
            Metric::Nanos(r"cpuid_ns=(\d+)"),
        )),
        reference: Some((
            Source::Median(&XEN_BENCH, Metric::Nanos(r"cpuid_ns=(\d+)")),
            "Xen 4.17",
        )),
        pending: "",
        note: "",
    },
    // Xen 4.17 cannot start a second domain without its toolstack, so the reference
    // is a loopback in ping's own domain, interleaved with the round trips to pong: the
    // same hypercalls, exits and event delivery, no domain switch.
    Figure {
        name: "evtchn round trip (interdomain)",
        subject: Some(Source::Median(&FERROVISOR_PINGPONG, INTERDOMAIN_NS)),
        reference: Some((
            Source::Median(&FERROVISOR_PINGPONG, LOOPBACK_NS),
            "same steps, loopback in one domain",
        )),
        pending: "",
        note: "",
    },
    // An interdomain round trip = the loopback's steps + two domain switches (ping
    // blocks in hlt -> pong runs; pong blocks in SCHEDOP_poll -> ping runs).
    Figure {
        name: "scheduler context switch",
        subject: Some(Source::HalfDifference {
            setup: &FERROVISOR_PINGPONG,
            a: INTERDOMAIN_NS,
            b: LOOPBACK_NS,
        }),
        reference: Some((
            Source::Median(&FERROVISOR_BENCH, HYPERCALL_NS),
            "ferrovisor null hypercall",
        )),
        pending: "",
        note: "",
    },
    // Issue 9: from `xl create` to the domU's shell, against the same kernel and
    // initramfs booted bare by QEMU; Xen 4.17's figure was measured on this machine kind
    // by hand (xl create of the same domU, 31.2 s median, `xl create -p` 21.3 s), not here.
    Figure {
        name: "create -> domU userspace (cold)",
        subject: Some(Source::Median(&FERROVISOR_CREATE, COLD_TOTAL)),
        reference: Some((
            Source::Median(&DOMU_BARE, Metric::TimeToLine),
            "same domU kernel+initramfs, bare",
        )),
        pending: "",
        note: "Xen 4.17: 31.2 s (measured elsewhere, this machine kind)",
    },
    Figure {
        name: "  of which xl create -p (cold)",
        subject: Some(Source::Median(
            &FERROVISOR_CREATE,
            Metric::Millis(r"cold_create_p_ms=(\d+)"),
        )),
        reference: None,
        pending: "",
        note: "Xen 4.17: 21.3 s (measured elsewhere)",
    },
    Figure {
        name: "  of which unpause -> userspace (cold)",
        subject: Some(Source::Median(
            &FERROVISOR_CREATE,
            Metric::Millis(r"cold_unpause_up_ms=(\d+)"),
        )),
        reference: None,
        pending: "",
        note: "",
    },
    Figure {
        name: "create -> domU userspace (warm)",
        subject: Some(Source::Median(
            &FERROVISOR_CREATE,
            Metric::Millis(r"warm_total_ms=(\d+)"),
        )),
        reference: Some((
            Source::Median(&DOMU_BARE, Metric::TimeToLine),
            "same domU kernel+initramfs, bare",
        )),
        pending: "",
        note: "second create of the same kernel: xl's cache skips decompression",
    },
    Figure {
        name: "  of which xl create -p (warm)",
        subject: Some(Source::Median(
            &FERROVISOR_CREATE,
            Metric::Millis(r"warm_create_p_ms=(\d+)"),
        )),
        reference: None,
        pending: "",
        note: "",
    },
    // PV I/O: a domU through blkfront/netfront and dom0's blkback/netback, against
    // dom0 doing the same on the loop device that backs the domU's disk, and on its
    // own loopback interface. First with dom0 and the domU sharing one CPU, then each on
    // a CPU of its own; Xen 4.17's figures from the same bench follow.
    pvio(
        &FERROVISOR_PVIO,
        "block read, O_DIRECT 1 MiB (xvda)",
        PVIO_READ,
        "",
    ),
    pvio(
        &FERROVISOR_PVIO,
        "block write, O_DIRECT 1 MiB (xvda)",
        PVIO_WRITE,
        "",
    ),
    pvio(&FERROVISOR_PVIO, "iperf3 domU -> dom0", PVIO_TO_DOM0, ""),
    pvio(&FERROVISOR_PVIO, "iperf3 dom0 -> domU", PVIO_FROM_DOM0, ""),
    pvio(
        &FERROVISOR_PVIO,
        "ping round trip domU -> dom0",
        PVIO_PING,
        "",
    ),
    pvio(
        &FERROVISOR_PVIO_2,
        "block read, 2 CPUs",
        PVIO_READ,
        PVIO_2_NOTE,
    ),
    pvio(
        &FERROVISOR_PVIO_2,
        "block write, 2 CPUs",
        PVIO_WRITE,
        PVIO_2_NOTE,
    ),
    pvio(
        &FERROVISOR_PVIO_2,
        "iperf3 domU -> dom0, 2 CPUs",
        PVIO_TO_DOM0,
        PVIO_2_NOTE,
    ),
    pvio(
        &FERROVISOR_PVIO_2,
        "iperf3 dom0 -> domU, 2 CPUs",
        PVIO_FROM_DOM0,
        PVIO_2_NOTE,
    ),
    pvio(
        &FERROVISOR_PVIO_2,
        "ping round trip, 2 CPUs",
        PVIO_PING,
        PVIO_2_NOTE,
    ),
    // The same PV I/O bench on Xen 4.17 (its own toolstack in the same dom0): each block
    // figure as the domU's share of dom0's own on the loop device, next to Xen's share
    // measured the same way; the network figures next to Xen's. Issue 10's targets are
    // twice Xen's block shares and 1.5 times its network throughput.
    share_vs_xen(
        &FERROVISOR_PVIO,
        &XEN_PVIO,
        "block read vs Xen 4.17",
        PVIO_READ,
        "",
    ),
    share_vs_xen(
        &FERROVISOR_PVIO,
        &XEN_PVIO,
        "block write vs Xen 4.17",
        PVIO_WRITE,
        "",
    ),
    vs_xen(
        &FERROVISOR_PVIO,
        &XEN_PVIO,
        "iperf3 domU -> dom0 vs Xen 4.17",
        PVIO_TO_DOM0,
        "",
    ),
    vs_xen(
        &FERROVISOR_PVIO,
        &XEN_PVIO,
        "iperf3 dom0 -> domU vs Xen 4.17",
        PVIO_FROM_DOM0,
        "",
    ),
    vs_xen(
        &FERROVISOR_PVIO,
        &XEN_PVIO,
        "ping domU -> dom0 vs Xen 4.17",
        PVIO_PING,
        "",
    ),
    share_vs_xen(
        &FERROVISOR_PVIO_2,
        &XEN_PVIO_2,
        "block read vs Xen 4.17, 2 CPUs",
        PVIO_READ,
        PVIO_2_NOTE,
    ),
    share_vs_xen(
        &FERROVISOR_PVIO_2,
        &XEN_PVIO_2,
        "block write vs Xen 4.17, 2 CPUs",
        PVIO_WRITE,
        PVIO_2_NOTE,
    ),
    vs_xen(
        &FERROVISOR_PVIO_2,
        &XEN_PVIO_2,
        "iperf3 domU -> dom0 vs Xen 4.17, 2 CPUs",
        PVIO_TO_DOM0,
        PVIO_2_NOTE,
    ),
    vs_xen(
        &FERROVISOR_PVIO_2,
        &XEN_PVIO_2,
        "iperf3 dom0 -> domU vs Xen 4.17, 2 CPUs",
        PVIO_FROM_DOM0,
        PVIO_2_NOTE,
    ),
    vs_xen(
        &FERROVISOR_PVIO_2,
        &XEN_PVIO_2,
        "ping vs Xen 4.17, 2 CPUs",
        PVIO_PING,
        PVIO_2_NOTE,
    ),
    // Issue 11: an event between domains on two CPUs (ping pinned to CPU 0, pong to CPU
    // 1: each send wakes the other CPU by IPI) against the same pair sharing one CPU.
    Figure {
        name: "evtchn round trip, domains on 2 CPUs",
        subject: Some(Source::Median(&FERROVISOR_PINGPONG_SMP, INTERDOMAIN_NS)),
        reference: Some((
            Source::Median(&FERROVISOR_PINGPONG, INTERDOMAIN_NS),
            "same pair on 1 CPU",
        )),
        pending: "",
        note: "QEMU only",
    },
    // Issue 11: the work a CPU-bound domU does per second when two run pinned to two
    // CPUs, against one alone on one CPU (a ratio of 1.0 = N domUs on N CPUs do N times
    // the work; the target is 0.9). Under QEMU TCG this needs the host's cores too.
    Figure {
        name: "CPU-bound domU work rate, 2 domUs on 2 CPUs",
        subject: Some(Source::Median(&FERROVISOR_BURN_2, BURN_RATE)),
        reference: Some((
            Source::Median(&FERROVISOR_BURN_1, BURN_RATE),
            "1 domU on 1 CPU",
        )),
        pending: "",
        note: "QEMU only",
    },
];

/// cpu-burn's work rate line.
const BURN_LINE: &str = r"cpu-burn \w+: \d+ kilo-steps per second of window";
const BURN_RATE: Metric = Metric::Rate(r"(\d+) kilo-steps per second", "ksteps/s");
static FERROVISOR_BURN_1: Setup = Setup {
    name: "ferrovisor + 1 cpu-burn domU, 1 CPU",
    until: BURN_LINE,
    qemu_timeout_s: 120,
    boot: boot_ferrovisor_burn_1,
    command: None,
    not_on_bochs: Some("not run on Bochs: it emulates its CPUs one after the other"),
};
static FERROVISOR_BURN_2: Setup = Setup {
    name: "ferrovisor + 2 cpu-burn domUs, 2 CPUs",
    until: BURN_LINE,
    qemu_timeout_s: 120,
    boot: boot_ferrovisor_burn_2,
    command: None,
    not_on_bochs: Some("not run on Bochs: it emulates its CPUs one after the other"),
};
static FERROVISOR_PINGPONG_SMP: Setup = Setup {
    name: "ferrovisor + evtchn ping/pong domains, 2 CPUs",
    until: INTERLEAVED_LINE,
    qemu_timeout_s: 180,
    boot: boot_ferrovisor_pingpong_smp,
    command: None,
    not_on_bochs: Some("not run on Bochs: it emulates its CPUs one after the other"),
};

// ---------------------------------------------------------------------------
// Booting

/// ferrovisor's command line for dom0 (as `run-qemu` boots it).
const DOM0_CMDLINE: &str = "console=com1 dom0_mem=512M";
/// ferrovisor's command line for the bench guest: the same memory as Xen gives it.
const BENCH_CMDLINE: &str = "console=com1 dom0_mem=64M on_idle=poweroff";
/// ferrovisor's command line for the event-channel guests (as the multi-domain tests).
const EVTCHN_CMDLINE: &str = "console=com1 dom0_mem=32M on_idle=poweroff";

/// QEMU TCG with `-cpu max` (the machine of the tests) and 1 GiB.
fn start_qemu(dir: &Path, boot: qemu::Boot) -> Result<Session> {
    start_qemu_cpus(dir, boot, 1)
}

/// [`start_qemu`] with `cpus` CPUs.
fn start_qemu_cpus(dir: &Path, boot: qemu::Boot, cpus: u32) -> Result<Session> {
    start_qemu_machine(dir, boot, cpus, None, &[])
}

/// [`start_qemu_cpus`] with another CPU model than the tests' (`cpu`) and more machine
/// arguments (`machine`).
fn start_qemu_machine(
    dir: &Path,
    boot: qemu::Boot,
    cpus: u32,
    cpu: Option<&str>,
    machine: &[&str],
) -> Result<Session> {
    prereq::ensure(&[prereq::Need::Qemu, prereq::Need::Grub])?;
    let port = if crate::profile::ENABLED.load(std::sync::atomic::Ordering::SeqCst) {
        Some(crate::profile::free_port()?)
    } else {
        None
    };
    let mut extra: Vec<String> = machine.iter().map(|a| a.to_string()).collect();
    if let Some(p) = port {
        extra.extend(["-gdb".to_string(), format!("tcp:127.0.0.1:{p}")]);
    }
    let mut cmd = qemu::command(&qemu::Config {
        accel: qemu::Accel::Tcg,
        cpu,
        cpus,
        memory: "1G",
        serial: qemu::Serial::Stdio,
        boot_dir: dir,
        boot,
        extra_args: &extra,
    });
    let session = Session::stdio(&mut cmd, dir)?;
    if let Some(port) = port {
        crate::profile::start(port, dir);
    }
    Ok(session)
}

/// A GRUB ISO in `dir` with `kernel` loaded by `loader`.
fn iso(
    dir: &Path,
    kernel: &Path,
    cmdline: &str,
    modules: Vec<Module>,
    loader: Loader,
) -> Result<PathBuf> {
    let output = dir.join("boot.iso");
    // For the record in bench.md.
    std::fs::write(
        dir.join("grub.cfg"),
        image::grub_cfg(cmdline, &modules, loader),
    )?;
    image::build_iso(&image::IsoSpec {
        kernel: kernel.to_path_buf(),
        cmdline: cmdline.to_string(),
        modules,
        loader,
        output: output.clone(),
    })?;
    Ok(output)
}

fn start_bochs(dir: &Path, iso: &Path, megs: u32) -> Result<Session> {
    prereq::ensure(&[prereq::Need::Bochs, prereq::Need::Grub])?;
    let (listener, port) = bochs::com1_listener()?;
    let mut cmd = bochs::prepare(
        dir,
        &bochs::Config {
            iso,
            com1: bochs::Com1::Socket(port),
            log: &dir.join("bochs.log"),
            megs,
        },
    )?;
    Session::bochs(&mut cmd, &listener, dir)
}

/// ferrovisor with `modules`: QEMU `-kernel` (multiboot v1, the way the
/// tests boot it), Bochs GRUB `multiboot2`.
fn start_ferrovisor(
    emu: Emu,
    ctx: &Ctx,
    dir: &Path,
    cmdline: &str,
    modules: Vec<Module>,
    megs: u32,
) -> Result<Session> {
    start_ferrovisor_cpus(emu, ctx, dir, cmdline, modules, megs, 1)
}

/// [`start_ferrovisor`] on a machine with `cpus` CPUs (QEMU only).
fn start_ferrovisor_cpus(
    emu: Emu,
    ctx: &Ctx,
    dir: &Path,
    cmdline: &str,
    modules: Vec<Module>,
    megs: u32,
    cpus: u32,
) -> Result<Session> {
    // For profiling runs: e.g. FERROVISOR_BENCH_CMDLINE=loglvl=debug makes the hypervisor
    // print its performance counters about once a second (see `schedule::stats`).
    let extra = std::env::var("FERROVISOR_BENCH_CMDLINE").unwrap_or_default();
    let cmdline = &if extra.is_empty() {
        cmdline.to_string()
    } else {
        format!("{cmdline} {extra}")
    };
    match emu {
        Emu::QemuTcg => {
            let boot_dir = dir.join("boot");
            qemu::stage_kernel_dir(&boot_dir, &ctx.hypervisor, &modules)?;
            start_qemu_cpus(
                &boot_dir,
                qemu::Boot::Kernel {
                    cmdline,
                    modules: &modules,
                },
                cpus,
            )
        }
        Emu::Bochs => {
            let iso = iso(dir, &ctx.hypervisor, cmdline, modules, Loader::Multiboot2)?;
            start_bochs(dir, &iso, megs)
        }
    }
}

/// Xen 4.17 with the Debian dom0 as a PVH dom0 of one vCPU (pinned: on two CPUs it
/// keeps CPU 0, as ferrovisor's `dom0_cpus=0`), through GRUB `multiboot2` (QEMU only).
/// What Xen needs under QEMU TCG for a PVH dom0 (docs/test-bed.md): an IOMMU on a q35
/// machine, and a CPU without RDTSCP, XSAVE and AVX.
fn start_xen_dom0(emu: Emu, dir: &Path, cpus: u32) -> Result<Session> {
    if emu != Emu::QemuTcg {
        bail!("QEMU only");
    }
    let a = linux::assets()?;
    let mut modules = a.boot_modules();
    modules[1].path = linux::xen_dom0_initramfs()?;
    iso(
        dir,
        &xen::hypervisor()?,
        xen::LINUX_DOM0_CMDLINE,
        modules,
        Loader::Multiboot2,
    )?;
    start_qemu_machine(
        dir,
        qemu::Boot::Iso("boot.iso"),
        cpus,
        Some(xen::QEMU_CPU),
        &["-machine", "q35", "-device", "amd-iommu,intremap=on"],
    )
}

fn boot_xen_dom0(emu: Emu, _ctx: &Ctx, dir: &Path) -> Result<Session> {
    start_xen_dom0(emu, dir, 1)
}

fn boot_xen_dom0_2cpus(emu: Emu, _ctx: &Ctx, dir: &Path) -> Result<Session> {
    start_xen_dom0(emu, dir, 2)
}

fn boot_ferrovisor_dom0(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    let modules = linux::assets()?.boot_modules();
    start_ferrovisor(emu, ctx, dir, DOM0_CMDLINE, modules, 1024)
}

/// dom0 on CPU 0 of a two-CPU machine (QEMU only).
fn boot_ferrovisor_dom0_2cpus(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    let modules = linux::assets()?.boot_modules();
    let cmdline = format!("{DOM0_CMDLINE} dom0_cpus=0");
    start_ferrovisor_cpus(emu, ctx, dir, &cmdline, modules, 1024, 2)
}

/// The kernel without hypervisor, as `dom0-baseline` boots it: QEMU
/// `-kernel` (as ferrovisor), Bochs GRUB `linux` (ferrovisor: GRUB `multiboot2`).
fn boot_linux_bare(emu: Emu, _ctx: &Ctx, dir: &Path) -> Result<Session> {
    let assets = linux::assets()?;
    match emu {
        Emu::QemuTcg => linux::start_qemu(assets, dir),
        Emu::Bochs => linux::start_bochs(assets, dir),
    }
}

/// The example domU's kernel and initramfs under QEMU `-kernel`, with the domU's 128 MiB.
fn boot_domu_bare(emu: Emu, _ctx: &Ctx, dir: &Path) -> Result<Session> {
    if emu != Emu::QemuTcg {
        bail!("QEMU only");
    }
    let assets = linux::assets()?;
    let initramfs = assets.initramfs.with_file_name("domu-initramfs.cpio.gz");
    prereq::ensure(&[prereq::Need::Qemu])?;
    let mut cmd = crate::qemu_build::command();
    cmd.current_dir(dir)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "128M"])
        .args(["-display", "none", "-nic", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&assets.vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", linux::BASELINE_CMDLINE]);
    Session::stdio(&mut cmd, dir)
}

fn bench_guest() -> Result<Vec<Module>> {
    let path = build::build(&[&build::GUEST_BENCH], Profile::Release)?.remove(0);
    Ok(vec![Module {
        path,
        args: "bench".into(),
    }])
}

fn boot_ferrovisor_bench(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    start_ferrovisor(emu, ctx, dir, BENCH_CMDLINE, bench_guest()?, 256)
}

/// Round trips per run of the event-channel guests, and the guests' own time limit (s
/// of system time).
fn evtchn_scale(emu: Emu) -> (u32, u32) {
    match emu {
        Emu::QemuTcg => (2000, 120),
        Emu::Bochs => (500, 600),
    }
}

fn pingpong_guest() -> Result<PathBuf> {
    Ok(build::build(&[&build::GUEST_EVTCHN_PINGPONG], Profile::Release)?.remove(0))
}

/// Domain 0 = `evtchn-pingpong role=ping loopback=100`, domain 1 = a copy (QEMU's
/// `-kernel` boot needs unique module names) as `role=pong`, waiting as in the tests (ping
/// `sti; hlt`, pong `SCHEDOP_poll`).
fn boot_ferrovisor_pingpong(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    boot_pingpong(emu, ctx, dir, 1)
}

/// [`boot_ferrovisor_pingpong`] on two CPUs, ping (dom0) pinned to CPU 0 and pong to 1.
fn boot_ferrovisor_pingpong_smp(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    boot_pingpong(emu, ctx, dir, 2)
}

/// The ping/pong pair on a machine with `cpus` CPUs; with more than one, ping (dom0) is
/// pinned to CPU 0 and pong to CPU 1.
fn boot_pingpong(emu: Emu, ctx: &Ctx, dir: &Path, cpus: u32) -> Result<Session> {
    let (n, timeout) = evtchn_scale(emu);
    let ping = pingpong_guest()?;
    let pong = dir.join("pingpong-b");
    std::fs::copy(&ping, &pong)?;
    let (pong_cpus, cmdline) = if cpus > 1 {
        (",cpus=1", format!("{EVTCHN_CMDLINE} dom0_cpus=0"))
    } else {
        ("", EVTCHN_CMDLINE.to_string())
    };
    let modules = vec![
        Module {
            path: ping,
            args: format!("role=ping peer=1 count={n} timeout={timeout} loopback=100"),
        },
        Module {
            path: pong,
            args: format!(
                "domu:name=pong,mem=16M{pong_cpus} role=pong peer=0 count={n} timeout={timeout}"
            ),
        },
    ];
    start_ferrovisor_cpus(emu, ctx, dir, &cmdline, modules, 256, cpus)
}

/// An idle domain 0 (the reaper) and cpu-burn domUs, one per entry of `cpus` (pinned
/// there), on a machine with `machine_cpus` CPUs; each measures a 5 s window.
fn boot_burners(
    emu: Emu,
    ctx: &Ctx,
    dir: &Path,
    cpus: &[u32],
    machine_cpus: u32,
) -> Result<Session> {
    let built = build::build(
        &[&build::GUEST_REAPER, &build::GUEST_CPU_BURN],
        Profile::Release,
    )?;
    let ids: Vec<String> = (1..=cpus.len()).map(|i| i.to_string()).collect();
    let mut modules = vec![Module {
        path: built[0].clone(),
        args: format!(
            "await={} alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms=500 timeout=120",
            ids.join(",")
        ),
    }];
    for (i, cpu) in cpus.iter().enumerate() {
        // QEMU's -kernel boot needs unique module names.
        let path = dir.join(format!("cpu-burn-{i}"));
        std::fs::copy(&built[1], &path)?;
        modules.push(Module {
            path,
            args: format!("domu:name=burn{i},mem=16M,cpus={cpu} label=burn{i} from_ms=3000 secs=5"),
        });
    }
    start_ferrovisor_cpus(emu, ctx, dir, EVTCHN_CMDLINE, modules, 256, machine_cpus)
}

fn boot_ferrovisor_burn_1(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    boot_burners(emu, ctx, dir, &[0], 1)
}

fn boot_ferrovisor_burn_2(emu: Emu, ctx: &Ctx, dir: &Path) -> Result<Session> {
    boot_burners(emu, ctx, dir, &[0, 1], 2)
}

/// Xen with the bench guest as its PVH dom0, through GRUB: `multiboot2` on
/// QEMU; on Bochs `multiboot` (v1), because GRUB's `multiboot2` triple-faults
/// there setting the video mode Xen's header asks for (docs/test-bed.md).
fn boot_xen_bench(emu: Emu, _ctx: &Ctx, dir: &Path) -> Result<Session> {
    let xen = xen::hypervisor()?;
    let modules = bench_guest()?;
    match emu {
        Emu::QemuTcg => {
            iso(
                dir,
                &xen,
                xen::GUEST_DOM0_CMDLINE,
                modules,
                Loader::Multiboot2,
            )?;
            start_qemu(dir, qemu::Boot::Iso("boot.iso"))
        }
        Emu::Bochs => {
            let iso = iso(
                dir,
                &xen,
                xen::GUEST_DOM0_CMDLINE,
                modules,
                Loader::Multiboot,
            )?;
            start_bochs(dir, &iso, 256)
        }
    }
}

// ---------------------------------------------------------------------------
// Measuring

/// What one run gave: the time to the `until` line and the line itself.
#[derive(Clone, Debug)]
pub struct Sample {
    pub secs: f64,
    pub line: String,
}

/// Runs of each (emulator, setup): samples, or why the setup failed (it is
/// not run again after a failure).
type Runs = HashMap<(Emu, &'static str), Result<Vec<Sample>, String>>;

fn run_once(emu: Emu, setup: &Setup, ctx: &Ctx, dir: &Path) -> Result<(Sample, String)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut session = (setup.boot)(emu, ctx, dir)?;
    let timeout = match emu {
        Emu::QemuTcg => setup.qemu_timeout_s,
        Emu::Bochs => setup.qemu_timeout_s * 10,
    };
    if let Some((when, text)) = setup.command {
        session
            .wait_for(when, Duration::from_secs(timeout))
            .and_then(|_| session.send_text(text))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e:#} (console: {})",
                    util::display_rel(&dir.join("console.log"))
                )
            })?;
    }
    let found = session.wait_for(setup.until, Duration::from_secs(timeout));
    let secs = session.start.elapsed().as_secs_f64();
    session.stop();
    crate::profile::finish(dir, &ctx.hypervisor)?;
    let groups = found.map_err(|e| {
        anyhow::anyhow!(
            "{e:#} (console: {})",
            util::display_rel(&dir.join("console.log"))
        )
    })?;
    Ok((
        Sample {
            secs,
            line: groups[0].clone(),
        },
        session.command.clone(),
    ))
}

/// The setups the figures need, in first-use order.
fn setups(figures: &[&'static Figure]) -> Vec<&'static Setup> {
    let mut out: Vec<&'static Setup> = Vec::new();
    for f in figures {
        let sources = f.subject.into_iter().chain(f.reference.map(|r| r.0));
        for s in sources.map(Source::setup) {
            if !out.iter().any(|o| std::ptr::eq(*o, s)) {
                out.push(s);
            }
        }
    }
    out
}

/// Runs every setup `runs` times, alternating; returns the samples and each
/// setup's command line.
fn measure(
    emu: Emu,
    setups: &[&'static Setup],
    runs: u32,
    ctx: &Ctx,
    all: &mut Runs,
    commands: &mut Vec<String>,
) {
    for i in 1..=runs {
        for setup in setups {
            if let (Emu::Bochs, Some(why)) = (emu, setup.not_on_bochs) {
                all.insert((emu, setup.name), Err(why.to_string()));
                continue;
            }
            let entry = all.entry((emu, setup.name)).or_insert(Ok(Vec::new()));
            let Ok(samples) = entry else { continue };
            let dir = util::xtask_dir()
                .join("bench")
                .join(emu.name())
                .join(slug(setup.name));
            eprintln!(
                "xtask: bench {} / {}: run {i} of {runs}",
                emu.name(),
                setup.name
            );
            match run_once(emu, setup, ctx, &dir) {
                Ok((sample, command)) => {
                    eprintln!("xtask: {:.1} s: {}", sample.secs, sample.line.trim());
                    if i == 1 {
                        let mut text = format!("{} / {}: `{command}`", emu.name(), setup.name);
                        if let Ok(cfg) = std::fs::read_to_string(dir.join("grub.cfg")) {
                            let boot = cfg
                                .lines()
                                .filter(|l| l.starts_with("    ") && l.trim() != "boot");
                            for line in boot {
                                let _ = write!(text, "\n  - `{}`", line.trim());
                            }
                        }
                        commands.push(text);
                    }
                    samples.push(sample);
                }
                Err(e) => {
                    eprintln!("xtask: bench {} / {} failed: {e:#}", emu.name(), setup.name);
                    *entry = Err(format!("{e:#}"));
                }
            }
        }
    }
}

/// A directory name for a setup: `ferrovisor + bench guest` -> `ferrovisor-bench-guest`.
fn slug(name: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("-")
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A figure's value in one sample: seconds, or nanoseconds from the line.
pub fn value(metric: Metric, sample: &Sample) -> Option<f64> {
    match metric {
        Metric::TimeToLine => Some(sample.secs),
        Metric::Nanos(pattern) | Metric::Rate(pattern, _) => capture(pattern, &sample.line),
        Metric::Millis(pattern) => capture(pattern, &sample.line).map(|ms| ms / 1000.0),
        Metric::Ratio => None,
    }
}

/// Capture group 1 of `pattern` in `line`, as a number.
fn capture(pattern: &str, line: &str) -> Option<f64> {
    Regex::new(pattern)
        .ok()?
        .captures(line)?
        .get(1)?
        .as_str()
        .parse()
        .ok()
}

/// `10.1 s`, `1.23 µs`, `567 ns`.
pub fn format_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::TimeToLine | Metric::Millis(_) => format!("{v:.1} s"),
        Metric::Nanos(_) if v >= 1e6 => format!("{:.2} ms", v / 1e6),
        Metric::Nanos(_) if v >= 1e3 => format!("{:.2} µs", v / 1e3),
        Metric::Nanos(_) => format!("{v:.0} ns"),
        Metric::Rate(_, unit) => format!("{v:.1} {unit}"),
        Metric::Ratio => format!("{v:.2}× of dom0"),
    }
}

/// One printed row.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub figure: String,
    pub emulator: String,
    pub ferrovisor: String,
    pub reference: String,
    pub ratio: String,
    pub note: String,
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    line.char_indices()
        .nth(60)
        .map_or(line, |(i, _)| &line[..i])
}

fn row(f: &Figure, emu: Emu, runs: &Runs) -> Row {
    let (ours, ours_text) = match f.subject {
        None => (None, format!("pending: needs {}", f.pending)),
        Some(s) => match s.value(emu, runs) {
            Ok(v) => (Some(v), format_value(s.metric(), v)),
            Err(why) => (None, format!("failed: {}", first_line(&why))),
        },
    };
    let (theirs, theirs_text) = match f.reference {
        None => (None, "-".to_string()),
        Some((s, what)) => match s.value(emu, runs) {
            Ok(v) => (Some(v), format!("{} ({what})", format_value(s.metric(), v))),
            Err(why) => (None, format!("no reference ({what}: {})", first_line(&why))),
        },
    };
    let ratio = match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    };
    Row {
        figure: f.name.into(),
        emulator: emu.name().into(),
        ferrovisor: ours_text,
        reference: theirs_text,
        ratio,
        note: f.note.into(),
    }
}

/// The plain-text table.
pub fn render(rows: &[Row]) -> String {
    let header = Row {
        figure: "figure".into(),
        emulator: "emulator".into(),
        ferrovisor: "ferrovisor".into(),
        reference: "reference (what)".into(),
        ratio: "ratio".into(),
        note: "notes".into(),
    };
    let width = |f: fn(&Row) -> &String| {
        std::iter::once(&header)
            .chain(rows)
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let w = [
        width(|r| &r.figure),
        width(|r| &r.emulator),
        width(|r| &r.ferrovisor),
        width(|r| &r.reference),
        width(|r| &r.ratio),
    ];
    let notes = rows.iter().any(|r| !r.note.is_empty());
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows) {
        let line = format!(
            "{:<a$}  {:<b$}  {:<c$}  {:<d$}  {:<e$}  {}",
            r.figure,
            r.emulator,
            r.ferrovisor,
            r.reference,
            r.ratio,
            if notes { r.note.as_str() } else { "" },
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `cargo xtask bench` options.
pub struct Options {
    /// Runs per setup; default 5 (QEMU) / 3 (Bochs).
    pub runs: Option<u32>,
    pub skip_bochs: bool,
    pub skip_qemu: bool,
    /// Only figures whose name contains this (or one of several, comma-separated).
    pub filter: Option<String>,
    /// Boot this ELF instead of building the hypervisor.
    pub kernel: Option<PathBuf>,
    /// Sample every vCPU through QEMU's gdbstub (`profile.rs`).
    pub profile: bool,
}

/// The figures `--filter` selects: the one whose whole name it is (names may contain a
/// comma), else those whose name contains one of its comma-separated parts.
fn chosen(filter: Option<&str>) -> Vec<&'static Figure> {
    let Some(filter) = filter else {
        return FIGURES.iter().collect();
    };
    match FIGURES.iter().find(|f| f.name == filter.trim()) {
        Some(f) => vec![f],
        None => FIGURES
            .iter()
            .filter(|f| selected(filter, f.name))
            .collect(),
    }
}

/// Whether the figure `name` contains one of the comma-separated parts of `filter`
/// (empty parts are ignored).
pub fn selected(filter: &str, name: &str) -> bool {
    filter
        .split(',')
        .map(str::trim)
        .any(|part| !part.is_empty() && name.contains(part))
}

pub fn run(opts: &Options) -> Result<ExitCode> {
    let figures = chosen(opts.filter.as_deref());
    if figures.is_empty() {
        bail!("no figure matches --filter");
    }
    prereq::ensure(&[prereq::Need::RustTargets])?;
    crate::profile::ENABLED.store(opts.profile, std::sync::atomic::Ordering::SeqCst);
    let hypervisor = match &opts.kernel {
        Some(path) => path.clone(),
        None => build::hypervisor(Profile::Release)?,
    };
    let ctx = Ctx { hypervisor };
    let mut emulators = Vec::new();
    if !opts.skip_qemu {
        emulators.push((Emu::QemuTcg, opts.runs.unwrap_or(5)));
    }
    if !opts.skip_bochs {
        emulators.push((Emu::Bochs, opts.runs.unwrap_or(3)));
    }
    let mut runs = Runs::new();
    let mut commands = Vec::new();
    for &(emu, n) in &emulators {
        measure(emu, &setups(&figures), n, &ctx, &mut runs, &mut commands);
    }
    let rows: Vec<Row> = emulators
        .iter()
        .flat_map(|&(emu, _)| figures.iter().map(move |f| (f, emu)))
        .map(|(f, emu)| row(f, emu, &runs))
        .collect();
    let table = render(&rows);
    print!("\n{table}");

    let mut md = String::from("# `cargo xtask bench`\n\n");
    let runs_text: Vec<String> = emulators
        .iter()
        .map(|(e, n)| format!("{} {n} runs", e.name()))
        .collect();
    let _ = writeln!(
        md,
        "Medians of alternating runs ({}); ratio = ferrovisor / reference. Boot times are \
         host seconds from emulator start to the line; guest figures are the guest's TSC \
         converted with its pvclock rate (on Bochs: emulated time, `ips` per second).\n\n\
         ```\n{table}```\n\nCommands (first run of each setup; GRUB lines where GRUB boots):\n",
        runs_text.join(", ")
    );
    for c in &commands {
        let _ = writeln!(md, "- {c}");
    }
    let path = util::xtask_dir().join("bench.md");
    util::create_parent(&path)?;
    std::fs::write(&path, md)?;
    println!("\nwrote {}", util::display_rel(&path));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figure named `name`.
    fn fig(name: &str) -> &'static Figure {
        FIGURES.iter().find(|f| f.name == name).unwrap()
    }

    fn sample(secs: f64, line: &str) -> Sample {
        Sample {
            secs,
            line: line.into(),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn values_come_from_both_hypervisors_lines() {
        let ours = "(d0) bench: hypercall_ns=19084 cpuid_ns=18290 hypercall_cycles=49787 cpuid_cycles=47715 tsc_khz=2608730";
        let xen = "bench: hypercall_ns=533669 cpuid_ns=428238 hypercall_cycles=1385483";
        let until = Regex::new(BENCH_LINE).unwrap();
        assert!(until.is_match(ours) && until.is_match(xen));
        let hc = fig("hypercall round trip").subject.unwrap().metric();
        let cpuid = fig("trivial exit (CPUID)").reference.unwrap().0.metric();
        assert_eq!(value(hc, &sample(1.0, ours)), Some(19084.0));
        assert_eq!(value(cpuid, &sample(1.0, xen)), Some(428238.0));
        assert_eq!(value(Metric::TimeToLine, &sample(9.4, ours)), Some(9.4));
        assert_eq!(value(hc, &sample(1.0, "nothing")), None);
    }

    #[test]
    fn rows_show_ratio_pending_and_missing_reference() {
        let mut runs = Runs::new();
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_BENCH.name),
            Ok(vec![
                sample(1.0, "bench: hypercall_ns=1000 cpuid_ns=500 x"),
                sample(1.0, "bench: hypercall_ns=1300 cpuid_ns=600 x"),
                sample(1.0, "bench: hypercall_ns=1200 cpuid_ns=700 x"),
            ]),
        );
        runs.insert(
            (Emu::QemuTcg, XEN_BENCH.name),
            Ok(vec![sample(
                1.0,
                "bench: hypercall_ns=2400 cpuid_ns=1000 x",
            )]),
        );
        runs.insert(
            (Emu::Bochs, XEN_BENCH.name),
            Err("Bochs stopped: triple fault".into()),
        );
        let r = row(fig("hypercall round trip"), Emu::QemuTcg, &runs);
        assert_eq!(r.ferrovisor, "1.20 µs");
        assert_eq!(r.reference, "2.40 µs (Xen 4.17)");
        assert_eq!(r.ratio, "0.50×");
        let r = row(fig("hypercall round trip"), Emu::Bochs, &runs);
        assert_eq!(r.ferrovisor, "failed: not run");
        assert_eq!(
            r.reference,
            "no reference (Xen 4.17: Bochs stopped: triple fault)"
        );
        assert_eq!(r.ratio, "-");
        let pending = Figure {
            name: "later",
            subject: None,
            reference: None,
            pending: "multi-domain",
            note: "",
        };
        let r = row(&pending, Emu::QemuTcg, &runs);
        assert_eq!(r.ferrovisor, "pending: needs multi-domain");
        assert_eq!(r.reference, "-");
        let table = render(&[r]);
        assert!(table.starts_with("figure "));
        assert_eq!(table.lines().count(), 2);
    }

    /// A `pvio-test bench` line with these block figures (KiB/s) and network ones.
    fn pvio_line(domu: (u32, u32), dom0: (u32, u32), up: u32) -> Sample {
        sample(
            1.0,
            &format!(
                "pvio-bench: domu_read_kbs={} domu_write_kbs={} dom0_read_kbs={} \
                 dom0_write_kbs={} domu_to_dom0_mbps={up} dom0_to_domu_mbps=1 \
                 dom0_loopback_mbps=2 domu_ping_ns=3 dom0_ping_ns=4",
                domu.0, domu.1, dom0.0, dom0.1
            ),
        )
    }

    /// Block figures against Xen are each run's domU / dom0 share, their median set
    /// against Xen's; network figures the domU's own against Xen's domU's.
    #[test]
    fn pvio_figures_against_xen() {
        let mut runs = Runs::new();
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_PVIO_2.name),
            Ok(vec![
                // Shares of 0.5, 0.4 and 0.2: the median share is 0.4, which the
                // ratio of the medians (400 / 800 = 0.5) is not.
                pvio_line((500, 400), (1000, 1000), 900),
                pvio_line((400, 400), (1000, 800), 1000),
                pvio_line((300, 400), (1500, 400), 800),
            ]),
        );
        runs.insert(
            (Emu::QemuTcg, XEN_PVIO_2.name),
            Ok(vec![pvio_line((100, 40), (500, 100), 200)]),
        );
        let r = row(fig("block read vs Xen 4.17, 2 CPUs"), Emu::QemuTcg, &runs);
        assert_eq!(r.ferrovisor, "0.40× of dom0");
        assert_eq!(r.reference, "0.20× of dom0 (Xen 4.17)");
        assert_eq!(r.ratio, "2.00×");
        let r = row(fig("block write vs Xen 4.17, 2 CPUs"), Emu::QemuTcg, &runs);
        assert_eq!(r.ferrovisor, "0.50× of dom0");
        assert_eq!(r.reference, "0.40× of dom0 (Xen 4.17)");
        let r = row(
            fig("iperf3 domU -> dom0 vs Xen 4.17, 2 CPUs"),
            Emu::QemuTcg,
            &runs,
        );
        assert_eq!(r.ferrovisor, "900.0 Mbit/s");
        assert_eq!(r.reference, "200.0 Mbit/s (Xen 4.17)");
        assert_eq!(r.ratio, "4.50×");
        // A run without dom0's figure gives no share rather than a division by zero.
        runs.insert(
            (Emu::QemuTcg, XEN_PVIO_2.name),
            Ok(vec![pvio_line((100, 40), (0, 0), 200)]),
        );
        let r = row(fig("block read vs Xen 4.17, 2 CPUs"), Emu::QemuTcg, &runs);
        assert_eq!(
            r.reference,
            "no reference (Xen 4.17: no value in the output)"
        );
        assert_eq!(r.ratio, "-");
        assert_eq!(ratio(1.0, 0.0), None);
    }

    /// ping's last line with `loopback=100` (QEMU, 2000 round trips).
    const INTERLEAVED: &str = "(d0) ping: interdomain median 254177 ns, loopback median 179398 ns (interleaved in blocks of 100)";

    fn interleaved(inter: u32, lo: u32) -> Sample {
        sample(
            1.0,
            &format!("ping: interdomain median {inter} ns, loopback median {lo} ns (x)"),
        )
    }

    #[test]
    fn round_trips_come_from_pings_last_line() {
        let until = Regex::new(INTERLEAVED_LINE).unwrap();
        assert!(until.is_match(INTERLEAVED));
        for other in [
            "(d0) ping: mean round trip 273983 ns (min 129986 ns, median 254177 ns, max 1742001 ns)",
            "(d0) loopback: mean round trip 192441 ns (min 95185 ns, median 179398 ns, max 1194514 ns)",
            "(d1) pong: mean round trip 459355 ns (min 130154 ns, median 256820 ns, max 31175117 ns)",
        ] {
            assert!(!until.is_match(other), "{other}");
        }
        let s = sample(1.0, INTERLEAVED);
        assert_eq!(value(INTERDOMAIN_NS, &s), Some(254_177.0));
        assert_eq!(value(LOOPBACK_NS, &s), Some(179_398.0));
        let switch = fig("scheduler context switch").subject.unwrap();
        assert_eq!(switch.sample_value(&s), Some((254_177.0 - 179_398.0) / 2.0));
        assert_eq!(switch.sample_value(&interleaved(100, 100)), None);
    }

    /// CREATE_BENCH's line as dom0 prints it: seconds from milliseconds, the bare boot as
    /// the reference, Xen's figure only in the notes, and a missing warm value is missing.
    #[test]
    fn create_figures_come_from_dom0s_line() {
        let line = "(d0) create-bench: cold_create_p_ms=6120 cold_unpause_up_ms=7340 \
                    cold_total_ms=13460 warm_create_p_ms=1210 warm_unpause_up_ms=7000 \
                    warm_total_ms=8210 end";
        assert!(Regex::new(CREATE_LINE).unwrap().is_match(line));
        // The echo of the typed command does not end the run.
        let echo = format!("dom0# {}", CREATE_BENCH.trim_end());
        assert!(!Regex::new(CREATE_LINE).unwrap().is_match(&echo));
        let cold = FIGURES
            .iter()
            .find(|f| f.name == "create -> domU userspace (cold)");
        let cold = cold.expect("the cold create figure");
        let mut runs = Runs::new();
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_CREATE.name),
            Ok(vec![
                sample(60.0, line),
                sample(60.0, "create-bench: cold_total_ms=15000 end"),
                sample(60.0, "create-bench:  end"),
            ]),
        );
        runs.insert(
            (Emu::QemuTcg, DOMU_BARE.name),
            Ok(vec![sample(7.0, "dom0: shell ready on /dev/ttyS0")]),
        );
        let r = row(cold, Emu::QemuTcg, &runs);
        // Median of 13.46 and 15.0 (the run without a value does not count).
        assert_eq!(r.ferrovisor, "14.2 s");
        assert_eq!(r.reference, "7.0 s (same domU kernel+initramfs, bare)");
        assert_eq!(r.ratio, "2.03×");
        assert!(r.note.contains("31.2 s") && r.note.contains("elsewhere"));
        let warm = FIGURES
            .iter()
            .find(|f| f.name == "  of which xl create -p (warm)");
        let r = row(warm.unwrap(), Emu::QemuTcg, &runs);
        assert_eq!(r.ferrovisor, "1.2 s");
        assert_eq!(r.reference, "-");
        // The notes column appears once a row has a note.
        assert!(!render(&[r]).contains("notes"));
        let rows = [row(cold, Emu::QemuTcg, &runs)];
        assert!(render(&rows).lines().next().unwrap().ends_with("notes"));
    }

    /// CREATE_BENCH run by busybox's sh against a fake `xl` whose `create -p` takes 0.5 s
    /// and starts the console log (as xenconsoled does), and whose domU writes its `shell
    /// ready` line 1 s after `unpause`: both creates
    /// are timed from dom0's clock, unpause -> shell is about 1 s, not 0 (a `grep -c` that
    /// printed two lines once ended the wait at once). Skipped without /bin/busybox.
    #[test]
    fn create_bench_command_waits_for_the_shell() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-create-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let log = dir.join("guest-example.log");
        let xl = format!(
            "#!/bin/sh\nL={}\ncase \"$1\" in\ncreate) sleep 0.5; echo booting >> $L ;;\n\
             unpause) (sleep 1; echo 'domU: shell ready on /dev/hvc0' >> $L) & ;;\nesac\n",
            log.display()
        );
        let xl_path = dir.join("bin/xl");
        std::fs::write(&xl_path, xl).unwrap();
        std::fs::set_permissions(
            &xl_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let script = CREATE_BENCH
            .replace(
                "/var/log/xen/console/guest-example.log",
                &log.display().to_string(),
            )
            .replace(
                "/tmp/create-bench.fifo",
                &dir.join("fifo").display().to_string(),
            );
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = std::process::Command::new(busybox)
            .args(["sh", "-c", &script])
            .env("PATH", path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = std::fs::remove_dir_all(&dir);
        let line = text.lines().find(|l| l.starts_with("create-bench:"));
        let line = line.unwrap_or_else(|| panic!("no line in {text:?}"));
        assert!(Regex::new(CREATE_LINE).unwrap().is_match(line), "{line}");
        let s = sample(1.0, line);
        for (what, lo, hi) in [
            ("cold_create_p_ms", 0.4, 1.5),
            ("cold_unpause_up_ms", 0.9, 2.5),
            ("cold_total_ms", 1.3, 4.0),
            ("warm_unpause_up_ms", 0.9, 2.5),
        ] {
            let pattern: &'static str = leak_pattern(what);
            let v =
                value(Metric::Millis(pattern), &s).unwrap_or_else(|| panic!("{what} in {line}"));
            assert!(v >= lo && v <= hi, "{what} = {v} s in {line}");
        }
    }

    fn leak_pattern(name: &str) -> &'static str {
        Box::leak(format!(r"{name}=(\d+)").into_boxed_str())
    }

    #[test]
    fn half_differences() {
        assert_eq!(half_difference(300.0, 100.0), Some(100.0));
        assert_eq!(half_difference(100.0, 100.0), None);
        assert_eq!(half_difference(90.0, 100.0), None);
    }

    #[test]
    fn context_switch_is_the_median_of_each_runs_half_difference() {
        let mut runs = Runs::new();
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_PINGPONG.name),
            // Host load moves both numbers of a run together.
            Ok(vec![
                interleaved(400_000, 200_000),
                interleaved(300_000, 150_000),
                interleaved(600_000, 500_000),
            ]),
        );
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_BENCH.name),
            Ok(vec![sample(1.0, "bench: hypercall_ns=25000 cpuid_ns=1 x")]),
        );
        let inter = row(fig("evtchn round trip (interdomain)"), Emu::QemuTcg, &runs);
        assert_eq!(inter.figure, "evtchn round trip (interdomain)");
        assert_eq!(inter.ferrovisor, "400.00 µs");
        assert_eq!(
            inter.reference,
            "200.00 µs (same steps, loopback in one domain)"
        );
        assert_eq!(inter.ratio, "2.00×");
        let switch = row(fig("scheduler context switch"), Emu::QemuTcg, &runs);
        assert_eq!(switch.figure, "scheduler context switch");
        // Per run: 100, 75, 50 µs; the median is 75 µs = 3 hypercalls of 25 µs (the
        // difference of the medians would say 100 µs).
        assert_eq!(switch.ferrovisor, "75.00 µs");
        assert_eq!(switch.reference, "25.00 µs (ferrovisor null hypercall)");
        assert_eq!(switch.ratio, "3.00×");
        runs.insert(
            (Emu::QemuTcg, FERROVISOR_PINGPONG.name),
            Err("timed out".into()),
        );
        let switch = row(fig("scheduler context switch"), Emu::QemuTcg, &runs);
        assert_eq!(switch.ferrovisor, "failed: timed out");
        assert_eq!(switch.ratio, "-");
    }

    #[test]
    fn filters() {
        assert!(selected("hypercall", "hypercall round trip"));
        assert!(!selected("hypercall", "trivial exit (CPUID)"));
        let both: Vec<&str> = FIGURES
            .iter()
            .map(|f| f.name)
            .filter(|n| selected("interdomain, context switch", n))
            .collect();
        assert_eq!(
            both,
            [
                "evtchn round trip (interdomain)",
                "scheduler context switch"
            ]
        );
        assert!(!selected(",", "hypercall round trip"));
        let one: Vec<&str> = chosen(Some("block write, 2 CPUs"))
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(one, ["block write, 2 CPUs"]);
        assert!(chosen(Some("block write, 2")).len() > 1);
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("ferrovisor + bench guest"), "ferrovisor-bench-guest");
        assert_eq!(slug("Debian kernel, bare"), "debian-kernel-bare");
    }

    #[test]
    fn formats() {
        assert_eq!(format_value(Metric::TimeToLine, 10.06), "10.1 s");
        assert_eq!(format_value(Metric::Nanos(""), 567.0), "567 ns");
        assert_eq!(format_value(Metric::Nanos(""), 1234.0), "1.23 µs");
        assert_eq!(format_value(Metric::Nanos(""), 533_669.0), "533.67 µs");
        assert_eq!(format_value(Metric::Nanos(""), 2_500_000.0), "2.50 ms");
        assert_eq!(
            format_value(Metric::Rate("", "Mbit/s"), 147.04),
            "147.0 Mbit/s"
        );
    }

    #[test]
    fn setups_are_shared_between_figures() {
        let all: Vec<&'static Figure> = FIGURES.iter().collect();
        let names: Vec<&str> = setups(&all).iter().map(|s| s.name).collect();
        let switch: Vec<&'static Figure> = vec![fig("scheduler context switch")];
        let only: Vec<&str> = setups(&switch).iter().map(|s| s.name).collect();
        assert_eq!(only, [FERROVISOR_PINGPONG.name, FERROVISOR_BENCH.name]);
        assert_eq!(
            names,
            [
                FERROVISOR_DOM0_INIT.name,
                LINUX_BARE_INIT.name,
                FERROVISOR_DOM0.name,
                LINUX_BARE.name,
                FERROVISOR_BENCH.name,
                XEN_BENCH.name,
                FERROVISOR_PINGPONG.name,
                FERROVISOR_CREATE.name,
                DOMU_BARE.name,
                FERROVISOR_PVIO.name,
                FERROVISOR_PVIO_2.name,
                XEN_PVIO.name,
                XEN_PVIO_2.name,
                FERROVISOR_PINGPONG_SMP.name,
                FERROVISOR_BURN_2.name,
                FERROVISOR_BURN_1.name,
            ]
        );
    }
}
