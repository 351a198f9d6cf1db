//! The hypervisor command line, parsed into typed options.
//!
//! Syntax follows Xen: whitespace-separated `name=value` pairs and bare boolean flags
//! (`noreboot`, or `name=yes|no|on|off|true|false|1|0`). A leading word that looks like
//! the image path or name (loaders prepend it) is skipped. Every problem (an unknown option, a value
//! that does not parse) is returned as a [`Diagnostic`] and the option keeps its default:
//! the hypervisor reports these on the console and boots on.

use arrayvec::ArrayVec;
use core::fmt;

/// Most diagnostics kept; any further ones are counted in [`Parsed::dropped`].
pub const MAX_DIAGNOSTICS: usize = 16;

/// Console verbosity, as Xen's `loglvl=` (plus `debug`/`trace` spelled out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "error" | "err" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" | "all" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// Where console output goes. Several may be on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consoles {
    /// The first 16550 UART at I/O port 0x3f8.
    pub com1: bool,
    /// Port 0xE9, which Bochs (`port_e9_hack`) and QEMU (`-debugcon`) print unbuffered.
    pub e9: bool,
}

impl Consoles {
    fn parse(v: &str) -> Option<Self> {
        let mut c = Consoles {
            com1: false,
            e9: false,
        };
        for part in v.split(',') {
            match part {
                "com1" => c.com1 = true,
                "e9" | "dbgp" => c.e9 = true,
                "none" => {}
                _ => return None,
            }
        }
        Some(c)
    }
}

/// What the hypervisor does once nothing is left to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleAction {
    /// Stop the CPU and wait forever (the default, as on real hardware with no domains).
    Halt,
    /// Power the machine off; emulators exit (used by the test harness).
    Poweroff,
}

/// Which virtualization backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Whatever the CPU offers (VMX on Intel, SVM on AMD).
    Auto,
    Vmx,
    Svm,
}

/// A deliberate fault at the end of boot, to exercise the fatal-error reports (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    None,
    /// Write through a null pointer: a page fault (nothing is mapped at 0).
    PageFault,
    /// A Rust panic.
    Panic,
    /// Unbounded recursion into the boot stack's guard page: a double fault on the IST stack.
    StackOverflow,
}

/// Every hypervisor option, with its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `loglvl=` (default `info`).
    pub loglvl: LogLevel,
    /// `console=com1[,e9]` (default `com1`).
    pub console: Consoles,
    /// `dom0_mem=` in bytes, e.g. `512M`, `2G`, `65536K` (default: decided at dom0 build).
    pub dom0_mem: Option<u64>,
    /// `noreboot`: after a fatal error, halt instead of rebooting.
    pub noreboot: bool,
    /// `on_idle=halt|poweroff` (default `halt`).
    pub on_idle: IdleAction,
    /// `hvm=auto|vmx|svm` (default `auto`).
    pub hvm: BackendChoice,
    /// `selftest=none|page-fault|panic|stack-overflow` (default `none`).
    pub selftest: SelfTest,
    /// `dom0_max_vcpus=N`: vCPUs of dom0 (default 1).
    pub dom0_max_vcpus: u32,
    /// `dom0_cpus=N|A-B`: the physical CPUs dom0's vCPUs may run on (bit mask; 0 = any).
    pub dom0_cpus: u64,
    /// `maxcpus=N`: start at most N physical CPUs, the boot CPU included (default: every
    /// CPU the firmware lists, up to the per-CPU table's size).
    pub maxcpus: Option<u32>,
    /// `sched_ratelimit_us=N` (Xen's option): the least time a vCPU runs before a woken
    /// vCPU may preempt it, in µs; 0 turns the limit off (default 1000, as Xen).
    pub sched_ratelimit_us: u32,
}

/// Xen's default for `sched_ratelimit_us` and its bounds (XEN_SYSCTL_SCHED_RATELIMIT_MIN
/// and _MAX); 0 is also accepted and turns the rate limit off.
const SCHED_RATELIMIT_US_DEFAULT: u32 = 1000;
const SCHED_RATELIMIT_US_RANGE: core::ops::RangeInclusive<u32> = 100..=500_000;

impl Default for Options {
    fn default() -> Self {
        Options {
            loglvl: LogLevel::Info,
            console: Consoles {
                com1: true,
                e9: false,
            },
            dom0_mem: None,
            noreboot: false,
            on_idle: IdleAction::Halt,
            hvm: BackendChoice::Auto,
            selftest: SelfTest::None,
            dom0_max_vcpus: 1,
            dom0_cpus: 0,
            maxcpus: None,
            sched_ratelimit_us: SCHED_RATELIMIT_US_DEFAULT,
        }
    }
}

/// One problem found on the command line. The option it names keeps its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diagnostic<'a> {
    /// No option has this name.
    UnknownOption { name: &'a str },
    /// The option exists but the value does not parse.
    BadValue {
        name: &'a str,
        value: &'a str,
        expected: &'static str,
    },
    /// A flag was given a value, or a valued option none.
    MissingValue {
        name: &'a str,
        expected: &'static str,
    },
}

impl fmt::Display for Diagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::UnknownOption { name } => {
                write!(f, "unknown option '{name}' ignored")
            }
            Diagnostic::BadValue { name, value, expected } => write!(
                f,
                "unknown value '{value}' for option {name}= (expected {expected}); using the default"
            ),
            Diagnostic::MissingValue { name, expected } => {
                write!(f, "option {name} needs a value ({expected}); using the default")
            }
        }
    }
}

/// The outcome of parsing: options plus what was wrong.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub options: Options,
    pub diagnostics: ArrayVec<Diagnostic<'a>, MAX_DIAGNOSTICS>,
    /// Diagnostics that did not fit.
    pub dropped: usize,
}

impl<'a> Parsed<'a> {
    fn report(&mut self, d: Diagnostic<'a>) {
        if self.diagnostics.try_push(d).is_err() {
            self.dropped += 1;
        }
    }
}

/// Every option name (used to tell a leading image name from a first option).
const OPTION_NAMES: &[&str] = &[
    "loglvl",
    "console",
    "dom0_mem",
    "noreboot",
    "on_idle",
    "hvm",
    "dom0_max_vcpus",
    "dom0_cpus",
    "maxcpus",
    "sched_ratelimit_us",
];

/// Parses a command line. Never fails: problems become diagnostics.
pub fn parse(cmdline: &str) -> Parsed<'_> {
    let mut out = Parsed {
        options: Options::default(),
        diagnostics: ArrayVec::new(),
        dropped: 0,
    };
    let mut words = cmdline.split_ascii_whitespace().peekable();
    // Some loaders (QEMU's -kernel, GRUB's multiboot) prepend the image's path or name:
    // a first word that is neither `name=value` nor an option name is that.
    if words
        .peek()
        .is_some_and(|w| !w.contains('=') && !OPTION_NAMES.contains(w))
    {
        words.next();
    }
    for word in words {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        apply(&mut out, name, value);
    }
    out
}

fn apply<'a>(out: &mut Parsed<'a>, name: &'a str, value: Option<&'a str>) {
    // Each arm parses its value or reports what it expected.
    macro_rules! valued {
        ($expected:expr, $parse:expr, $set:expr) => {
            match value {
                None => out.report(Diagnostic::MissingValue {
                    name,
                    expected: $expected,
                }),
                Some(v) => match $parse(v) {
                    Some(parsed) => $set(&mut out.options, parsed),
                    None => out.report(Diagnostic::BadValue {
                        name,
                        value: v,
                        expected: $expected,
                    }),
                },
            }
        };
    }
    match name {
        "loglvl" => valued!(
            "error, warn, info, debug or trace",
            LogLevel::parse,
            |o: &mut Options, v| o.loglvl = v
        ),
        "console" => valued!(
            "a comma-separated list of com1, e9, none",
            Consoles::parse,
            |o: &mut Options, v| o.console = v
        ),
        "dom0_mem" => valued!(
            "a size such as 512M or 2G",
            parse_size,
            |o: &mut Options, v| o.dom0_mem = Some(v)
        ),
        "dom0_max_vcpus" => valued!(
            "a vCPU count from 1 to 128",
            |v: &str| v.parse::<u32>().ok().filter(|n| (1..=128).contains(n)),
            |o: &mut Options, v| o.dom0_max_vcpus = v
        ),
        "dom0_cpus" => valued!(
            "a CPU or a range of CPUs below 64, such as 0 or 0-3",
            parse_cpu_range,
            |o: &mut Options, v| o.dom0_cpus = v
        ),
        "maxcpus" => valued!(
            "a CPU count from 1 to 4096",
            |v: &str| v.parse::<u32>().ok().filter(|n| (1..=4096).contains(n)),
            |o: &mut Options, v| o.maxcpus = Some(v)
        ),
        "sched_ratelimit_us" => valued!(
            "0 (off) or microseconds from 100 to 500000",
            |v: &str| v
                .parse::<u32>()
                .ok()
                .filter(|n| *n == 0 || SCHED_RATELIMIT_US_RANGE.contains(n)),
            |o: &mut Options, v| o.sched_ratelimit_us = v
        ),
        "on_idle" => valued!(
            "halt or poweroff",
            |v| match v {
                "halt" => Some(IdleAction::Halt),
                "poweroff" => Some(IdleAction::Poweroff),
                _ => None,
            },
            |o: &mut Options, v| o.on_idle = v
        ),
        "hvm" => valued!(
            "auto, vmx or svm",
            |v| match v {
                "auto" => Some(BackendChoice::Auto),
                "vmx" => Some(BackendChoice::Vmx),
                "svm" => Some(BackendChoice::Svm),
                _ => None,
            },
            |o: &mut Options, v| o.hvm = v
        ),
        "selftest" => valued!(
            "none, page-fault, panic or stack-overflow",
            |v| match v {
                "none" => Some(SelfTest::None),
                "page-fault" => Some(SelfTest::PageFault),
                "panic" => Some(SelfTest::Panic),
                "stack-overflow" => Some(SelfTest::StackOverflow),
                _ => None,
            },
            |o: &mut Options, v| o.selftest = v
        ),
        "noreboot" => match value.map_or(Some(true), parse_bool) {
            Some(b) => out.options.noreboot = b,
            None => out.report(Diagnostic::BadValue {
                name,
                value: value.unwrap_or(""),
                expected: "a boolean",
            }),
        },
        _ => out.report(Diagnostic::UnknownOption { name }),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// Parses `<digits>[K|M|G|T]` (binary units, case-insensitive; bare digits are bytes).
pub fn parse_size(v: &str) -> Option<u64> {
    let (digits, shift) = match v.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&v[..v.len() - 1], 10),
        b'M' => (&v[..v.len() - 1], 20),
        b'G' => (&v[..v.len() - 1], 30),
        b'T' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// A boot module that starts an unprivileged domain (a "boot-time domU", as Xen's
/// dom0less): its module command line is
/// `<image> domu[:key=value,...] [kernel command line]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomuSpec<'a> {
    /// `name=` (default: the image's file name).
    pub name: &'a str,
    /// `mem=` in bytes (default 32 MiB).
    pub mem: u64,
    /// `vcpus=` (default 1).
    pub vcpus: u32,
    /// `weight=` (1..=65535, default 256).
    pub weight: u16,
    /// `cap=` in percent of one CPU (0 = none, default 0).
    pub cap: u16,
    /// `cpus=`: the physical CPUs its vCPUs may run on (bit i: CPU i; 0 = any).
    pub cpus: u64,
    /// What the guest's kernel gets as its command line.
    pub kernel_args: &'a str,
}

/// What a boot module's command line says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleLine<'a> {
    /// `<image> domu...`: a domU kernel, or why its options are wrong.
    Domu(Result<DomuSpec<'a>, alloc::string::String>),
    /// Anything else: `<image> <arguments>`.
    Plain { name: &'a str, args: &'a str },
}

/// Splits a module command line: the image (its path's last component is its name) and
/// what follows, and recognises the `domu` marker.
pub fn parse_module_line(line: &str) -> ModuleLine<'_> {
    let line = line.trim_start();
    let (image, rest) = line.split_once(' ').unwrap_or((line, ""));
    let name = image.rsplit('/').next().unwrap_or(image);
    let rest = rest.trim_start();
    let (first, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let opts = match first.strip_prefix("domu") {
        Some("") => "",
        Some(o) if o.starts_with(':') => &o[1..],
        _ => return ModuleLine::Plain { name, args: rest },
    };
    ModuleLine::Domu(parse_domu_opts(name, opts, args.trim_start()))
}

/// `N` or `A-B` (A ≤ B < 64) as a CPU mask.
fn parse_cpu_range(s: &str) -> Option<u64> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
    if a > b || b >= 64 {
        return None;
    }
    Some((a..=b).fold(0, |m, c| m | 1 << c))
}

fn parse_domu_opts<'a>(
    image: &'a str,
    opts: &'a str,
    kernel_args: &'a str,
) -> Result<DomuSpec<'a>, alloc::string::String> {
    use alloc::format;
    let mut spec = DomuSpec {
        name: image,
        mem: 32 << 20,
        vcpus: 1,
        weight: 256,
        cap: 0,
        cpus: 0,
        kernel_args,
    };
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        let Some((key, value)) = opt.split_once('=') else {
            return Err(format!("domu option `{opt}` needs a value (key=value)"));
        };
        let bad = |what: &str| format!("domu option `{key}={value}`: expected {what}");
        match key {
            "name" if !value.is_empty() && value.len() <= 32 => spec.name = value,
            "name" => return Err(bad("a name of 1 to 32 characters")),
            "mem" => {
                spec.mem = parse_size(value)
                    .filter(|&m| m >= 2 << 20)
                    .ok_or_else(|| bad("a size of at least 2M, such as 32M"))?
            }
            "vcpus" => {
                spec.vcpus = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=128).contains(n))
                    .ok_or_else(|| bad("a vCPU count from 1 to 128"))?
            }
            "weight" => {
                spec.weight = value
                    .parse()
                    .ok()
                    .filter(|&w| w >= 1)
                    .ok_or_else(|| bad("a weight from 1 to 65535"))?
            }
            "cap" => {
                spec.cap = value
                    .parse()
                    .ok()
                    .filter(|&c: &u16| c <= 12_800)
                    .ok_or_else(|| bad("a cap in percent of one CPU (0 = none)"))?
            }
            "cpus" => {
                spec.cpus = parse_cpu_range(value)
                    .ok_or_else(|| bad("a CPU or a range of CPUs below 64, such as 1 or 0-3"))?
            }
            _ => {
                return Err(format!(
                    "unknown domu option `{key}` (known: name, mem, vcpus, weight, cap, cpus)"
                ))
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domu_cpus() {
        let spec = |opts: &str| match parse_module_line(&alloc::format!("/g domu:{opts}")) {
            ModuleLine::Domu(r) => r.map(|s| s.cpus),
            other => panic!("{other:?}"),
        };
        assert_eq!(spec("cpus=1"), Ok(0b10));
        assert_eq!(spec("cpus=0-3"), Ok(0b1111));
        assert_eq!(spec("cpus=63"), Ok(1 << 63));
        assert_eq!(spec("name=a"), Ok(0));
        for bad in [
            "cpus=64", "cpus=3-1", "cpus=", "cpus=a", "cpus=1-", "cpus=-1",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_lines() {
        assert_eq!(
            parse_module_line("/boot/vmlinuz console=hvc0"),
            ModuleLine::Plain {
                name: "vmlinuz",
                args: "console=hvc0"
            }
        );
        assert_eq!(
            parse_module_line("guest-ping domu:mem=16M,weight=512,cap=25 role=ping peer=1"),
            ModuleLine::Domu(Ok(DomuSpec {
                name: "guest-ping",
                mem: 16 << 20,
                vcpus: 1,
                weight: 512,
                cap: 25,
                cpus: 0,
                kernel_args: "role=ping peer=1",
            }))
        );
        assert_eq!(
            parse_module_line("g domu"),
            ModuleLine::Domu(Ok(DomuSpec {
                name: "g",
                mem: 32 << 20,
                vcpus: 1,
                weight: 256,
                cap: 0,
                cpus: 0,
                kernel_args: "",
            }))
        );
        let ModuleLine::Domu(Ok(s)) = parse_module_line("g domu:name=pong,vcpus=2") else {
            panic!()
        };
        assert_eq!((s.name, s.vcpus), ("pong", 2));
        // `domus` is not the marker.
        assert!(matches!(
            parse_module_line("g domus x"),
            ModuleLine::Plain { .. }
        ));
    }

    #[test]
    fn bad_domu_options_are_named() {
        for (line, needle) in [
            ("g domu:mem=1M", "mem=1M"),
            ("g domu:vcpus=0", "vcpus=0"),
            ("g domu:weight=0", "weight=0"),
            ("g domu:weight=70000", "weight=70000"),
            ("g domu:cap=x", "cap=x"),
            ("g domu:color=red", "unknown domu option `color`"),
            ("g domu:mem", "`mem` needs a value"),
        ] {
            match parse_module_line(line) {
                ModuleLine::Domu(Err(e)) => assert!(e.contains(needle), "{line}: {e}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_when_empty() {
        let p = parse("");
        assert_eq!(p.options, Options::default());
        assert!(p.diagnostics.is_empty());
    }

    #[test]
    fn parses_every_option() {
        let p =
            parse("loglvl=debug console=com1,e9 dom0_mem=512M noreboot on_idle=poweroff hvm=svm dom0_max_vcpus=2 maxcpus=3 sched_ratelimit_us=5000");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!(
            p.options,
            Options {
                loglvl: LogLevel::Debug,
                console: Consoles {
                    com1: true,
                    e9: true
                },
                dom0_mem: Some(512 << 20),
                noreboot: true,
                on_idle: IdleAction::Poweroff,
                hvm: BackendChoice::Svm,
                selftest: SelfTest::None,
                dom0_max_vcpus: 2,
                dom0_cpus: 0,
                maxcpus: Some(3),
                sched_ratelimit_us: 5000,
            }
        );
    }

    #[test]
    fn sched_ratelimit_bounds() {
        let value = |s| parse(s).options.sched_ratelimit_us;
        assert_eq!(value(""), 1000);
        assert_eq!(value("sched_ratelimit_us=0"), 0);
        assert_eq!(value("sched_ratelimit_us=100"), 100);
        assert_eq!(value("sched_ratelimit_us=500000"), 500_000);
        for bad in ["99", "500001", "-1", "1ms", ""] {
            let line = alloc::format!("sched_ratelimit_us={bad}");
            let p = parse(&line);
            assert_eq!(p.options.sched_ratelimit_us, 1000, "{bad}");
            assert!(
                matches!(
                    p.diagnostics[..],
                    [Diagnostic::BadValue {
                        name: "sched_ratelimit_us",
                        ..
                    }]
                ),
                "{bad}: {:?}",
                p.diagnostics
            );
        }
    }

    #[test]
    fn maxcpus_bounds() {
        assert_eq!(parse("maxcpus=1").options.maxcpus, Some(1));
        assert_eq!(parse("maxcpus=4096").options.maxcpus, Some(4096));
        assert_eq!(parse("").options.maxcpus, None);
        for bad in [
            "maxcpus=0",
            "maxcpus=4097",
            "maxcpus=-1",
            "maxcpus=two",
            "maxcpus=",
        ] {
            let p = parse(bad);
            assert_eq!(p.options.maxcpus, None, "{bad}");
            assert!(
                matches!(
                    p.diagnostics[..],
                    [Diagnostic::BadValue {
                        name: "maxcpus",
                        ..
                    }]
                ),
                "{bad}: {:?}",
                p.diagnostics
            );
        }
        let p = parse("maxcpus");
        assert!(matches!(
            p.diagnostics[..],
            [Diagnostic::MissingValue {
                name: "maxcpus",
                ..
            }]
        ));
    }

    #[test]
    fn skips_leading_image_path() {
        let p = parse("/boot/ferrovisor loglvl=warn");
        assert!(p.diagnostics.is_empty());
        assert_eq!(p.options.loglvl, LogLevel::Warn);
    }

    #[test]
    fn skips_leading_image_name_but_not_a_flag() {
        let p = parse("ferrovisor loglvl=warn");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let p = parse("noreboot loglvl=warn");
        assert!(p.options.noreboot);
    }

    #[test]
    fn bad_value_is_reported_and_default_kept() {
        let p = parse("loglvl=nonsense console=com1");
        assert_eq!(p.options.loglvl, LogLevel::Info);
        assert_eq!(
            p.diagnostics.as_slice(),
            &[Diagnostic::BadValue {
                name: "loglvl",
                value: "nonsense",
                expected: "error, warn, info, debug or trace"
            }]
        );
        let msg = std::format!("{}", p.diagnostics[0]);
        assert!(
            msg.contains("loglvl=") && msg.contains("nonsense") && msg.contains("default"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_option_is_reported() {
        let p = parse("frobnicate=3 loglvl=error");
        assert_eq!(p.options.loglvl, LogLevel::Error);
        assert_eq!(
            p.diagnostics.as_slice(),
            &[Diagnostic::UnknownOption { name: "frobnicate" }]
        );
    }

    #[test]
    fn missing_value_is_reported() {
        let p = parse("dom0_mem loglvl");
        assert_eq!(p.diagnostics.len(), 2);
        assert!(matches!(
            p.diagnostics[0],
            Diagnostic::MissingValue {
                name: "dom0_mem",
                ..
            }
        ));
        assert_eq!(p.options.dom0_mem, None);
    }

    #[test]
    fn boolean_forms() {
        assert!(parse("noreboot=yes").options.noreboot);
        assert!(!parse("noreboot=off").options.noreboot);
        let p = parse("noreboot=maybe");
        assert!(!p.options.noreboot);
        assert_eq!(p.diagnostics.len(), 1);
    }

    #[test]
    fn console_list_rejects_unknown_device() {
        let p = parse("console=com1,vga");
        assert_eq!(
            p.options.console,
            Consoles {
                com1: true,
                e9: false
            }
        );
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(
            parse("console=none").options.console,
            Consoles {
                com1: false,
                e9: false
            }
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("17179869184G"), None, "overflow must not wrap");
    }

    #[test]
    fn many_problems_are_counted_not_lost() {
        let line = "image a b c d e f g h i j k l m n o p q r s";
        let p = parse(line);
        assert_eq!(p.diagnostics.len(), MAX_DIAGNOSTICS);
        assert_eq!(p.dropped, 19 - MAX_DIAGNOSTICS);
    }
}
