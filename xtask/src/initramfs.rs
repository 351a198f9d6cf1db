//! The dom0 test initramfs: busybox, `/init` from `tests/linux/`, and the Xen
//! driver modules of the Debian kernel, as a gzip-compressed `newc` cpio.
//!
//! The archive is written here in Rust rather than with `cpio -o` from a
//! staging directory, because it needs a `/dev/console` device node (the
//! kernel opens it for init's stdin/stdout before init runs), and creating
//! one in a staging directory needs root. Writing the format ourselves also
//! makes the output byte-for-byte reproducible (every mtime is 0, owners are
//! root), so "has anything changed" is a hash of the uncompressed archive.
//!
//! Linux unpacks the gzip itself (`CONFIG_RD_GZIP=y`); the hypervisor passes
//! the file to the kernel as it is.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util;

/// The statically linked busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// Files of the initramfs that come from the repository.
const INIT: &str = "tests/linux/init";
const SHELLRC: &str = "tests/linux/shellrc";
/// The PV I/O tests' halves: the domU's (run by `/init` when the kernel command line
/// names a test) and dom0's (typed by the harness).
const FVTEST: &str = "tests/linux/fvtest";
const PVIO_TEST: &str = "tests/linux/pvio-test";
const MEASURE: &str = "tests/linux/measure.sh";

/// Xen driver modules both dom0's and the example domU's initramfs pack (module names as
/// `modinfo` prints them, `-` and `_` alike), with their dependencies: the device files
/// and the frontends. The Debian 6.1 kernel builds these as modules (docs:
/// xen-pvh-abi.md §0). `/init` loads all it finds, in the order written to
/// `/etc/xen-modules`, when it runs on Xen; the frontends are harmless without their
/// xenstore nodes.
pub const XEN_MODULES: &[&str] = &[
    "xen-evtchn",
    "xen-privcmd",
    "xenfs",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-blkfront",
    "xen-netfront",
];

/// The backends, which only dom0 loads.
pub const XEN_BACKENDS: &[&str] = &["xen-blkback", "xen-netback"];

/// What dom0's PV block and network backends need around the Xen drivers: loop devices
/// (dom0 backs `file:` disks with them), the bridge (`xenbr0`), and ext4 with the
/// crc32c its checksums use (the crypto API finds it once loaded, without modprobe);
/// and the SATA (AHCI) disk driver, for a host disk dom0 drives itself by DMA with MSI.
pub const IO_MODULES: &[&str] = &["loop", "bridge", "ext4", "crc32c_generic", "ahci", "sd_mod"];

/// What the example domU loads besides [`XEN_MODULES`]: ext4 for the PV I/O tests' file
/// system; no backends, loop devices or bridge, which only dom0 uses (loading them took
/// about 0.4 s of each domU boot under QEMU TCG).
pub const DOMU_IO_MODULES: &[&str] = &["ext4", "crc32c_generic"];

/// dom0's modules, in load order: [`XEN_MODULES`], [`XEN_BACKENDS`], [`IO_MODULES`].
pub fn dom0_modules() -> Vec<&'static str> {
    XEN_MODULES
        .iter()
        .chain(XEN_BACKENDS)
        .chain(IO_MODULES)
        .copied()
        .collect()
}

/// Debian programs both images carry, with the shared libraries they load (as `ldd`
/// resolves them on this machine, at the same paths): `iperf3` for the network tests
/// and bench, and e2fsprogs' `mke2fs` (busybox's makes ext2 only), which replaces the
/// busybox applet and is also `mkfs.ext4`. Their packages are prerequisites
/// (crate::prereq).
pub const HOST_PROGRAMS: &[HostProgram] = &[
    HostProgram {
        path: "/usr/bin/iperf3",
        at: "usr/bin/iperf3",
        links: &[],
        files: &[],
    },
    HostProgram {
        path: "/usr/sbin/mke2fs",
        at: "sbin/mke2fs",
        links: &["/sbin/mkfs.ext4", "/sbin/mkfs.ext2"],
        files: &["/etc/mke2fs.conf"],
    },
];

/// A dynamically linked program of the build machine copied into the archive.
pub struct HostProgram {
    /// Where it is installed here.
    pub path: &'static str,
    /// Its path inside the archive (replacing a busybox applet of that name).
    pub at: &'static str,
    /// Other names for it (absolute paths in the archive).
    pub links: &'static [&'static str],
    /// Configuration files it reads, copied to the same paths.
    pub files: &'static [&'static str],
}

/// Bump when the layout changes in a way the content hash cannot see.
const FORMAT: u32 = 1;

// ---------------------------------------------------------------------------
// The newc format

/// One archive member.
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// A cpio archive in `newc` format (the one the kernel reads: "070701"
/// headers of 13 eight-digit hex fields, names and data padded to 4 bytes).
#[derive(Default)]
pub struct Cpio {
    /// Path (no leading `/`) to entry; sorted, so parents come first.
    entries: BTreeMap<String, Entry>,
}

impl Cpio {
    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/').to_string();
        self.parent(&path);
        self.entries.insert(path, Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/').to_string();
        self.parent(&path);
        self.entries
            .insert(path, Entry::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = path.trim_start_matches('/').to_string();
        self.parent(&path);
        self.entries
            .insert(path, Entry::CharDev { major, minor, mode });
    }

    /// The archive bytes, ending with the `TRAILER!!!` record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match entry {
                Entry::Dir => (0o040755, &[], 2, (0, 0)),
                Entry::File { data, mode } => (0o100000 | mode, data, 1, (0, 0)),
                Entry::Symlink(target) => (0o120777, target.as_bytes(), 1, (0, 0)),
                Entry::CharDev { major, minor, mode } => {
                    (0o020000 | mode, &[], 1, (*major, *minor))
                }
            };
            write_record(&mut out, ino as u32 + 1, mode, nlink, rdev, name, data);
        }
        write_record(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// Member paths (for listings and tests).
    #[allow(dead_code)] // used by the unit tests
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

fn write_record(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: reproducible archives
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1, // with its NUL
        0,                     // check (unused by newc)
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

// ---------------------------------------------------------------------------
// Kernel modules

/// A module file found in the kernel's module tree.
#[derive(Clone, Debug)]
struct ModuleFile {
    /// Path relative to `/lib/modules/<version>/`, without a compression
    /// suffix (`kernel/drivers/xen/xen-evtchn.ko`).
    rel: String,
    /// The file on disk (maybe `.ko.xz` / `.ko.zst` / `.ko.gz`).
    path: PathBuf,
}

/// The canonical module name: `-` and `_` are the same to modprobe.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module under `modules_dir`, by canonical name.
fn index_modules(modules_dir: &Path) -> Result<BTreeMap<String, ModuleFile>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
            else {
                continue;
            };
            let rel_dir = path
                .parent()
                .and_then(|p| p.strip_prefix(modules_dir).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let rel = if rel_dir.is_empty() {
                format!("{stem}.ko")
            } else {
                format!("{rel_dir}/{stem}.ko")
            };
            index.insert(canonical(stem), ModuleFile { rel, path });
        }
    }
    Ok(index)
}

/// A module's contents, decompressed with the system tool when Debian ships
/// it compressed (Debian 12 does not, later releases use xz or zstd; busybox
/// insmod reads only plain ELF).
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool: Option<&[&str]> = if name.ends_with(".xz") {
        Some(&["xz", "-dc"])
    } else if name.ends_with(".zst") {
        Some(&["zstd", "-dcq"])
    } else if name.ends_with(".gz") {
        Some(&["gzip", "-dc"])
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).with_context(|| format!("cannot read {}", path.display())),
        Some(argv) => {
            let out = Command::new(argv[0])
                .args(&argv[1..])
                .arg(path)
                .output()
                .with_context(|| format!("cannot run {} (to decompress {name})", argv[0]))?;
            if !out.status.success() {
                bail!(
                    "{} {name} failed: {}",
                    argv.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(out.stdout)
        }
    }
}

/// The `depends=` list in a module's `.modinfo` section (NUL-separated
/// `key=value` strings; searching the whole file for the key is enough, as
/// modpost writes it exactly once).
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(pos) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &ko[pos + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves `wanted` and their dependencies into load order (dependencies
/// first). Returns (module, contents) pairs.
fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<(ModuleFile, Vec<u8>)>> {
    let index = index_modules(modules_dir)?;
    let mut order: Vec<(ModuleFile, Vec<u8>)> = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, ModuleFile>,
        order: &mut Vec<(ModuleFile, Vec<u8>)>,
        done: &mut std::collections::BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        let key = canonical(name);
        if done.contains(&key) {
            return Ok(());
        }
        if path.contains(&key) {
            bail!("module dependency cycle: {} -> {key}", path.join(" -> "));
        }
        let Some(module) = index.get(&key) else {
            bail!("module {name} is not in the kernel package");
        };
        let bytes = module_bytes(&module.path)?;
        path.push(key.clone());
        for dep in module_depends(&bytes) {
            visit(&dep, index, order, done, path)?;
        }
        path.pop();
        done.insert(key);
        order.push((module.clone(), bytes));
        Ok(())
    }
    for name in wanted {
        visit(name, &index, &mut order, &mut done, &mut Vec::new())?;
    }
    Ok(order)
}

/// Whether an ELF64 executable asks for a dynamic loader (has PT_INTERP).
fn has_interpreter(elf: &[u8]) -> bool {
    crate::util::elf64_program_headers(elf).is_some_and(|headers| {
        headers
            .into_iter()
            .any(|ph| ph.and_then(|o| crate::util::le_field(elf, o, 4)) == Some(3))
    })
}

// ---------------------------------------------------------------------------
// Host programs

/// The files `ldd` says `program` loads (`name => /path (addr)` and the bare
/// interpreter line), in its order; the vDSO has no file and is skipped.
fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// The shared libraries `program` loads (`ldd`'s paths, the loader's among them), looking
/// in `dirs` before the build machine's own; an error names any it cannot find.
pub fn shared_libraries(program: &Path, dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut cmd = Command::new("ldd");
    cmd.arg(program);
    if !dirs.is_empty() {
        cmd.env("LD_LIBRARY_PATH", std::env::join_paths(dirs)?);
    }
    let out = cmd.output().context("cannot run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not found") {
        bail!("{} misses shared libraries:\n{text}", program.display());
    }
    Ok(parse_ldd(&text))
}

/// Adds `program` and every shared library it loads, at the paths `ldd` prints
/// (the loader finds them there: Debian's default search path), plus its links.
fn add_host_program(cpio: &mut Cpio, program: &HostProgram) -> Result<()> {
    let read = |p: &str| std::fs::read(p).with_context(|| format!("cannot read {p}"));
    for lib in shared_libraries(Path::new(program.path), &[])? {
        cpio.file(&lib, 0o755, read(&lib)?);
    }
    cpio.file(program.at, 0o755, read(program.path)?);
    for link in program.links {
        cpio.symlink(link, &format!("/{}", program.at));
    }
    for file in program.files {
        cpio.file(file, 0o644, read(file)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Building

/// What went into an initramfs.
pub struct Built {
    pub path: PathBuf,
    /// Modules in load order (relative to `/lib/modules/<version>/`).
    pub modules: Vec<String>,
    /// Whether it was (re)written now, or was already up to date.
    pub rebuilt: bool,
}

/// A file added to the archive beyond the common contents (dom0's tools, the example
/// domU's kernel and initramfs, its configuration).
pub struct Extra {
    /// Path inside the archive (no leading `/`).
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
    /// Symbolic links to it (absolute paths in the archive).
    pub links: Vec<String>,
}

/// The archive contents for kernel `version` with modules from `modules_dir`, plus
/// `extras`.
fn contents(
    version: &str,
    modules_dir: &Path,
    wanted: &[&str],
    extras: &[Extra],
) -> Result<(Cpio, Vec<String>)> {
    let root = util::repo_root();
    let read = |rel: &str| -> Result<Vec<u8>> {
        let path = root.join(rel);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib/ferrovisor",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "mnt",
    ] {
        cpio.dir(dir);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    cpio.file("init", 0o755, read(INIT)?);
    cpio.file("etc/shellrc", 0o644, read(SHELLRC)?);
    cpio.file("usr/sbin/fvtest", 0o755, read(FVTEST)?);
    cpio.file("usr/sbin/pvio-test", 0o755, read(PVIO_TEST)?);
    cpio.file("usr/lib/ferrovisor/measure.sh", 0o644, read(MEASURE)?);

    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("cannot read {BUSYBOX}"))?;
    if has_interpreter(&busybox) {
        bail!("{BUSYBOX} is dynamically linked; install busybox-static (it replaces busybox)");
    }
    cpio.file("bin/busybox", 0o755, busybox);
    // One symbolic link per applet, where busybox itself would install it.
    let list = util::run_quiet(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet != "bin/busybox" {
            cpio.symlink(applet, "/bin/busybox");
        }
    }

    let resolved = resolve_modules(modules_dir, wanted)?;
    let mut load_order = Vec::new();
    for (module, bytes) in resolved {
        cpio.file(
            &format!("lib/modules/{version}/{}", module.rel),
            0o644,
            bytes,
        );
        load_order.push(module.rel);
    }
    let mut list = load_order.join("\n");
    list.push('\n');
    cpio.file("etc/xen-modules", 0o644, list.into_bytes());
    for program in HOST_PROGRAMS {
        add_host_program(&mut cpio, program)?;
    }
    for e in extras {
        cpio.file(&e.path, e.mode, e.data.clone());
        for link in &e.links {
            cpio.symlink(link, &format!("/{}", e.path));
        }
    }
    Ok((cpio, load_order))
}

/// Writes `output` (gzip) unless an identical archive is already there.
pub fn build(version: &str, modules_dir: &Path, extras: &[Extra], output: &Path) -> Result<Built> {
    build_with(version, modules_dir, &dom0_modules(), extras, output)
}

/// [`build`] for the example domU: its modules are [`XEN_MODULES`] and [`DOMU_IO_MODULES`].
pub fn build_domu(
    version: &str,
    modules_dir: &Path,
    extras: &[Extra],
    output: &Path,
) -> Result<Built> {
    let wanted: Vec<&str> = XEN_MODULES.iter().chain(DOMU_IO_MODULES).copied().collect();
    build_with(version, modules_dir, &wanted, extras, output)
}

fn build_with(
    version: &str,
    modules_dir: &Path,
    wanted: &[&str],
    extras: &[Extra],
    output: &Path,
) -> Result<Built> {
    let (cpio, modules) = contents(version, modules_dir, wanted, extras)?;
    let bytes = cpio.to_bytes();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    FORMAT.hash(&mut hasher);
    bytes.hash(&mut hasher);
    let stamp_text = format!("{:016x}\n", hasher.finish());
    let stamp = output.with_extension("gz.stamp");
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if output.is_file() && current == stamp_text {
        return Ok(Built {
            path: output.to_path_buf(),
            modules,
            rebuilt: false,
        });
    }
    util::create_parent(output)?;
    let tmp = output.with_extension("gz.tmp");
    gzip(&bytes, &tmp)?;
    std::fs::rename(&tmp, output)?;
    std::fs::write(&stamp, stamp_text)?;
    Ok(Built {
        path: output.to_path_buf(),
        modules,
        rebuilt: true,
    })
}

/// `gzip -9n` (no name, no time stamp: reproducible) from memory to a file.
fn gzip(data: &[u8], output: &Path) -> Result<()> {
    let file = std::fs::File::create(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let status = child.wait()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer thread panicked"))?
        .context("writing to gzip")?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::default();
        c.file("a/b", 0o644, b"hi".to_vec());
        c.char_dev("dev/console", 0o600, 5, 1);
        let bytes = c.to_bytes();
        // Parents first, then the file, the device and the trailer.
        let names: Vec<&str> = c.paths().collect();
        assert_eq!(names, ["a", "a/b", "dev", "dev/console"]);
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
        // Header (110 bytes) + "a\0" padded to 4: the first record is 112 bytes.
        assert_eq!(&bytes[112..118], b"070701");
        // The file record: mode 0100644, size 2.
        let second = &bytes[112..];
        assert_eq!(&second[14..22], b"000081a4");
        assert_eq!(&second[54..62], b"00000002");
        // The device: rdev 5:1.
        let dev = text.find("dev/console").unwrap();
        let hdr = &bytes[dev - 110..dev];
        assert_eq!(&hdr[78..86], b"00000005");
        assert_eq!(&hdr[86..94], b"00000001");
    }

    #[test]
    fn static_busybox_check() {
        let ls = std::fs::read("/bin/ls");
        if let Ok(ls) = ls {
            assert!(has_interpreter(&ls), "/bin/ls is dynamic on Debian");
        }
        assert!(!has_interpreter(b"not an elf"));
    }

    #[test]
    fn ldd_output_parsing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libiperf.so.0",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn depends_from_modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=xen-privcmd,foo\0name=xenfs\0";
        assert_eq!(module_depends(ko), ["xen-privcmd", "foo"]);
        assert!(module_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }
}
