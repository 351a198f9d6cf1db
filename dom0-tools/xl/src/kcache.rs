//! xl's kernel cache: the ELF image decompressed from a bzImage, kept in dom0 so that
//! a later `create` (or a `reboot`) of a domain with the same kernel file skips the XZ
//! decompression, the longest step of building a Linux domU (about a second of host CPU
//! for Debian's kernel, several under QEMU TCG).
//!
//! An entry is found by the kernel file's identity as read (device, inode, size,
//! modification time in ns) together with a 64-bit hash of the bytes read, so a file
//! rewritten in place with the same size and time stamp misses, as does any other file.
//! Entries live in [`DIR`] (root's only, mode 0700), are written whole under a temporary
//! name and renamed, store zero pages as holes (tmpfs keeps no memory for them), and only
//! the [`KEEP`] most recently used ones are kept. Anything going wrong with the cache is
//! not an error: xl decompresses as without it.

use crate::image;
use std::borrow::Cow;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where entries live.
pub const DIR: &str = "/var/cache/xen/xl-kernels";
/// Entries kept (the most recently used).
pub const KEEP: usize = 2;

/// How a kernel's ELF image was obtained (for `xl -v` and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file is not a bzImage (an ELF, or something `create` will refuse): as read.
    AsRead,
    /// Decompressed now (and stored, when `stored`; storing took `store_ms`).
    Decompressed { stored: bool, store_ms: u128 },
    /// From the cache.
    Cached,
}

/// The kernel file's identity as read and the hash of its bytes: an entry's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub hash: u64,
}

impl Key {
    fn file_name(&self) -> String {
        format!(
            "{:x}-{:x}-{:x}-{:x}-{:016x}.elf",
            self.dev, self.ino, self.size, self.mtime_ns, self.hash
        )
    }
}

/// A 64-bit hash of `bytes` (not cryptographic: it tells a changed file from the one
/// cached; the cache directory is root's only).
pub fn content_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = K ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(29);
    }
    h ^ (h >> 31)
}

/// Reads the kernel at `path` and returns its ELF image: from the cache in `dir`, or
/// decompressed (and then stored there), or the file as read when it is no bzImage.
pub fn load(path: &str, dir: &Path) -> io::Result<(Vec<u8>, Source)> {
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    if pvh_loader::ImageFormat::detect(&bytes) != pvh_loader::ImageFormat::BzImage {
        return Ok((bytes, Source::AsRead));
    }
    let key = Key {
        dev: meta.dev(),
        ino: meta.ino(),
        size: bytes.len() as u64,
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        hash: content_hash(&bytes),
    };
    let entry = dir.join(key.file_name());
    if private(dir) {
        if let Some(elf) = read_entry(&entry) {
            return Ok((elf, Source::Cached));
        }
    }
    match image::kernel_elf(&bytes) {
        Ok(Cow::Owned(elf)) => {
            let t = Instant::now();
            let stored = store(dir, &entry, &elf).is_ok();
            let store_ms = t.elapsed().as_millis();
            Ok((elf, Source::Decompressed { stored, store_ms }))
        }
        // Not decompressible: `create` reports why, from the bytes as read.
        Ok(Cow::Borrowed(_)) | Err(_) => Ok((bytes, Source::AsRead)),
    }
}

/// Whether `dir` is trusted: owned by this process's user and closed to everyone else
/// (an entry there is booted as given). A missing directory is not.
fn private(dir: &Path) -> bool {
    let me = fs::metadata("/proc/self").map(|m| m.uid());
    fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.mode() & 0o077 == 0 && me.is_ok_and(|u| u == m.uid()))
}

/// An entry's bytes, if it exists and holds an ELF image; marks it used.
fn read_entry(entry: &Path) -> Option<Vec<u8>> {
    let elf = fs::read(entry).ok()?;
    if pvh_loader::ImageFormat::detect(&elf) != pvh_loader::ImageFormat::Elf {
        let _ = fs::remove_file(entry);
        return None;
    }
    // Most recently used = newest modification time (for the eviction).
    let _ = fs::File::options()
        .write(true)
        .open(entry)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    Some(elf)
}

/// Writes `elf` as `entry` (zero pages as holes), then drops all but the [`KEEP`]
/// newest entries.
fn store(dir: &Path, entry: &Path, elf: &[u8]) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp: PathBuf = dir.join(format!(".tmp-{}", std::process::id()));
    let written = (|| {
        let f = fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_len(elf.len() as u64)?;
        for (off, run) in image::nonzero_runs(0, elf) {
            f.write_all_at(run, off)?;
        }
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, entry)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    evict(dir);
    Ok(())
}

/// Removes all but the [`KEEP`] newest entries.
fn evict(dir: &Path) {
    let Ok(list) = fs::read_dir(dir) else { return };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = list
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".elf"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in entries.iter().skip(KEEP) {
        let _ = fs::remove_file(p);
    }
}

/// [`load`] with the time it took, for `xl -v`.
pub fn load_timed(path: &str, dir: &Path) -> io::Result<(Vec<u8>, Source, u128)> {
    let t = Instant::now();
    let (bytes, source) = load(path, dir)?;
    Ok((bytes, source, t.elapsed().as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;
    const PAGE: usize = 4096;

    #[test]
    fn hash_tells_contents_apart() {
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        b[9_999] = 8;
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a[..9_999]), content_hash(&a));
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
        assert_ne!(content_hash(&[0; 8]), content_hash(&[0; 16]));
    }

    /// A real bzImage (e.g. Debian's) given by `XL_TEST_KERNEL`: cold load decompresses
    /// and stores, the second load comes from the cache with the same bytes, a rewritten
    /// file misses; skipped without it.
    #[test]
    fn real_kernel_from_env_is_cached() {
        let Ok(src) = std::env::var("XL_TEST_KERNEL") else {
            return;
        };
        let tmp = std::env::temp_dir().join(format!("xl-kcache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        let kernel = tmp.join("vmlinuz");
        fs::copy(&src, &kernel).unwrap();
        let dir = tmp.join("cache");
        let k = kernel.to_str().unwrap();
        let (cold, s1, ms1) = load_timed(k, &dir).unwrap();
        assert!(matches!(s1, Source::Decompressed { stored: true, .. }));
        let (warm, s2, ms2) = load_timed(k, &dir).unwrap();
        assert_eq!(s2, Source::Cached);
        assert!(cold == warm, "cached bytes differ");
        eprintln!("cold {ms1} ms, warm {ms2} ms");
        // Same size, contents changed: a miss (whatever the time stamp says).
        let mut bytes = fs::read(&kernel).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&kernel, &bytes).unwrap();
        let (_, s3) = load(k, &dir).unwrap();
        assert!(matches!(s3, Source::Decompressed { .. } | Source::AsRead));
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn non_bzimages_pass_through_and_eviction_keeps_the_newest() {
        let tmp = std::env::temp_dir().join(format!("xl-kcache-evict-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        let elf = crate::image::tests::tiny_kernel(&[0x90; 64], 64, Some(0x10_0000));
        // A directory others may write to is not trusted.
        let open_dir = tmp.join("open");
        fs::create_dir(&open_dir).unwrap();
        assert!(!private(&open_dir) && !private(&tmp.join("missing")));
        fs::set_permissions(
            &open_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        assert!(!private(&open_dir));
        fs::set_permissions(
            &open_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        assert!(private(&open_dir));
        let p = tmp.join("k.elf");
        fs::write(&p, &elf).unwrap();
        let (bytes, s) = load(p.to_str().unwrap(), &tmp.join("cache")).unwrap();
        assert_eq!((bytes, s), (elf.clone(), Source::AsRead));
        assert!(!tmp.join("cache").exists());
        // Entries: a stored one reads back with its zero pages, a non-ELF entry is
        // dropped, and only the KEEP newest stay.
        let dir = tmp.join("cache");
        let mut big = vec![0u8; 3 * PAGE + 5];
        big[..elf.len()].copy_from_slice(&elf);
        big[3 * PAGE + 1] = 9;
        for i in 0..KEEP + 2 {
            store(&dir, &dir.join(format!("{i}.elf")), &big).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let want: Vec<String> = (2..KEEP + 2).map(|i| format!("{i}.elf")).collect();
        assert_eq!(left, want);
        assert_eq!(read_entry(&dir.join(&want[0])).unwrap(), big);
        fs::write(dir.join("bad.elf"), b"not an elf").unwrap();
        assert!(read_entry(&dir.join("bad.elf")).is_none());
        assert!(!dir.join("bad.elf").exists());
        let _ = fs::remove_dir_all(&tmp);
    }
}
