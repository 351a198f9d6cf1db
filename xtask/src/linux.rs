//! dom0: the stock Debian kernel and the test initramfs, and booting them
//! without the hypervisor for comparison (`cargo xtask dom0-baseline`).
//!
//! The kernel is whatever Debian's `linux-image-amd64` metapackage depends on
//! *now* (resolved with `apt-cache`, never pinned: the `-NN` ABI number moves
//! with every security update), preferring the `-unsigned` build of the same
//! package, which has the same `/boot/vmlinuz-*` and `/lib/modules/*` without
//! the PE signature. Everything lives in `target/dom0/`:
//!
//! | path | what |
//! |---|---|
//! | `<package>_<version>_amd64.deb` | the download (kept; never fetched twice) |
//! | `pkg/` | `dpkg-deb -x` of it; `pkg/.source` names the .deb it came from |
//! | `pkg/boot/vmlinuz-<kver>` | the unmodified bzImage (XZ payload): dom0's module 0 |
//! | `pkg/lib/modules/<kver>/` | its modules |
//! | `initramfs.cpio.gz` | busybox + `/init` + Xen modules: module 1 (see [`crate::initramfs`]) |
//! | `fixtures/` | broken images for the bad-image tests |
//! | `baseline-<emulator>/` | logs of `dom0-baseline` |

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;

use crate::image::{self, Module};
use crate::{bochs, build, initramfs, prereq, process, util};

/// The metapackage that names the current kernel.
const METAPACKAGE: &str = "linux-image-amd64";

/// dom0's kernel command line (after the module's file name): the console is
/// the Xen PV console, early messages go through the console_io hypercall.
pub const DOM0_KERNEL_CMDLINE: &str = "console=hvc0 earlyprintk=xen clocksource=xen";

/// What `run-qemu`/`run-bochs` add to the hypervisor command line when they
/// boot dom0.
pub const DOM0_MEM_OPTION: &str = "dom0_mem=512M";

/// The kernel command line of the baseline (no hypervisor).
pub const BASELINE_CMDLINE: &str = "console=ttyS0";

/// The line `/init` prints once userspace runs (tests/linux/init); group 1 is
/// the guest's uptime in seconds.
pub const BANNER_PATTERN: &str =
    r"dom0: userspace up, kernel \S+, hypervisor \S+, console \S+, uptime ([0-9.]+) s";
/// The line `/init` prints first, before anything else it does (tests/linux/init); group 1
/// is the guest's uptime in seconds.
pub const INIT_PATTERN: &str = r"init: running, uptime ([0-9.]+) s";
/// The line the interactive shell prints from `$ENV` once it owns the console.
pub const SHELL_READY_PATTERN: &str = r"dom0: shell ready on \S+";

/// Everything dom0 needs, ready on disk.
#[derive(Clone, Debug)]
pub struct Dom0Assets {
    /// The Debian package the kernel came from (`linux-image-6.1.0-NN-amd64-unsigned`).
    pub package: String,
    /// `uname -r` of the kernel (`6.1.0-NN-amd64`).
    pub version: String,
    /// The bzImage, unmodified.
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<version>` of the package.
    pub modules_dir: PathBuf,
    /// The gzip-compressed newc initramfs.
    pub initramfs: PathBuf,
    /// Modules inside the initramfs, in the order `/init` loads them.
    pub initramfs_modules: Vec<String>,
    /// Whether the initramfs was rewritten by this run.
    pub initramfs_rebuilt: bool,
}

impl Dom0Assets {
    /// The two boot modules of dom0, as Xen takes them: the kernel (command
    /// line `<file name> console=hvc0 earlyprintk=xen`) and the initramfs.
    pub fn boot_modules(&self) -> Vec<Module> {
        vec![
            Module {
                path: self.vmlinuz.clone(),
                args: DOM0_KERNEL_CMDLINE.into(),
            },
            Module {
                path: self.initramfs.clone(),
                args: String::new(),
            },
        ]
    }
}

/// `target/dom0`.
pub fn dom0_dir() -> PathBuf {
    util::target_dir().join("dom0")
}

/// The dom0 assets, fetched and built at most once per xtask run (later
/// calls, e.g. from every dom0 test, get the same result or the same error).
pub fn assets() -> Result<&'static Dom0Assets> {
    static ASSETS: OnceLock<std::result::Result<Dom0Assets, String>> = OnceLock::new();
    ASSETS
        .get_or_init(|| prepare().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("dom0 assets: {e}"))
}

fn is_root() -> bool {
    crate::process::is_root()
}

/// Fetches, unpacks and packs everything.
fn prepare() -> Result<Dom0Assets> {
    prereq::ensure(&[prereq::Need::Initramfs])?;
    let dir = dom0_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pkg_dir = dir.join("pkg");

    let (package, deb) = match resolve_package() {
        Ok(package) => {
            let deb = download(&package, &dir)?;
            (package, deb)
        }
        // Offline, or apt cannot say: an earlier extraction still boots.
        Err(e) => match std::fs::read_to_string(pkg_dir.join(".source")) {
            Ok(source) => {
                let deb = dir.join(source.trim());
                eprintln!(
                    "xtask: warning: cannot resolve {METAPACKAGE} ({e:#}); using the kernel already unpacked from {}",
                    source.trim()
                );
                let package = source.split('_').next().unwrap_or("?").to_string();
                (package, deb)
            }
            Err(_) => return Err(e),
        },
    };
    extract(&deb, &pkg_dir)?;

    let (version, vmlinuz) = find_vmlinuz(&pkg_dir.join("boot"))?;
    let modules_dir = pkg_dir.join("lib/modules").join(&version);
    if !modules_dir.is_dir() {
        bail!("{} has no {}", deb.display(), modules_dir.display());
    }
    // The example domU boots the same kernel with the same init (which sees it is not
    // the control domain) and no tools.
    let domu = initramfs::build_domu(
        &version,
        &modules_dir,
        &tool_extras(build::DOMU_TOOLS)?,
        &dir.join("domu-initramfs.cpio.gz"),
    )?;
    let extras = dom0_extras(&vmlinuz, &domu.path)?;
    let built = initramfs::build(
        &version,
        &modules_dir,
        &extras,
        &dir.join("initramfs.cpio.gz"),
    )?;
    Ok(Dom0Assets {
        package,
        version,
        vmlinuz,
        modules_dir,
        initramfs: built.path,
        initramfs_modules: built.modules,
        initramfs_rebuilt: built.rebuilt,
    })
}

/// dom0's initramfs for Xen 4.17 itself (the bench's reference): the same archive as
/// [`Dom0Assets::initramfs`] with Xen's own dom0 userspace in place of ferrovisor's tools
/// ([`xen::toolstack_extras`]), in `target/dom0/initramfs-xen.cpio.gz`. The same `/init`
/// starts whichever xenstored and xenconsoled it finds. Built at most once per xtask run,
/// as [`assets`] (every bench run of Xen boots it).
pub fn xen_dom0_initramfs() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_xen_dom0_initramfs().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("Xen dom0 initramfs: {e}"))
}

fn build_xen_dom0_initramfs() -> Result<PathBuf> {
    let a = assets()?;
    let domu = a.initramfs.with_file_name("domu-initramfs.cpio.gz");
    let mut extras = dom0_extras(&a.vmlinuz, &domu)?;
    extras.extend(crate::xen::toolstack_extras()?);
    let built = initramfs::build(
        &a.version,
        &a.modules_dir,
        &extras,
        &dom0_dir().join("initramfs-xen.cpio.gz"),
    )?;
    Ok(built.path)
}

/// Where dom0 finds the example domU's kernel and initramfs.
pub const DOMU_DIR: &str = "usr/lib/ferrovisor";
/// The example domU configuration, in dom0.
pub const EXAMPLE_CFG: &str = "/etc/xen/example.cfg";

/// The xenstore multicall's names, as Xen installs them.
pub const XENSTORE_LINKS: &[&str] = &[
    "read", "write", "ls", "rm", "exists", "list", "watch", "chmod",
];

/// `tools` built (static musl, release) as archive members in `/usr/sbin`.
fn tool_extras(tools: &[build::Artifact]) -> Result<Vec<initramfs::Extra>> {
    let tools: Vec<&build::Artifact> = tools.iter().collect();
    let paths = build::build(&tools, build::Profile::Release)?;
    let mut extras = Vec::new();
    for (tool, path) in tools.iter().zip(paths) {
        let links = if tool.bin == "xenstore" {
            XENSTORE_LINKS
                .iter()
                .map(|l| format!("usr/sbin/xenstore-{l}"))
                .collect()
        } else {
            Vec::new()
        };
        extras.push(initramfs::Extra {
            path: format!("usr/sbin/{}", tool.bin),
            mode: 0o755,
            data: std::fs::read(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            links,
        });
    }
    Ok(extras)
}

/// What only dom0's initramfs holds: the toolstack (static musl binaries in
/// `/usr/sbin`), the example domU's kernel and initramfs, its configuration, and the
/// `toolstack` test guest.
fn dom0_extras(vmlinuz: &Path, domu_initramfs: &Path) -> Result<Vec<initramfs::Extra>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut extras = tool_extras(build::DOM0_TOOLS)?;
    let file = |path: String, data: Vec<u8>| initramfs::Extra {
        path,
        mode: 0o644,
        data,
        links: Vec::new(),
    };
    extras.push(file(format!("{DOMU_DIR}/vmlinuz"), read(vmlinuz)?));
    extras.push(file(
        format!("{DOMU_DIR}/domu-initramfs.cpio.gz"),
        read(domu_initramfs)?,
    ));
    // A test guest for `xl` (bochs/toolstack/xl-cycle: its `console` mode talks on its
    // PV console), far quicker to build and boot than a Linux domU; without its debug
    // sections (1.8 MB of its 1.9 MB).
    let guest = build::build(&[&build::GUEST_TOOLSTACK], build::Profile::Release)?;
    let stripped = util::xtask_dir().join("fixtures/guest-toolstack-stripped");
    util::create_parent(&stripped)?;
    crate::image::copy_kernel(&guest[0], &stripped)?;
    extras.push(file(
        format!("{DOMU_DIR}/guest-toolstack"),
        read(&stripped)?,
    ));
    let cfg = util::repo_root().join("tests/linux/example.cfg");
    extras.push(file(
        EXAMPLE_CFG.trim_start_matches('/').to_string(),
        read(&cfg)?,
    ));
    Ok(extras)
}

/// Runs apt-cache; `Ok(None)` when apt does not know the package.
fn apt_cache(args: &[&str]) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(args)
        .output()
        .context("cannot run apt-cache")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !stdout.trim().is_empty() {
        Ok(Some(stdout))
    } else {
        Ok(None)
    }
}

/// The kernel package `linux-image-amd64` depends on (e.g.
/// `linux-image-6.1.0-56-amd64`) from `apt-cache depends` output.
fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| d.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_string)
}

/// The first `Version:` of `apt-cache show` output.
fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
}

/// Resolves the kernel package name now: the metapackage's dependency, its
/// `-unsigned` twin when apt has it (same files, no signature), after an
/// `apt-get update` when apt does not know the metapackage yet.
fn resolve_package() -> Result<String> {
    let depends = || apt_cache(&["depends", "--no-recommends", "--no-suggests", METAPACKAGE]);
    let mut text = depends()?;
    if text.as_deref().and_then(parse_depends).is_none() {
        if !is_root() {
            bail!("apt does not know {METAPACKAGE}; run:\n  sudo apt-get update\nand try again");
        }
        util::run_visible(Command::new("apt-get").args(["update", "-q"]))?;
        text = depends()?;
    }
    let package = text
        .as_deref()
        .and_then(parse_depends)
        .ok_or_else(|| anyhow!("`apt-cache depends {METAPACKAGE}` names no linux-image package"))?;
    let unsigned = format!("{package}-unsigned");
    if apt_cache(&["show", "--no-all-versions", &unsigned])?.is_some() {
        Ok(unsigned)
    } else {
        Ok(package)
    }
}

/// `apt-get download` into `dir`, unless the .deb of the current version is
/// already there. Returns its path. When apt does not know the package or
/// the download fails (an index older than the mirror), runs `apt-get
/// update` once as root and tries again.
pub fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    match try_download(package, dir) {
        Err(e) if is_root() => {
            eprintln!("xtask: {e:#}; updating apt's package lists and retrying");
            util::run_visible(Command::new("apt-get").args(["update", "-q"]))?;
            try_download(package, dir)
        }
        result => result,
    }
}

fn try_download(package: &str, dir: &Path) -> Result<PathBuf> {
    let show = apt_cache(&["show", "--no-all-versions", package])?
        .ok_or_else(|| anyhow!("apt-cache show {package}: unknown package"))?;
    let version =
        parse_version(&show).ok_or_else(|| anyhow!("apt-cache show {package}: no Version"))?;
    // apt-get names the file <package>_<version>_<arch>.deb, with an epoch's
    // colon written as %3a.
    let deb = dir.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if deb.is_file() {
        return Ok(deb);
    }
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir).arg("download");
    if is_root() {
        // Root downloads into a directory the _apt sandbox user cannot write;
        // say so up front instead of getting apt's warning.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(package);
    eprintln!("xtask: downloading {package} {version}");
    util::run_visible(&mut cmd)?;
    if !deb.is_file() {
        bail!(
            "apt-get download {package} did not produce {}",
            deb.display()
        );
    }
    Ok(deb)
}

/// Unpacks the .deb into `pkg_dir` unless that already holds it.
pub fn extract(deb: &Path, pkg_dir: &Path) -> Result<()> {
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = pkg_dir.join(".source");
    if std::fs::read_to_string(&source).is_ok_and(|s| s.trim() == name) {
        return Ok(());
    }
    if !deb.is_file() {
        bail!("{} is missing", deb.display());
    }
    let tmp = pkg_dir.with_extension("tmp");
    for d in [&tmp, &pkg_dir.to_path_buf()] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
    }
    eprintln!("xtask: unpacking {name}");
    util::run_visible(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    std::fs::write(tmp.join(".source"), format!("{name}\n"))?;
    std::fs::rename(&tmp, pkg_dir)?;
    Ok(())
}

/// The single `vmlinuz-<version>` in `boot`.
fn find_vmlinuz(boot: &Path) -> Result<(String, PathBuf)> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(boot).with_context(|| format!("cannot read {}", boot.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            found.push((version.to_string(), entry.path()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no vmlinuz-* in {}", boot.display()),
        _ => bail!("several vmlinuz-* in {}", boot.display()),
    }
}

/// `cargo xtask dom0-assets`: fetch and build, then say what is where.
pub fn cmd_assets(list: bool) -> Result<ExitCode> {
    let a = assets()?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!("kernel package: {}", a.package);
    println!("kernel version: {}", a.version);
    println!(
        "vmlinuz:        {} ({} bytes)",
        util::display_rel(&a.vmlinuz),
        size(&a.vmlinuz)
    );
    println!("modules:        {}", util::display_rel(&a.modules_dir));
    println!(
        "initramfs:      {} ({} bytes, {})",
        util::display_rel(&a.initramfs),
        size(&a.initramfs),
        if a.initramfs_rebuilt {
            "rebuilt"
        } else {
            "up to date"
        }
    );
    println!("xen modules:    {}", a.initramfs_modules.join(" "));
    if list {
        let listing = util::run_quiet(
            Command::new("sh")
                .arg("-c")
                .arg("gzip -dc \"$1\" | cpio -t --quiet")
                .arg("sh")
                .arg(&a.initramfs),
        )?;
        print!("{listing}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// Baseline: the same kernel and initramfs without the hypervisor

/// Which emulator(s) `dom0-baseline` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineEmulator {
    /// QEMU TCG, `-cpu max`, `-kernel`/`-initrd` (no BIOS, no GRUB).
    Qemu,
    /// Bochs (the Skylake-X model of the tests), GRUB `linux`/`initrd` from an ISO.
    Bochs,
    /// QEMU, then Bochs.
    Both,
}

/// An emulator with a guest on its serial console, driven line by line
/// (here and by `cargo xtask bench`).
pub struct Session {
    group: process::Group,
    input: Box<dyn Write + Send>,
    rx: Receiver<Vec<u8>>,
    /// Console text not yet consumed by a wait.
    pending: String,
    /// Just before the emulator was spawned.
    pub start: Instant,
    /// The command line, as a user could paste it.
    pub command: String,
    log: std::fs::File,
    closed: bool,
}

impl Session {
    /// Starts an emulator whose serial console is its stdin/stdout (QEMU
    /// `-serial stdio`). The console goes to `dir/console.log` too, the
    /// emulator's stderr to `dir/emulator.stderr`.
    pub fn stdio(cmd: &mut Command, dir: &Path) -> Result<Session> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("(cd {} && {})", dir.display(), util::show_command(cmd));
        eprintln!("$ {command}");
        let start = Instant::now();
        let mut group = process::spawn_group(cmd)?;
        let (tx, rx) = mpsc::channel();
        spawn_reader(group.child.stdout.take().expect("piped stdout"), tx);
        spawn_sink(
            group.child.stderr.take().expect("piped stderr"),
            dir.join("emulator.stderr"),
        );
        let input = Box::new(group.child.stdin.take().expect("piped stdin"));
        Ok(Session {
            group,
            input,
            rx,
            pending: String::new(),
            start,
            command,
            log: std::fs::File::create(dir.join("console.log"))?,
            closed: false,
        })
    }

    /// Starts Bochs (a command from [`bochs::prepare`] in `dir`) with its COM1
    /// connecting to `listener`; Bochs's own output goes to files in `dir`.
    pub fn bochs(cmd: &mut Command, listener: &TcpListener, dir: &Path) -> Result<Session> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let command = format!("(cd {} && {})", dir.display(), util::show_command(cmd));
        eprintln!("$ {command}");
        let start = Instant::now();
        let mut group = process::spawn_group(cmd)?;
        spawn_sink(
            group.child.stdout.take().expect("piped stdout"),
            dir.join("bochs.stdout"),
        );
        spawn_sink(
            group.child.stderr.take().expect("piped stderr"),
            dir.join("bochs.stderr"),
        );
        let com1 = bochs::accept_com1(listener, &mut group.child, Duration::from_secs(30))?;
        let (tx, rx) = mpsc::channel();
        spawn_reader(com1.try_clone()?, tx);
        Ok(Session {
            group,
            input: Box::new(com1),
            rx,
            pending: String::new(),
            start,
            command,
            log: std::fs::File::create(dir.join("console.log"))?,
            closed: false,
        })
    }

    /// Waits until `pattern` matches a complete console line received since
    /// the last match; returns its capture groups (0 = the whole match).
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<Vec<String>> {
        let re = Regex::new(pattern)?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut consumed = 0;
            let mut found = None;
            for line in self.pending.split_inclusive('\n') {
                if !line.ends_with('\n') {
                    break; // unfinished: a number may still be growing
                }
                consumed += line.len();
                if let Some(c) = re.captures(line.trim_end_matches('\n')) {
                    found = Some(
                        c.iter()
                            .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                            .collect::<Vec<_>>(),
                    );
                    break;
                }
            }
            if let Some(groups) = found {
                self.pending.drain(..consumed);
                return Ok(groups);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no /{pattern}/ within {} s (see {})",
                    timeout.as_secs(),
                    "the console log"
                );
            }
            if self.closed {
                bail!("the emulator ended before /{pattern}/ appeared");
            }
            match self
                .rx
                .recv_timeout((deadline - now).min(Duration::from_millis(100)))
            {
                Ok(bytes) => {
                    self.log.write_all(&bytes)?;
                    self.pending
                        .push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Kills the emulator (harmless when it already ended).
    pub fn stop(&mut self) {
        self.group.killer().kill();
    }

    /// Types `text` into the emulator's console.
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.send(text)
    }

    fn send(&mut self, text: &str) -> Result<()> {
        self.input.write_all(text.as_bytes())?;
        self.input.flush()?;
        Ok(())
    }

    /// Waits for the emulator to exit by itself; false after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // Keep the log complete.
            while let Ok(bytes) = self.rx.try_recv() {
                self.log.write_all(&bytes)?;
            }
            if self.group.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(false)
    }
}

fn spawn_reader(mut reader: impl Read + Send + 'static, tx: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
}

/// Drains a stream into a file (emulator chatter we only keep for logs).
fn spawn_sink(mut reader: impl Read + Send + 'static, path: PathBuf) {
    std::thread::spawn(move || {
        if let Ok(mut file) = std::fs::File::create(path) {
            let _ = std::io::copy(&mut reader, &mut file);
        }
    });
}

/// The kernel and initramfs on bare QEMU TCG (`-kernel`, no BIOS or GRUB).
pub fn start_qemu(a: &Dom0Assets, dir: &Path) -> Result<Session> {
    prereq::ensure(&[prereq::Need::Qemu])?;
    let mut cmd = crate::qemu_build::command();
    cmd.current_dir(dir)
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1G"])
        .args(["-display", "none", "-nic", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&a.vmlinuz)
        .arg("-initrd")
        .arg(&a.initramfs)
        .args(["-append", BASELINE_CMDLINE]);
    Session::stdio(&mut cmd, dir)
}

/// A GRUB ISO that boots the kernel with `linux` and `initrd` (BIOS only, as
/// the hypervisor's ISO in [`crate::image`]).
fn linux_iso(a: &Dom0Assets, dir: &Path) -> Result<PathBuf> {
    let staging = dir.join("iso.staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(staging.join("boot/grub"))?;
    std::fs::copy(&a.vmlinuz, staging.join("boot/vmlinuz"))?;
    std::fs::copy(&a.initramfs, staging.join("boot/initramfs.cpio.gz"))?;
    std::fs::write(
        staging.join("boot/grub/grub.cfg"),
        format!(
            "# Generated by `cargo xtask dom0-baseline`.\nset timeout=0\nset default=0\n\n\
             menuentry \"linux\" {{\n    linux /boot/vmlinuz {BASELINE_CMDLINE}\n    \
             initrd /boot/initramfs.cpio.gz\n    boot\n}}\n"
        ),
    )?;
    let iso = dir.join("linux.iso");
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("-d")
        .arg(image::GRUB_PLATFORM_DIR)
        .arg("--install-modules=linux normal configfile")
        .args(["--fonts=", "--locales=", "--themes="])
        .arg("-o")
        .arg(&iso)
        .arg(&staging);
    util::run_quiet(&mut cmd)?;
    std::fs::remove_dir_all(&staging)?;
    Ok(iso)
}

/// The kernel and initramfs on bare Bochs, through GRUB `linux`.
pub fn start_bochs(a: &Dom0Assets, dir: &Path) -> Result<Session> {
    prereq::ensure(&[prereq::Need::Bochs, prereq::Need::Grub])?;
    let iso = linux_iso(a, dir)?;
    let (listener, port) = bochs::com1_listener()?;
    let mut cmd = bochs::prepare(
        dir,
        &bochs::Config {
            iso: &iso,
            com1: bochs::Com1::Socket(port),
            log: &dir.join("bochs.log"),
            megs: 1024,
        },
    )?;
    Session::bochs(&mut cmd, &listener, dir)
}

/// The host's clock as seconds since the epoch.
pub fn host_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The shell command that prints `SLEPT_MS=<n>`: how long `sleep 2` took by
/// the guest's own monotonic clock (`/proc/uptime`), computed in the guest.
pub const SLEEP_CHECK: &str = "a=$(cut -d' ' -f1 /proc/uptime); sleep 2; b=$(cut -d' ' -f1 /proc/uptime); \
                               echo SLEPT_MS=$(awk -v a=$a -v b=$b 'BEGIN { printf \"%d\", (b - a) * 1000 }')\n";
/// The shell command that prints the guest's wall clock as `EPOCH=<seconds>`.
pub const DATE_CHECK: &str = "echo EPOCH=$(date +%s)\n";

/// Figures of one baseline boot.
struct Figures {
    banner: Duration,
    guest_uptime: f64,
    shell: Duration,
    date_offset: f64,
    slept_guest_ms: u64,
    slept_host: Duration,
    poweroff: Option<Duration>,
}

fn measure(session: &mut Session, slow: bool) -> Result<Figures> {
    let boot_limit = Duration::from_secs(if slow { 600 } else { 120 });
    let step = Duration::from_secs(if slow { 120 } else { 30 });
    let banner = session.wait_for(BANNER_PATTERN, boot_limit)?;
    let t_banner = session.start.elapsed();
    let guest_uptime = banner[1].parse().unwrap_or(0.0);
    eprintln!(
        "xtask: banner after {:.1} s: {}",
        t_banner.as_secs_f64(),
        banner[0]
    );
    session.wait_for(SHELL_READY_PATTERN, step)?;
    let t_shell = session.start.elapsed();

    session.send(DATE_CHECK)?;
    let epoch = session.wait_for(r"EPOCH=(\d+)", step)?;
    let date_offset = epoch[1].parse::<f64>().unwrap_or(0.0) - host_epoch();

    let sent = Instant::now();
    session.send(SLEEP_CHECK)?;
    let slept = session.wait_for(r"SLEPT_MS=(\d+)", step)?;
    let slept_host = sent.elapsed();

    session.send("poweroff -f\n")?;
    let t0 = session.start.elapsed();
    let poweroff = session
        .wait_exit(step)?
        .then(|| session.start.elapsed() - t0);
    Ok(Figures {
        banner: t_banner,
        guest_uptime,
        shell: t_shell,
        date_offset,
        slept_guest_ms: slept[1].parse().unwrap_or(0),
        slept_host,
        poweroff,
    })
}

/// `cargo xtask dom0-baseline`: boots the dom0 kernel and initramfs on the
/// bare emulator and reports how long it took to reach userspace.
pub fn cmd_baseline(which: BaselineEmulator) -> Result<ExitCode> {
    let a = assets()?;
    eprintln!("xtask: kernel {} ({})", a.version, a.package);
    let mut runs: Vec<(&str, bool)> = Vec::new();
    if matches!(which, BaselineEmulator::Qemu | BaselineEmulator::Both) {
        runs.push(("qemu-tcg", false));
    }
    if matches!(which, BaselineEmulator::Bochs | BaselineEmulator::Both) {
        runs.push(("bochs", true));
    }
    let mut failed = false;
    for (name, slow) in runs {
        let dir = dom0_dir().join(format!("baseline-{name}"));
        std::fs::create_dir_all(&dir)?;
        let session = if slow {
            start_bochs(a, &dir)
        } else {
            start_qemu(a, &dir)
        };
        let result = session.and_then(|mut s| {
            let figures = measure(&mut s, slow);
            s.stop();
            figures
        });
        let log = util::display_rel(&dir.join("console.log"));
        match result {
            Ok(f) => println!(
                "dom0-baseline {name}: banner after {:.1} s (guest uptime {:.1} s), shell {:.1} s; \
                 date {:+.1} s from host; sleep 2 = {} ms guest, {:.2} s host; poweroff {}; kernel {}; log {log}",
                f.banner.as_secs_f64(),
                f.guest_uptime,
                f.shell.as_secs_f64(),
                f.date_offset,
                f.slept_guest_ms,
                f.slept_host.as_secs_f64(),
                f.poweroff
                    .map_or("did not end the emulator".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                a.version,
            ),
            Err(e) => {
                failed = true;
                println!("dom0-baseline {name}: FAILED: {e:#}; log {log}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_parsing() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let virt = "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n  Depends: kmod\n";
        assert_eq!(
            parse_depends(virt).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(parse_depends("x\n  Depends: kmod\n"), None);
        assert_eq!(
            parse_version("Package: x\nVersion: 6.1.192-2\nVersion: 1\n").as_deref(),
            Some("6.1.192-2")
        );
    }

    #[test]
    fn banner_pattern_matches_init() {
        let re = Regex::new(BANNER_PATTERN).unwrap();
        let c = re
            .captures("dom0: userspace up, kernel 6.1.0-56-amd64, hypervisor xen, console hvc0, uptime 3.14 s")
            .unwrap();
        assert_eq!(&c[1], "3.14");
        let init = std::fs::read_to_string(util::repo_root().join("tests/linux/init")).unwrap();
        // `$me` is dom0 unless the kernel runs as an unprivileged Xen domain.
        assert!(init.contains("\nme=dom0\n"));
        assert!(init.contains(
            "$me: userspace up, kernel $(uname -r), hypervisor $hv, console $tty, uptime $up s"
        ));
    }
}
