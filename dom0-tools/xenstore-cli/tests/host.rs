//! Runs `xenstored -N` on a temporary socket and drives the `xenstore` tools (through
//! `xenstore-<mode>` symlinks and as `xenstore <mode>`) and `xs-check --dom0` against it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xenstore::Client;

const XENSTORE: &str = env!("CARGO_BIN_EXE_xenstore");
const XS_CHECK: &str = env!("CARGO_BIN_EXE_xs-check");

/// The `xenstored` binary: next to ours in the target directory (built by
/// `cargo test -p xenstored ...`), else built once into a side target directory.
fn xenstored() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let near = profile_dir.join("xenstored");
    if near.exists() {
        return near;
    }
    let side = profile_dir.join("xenstore-cli-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-p", "xenstored", "--target-dir"])
        .arg(&side)
        .status()
        .expect("run cargo build -p xenstored");
    assert!(st.success(), "building xenstored failed");
    side.join("debug").join("xenstored")
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("xs-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(xenstored())
            .arg("-N")
            .arg("--socket")
            .arg(dir.join("socket"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start xenstored");
        let d = Daemon { child, dir };
        let t0 = Instant::now();
        while UnixStream::connect(d.socket()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "xenstored did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for m in [
            "read", "write", "ls", "rm", "exists", "list", "watch", "chmod",
        ] {
            std::os::unix::fs::symlink(XENSTORE, d.dir.join(format!("xenstore-{m}"))).unwrap();
        }
        d
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }
    fn client(&self) -> Client {
        let c = Client::connect_to(&self.socket()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }
    /// A command for `prog` (a symlink name in our directory, or a full path) with
    /// `$XENSTORED_PATH` pointing at our daemon.
    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let p = if prog.contains('/') {
            PathBuf::from(prog)
        } else {
            self.dir.join(prog)
        };
        let mut c = Command::new(p);
        c.args(args).env("XENSTORED_PATH", self.socket());
        c
    }
    fn run(&self, prog: &str, args: &[&str]) -> (i32, String, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = self.cmd(prog, args).output().unwrap();
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "exit status; stderr: {}", r.2);
    assert_eq!(r.2, "", "stderr");
    r.1
}

#[test]
fn tools_read_write_list_ls_rm_exists_chmod() {
    let d = Daemon::start("tools");
    ok(d.run("xenstore-write", &["/vm/a", "1", "/vm/b/c", "tab\\there"]));
    assert_eq!(ok(d.run("xenstore-read", &["/vm/a"])), "1\n");
    assert_eq!(
        ok(d.run("xenstore-read", &["-p", "/vm/a", "/vm/b/c"])),
        "/vm/a: 1\n/vm/b/c: tab\\there\n"
    );
    assert_eq!(ok(d.run("xenstore-read", &["-R", "/vm/b/c"])), "tab\there");
    assert_eq!(ok(d.run(XENSTORE, &["read", "/vm/a"])), "1\n");
    assert_eq!(ok(d.run("xenstore-list", &["/vm"])), "a\nb\n");
    assert_eq!(ok(d.run("xenstore-list", &["-p", "/vm"])), "/vm/a\n/vm/b\n");
    assert_eq!(
        ok(d.run("xenstore-ls", &["/vm"])),
        "a = \"1\"\nb = \"\"\n c = \"tab\\there\"\n"
    );
    assert_eq!(
        ok(d.run("xenstore-ls", &["-f", "/vm"])),
        "/vm/a = \"1\"\n/vm/b = \"\"\n/vm/b/c = \"tab\\there\"\n"
    );
    let all = ok(d.run("xenstore-ls", &[]));
    assert!(
        all.starts_with("local = \"\"\n domain = \"\"\n  0 = \"\"\n"),
        "{all}"
    );
    assert!(all.contains("   name = \"Domain-0\"\n"), "{all}");

    // Failures: exit status 1 and a message naming the path and the error.
    assert_eq!(
        d.run("xenstore-read", &["/nope"]),
        (
            1,
            String::new(),
            "xenstore-read: couldn't read path /nope: ENOENT\n".into()
        )
    );
    assert_eq!(
        d.run(XENSTORE, &["list", "/nope"]),
        (
            1,
            String::new(),
            "xenstore: could not list path /nope: ENOENT\n".into()
        )
    );
    assert_eq!(
        d.run("xenstore-ls", &["/nope"]),
        (
            1,
            String::new(),
            "xenstore-ls: xs_directory (/nope): ENOENT\n".into()
        )
    );
    // What was read before the failure is still printed, like Xen's tool.
    let (st, out, err) = d.run("xenstore-read", &["/vm/a", "/nope"]);
    assert_eq!((st, out.as_str()), (1, "1\n"));
    assert_eq!(err, "xenstore-read: couldn't read path /nope: ENOENT\n");

    assert_eq!(d.run("xenstore-exists", &["/vm/a"]).0, 0);
    assert_eq!(
        d.run("xenstore-exists", &["/vm/zz"]),
        (1, String::new(), String::new())
    );

    ok(d.run("xenstore-chmod", &["-r", "/vm/b", "n3", "r4"]));
    assert_eq!(
        ok(d.run("xenstore-ls", &["-p", "/vm/b"])),
        // `c = "tab\\there"` is 15 wide; a space, then " ." up to column 60.
        format!("c = \"tab\\there\" {}  (n3,r4)\n", " .".repeat(22))
    );
    assert_eq!(
        d.run("xenstore-chmod", &["/vm/b", "x1"]),
        (
            1,
            String::new(),
            "xenstore-chmod: Invalid permission specification: 'x'\n".into()
        )
    );
    ok(d.run(XENSTORE, &["mkdir", "/vm/d/e"]));
    ok(d.run("xenstore-rm", &["-t", "/vm/d/e"]));
    assert_eq!(ok(d.run("xenstore-list", &["/vm"])), "a\nb\n");
    ok(d.run("xenstore-rm", &["/vm"]));
    assert_eq!(d.run("xenstore-exists", &["/vm"]).0, 1);
    // Usage errors.
    let (st, _, err) = d.run("xenstore-write", &["/odd"]);
    assert_eq!(
        (st, err.as_str()),
        (1, "Usage: xenstore-write [-h] [-s] [-R] key value [...]\n")
    );
    // -s: the socket only (here $XENSTORED_PATH is it).
    assert_eq!(
        ok(d.run("xenstore-read", &["-s", "/local/domain/0/domid"])),
        "0\n"
    );
}

#[test]
fn watch_prints_events_and_stops_after_n() {
    let d = Daemon::start("watch");
    let mut w = d
        .cmd("xenstore-watch", &["-n", "2", "/w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    // The watch fires once when registered; only then write below it.
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    d.client().write(0, "/w/x", b"1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/w/x");
    assert!(w.wait().unwrap().success());
    assert!(lines.next().is_none());

    let mut w = d
        .cmd(XENSTORE, &["watch", "-T", "-n", "2", "/v"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "/v /v");
    d.client().write(0, "/v", b"1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/v /v");
    assert!(w.wait().unwrap().success());
}

fn check_lines(out: &str, names: &[&str], total: usize) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("xs-check: role "), "{out}");
    for (line, name) in lines[1..].iter().zip(names) {
        assert!(line.starts_with(&format!("xs-check: ok {name}: ")), "{out}");
    }
    assert_eq!(lines.len(), names.len() + 2, "{out}");
    assert_eq!(
        lines[lines.len() - 1],
        format!("xs-check: {total} checks passed")
    );
}

#[test]
fn xs_check_dom0_passes_and_cleans_up() {
    let d = Daemon::start("check");
    let before = d.client().directory(0, "/tool").unwrap();
    let (st, out, err) = d.run(XS_CHECK, &["--dom0"]);
    assert_eq!(st, 0, "{out}{err}");
    assert!(
        out.starts_with("xs-check: role dom0 domid 0 via socket base /tool/xs-check-"),
        "{out}"
    );
    check_lines(
        &out,
        &["watch", "transaction", "dom0-access", "special-watches"],
        4,
    );
    assert!(!out.contains("FAIL") && !out.contains("panic"), "{out}");
    assert_eq!(d.client().directory(0, "/tool").unwrap(), before);
}

#[test]
fn xs_check_domu_fails_honestly_as_dom0() {
    // dom0's socket is privileged: the domU checks must notice.
    let d = Daemon::start("check-domu");
    let (st, out, _) = d.run(XS_CHECK, &["--domu", "--quota-max", "50"]);
    assert_eq!(st, 1, "{out}");
    assert!(
        out.contains(
            "xs-check: FAIL: eacces: write /local/domain/0/xs-check succeeded, want EACCES"
        ),
        "{out}"
    );
    assert!(
        out.contains("xs-check: FAIL: quota: no ENOSPC after 50 new nodes"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with("xs-check: FAIL: "),
        "{out}"
    );
}

#[test]
fn no_store_is_a_clear_error() {
    let dir = std::env::temp_dir();
    let missing = Path::new(&dir).join(format!("xs-cli-none-{}", std::process::id()));
    let o = Command::new(XENSTORE)
        .args(["read", "/x"])
        .env("XENSTORED_PATH", &missing)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("xenstore: xs_open: ") && err.contains(&*missing.to_string_lossy()),
        "{err}"
    );
}
