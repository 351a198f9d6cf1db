//! `xenstore-ls`: the indented `name = "value"` tree, formatted like Xen's tool.
//!
//! Each node is one line: its name indented by its depth (or its whole path with `-f`), then
//! ` = "value"` (sanitised), or `:` when the value cannot be read. Lines are kept within the
//! width: a long name is cut, a long value ends in `\..."`. With `-p` the permissions follow,
//! padded with ` . . .` to column 60: `  (n0,r5)`.

use std::io::{self, Write};

use xenstore::{Client, Perm};

use crate::sanitise::sanitise;

/// What `ls` needs from the store (a [`Client`], or a fake in tests).
pub trait Source {
    /// Children of `path`; the error is Xen's name (`ENOENT`, ...) or a description.
    fn directory(&mut self, path: &str) -> Result<Vec<String>, String>;
    /// The value at `path`.
    fn read(&mut self, path: &str) -> Result<Vec<u8>, String>;
    /// The permissions of `path`.
    fn perms(&mut self, path: &str) -> Result<Vec<Perm>, String>;
}

fn err_name(e: &xenstore::Error) -> String {
    e.name().map_or_else(|| e.to_string(), str::to_owned)
}

impl Source for Client {
    fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
        Client::directory(self, 0, path).map_err(|e| err_name(&e))
    }
    fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        Client::read(self, 0, path).map_err(|e| err_name(&e))
    }
    fn perms(&mut self, path: &str) -> Result<Vec<Perm>, String> {
        self.get_perms(0, path).map_err(|e| err_name(&e))
    }
}

/// How to print.
#[derive(Clone, Debug)]
pub struct Options {
    /// Line width (Xen: terminal columns − 2, else 80).
    pub max_width: usize,
    /// Where the permission padding stops (60).
    pub desired_width: usize,
    /// `-f`: whole paths, no width limit.
    pub flat: bool,
    /// `-p`: show permissions.
    pub perms: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_width: 80,
            desired_width: 60,
            flat: false,
            perms: false,
        }
    }
}

impl Options {
    /// `-f`: whole paths and no truncation.
    pub fn flat(mut self) -> Options {
        self.flat = true;
        self.max_width = i32::MAX as usize / 2;
        self.desired_width = 0;
        self
    }
}

/// Why `ls` stopped.
#[derive(Debug)]
pub enum LsError {
    /// Listing `path` failed with `err` (below the top, a vanished node is skipped instead).
    Directory { path: String, err: String },
    /// Writing the output failed.
    Io(io::Error),
}

impl From<io::Error> for LsError {
    fn from(e: io::Error) -> LsError {
        LsError::Io(e)
    }
}

/// `" = \"...\""`: what a value adds besides itself.
const TAG_LEN: usize = 8;

/// `s` cut to at most `n` bytes (like printf's `%.*s`; a negative precision means no cut).
fn cut(s: &str, n: Option<usize>) -> &str {
    match n {
        Some(n) if n < s.len() => {
            let mut n = n;
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            &s[..n]
        }
        _ => s,
    }
}

/// Prints the tree below `path` (not `path` itself), depth-first in directory order.
pub fn ls(
    src: &mut dyn Source,
    path: &str,
    o: &Options,
    out: &mut dyn Write,
) -> Result<(), LsError> {
    walk(src, path, 0, o, out)
}

fn walk(
    src: &mut dyn Source,
    path: &str,
    depth: usize,
    o: &Options,
    out: &mut dyn Write,
) -> Result<(), LsError> {
    let children = match src.directory(path) {
        Ok(c) => c,
        // A node that vanished while we walk is skipped silently.
        Err(e) if depth > 0 && e == "ENOENT" => return Ok(()),
        Err(err) => {
            return Err(LsError::Directory {
                path: path.to_owned(),
                err,
            })
        }
    };
    for name in children {
        let sep = if path.ends_with('/') { "" } else { "/" };
        let full = format!("{path}{sep}{name}");
        let mut line = String::new();
        // Room left for the name: max_width - TAG_LEN - indent (negative: no limit).
        let room = |used: usize| o.max_width.checked_sub(TAG_LEN + used);
        if o.flat {
            line.push_str(&full);
        } else {
            line.push_str(&" ".repeat(depth));
            line.push_str(cut(&name, room(depth)));
        }
        // In flat mode Xen does not count the path towards the width.
        let mut width = if o.flat { 0 } else { line.len() };
        match src.read(&full) {
            Err(_) => line.push(':'),
            Ok(val) => {
                let s = sanitise(&val);
                if o.max_width < width + val.len() + TAG_LEN {
                    line.push_str(" = \"");
                    line.push_str(cut(&s, room(width)));
                    line.push_str("\\...\"");
                } else {
                    line.push_str(" = \"");
                    line.push_str(&s);
                    line.push('"');
                    width += s.len() + 5;
                    if o.perms {
                        line.push(' ');
                        width += 1;
                        while width < o.desired_width.min(o.max_width) {
                            line.push(if width & 1 == 1 { '.' } else { ' ' });
                            width += 1;
                        }
                    }
                }
            }
        }
        if o.perms {
            match src.perms(&full) {
                Ok(p) => {
                    let p: Vec<String> = p.iter().map(Perm::to_string).collect();
                    line.push_str("  (");
                    line.push_str(&p.join(","));
                    line.push(')');
                }
                Err(e) => eprintln!("\ncould not access permissions for {name}: {e}"),
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        walk(src, &full, depth + 1, o, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use xenstore::Access;

    use super::*;

    /// Path → value; children are derived from the keys. Values `None` cannot be read.
    struct Fake(BTreeMap<String, Option<Vec<u8>>>);

    impl Source for Fake {
        fn directory(&mut self, path: &str) -> Result<Vec<String>, String> {
            if path != "/" && !self.0.contains_key(path) {
                return Err("ENOENT".into());
            }
            let prefix = if path == "/" {
                "/".to_owned()
            } else {
                format!("{path}/")
            };
            Ok(self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(str::to_owned)
                .collect())
        }
        fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
            self.0
                .get(path)
                .cloned()
                .flatten()
                .ok_or_else(|| "EACCES".to_owned())
        }
        fn perms(&mut self, _: &str) -> Result<Vec<Perm>, String> {
            Ok(vec![Perm::new(0, Access::None), Perm::new(5, Access::Read)])
        }
    }

    fn fake() -> Fake {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<&[u8]>| {
            m.insert(k.to_owned(), v.map(<[u8]>::to_vec));
        };
        put("/local", Some(b""));
        put("/local/domain", Some(b""));
        put("/local/domain/0", Some(b""));
        put("/local/domain/0/name", Some(b"Domain-0"));
        put("/local/domain/0/bin", Some(b"a\tb\\c\x01\xff"));
        put("/local/domain/0/secret", None);
        put("/tool", Some(b""));
        put("/tool/long", Some(&[b'x'; 100]));
        Fake(m)
    }

    fn run(path: &str, o: &Options) -> String {
        let mut out = Vec::new();
        ls(&mut fake(), path, o, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tree_like_xen() {
        // " long" is 5 wide: the value is cut to 80 - 8 - 5 bytes.
        let long = format!(" long = \"{}\\...\"\n", "x".repeat(67));
        assert_eq!(
            run("/", &Options::default()),
            format!(
                "local = \"\"\n\
                 \x20domain = \"\"\n\
                 \x20 0 = \"\"\n\
                 \x20  bin = \"a\\tb\\\\c\\001\\xff\"\n\
                 \x20  name = \"Domain-0\"\n\
                 \x20  secret:\n\
                 tool = \"\"\n\
                 {long}"
            )
        );
    }

    #[test]
    fn flat_and_perms() {
        assert_eq!(
            run("/local/domain/0", &Options::default().flat()),
            "/local/domain/0/bin = \"a\\tb\\\\c\\001\\xff\"\n\
             /local/domain/0/name = \"Domain-0\"\n\
             /local/domain/0/secret:\n"
        );
        let o = Options {
            perms: true,
            ..Options::default()
        };
        let out = run("/local/domain/0", &o);
        let first = out.lines().nth(1).unwrap();
        // `name = "Domain-0"` is 17 wide; a space, then ". " padding up to column 60.
        assert_eq!(
            first,
            format!("name = \"Domain-0\" {}  (n0,r5)", " .".repeat(21))
        );
        assert_eq!(first.find("  (").unwrap(), 60);
        assert!(out.contains("secret:  (n0,r5)\n"));
    }

    #[test]
    fn missing_top_is_an_error_naming_the_path() {
        let e = ls(&mut fake(), "/nope", &Options::default(), &mut Vec::new()).unwrap_err();
        match e {
            LsError::Directory { path, err } => {
                assert_eq!((path.as_str(), err.as_str()), ("/nope", "ENOENT"))
            }
            LsError::Io(e) => panic!("{e}"),
        }
    }
}
