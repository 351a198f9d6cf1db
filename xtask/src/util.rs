//! Small helpers shared by the commands: where things are, and running tools.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The repository root: xtask lives in `<root>/xtask`, so this holds however
/// and from wherever `cargo xtask` is started.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`, as cargo does).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// Everything xtask generates (ISOs, fixtures, logs) goes below here, so that
/// `cargo clean` removes it and git ignores it.
pub fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// The cargo that started us (`CARGO` is set by `cargo run`), so nested builds
/// use the same toolchain; plain `cargo` otherwise.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    cmd
}

/// A path relative to the repository root when it is inside it, for shorter
/// messages.
pub fn display_rel(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The hypervisor command line: `base`, then the user's extra words.
pub fn join_cmdline(base: &str, extra: &[String]) -> String {
    let mut line = base.to_string();
    for word in extra {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}

/// Renders a command the way a user could paste it into a shell (roughly).
pub fn show_command(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs a command with inherited stdio, echoing it first; fails on a non-zero
/// exit status.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show_command(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show_command(cmd));
    }
    Ok(())
}

/// Runs a command quietly, capturing its output; on failure the output is part
/// of the error, so noisy tools (grub-mkrescue) only speak when it matters.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            show_command(cmd),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Whether an executable of this name is on `PATH`.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Writes a test fixture, `target/xtask/fixtures/<name>`, by way of a private temporary
/// file and a rename. Tests run in parallel lanes and several may prepare the same fixture:
/// whoever opens it sees one whole version, never a file another lane is rewriting.
pub fn write_fixture(name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = xtask_dir().join("fixtures").join(name);
    create_parent(&path)?;
    let temp = temp_beside(&path);
    std::fs::write(&temp, bytes).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, &path)
        .with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))?;
    Ok(path)
}

/// A path beside `path` that no other thread or process of ours uses.
pub fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// The little-endian unsigned field of `width` bytes (2, 4 or 8) at `offset` in `bytes`, as
/// ELF headers store theirs; `None` if it runs past the end.
pub fn le_field(bytes: &[u8], offset: usize, width: usize) -> Option<usize> {
    let b = bytes.get(offset..offset.checked_add(width)?)?;
    Some(b.iter().rev().fold(0, |v, &x| v << 8 | usize::from(x)))
}

/// The file offsets of an ELF64 file's program headers (e_phoff + i × e_phentsize, for i
/// below e_phnum), each `None` where that sum overflows; `None` for a file that is not
/// ELF64 or whose header is cut short.
pub fn elf64_program_headers(elf: &[u8]) -> Option<Vec<Option<usize>>> {
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        le_field(elf, 0x20, 8)?,
        le_field(elf, 0x36, 2)?,
        le_field(elf, 0x38, 2)?,
    );
    Some(
        (0..phnum)
            .map(|i| i.checked_mul(phentsize)?.checked_add(phoff))
            .collect(),
    )
}

/// Hand-built inputs for the unit tests here and in other modules.
#[cfg(test)]
pub(crate) mod testing {
    /// A zeroed ELF64 file of `len` bytes whose header says only where its program headers
    /// are: `phnum` of them, 56 bytes each (ELF64's size), from `phoff`. The tests fill in
    /// the program headers and what they point at themselves.
    pub(crate) fn elf64_header(len: usize, phoff: u64, phnum: u16) -> Vec<u8> {
        let mut elf = vec![0u8; len];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&phoff.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes()); // e_phnum
        elf
    }
}

/// Creates the parent directory of a file about to be written.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn le_fields() {
        let b = [0x34, 0x12, 0x78, 0x56, 0, 0, 0, 0x80, 9];
        assert_eq!(super::le_field(&b, 0, 2), Some(0x1234));
        assert_eq!(super::le_field(&b, 0, 4), Some(0x5678_1234));
        assert_eq!(super::le_field(&b, 0, 8), Some(0x8000_0000_5678_1234));
        assert_eq!(super::le_field(&b, 8, 2), None, "past the end");
        assert_eq!(super::le_field(&b, usize::MAX, 2), None, "offset overflow");
    }

    #[test]
    fn elf64_program_header_offsets() {
        let mut elf = super::testing::elf64_header(0x40, 0x40, 2);
        assert_eq!(
            super::elf64_program_headers(&elf),
            Some(vec![Some(0x40), Some(0x40 + 56)])
        );
        elf[0x20..0x28].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        assert_eq!(
            super::elf64_program_headers(&elf),
            Some(vec![Some(usize::MAX - 10), None]),
            "an overflowing offset is None"
        );
        assert_eq!(super::elf64_program_headers(b"\x7fELF\x01"), None);
        assert_eq!(
            super::elf64_program_headers(&elf[..0x30]),
            None,
            "header cut short"
        );
    }

    use super::*;

    #[test]
    fn cmdline_joins_words() {
        assert_eq!(join_cmdline("console=com1", &[]), "console=com1");
        assert_eq!(
            join_cmdline("console=com1", &["a=b".into(), "c".into()]),
            "console=com1 a=b c"
        );
        assert_eq!(join_cmdline("", &["x".into()]), "x");
    }

    #[test]
    fn quoting() {
        let mut cmd = Command::new("qemu");
        cmd.args(["-append", "a b", "-m", "1G"]);
        assert_eq!(show_command(&cmd), "qemu -append 'a b' -m 1G");
    }
}
