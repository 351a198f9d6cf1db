//! `cargo xtask deb`: the Debian package, laid out as Xen's packages are: the hypervisor
//! in `/boot`, the dom0 tools in `/usr/sbin` (with the xenstore multicall's names), systemd
//! units that load the Xen modules, mount xenfs and start xenstored and xenconsoled in dom0
//! only (on Xen; elsewhere they are skipped, not failed), and a GRUB hook (`/etc/grub.d/20_linux_ferrovisor`) adding one
//! entry per installed kernel, whose settings live in `/etc/default/grub.d/ferrovisor.cfg`.
//! Installing and removing run `update-grub`. The files come from `packaging/deb/`.

use crate::build::{self, Profile};
use crate::{initramfs, util};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a packaged file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `packaging/deb/<name>`.
    Packaging(&'static str),
    /// The hypervisor ELF (debug sections stripped).
    Hypervisor,
    /// A dom0 tool built for dom0 (static musl).
    Tool(&'static str),
    /// A file of the repository (path from its root).
    Repo(&'static str),
    /// Text made here.
    Text(String),
}

/// One file of the package: its path in the installed system, mode, and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub source: Source,
}

/// The dom0 tools packaged (the test tools of dom0's initramfs stay out).
pub const TOOLS: &[&str] = &["xl", "xenstored", "xenconsoled", "xenstore"];

/// Files of `packaging/deb/`: (installed path, name there, mode).
const PACKAGED: &[(&str, &str, u32)] = &[
    (
        "etc/grub.d/20_linux_ferrovisor",
        "20_linux_ferrovisor",
        0o755,
    ),
    ("etc/default/grub.d/ferrovisor.cfg", "ferrovisor.cfg", 0o644),
    ("lib/systemd/system/proc-xen.mount", "proc-xen.mount", 0o644),
    (
        "lib/systemd/system/xenstored.service",
        "xenstored.service",
        0o644,
    ),
    (
        "lib/systemd/system/xenconsoled.service",
        "xenconsoled.service",
        0o644,
    ),
];

/// Every file of the package (symbolic links apart: [`links`]).
pub fn layout() -> Vec<Entry> {
    let e = |path: &str, mode, source| Entry {
        path: path.into(),
        mode,
        source,
    };
    let mut v = vec![e("boot/ferrovisor", 0o644, Source::Hypervisor)];
    for &(path, name, mode) in PACKAGED {
        v.push(e(path, mode, Source::Packaging(name)));
    }
    v.push(e(
        "lib/systemd/system/ferrovisor-modules.service",
        0o644,
        Source::Text(modules_service()),
    ));
    v.push(e(
        "usr/share/doc/ferrovisor/README.md",
        0o644,
        Source::Repo("README.md"),
    ));
    for bin in TOOLS {
        v.push(e(&format!("usr/sbin/{bin}"), 0o755, Source::Tool(bin)));
    }
    v
}

/// Symbolic links: (path, target).
pub fn links() -> Vec<(String, String)> {
    crate::linux::XENSTORE_LINKS
        .iter()
        .map(|l| (format!("usr/sbin/xenstore-{l}"), "xenstore".to_string()))
        .collect()
}

/// `ferrovisor-modules.service` (from `packaging/deb/`, its `@MODULES@` filled in): what
/// dom0's initramfs loads, the Xen modules (the Debian kernel builds them as modules) and
/// what the PV devices need around them (loop, bridge, ...), loaded only on Xen. Not a
/// `modules-load.d` list: off Xen the Xen drivers refuse to load (-ENODEV) and
/// systemd-modules-load.service would fail at every boot of the plain kernel.
fn modules_service() -> String {
    let modules = initramfs::dom0_modules();
    let path = util::repo_root().join("packaging/deb/ferrovisor-modules.service");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .replace("@MODULES@", &modules.join(" "))
}

/// The `DEBIAN/control` text.
pub fn control(version: &str, installed_kib: u64) -> String {
    format!(
        "Package: ferrovisor\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: ferrovisor developers <ferrovisor@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Section: admin\n\
         Priority: optional\n\
         Recommends: grub-pc | grub-efi-amd64\n\
         Conflicts: xenstore-utils, xen-utils-common\n\
         Description: Xen-compatible type-1 hypervisor with its dom0 toolstack\n \
         ferrovisor runs an unmodified Linux as a Xen PVH dom0 and domUs served by\n \
         Linux's own xen-blkback and xen-netback. This package holds the hypervisor\n \
         (/boot/ferrovisor), xl, xenstored and xenconsoled, their systemd units, and a\n \
         GRUB hook that adds a ferrovisor entry for every installed kernel.\n"
    )
}

/// Builds the package; returns its path.
pub fn build(output: Option<PathBuf>) -> Result<PathBuf> {
    if !util::on_path("dpkg-deb") {
        bail!("dpkg-deb is needed to build the package (apt-get install dpkg)");
    }
    let version = env!("CARGO_PKG_VERSION");
    let output =
        output.unwrap_or_else(|| util::xtask_dir().join(format!("ferrovisor_{version}_amd64.deb")));
    let root = util::xtask_dir().join("deb/root");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("cannot remove {}", root.display()))?;
    }
    let hypervisor = build::hypervisor(Profile::Release)?;
    let tools: Vec<&build::Artifact> = build::DOM0_TOOLS
        .iter()
        .filter(|t| TOOLS.contains(&t.bin))
        .collect();
    if tools.len() != TOOLS.len() {
        bail!("a packaged tool is not among the dom0 tools xtask builds");
    }
    let built: Vec<(&str, PathBuf)> = tools
        .iter()
        .map(|t| t.bin)
        .zip(build::build(&tools, Profile::Release)?)
        .collect();
    let packaging = util::repo_root().join("packaging/deb");
    let mut bytes = 0u64;
    for entry in layout() {
        let dest = root.join(&entry.path);
        util::create_parent(&dest)?;
        match &entry.source {
            Source::Packaging(name) => copy(&packaging.join(name), &dest)?,
            Source::Hypervisor => crate::image::copy_kernel(&hypervisor, &dest)?,
            Source::Tool(bin) => {
                let (_, path) = built
                    .iter()
                    .find(|(b, _)| b == bin)
                    .context("packaged tool not built")?;
                copy(path, &dest)?;
            }
            Source::Repo(path) => copy(&util::repo_root().join(path), &dest)?,
            Source::Text(t) => std::fs::write(&dest, t)
                .with_context(|| format!("cannot write {}", dest.display()))?,
        }
        set_mode(&dest, entry.mode)?;
        bytes += std::fs::metadata(&dest)?.len();
    }
    for (path, target) in links() {
        let dest = root.join(path);
        std::os::unix::fs::symlink(&target, &dest)
            .with_context(|| format!("cannot link {}", dest.display()))?;
    }
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(
        debian.join("control"),
        control(version, bytes.div_ceil(1024)),
    )?;
    std::fs::write(debian.join("conffiles"), conffiles())?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(&packaging.join(script), &debian.join(script))?;
        set_mode(&debian.join(script), 0o755)?;
    }
    util::create_parent(&output)?;
    util::run_quiet(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&output),
    )?;
    Ok(output)
}

/// Files under /etc are configuration the administrator may edit.
fn conffiles() -> String {
    layout()
        .iter()
        .filter(|e| e.path.starts_with("etc/"))
        .map(|e| format!("/{}\n", e.path))
        .collect()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_what_a_dom0_needs() {
        let l = layout();
        let has = |p: &str| l.iter().any(|e| e.path == p);
        for p in [
            "boot/ferrovisor",
            "usr/sbin/xl",
            "usr/sbin/xenstored",
            "usr/sbin/xenconsoled",
            "usr/sbin/xenstore",
            "etc/grub.d/20_linux_ferrovisor",
            "lib/systemd/system/xenstored.service",
        ] {
            assert!(has(p), "{p} missing");
        }
        let hook = l
            .iter()
            .find(|e| e.path.starts_with("etc/grub.d/"))
            .unwrap();
        assert_eq!(hook.mode, 0o755, "update-grub runs only executable hooks");
        // Every packaged file from packaging/deb exists.
        let dir = util::repo_root().join("packaging/deb");
        for e in &l {
            if let Source::Packaging(name) = e.source {
                assert!(dir.join(name).is_file(), "{name} missing in packaging/deb");
            }
        }
        // Only the tools `build` builds, and not dom0's test tools.
        for e in &l {
            if let Source::Tool(bin) = e.source {
                assert!(TOOLS.contains(&bin), "{bin} is packaged but not built");
            }
        }
        assert!(!has("usr/sbin/xs-check"));
        assert!(conffiles().lines().all(|c| c.starts_with("/etc/")));
        assert!(control("1.2.3", 10).contains("Version: 1.2.3\n"));
        let m = modules_service();
        assert!(
            m.contains("ExecStart=/sbin/modprobe -a xen-evtchn xen-privcmd xenfs ")
                && m.contains("ConditionPathExists=/sys/hypervisor/type")
                && !m.contains('@'),
            "{m}"
        );
    }

    /// Runs the GRUB hook on a fake /boot, with grub-mkconfig_lib's functions stubbed
    /// (the real ones probe the host's disks); returns its standard output.
    fn run_hook(files: &[&str], env: &[(&str, &str)]) -> String {
        run_hook_with(files, env, &[])
    }

    /// [`run_hook`] with settings files in the fake `/etc/default/grub.d/`.
    fn run_hook_with(files: &[&str], env: &[(&str, &str)], cfgs: &[(&str, &str)]) -> String {
        let dir = std::env::temp_dir().join(format!(
            "ferrovisor-grub-hook-{}-{}",
            std::process::id(),
            files.len() * 100 + env.len() * 10 + cfgs.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::create_dir_all(dir.join("etc/default/grub.d")).unwrap();
        for (name, text) in cfgs {
            std::fs::write(dir.join("etc/default/grub.d").join(name), text).unwrap();
        }
        for f in files {
            std::fs::write(dir.join("boot").join(f), b"x").unwrap();
        }
        std::fs::write(
            dir.join("grub-mkconfig_lib"),
            "make_system_path_relative_to_its_root() { echo \"$1\"; }\n\
             version_sort() { sort -V \"$@\"; }\n\
             gettext_printf() { fmt=$1; shift; printf \"$fmt\" \"$@\"; }\n\
             prepare_grub_to_access_device() { echo \"search --no-floppy --set=root STUB-$1\"; }\n",
        )
        .unwrap();
        let hook = util::repo_root().join("packaging/deb/20_linux_ferrovisor");
        let out = Command::new("sh")
            .arg(hook)
            .env("pkgdatadir", &dir)
            .env("FERROVISOR_BOOT_DIR", dir.join("boot"))
            .env("FERROVISOR_SYSCONFDIR", dir.join("etc"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn grub_hook_adds_an_entry_per_kernel_newest_first() {
        let env = [
            ("GRUB_DEVICE", "/dev/vda1"),
            ("GRUB_DEVICE_UUID", "1234-abcd"),
            ("GRUB_DEVICE_BOOT", "/dev/vda1"),
            ("GRUB_CMDLINE_FERROVISOR", "dom0_mem=2G console=com1"),
            ("GRUB_CMDLINE_LINUX", "quiet"),
            ("GRUB_CMDLINE_LINUX_FERROVISOR", "console=hvc0"),
        ];
        let files = [
            "ferrovisor",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.1.0-10-amd64.dpkg-tmp",
        ];
        let out = run_hook(&files, &env);
        let entries: Vec<&str> = out.lines().filter(|l| l.contains("menuentry '")).collect();
        assert_eq!(entries.len(), 2, "{out}");
        assert!(entries[0].contains("Linux 6.1.0-10-amd64"), "{out}");
        assert!(entries[1].contains("Linux 6.1.0-9-amd64"), "{out}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert!(lines.contains(&"search --no-floppy --set=root STUB-/dev/vda1"));
        let mb: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("multiboot2 "))
            .collect();
        assert_eq!(mb.len(), 2);
        assert!(
            mb[0].ends_with("/ferrovisor ferrovisor dom0_mem=2G console=com1"),
            "{}",
            mb[0]
        );
        let kernels: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("module2 ") && l.contains("/vmlinuz-"))
            .collect();
        assert!(
            kernels[0]
                .contains("vmlinuz-6.1.0-10-amd64 root=UUID=1234-abcd ro quiet  console=hvc0"),
            "{}",
            kernels[0]
        );
        // The initrd goes only with the kernel that has one.
        let initrds: Vec<&&str> = lines.iter().filter(|l| l.contains("--nounzip")).collect();
        assert_eq!(initrds.len(), 1);
        assert!(initrds[0].ends_with("/initrd.img-6.1.0-10-amd64 initrd.img-6.1.0-10-amd64"));
        // GRUB can parse what it wrote, where grub-script-check is installed (grub-common:
        // a prerequisite of `cargo xtask iso` and of the Bochs tests).
        if util::on_path("grub-script-check") {
            let f =
                std::env::temp_dir().join(format!("ferrovisor-hook-{}.cfg", std::process::id()));
            std::fs::write(&f, &out).unwrap();
            let check = Command::new("grub-script-check").arg(&f).output().unwrap();
            let _ = std::fs::remove_file(&f);
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }

    #[test]
    fn grub_hook_adds_nothing_without_the_hypervisor_or_when_disabled() {
        assert_eq!(run_hook(&["vmlinuz-6.1.0-9-amd64"], &[]), "");
        assert_eq!(
            run_hook(
                &["ferrovisor", "vmlinuz-6.1.0-9-amd64"],
                &[("GRUB_DISABLE_FERROVISOR", "true")]
            ),
            ""
        );
        assert_eq!(run_hook(&["ferrovisor"], &[]), "");
        // Without a UUID the root is the device.
        let out = run_hook(
            &["ferrovisor", "vmlinuz-6.1.0-9-amd64"],
            &[("GRUB_DEVICE", "/dev/sda2")],
        );
        assert!(out.contains(" root=/dev/sda2 ro "), "{out}");
    }

    #[test]
    fn grub_hook_reads_its_settings_files() {
        // grub-mkconfig does not export GRUB_CMDLINE_FERROVISOR*: the hook must read them.
        let out = run_hook_with(
            &["ferrovisor", "vmlinuz-6.1.0-9-amd64"],
            &[
                ("GRUB_DEVICE", "/dev/sda1"),
                ("GRUB_CMDLINE_LINUX", "console=ttyS0,115200"),
            ],
            &[
                (
                    "ferrovisor.cfg",
                    &std::fs::read_to_string(
                        util::repo_root().join("packaging/deb/ferrovisor.cfg"),
                    )
                    .unwrap(),
                ),
                (
                    "zz-local.cfg",
                    "GRUB_CMDLINE_FERROVISOR=\"console=com1 dom0_mem=768M\"\n\
                     GRUB_CMDLINE_LINUX_FERROVISOR_REPLACE=\"libata.dma=0\"\n",
                ),
            ],
        );
        let mb = out
            .lines()
            .find(|l| l.trim().starts_with("multiboot2 "))
            .unwrap();
        assert!(
            mb.ends_with("ferrovisor console=com1 dom0_mem=768M "),
            "{mb}"
        );
        let k = out
            .lines()
            .find(|l| l.trim().starts_with("module2 ") && l.contains("vmlinuz"))
            .unwrap();
        // REPLACE took the place of GRUB_CMDLINE_LINUX; the package's options follow.
        assert!(
            k.contains("root=/dev/sda1 ro libata.dma=0  console=hvc0 earlyprintk=xen"),
            "{k}"
        );
        assert!(!k.contains("ttyS0"), "{k}");
    }
}
