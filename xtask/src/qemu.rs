//! QEMU: command lines, accelerator choice and the exit-status convention.
//!
//! The hypervisor reports its result through QEMU's `isa-debug-exit` device
//! at I/O port 0xf4: writing a 32-bit value V makes QEMU exit with status
//! (V << 1) | 1. ferrovisor writes V = 0 for success and V = 1 for failure,
//! so QEMU's status 1 means success and 3 failure. Status 0 means QEMU ended
//! otherwise: the user quit, or the guest reset (with `-no-reboot` a triple
//! fault ends QEMU with status 0).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context, Result};

use crate::image::{self, Loader, Module};
use crate::util;

/// Command line used by `run-qemu` before the user's own words.
pub const DEFAULT_CMDLINE: &str = "console=com1";

/// The debug-exit port and width the hypervisor writes its exit code to.
pub const DEBUG_EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// How QEMU executes guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Emulation (`-cpu max`: AMD SVM with nested paging, no VMX).
    Tcg,
    /// Emulation as [`Accel::Tcg`], with every vCPU on one host thread in turn (QEMU's
    /// round-robin TCG): a vCPU is stopped at any instruction for as long as the others
    /// run, which turns races and emulator quirks that multi-threaded TCG hits once in
    /// many runs into ones hit in most.
    TcgOneThread,
    /// Hardware virtualization; needs nested virtualization on the host.
    Kvm,
}

impl Accel {
    /// KVM only when it can run a hypervisor inside: /dev/kvm opens, the KVM
    /// module allows nested guests, and the CPU has VMX or SVM. Anything less
    /// (a paravirtual /dev/kvm without nesting, as on the project's machines)
    /// would boot but fail the moment ferrovisor enables VMX/SVM.
    pub fn detect() -> Accel {
        if kvm_nested_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::TcgOneThread => "tcg,thread=single",
            Accel::Kvm => "kvm",
        }
    }

    /// The CPU model: everything the accelerator offers.
    pub fn default_cpu(self) -> &'static str {
        match self {
            Accel::Tcg | Accel::TcgOneThread => "max",
            Accel::Kvm => "host",
        }
    }
}

fn kvm_nested_usable() -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !opens {
        return false;
    }
    let nested = ["kvm_intel", "kvm_amd"].iter().any(|module| {
        std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested"))
            .map(|v| matches!(v.trim(), "Y" | "y" | "1"))
            .unwrap_or(false)
    });
    let cpu_has_virt = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false);
    nested && cpu_has_virt
}

/// How the hypervisor gets loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootKind {
    /// QEMU's built-in multiboot v1 loader (`-kernel`, `-initrd`): fastest.
    Kernel,
    /// SeaBIOS, then GRUB from an ISO with `multiboot2` (the Xen way).
    Iso,
}

/// Where the serial console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// Multiplexed with QEMU's monitor on the terminal (Ctrl-A x quits,
    /// Ctrl-A c switches to the monitor): for people.
    MonitorStdio,
    /// Plain stdin/stdout pipes, no monitor: for the test harness.
    Stdio,
}

/// The serial setting for a test: the monitor is multiplexed on the serial line when the
/// test types into it (a send with Ctrl-A c, e.g. `\x01cnmi\n\x01c` sends an NMI).
pub fn serial_for(sends: &[crate::spec::Send]) -> Serial {
    if sends.iter().any(|s| s.text.contains("\x01c")) {
        Serial::MonitorStdio
    } else {
        Serial::Stdio
    }
}

/// The hypervisor a test boots: the debug build if it asks for one (overflow checks
/// live), else `default`.
pub fn kernel_for(test: &crate::spec::Test, default: &Path) -> anyhow::Result<std::path::PathBuf> {
    match test.hypervisor {
        Some(profile) => crate::build::hypervisor(profile),
        None => Ok(default.to_path_buf()),
    }
}

/// A complete QEMU configuration.
pub struct Config<'a> {
    pub accel: Accel,
    /// CPU model and flags; `None` means [`Accel::default_cpu`].
    pub cpu: Option<&'a str>,
    /// How many CPUs (`-smp` when more than one).
    pub cpus: u32,
    pub memory: &'a str,
    pub serial: Serial,
    /// Working directory with `ferrovisor` and the modules (or the ISO).
    pub boot_dir: &'a Path,
    pub boot: Boot<'a>,
    pub extra_args: &'a [String],
}

/// What QEMU boots.
pub enum Boot<'a> {
    /// `-kernel`/`-append`/`-initrd` with files inside `boot_dir`.
    Kernel {
        cmdline: &'a str,
        modules: &'a [Module],
    },
    /// A CD image (file name inside `boot_dir`).
    Iso(&'a str),
    /// A raw hard disk image on an AHCI (SATA) controller, booted by its own boot loader;
    /// the machine may reboot (no `-no-reboot`).
    Disk(&'a Path),
}

/// Places the kernel and modules in `dir` under their boot names (symbolic
/// links), so that QEMU can be given short relative names: QEMU passes each
/// `-initrd` entry's text verbatim as the module's string and puts the kernel
/// path first on the command line, and relative names make both read
/// "ferrovisor ..." and "mod-a.txt alpha one" — the same as under GRUB, and
/// independent of where the repository is checked out.
pub fn stage_kernel_dir(dir: &Path, kernel: &Path, modules: &[Module]) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    link(kernel, &dir.join("ferrovisor"))?;
    for module in modules {
        let target = dir.join(module.name());
        if target.exists() {
            anyhow::bail!(
                "two modules named {}: QEMU -kernel boot needs unique names",
                module.name()
            );
        }
        link(&module.path, &target)?;
    }
    Ok(())
}

fn link(from: &Path, to: &Path) -> Result<()> {
    let from = std::fs::canonicalize(from)
        .with_context(|| format!("cannot resolve {}", from.display()))?;
    std::os::unix::fs::symlink(&from, to)
        .with_context(|| format!("cannot link {} to {}", to.display(), from.display()))
}

/// The `-initrd` value: modules separated by commas, each "name args".
/// QEMU's option parser takes ",," for a literal comma.
fn initrd_arg(modules: &[Module]) -> String {
    modules
        .iter()
        .map(|m| m.cmdline().replace(',', ",,"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the QEMU command.
pub fn command(config: &Config) -> Command {
    let mut cmd = crate::qemu_build::command();
    cmd.current_dir(config.boot_dir);
    cmd.args(["-accel", config.accel.name()])
        .args(["-cpu", config.cpu.unwrap_or(config.accel.default_cpu())]);
    if config.cpus > 1 {
        cmd.args(["-smp", &config.cpus.to_string()]);
    }
    cmd.args(["-m", config.memory])
        .args(["-display", "none", "-vga", "std", "-nic", "none"]);
    if !matches!(config.boot, Boot::Disk(_)) {
        cmd.arg("-no-reboot");
    }
    cmd.args(["-device", DEBUG_EXIT_DEVICE]);
    match config.serial {
        Serial::MonitorStdio => cmd.args(["-serial", "mon:stdio"]),
        Serial::Stdio => cmd.args(["-serial", "stdio", "-monitor", "none"]),
    };
    match &config.boot {
        Boot::Kernel { cmdline, modules } => {
            cmd.args(["-kernel", "ferrovisor", "-append", cmdline]);
            if !modules.is_empty() {
                cmd.args(["-initrd", &initrd_arg(modules)]);
            }
        }
        Boot::Iso(iso) => {
            cmd.args(["-cdrom", iso, "-boot", "d"]);
        }
        Boot::Disk(disk) => {
            let mut drive = std::ffi::OsString::from("file=");
            drive.push(disk.as_os_str());
            drive.push(",format=raw,if=none,id=disk0");
            cmd.arg("-drive").arg(drive).args([
                "-device",
                "ahci,id=ahci",
                "-device",
                "ide-hd,drive=disk0,bus=ahci.0,bootindex=1",
            ]);
        }
    }
    cmd.args(config.extra_args);
    // For debugging a run by hand (e.g. `-d cpu_reset -D /tmp/qemu.log`): appended as is,
    // split at spaces.
    if let Ok(extra) = std::env::var("XTASK_QEMU_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd
}

/// What a QEMU exit status says about the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor wrote this code to the debug-exit port (0 = success).
    PowerOff(u32),
    /// QEMU ended without a debug-exit write: quit by the user, a guest
    /// reset or triple fault (`-no-reboot`), or an ACPI power-off.
    NoDebugExit,
    /// Killed by a signal (by us on a timeout, usually).
    Killed,
}

/// Maps QEMU's exit status back to the hypervisor's code. Caveat: QEMU also
/// exits with 1 when it cannot start (bad option, missing file), which reads
/// as "power off, code 0"; callers check QEMU's stderr for that.
pub fn outcome(status: ExitStatus) -> Outcome {
    match status.code() {
        None => Outcome::Killed,
        Some(0) => Outcome::NoDebugExit,
        Some(code) => Outcome::PowerOff((code as u32) >> 1),
    }
}

/// Whether QEMU's `-d cpu_reset` log (its stderr) reports a triple fault.
pub fn logged_triple_fault(stderr: &str) -> bool {
    stderr.lines().any(|l| l.trim() == "Triple fault")
}

/// What `run-qemu` needs.
pub struct RunSpec {
    pub kernel: PathBuf,
    pub cmdline: String,
    pub modules: Vec<Module>,
    pub accel: Accel,
    pub boot: BootKind,
    pub memory: String,
    pub extra_args: Vec<String>,
}

/// `cargo xtask run-qemu`: QEMU in the foreground on this terminal.
pub fn run_interactive(spec: &RunSpec) -> Result<ExitCode> {
    let dir = util::xtask_dir().join("run-qemu");
    let iso_name = "ferrovisor.iso";
    let boot = match spec.boot {
        BootKind::Kernel => {
            stage_kernel_dir(&dir, &spec.kernel, &spec.modules)?;
            Boot::Kernel {
                cmdline: &spec.cmdline,
                modules: &spec.modules,
            }
        }
        BootKind::Iso => {
            std::fs::create_dir_all(&dir)?;
            image::build_iso(&image::IsoSpec {
                kernel: spec.kernel.clone(),
                cmdline: spec.cmdline.clone(),
                modules: spec.modules.clone(),
                loader: Loader::Multiboot2,
                output: dir.join(iso_name),
            })?;
            Boot::Iso(iso_name)
        }
    };
    let mut cmd = command(&Config {
        accel: spec.accel,
        cpu: None,
        cpus: 1,
        memory: &spec.memory,
        serial: Serial::MonitorStdio,
        boot_dir: &dir,
        boot,
        extra_args: &spec.extra_args,
    });
    eprintln!(
        "$ (cd {} && {})",
        util::display_rel(&dir),
        util::show_command(&cmd)
    );
    eprintln!(
        "xtask: QEMU {} — serial console below; quit with Ctrl-A x",
        spec.accel.name()
    );
    let status = cmd.status().context("cannot start qemu-system-x86_64")?;
    Ok(match outcome(status) {
        Outcome::PowerOff(code) => {
            eprintln!(
                "xtask: hypervisor powered off with exit code {code} (QEMU exit status {})",
                status.code().unwrap_or(-1)
            );
            ExitCode::from(code.min(255) as u8)
        }
        Outcome::NoDebugExit => {
            eprintln!("xtask: QEMU ended without a debug-exit code (quit, reset or triple fault)");
            ExitCode::from(2)
        }
        Outcome::Killed => {
            eprintln!("xtask: QEMU was killed ({status})");
            ExitCode::from(2)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use Outcome::PowerOff;

    #[test]
    fn cpu_count_gives_smp() {
        let dir = Path::new("/tmp");
        let args = |cpus| {
            let cmd = command(&Config {
                accel: Accel::Tcg,
                cpu: None,
                cpus,
                memory: "1G",
                serial: Serial::Stdio,
                boot_dir: dir,
                boot: Boot::Iso("x.iso"),
                extra_args: &[],
            });
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(args(4).contains("-cpu max -smp 4 -m 1G"));
        assert!(args(2).contains("-cpu max -smp 2 -m 1G"));
        let one = args(1);
        assert!(
            one.contains("-cpu max -m 1G") && !one.contains("-smp"),
            "{one}"
        );
    }

    #[test]
    fn exit_status_maps_back() {
        // ExitStatus::from_raw takes a wait status: exit code << 8.
        assert_eq!(outcome(ExitStatus::from_raw(1 << 8)), PowerOff(0));
        assert_eq!(outcome(ExitStatus::from_raw(3 << 8)), PowerOff(1));
        assert_eq!(outcome(ExitStatus::from_raw(0)), Outcome::NoDebugExit);
        assert_eq!(outcome(ExitStatus::from_raw(9)), Outcome::Killed);
        assert!(logged_triple_fault(
            "CPU Reset (CPU 0)\nTriple fault\nCPU Reset (CPU 0)\n"
        ));
        assert!(!logged_triple_fault("CPU Reset (CPU 0)\nEAX=00000000\n"));
    }

    #[test]
    fn initrd_escapes_commas() {
        let mods = [
            Module {
                path: "/x/mod-a.txt".into(),
                args: "alpha one".into(),
            },
            Module {
                path: "/y/b".into(),
                args: "a,b".into(),
            },
        ];
        assert_eq!(initrd_arg(&mods), "mod-a.txt alpha one,b a,,b");
    }
}
