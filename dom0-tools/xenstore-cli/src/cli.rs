//! The `xenstore` multicall: `xenstore <mode> ...`, or `xenstore-<mode> ...` through a symlink,
//! with the argument forms, output and exit status of Xen's `xenstore-*` tools
//! (X `tools/xs-clients/xenstore_client.c`). Failures print `<prog>: <what> <path>: <ERROR>` and
//! exit with status 1; Xen's tools print the same words without the error name.

use std::io::{self, IsTerminal, Write};

use xenstore::{Access, Client, Perm};

use crate::ls::{self, LsError};
use crate::sanitise::{sanitise, unsanitise};

/// What the tool does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Print values.
    Read,
    /// Write `key value` pairs.
    Write,
    /// Remove nodes (and their subtrees).
    Rm,
    /// Exit status 0 if every key can be read.
    Exists,
    /// Print the children of nodes.
    List,
    /// Print a subtree as an indented `name = "value"` tree.
    Ls,
    /// Set permissions.
    Chmod,
    /// Print the path of each watch event.
    Watch,
    /// Create nodes (not one of Xen's tools; `xenstore mkdir`).
    Mkdir,
}

impl Mode {
    /// Every mode, in the order usage lists them.
    pub const ALL: [Mode; 9] = [
        Mode::Read,
        Mode::Write,
        Mode::Rm,
        Mode::Exists,
        Mode::List,
        Mode::Ls,
        Mode::Chmod,
        Mode::Watch,
        Mode::Mkdir,
    ];

    /// The mode's name (`xenstore <name>`, `xenstore-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::Rm => "rm",
            Mode::Exists => "exists",
            Mode::List => "list",
            Mode::Ls => "ls",
            Mode::Chmod => "chmod",
            Mode::Watch => "watch",
            Mode::Mkdir => "mkdir",
        }
    }

    /// The mode called `name`.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    fn usage(self) -> &'static str {
        match self {
            Mode::Read => "[-h] [-s] [-p] [-R] key [...]",
            Mode::Write => "[-h] [-s] [-R] key value [...]",
            Mode::Rm => "[-h] [-s] [-t] key [...]",
            Mode::Exists => "[-h] [-s] key [...]",
            Mode::List => "[-h] [-s] [-p] key [...]",
            Mode::Ls => "[-h] [-s] [-f] [-p] [path]",
            Mode::Chmod => "[-h] [-s] [-u] [-r] key <mode [modes...]>",
            Mode::Watch => "[-h] [-s] [-n NR] [-T] key [...]",
            Mode::Mkdir => "[-h] [-s] key [...]",
        }
    }

    /// Options the mode takes besides `-h` and `-s`.
    fn allows(self, opt: char) -> bool {
        matches!(
            (self, opt),
            (Mode::Read | Mode::List | Mode::Ls, 'p')
                | (Mode::Read | Mode::Write, 'R')
                | (Mode::Ls, 'f')
                | (Mode::Rm, 't')
                | (Mode::Chmod, 'u' | 'r')
                | (Mode::Watch, 'n' | 'd' | 'T')
        )
    }
}

/// How the tool was invoked: its name for messages, the mode, whether the mode was an
/// argument (`xenstore read`) rather than the program name (`xenstore-read`), and the
/// remaining arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The program name (basename of `argv[0]`), used in messages.
    pub prog: String,
    /// The mode.
    pub mode: Mode,
    /// `xenstore <mode>` rather than `xenstore-<mode>`.
    pub mode_arg: bool,
    /// The arguments after the program (and mode).
    pub args: Vec<String>,
}

/// Picks the mode from `argv`: a program named `xenstore-<mode>` (through a symlink) is that
/// mode, anything else takes the mode from its first argument. The error is the message to
/// print.
pub fn dispatch(argv: &[String]) -> Result<Invocation, String> {
    let argv0 = argv.first().map_or("xenstore", String::as_str);
    let prog = argv0.rsplit('/').next().unwrap_or(argv0).to_owned();
    if let Some(m) = prog.strip_prefix("xenstore-") {
        let mode = Mode::from_name(m).ok_or_else(|| format!("{prog}: unknown mode {m}"))?;
        return Ok(Invocation {
            prog,
            mode,
            mode_arg: false,
            args: argv[1..].to_vec(),
        });
    }
    let Some(m) = argv.get(1) else {
        let modes: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
        return Err(format!(
            "Usage: {argv0} <mode> [-h] [...]\n  modes: {}",
            modes.join(" ")
        ));
    };
    let mode = Mode::from_name(m).ok_or_else(|| format!("{prog}: unknown mode {m}"))?;
    Ok(Invocation {
        prog,
        mode,
        mode_arg: true,
        args: argv[2..].to_vec(),
    })
}

/// Parsed options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opts {
    /// `-s`: the Unix socket only, never `/dev/xen/xenbus`.
    pub socket: bool,
    /// `-p`: prefix output with the key (read, list); permissions (ls).
    pub prefix: bool,
    /// `-R`: raw values, no quoting.
    pub raw: bool,
    /// `-f`: flat ls.
    pub flat: bool,
    /// `-t`: rm also removes emptied parents.
    pub tidy: bool,
    /// `-u`: chmod the parents too.
    pub upto: bool,
    /// `-r`: chmod the children too.
    pub recurse: bool,
    /// `-n N`: stop watching after N events.
    pub number: Option<u64>,
    /// `-T`: print the token after the path of each event.
    pub token: bool,
    /// `-h`.
    pub help: bool,
    /// The operands.
    pub operands: Vec<String>,
}

/// Parses `args` for `mode` (options may follow operands; `--` ends them).
pub fn parse_opts(mode: Mode, args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    let mut only_operands = false;
    while let Some(a) = it.next() {
        if only_operands || !a.starts_with('-') || a == "-" {
            o.operands.push(a.clone());
            continue;
        }
        if a == "--" {
            only_operands = true;
            continue;
        }
        // Long options, then bundles of short ones.
        let shorts: Vec<char> = match a.strip_prefix("--") {
            Some(long) => {
                let (name, val) = long
                    .split_once('=')
                    .map_or((long, None), |(n, v)| (n, Some(v)));
                let c = match name {
                    "help" => 'h',
                    "socket" => 's',
                    "flat" => 'f',
                    "prefix" => 'p',
                    "tidy" => 't',
                    "upto" => 'u',
                    "recurse" => 'r',
                    "number" => 'n',
                    "raw" => 'R',
                    "depth" => 'd',
                    "token" => 'T',
                    _ => return Err(format!("unrecognized option '--{name}'")),
                };
                if let Some(v) = val {
                    take_opt(mode, &mut o, c, Some(v.to_owned()))?;
                    continue;
                }
                vec![c]
            }
            None => a[1..].chars().collect(),
        };
        let mut i = 0;
        while i < shorts.len() {
            let c = shorts[i];
            i += 1;
            if matches!(c, 'n' | 'd') {
                let rest: String = shorts[i..].iter().collect();
                let v = if rest.is_empty() {
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                } else {
                    rest
                };
                take_opt(mode, &mut o, c, Some(v))?;
                break;
            }
            take_opt(mode, &mut o, c, None)?;
        }
    }
    Ok(o)
}

fn take_opt(mode: Mode, o: &mut Opts, c: char, val: Option<String>) -> Result<(), String> {
    if !matches!(c, 'h' | 's') && !"pRftunrdT".contains(c) {
        return Err(format!("invalid option -- '{c}'"));
    }
    if !matches!(c, 'h' | 's') && !mode.allows(c) {
        return Err(format!("option -{c} does not apply to {}", mode.name()));
    }
    match c {
        'h' => o.help = true,
        's' => o.socket = true,
        'p' => o.prefix = true,
        'R' => o.raw = true,
        'f' => o.flat = true,
        't' => o.tidy = true,
        'u' => o.upto = true,
        'r' => o.recurse = true,
        'T' => o.token = true,
        'n' => {
            let v = val.unwrap_or_default();
            let n: i64 = v
                .parse()
                .map_err(|_| format!("-n wants a number, not {v:?}"))?;
            // Xen: a negative count means "forever".
            o.number = u64::try_from(n).ok();
        }
        'd' => return Err("watch depth (-d) is not supported by this xenstored".into()),
        _ => unreachable!(),
    }
    Ok(())
}

fn usage_line(inv: &Invocation) -> String {
    let argv0 = &inv.prog;
    if inv.mode_arg {
        format!("Usage: {argv0} {} {}", inv.mode.name(), inv.mode.usage())
    } else {
        format!("Usage: {argv0} {}", inv.mode.usage())
    }
}

/// Xen's error name when the store sent one, else the error itself.
fn why(e: &xenstore::Error) -> String {
    e.name().map_or_else(|| e.to_string(), str::to_owned)
}

/// Runs the tool for `argv`; returns the exit status.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let inv = match dispatch(argv) {
        Ok(i) => i,
        Err(m) => {
            let _ = writeln!(err, "{m}");
            return 1;
        }
    };
    let prog = inv.prog.clone();
    let o = match parse_opts(inv.mode, &inv.args) {
        Ok(o) => o,
        Err(m) => {
            let _ = writeln!(err, "{prog}: {m}\n{}", usage_line(&inv));
            return 1;
        }
    };
    if o.help {
        let _ = writeln!(err, "{}", usage_line(&inv));
        return 0;
    }
    let n = o.operands.len();
    let bad = match inv.mode {
        Mode::Ls => false,
        Mode::Write => n == 0 || n % 2 == 1,
        Mode::Chmod => n < 2,
        _ => n == 0,
    };
    if bad {
        let _ = writeln!(err, "{}", usage_line(&inv));
        return 1;
    }
    let conn = if o.socket {
        Client::connect_socket()
    } else {
        Client::connect()
    };
    let mut c = match conn {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{prog}: xs_open: {e}");
            return 1;
        }
    };
    match inv.mode {
        Mode::Ls => return do_ls(&mut c, &prog, &o, out, err),
        Mode::Watch => return do_watch(&mut c, &prog, &o, out, err),
        _ => {}
    }
    let transaction = match inv.mode {
        Mode::Read => n > 1,
        Mode::Write => n > 2,
        _ => true,
    };
    let mut buf = Vec::new();
    loop {
        let tx = if transaction {
            match c.transaction_start() {
                Ok(t) => t,
                Err(e) => {
                    let _ = writeln!(err, "{prog}: couldn't start transaction: {}", why(&e));
                    return 1;
                }
            }
        } else {
            0
        };
        buf.clear();
        let ok = match perform(&mut c, inv.mode, tx, &o, &mut buf) {
            Ok(()) => true,
            Err(Failure::Warn(m)) => {
                let _ = writeln!(err, "{prog}: {m}");
                false
            }
            Err(Failure::Quiet) => false,
            Err(Failure::Fatal(m)) => {
                let _ = writeln!(err, "{prog}: {m}");
                return 1;
            }
        };
        if transaction {
            match c.transaction_end(tx, ok) {
                Ok(()) => {}
                Err(e) if ok && e.is_again() => continue,
                Err(e) => {
                    let _ = writeln!(err, "{prog}: couldn't end transaction: {}", why(&e));
                    return 1;
                }
            }
        }
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return 1;
        }
        return if ok { 0 } else { 1 };
    }
}

/// How an operation failed.
enum Failure {
    /// Print this, stop, end the transaction (abort) and print what was gathered.
    Warn(String),
    /// Stop without a word (`exists`).
    Quiet,
    /// Print this and exit at once.
    Fatal(String),
}

fn perform(
    c: &mut Client,
    mode: Mode,
    tx: u32,
    o: &Opts,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let ops = &o.operands;
    match mode {
        Mode::Read => {
            for k in ops {
                let v = c
                    .read(tx, k)
                    .map_err(|e| Failure::Warn(format!("couldn't read path {k}: {}", why(&e))))?;
                if o.prefix {
                    out.extend_from_slice(format!("{k}: ").as_bytes());
                }
                if o.raw {
                    out.extend_from_slice(&v);
                } else {
                    out.extend_from_slice(sanitise(&v).as_bytes());
                    out.push(b'\n');
                }
            }
        }
        Mode::Write => {
            for kv in ops.chunks(2) {
                let (k, v) = (&kv[0], &kv[1]);
                let val = if o.raw {
                    v.as_bytes().to_vec()
                } else {
                    unsanitise(v)
                };
                c.write(tx, k, &val)
                    .map_err(|e| Failure::Warn(format!("could not write path {k}: {}", why(&e))))?;
            }
        }
        Mode::Mkdir => {
            for k in ops {
                c.mkdir(tx, k).map_err(|e| {
                    Failure::Warn(format!("could not create path {k}: {}", why(&e)))
                })?;
            }
        }
        Mode::Rm => {
            for k in ops {
                let mut path = k.clone();
                loop {
                    c.rm(tx, &path).map_err(|e| {
                        Failure::Warn(format!("could not remove path {path}: {}", why(&e)))
                    })?;
                    if !o.tidy {
                        break;
                    }
                    // -t: also remove the parent if it is now empty and has no value.
                    let Some(slash) = path.rfind('/') else { break };
                    path.truncate(slash);
                    let empty_value = matches!(c.read(tx, &path), Ok(v) if v.is_empty());
                    if !empty_value || !matches!(c.directory(tx, &path), Ok(d) if d.is_empty()) {
                        break;
                    }
                }
            }
        }
        Mode::Exists => {
            for k in ops {
                c.read(tx, k).map_err(|_| Failure::Quiet)?;
            }
        }
        Mode::List => {
            for k in ops {
                let list = c
                    .directory(tx, k)
                    .map_err(|e| Failure::Warn(format!("could not list path {k}: {}", why(&e))))?;
                let pref = if k == "/" { "" } else { k.as_str() };
                for name in list {
                    if o.prefix {
                        out.extend_from_slice(format!("{pref}/").as_bytes());
                    }
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'\n');
                }
            }
        }
        Mode::Chmod => {
            let path = &ops[0];
            let perms = ops[1..]
                .iter()
                .map(|s| parse_perm(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Fatal)?;
            chmod(c, tx, path, &perms, o.upto, o.recurse)?;
        }
        Mode::Ls | Mode::Watch => unreachable!("not run in a transaction"),
    }
    Ok(())
}

/// A chmod mode argument as Xen reads it: `n`, `r`, `w` or `b`, then a domid (missing: 0).
pub fn parse_perm(s: &str) -> Result<Perm, String> {
    let mut ch = s.chars();
    let first = ch.next().unwrap_or('\0');
    let access = match first {
        'n' => Access::None,
        'r' => Access::Read,
        'w' => Access::Write,
        'b' => Access::Both,
        c => return Err(format!("Invalid permission specification: '{c}'")),
    };
    let digits: String = ch
        .as_str()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let domid = if digits.is_empty() {
        0
    } else {
        digits
            .parse::<u16>()
            .map_err(|_| format!("Invalid domain id in permission specification: '{s}'"))?
    };
    Ok(Perm::new(domid, access))
}

fn chmod(
    c: &mut Client,
    tx: u32,
    path: &str,
    perms: &[Perm],
    upto: bool,
    recurse: bool,
) -> Result<(), Failure> {
    if path.is_empty() {
        return Ok(());
    }
    c.set_perms(tx, path, perms).map_err(|e| {
        Failure::Fatal(format!(
            "Error occurred setting permissions on '{path}': {}",
            why(&e)
        ))
    })?;
    if upto {
        let Some(slash) = path.rfind('/') else {
            return Err(Failure::Fatal(format!(
                "Unable to locate path separator '/' in '{path}'"
            )));
        };
        chmod(c, tx, &path[..slash], perms, true, false)?;
    }
    if recurse {
        if let Ok(children) = c.directory(tx, path) {
            for child in children {
                let sep = if path.ends_with('/') { "" } else { "/" };
                chmod(c, tx, &format!("{path}{sep}{child}"), perms, false, true)?;
            }
        }
    }
    Ok(())
}

/// The width `xenstore-ls` fits lines into: Xen uses the terminal's columns − 2, else 80;
/// here `$COLUMNS` − 2 when stdout is a terminal.
fn ls_width() -> usize {
    if io::stdout().is_terminal() {
        if let Some(cols) = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
        {
            return cols.saturating_sub(2);
        }
    }
    80
}

fn do_ls(c: &mut Client, prog: &str, o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut lo = ls::Options {
        max_width: ls_width(),
        perms: o.prefix,
        ..ls::Options::default()
    };
    if o.flat {
        lo = lo.flat();
    }
    let paths = if o.operands.is_empty() {
        vec!["/".to_owned()]
    } else {
        o.operands.clone()
    };
    for p in &paths {
        match ls::ls(c, p, &lo, out) {
            Ok(()) => {}
            Err(LsError::Directory { path, err: e }) => {
                let _ = out.flush();
                let _ = writeln!(err, "{prog}: xs_directory ({path}): {e}");
                return 1;
            }
            Err(LsError::Io(_)) => return 1,
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    0
}

fn do_watch(c: &mut Client, prog: &str, o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    for w in &o.operands {
        if let Err(e) = c.watch(w, w) {
            let _ = writeln!(err, "{prog}: Unable to add watch on {w}: {}", why(&e));
            return 1;
        }
    }
    let mut seen = 0u64;
    while o.number.is_none_or(|n| seen < n) {
        let (path, token) = match c.read_watch() {
            Ok(ev) => ev,
            Err(e) => {
                let _ = writeln!(err, "{prog}: reading watch events: {e}");
                return 1;
            }
        };
        let line = if o.token {
            format!("{path} {token}\n")
        } else {
            format!("{path}\n")
        };
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
        seen += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn dispatch_by_symlink_name_or_first_argument() {
        for m in Mode::ALL {
            let name = format!("/usr/bin/xenstore-{}", m.name());
            let inv = dispatch(&argv(&[&name, "/a"])).unwrap();
            assert_eq!(inv.mode, m);
            assert!(!inv.mode_arg);
            assert_eq!(inv.prog, format!("xenstore-{}", m.name()));
            assert_eq!(inv.args, ["/a"]);
            let inv = dispatch(&argv(&["xenstore", m.name(), "/a", "b"])).unwrap();
            assert_eq!((inv.mode, inv.mode_arg), (m, true));
            assert_eq!(inv.prog, "xenstore");
            assert_eq!(inv.args, ["/a", "b"]);
        }
        assert_eq!(
            dispatch(&argv(&["./xenstore-frob", "x"])).unwrap_err(),
            "xenstore-frob: unknown mode frob"
        );
        assert_eq!(
            dispatch(&argv(&["xenstore", "frob"])).unwrap_err(),
            "xenstore: unknown mode frob"
        );
        assert!(dispatch(&argv(&["xenstore"]))
            .unwrap_err()
            .starts_with("Usage: xenstore <mode>"));
        // A name that merely contains the word is the multicall.
        let inv = dispatch(&argv(&["/bin/xenstore", "ls"])).unwrap();
        assert_eq!(inv.mode, Mode::Ls);
    }

    #[test]
    fn options_like_getopt() {
        let o = parse_opts(Mode::Read, &argv(&["-pR", "/a", "-s", "/b"])).unwrap();
        assert!(o.prefix && o.raw && o.socket);
        assert_eq!(o.operands, ["/a", "/b"]);
        let o = parse_opts(Mode::Watch, &argv(&["-n", "3", "/w"])).unwrap();
        assert_eq!(o.number, Some(3));
        let o = parse_opts(Mode::Watch, &argv(&["-n2", "--token", "/w"])).unwrap();
        assert_eq!((o.number, o.token), (Some(2), true));
        let o = parse_opts(Mode::Watch, &argv(&["--number=-1", "/w"])).unwrap();
        assert_eq!(o.number, None);
        let o = parse_opts(Mode::Write, &argv(&["/a", "--", "-1"])).unwrap();
        assert_eq!(o.operands, ["/a", "-1"]);
        assert!(parse_opts(Mode::Write, &argv(&["-p", "/a", "1"])).is_err());
        assert!(parse_opts(Mode::Read, &argv(&["-z", "/a"])).is_err());
        assert!(parse_opts(Mode::Watch, &argv(&["-n"])).is_err());
        assert!(parse_opts(Mode::Ls, &argv(&["-fp"])).unwrap().flat);
    }

    #[test]
    fn chmod_specs() {
        assert_eq!(parse_perm("b5").unwrap(), Perm::new(5, Access::Both));
        assert_eq!(parse_perm("n").unwrap(), Perm::new(0, Access::None));
        assert_eq!(parse_perm("r12x").unwrap(), Perm::new(12, Access::Read));
        assert_eq!(
            parse_perm("x1").unwrap_err(),
            "Invalid permission specification: 'x'"
        );
    }

    #[test]
    fn usage_and_help_without_a_store() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&argv(&["xenstore-write", "/a"]), &mut out, &mut err), 1);
        assert_eq!(
            String::from_utf8_lossy(&err),
            "Usage: xenstore-write [-h] [-s] [-R] key value [...]\n"
        );
        err.clear();
        assert_eq!(
            run(&argv(&["xenstore", "read", "-h"]), &mut out, &mut err),
            0
        );
        assert_eq!(
            String::from_utf8_lossy(&err),
            "Usage: xenstore read [-h] [-s] [-p] [-R] key [...]\n"
        );
        assert!(out.is_empty());
    }
}
