//! The QEMU the emulator tests run: Debian's own source package, built with one data race
//! in multi-threaded TCG fixed.
//!
//! The race (QEMU 7.2 and 10.0 alike): restoring an x87 status word (FLDENV, FRSTOR,
//! FXRSTOR, XRSTOR; `cpu_set_fpus`) calls `cpu_clear_ignne`, which clears IGNNE in the
//! *first* CPU's `hflags2` with a plain read-modify-write, from whichever vCPU thread ran
//! the instruction. If that thread is preempted between its load and its store while CPU
//! 0 enters or leaves a guest, the store puts back CPU 0's old flags: the guest then runs
//! with nested paging off (its first page walk reads host memory and it triple-faults), or
//! the host runs on after #VMEXIT with nested paging still on (its own IDT is unreachable
//! and the machine resets). That was issue 11's intermittent failure (docs/design.md, "vCPU
//! hardware context"). The fix makes QEMU's two IGNNE updates atomic.
//!
//! The build is `x86_64-softmmu` only, runs with the firmware Debian's `qemu-system-data`
//! and `seabios` install (`-L`), and lives in `target/xtask/qemu`. Without root it
//! prints what to run; with `FERROVISOR_SYSTEM_QEMU=1` the system's QEMU is used instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// Set to use the system's `qemu-system-x86_64` (unfixed) instead of the build.
pub const SYSTEM_QEMU_ENV: &str = "FERROVISOR_SYSTEM_QEMU";

/// What the fix replaces, and with what (the directory is `sysemu` in 7.2, `system` in
/// later QEMUs). CPU 0's own updates of its `hflags2` stay plain: another thread's atomic
/// update never stores a stale value over them, and what CPU 0 could still overwrite is
/// only a concurrent IGNNE change (the legacy FPU-error pin, which nothing here uses).
const FIX: &[(&str, &str)] = &[
    (
        "env->hflags2 &= ~HF2_IGNNE_MASK;",
        "qatomic_and(&env->hflags2, ~HF2_IGNNE_MASK);",
    ),
    (
        "env->hflags2 |= HF2_IGNNE_MASK;",
        "qatomic_or(&env->hflags2, HF2_IGNNE_MASK);",
    ),
];
const FIX_FILES: &[&str] = &[
    "target/i386/tcg/sysemu/fpu_helper.c",
    "target/i386/tcg/system/fpu_helper.c",
];
/// Written next to the binary once it is built; names the fix so a changed fix rebuilds.
const STAMP: &str = "ferrovisor-fix-ignne-atomic-1";

/// Debian packages the build needs (beyond what the source package's own scripts use).
const BUILD_PACKAGES: &[&str] = &[
    "dpkg-dev",
    "gcc",
    "make",
    "ninja-build",
    "meson",
    "pkg-config",
    "python3",
    "libglib2.0-dev",
    "libpixman-1-dev",
    "libfdt-dev",
    "zlib1g-dev",
    "flex",
    "bison",
];
const DEB_SRC_SOURCES: &str = "/etc/apt/sources.list.d/ferrovisor-deb-src.sources";
/// Where Debian's QEMU packages put the firmware: qemu-system-data (option ROMs such as
/// multiboot.bin) and seabios (the BIOS and VGA BIOS). Debian's own build has these
/// compiled in; ours, outside `/usr/bin`, would look beside itself.
const FIRMWARE_DIRS: &[&str] = &["/usr/share/qemu", "/usr/share/seabios"];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

fn dir() -> PathBuf {
    util::xtask_dir().join("qemu")
}

fn binary_path() -> PathBuf {
    dir().join("build").join("qemu-system-x86_64")
}

fn stamp_path() -> PathBuf {
    dir().join("build").join("ferrovisor-stamp")
}

fn use_system() -> bool {
    std::env::var_os(SYSTEM_QEMU_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the fixed build is there, built with the current [`FIX`] (its stamp).
fn built() -> bool {
    binary_path().exists() && std::fs::read_to_string(stamp_path()).is_ok_and(|s| s.trim() == STAMP)
}

/// A command running the fixed build once [`ensure`] has made it (pointed at the firmware
/// the system's QEMU packages install), else the system's `qemu-system-x86_64`.
pub fn command() -> Command {
    if !use_system() && built() {
        let mut cmd = Command::new(binary_path());
        for dir in FIRMWARE_DIRS {
            cmd.args(["-L", dir]);
        }
        cmd
    } else {
        Command::new("qemu-system-x86_64")
    }
}

/// Builds the fixed QEMU unless it is there (or the system's is asked for).
pub fn ensure() -> Result<()> {
    if use_system() || built() {
        return Ok(());
    }
    if !crate::process::is_root() {
        bail!(
            "the emulator tests run a QEMU built from Debian's source package with a data race \
             fixed (xtask/src/qemu_build.rs); building it needs root for apt (deb-src lines and \
             {}). Run `cargo xtask test` as root once, or set {SYSTEM_QEMU_ENV}=1 to use the \
             system's QEMU (its multi-threaded TCG can reset the machine now and then)",
            BUILD_PACKAGES.join(" ")
        );
    }
    let codename = crate::prereq::debian_codename()
        .context("cannot tell the Debian release (VERSION_CODENAME in /etc/os-release)")?;
    eprintln!("xtask: building QEMU from Debian's source package with the IGNNE race fixed");
    add_deb_src(&codename)?;
    crate::prereq::apt_install(BUILD_PACKAGES)?;

    let src_root = dir().join("src");
    if src_root.exists() {
        std::fs::remove_dir_all(&src_root)
            .with_context(|| format!("removing {}", src_root.display()))?;
    }
    std::fs::create_dir_all(&src_root)?;
    util::run_visible(Command::new("apt-get").current_dir(&src_root).args([
        "source",
        "-q",
        "--only-source",
        "qemu",
    ]))?;
    let src = std::fs::read_dir(&src_root)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("apt-get source qemu left no source directory")?;
    apply_fix(&src)?;

    let build = dir().join("build");
    if build.exists() {
        std::fs::remove_dir_all(&build)?;
    }
    std::fs::create_dir_all(&build)?;
    util::run_visible(
        Command::new(src.join("configure"))
            .current_dir(&build)
            .args([
                "--prefix=/usr",
                "--target-list=x86_64-softmmu",
                "--disable-docs",
                "--disable-tools",
                "--disable-modules",
                "--disable-werror",
                "--disable-gtk",
                "--disable-sdl",
                "--disable-vnc",
                "--disable-opengl",
                "--disable-spice",
                "--disable-curses",
                "--disable-libusb",
                "--disable-usb-redir",
                "--disable-smartcard",
                "--disable-xen",
            ]),
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    util::run_visible(Command::new("ninja").current_dir(&build).args([
        "-j",
        &jobs.to_string(),
        "qemu-system-x86_64",
    ]))?;
    std::fs::write(stamp_path(), STAMP)?;
    // The sources are no longer needed (about 300 MB).
    let _ = std::fs::remove_dir_all(&src_root);
    Ok(())
}

/// Adds `deb-src` entries for this release (main, its updates and security updates, signed
/// by Debian's archive key as its `deb` entries are) so `apt-get source` works.
fn add_deb_src(codename: &str) -> Result<()> {
    let entry = format!(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: {codename} \
         {codename}-updates\nComponents: main\nSigned-By: {KEYRING}\n\n\
         Types: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: \
         {codename}-security\nComponents: main\nSigned-By: {KEYRING}\n"
    );
    if std::fs::read_to_string(DEB_SRC_SOURCES).ok().as_deref() != Some(entry.as_str()) {
        std::fs::write(DEB_SRC_SOURCES, entry)
            .with_context(|| format!("writing {DEB_SRC_SOURCES}"))?;
    }
    crate::prereq::apt_lists_stale();
    Ok(())
}

/// Applies [`FIX`] to the source tree; fails if the code it fixes is not there (QEMU
/// changed: look at whether the race is still there).
fn apply_fix(src: &Path) -> Result<()> {
    let file = FIX_FILES
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "none of {} in {}: QEMU's source moved",
                FIX_FILES.join(", "),
                src.display()
            )
        })?;
    let text = std::fs::read_to_string(&file)?;
    let fixed = fix_text(&text)
        .with_context(|| format!("{}: the IGNNE updates are not as expected", file.display()))?;
    std::fs::write(&file, fixed)?;
    Ok(())
}

fn fix_text(text: &str) -> Option<String> {
    let mut out = text.to_owned();
    for (from, to) in FIX {
        if out.matches(from).count() != 1 {
            return None;
        }
        out = out.replace(from, to);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_replaces_both_updates_once() {
        let src = "void cpu_clear_ignne(void)\n{\n    CPUX86State *env = &X86_CPU(first_cpu)->env;\n    env->hflags2 &= ~HF2_IGNNE_MASK;\n}\n\nvoid cpu_set_ignne(void)\n{\n    CPUX86State *env = &X86_CPU(first_cpu)->env;\n    env->hflags2 |= HF2_IGNNE_MASK;\n}\n";
        let fixed = fix_text(src).unwrap();
        assert!(fixed.contains("qatomic_and(&env->hflags2, ~HF2_IGNNE_MASK);"));
        assert!(fixed.contains("qatomic_or(&env->hflags2, HF2_IGNNE_MASK);"));
        assert!(!fixed.contains("env->hflags2 &="));
        // Already fixed, or changed: refused rather than built unfixed.
        assert_eq!(fix_text(&fixed), None);
        assert_eq!(fix_text(""), None);
    }
}
