//! `xs-check`: an honest self-check of xenstore as dom0 or a domU sees it.
//!
//! Each check prints one line, `xs-check: ok <name>: <detail>`, or `xs-check: FAIL: <name>:
//! <why>`; [`run`] returns how many passed, or the failures. Every check can fail: it compares
//! what the store did with what Xen's xenstored does.
//!
//! | name | role | what |
//! |---|---|---|
//! | `watch` | both | a watch fires once at registration, then once for a write below it (path and token) |
//! | `transaction` | both | two read-modify-write transactions: the second commit gets `EAGAIN`; a retry commits |
//! | `dom0-access` | dom0 | dom0 reads and writes a node whose permissions exclude it |
//! | `special-watches` | dom0 | `@introduceDomain` and `@releaseDomain` watches register and fire |
//! | `eacces` | domU | writes to dom0's home and to another domain's home get `EACCES` |
//! | `quota` | domU | creating nodes hits `ENOSPC` within the limit; removing them makes writes work again |
//! | `home` | domU | `/local/domain/<id>` holds the nodes of Xen's xenstore-paths for a PVH domU |

use std::io::Write;
use std::time::Duration;

use xenstore::{Access, Client, Error, Perm};

/// Which checks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// In dom0 (privileged).
    Dom0,
    /// In an unprivileged domain.
    DomU,
}

/// What to run and where.
#[derive(Clone, Debug)]
pub struct Config {
    /// The role.
    pub role: Role,
    /// Scratch directory (removed before and after). Default: `data/xs-check` (relative, in the
    /// domain's home) for a domU, `/tool/xs-check-<pid>` for dom0.
    pub base: Option<String>,
    /// Give up the quota check after creating this many nodes without `ENOSPC`.
    pub quota_max: usize,
    /// How long to wait for a reply or a watch event.
    pub timeout: Duration,
}

impl Config {
    /// Defaults for `role`.
    pub fn new(role: Role) -> Config {
        Config {
            role,
            base: None,
            quota_max: 1100,
            timeout: Duration::from_secs(10),
        }
    }

    fn base(&self) -> String {
        self.base.clone().unwrap_or_else(|| match self.role {
            Role::DomU => "data/xs-check".to_owned(),
            Role::Dom0 => format!("/tool/xs-check-{}", std::process::id()),
        })
    }
}

type Outcome = Result<String, String>;

/// A store error as Xen names it.
fn why(e: &Error) -> String {
    e.name().map_or_else(|| e.to_string(), str::to_owned)
}

/// `op` on `path` failed: a message naming both.
fn failed(op: &str, path: &str, e: &Error) -> String {
    format!("{op} {path}: {}", why(e))
}

fn read_str(c: &mut Client, path: &str) -> Result<String, String> {
    c.read(0, path)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .map_err(|e| failed("read", path, &e))
}

/// The next watch event for `token` (events for other tokens are skipped).
fn next_event(c: &mut Client, token: &str) -> Result<String, String> {
    loop {
        let (path, tok) = c.read_watch().map_err(|e| {
            if e.is_timeout() {
                format!("no watch event for token {token} (timed out)")
            } else {
                format!("reading watch events: {e}")
            }
        })?;
        if tok == token {
            return Ok(path);
        }
    }
}

fn expect_event(c: &mut Client, token: &str, want: &str, what: &str) -> Result<(), String> {
    let got = next_event(c, token)?;
    if got != want {
        return Err(format!(
            "{what}: event for path {got:?} with token {token}, want {want:?}"
        ));
    }
    Ok(())
}

fn check_watch(c: &mut Client, base: &str) -> Outcome {
    let path = format!("{base}/watch");
    let token = "xs-check-watch";
    c.write(0, &path, b"")
        .map_err(|e| failed("write", &path, &e))?;
    c.watch(&path, token)
        .map_err(|e| failed("watch", &path, &e))?;
    let r = (|| -> Outcome {
        expect_event(c, token, &path, "at registration")?;
        let child = format!("{path}/child");
        c.write(0, &child, b"1")
            .map_err(|e| failed("write", &child, &e))?;
        // A second registration event would show up here instead.
        expect_event(c, token, &child, "after a write below the watch")?;
        Ok(format!(
            "fired at registration and for {child} (token {token})"
        ))
    })();
    let un = c.unwatch(&path, token);
    let _ = c.rm(0, &path);
    let detail = r?;
    un.map_err(|e| failed("unwatch", &path, &e))?;
    Ok(detail)
}

fn check_transaction(c: &mut Client, base: &str) -> Outcome {
    let node = format!("{base}/counter");
    c.write(0, &node, b"0")
        .map_err(|e| failed("write", &node, &e))?;
    let r = (|| -> Outcome {
        let start = |c: &mut Client| {
            c.transaction_start()
                .map_err(|e| format!("starting a transaction: {}", why(&e)))
        };
        let t1 = start(c)?;
        let t2 = start(c)?;
        for t in [t1, t2] {
            let v = c.read(t, &node).map_err(|e| failed("read", &node, &e))?;
            if v != b"0" {
                return Err(format!(
                    "transaction {t} read {:?} from {node}, want \"0\"",
                    String::from_utf8_lossy(&v)
                ));
            }
            c.write(t, &node, b"1")
                .map_err(|e| failed("write", &node, &e))?;
        }
        c.transaction_end(t1, true)
            .map_err(|e| format!("first commit: {}", why(&e)))?;
        match c.transaction_end(t2, true) {
            Err(e) if e.is_again() => {}
            Ok(()) => return Err("second commit succeeded: want EAGAIN (lost update)".into()),
            Err(e) => return Err(format!("second commit: {}, want EAGAIN", why(&e))),
        }
        let t3 = start(c)?;
        let v = c.read(t3, &node).map_err(|e| failed("read", &node, &e))?;
        if v != b"1" {
            let _ = c.transaction_end(t3, false);
            return Err(format!(
                "retry read {:?}, want \"1\"",
                String::from_utf8_lossy(&v)
            ));
        }
        c.write(t3, &node, b"2")
            .map_err(|e| failed("write", &node, &e))?;
        c.transaction_end(t3, true)
            .map_err(|e| format!("retry commit: {}", why(&e)))?;
        let v = read_str(c, &node)?;
        if v != "2" {
            return Err(format!("after the retry {node} = {v:?}, want \"2\""));
        }
        Ok("second commit got EAGAIN, retry committed".to_owned())
    })();
    let _ = c.rm(0, &node);
    r
}

fn check_dom0_access(c: &mut Client, base: &str) -> Outcome {
    let node = format!("{base}/locked");
    c.write(0, &node, b"x")
        .map_err(|e| failed("write", &node, &e))?;
    let r = (|| -> Outcome {
        let locked = [Perm::new(1, Access::None)];
        c.set_perms(0, &node, &locked)
            .map_err(|e| failed("set permissions of", &node, &e))?;
        let p = c
            .get_perms(0, &node)
            .map_err(|e| failed("get permissions of", &node, &e))?;
        if p != locked {
            return Err(format!("{node} has permissions {p:?}, want n1"));
        }
        if read_str(c, &node)? != "x" {
            return Err(format!("{node} does not read back \"x\""));
        }
        c.write(0, &node, b"y")
            .map_err(|e| failed("write", &node, &e))?;
        if read_str(c, &node)? != "y" {
            return Err(format!("{node} does not read back \"y\""));
        }
        c.directory(0, "/").map_err(|e| failed("list", "/", &e))?;
        Ok(format!(
            "read and wrote {node} (permissions n1) and listed /"
        ))
    })();
    let _ = c.rm(0, &node);
    r
}

fn check_special_watches(c: &mut Client) -> Outcome {
    for (path, token) in [
        ("@introduceDomain", "xs-check-introduce"),
        ("@releaseDomain", "xs-check-release"),
    ] {
        c.watch(path, token)
            .map_err(|e| failed("watch", path, &e))?;
        let r = expect_event(c, token, path, "at registration");
        let un = c.unwatch(path, token);
        r?;
        un.map_err(|e| failed("unwatch", path, &e))?;
    }
    Ok("@introduceDomain and @releaseDomain registered and fired".to_owned())
}

fn check_eacces(c: &mut Client, domid: Option<u16>) -> Outcome {
    let other = match domid {
        Some(0) | None => 0x7fef,
        Some(d) => d.wrapping_add(1).min(0x7fef),
    };
    let paths = [
        "/local/domain/0/xs-check".to_owned(),
        format!("/local/domain/{other}/xs-check"),
    ];
    for p in &paths {
        match c.write(0, p, b"x") {
            Err(e) if e.name() == Some("EACCES") => {}
            Ok(()) => {
                let _ = c.rm(0, p);
                return Err(format!("write {p} succeeded, want EACCES"));
            }
            Err(e) => return Err(format!("write {p}: {}, want EACCES", why(&e))),
        }
    }
    Ok(format!("writes to {} refused", paths.join(" and ")))
}

fn check_quota(c: &mut Client, base: &str, max: usize) -> Outcome {
    let dir = format!("{base}/quota");
    let mut created = 0;
    let mut hit = None;
    for i in 0..max {
        let p = format!("{dir}/n{i}");
        match c.write(0, &p, b"x") {
            Ok(()) => created += 1,
            Err(e) if e.name() == Some("ENOSPC") => {
                hit = Some(p);
                break;
            }
            Err(e) => {
                let _ = c.rm(0, &dir);
                return Err(format!("write {p}: {}, want OK or ENOSPC", why(&e)));
            }
        }
    }
    let rm = c.rm(0, &dir);
    let Some(at) = hit else {
        return Err(format!("no ENOSPC after {created} new nodes under {dir}"));
    };
    rm.map_err(|e| failed("remove", &dir, &e))?;
    match c.read(0, &format!("{dir}/n0")) {
        Err(e) if e.name() == Some("ENOENT") => {}
        Ok(_) => return Err(format!("{dir}/n0 still there after removing {dir}")),
        Err(e) => return Err(failed("read", &format!("{dir}/n0"), &e)),
    }
    let after = format!("{base}/after-quota");
    c.write(0, &after, b"ok")
        .map_err(|e| format!("after removing {dir}: {}", failed("write", &after, &e)))?;
    let v = read_str(c, &after)?;
    let _ = c.rm(0, &after);
    if v != "ok" {
        return Err(format!("{after} reads back {v:?}"));
    }
    Ok(format!(
        "ENOSPC at {at} after {created} new nodes; removed them; writes work again"
    ))
}

fn is_number(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

fn check_home(c: &mut Client, base: &str) -> Outcome {
    let id_s = read_str(c, "domid").map_err(|e| format!("relative {e}"))?;
    let id: u16 = id_s
        .parse()
        .map_err(|_| format!("relative domid reads {id_s:?}, not a domain id"))?;
    let home = c
        .get_domain_path(id)
        .map_err(|e| format!("GET_DOMAIN_PATH {id}: {}", why(&e)))?;
    if home != format!("/local/domain/{id}") {
        return Err(format!("GET_DOMAIN_PATH {id} says {home:?}"));
    }
    let abs_id = read_str(c, &format!("{home}/domid"))?;
    if abs_id != id_s {
        return Err(format!(
            "{home}/domid = {abs_id:?} but relative domid = {id_s:?}"
        ));
    }
    let name = read_str(c, &format!("{home}/name"))?;
    if name.is_empty() {
        return Err(format!("{home}/name is empty"));
    }
    for n in ["console/ring-ref", "console/port", "memory/static-max"] {
        let p = format!("{home}/{n}");
        let v = read_str(c, &p)?;
        if !is_number(&v) {
            return Err(format!("{p} = {v:?}, want a number"));
        }
    }
    // control/shutdown exists and is the domain's to write (Xen: `[w]`). Writing "" is what
    // the kernel itself does after handling a request, so it is harmless when it is "".
    let sd = format!("{home}/control/shutdown");
    let v = read_str(c, &sd)?;
    if v.is_empty() {
        c.write(0, &sd, b"").map_err(|e| {
            format!(
                "{} (must be writable by the domain)",
                failed("write", &sd, &e)
            )
        })?;
    } else {
        let p = c
            .get_perms(0, &sd)
            .map_err(|e| failed("get permissions of", &sd, &e))?;
        let writable = p.first().is_some_and(|o| o.domid == id)
            || p.iter()
                .any(|q| q.domid == id && matches!(q.access, Access::Write | Access::Both));
        if !writable {
            return Err(format!("{sd} is not writable by domain {id}: {p:?}"));
        }
    }
    let control = format!("{home}/control");
    let mut features = Vec::new();
    for f in c
        .directory(0, &control)
        .map_err(|e| failed("list", &control, &e))?
    {
        if f.starts_with("platform-feature-") {
            let p = format!("{control}/{f}");
            let v = read_str(c, &p)?;
            if v != "0" && v != "1" {
                return Err(format!("{p} = {v:?}, want 0 or 1"));
            }
            features.push(format!("{f}={v}"));
        }
    }
    // Relative paths resolve to the home.
    if !base.starts_with('/') {
        let rel = format!("{base}/relative");
        c.write(0, &rel, id_s.as_bytes())
            .map_err(|e| failed("write", &rel, &e))?;
        let abs = format!("{home}/{rel}");
        let v = c.read(0, &abs);
        let _ = c.rm(0, &rel);
        let v = v.map_err(|e| format!("relative write of {rel}: {}", failed("read", &abs, &e)))?;
        if v != id_s.as_bytes() {
            return Err(format!("{abs} does not hold what was written to {rel}"));
        }
    }
    Ok(format!(
        "{home} (domid {id}, name {name}) has control/shutdown, console/ring-ref, console/port, memory/static-max{}{}",
        if features.is_empty() { "" } else { ", " },
        features.join(", ")
    ))
}

/// Runs the checks for `cfg.role` on `c`, printing a line for each to `out`. Returns the
/// number passed, or the failures (each also printed).
pub fn run(c: &mut Client, cfg: &Config, out: &mut dyn Write) -> Result<usize, Vec<String>> {
    let base = cfg.base();
    let _ = c.set_read_timeout(Some(cfg.timeout));
    let via = if c.socket().is_xenbus() {
        "xenbus"
    } else {
        "socket"
    };
    let domid = match cfg.role {
        Role::Dom0 => Some(0),
        Role::DomU => read_str(c, "domid")
            .ok()
            .and_then(|s| s.parse::<u16>().ok()),
    };
    let role = match cfg.role {
        Role::Dom0 => "dom0",
        Role::DomU => "domu",
    };
    let id = domid.map_or_else(|| "unknown".to_owned(), |d| d.to_string());
    let _ = writeln!(
        out,
        "xs-check: role {role} domid {id} via {via} base {base}"
    );
    let _ = c.rm(0, &base);
    let mut passed = 0;
    let mut failures = Vec::new();
    let mut report = |name: &str, r: Outcome| {
        match r {
            Ok(detail) => {
                passed += 1;
                let _ = writeln!(out, "xs-check: ok {name}: {detail}");
            }
            Err(why) => {
                let _ = writeln!(out, "xs-check: FAIL: {name}: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
        let _ = out.flush();
    };
    report("watch", check_watch(c, &base));
    report("transaction", check_transaction(c, &base));
    match cfg.role {
        Role::Dom0 => {
            report("dom0-access", check_dom0_access(c, &base));
            report("special-watches", check_special_watches(c));
        }
        Role::DomU => {
            report("eacces", check_eacces(c, domid));
            report("quota", check_quota(c, &base, cfg.quota_max));
            report("home", check_home(c, &base));
        }
    }
    let _ = c.rm(0, &base);
    if failures.is_empty() {
        Ok(passed)
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests;
