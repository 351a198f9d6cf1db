//! Debian's Xen hypervisor, the reference `cargo xtask bench` measures
//! ferrovisor against. The package is fetched by name with `apt-get download`
//! (whatever version apt offers now) into `target/xen/`, unpacked there
//! (`pkg/`), and its gzip-compressed `boot/xen-*.gz` inflated to `xen`: a
//! multiboot ELF GRUB loads as it loads ferrovisor.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{linux, util};

/// The Debian package with the hypervisor binary.
pub const PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// Xen's command line to run a PVH test guest as its dom0: console on COM1,
/// a PVH dom0 without IOMMU (none is needed: the guest touches no device),
/// one vCPU, and no reboot after the guest ends. Measured to work under QEMU
/// TCG with plain `-cpu max` (docs/test-bed.md).
pub const GUEST_DOM0_CMDLINE: &str = "console=com1 com1=115200,8n1 dom0=pvh dom0-iommu=none \
     dom0_mem=64M,max:64M dom0_max_vcpus=1 noreboot";

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
