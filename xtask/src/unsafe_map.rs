//! The unsafe-code map: every allowance of `unsafe_code` in the crates that deny it must be
//! listed in docs/design.md ("Unsafe code", the table between the `unsafe-map` markers),
//! and every row there must be an allowance in the code. Also checks that each crate root
//! denies (or forbids) `unsafe_code` and that every pure crate forbids it.
//!
//! An allowance is either a file whose own attributes say `#![allow(unsafe_code)]` (listed
//! as its path, `hypervisor/src/vmx/vmcs.rs`) or an `#[allow(unsafe_code)]` on an inline
//! `mod NAME` (listed as `path.rs::NAME`). Run by `cargo test --workspace` (so by
//! `cargo xtask test`'s host step) through the test below.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util;

/// Source trees scanned for allowances, relative to the repository root (`*` = every
/// directory there).
const TREES: &[&str] = &[
    "hypervisor/src",
    "boot/src",
    "xtask/src",
    "dom0-tools/*/src",
];

/// Crate roots that must deny (or forbid) unsafe code; `*` as in [`TREES`].
const DENY_ROOTS: &[&str] = &[
    "hypervisor/src/main.rs",
    "boot/src/lib.rs",
    "xtask/src/main.rs",
    "dom0-tools/*/src/lib.rs",
    "dom0-tools/*/src/main.rs",
];

/// Crate roots that must forbid unsafe code outright (the pure crates).
const FORBID_ROOTS: &[&str] = &["hypervisor/crates/*/src/lib.rs"];

const BEGIN: &str = "<!-- unsafe-map:begin -->";
const END: &str = "<!-- unsafe-map:end -->";

/// Expands one `*` path component into the existing paths.
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    match pattern.split_once("/*/") {
        None => vec![root.join(pattern)],
        Some((dir, rest)) => {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            dirs.sort();
            dirs.into_iter().map(|d| d.join(rest)).collect()
        }
    }
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The allowances in one file's text, as table keys (`rel` is its repository path).
pub fn allowances(rel: &str, text: &str) -> Vec<String> {
    let inner = concat!("#![allow(", "unsafe_code)]");
    let outer = concat!("#[allow(", "unsafe_code)]");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == inner {
            found.push(rel.to_string());
        } else if line.starts_with(outer) {
            // The item it applies to: the next line that is not an attribute or comment.
            let item = lines[i + 1..]
                .iter()
                .find(|l| !l.starts_with("#[") && !l.starts_with("//"))
                .copied()
                .unwrap_or("");
            let name = item
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .map(|r| r.trim_end_matches(['{', ';', ' ']));
            match name {
                Some(n) => found.push(format!("{rel}::{n}")),
                // Not on a module: reported as such, so that the table cannot list it.
                None => found.push(format!("{rel}: line {} (not on a module)", i + 1)),
            }
        }
    }
    found
}

/// The keys in the design document's table (each row's first cell, a code span).
pub fn documented(design: &str) -> Result<BTreeSet<String>> {
    let start = design
        .find(BEGIN)
        .context("docs/design.md: no unsafe-map:begin marker")?;
    let end = design
        .find(END)
        .context("docs/design.md: no unsafe-map:end marker")?;
    let mut keys = BTreeSet::new();
    for line in design[start..end].lines().filter(|l| l.starts_with('|')) {
        // The first cell, when it is all one code span.
        let first = line.split('|').nth(1).unwrap_or("").trim();
        if let Some(key) = first.strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
            keys.insert(key.to_string());
        }
    }
    Ok(keys)
}

/// Checks the code against the table; `Err` lists every disagreement.
pub fn check() -> Result<()> {
    let root = util::repo_root();
    let rel = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
    let mut problems = Vec::new();

    let mut in_code = BTreeSet::new();
    for tree in TREES {
        for dir in expand(&root, tree) {
            let mut files = Vec::new();
            rust_files(&dir, &mut files);
            for f in files {
                let text = std::fs::read_to_string(&f)?;
                in_code.extend(allowances(&rel(&f), &text));
            }
        }
    }
    let has_attr = |f: &Path, attrs: &[&str]| {
        std::fs::read_to_string(f)
            .map(|t| t.lines().any(|l| attrs.contains(&l.trim())))
            .unwrap_or(false)
    };
    let deny = concat!("#![deny(", "unsafe_code)]");
    let forbid = concat!("#![forbid(", "unsafe_code)]");
    for pattern in DENY_ROOTS {
        for f in expand(&root, pattern) {
            if !has_attr(&f, &[deny, forbid]) {
                problems.push(format!(
                    "{}: crate root without {deny} or {forbid}",
                    rel(&f)
                ));
            }
        }
    }
    for pattern in FORBID_ROOTS {
        for f in expand(&root, pattern) {
            if !has_attr(&f, &[forbid]) {
                problems.push(format!("{}: pure crate without {forbid}", rel(&f)));
            }
        }
    }

    let design = std::fs::read_to_string(root.join("docs/design.md"))?;
    let in_doc = documented(&design)?;
    for k in in_code.difference(&in_doc) {
        problems.push(format!(
            "{k}: allows unsafe_code but is not in docs/design.md's table"
        ));
    }
    for k in in_doc.difference(&in_code) {
        problems.push(format!(
            "{k}: in docs/design.md's table but allows no unsafe_code"
        ));
    }
    if !problems.is_empty() {
        bail!("unsafe map disagrees:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_design_table_agree() {
        check().unwrap();
    }

    #[test]
    fn finds_inner_and_module_allowances() {
        let inner = concat!("//! doc\n#![allow(", "unsafe_code)]\nfn f() {}\n");
        assert_eq!(allowances("a/b.rs", inner), ["a/b.rs"]);
        let outer = concat!(
            "#[cfg(test)]\n#[allow(",
            "unsafe_code)] // why\nmod tests {\n"
        );
        assert_eq!(allowances("a/b.rs", outer), ["a/b.rs::tests"]);
        let on_fn = concat!("#[allow(", "unsafe_code)]\nfn f() {}\n");
        assert_eq!(
            allowances("a/b.rs", on_fn),
            ["a/b.rs: line 1 (not on a module)"]
        );
        assert!(allowances("a/b.rs", "fn f() {}\n").is_empty());
    }

    #[test]
    fn reads_the_table() {
        let doc = format!(
            "x\n{BEGIN}\n| Module | Why |\n|---|---|\n| `a/b.rs` | ports |\n{END}\n| `c.rs` | |\n"
        );
        assert_eq!(
            documented(&doc).unwrap(),
            BTreeSet::from(["a/b.rs".to_string()])
        );
    }
}
