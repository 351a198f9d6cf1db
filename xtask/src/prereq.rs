//! Host prerequisites: Debian packages and rustup targets.
//!
//! CI machines start fresh, so every command checks what it needs before it
//! starts. As root the missing pieces are installed (apt-get, rustup); as any
//! other user the exact commands are printed and the command fails, because
//! silently calling sudo is worse than asking.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::build::BARE_METAL;
use crate::util;

/// A group of things a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The rustup targets for the hypervisor and the dom0 tools.
    RustTargets,
    /// QEMU for x86_64.
    Qemu,
    /// Bochs with the rfb display library, its BIOS and a VGA BIOS.
    Bochs,
    /// grub-mkrescue for BIOS (i386-pc) and what it calls.
    Grub,
    /// busybox-static (packed into the dom0 initramfs), cpio (to list it), and the
    /// Debian programs the initramfs images carry (iperf3, mke2fs), and objcopy for the
    /// test images it rewrites.
    Initramfs,
    /// What the host unit tests call: `iasl` (acpica-tools) for the ACPI cross-check.
    HostTests,
    /// The Debian disk image of the install tests (`cargo xtask debimage`): mmdebstrap,
    /// sfdisk, mkfs.ext4/debugfs, and dpkg-deb for the package it installs.
    DebImage,
}

impl Need {
    pub const ALL: &'static [Need] = &[
        Need::RustTargets,
        Need::Qemu,
        Need::Bochs,
        Need::Grub,
        Need::Initramfs,
        Need::HostTests,
        Need::DebImage,
    ];
}

/// How to tell whether something is installed.
enum Probe {
    /// An executable on `PATH`.
    Program(&'static str),
    /// A file or directory.
    File(&'static str),
}

/// One installed thing and the Debian package that provides it. `extra`
/// packages go into the same `apt-get install` (see the Bochs GUI note).
struct Requirement {
    need: Need,
    probe: Probe,
    package: &'static str,
}

/// The Debian 12 package map. The Bochs rfb display library
/// (`libbx_rfb_gui.so`) is in the `bochs` package itself; `bochs` also depends
/// on some GUI package and apt would pick the GTK one (bochs-wx) unless
/// another is named, so [`BOCHS_GUI`] is installed alongside.
const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        need: Need::Qemu,
        probe: Probe::Program("qemu-system-x86_64"),
        package: "qemu-system-x86",
    },
    Requirement {
        need: Need::Bochs,
        probe: Probe::Program("bochs"),
        package: "bochs",
    },
    Requirement {
        need: Need::Bochs,
        probe: Probe::File("/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_rfb_gui.so"),
        package: "bochs",
    },
    Requirement {
        need: Need::Bochs,
        probe: Probe::File(crate::bochs::BIOS),
        package: "bochsbios",
    },
    Requirement {
        need: Need::Bochs,
        probe: Probe::File(crate::bochs::VGA_BIOS),
        package: "vgabios",
    },
    Requirement {
        need: Need::Grub,
        probe: Probe::Program("grub-mkrescue"),
        package: "grub-common",
    },
    Requirement {
        need: Need::Grub,
        probe: Probe::File(crate::image::GRUB_PLATFORM_DIR),
        package: "grub-pc-bin",
    },
    Requirement {
        need: Need::Grub,
        probe: Probe::Program("xorriso"),
        package: "xorriso",
    },
    Requirement {
        need: Need::Grub,
        probe: Probe::Program("mformat"),
        package: "mtools",
    },
    // The initramfs needs the static busybox at this path; the dynamically
    // linked `busybox` package installs /bin/busybox too, so a present but
    // dynamic one is reported by the initramfs builder, not here.
    Requirement {
        need: Need::Initramfs,
        probe: Probe::File(crate::initramfs::BUSYBOX),
        package: "busybox-static",
    },
    Requirement {
        need: Need::Initramfs,
        probe: Probe::Program("cpio"),
        package: "cpio",
    },
    // Programs copied with their shared libraries into both initramfs images
    // (crate::initramfs::HOST_PROGRAMS): the PV I/O tests and the bench use them.
    Requirement {
        need: Need::Initramfs,
        probe: Probe::File("/usr/bin/iperf3"),
        package: "iperf3",
    },
    Requirement {
        need: Need::Initramfs,
        probe: Probe::File("/usr/sbin/mke2fs"),
        package: "e2fsprogs",
    },
    // objcopy makes the ELF32 (machine x86-64) copy of a test guest that the kernel
    // format tests boot (crate::tests_compat).
    Requirement {
        need: Need::Initramfs,
        probe: Probe::Program("objcopy"),
        package: "binutils",
    },
    // acpi-tables cross-checks the tables it builds with ACPICA's disassembler; under
    // `cargo xtask test` a missing iasl fails that test (see REQUIRE_IASL_ENV).
    Requirement {
        need: Need::HostTests,
        probe: Probe::Program("iasl"),
        package: "acpica-tools",
    },
    Requirement {
        need: Need::DebImage,
        probe: Probe::Program("mmdebstrap"),
        package: "mmdebstrap",
    },
    Requirement {
        need: Need::DebImage,
        probe: Probe::Program("sfdisk"),
        package: "fdisk",
    },
    Requirement {
        need: Need::DebImage,
        probe: Probe::Program("debugfs"),
        package: "e2fsprogs",
    },
    Requirement {
        need: Need::DebImage,
        probe: Probe::Program("dpkg-deb"),
        package: "dpkg",
    },
];

/// Set by `cargo xtask test` for the host unit tests: the acpi-tables cross-check then
/// fails, instead of skipping, when `iasl` is missing.
pub const REQUIRE_IASL_ENV: &str = "FERROVISOR_REQUIRE_IASL";

/// The smallest Bochs GUI package (ncurses); it satisfies `bochs`'s
/// dependency on a GUI so apt does not pull in GTK via bochs-wx.
const BOCHS_GUI: &str = "bochs-term";

/// Rustup targets the workspace builds for.
const RUST_TARGETS: &[&str] = &[BARE_METAL, crate::build::DOM0_TARGET];

impl Probe {
    fn present(&self) -> bool {
        match self {
            Probe::Program(name) => util::on_path(name),
            Probe::File(path) => Path::new(path).exists(),
        }
    }
}

/// Makes sure everything in `needs` is present, installing it as root; for QEMU also
/// the fixed build the tests run (`qemu_build`).
pub fn ensure(needs: &[Need]) -> Result<()> {
    ensure_packages(needs)?;
    if needs.contains(&Need::Qemu) {
        crate::qemu_build::ensure()?;
    }
    Ok(())
}

fn ensure_packages(needs: &[Need]) -> Result<()> {
    let mut packages: Vec<&str> = REQUIREMENTS
        .iter()
        .filter(|r| needs.contains(&r.need) && !r.probe.present())
        .map(|r| r.package)
        .collect();
    if packages.contains(&"bochs") {
        packages.push(BOCHS_GUI);
    }
    packages.sort_unstable();
    packages.dedup();

    let targets = if needs.contains(&Need::RustTargets) {
        missing_rust_targets()
    } else {
        Vec::new()
    };

    if packages.is_empty() && targets.is_empty() {
        return Ok(());
    }

    let root = crate::process::is_root();
    let apt = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    let rustup = format!("rustup target add {}", targets.join(" "));
    if !root {
        let mut msg = String::from("missing prerequisites; run:\n");
        if !packages.is_empty() {
            msg += &format!("  sudo sh -c '{apt}'\n");
        }
        if !targets.is_empty() {
            msg += &format!("  {rustup}\n");
        }
        bail!("{}", msg.trim_end());
    }

    if !packages.is_empty() {
        eprintln!("xtask: installing missing packages: {}", packages.join(" "));
        apt_install(&packages)?;
    }
    if !targets.is_empty() {
        eprintln!("xtask: adding rustup targets: {}", targets.join(" "));
        let mut cmd = Command::new("rustup");
        cmd.current_dir(util::repo_root())
            .args(["target", "add"])
            .args(&targets);
        util::run_visible(&mut cmd)?;
    }
    // Re-probe: an install that "succeeded" but left a file missing means the
    // package map above is wrong, which is better reported here than as a
    // confusing failure later.
    let still: Vec<String> = REQUIREMENTS
        .iter()
        .filter(|r| needs.contains(&r.need) && !r.probe.present())
        .map(|r| match r.probe {
            Probe::Program(p) => format!("program {p} ({})", r.package),
            Probe::File(f) => format!("file {f} ({})", r.package),
        })
        .collect();
    if !still.is_empty() {
        bail!("still missing after install: {}", still.join(", "));
    }
    Ok(())
}

static APT_UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the next [`apt_install`] run `apt-get update` (after a source was added).
pub fn apt_lists_stale() {
    APT_UPDATED.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// This machine's Debian codename (`VERSION_CODENAME` in /etc/os-release), if any.
pub fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// `apt-get update` (once per run, and again after [`apt_lists_stale`]) and `apt-get
/// install`.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    use std::sync::atomic::Ordering;
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        util::run_visible(Command::new("apt-get").args(["update", "-q"]))?;
    }
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages);
    util::run_visible(&mut cmd)
}

/// Rustup targets of the repository's toolchain that are not installed. With
/// no rustup (a distribution's cargo) there is nothing to check: the build
/// will say what is missing.
fn missing_rust_targets() -> Vec<&'static str> {
    let output = Command::new("rustup")
        .current_dir(util::repo_root())
        .args(["target", "list", "--installed"])
        .output();
    let installed = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            eprintln!(
                "xtask: warning: `rustup target list --installed` failed; not checking targets"
            );
            return Vec::new();
        }
    };
    RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect()
}
