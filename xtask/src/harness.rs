//! Running emulator tests, and the whole `cargo xtask test` suite.
//!
//! One test = one emulator process in its own process group. Reader threads
//! turn its output into events on a channel; the main thread feeds console
//! lines to a [`Checker`] as they arrive, types scripted input, and ends the
//! run as soon as the verdict is known: the emulator exited, a forbidden line
//! appeared, every expectation was met (for tests that never power off), or
//! the timeout hit. The emulator's process group is always killed at the end.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regex::Regex;

use crate::build::Profile;
use crate::image::{self, Module};
use crate::spec::{Check, Emulator, Exit, QemuBoot, Test, ValueCheck};
use crate::{bochs, build, prereq, process, qemu, tests, util};

/// The line the hypervisor prints right before it powers off.
const POWER_OFF_PATTERN: &str = r"ferrovisor: power off, exit code (\d+)";

/// How much console output `cargo xtask test` shows for a failed test.
const TAIL_LINES: usize = 60;

/// After the emulator exits: how long to wait for its output pipes to drain.
const DRAIN: Duration = Duration::from_secs(2);
/// After a forbidden line: how long to keep collecting output for the log
/// (the lines after a panic message are the useful ones).
const GRACE_AFTER_FORBID: Duration = Duration::from_secs(2);

/// Console output that fails every test, even one that opts out of the default forbid
/// list: the guest runtime's tag for text it had to send to port 0xE9 (a failed
/// `console_io`, no Xen CPUID signature, a nested failure; see `guest-rt`'s `console.rs`);
/// and the hypervisor's frame bookkeeping finding a bug, whichever guest led to it: a
/// refused free (`mm::phys::released`: a double free or a frame of its own) or a frame
/// handed to a domain while in use (`mm::frametable::global::set_owned`).
pub const ALWAYS_FORBID: &[&str] = &[
    r"guest-rt/e9:",
    r"frame release refused at ",
    r"frame 0x[0-9a-f]+ handed out while in use",
];

/// The hypervisor's power-off code in console text, if it printed the line.
pub fn power_off_code(text: &str) -> Option<u32> {
    let re = Regex::new(POWER_OFF_PATTERN).expect("valid regex");
    re.captures_iter(text)
        .last()
        .and_then(|c| c[1].parse().ok())
}

// ---------------------------------------------------------------------------
// Checking console lines

/// The verdict logic, separate from processes so that it can be unit-tested.
pub struct Checker {
    expect: Vec<Regex>,
    /// Index of the next `expect` pattern to find.
    next: usize,
    /// Independent ordered lists (see `Test::expect_group`), each with its next index.
    groups: Vec<(Vec<Regex>, usize)>,
    forbid: Vec<Regex>,
    /// The first forbidden line and the pattern it matched.
    pub forbidden: Option<(String, String)>,
    power_off: Regex,
    /// The code from the last power-off line seen.
    pub power_off_code: Option<u32>,
    /// Value checks: pattern, check, and the verdict once a line matched.
    values: Vec<(Regex, ValueCheck, Option<Verdict>)>,
}

/// The outcome of one value check: `Err(why)` when it failed.
type Verdict = Result<(), String>;

impl Checker {
    pub fn new(expect: &[&str], forbid: &[&str]) -> Result<Self> {
        let compile = |p: &&str| Regex::new(p).with_context(|| format!("bad regex {p:?}"));
        Ok(Checker {
            expect: expect.iter().map(compile).collect::<Result<_>>()?,
            next: 0,
            groups: Vec::new(),
            forbid: ALWAYS_FORBID
                .iter()
                .chain(forbid)
                .map(compile)
                .collect::<Result<_>>()?,
            forbidden: None,
            power_off: Regex::new(POWER_OFF_PATTERN)?,
            power_off_code: None,
            values: Vec::new(),
        })
    }

    /// Adds independent ordered pattern lists (see `Test::expect_group`).
    pub fn with_groups(mut self, groups: &[Vec<&str>]) -> Result<Self> {
        for g in groups {
            let res = g
                .iter()
                .map(|p| Regex::new(p).with_context(|| format!("bad regex {p:?}")))
                .collect::<Result<_>>()?;
            self.groups.push((res, 0));
        }
        Ok(self)
    }

    /// Adds value checks (see [`ValueCheck`]).
    pub fn with_values(mut self, checks: &[ValueCheck]) -> Result<Self> {
        for c in checks {
            let re = Regex::new(c.pattern).with_context(|| format!("bad regex {:?}", c.pattern))?;
            if re.captures_len() < 2 {
                bail!("value pattern {:?} has no capture group", c.pattern);
            }
            self.values.push((re, *c, None));
        }
        Ok(self)
    }

    /// Takes one complete console line (without its line ending), arrived now.
    pub fn line(&mut self, line: &str) {
        self.line_at(line, crate::linux::host_epoch());
    }

    /// [`Checker::line`] with the host's clock given (seconds since the epoch).
    pub fn line_at(&mut self, line: &str, host_epoch: f64) {
        for (re, check, verdict) in &mut self.values {
            if verdict.is_some() {
                continue;
            }
            if let Some(c) = re.captures(line) {
                let text = c.get(1).map_or("", |m| m.as_str());
                let result = match check.check {
                    Check::Number(f) => match text.parse::<f64>() {
                        Ok(value) => f(value, host_epoch),
                        Err(_) => Err(format!("{text:?} is not a number")),
                    },
                    Check::Equals(want) if text == want => Ok(()),
                    Check::Equals(want) => Err(format!("got {text:?}, expected {want:?}")),
                    Check::Text(f) => f(text),
                };
                *verdict = Some(result.map_err(|why| format!("{line:?}: {why}")));
            }
        }
        // Several expectations may be met by the same line.
        while self.next < self.expect.len() && self.expect[self.next].is_match(line) {
            self.next += 1;
        }
        for (group, next) in &mut self.groups {
            while *next < group.len() && group[*next].is_match(line) {
                *next += 1;
            }
        }
        if self.forbidden.is_none() {
            if let Some(re) = self.forbid.iter().find(|re| re.is_match(line)) {
                self.forbidden = Some((line.to_string(), re.as_str().to_string()));
            }
        }
        if let Some(c) = self.power_off.captures(line) {
            self.power_off_code = c[1].parse().ok();
        }
    }

    pub fn all_expected(&self) -> bool {
        self.next == self.expect.len() && self.groups.iter().all(|(g, next)| *next == g.len())
    }

    /// Value checks that failed (unmatched ones show as unmet expectations).
    pub fn value_failures(&self) -> Vec<String> {
        self.values
            .iter()
            .filter_map(|(_, _, v)| v.as_ref().and_then(|r| r.as_ref().err().cloned()))
            .collect()
    }

    /// The first expectation not yet met.
    pub fn waiting_for(&self) -> Option<&str> {
        self.expect
            .get(self.next)
            .or_else(|| self.groups.iter().find_map(|(g, next)| g.get(*next)))
            .map(Regex::as_str)
    }

    /// Describes the unmet expectations (`lines` is the whole console): the
    /// first one in detail, noting when it did appear but too early; of the
    /// rest, those that never appeared at all.
    /// Groups (see `Test::expect_group`) are described the same way, each on its own.
    pub fn unmet(&self, lines: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        unmet_in(&self.expect, self.next, lines, &mut out);
        for (group, next) in &self.groups {
            unmet_in(group, *next, lines, &mut out);
        }
        out
    }
}

/// [`Checker::unmet`] for one ordered list whose first `next` patterns were met.
fn unmet_in(expect: &[Regex], next: usize, lines: &[String], out: &mut Vec<String>) {
    let seen = |re: &Regex| lines.iter().any(|l| re.is_match(l));
    let Some(first) = expect.get(next) else {
        return;
    };
    if next > 0 && seen(first) {
        out.push(format!(
            "/{}/ appeared only before /{}/",
            first.as_str(),
            expect[next - 1].as_str()
        ));
    } else {
        out.push(format!("/{}/ never appeared", first.as_str()));
    }
    let never: Vec<String> = expect[next + 1..]
        .iter()
        .filter(|re| !seen(re))
        .map(|re| format!("/{}/", re.as_str()))
        .collect();
    if !never.is_empty() {
        out.push(format!("also never appeared: {}", never.join(", ")));
    }
}

// ---------------------------------------------------------------------------
// Emulator output as events

/// Which output of the emulator a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// The hypervisor's serial console (QEMU stdout, Bochs COM1 socket).
    Console,
    /// The emulator's stdout when it is not the console (Bochs: port 0xE9
    /// bytes, banner, debugger lines).
    Stdout,
    /// The emulator's stderr.
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Console => "console",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

enum Event {
    Data(Stream, Vec<u8>),
    Eof(Stream),
}

/// Forwards everything `reader` yields as events, then an end-of-file event.
fn spawn_reader(stream: Stream, mut reader: impl Read + Send + 'static, tx: Sender<Event>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Event::Data(stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof(stream));
    });
}

/// Splits a byte stream into lines (dropping CR), keeping the unfinished
/// tail until more arrives or the stream ends.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => lines.push(self.take()),
                b'\r' => {}
                _ => self.partial.push(b),
            }
        }
        lines
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        line
    }

    /// The unfinished last line, if any (at end of stream).
    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }
}

// ---------------------------------------------------------------------------
// Running one test

/// The result of one test.
pub struct Report {
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub problems: Vec<String>,
    pub elapsed: Duration,
    pub console_log: PathBuf,
    pub emulator_log: PathBuf,
    /// The last console lines (or emulator lines when the console is empty).
    pub tail: Vec<String>,
}

/// Per-suite settings a test run needs.
pub struct RunContext {
    pub kernel: PathBuf,
    pub verbose: bool,
}

/// The emulator process of a test and where its console input goes.
struct Launched {
    group: process::Group,
    input: Option<Box<dyn Write + Send>>,
    command_line: String,
}

/// Log file names for a test: `target/xtask/logs/<name>.log` (the console,
/// exactly as the hypervisor printed it) and `<name>.emu.log` (command line,
/// the emulator's own output, exit status, verdict).
fn log_paths(name: &str) -> (PathBuf, PathBuf) {
    let base = util::xtask_dir().join("logs").join(name);
    (
        base.with_file_name(format!("{}.log", file_name(&base))),
        base.with_file_name(format!("{}.emu.log", file_name(&base))),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Materializes the modules of a test.
fn modules_of(test: &Test) -> Result<Vec<Module>> {
    test.modules
        .iter()
        .map(|m| {
            let path = m.materialize()?;
            if !path.is_file() {
                bail!("module {} is missing", path.display());
            }
            Ok(Module {
                path,
                args: m.args.to_string(),
            })
        })
        .collect()
}

/// Prepares boot files and starts the emulator. Output readers are attached
/// to `tx`.
fn launch(test: &Test, ctx: &RunContext, work: &Path, tx: &Sender<Event>) -> Result<Launched> {
    let modules = modules_of(test)?;
    let kernel = qemu::kernel_for(test, &ctx.kernel)?;
    let iso = |loader| -> Result<PathBuf> {
        let output = work.join("ferrovisor.iso");
        image::build_iso(&image::IsoSpec {
            kernel: kernel.clone(),
            cmdline: test.cmdline.to_string(),
            modules: modules.clone(),
            loader,
            output: output.clone(),
        })?;
        Ok(output)
    };
    match &test.emulator {
        Emulator::Qemu { accel, boot, cpu } => {
            let boot_dir = work.join("boot");
            let disk: PathBuf;
            let boot = match boot {
                QemuBoot::Kernel => {
                    qemu::stage_kernel_dir(&boot_dir, &kernel, &modules)?;
                    qemu::Boot::Kernel {
                        cmdline: test.cmdline,
                        modules: &modules,
                    }
                }
                QemuBoot::Iso(loader) => {
                    let path = iso(*loader)?;
                    std::fs::create_dir_all(&boot_dir)?;
                    std::fs::rename(&path, boot_dir.join("ferrovisor.iso"))?;
                    qemu::Boot::Iso("ferrovisor.iso")
                }
                QemuBoot::Disk(make) => {
                    std::fs::create_dir_all(&boot_dir)?;
                    disk = make(work)?;
                    qemu::Boot::Disk(&disk)
                }
            };
            let memory = format!("{}M", test.memory_mib);
            // A reset test must tell a requested reset from a triple fault: QEMU logs
            // "Triple fault" under `-d cpu_reset` (see `reset_outcome`).
            let mut extra_args = if test.exit == Exit::Reset {
                vec!["-d".to_string(), "cpu_reset".to_string()]
            } else {
                Vec::new()
            };
            extra_args.extend(test.qemu_args.iter().map(|a| a.to_string()));
            let mut cmd = qemu::command(&qemu::Config {
                accel: *accel,
                cpu: *cpu,
                cpus: test.cpus,
                memory: &memory,
                serial: qemu::serial_for(&test.send),
                boot_dir: &boot_dir,
                boot,
                extra_args: &extra_args,
            });
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let command_line = format!(
                "(cd {} && {})",
                boot_dir.display(),
                util::show_command(&cmd)
            );
            let mut group = process::spawn_group(&mut cmd)?;
            let stdin = group.child.stdin.take().expect("piped stdin");
            spawn_reader(
                Stream::Console,
                group.child.stdout.take().expect("piped stdout"),
                tx.clone(),
            );
            spawn_reader(
                Stream::Stderr,
                group.child.stderr.take().expect("piped stderr"),
                tx.clone(),
            );
            Ok(Launched {
                group,
                input: Some(Box::new(stdin)),
                command_line,
            })
        }
        Emulator::Bochs => {
            let iso = iso(image::Loader::Multiboot2)?;
            let (listener, port) = bochs::com1_listener()?;
            let mut cmd = bochs::prepare_with_cpus(
                work,
                &bochs::Config {
                    iso: &iso,
                    com1: bochs::Com1::Socket(port),
                    log: &work.join("bochs.log"),
                    megs: test.memory_mib,
                },
                test.cpus,
            )?;
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let command_line = format!("(cd {} && {})", work.display(), util::show_command(&cmd));
            let mut group = process::spawn_group(&mut cmd)?;
            spawn_reader(
                Stream::Stdout,
                group.child.stdout.take().expect("piped stdout"),
                tx.clone(),
            );
            spawn_reader(
                Stream::Stderr,
                group.child.stderr.take().expect("piped stderr"),
                tx.clone(),
            );
            let com1 = bochs::accept_com1(&listener, &mut group.child, Duration::from_secs(30))?;
            spawn_reader(Stream::Console, com1.try_clone()?, tx.clone());
            Ok(Launched {
                group,
                input: Some(Box::new(com1)),
                command_line,
            })
        }
    }
}

/// Runs one test to its verdict.
/// How long the hypervisor's answer to a debug key may take to arrive.
const DEBUG_KEY_DRAIN: Duration = Duration::from_secs(5);

/// What to type on the console to run hypervisor debug key `key`: Ctrl-A three times
/// switches the input to the hypervisor, three more give it back. On QEMU's multiplexed
/// `mon:stdio` console, Ctrl-A is QEMU's own escape and goes to the guest doubled.
fn debug_key_bytes(test: &Test, key: u8) -> Vec<u8> {
    let mux = matches!(test.emulator, Emulator::Qemu { .. })
        && matches!(qemu::serial_for(&test.send), qemu::Serial::MonitorStdio);
    let switch: &[u8] = if mux { b"\x01\x01" } else { b"\x01" };
    let mut v = switch.repeat(3);
    v.push(key);
    v.extend(switch.repeat(3));
    v
}

pub fn run_test(test: &Test, ctx: &RunContext) -> Result<Report> {
    let start = Instant::now();
    let work = util::xtask_dir().join("tests").join(test.name);
    std::fs::create_dir_all(&work)?;
    let (console_path, emu_path) = log_paths(test.name);
    util::create_parent(&console_path)?;
    let mut console_log = BufWriter::new(File::create(&console_path)?);
    let mut emu_log = BufWriter::new(File::create(&emu_path)?);

    let mut checker = Checker::new(&test.expect, &test.forbid)?
        .with_groups(&test.expect_groups)?
        .with_values(&test.values)?;
    let sends: Vec<(Regex, &str)> = test
        .send
        .iter()
        .map(|s| Ok((Regex::new(s.when)?, s.text)))
        .collect::<Result<_>>()?;

    let (tx, rx) = mpsc::channel();
    let launched = launch(test, ctx, &work, &tx);
    drop(tx);
    let mut launched = match launched {
        Ok(l) => l,
        Err(e) => {
            writeln!(emu_log, "launch failed: {e:#}")?;
            return Ok(Report {
                passed: false,
                problems: vec![format!("could not start the emulator: {e:#}")],
                elapsed: start.elapsed(),
                console_log: console_path,
                emulator_log: emu_path,
                tail: Vec::new(),
            });
        }
    };
    writeln!(emu_log, "$ {}", launched.command_line)?;
    emu_log.flush()?;

    // The timeout counts from the emulator's start: preparing its files (the first
    // dom0 test fetches the Debian kernel and builds the tools) is not the guest's time.
    let launched_at = Instant::now();
    let run = watch(
        test,
        ctx,
        &mut launched,
        &rx,
        &mut checker,
        &sends,
        &mut console_log,
        &mut emu_log,
        launched_at,
    )?;
    // Whatever happened: no stray emulator.
    launched.group.killer().kill();

    let mut problems = judge(test, &checker, &run);
    if let Some(Err(why)) = test.after.map(|check| check()) {
        problems.push(why);
    }
    let passed = problems.is_empty();
    writeln!(
        emu_log,
        "--- exit status: {}; verdict: {}",
        run.status
            .map_or("none (killed)".to_string(), |s| s.to_string()),
        if passed { "ok" } else { "FAILED" }
    )?;
    for p in &problems {
        writeln!(emu_log, "    {p}")?;
    }
    console_log.flush()?;
    emu_log.flush()?;

    let source = if run.console.is_empty() {
        &run.emulator_lines
    } else {
        &run.console
    };
    let tail = source[source.len().saturating_sub(TAIL_LINES)..].to_vec();
    Ok(Report {
        passed,
        problems,
        elapsed: start.elapsed(),
        console_log: console_path,
        emulator_log: emu_path,
        tail,
    })
}

/// What was observed while the emulator ran.
struct Run {
    console: Vec<String>,
    /// The emulator's own output lines (tagged).
    emulator_lines: Vec<String>,
    stderr_text: String,
    status: Option<ExitStatus>,
    timed_out: bool,
    /// We ended the run because every expectation was met.
    ended_early: bool,
}

/// The event loop of one test.
#[allow(clippy::too_many_arguments)]
fn watch(
    test: &Test,
    ctx: &RunContext,
    launched: &mut Launched,
    rx: &Receiver<Event>,
    checker: &mut Checker,
    sends: &[(Regex, &str)],
    console_log: &mut impl Write,
    emu_log: &mut impl Write,
    start: Instant,
) -> Result<Run> {
    let mut deadline = start + test.timeout;
    // Set when the test timed out and the hypervisor was asked for its state: the
    // verdict, kept while its answer drains.
    let mut timed_out_at: Option<bool> = None;
    let mut run = Run {
        console: Vec::new(),
        emulator_lines: Vec::new(),
        stderr_text: String::new(),
        status: None,
        timed_out: false,
        ended_early: false,
    };
    let mut console_split = LineSplitter::default();
    let mut stdout_split = LineSplitter::default();
    let mut stderr_split = LineSplitter::default();
    // Console text since the last send, matched against the next send's
    // pattern (includes unfinished lines: prompts end without a newline).
    let mut since_send = String::new();
    let mut next_send = 0;
    let mut open_streams = 3usize;
    // Once set, the run ends at this instant at the latest.
    let mut stop_at: Option<Instant> = None;

    let mut on_console_line = |line: String, run: &mut Run, checker: &mut Checker| -> Result<()> {
        writeln!(console_log, "{line}")?;
        if ctx.verbose {
            println!("    | {line}");
        }
        checker.line(&line);
        run.console.push(line);
        Ok(())
    };

    loop {
        let now = Instant::now();
        if now >= deadline {
            // A run that already ended (or failed on a forbidden line) is
            // only draining; that is not a timeout.
            let timed_out = timed_out_at.unwrap_or_else(|| {
                run.status.is_none()
                    && checker.forbidden.is_none()
                    && checker.value_failures().is_empty()
            });
            if timed_out && timed_out_at.is_none() {
                // Ask the hypervisor what its domains are doing (debug key 'q', see
                // hypervisor/src/debugkeys.rs), so the log shows where a guest hangs.
                timed_out_at = Some(true);
                if let Some(input) = launched.input.as_mut() {
                    let keys = debug_key_bytes(test, b'q');
                    if input.write_all(&keys).and_then(|()| input.flush()).is_ok() {
                        writeln!(
                            emu_log,
                            "[xtask] timed out: sent debug key 'q' for the hypervisor's state"
                        )?;
                        deadline = now + DEBUG_KEY_DRAIN;
                        stop_at = None;
                        continue;
                    }
                }
            }
            run.timed_out = timed_out;
            break;
        }
        if stop_at.is_some_and(|s| now >= s) {
            break;
        }
        let limit = stop_at.map_or(deadline, |s| s.min(deadline));
        let wait = (limit - now).min(Duration::from_millis(50));
        match rx.recv_timeout(wait) {
            Ok(Event::Data(Stream::Console, bytes)) => {
                if run.console.is_empty() && console_split.partial.is_empty() {
                    writeln!(
                        emu_log,
                        "[xtask] first console output after {}",
                        secs(start.elapsed())
                    )?;
                }
                for line in console_split.push(&bytes) {
                    on_console_line(line, &mut run, checker)?;
                }
                since_send.push_str(&String::from_utf8_lossy(&bytes));
                while let Some((re, text)) = sends.get(next_send) {
                    let Some(m) = re.find(&since_send) else { break };
                    let end = m.end();
                    if let Some(input) = launched.input.as_mut() {
                        // A guest that already died closed its input; the
                        // verdict will say why, so a failed write is only
                        // logged.
                        match input
                            .write_all(text.as_bytes())
                            .and_then(|()| input.flush())
                        {
                            Ok(()) => writeln!(
                                emu_log,
                                "[xtask] sent {text:?} after /{}/ at {}",
                                re.as_str(),
                                secs(start.elapsed())
                            )?,
                            Err(e) => writeln!(emu_log, "[xtask] could not send {text:?}: {e}")?,
                        }
                    }
                    since_send.drain(..end);
                    next_send += 1;
                }
                if since_send.len() > 1 << 16 {
                    let cut = since_send.len() - (1 << 12);
                    let cut = (cut..since_send.len())
                        .find(|&i| since_send.is_char_boundary(i))
                        .unwrap_or(since_send.len());
                    since_send.drain(..cut);
                }
            }
            Ok(Event::Data(stream, bytes)) => {
                let split = if stream == Stream::Stdout {
                    &mut stdout_split
                } else {
                    &mut stderr_split
                };
                if stream == Stream::Stderr {
                    run.stderr_text.push_str(&String::from_utf8_lossy(&bytes));
                }
                for line in split.push(&bytes) {
                    writeln!(emu_log, "[{}] {line}", stream.tag())?;
                    run.emulator_lines
                        .push(format!("[{}] {line}", stream.tag()));
                }
            }
            Ok(Event::Eof(stream)) => {
                open_streams -= 1;
                let split = match stream {
                    Stream::Console => &mut console_split,
                    Stream::Stdout => &mut stdout_split,
                    Stream::Stderr => &mut stderr_split,
                };
                if let Some(line) = split.finish() {
                    if stream == Stream::Console {
                        on_console_line(line, &mut run, checker)?;
                    } else {
                        writeln!(emu_log, "[{}] {line}", stream.tag())?;
                        run.emulator_lines
                            .push(format!("[{}] {line}", stream.tag()));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Every reader is done; only the exit status is left to see.
                open_streams = 0;
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        if run.status.is_none() {
            if let Some(status) = launched.group.child.try_wait()? {
                run.status = Some(status);
                stop_at = Some(Instant::now() + DRAIN);
            }
        }
        if run.status.is_some() && open_streams == 0 {
            break;
        }
        let failed = checker.forbidden.is_some() || !checker.value_failures().is_empty();
        if failed && stop_at.is_none() {
            stop_at = Some(Instant::now() + GRACE_AFTER_FORBID);
        }
        if test.exit == Exit::WhenExpected && checker.all_expected() && run.status.is_none() {
            run.ended_early = true;
            break;
        }
    }
    // Stop the emulator before judging; output read so far is all we use.
    // A status still unknown here stays unknown: the kill is ours.
    launched.group.killer().kill();
    Ok(run)
}

/// Everything wrong with a finished run (empty = pass).
fn judge(test: &Test, checker: &Checker, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let emulator_name = if test.emulator.is_bochs() {
        "Bochs"
    } else {
        "QEMU"
    };
    if let Some((line, pattern)) = &checker.forbidden {
        problems.push(format!("forbidden output /{pattern}/: {line}"));
    }
    if !test.emulator.is_bochs() {
        // QEMU also exits with status 1 when it cannot start; its stderr
        // then says why ("qemu-system-x86_64: ..."), which must not pass as
        // "powered off with code 0".
        for line in run.stderr_text.lines() {
            if line.starts_with("qemu-system") && !line.contains("warning:") {
                problems.push(format!("QEMU: {line}"));
            }
        }
    }
    if run.timed_out {
        let waiting = match (checker.waiting_for(), checker.power_off_code) {
            (_, Some(code)) => format!(
                "the hypervisor printed its power-off line (code {code}) but {emulator_name} did not quit ({})",
                if test.emulator.is_bochs() {
                    "write \"Shutdown\" to port 0x8900"
                } else {
                    "write the code to port 0xf4"
                }
            ),
            (Some(p), None) => format!("still waiting for /{p}/"),
            (None, None) => "every expectation met, but no power-off".to_string(),
        };
        problems.push(format!(
            "timed out after {} s: {waiting}",
            test.timeout.as_secs()
        ));
    }
    if !run.ended_early
        && !run.timed_out
        && checker.forbidden.is_none()
        && checker.value_failures().is_empty()
    {
        match test.exit {
            Exit::Code(want) => match exit_code(test, checker, run) {
                Ok(got) if got == want => {}
                Ok(got) => problems.push(format!(
                    "the hypervisor powered off with exit code {got}, expected {want}"
                )),
                Err(why) => problems.push(why),
            },
            Exit::Reset => {
                if let Err(why) = reset_outcome(test, run) {
                    problems.push(why);
                }
            }
            Exit::WhenExpected => {}
        }
    }
    problems.extend(checker.value_failures());
    if !checker.all_expected() {
        problems.extend(checker.unmet(&run.console));
    }
    problems
}

/// Whether a run that ended by itself ended in a machine reset (see [`Exit::Reset`]).
fn reset_outcome(test: &Test, run: &Run) -> Result<(), String> {
    if test.emulator.is_bochs() {
        return Err("Exit::Reset is only implemented for QEMU".into());
    }
    let Some(status) = run.status else {
        return Err("the emulator's exit status is unknown".into());
    };
    match qemu::outcome(status) {
        qemu::Outcome::NoDebugExit if qemu::logged_triple_fault(&run.stderr_text) => {
            Err("QEMU reset the machine after a triple fault, not a requested reset".into())
        }
        qemu::Outcome::NoDebugExit => Ok(()),
        qemu::Outcome::PowerOff(code) => Err(format!(
            "expected a machine reset, but the hypervisor powered off with exit code {code}"
        )),
        qemu::Outcome::Killed => Err(format!("QEMU was killed ({status})")),
    }
}

/// The hypervisor's exit code from a run that ended by itself.
fn exit_code(test: &Test, checker: &Checker, run: &Run) -> Result<u32, String> {
    let Some(status) = run.status else {
        return Err("the emulator's exit status is unknown".into());
    };
    if test.emulator.is_bochs() {
        return match (bochs::stop_reason(&run.stderr_text), checker.power_off_code) {
            (bochs::Stop::Shutdown, Some(code)) => Ok(code),
            (bochs::Stop::Shutdown, None) => Err(
                "Bochs was shut down (port 0x8900) without a \"ferrovisor: power off, exit code N\" line"
                    .into(),
            ),
            (bochs::Stop::Fatal(reason), _) => Err(format!("Bochs stopped: {reason}")),
            (bochs::Stop::Unknown, _) => Err(format!("Bochs ended ({status}) without saying why")),
        };
    }
    match qemu::outcome(status) {
        qemu::Outcome::PowerOff(code) => {
            if let Some(line_code) = checker.power_off_code {
                if line_code != code {
                    return Err(format!(
                        "power-off line says code {line_code}, debug-exit port got {code}"
                    ));
                }
            }
            Ok(code)
        }
        qemu::Outcome::NoDebugExit => Err(
            "QEMU ended without a debug-exit code: the guest reset or triple-faulted (-no-reboot)"
                .into(),
        ),
        qemu::Outcome::Killed => Err(format!("QEMU was killed ({status})")),
    }
}

// ---------------------------------------------------------------------------
// The suite

/// `cargo xtask test` options.
pub struct SuiteOptions {
    pub filter: Option<String>,
    pub skip_bochs: bool,
    pub skip_host: bool,
    /// Skip the tests that boot the Debian dom0 kernel.
    pub skip_dom0: bool,
    pub verbose: bool,
    pub kernel: Option<PathBuf>,
    /// How many emulators run at once (`None`: one per host CPU; 1 with `--verbose`).
    pub jobs: Option<usize>,
}

/// How many emulator tests run at once: one per host CPU unless told otherwise (each
/// emulator keeps one CPU busy, and the guests' own timing checks need that CPU), one
/// when the console output is shown live (it would interleave).
fn lanes(opts: &SuiteOptions) -> usize {
    match opts.jobs {
        Some(n) => n.max(1),
        None if opts.verbose => 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The order tests start in: the longest first, so the last to finish in each lane are
/// short. A test's length is estimated from what it boots (the Linux dom0 under Bochs
/// takes minutes, under QEMU about a minute) and then its timeout; ties keep their
/// listed order.
fn start_order(tests: &[&Test]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tests.len()).collect();
    order.sort_by_key(|&i| {
        let t = tests[i];
        std::cmp::Reverse((t.dom0 && t.emulator.is_bochs(), t.dom0, t.timeout))
    });
    order
}

/// Prepares the files a test boots before the lanes start (fixtures, the Debian kernel,
/// the debug hypervisor), so no lane spends its time building while another runs a
/// guest against the clock. Launching prepares them again, quickly and atomically.
fn prepare(test: &Test, ctx: &RunContext) -> Result<()> {
    modules_of(test)?;
    if test.emulator.boots_disk() {
        crate::debimage::image()?;
    }
    qemu::kernel_for(test, &ctx.kernel)?;
    Ok(())
}

/// Runs `tests` in `lanes` threads, handing each [`Report`] to `done` as it comes (in
/// completion order). A test whose harness fails (rather than the test itself) is
/// reported as a failure with the error, and the others still run.
fn run_lanes(tests: &[&Test], ctx: &RunContext, lanes: usize, mut done: impl FnMut(&Test, Report)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let order = start_order(tests);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Report)>();
    std::thread::scope(|scope| {
        for _ in 0..lanes.min(tests.len()) {
            let tx = tx.clone();
            let (order, next) = (&order, &next);
            scope.spawn(move || {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if ctx.verbose {
                        println!("test {} ...", tests[i].name);
                    }
                    let start = Instant::now();
                    let report = run_test(tests[i], ctx).unwrap_or_else(|e| {
                        let (console_log, emulator_log) = log_paths(tests[i].name);
                        Report {
                            passed: false,
                            problems: vec![format!("the harness failed: {e:#}")],
                            elapsed: start.elapsed(),
                            console_log,
                            emulator_log,
                            tail: Vec::new(),
                        }
                    });
                    if tx.send((i, report)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, report) in rx {
            done(tests[i], report);
        }
    });
}

/// Why a selected test is skipped, if it is.
fn skip_reason(opts: &SuiteOptions, test: &Test) -> Option<&'static str> {
    if opts.skip_bochs && test.emulator.is_bochs() {
        Some("--skip-bochs")
    } else if opts.skip_dom0 && test.dom0 {
        Some("--skip-dom0")
    } else if test.opt_in
        && !opts
            .filter
            .as_deref()
            .is_some_and(|f| f.split(',').any(|p| p == test.name))
    {
        Some("opt-in: runs only with --filter naming it in full")
    } else {
        None
    }
}

/// The emulator tests the options select, each with whether it is skipped.
fn selection(opts: &SuiteOptions) -> Vec<(Test, bool)> {
    tests::all()
        .into_iter()
        .filter(|t| {
            opts.filter
                .as_ref()
                .is_none_or(|f| f.split(',').any(|p| t.name.contains(p)))
        })
        .map(|t| {
            let skip = skip_reason(opts, &t).is_some();
            (t, skip)
        })
        .collect()
}

/// `cargo xtask test --list`.
pub fn list(opts: &SuiteOptions) {
    for (test, _) in selection(opts) {
        match skip_reason(opts, &test) {
            Some(why) => println!("{}  (skipped: {why})", test.name),
            None => println!("{}", test.name),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `cargo xtask test`: host unit tests, the build, then every emulator test.
/// Keeps going after failures so one run shows everything; exits non-zero
/// if anything failed.
pub fn run_suite(opts: &SuiteOptions) -> Result<ExitCode> {
    let selected = selection(opts);
    let mut needs = vec![prereq::Need::RustTargets];
    if !opts.skip_host {
        needs.push(prereq::Need::HostTests);
    }
    for (test, skip) in &selected {
        if *skip {
            continue;
        }
        match test.emulator {
            Emulator::Qemu { .. } => needs.push(prereq::Need::Qemu),
            Emulator::Bochs => needs.push(prereq::Need::Bochs),
        }
        if test.emulator.needs_iso() {
            needs.push(prereq::Need::Grub);
        }
        if test.emulator.boots_disk() {
            needs.push(prereq::Need::DebImage);
        }
    }
    prereq::ensure(&needs)?;
    if selected
        .iter()
        .any(|(t, skip)| !skip && t.emulator.boots_disk())
    {
        crate::debimage::prefetch();
    }

    let mut passed = 0usize;
    let mut failed: Vec<String> = Vec::new();
    let mut skipped = 0usize;

    if opts.skip_host {
        println!("host unit tests ... skipped");
        skipped += 1;
    } else {
        println!("host unit tests: cargo test --workspace");
        let t = Instant::now();
        let mut cmd = util::cargo();
        cmd.args(["test", "--workspace"])
            .env(prereq::REQUIRE_IASL_ENV, "1");
        match util::run_visible(&mut cmd) {
            Ok(()) => {
                println!("host unit tests ... ok ({})", secs(t.elapsed()));
                passed += 1;
            }
            Err(e) => {
                println!("host unit tests ... FAILED ({}): {e:#}", secs(t.elapsed()));
                failed.push("host unit tests".into());
            }
        }
        println!("lints: cargo clippy --workspace --all-targets -- -D warnings");
        let t = Instant::now();
        let mut cmd = util::cargo();
        cmd.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        match util::run_visible(&mut cmd) {
            Ok(()) => {
                println!("clippy ... ok ({})", secs(t.elapsed()));
                passed += 1;
            }
            Err(e) => {
                println!("clippy ... FAILED ({}): {e:#}", secs(t.elapsed()));
                failed.push("clippy".into());
            }
        }
        println!("lints: cargo clippy --target x86_64-unknown-none -p <hypervisor and guests> -- -D warnings");
        let t = Instant::now();
        match build::clippy_targets() {
            Ok(()) => {
                println!("clippy (bare metal) ... ok ({})", secs(t.elapsed()));
                passed += 1;
            }
            Err(e) => {
                println!(
                    "clippy (bare metal) ... FAILED ({}): {e:#}",
                    secs(t.elapsed())
                );
                failed.push("clippy (bare metal)".into());
            }
        }
        match crate::unsafe_map::check() {
            Ok(()) => {
                println!("unsafe map (code vs docs/design.md) ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("unsafe map ... FAILED: {e:#}");
                failed.push("unsafe map".into());
            }
        }
    }

    let kernel = match &opts.kernel {
        Some(path) => {
            if !path.is_file() {
                bail!("--kernel {}: no such file", path.display());
            }
            Some(std::fs::canonicalize(path)?)
        }
        None => {
            let t = Instant::now();
            match build::all(Profile::Release) {
                Ok(paths) => {
                    println!("build ... ok ({})", secs(t.elapsed()));
                    passed += 1;
                    Some(paths[0].clone())
                }
                Err(e) => {
                    println!("build ... FAILED: {e:#}");
                    failed.push("build".into());
                    None
                }
            }
        }
    };

    match kernel {
        None => {
            println!(
                "emulator tests ... not run ({} skipped: no hypervisor ELF)",
                selected.len()
            );
            skipped += selected.len();
        }
        Some(kernel) => {
            let ctx = RunContext {
                kernel,
                verbose: opts.verbose,
            };
            let mut to_run = Vec::new();
            for (test, skip) in &selected {
                if *skip {
                    let why = skip_reason(opts, test).unwrap_or("");
                    println!("test {} ... skipped ({why})", test.name);
                    skipped += 1;
                } else if let Err(e) = prepare(test, &ctx) {
                    println!(
                        "test {} ... FAILED: cannot prepare its files: {e:#}",
                        test.name
                    );
                    failed.push(test.name.to_string());
                } else {
                    to_run.push(test);
                }
            }
            let lanes = lanes(opts).min(to_run.len().max(1));
            if lanes > 1 {
                println!("emulator tests: {} in {lanes} lanes", to_run.len());
            }
            {
                run_lanes(&to_run, &ctx, lanes, |test, report| {
                    if report.passed {
                        println!("test {} ... ok ({})", test.name, secs(report.elapsed));
                        passed += 1;
                        return;
                    }
                    println!("test {} ... FAILED ({})", test.name, secs(report.elapsed));
                    for p in &report.problems {
                        println!("    {p}");
                    }
                    if !report.tail.is_empty() {
                        println!("    --- last {} lines of output ---", report.tail.len());
                        for line in &report.tail {
                            println!("    | {line}");
                        }
                    }
                    println!(
                        "    logs: {} and {}",
                        util::display_rel(&report.console_log),
                        util::display_rel(&report.emulator_log)
                    );
                    failed.push(test.name.to_string());
                });
            }
        }
    }

    crate::debimage::join_prefetch();
    println!();
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    println!(
        "summary: {passed} passed, {} failed, {skipped} skipped",
        failed.len()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    fn feed(checker: &mut Checker, lines: &[&str]) {
        for l in lines {
            checker.line(l);
        }
    }

    #[test]
    fn longest_tests_start_first_and_ties_keep_their_order() {
        let q = || Emulator::Qemu {
            accel: crate::qemu::Accel::Tcg,
            boot: QemuBoot::Kernel,
            cpu: None,
        };
        let tests = [
            Test::new("a", q()).timeout_secs(60),
            Test::new("b", q()).timeout_secs(600),
            Test::new("c", q()).timeout_secs(60),
            Test::new("d", q()).timeout_secs(300),
            Test::new("linux", q()).timeout_secs(120).dom0(),
            Test::new("bochs-linux", Emulator::Bochs)
                .timeout_secs(100)
                .dom0(),
        ];
        let refs: Vec<&Test> = tests.iter().collect();
        assert_eq!(start_order(&refs), [5, 4, 1, 3, 0, 2]);
    }

    #[test]
    fn lanes_follow_the_options() {
        let opts = |jobs, verbose| SuiteOptions {
            filter: None,
            skip_bochs: false,
            skip_host: false,
            skip_dom0: false,
            verbose,
            kernel: None,
            jobs,
        };
        assert_eq!(lanes(&opts(Some(3), true)), 3, "an explicit count wins");
        assert_eq!(lanes(&opts(Some(0), false)), 1, "never zero lanes");
        assert_eq!(lanes(&opts(None, true)), 1, "live output in one lane");
        assert!(lanes(&opts(None, false)) >= 1);
    }

    #[test]
    fn expectations_in_order() {
        let mut c = Checker::new(&["a", "b", "c"], &[]).unwrap();
        feed(&mut c, &["c", "a", "x", "b"]);
        assert!(!c.all_expected());
        assert_eq!(c.waiting_for(), Some("c"));
        let seen: Vec<String> = ["c", "a", "x", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(c.unmet(&seen), ["/c/ appeared only before /b/"]);
        let fresh = Checker::new(&["a", "b", "zz"], &[]).unwrap();
        assert_eq!(
            fresh.unmet(&seen),
            ["/a/ never appeared", "also never appeared: /zz/"]
        );
        c.line("c");
        assert!(c.all_expected());
    }

    #[test]
    fn groups_are_ordered_but_independent() {
        let groups = vec![vec!["d0 a", "d0 b"], vec!["d1 a", "d1 b"]];
        let mut c = Checker::new(&["start", "end"], &[])
            .unwrap()
            .with_groups(&groups)
            .unwrap();
        feed(&mut c, &["start", "d1 a", "d0 a", "d1 b", "end"]);
        assert!(!c.all_expected());
        assert_eq!(c.waiting_for(), Some("d0 b"));
        let seen: Vec<String> = ["d0 b", "start", "d0 a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(c.unmet(&seen), ["/d0 b/ appeared only before /d0 a/"]);
        c.line("d0 b");
        assert!(c.all_expected());
        // Order within a group still counts.
        let mut c = Checker::new(&[], &[])
            .unwrap()
            .with_groups(&groups[..1])
            .unwrap();
        feed(&mut c, &["d0 b", "d0 a"]);
        assert!(!c.all_expected());
    }

    #[test]
    fn one_line_can_meet_several() {
        let mut c = Checker::new(&[r"ferrovisor \d+", r"\d+\.\d+"], &[]).unwrap();
        c.line("ferrovisor 0.1.0");
        assert!(c.all_expected());
    }

    #[test]
    fn forbid_and_power_off() {
        let mut c = Checker::new(&[], crate::spec::DEFAULT_FORBID).unwrap();
        c.line("all fine");
        assert!(c.forbidden.is_none());
        c.line("ferrovisor: power off, exit code 3");
        assert_eq!(c.power_off_code, Some(3));
        c.line("PANIC at src/main.rs:1");
        assert_eq!(c.forbidden.as_ref().unwrap().1, "PANIC");
    }

    #[test]
    fn guest_rt_e9_tag_always_fails() {
        // Even with an empty forbid list (a test that opted out of the defaults).
        let mut c = Checker::new(&[r"PASS"], &[]).unwrap();
        c.line("(d0) guest-rt/e9: console_io failed (-ENOSYS (-38)); the text follows");
        assert_eq!(c.forbidden.as_ref().unwrap().1, "guest-rt/e9:");
        let mut c = Checker::new(&[], &[]).unwrap();
        c.line("guest-rt/e9: no Xen CPUID signature: bare mode");
        assert!(c.forbidden.is_some());
    }

    #[test]
    fn refused_frame_release_always_fails() {
        // The line `mm::phys::released` prints, in a test with no forbid list of its own.
        let mut c = Checker::new(&[r"PASS"], &[]).unwrap();
        c.line("(E) frame release refused at hypervisor/src/domain/memory.rs:596:21: frame 0x10c000 belongs to the hypervisor for good");
        assert_eq!(c.forbidden.as_ref().unwrap().1, "frame release refused at ");
        let mut c = Checker::new(&[], &[]).unwrap();
        c.line("(E) frame 0x2b392000 handed out while in use (frame-table word 0x80000000)");
        assert!(c.forbidden.is_some());
        let mut c = Checker::new(&[], &[]).unwrap();
        c.line("(I) domain 1 (bn) destroyed: 32779 frames returned");
        assert!(c.forbidden.is_none());
    }

    #[test]
    fn value_checks() {
        use crate::spec::{Check, ValueCheck};
        let near = |v: f64, now: f64| {
            if (v - now).abs() <= 5.0 {
                Ok(())
            } else {
                Err(format!("{:+.0} s from the host", v - now))
            }
        };
        let ms = |v: f64, _| {
            (1800.0..=2200.0)
                .contains(&v)
                .then_some(())
                .ok_or("out of range".into())
        };
        let checks = [
            ValueCheck {
                pattern: r"EPOCH=(\d+)",
                check: Check::Number(near),
            },
            ValueCheck {
                pattern: r"SLEPT_MS=(\d+)",
                check: Check::Number(ms),
            },
            ValueCheck {
                pattern: r"HV=(\S*)$",
                check: Check::Equals("xen"),
            },
        ];
        let mut c = Checker::new(&[r"EPOCH=(\d+)", r"SLEPT_MS=(\d+)", r"HV=(\S*)$"], &[])
            .unwrap()
            .with_values(&checks)
            .unwrap();
        c.line_at("echo EPOCH=$(date +%s)", 1000.0);
        c.line_at("EPOCH=1003", 1000.0);
        // Only the first match counts.
        c.line_at("EPOCH=5", 1000.0);
        c.line_at("SLEPT_MS=2500", 1000.0);
        c.line_at("HV=kvm", 1000.0);
        assert!(c.all_expected());
        let failures = c.value_failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("out of range"));
        assert!(failures[1].contains(r#"got "kvm", expected "xen""#));
        assert!(Checker::new(&[], &[])
            .unwrap()
            .with_values(&[ValueCheck {
                pattern: "x",
                check: Check::Number(ms)
            }])
            .is_err());
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(s.push(b"lo\r\nwor"), ["hello"]);
        assert_eq!(s.finish().as_deref(), Some("wor"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn power_off_code_in_text() {
        assert_eq!(
            power_off_code("x\nferrovisor: power off, exit code 0"),
            Some(0)
        );
        assert_eq!(power_off_code("nothing"), None);
    }

    #[test]
    fn debug_keys_are_typed_for_the_console_in_use() {
        let plain = Test::new("x", Emulator::qemu_tcg(crate::spec::QemuBoot::Kernel));
        assert_eq!(debug_key_bytes(&plain, b'q'), b"\x01\x01\x01q\x01\x01\x01");
        // QEMU's mon:stdio (a test that sends Ctrl-A c) takes Ctrl-A itself: doubled.
        let mux = plain.clone().send("x", "\x01c");
        assert_eq!(
            debug_key_bytes(&mux, b'q'),
            b"\x01\x01\x01\x01\x01\x01q\x01\x01\x01\x01\x01\x01"
        );
        // Bochs's COM1 is a socket: no escape character.
        let bochs = Test::new("x", Emulator::Bochs).send("x", "\x01c");
        assert_eq!(debug_key_bytes(&bochs, b'q'), b"\x01\x01\x01q\x01\x01\x01");
    }
}
