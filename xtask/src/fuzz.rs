//! `cargo xtask fuzz`: coverage-guided fuzzing of the parsers and state machines with
//! libFuzzer (through cargo-fuzz, on the stable toolchain with `--sanitizer none`).
//!
//! The targets are plain functions in `fuzz/targets` (crate `ferrovisor-fuzz`, a workspace
//! member whose `#[test]` replays the in-tree corpora); `fuzz/libfuzzer` wraps each one in a
//! libFuzzer binary and is kept out of the workspace. For each target this command:
//!
//! 1. runs the binary under `nice -n 19` with a scratch corpus (`target/fuzz/<t>/work`)
//!    seeded from `fuzz/corpus/<t>`, crashes going to `target/fuzz/<t>/artifacts`;
//! 2. reads libFuzzer's final statistics: executions, and whether it stopped on a crash;
//! 3. unless `--no-save`, merges the in-tree corpus and the scratch corpus into a minimal
//!    set with the same coverage (`-merge=1`) and writes that set back to `fuzz/corpus/<t>`
//!    (hand-made `seed-*` files and `crash-*` regression inputs always stay), so the tree
//!    keeps only small, interesting inputs.
//!
//! It prints executions and crashes per target and fails if any target crashed. See
//! `docs/fuzzing.md`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{display_rel, repo_root, target_dir};

/// What `cargo xtask fuzz` was asked to do.
pub struct Options {
    /// One target, or all.
    pub target: Option<String>,
    /// Seconds per target.
    pub time: Option<u64>,
    /// Executions per target.
    pub runs: Option<u64>,
    /// Leave `fuzz/corpus` as it is.
    pub no_save: bool,
}

/// Bytes of minimized (unpinned) inputs kept in `fuzz/corpus/<target>`.
const CORPUS_BUDGET: u64 = 24 * 1024;
/// Files of minimized (unpinned) inputs kept in `fuzz/corpus/<target>`.
const CORPUS_FILES: usize = 200;

/// Seconds per target when neither a time nor a run count is given.
const DEFAULT_TIME: u64 = 60;

/// Largest input libFuzzer generates, per target (the default for the others is 4 KiB).
fn max_len(target: &str) -> usize {
    match target {
        // Setup sectors (at least 1 KiB) in front of an XZ payload holding an ELF.
        "bzimage" => 8192,
        // Operation sequences: a few hundred operations are plenty, and shorter inputs
        // keep the per-step invariant checks fast.
        "evtchn" | "grant" | "xenstore_core" => 1024,
        _ => 4096,
    }
}

fn fuzz_dir() -> PathBuf {
    repo_root().join("fuzz/libfuzzer")
}

fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("fuzz/corpus").join(target)
}

fn work_dir(target: &str) -> PathBuf {
    target_dir().join("fuzz").join(target)
}

fn binary(target: &str) -> PathBuf {
    fuzz_dir()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(target)
}

/// A `nice -n 19` command, so fuzzing never starves emulator runs on the same machine.
fn niced(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nice");
    cmd.arg("-n").arg("19").arg(program);
    cmd.current_dir(repo_root());
    cmd
}

/// Installs cargo-fuzz when `cargo fuzz` is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing: cargo install cargo-fuzz --locked");
    let status = niced("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// The targets the harness defines (`cargo fuzz list`).
fn list_targets() -> Result<Vec<String>> {
    let out = Command::new("cargo")
        .args(["fuzz", "list", "--fuzz-dir"])
        .arg(fuzz_dir())
        .current_dir(repo_root())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Builds every target: release, debug assertions (so arithmetic overflow panics as in a
/// debug build of the hypervisor), coverage instrumentation without a sanitizer (stable).
fn build() -> Result<()> {
    let status = niced("cargo")
        .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
        .arg("--fuzz-dir")
        .arg(fuzz_dir())
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

/// What one target's run did.
struct Outcome {
    target: String,
    executions: u64,
    secs: f64,
    crashes: Vec<PathBuf>,
    corpus_files: usize,
    corpus_bytes: u64,
}

/// `stat::<name>: <value>` from libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
}

/// Files (not directories) directly in `dir`.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hand-made seeds (`seed-*`) and inputs that once crashed a target (`crash-*`, kept as
/// regression tests) are never removed by minimization.
fn is_pinned(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-") || n.starts_with("crash-"))
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn run_target(target: &str, opts: &Options) -> Result<Outcome> {
    let corpus = corpus_dir(target);
    fs::create_dir_all(&corpus)?;
    let work = work_dir(target);
    let scratch = work.join("work");
    let artifacts = work.join("artifacts");
    fs::create_dir_all(&scratch)?;
    fresh_dir(&artifacts)?;
    let log_path = work.join("fuzz.log");

    let mut cmd = niced(binary(target));
    cmd.arg(&scratch).arg(&corpus);
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()));
    cmd.arg(format!("-max_len={}", max_len(target)));
    cmd.args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"]);
    let time = match (opts.time, opts.runs) {
        (None, None) => Some(DEFAULT_TIME),
        (t, _) => t,
    };
    if let Some(t) = time {
        cmd.arg(format!("-max_total_time={t}"));
    }
    if let Some(n) = opts.runs {
        cmd.arg(format!("-runs={n}"));
    }
    let log = fs::File::create(&log_path)?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", display_rel(&binary(target))))?;
    let secs = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let executions = stat(&text, "number_of_executed_units").unwrap_or(0);
    let crashes = files(&artifacts)?;
    if !status.success() && crashes.is_empty() {
        bail!(
            "{target}: libFuzzer failed ({status}) without a crash file; see {}",
            display_rel(&log_path)
        );
    }
    if crashes.is_empty() && !opts.no_save {
        minimize_corpus(target, &corpus, &scratch, &work)?;
    }
    let kept = files(&corpus)?;
    let corpus_bytes = kept
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(Outcome {
        target: target.to_owned(),
        executions,
        secs,
        crashes,
        corpus_files: kept.len(),
        corpus_bytes,
    })
}

/// Replaces the unpinned files of the in-tree corpus with a minimal set covering everything
/// the in-tree and scratch corpora cover.
fn minimize_corpus(target: &str, corpus: &Path, scratch: &Path, work: &Path) -> Result<()> {
    let merged = work.join("merged");
    fresh_dir(&merged)?;
    let status = niced(binary(target))
        .arg("-merge=1")
        .arg(format!("-max_len={}", max_len(target)))
        .arg(&merged)
        .arg(corpus)
        .arg(scratch)
        .stdout(Stdio::null())
        .stderr(fs::File::create(work.join("merge.log"))?)
        .status()
        .context("running the corpus merge")?;
    if !status.success() {
        bail!(
            "{target}: corpus merge failed ({status}); see {}",
            display_rel(&work.join("merge.log"))
        );
    }
    let pinned: HashSet<Vec<u8>> = files(corpus)?
        .into_iter()
        .filter(|p| is_pinned(p))
        .filter_map(|p| fs::read(p).ok())
        .collect();
    for old in files(corpus)?.into_iter().filter(|p| !is_pinned(p)) {
        fs::remove_file(old)?;
    }
    // Smallest first, within the budget: the tree keeps a small regression corpus, the
    // scratch corpus under target/ keeps everything for the next local run.
    let mut merged_files: Vec<(u64, PathBuf)> = files(&merged)?
        .into_iter()
        .map(|p| (fs::metadata(&p).map(|m| m.len()).unwrap_or(0), p))
        .collect();
    merged_files.sort();
    let mut kept_bytes = 0;
    let mut kept_files = 0;
    let mut dropped = 0;
    for (len, new) in merged_files {
        let data = fs::read(&new)?;
        if pinned.contains(&data) {
            continue;
        }
        if kept_bytes + len > CORPUS_BUDGET || kept_files == CORPUS_FILES {
            dropped += 1;
            continue;
        }
        kept_bytes += len;
        kept_files += 1;
        let name = new.file_name().context("merged file without a name")?;
        fs::write(corpus.join(name), data)?;
    }
    if dropped > 0 {
        eprintln!(
            "xtask: {target}: {dropped} larger corpus inputs left out of fuzz/corpus (budget {} KiB, {CORPUS_FILES} files)",
            CORPUS_BUDGET / 1024
        );
    }
    Ok(())
}

/// `cargo xtask fuzz`.
pub fn run(opts: &Options) -> Result<ExitCode> {
    ensure_cargo_fuzz()?;
    let all = list_targets()?;
    let targets = match &opts.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t:?}; targets: {}", all.join(", ")),
        None => all,
    };
    build()?;
    let mut outcomes = Vec::new();
    for t in &targets {
        eprintln!("xtask: fuzzing {t} ...");
        let o = run_target(t, opts)?;
        println!(
            "{:<14} {:>12} executions in {:>6.0} s ({:>7.0}/s), {} crash{}; corpus {} files, {} bytes",
            o.target,
            o.executions,
            o.secs,
            o.executions as f64 / o.secs.max(0.001),
            o.crashes.len(),
            if o.crashes.len() == 1 { "" } else { "es" },
            o.corpus_files,
            o.corpus_bytes
        );
        for c in &o.crashes {
            println!(
                "  crash input: {} (reproduce: {} {}; log: {})",
                display_rel(c),
                display_rel(&binary(t)),
                display_rel(c),
                display_rel(&work_dir(t).join("fuzz.log"))
            );
        }
        outcomes.push(o);
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty())
        .map(|o| o.target.as_str())
        .collect();
    let total: u64 = outcomes.iter().map(|o| o.executions).sum();
    println!(
        "fuzz: {} target(s), {total} executions, {} crashed{}",
        outcomes.len(),
        crashed.len(),
        if crashed.is_empty() {
            String::new()
        } else {
            format!(": {}", crashed.join(", "))
        }
    );
    Ok(if crashed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
