//! Building the bare-metal and guest-side artifacts with cargo.
//!
//! Every artifact is one row of [`ARTIFACTS`]: add test guests (bare metal)
//! or dom0 tools (static musl binaries) there as they appear, and
//! `cargo xtask build` builds them, grouped into one cargo call per target.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::util;

/// Which cargo profile to build with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
    /// Optimized, with debug assertions and overflow checks (Cargo.toml `[profile.checked]`).
    Checked,
}

impl Profile {
    pub fn from_debug(debug: bool) -> Self {
        if debug {
            Profile::Debug
        } else {
            Profile::Release
        }
    }

    /// The directory name cargo uses below `target/<triple>/`.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
            Profile::Checked => "checked",
        }
    }
}

/// One binary that cargo builds for a non-host target.
pub struct Artifact {
    /// Cargo package name (`-p`).
    pub package: &'static str,
    /// Binary target name inside the package (the output file name).
    pub bin: &'static str,
    /// Target triple.
    pub target: &'static str,
}

/// The bare-metal target of the hypervisor and test guests.
pub const BARE_METAL: &str = "x86_64-unknown-none";
/// The target of dom0 user-space tools (static binaries for a busybox initramfs).
pub const DOM0_TARGET: &str = "x86_64-unknown-linux-musl";

/// The hypervisor itself; always the first artifact.
pub const HYPERVISOR: Artifact = Artifact {
    package: "ferrovisor",
    bin: "ferrovisor",
    target: BARE_METAL,
};

/// Everything `cargo xtask build` builds. Append test guests and dom0 tools
/// here, e.g. `Artifact { package: "guest-hello", bin: "guest-hello",
/// target: BARE_METAL }`.
pub const ARTIFACTS: &[Artifact] = &[
    HYPERVISOR,
    GUEST_HELLO,
    GUEST_CPUID,
    GUEST_HLT_WAKE,
    GUEST_MEM_ISOLATION,
    GUEST_TRIPLE_FAULT,
    GUEST_BAD_HYPERCALL,
    GUEST_XEN_ABI,
    GUEST_EVTCHN_PINGPONG,
    GUEST_SPINNER,
    GUEST_CPU_BURN,
    GUEST_DOMU_END,
    GUEST_BAD_ARGS,
    GUEST_REAPER,
    GUEST_BENCH,
    GUEST_UPCALL_VECTOR,
    GUEST_TOOLSTACK,
    GUEST_GRANT_GRANTER,
    GUEST_GRANT_MAPPER,
    GUEST_NO_FEATURES,
    GUEST_MMIO_HOLE,
    GUEST_APIC_MODES,
    GUEST_NMI,
    GUEST_FIFO_EVTCHN,
    GUEST_HOSTILE_HCALL,
    GUEST_HOSTILE_CPU,
    GUEST_BALLOON,
    GUEST_SMP,
    GUEST_HELD_REGS,
    GUEST_GRANT_SHOOTDOWN,
    GUEST_DOM0_IDE,
];

/// dom0's toolstack: static musl binaries packed into dom0's initramfs
/// (`/usr/sbin/<bin>`).
pub const DOM0_TOOLS: &[Artifact] = &[XENSTORED, XENCONSOLED, XL, XENSTORE, XS_CHECK];

/// Tools the example domU's initramfs carries too (xenstore access through
/// /dev/xen/xenbus; the hostile frontend of the PV I/O tests).
pub const DOMU_TOOLS: &[Artifact] = &[XENSTORE, XS_CHECK, HOSTILE_FRONT];

/// A dom0 tool (dom0-tools/<name>, package and binary `<name>`).
const fn tool(name: &'static str) -> Artifact {
    Artifact {
        package: name,
        bin: name,
        target: DOM0_TARGET,
    }
}

pub const XENSTORED: Artifact = tool("xenstored");
pub const XENCONSOLED: Artifact = tool("xenconsoled");
pub const XL: Artifact = tool("xl");
pub const XENSTORE: Artifact = Artifact {
    package: "xenstore-cli",
    bin: "xenstore",
    target: DOM0_TARGET,
};
pub const XS_CHECK: Artifact = Artifact {
    package: "xenstore-cli",
    bin: "xs-check",
    target: DOM0_TARGET,
};
/// A userspace PV frontend that attacks dom0's backends (dom0-tools/hostile-front).
pub const HOSTILE_FRONT: Artifact = Artifact {
    package: "hostile-front",
    bin: "fv-hostile-front",
    target: DOM0_TARGET,
};

/// A test guest (tests/guests/<name>, package and binary `guest-<name>`).
const fn guest(name: &'static str) -> Artifact {
    Artifact {
        package: name,
        bin: name,
        target: BARE_METAL,
    }
}

pub const GUEST_HELLO: Artifact = guest("guest-hello");
pub const GUEST_CPUID: Artifact = guest("guest-cpuid");
pub const GUEST_HLT_WAKE: Artifact = guest("guest-hlt-wake");
pub const GUEST_MEM_ISOLATION: Artifact = guest("guest-mem-isolation");
pub const GUEST_TRIPLE_FAULT: Artifact = guest("guest-triple-fault");
pub const GUEST_BAD_HYPERCALL: Artifact = guest("guest-bad-hypercall");
pub const GUEST_XEN_ABI: Artifact = guest("guest-xen-abi");
pub const GUEST_EVTCHN_PINGPONG: Artifact = guest("guest-evtchn-pingpong");
pub const GUEST_SPINNER: Artifact = guest("guest-spinner");
pub const GUEST_CPU_BURN: Artifact = guest("guest-cpu-burn");
pub const GUEST_DOMU_END: Artifact = guest("guest-domu-end");
pub const GUEST_BAD_ARGS: Artifact = guest("guest-bad-args");
pub const GUEST_REAPER: Artifact = guest("guest-reaper");
pub const GUEST_BENCH: Artifact = guest("guest-bench");
pub const GUEST_UPCALL_VECTOR: Artifact = guest("guest-upcall-vector");
pub const GUEST_TOOLSTACK: Artifact = guest("guest-toolstack");
pub const GUEST_GRANT_GRANTER: Artifact = guest("guest-grant-granter");
pub const GUEST_GRANT_MAPPER: Artifact = guest("guest-grant-mapper");
pub const GUEST_NO_FEATURES: Artifact = guest("guest-no-features");
pub const GUEST_MMIO_HOLE: Artifact = guest("guest-mmio-hole");
pub const GUEST_APIC_MODES: Artifact = guest("guest-apic-modes");
pub const GUEST_DOM0_IDE: Artifact = guest("guest-dom0-ide");
pub const GUEST_NMI: Artifact = guest("guest-nmi");
pub const GUEST_FIFO_EVTCHN: Artifact = guest("guest-fifo-evtchn");
pub const GUEST_HOSTILE_HCALL: Artifact = guest("guest-hostile-hcall");
pub const GUEST_HOSTILE_CPU: Artifact = guest("guest-hostile-cpu");
pub const GUEST_BALLOON: Artifact = guest("guest-balloon");
pub const GUEST_SMP: Artifact = guest("guest-smp-guest");
pub const GUEST_HELD_REGS: Artifact = guest("guest-held-regs");
pub const GUEST_GRANT_SHOOTDOWN: Artifact = guest("guest-grant-shootdown");

/// Where cargo leaves an artifact's binary.
pub fn output_path(artifact: &Artifact, profile: Profile) -> PathBuf {
    util::target_dir()
        .join(artifact.target)
        .join(profile.dir())
        .join(artifact.bin)
}

/// Runs `cargo <subcommand> -p <package>... --target <target>` once per target triple of
/// `artifacts` (so cargo shares work between the packages of one target), with `args`
/// after the subcommand and `trailing` at the end.
fn per_target(
    artifacts: &[&Artifact],
    subcommand: &str,
    args: &[&str],
    trailing: &[&str],
) -> Result<()> {
    let mut targets: Vec<&str> = artifacts.iter().map(|a| a.target).collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let mut cmd = util::cargo();
        cmd.arg(subcommand).args(args);
        let mut packages: Vec<&str> = artifacts
            .iter()
            .filter(|a| a.target == target)
            .map(|a| a.package)
            .collect();
        packages.sort_unstable();
        packages.dedup();
        for package in packages {
            cmd.args(["-p", package]);
        }
        cmd.args(["--target", target]).args(trailing);
        util::run_visible(&mut cmd)?;
    }
    Ok(())
}

/// Builds a set of artifacts: one cargo invocation per target triple.
pub fn build(artifacts: &[&Artifact], profile: Profile) -> Result<Vec<PathBuf>> {
    let profile_args: &[&str] = match profile {
        Profile::Release => &["--release"],
        Profile::Checked => &["--profile", "checked"],
        Profile::Debug => &[],
    };
    per_target(artifacts, "build", profile_args, &[])?;
    let paths: Vec<PathBuf> = artifacts.iter().map(|a| output_path(a, profile)).collect();
    for path in &paths {
        if !path.is_file() {
            bail!("cargo succeeded but {} is missing", path.display());
        }
    }
    Ok(paths)
}

/// Lints everything in [`ARTIFACTS`] for its own target: the hypervisor and the test
/// guests are bare-metal, and most of the hypervisor is compiled only there, out of
/// reach of `cargo clippy --workspace` on the host (`cargo clippy --target T -p ... --
/// -D warnings` per target).
pub fn clippy_targets() -> Result<()> {
    let artifacts: Vec<&Artifact> = ARTIFACTS.iter().collect();
    per_target(&artifacts, "clippy", &[], &["--", "-D", "warnings"])
}

/// Builds everything in [`ARTIFACTS`].
pub fn all(profile: Profile) -> Result<Vec<PathBuf>> {
    let artifacts: Vec<&Artifact> = ARTIFACTS.iter().collect();
    build(&artifacts, profile)
}

/// Builds the hypervisor and returns the path of its ELF.
pub fn hypervisor(profile: Profile) -> Result<PathBuf> {
    let mut paths = build(&[&HYPERVISOR], profile)?;
    Ok(paths.remove(0))
}
