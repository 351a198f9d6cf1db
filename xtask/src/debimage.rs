//! `cargo xtask debimage`: a small Debian bookworm disk image with the ferrovisor package
//! installed, for the end-to-end install tests (`tests_install`) and for people who want
//! to try the package on a real Debian system in QEMU.
//!
//! How it is made (as root; every step checks its result):
//! 1. `mmdebstrap` builds a bookworm root with systemd, the stock kernel
//!    (`linux-image-amd64`), GRUB for BIOS (`grub-pc`) and initramfs-tools into a tarball
//!    under `target/debimage/`, named after a hash of the package list and settings: a
//!    second run finds it and skips this step. The downloaded `.deb` files are kept in
//!    `target/debimage/apt-cache/` as well, so even a changed package list downloads only
//!    what is new.
//! 2. A sparse raw image gets an MBR with one bootable Linux partition (`sfdisk`), is
//!    attached to a loop device with its partitions (`losetup -P`), and the partition gets
//!    an ext4 file system (label [`ROOT_LABEL`], a fresh UUID) with the tarball unpacked
//!    into it.
//! 3. The image's own files are written: fstab by UUID, hostname, a machine ID, GRUB's
//!    settings (serial terminal, `GRUB_DEFAULT=saved`, one-second menu, `console=ttyS0` for
//!    the plain kernel and, for the hypervisor's entry, `pci=noacpi` instead, see
//!    [`GRUB_TEST_CFG`]), and root autologin on the serial consoles `ttyS0` (plain Linux)
//!    and `hvc0` (dom0 under the hypervisor).
//! 4. With `/dev`, `/proc` and `/sys` bound into it, the image's own `grub-install`
//!    writes GRUB to the loop device, `update-grub` writes its menu, and `dpkg -i` installs
//!    the package `cargo xtask deb` builds, whose postinst runs `update-grub` again: the
//!    ferrovisor entries come from the package's own hook, as on a real machine.
//! 5. Everything is unmounted and detached (also on error: [`Attached`]'s `Drop`), and
//!    the image is renamed into place.
//!
//! The menu entry GRUB boots is `saved_entry` in `/boot/grub/grubenv`: [`Image::disk_for`]
//! copies the image for one test and rewrites that 1 KiB file in place in the copy (its
//! byte offset in the image is found with `debugfs` when the image is made).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

/// The Debian release.
pub const SUITE: &str = "bookworm";

/// mmdebstrap's variant: Essential packages and apt (smallest with a package manager).
const VARIANT: &str = "apt";

/// Packages on top of the variant. `dbus` for systemd-logind; `procps` for `ps`/`free`.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-amd64",
    "grub-pc",
    "initramfs-tools",
    "kmod",
    "procps",
    "e2fsprogs",
];

/// Bumped when the root tarball's making changes in a way the package list does not show.
const ROOT_FORMAT: u32 = 1;

/// The image's size (sparse: about 1 GiB of it is used).
const IMAGE_MIB: u64 = 3072;

/// The partition starts at 1 MiB (sector 2048), as fdisk places it.
const PART_START: u64 = 1 << 20;

/// The root file system's label.
pub const ROOT_LABEL: &str = "ferrovisor-root";

/// The host name of the image's system.
pub const HOSTNAME: &str = "ferrovisor-e2e";

/// A grubenv block's header (GRUB's `envblk` format: this line, `name=value` lines, `#`
/// padding to 1024 bytes).
const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";
const GRUBENV_SIZE: usize = 1024;

/// GRUB settings of the test image, `/etc/default/grub.d/zz-ferrovisor-image.cfg` (read
/// after the package's `ferrovisor.cfg`). The plain entries get `console=ttyS0`; the
/// ferrovisor entries replace that by `pci=noacpi` (the hypervisor's ACPI tables for dom0
/// name no PCI root bridge yet, so Linux scans bus 0 itself only so), keeping the
/// package's `GRUB_CMDLINE_LINUX_FERROVISOR` (`console=hvc0 earlyprintk=xen`). The disk is
/// on an AHCI controller, which dom0 drives itself (MSI, DMA into its identity-mapped
/// RAM).
pub const GRUB_TEST_CFG: &str = "\
# Written by `cargo xtask debimage`: the test image's GRUB settings.
GRUB_DEFAULT=saved
GRUB_TIMEOUT=1
GRUB_TIMEOUT_STYLE=menu
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"
GRUB_CMDLINE_LINUX=\"console=ttyS0,115200\"
GRUB_CMDLINE_LINUX_DEFAULT=\"\"
GRUB_DISABLE_OS_PROBER=true
GRUB_CMDLINE_FERROVISOR=\"console=com1 dom0_mem=768M\"
GRUB_CMDLINE_LINUX_FERROVISOR_REPLACE=\"pci=noacpi\"
";

/// The memory the test machine needs (QEMU `-m`, MiB): dom0 gets 768 MiB of it, the
/// example domU is made from the rest.
pub const MACHINE_MIB: u32 = 1536;

/// The autologin drop-in for `serial-getty@<tty>.service`: root gets a shell on the
/// console without a password (systemd's getty generator starts the getty on the kernel's
/// console, `ttyS0` or `hvc0`).
fn autologin_dropin() -> &'static str {
    "[Service]\n\
     ExecStart=\n\
     ExecStart=-/sbin/agetty -o '-p -f -- \\\\u' --keep-baud --autologin root 115200,57600,38400,9600 - $TERM\n"
}

/// The menu entry GRUB boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Debian's own first entry (`10_linux`): the kernel without the hypervisor.
    Plain,
    /// The package's entry (`20_linux_ferrovisor`) for the newest kernel.
    Ferrovisor,
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    /// The kernel in the image's `/boot` (`uname -r` of the booted system).
    pub kernel: String,
    /// The root file system's UUID.
    pub uuid: String,
    /// Where `/boot/grub/grubenv`'s 1 KiB is in the image file.
    pub grubenv_offset: u64,
}

impl Image {
    /// GRUB's `saved_entry` value for `entry` (menu entry IDs, with `>` into a submenu).
    pub fn entry_id(&self, entry: Entry) -> String {
        match entry {
            Entry::Plain => format!("gnulinux-simple-{}", self.uuid),
            Entry::Ferrovisor => format!(
                "ferrovisor-{uuid}>ferrovisor-{k}-{uuid}",
                uuid = self.uuid,
                k = self.kernel
            ),
        }
    }

    /// A copy of the image for one test, in `dir`, that boots `entry`.
    pub fn disk_for(&self, dir: &Path, entry: Entry) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let disk = dir.join("disk.img");
        let _ = std::fs::remove_file(&disk);
        util::run_quiet(
            Command::new("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(&self.path)
                .arg(&disk),
        )?;
        write_grubenv(&disk, self.grubenv_offset, &self.entry_id(entry))?;
        Ok(disk)
    }
}

/// The grubenv block that makes GRUB boot `entry_id`.
pub fn grubenv_block(entry_id: &str) -> Result<Vec<u8>> {
    if entry_id.contains('\n') || entry_id.contains('\\') {
        bail!("menu entry ID {entry_id:?} needs escaping");
    }
    let mut b = format!("{GRUBENV_HEADER}saved_entry={entry_id}\n").into_bytes();
    if b.len() > GRUBENV_SIZE {
        bail!("menu entry ID {entry_id:?} is too long for grubenv");
    }
    b.resize(GRUBENV_SIZE, b'#');
    Ok(b)
}

/// Rewrites the grubenv at `offset` in the image file, after checking that a grubenv is
/// there (a wrong offset must not scribble on the file system).
fn write_grubenv(disk: &Path, offset: u64, entry_id: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("cannot open {}", disk.display()))?;
    let mut old = vec![0u8; GRUBENV_SIZE];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut old)?;
    if !old.starts_with(GRUBENV_HEADER.as_bytes()) {
        bail!(
            "{}: no GRUB environment block at byte {offset}",
            disk.display()
        );
    }
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&grubenv_block(entry_id)?)?;
    f.sync_all()?;
    Ok(())
}

/// `target/debimage/`.
pub fn dir() -> PathBuf {
    util::target_dir().join("debimage")
}

/// FNV-1a, 64 bits: a stable name for the root tarball's inputs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The root tarball's path: its name holds a hash of everything that goes into it.
pub fn root_tarball() -> PathBuf {
    let key = format!("{ROOT_FORMAT} {SUITE} {VARIANT} {}", PACKAGES.join(","));
    dir().join(format!("root-{SUITE}-{:016x}.tar", fnv1a(key.as_bytes())))
}

/// The host's apt sources for Debian (given to mmdebstrap as the image's sources).
fn host_sources() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter(|p| {
            let ext_ok = matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("list" | "sources")
            );
            ext_ok
                && std::fs::read_to_string(p)
                    .map(|t| t.contains(SUITE) && t.contains("debian"))
                    .unwrap_or(false)
        })
        .collect()
}

/// Makes the root tarball with mmdebstrap unless it exists.
fn ensure_root_tarball() -> Result<PathBuf> {
    let tar = root_tarball();
    if tar.is_file() {
        eprintln!(
            "xtask: debimage: root tarball cached: {}",
            util::display_rel(&tar)
        );
        return Ok(tar);
    }
    let cache = dir().join("apt-cache");
    std::fs::create_dir_all(&cache)?;
    let sources = host_sources();
    if sources.is_empty() {
        bail!("no apt sources for Debian {SUITE} on this host (/etc/apt/sources.list*)");
    }
    let temp = util::temp_beside(&tar);
    let cache_s = cache.display().to_string();
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg("--format=tar")
        // Keep the downloads: copied in before, copied out after.
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
        .arg(format!(
            "--setup-hook=sync-in {cache_s} /var/cache/apt/archives/"
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {cache_s}"
        ))
        .arg(SUITE)
        .arg(&temp)
        .args(&sources)
        .stdin(Stdio::null());
    // Its progress goes to a log: it may run beside the host tests' output.
    let log = dir().join("mmdebstrap.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdout(log_file.try_clone()?).stderr(log_file);
    eprintln!(
        "xtask: debimage: building the {SUITE} root with mmdebstrap (a few minutes; log: {})",
        util::display_rel(&log)
    );
    let t = Instant::now();
    let status = cmd.status().context("cannot start mmdebstrap")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("mmdebstrap failed ({status}):\n{}", tail.join("\n"));
    }
    std::fs::rename(&temp, &tar)?;
    eprintln!(
        "xtask: debimage: mmdebstrap took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(tar)
}

/// Loop devices and mounts to undo, in reverse order, whatever happens.
#[derive(Default)]
struct Attached {
    loop_dev: Option<String>,
    mounts: Vec<PathBuf>,
    /// Symbolic links made in the host's /dev (bound into the image's root).
    links: Vec<PathBuf>,
}

impl Attached {
    fn mount(&mut self, args: &[&str], at: &Path) -> Result<()> {
        std::fs::create_dir_all(at)?;
        util::run_quiet(Command::new("mount").args(args).arg(at))?;
        self.mounts.push(at.to_path_buf());
        Ok(())
    }

    /// `/dev/disk/by-uuid/<uuid>` for the partition: Debian's `10_linux` writes
    /// `root=UUID=` only when that link exists, and a host without udev has none.
    fn uuid_link(&mut self, uuid: &str, part: &str) -> Result<()> {
        let dir = Path::new("/dev/disk/by-uuid");
        std::fs::create_dir_all(dir)?;
        let link = dir.join(uuid);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(part, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        self.links.push(link);
        Ok(())
    }

    fn unlink_all(&mut self) {
        for l in self.links.drain(..) {
            let _ = std::fs::remove_file(l);
        }
    }

    fn unmount_all(&mut self) -> Result<()> {
        self.unlink_all();
        let mut first_err = None;
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = util::run_quiet(Command::new("umount").arg(&m)) {
                // Busy: detach it lazily so the loop device can go.
                let _ = Command::new("umount").arg("-l").arg(&m).status();
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn detach(&mut self) -> Result<()> {
        if let Some(dev) = self.loop_dev.take() {
            util::run_quiet(Command::new("losetup").args(["-d", &dev]))?;
        }
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            eprintln!("xtask: debimage: cleanup: {e:#}");
        }
        if let Err(e) = self.detach() {
            eprintln!("xtask: debimage: cleanup: {e:#}");
        }
    }
}

/// A command run inside the image's root.
fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn write(root: &Path, path: &str, text: &str) -> Result<()> {
    let dest = root.join(path.trim_start_matches('/'));
    util::create_parent(&dest)?;
    std::fs::write(&dest, text).with_context(|| format!("cannot write {}", dest.display()))
}

fn random_uuid() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_string())
}

/// Waits for a partition's device node (`losetup -P` scans asynchronously on some hosts;
/// `partx -a` asks again).
fn partition_node(loop_dev: &str) -> Result<String> {
    let part = format!("{loop_dev}p1");
    let until = Instant::now() + Duration::from_secs(10);
    let mut asked = false;
    while !Path::new(&part).exists() {
        if Instant::now() > until {
            bail!("{part} did not appear after losetup -P and partx -a");
        }
        if !asked {
            let _ = Command::new("partx").args(["-a", loop_dev]).output();
            asked = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(part)
}

/// The one kernel version in the image's `/boot`.
fn kernel_version(root: &Path) -> Result<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(root.join("boot"))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            found.push(v.to_string());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in the image's /boot, found {found:?}"),
    }
}

/// The byte offset of `/boot/grub/grubenv` in the image, from `debugfs` on the partition.
fn grubenv_offset(part: &str) -> Result<u64> {
    let out =
        util::run_quiet(Command::new("debugfs").args(["-R", "stat /boot/grub/grubenv", part]))?;
    let size: u64 = out
        .lines()
        .find_map(|l| l.split("Size: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .context("debugfs gave no size for grubenv")?;
    if size != GRUBENV_SIZE as u64 {
        bail!("grubenv is {size} bytes, not {GRUBENV_SIZE}");
    }
    let block =
        util::run_quiet(Command::new("debugfs").args(["-R", "bmap /boot/grub/grubenv 0", part]))?;
    let block: u64 = block
        .trim()
        .parse()
        .with_context(|| format!("debugfs bmap said {block:?}"))?;
    let bs = util::run_quiet(Command::new("dumpe2fs").args(["-h", part]))?;
    let bs: u64 = bs
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|s| s.trim().parse().ok())
        .context("dumpe2fs gave no block size")?;
    block
        .checked_mul(bs)
        .and_then(|b| b.checked_add(PART_START))
        .context("grubenv offset overflows")
}

/// Where the last image is, and what it holds (written beside it, for people).
fn info_path() -> PathBuf {
    dir().join("bookworm.img.info")
}

/// Builds the image from the root tarball `tar` ([`ensure_root_tarball`]) with the
/// package `deb`; returns it.
fn build(tar: &Path, deb: &Path) -> Result<Image> {
    if !crate::process::is_root() {
        bail!("building the Debian image needs root (loop devices, mount, chroot)");
    }
    for tool in [
        "mmdebstrap",
        "sfdisk",
        "losetup",
        "mkfs.ext4",
        "debugfs",
        "chroot",
    ] {
        if !util::on_path(tool) {
            bail!("{tool} is missing (cargo xtask prereq installs it)");
        }
    }
    let t0 = Instant::now();
    let out = dir().join("bookworm.img");
    let temp = util::temp_beside(&out);
    let mnt = dir().join("mnt");
    let result = make_image(tar, deb, &temp, &mnt);
    let image = match result {
        Ok(mut image) => {
            std::fs::rename(&temp, &out)?;
            image.path = out;
            image
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    std::fs::write(
        info_path(),
        format!(
            "image={}\nkernel={}\nuuid={}\ngrubenv_offset={}\nplain_entry={}\nferrovisor_entry={}\n",
            image.path.display(),
            image.kernel,
            image.uuid,
            image.grubenv_offset,
            image.entry_id(Entry::Plain),
            image.entry_id(Entry::Ferrovisor)
        ),
    )?;
    eprintln!(
        "xtask: debimage: {} ready in {:.0} s (kernel {}, root UUID {})",
        util::display_rel(&image.path),
        t0.elapsed().as_secs_f64(),
        image.kernel,
        image.uuid
    );
    Ok(image)
}

fn make_image(tar: &Path, deb: &Path, img: &Path, mnt: &Path) -> Result<Image> {
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img)?.set_len(IMAGE_MIB << 20)?;
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", "--no-reread"])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start sfdisk")?;
    sfdisk.stdin.take().context("sfdisk stdin")?.write_all(
        format!(
            "label: dos\nstart={}, type=83, bootable\n",
            PART_START / 512
        )
        .as_bytes(),
    )?;
    let out = sfdisk.wait_with_output()?;
    if !out.status.success() {
        bail!("sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    let mut att = Attached::default();
    if mnt.exists() {
        // A previous run killed mid-way may have left it mounted.
        let _ = Command::new("umount").arg("-R").arg(mnt).output();
    }
    let dev = util::run_quiet(
        Command::new("losetup")
            .args(["-P", "--show", "-f"])
            .arg(img),
    )?
    .trim()
    .to_string();
    if !dev.starts_with("/dev/loop") {
        bail!("losetup printed {dev:?}");
    }
    att.loop_dev = Some(dev.clone());
    let part = partition_node(&dev)?;
    let uuid = random_uuid()?;
    util::run_quiet(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL, "-U", &uuid])
            // GRUB 2.06 reads no file system with the checksum seed feature.
            .args(["-O", "^metadata_csum_seed"])
            .arg(&part),
    )?;
    att.mount(&[&part], mnt)?;
    let t = Instant::now();
    util::run_quiet(
        Command::new("tar")
            .args([
                "-x",
                "-p",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
            ])
            .arg("-f")
            .arg(tar)
            .arg("-C")
            .arg(mnt),
    )?;
    eprintln!(
        "xtask: debimage: root unpacked in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    configure(mnt, &uuid)?;

    att.uuid_link(&uuid, &part)?;
    att.mount(&["--bind", "/dev"], &mnt.join("dev"))?;
    att.mount(&["-t", "proc", "proc"], &mnt.join("proc"))?;
    att.mount(&["-t", "sysfs", "sysfs"], &mnt.join("sys"))?;
    util::run_quiet(&mut chroot(
        mnt,
        &["grub-install", "--target=i386-pc", &dev],
    ))?;
    util::run_quiet(&mut chroot(mnt, &["update-grub"]))?;
    let in_root = "/tmp/ferrovisor.deb";
    std::fs::copy(deb, mnt.join(in_root.trim_start_matches('/')))
        .with_context(|| format!("cannot copy {}", deb.display()))?;
    let log = util::run_quiet(&mut chroot(mnt, &["dpkg", "-i", in_root]))?;
    std::fs::remove_file(mnt.join(in_root.trim_start_matches('/')))?;
    let kernel = kernel_version(mnt)?;
    let mut image = Image {
        path: img.to_path_buf(),
        kernel,
        uuid,
        grubenv_offset: 0,
    };
    // The package's postinst ran update-grub: its entries must be in the menu, and every
    // kernel line must name the root by UUID (not by the build host's loop device).
    let cfg = std::fs::read_to_string(mnt.join("boot/grub/grub.cfg"))?;
    if cfg.contains("root=/dev/") {
        bail!("grub.cfg names the root by device, not by UUID");
    }
    for entry in [Entry::Plain, Entry::Ferrovisor] {
        let id = image.entry_id(entry);
        let last = id.rsplit('>').next().unwrap_or(&id);
        if !cfg.contains(&format!("'{last}'")) {
            bail!("grub.cfg has no menu entry {last} after installing the package:\n{log}");
        }
    }
    util::run_quiet(&mut chroot(
        mnt,
        &[
            "grub-editenv",
            "/boot/grub/grubenv",
            "set",
            &format!("saved_entry={}", image.entry_id(Entry::Plain)),
        ],
    ))?;
    att.unmount_all()?;
    util::run_quiet(Command::new("e2fsck").args(["-f", "-n"]).arg(&part))?;
    image.grubenv_offset = grubenv_offset(&part)?;
    att.detach()?;
    // The environment block is where debugfs says.
    write_grubenv(img, image.grubenv_offset, &image.entry_id(Entry::Plain))?;
    Ok(image)
}

/// The image's own settings (see the module's documentation, step 3).
fn configure(root: &Path, uuid: &str) -> Result<()> {
    write(
        root,
        "etc/fstab",
        &format!("# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={uuid} / ext4 errors=remount-ro 0 1\n"),
    )?;
    write(root, "etc/hostname", &format!("{HOSTNAME}\n"))?;
    write(
        root,
        "etc/hosts",
        &format!(
            "127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n"
        ),
    )?;
    // A machine ID: with an empty one, systemd takes the boot for a first boot and
    // systemd-firstboot asks questions on the console.
    let id = random_uuid()?.replace('-', "");
    write(root, "etc/machine-id", &format!("{id}\n"))?;
    write(
        root,
        "etc/default/grub.d/zz-ferrovisor-image.cfg",
        GRUB_TEST_CFG,
    )?;
    for tty in ["ttyS0", "hvc0"] {
        write(
            root,
            &format!("etc/systemd/system/serial-getty@{tty}.service.d/autologin.conf"),
            autologin_dropin(),
        )?;
    }
    Ok(())
}

static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();

/// The image for this run of xtask: built (package included) once, on first use; a
/// caller that comes while another thread builds it waits for that build.
pub fn image() -> Result<Image> {
    BUILT
        .get_or_init(|| {
            // The root first: on a fresh machine it is the long part, and it needs no
            // cargo (so it overlaps well with the host tests, see `prefetch`).
            if !crate::process::is_root() {
                return Err("building it needs root (loop devices, mount, chroot)".into());
            }
            let tar = ensure_root_tarball().map_err(|e| format!("{e:#}"))?;
            let deb = crate::deb::build(None).map_err(|e| format!("{e:#}"))?;
            build(&tar, &deb).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("the Debian test image: {e}"))
}

/// Starts building the image in the background (`cargo xtask test` does so first thing
/// when it will boot it: mmdebstrap's minutes on a fresh machine then overlap with the
/// host tests and the build). Errors are reported where the image is used.
pub fn prefetch() {
    let mut slot = PREFETCH.lock().unwrap_or_else(|p| p.into_inner());
    if BUILT.get().is_none() && slot.is_none() {
        *slot = Some(std::thread::spawn(|| {
            let _ = image();
        }));
    }
}

static PREFETCH: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(None);

/// Waits for a [`prefetch`] still running: xtask must not exit with the image mounted
/// (its cleanup runs only when the build returns).
pub fn join_prefetch() {
    let handle = PREFETCH.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// `cargo xtask debimage`.
pub fn cmd(output: Option<PathBuf>) -> Result<()> {
    let image = image()?;
    let path = match output {
        Some(o) => {
            util::run_quiet(
                Command::new("cp")
                    .args(["--sparse=always", "--reflink=auto"])
                    .arg(&image.path)
                    .arg(&o),
            )?;
            o
        }
        None => image.path.clone(),
    };
    println!(
        "wrote {} (kernel {})",
        util::display_rel(&path),
        image.kernel
    );
    println!(
        "boot it: qemu-system-x86_64 -accel tcg -cpu max -m {MACHINE_MIB} -display none \
         -serial mon:stdio -drive file={},format=raw,if=none,id=disk0 -device ahci,id=ahci \
         -device ide-hd,drive=disk0,bus=ahci.0,bootindex=1",
        path.display()
    );
    println!(
        "GRUB boots saved_entry (plain Linux now); for the ferrovisor entry, in the booted \
         system: grub-reboot '{}'",
        image.entry_id(Entry::Ferrovisor)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grubenv_block_is_grub_s_format() {
        let b = grubenv_block("gnulinux-simple-1234").unwrap();
        assert_eq!(b.len(), 1024);
        let text = String::from_utf8(b).unwrap();
        assert!(text.starts_with("# GRUB Environment Block\nsaved_entry=gnulinux-simple-1234\n#"));
        assert!(text.trim_end_matches('#').ends_with('\n'));
        assert!(grubenv_block("a\nb").is_err());
        assert!(grubenv_block(&"x".repeat(1100)).is_err());
    }

    #[test]
    fn entry_ids_match_the_hooks() {
        let image = Image {
            path: PathBuf::new(),
            kernel: "6.1.0-35-amd64".into(),
            uuid: "u-1".into(),
            grubenv_offset: 0,
        };
        assert_eq!(image.entry_id(Entry::Plain), "gnulinux-simple-u-1");
        // The hook's submenu and entry IDs (packaging/deb/20_linux_ferrovisor).
        assert_eq!(
            image.entry_id(Entry::Ferrovisor),
            "ferrovisor-u-1>ferrovisor-6.1.0-35-amd64-u-1"
        );
    }

    #[test]
    fn the_tarball_name_follows_the_package_list() {
        let name = root_tarball();
        let name = name.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("root-bookworm-") && name.ends_with(".tar"));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn grub_settings_pick_the_saved_entry_on_the_serial_line() {
        for line in [
            "GRUB_DEFAULT=saved",
            "GRUB_TERMINAL=serial",
            "GRUB_CMDLINE_LINUX=\"console=ttyS0,115200\"",
            "GRUB_CMDLINE_LINUX_FERROVISOR_REPLACE=\"pci=noacpi\"",
        ] {
            assert!(GRUB_TEST_CFG.lines().any(|l| l == line), "{line}");
        }
    }
}
