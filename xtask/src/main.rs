//! `cargo xtask`: ferrovisor's developer tasks.
//!
//! Everything a developer or CI does beyond plain `cargo build` lives here, in
//! Rust rather than shell, so that it runs the same on every machine: building
//! the hypervisor for bare metal, packing a GRUB boot ISO, booting it under QEMU
//! or Bochs, and running the whole test suite (host unit tests plus emulator
//! boot tests described as data in [`tests`]).
//!
//! The crate is host-only and depends on no workspace crate, so it keeps
//! working while the hypervisor itself does not compile.
#![deny(unsafe_code)]

mod bench;
mod bochs;
mod build;
mod deb;
mod debimage;
mod fuzz;
mod harness;
mod image;
mod initramfs;
mod linux;
mod prereq;
mod process;
mod profile;
mod qemu;
mod qemu_build;
mod spec;
mod tests;
mod tests_compat;
mod tests_dom0;
mod tests_dom0dev;
mod tests_grant;
mod tests_hostile_cpu;
mod tests_hostile_hcall;
mod tests_install;
mod tests_multi;
mod tests_pci;
mod tests_pvio;
mod tests_smp;
mod tests_toolstack;
mod unsafe_map;
mod util;
mod xen;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::build::Profile;
use crate::image::{Loader, ModuleArg};

/// Developer tasks for ferrovisor (run as `cargo xtask <command>`).
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that boots the hypervisor.
#[derive(clap::Args, Clone)]
struct KernelOpts {
    /// Use the debug build instead of the release build.
    #[arg(long)]
    debug: bool,
    /// Boot this ELF instead of building the hypervisor (skips `cargo build`).
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Add a boot module: a file, optionally followed by `=` and its arguments
    /// (the module's command line is "<file name> <arguments>", as with Xen).
    /// Repeatable; order is kept.
    #[arg(long = "module", value_name = "PATH[=ARGS]")]
    modules: Vec<ModuleArg>,
    /// run-qemu/run-bochs: boot this test guest (tests/guests/NAME, e.g.
    /// `hello`) instead of the default, the Debian dom0 (see `dom0-assets`).
    #[arg(long, value_name = "NAME", conflicts_with = "modules")]
    guest: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Build the hypervisor ELF (and, as they appear, test guests and tools).
    Build {
        /// Build with the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build a GRUB rescue ISO that boots the hypervisor with its modules: by default
    /// what `run-qemu` boots (the Debian dom0 kernel and the initramfs with the tools), to
    /// write to a USB stick; `--module`/`--guest` choose other modules.
    Iso {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Only the hypervisor, without modules (it then reports that it has no dom0).
        #[arg(long, conflicts_with_all = ["modules", "guest"])]
        hypervisor_only: bool,
        /// Hypervisor command line written into grub.cfg.
        #[arg(long, default_value = "console=com1")]
        cmdline: String,
        /// GRUB loader command for the hypervisor: multiboot2 (as for Xen) or
        /// multiboot (v1, a fallback).
        #[arg(long, value_enum, default_value_t = Loader::Multiboot2)]
        loader: Loader,
        /// Where to write the ISO (default: target/xtask/ferrovisor.iso).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build the Debian package (hypervisor, dom0 tools, systemd units, GRUB hook).
    Deb {
        /// Where to write the .deb (default: target/xtask/ferrovisor_<version>_amd64.deb).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build a Debian bookworm disk image (systemd, the stock kernel, GRUB) with the
    /// package installed, as the install tests boot it (as root; see README.md).
    Debimage {
        /// Copy the image here (default: it stays in target/debimage/bookworm.img).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Boot the hypervisor in QEMU with its serial console on this terminal.
    ///
    /// Quit with Ctrl-A x. The exit status is the hypervisor's power-off code
    /// (0 = success), or 2 when it did not power off through isa-debug-exit.
    RunQemu {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Accelerator: kvm needs /dev/kvm with nested virtualization;
        /// default: kvm when usable, else tcg.
        #[arg(long, value_enum)]
        accel: Option<qemu::Accel>,
        /// Boot path: kernel = QEMU's own multiboot v1 loader (`-kernel`),
        /// iso = GRUB multiboot2 from a CD image.
        #[arg(long, value_enum, default_value_t = qemu::BootKind::Kernel)]
        boot: qemu::BootKind,
        /// Guest memory size as QEMU writes it.
        #[arg(long, default_value = "1G")]
        memory: String,
        /// How many CPUs the emulated machine has (QEMU's -smp); the hypervisor
        /// schedules vCPUs on all of them.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
        cpus: u32,
        /// Extra arguments for QEMU itself, e.g. `--qemu-arg=-s`.
        #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
        /// Words appended to the hypervisor command line (after `console=com1`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmdline: Vec<String>,
    },
    /// Boot the hypervisor ISO in Bochs (VMX-capable CPU model).
    ///
    /// The serial console (COM1) is relayed to this terminal (typed lines go
    /// to the guest) or to --serial-file. The exit status is the hypervisor's
    /// power-off code, or 2 when Bochs stopped for another reason.
    RunBochs {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Write COM1 output to this file (live, unbuffered) instead of the
        /// terminal; the terminal then shows Bochs's own output (port 0xE9).
        #[arg(long, value_name = "PATH")]
        serial_file: Option<PathBuf>,
        /// Words appended to the hypervisor command line (after `console=com1,e9`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmdline: Vec<String>,
    },
    /// Run every test: host unit tests, the build, and the emulator tests.
    Test {
        /// Run only emulator tests whose name contains this text (several texts:
        /// comma-separated; an opt-in test runs only when named in full).
        #[arg(long)]
        filter: Option<String>,
        /// Skip the Bochs tests (slow).
        #[arg(long)]
        skip_bochs: bool,
        /// Skip the host unit tests (`cargo test --workspace`) and clippy.
        #[arg(long)]
        skip_host: bool,
        /// Skip the tests that boot the Debian dom0 kernel (they download it
        /// on first use; see `dom0-assets`).
        #[arg(long)]
        skip_dom0: bool,
        /// List the emulator tests and exit.
        #[arg(long)]
        list: bool,
        /// Echo each test's console output live.
        #[arg(long, short)]
        verbose: bool,
        /// Boot this ELF instead of building the hypervisor.
        #[arg(long, value_name = "ELF")]
        kernel: Option<PathBuf>,
        /// How many emulator tests run at once (default: one per host CPU, or 1 with
        /// --verbose). Results are printed as tests finish, longest tests start first.
        #[arg(long, short, value_name = "N")]
        jobs: Option<usize>,
    },
    /// Fetch the Debian dom0 kernel (the package `linux-image-amd64` depends
    /// on now) into target/dom0/ and pack the dom0 initramfs; print what is where.
    ///
    /// run-qemu, run-bochs and test do this by themselves when they need it.
    Dom0Assets {
        /// Also list the initramfs contents.
        #[arg(long)]
        list: bool,
    },
    /// Boot the dom0 kernel and initramfs without the hypervisor (QEMU
    /// `-kernel`, Bochs through GRUB `linux`) and report the time from
    /// emulator start to the userspace banner, for comparison with dom0.
    Dom0Baseline {
        /// Which emulator; default: QEMU, then Bochs.
        #[arg(long, value_enum, default_value_t = linux::BaselineEmulator::Both)]
        emulator: linux::BaselineEmulator,
    },
    /// Measure ferrovisor against references booted in the same run: boot
    /// time to dom0 userspace (against the same kernel without hypervisor),
    /// hypercall and CPUID exit cost (against Debian's Xen 4.17), interdomain
    /// event-channel round trip (against the same guest's loopback in one
    /// domain) and scheduler context switch (derived from those two, against
    /// the null hypercall), on QEMU TCG and Bochs. Prints medians and ratios;
    /// writes target/xtask/bench.md.
    Bench {
        /// Runs per setup (default: 5 on QEMU, 3 on Bochs).
        #[arg(long)]
        runs: Option<u32>,
        /// Skip Bochs (slow: about half an hour).
        #[arg(long)]
        skip_bochs: bool,
        /// Skip QEMU.
        #[arg(long)]
        skip_qemu: bool,
        /// Only the figures whose name contains this text (several texts:
        /// comma-separated, e.g. `interdomain,context switch`).
        #[arg(long)]
        filter: Option<String>,
        /// Boot this ELF instead of building the hypervisor.
        #[arg(long, value_name = "ELF")]
        kernel: Option<PathBuf>,
        /// Sample every CPU (hypervisor and guests) through QEMU's gdbstub about 60
        /// times a second; each run writes profile.md next to its console log. Linux
        /// symbols come from FERROVISOR_KALLSYMS (an nm-style list). Slows the runs.
        #[arg(long)]
        profile: bool,
    },
    /// Install (as root) or list the host packages and Rust targets every
    /// command needs.
    Prereq,
    /// Fuzz one target or all (libFuzzer via cargo-fuzz, installed if missing; niced);
    /// prints executions and crashes per target, fails on a crash, and keeps
    /// fuzz/corpus/<target> minimal. See docs/fuzzing.md.
    Fuzz {
        /// Target name (`mb1`, `xlcfg`, ...); default: every target.
        target: Option<String>,
        /// Seconds per target (default 60 unless --runs is given).
        #[arg(long, value_name = "S")]
        time: Option<u64>,
        /// Stop each target after this many executions.
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
        /// Leave fuzz/corpus untouched.
        #[arg(long)]
        no_save: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Gets the hypervisor ELF: the one given with `--kernel`, or a fresh build.
fn kernel_elf(opts: &KernelOpts) -> Result<PathBuf> {
    match &opts.kernel {
        Some(path) => {
            if !path.is_file() {
                bail!("--kernel {}: no such file", path.display());
            }
            Ok(path.clone())
        }
        None => {
            prereq::ensure(&[prereq::Need::RustTargets])?;
            build::hypervisor(Profile::from_debug(opts.debug))
        }
    }
}

/// What run-qemu/run-bochs boot: the `--module`s, the `--guest`, or by
/// default the Debian dom0 (kernel `console=hvc0 earlyprintk=xen` and the
/// initramfs, as Xen is booted). Also says whether that is dom0.
fn boot_modules(opts: &KernelOpts) -> Result<(Vec<image::Module>, bool)> {
    if !opts.modules.is_empty() {
        return Ok((image::modules_from_args(&opts.modules)?, false));
    }
    if let Some(name) = &opts.guest {
        let package = format!("guest-{name}");
        let Some(artifact) = build::ARTIFACTS.iter().find(|a| a.package == package) else {
            let known: Vec<&str> = build::ARTIFACTS
                .iter()
                .filter_map(|a| a.package.strip_prefix("guest-"))
                .collect();
            bail!(
                "--guest {name}: no such test guest (known: {})",
                known.join(", ")
            );
        };
        let built = build::build(&[artifact], Profile::Release)?;
        let modules = built
            .into_iter()
            .map(|path| image::Module {
                path,
                args: name.clone(),
            })
            .collect();
        return Ok((modules, false));
    }
    let assets = linux::assets()?;
    eprintln!(
        "xtask: dom0 = Debian kernel {} + {}",
        assets.version,
        util::display_rel(&assets.initramfs)
    );
    Ok((assets.boot_modules(), true))
}

/// The hypervisor command line of run-qemu/run-bochs: `base`, `dom_mem`
/// when booting dom0, then the user's words (which come last, so they win).
fn run_cmdline(base: &str, dom0: bool, dom0_mem: &str, user: &[String]) -> String {
    let base = if dom0 {
        util::join_cmdline(base, &[dom0_mem.to_string()])
    } else {
        base.to_string()
    };
    util::join_cmdline(&base, user)
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Build { debug } => {
            prereq::ensure(&[prereq::Need::RustTargets])?;
            for path in build::all(Profile::from_debug(debug))? {
                println!("built {}", util::display_rel(&path));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Iso {
            kernel,
            hypervisor_only,
            cmdline,
            loader,
            output,
        } => {
            prereq::ensure(&[prereq::Need::Grub])?;
            let elf = kernel_elf(&kernel)?;
            let output = output.unwrap_or_else(|| util::xtask_dir().join("ferrovisor.iso"));
            let modules = if hypervisor_only {
                Vec::new()
            } else {
                boot_modules(&kernel)?.0
            };
            image::build_iso(&image::IsoSpec {
                kernel: elf,
                cmdline,
                modules,
                loader,
                output: output.clone(),
            })?;
            println!("wrote {}", util::display_rel(&output));
            Ok(ExitCode::SUCCESS)
        }
        Command::Deb { output } => {
            prereq::ensure(&[prereq::Need::RustTargets])?;
            let path = deb::build(output)?;
            println!("wrote {}", util::display_rel(&path));
            Ok(ExitCode::SUCCESS)
        }
        Command::Debimage { output } => {
            prereq::ensure(&[prereq::Need::RustTargets, prereq::Need::DebImage])?;
            debimage::cmd(output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RunQemu {
            kernel,
            accel,
            boot,
            memory,
            cpus,
            mut qemu_args,
            cmdline,
        } => {
            if cpus > 1 {
                qemu_args.extend(["-smp".to_string(), cpus.to_string()]);
            }
            let mut needs = vec![prereq::Need::Qemu];
            if boot == qemu::BootKind::Iso {
                needs.push(prereq::Need::Grub);
            }
            prereq::ensure(&needs)?;
            let elf = kernel_elf(&kernel)?;
            let (modules, dom0) = boot_modules(&kernel)?;
            let cmdline = run_cmdline(
                qemu::DEFAULT_CMDLINE,
                dom0,
                linux::DOM0_MEM_OPTION,
                &cmdline,
            );
            qemu::run_interactive(&qemu::RunSpec {
                kernel: elf,
                cmdline,
                modules,
                accel: accel.unwrap_or_else(qemu::Accel::detect),
                boot,
                memory,
                extra_args: qemu_args,
            })
        }
        Command::RunBochs {
            kernel,
            serial_file,
            cmdline,
        } => {
            prereq::ensure(&[prereq::Need::Bochs, prereq::Need::Grub])?;
            let elf = kernel_elf(&kernel)?;
            let (modules, dom0) = boot_modules(&kernel)?;
            // run-bochs gives the machine 512 MiB (bochs::run_interactive),
            // so dom0 gets less than under run-qemu.
            let cmdline = run_cmdline(
                bochs::DEFAULT_CMDLINE,
                dom0,
                linux::DOM0_MEM_OPTION,
                &cmdline,
            );
            bochs::run_interactive(&elf, &cmdline, modules, serial_file.as_deref())
        }
        Command::Test {
            filter,
            skip_bochs,
            skip_host,
            skip_dom0,
            list,
            verbose,
            kernel,
            jobs,
        } => {
            let opts = harness::SuiteOptions {
                filter,
                skip_bochs,
                skip_host,
                skip_dom0,
                verbose,
                kernel,
                jobs,
            };
            if list {
                harness::list(&opts);
                return Ok(ExitCode::SUCCESS);
            }
            harness::run_suite(&opts)
        }
        Command::Dom0Assets { list } => linux::cmd_assets(list),
        Command::Dom0Baseline { emulator } => linux::cmd_baseline(emulator),
        Command::Bench {
            runs,
            skip_bochs,
            skip_qemu,
            filter,
            kernel,
            profile,
        } => bench::run(&bench::Options {
            runs,
            skip_bochs,
            skip_qemu,
            filter,
            kernel,
            profile,
        }),
        Command::Fuzz {
            target,
            time,
            runs,
            no_save,
        } => fuzz::run(&fuzz::Options {
            target,
            time,
            runs,
            no_save,
        }),
        Command::Prereq => {
            prereq::ensure(prereq::Need::ALL)?;
            println!("all prerequisites are present");
            Ok(ExitCode::SUCCESS)
        }
    }
}
