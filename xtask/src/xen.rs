//! Debian's Xen hypervisor, the reference `cargo xtask bench` measures
//! ferrovisor against. The package is fetched by name with `apt-get download`
//! (whatever version apt offers now) into `target/xen/`, unpacked there
//! (`pkg/`), and its gzip-compressed `boot/xen-*.gz` inflated to `xen`: a
//! multiboot ELF GRUB loads as it loads ferrovisor.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{initramfs, linux, util};

/// The Debian package with the hypervisor binary.
pub const PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// Xen's command line to run a PVH test guest as its dom0: console on COM1,
/// a PVH dom0 without IOMMU (none is needed: the guest touches no device),
/// one vCPU, and no reboot after the guest ends. Measured to work under QEMU
/// TCG with plain `-cpu max` (docs/test-bed.md).
pub const GUEST_DOM0_CMDLINE: &str = "console=com1 com1=115200,8n1 dom0=pvh dom0-iommu=none \
     dom0_mem=64M,max:64M dom0_max_vcpus=1 noreboot";

/// Xen's command line to run the Debian dom0 (`cargo xtask bench`'s PV I/O reference),
/// as ferrovisor's bench runs it: a PVH dom0 with 512 MiB and one vCPU, pinned.
pub const LINUX_DOM0_CMDLINE: &str = "console=com1 com1=115200,8n1 dom0=pvh \
     dom0_mem=512M,max:512M dom0_max_vcpus=1 dom0_vcpus_pin noreboot";

/// QEMU's CPU for a Linux PVH dom0 on Xen under TCG: without RDTSCP (QEMU reports an
/// intercepted one wrongly) and without XSAVE and AVX (a Xen PVH guest under TCG then
/// faults on AVX instructions); docs/test-bed.md.
pub const QEMU_CPU: &str = "max,rdtscp=off,xsave=off,avx=off";

/// The Xen ELF, fetched and inflated on first use.
pub fn hypervisor() -> Result<PathBuf> {
    let dir = util::target_dir().join("xen");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pkg = dir.join("pkg");
    match linux::download(PACKAGE, &dir) {
        Ok(deb) => linux::extract(&deb, &pkg)?,
        // Offline: an earlier extraction still boots.
        Err(e) if pkg.join(".source").is_file() => {
            eprintln!(
                "xtask: warning: cannot fetch {PACKAGE} ({e:#}); using the copy in {}",
                util::display_rel(&pkg)
            );
        }
        Err(e) => return Err(e),
    }
    let boot = pkg.join("boot");
    let gz = std::fs::read_dir(&boot)
        .with_context(|| format!("cannot read {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "gz"))
        .with_context(|| format!("no xen-*.gz in {}", boot.display()))?;
    let elf = dir.join("xen");
    let fresh = |p: &PathBuf| p.metadata().and_then(|m| m.modified()).ok();
    if fresh(&elf) < fresh(&gz) {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&gz)
            .output()
            .context("cannot run gzip")?;
        if !out.status.success() {
            bail!("gzip -dc {} failed", gz.display());
        }
        std::fs::write(&elf, out.stdout)?;
    }
    Ok(elf)
}

/// Debian's packages of Xen 4.17's dom0 userspace, for the bench's Xen reference: the
/// toolstack (`xl`, libxl and the libraries under it), xenstored, xenconsoled,
/// `xen-init-dom0`, the xenstore client, the hotplug scripts, and what those scripts run
/// that busybox lacks or has with other options (bash, `flock`, coreutils' `stat` and
/// `readlink`). The C library is the build machine's, as for the initramfs's other
/// programs (the same Debian release).
const TOOLSTACK_PACKAGES: &[&str] = &[
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxenstore4",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxentoollog1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libxenhypfs1",
    "libyajl2",
    "libext2fs2",
    "libcom-err2",
    "liblzma5",
    "libzstd1",
    "zlib1g",
    "libuuid1",
    "libncurses6",
    "libtinfo6",
    "libselinux1",
    "libpcre2-8-0",
    "bash",
    "util-linux",
    "coreutils",
];

/// Where Debian installs the toolstack's programs.
const XEN_BIN: &str = "usr/lib/xen-4.17/bin";

/// Programs of [`TOOLSTACK_PACKAGES`] in dom0's initramfs: (path in its package, path in
/// the archive, links to it). The links replace ferrovisor's tools of the same names.
const TOOLSTACK_PROGRAMS: &[(&str, &str, &[&str])] = &[
    (
        "usr/lib/xen-4.17/bin/xl",
        "usr/lib/xen-4.17/bin/xl",
        &["/usr/sbin/xl"],
    ),
    (
        "usr/lib/xen-4.17/bin/xenstored",
        "usr/lib/xen-4.17/bin/xenstored",
        &["/usr/sbin/xenstored"],
    ),
    (
        "usr/lib/xen-4.17/bin/xenconsoled",
        "usr/lib/xen-4.17/bin/xenconsoled",
        &[],
    ),
    (
        "usr/lib/xen-4.17/bin/xen-init-dom0",
        "usr/lib/xen-4.17/bin/xen-init-dom0",
        &["/usr/sbin/xen-init-dom0"],
    ),
    ("bin/bash", "bin/bash", &[]),
    ("usr/bin/flock", "usr/bin/flock", &[]),
    ("usr/bin/stat", "bin/stat", &[]),
    ("bin/readlink", "bin/readlink", &[]),
];

/// Where a shared library `ldd` found goes in the archive: one from a package (under one
/// of `roots`) where the loader looks by default, `/lib/x86_64-linux-gnu`; one of the
/// build machine's own (the C library) where it is.
fn library_member(lib: &Path, roots: &[PathBuf]) -> String {
    if roots.iter().any(|r| lib.starts_with(r)) {
        let name = lib.file_name().unwrap_or_default().to_string_lossy();
        format!("lib/x86_64-linux-gnu/{name}")
    } else {
        lib.to_string_lossy().trim_start_matches('/').to_string()
    }
}

/// The archive members that turn ferrovisor's dom0 initramfs into one running Xen 4.17's
/// own dom0 userspace (`linux::xen_dom0_initramfs`): [`TOOLSTACK_PROGRAMS`] with their
/// shared libraries, the xenstore client under every name ferrovisor's has, xenconsoled
/// logging each guest's console where ferrovisor's does (`/var/log/xen/console/`, which
/// the tests read), the hotplug scripts and an empty `xl.conf`.
pub fn toolstack_extras() -> Result<Vec<initramfs::Extra>> {
    let dir = util::target_dir().join("xen").join("toolstack");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut roots = Vec::new();
    for package in TOOLSTACK_PACKAGES {
        let deb = linux::download(package, &dir)?;
        let root = dir.join(package);
        linux::extract(&deb, &root)?;
        roots.push(root);
    }
    let find = |rel: &str| -> Result<PathBuf> {
        roots
            .iter()
            .map(|r| r.join(rel))
            .find(|p| p.is_file())
            .with_context(|| format!("no package of {TOOLSTACK_PACKAGES:?} has /{rel}"))
    };
    let lib_dirs: Vec<PathBuf> = roots
        .iter()
        .flat_map(|r| {
            [
                r.join("usr/lib/x86_64-linux-gnu"),
                r.join("lib/x86_64-linux-gnu"),
            ]
        })
        .filter(|d| d.is_dir())
        .collect();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let file = |path: &str, mode: u32, data: Vec<u8>, links: Vec<String>| initramfs::Extra {
        path: path.to_string(),
        mode,
        data,
        links,
    };

    let mut extras = Vec::new();
    let mut libs = std::collections::BTreeMap::new();
    let xenstore = find("usr/bin/xenstore")?;
    let mut programs: Vec<(PathBuf, &str, Vec<String>)> = TOOLSTACK_PROGRAMS
        .iter()
        .map(|(rel, at, links)| {
            Ok((
                find(rel)?,
                *at,
                links.iter().map(|l| l.to_string()).collect(),
            ))
        })
        .collect::<Result<_>>()?;
    // Debian's xenstore client acts on the name it is called by, as ferrovisor's does.
    let names = std::iter::once("/usr/sbin/xenstore".to_string()).chain(
        linux::XENSTORE_LINKS
            .iter()
            .map(|l| format!("/usr/sbin/xenstore-{l}")),
    );
    programs.push((xenstore, "usr/bin/xenstore", names.collect()));
    for (path, at, links) in programs {
        for lib in initramfs::shared_libraries(&path, &lib_dirs)? {
            let lib = PathBuf::from(lib);
            libs.insert(library_member(&lib, &roots), lib);
        }
        extras.push(file(at, 0o755, read(&path)?, links));
    }
    for (member, lib) in libs {
        extras.push(file(&member, 0o755, read(&lib)?, Vec::new()));
    }
    extras.push(file(
        "usr/sbin/xenconsoled",
        0o755,
        format!("#!/bin/sh\nexec /{XEN_BIN}/xenconsoled --log=guest \"$@\"\n").into_bytes(),
        Vec::new(),
    ));
    let scripts = roots
        .iter()
        .map(|r| r.join("etc/xen/scripts"))
        .find(|d| d.is_dir())
        .context("no package has /etc/xen/scripts")?;
    for entry in std::fs::read_dir(&scripts)? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            extras.push(file(
                &format!("etc/xen/scripts/{name}"),
                0o755,
                read(&path)?,
                Vec::new(),
            ));
        }
    }
    extras.push(file(
        "etc/xen/xl.conf",
        0o644,
        b"# xl's defaults (none changed)\n".to_vec(),
        Vec::new(),
    ));
    Ok(extras)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_go_where_the_loader_looks() {
        let roots = [PathBuf::from("/t/xen/toolstack/libyajl2")];
        let lib = |p: &str| library_member(Path::new(p), &roots);
        assert_eq!(
            lib("/t/xen/toolstack/libyajl2/usr/lib/x86_64-linux-gnu/libyajl.so.2"),
            "lib/x86_64-linux-gnu/libyajl.so.2"
        );
        assert_eq!(
            lib("/lib/x86_64-linux-gnu/libc.so.6"),
            "lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            lib("/lib64/ld-linux-x86-64.so.2"),
            "lib64/ld-linux-x86-64.so.2"
        );
        // A sibling directory whose name only starts like a root is not inside it.
        assert_eq!(
            lib("/t/xen/toolstack/libyajl2-extra/usr/lib/libz.so.1"),
            "t/xen/toolstack/libyajl2-extra/usr/lib/libz.so.1"
        );
    }

    #[test]
    fn every_program_replaces_or_adds_a_path() {
        for (from, at, links) in TOOLSTACK_PROGRAMS {
            assert!(
                !from.starts_with('/') && !at.starts_with('/'),
                "{from} {at}"
            );
            assert!(links.iter().all(|l| l.starts_with('/')), "{links:?}");
        }
    }
}
