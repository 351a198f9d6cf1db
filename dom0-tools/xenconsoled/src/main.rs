//! `xenconsoled`: the console backend for domUs.
//!
//! Watches xenstore for domains (`@introduceDomain` / `@releaseDomain`, plus a scan at
//! start), and for each domU with a `console/port`: maps its console page through
//! gntdev (grant ref 0, `GNTTAB_RESERVED_CONSOLE`), binds the console event channel,
//! logs its output to `/var/log/xen/console/guest-<name>.log`, and serves `xl console`
//! on `/var/run/xenconsoled/<domid>.sock` (output since attach after recent history
//! out; keystrokes in). A domain that is gone (destroyed) is unmapped and unbound.
#![deny(unsafe_code)]

mod console;
mod ring;
mod shared;
mod store;
mod sys;

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use store::Store;

const LOG_DIR: &str = "/var/log/xen/console";

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xenconsoled: {e:#}");
        std::process::exit(1);
    }
}

fn log(msg: &str) {
    eprintln!("xenconsoled: {msg}");
}

fn run() -> Result<()> {
    std::fs::create_dir_all(LOG_DIR).with_context(|| format!("creating {LOG_DIR}"))?;
    std::fs::create_dir_all(console::socket_dir())
        .with_context(|| format!("creating {}", console::socket_dir()))?;
    let _ = std::fs::set_permissions(
        console::socket_dir(),
        std::fs::Permissions::from_mode(0o700),
    );
    let hv = xenctrl::Toolstack::open().context("opening /dev/xen/privcmd")?;
    let mut st = store::open().context("connecting to xenstored")?;
    // A second connection blocks in read_watch; the loop also rescans every 5 s.
    let (tx, rx) = mpsc::channel();
    let mut w = store::open().context("connecting to xenstored")?;
    w.watch("@introduceDomain", "xenconsoled")?;
    w.watch("@releaseDomain", "xenconsoled")?;
    std::thread::spawn(move || {
        while w.read_watch().is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut running: BTreeMap<u16, Running> = BTreeMap::new();
    loop {
        let wanted = scan(&mut *st, &hv);
        // Stop consoles of domains that are gone.
        let gone: Vec<u16> = running
            .keys()
            .copied()
            .filter(|d| !wanted.contains(d))
            .collect();
        for d in gone {
            if let Some(r) = running.remove(&d) {
                r.stop.store(true, Ordering::Relaxed);
                let _ = r.thread.join();
                log(&format!("domain {d} released"));
            }
        }
        // Reap threads that ended on their own (and retry them on the next scan).
        running.retain(|_, r| !r.thread.is_finished());
        for d in wanted {
            if running.contains_key(&d) {
                continue;
            }
            match start(&mut *st, d) {
                Ok(r) => {
                    log(&format!("domain {d} console attached"));
                    running.insert(d, r);
                }
                Err(e) => log(&format!("domain {d}: {e:#}")),
            }
        }
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
}

/// Domains that should have a console: domUs under /local/domain with a console/port
/// that the hypervisor still runs (not dying).
fn scan(st: &mut dyn Store, hv: &xenctrl::Toolstack) -> Vec<u16> {
    let mut out = Vec::new();
    for d in st.directory("/local/domain").unwrap_or_default() {
        let Ok(id) = d.parse::<u16>() else { continue };
        if id == 0 {
            continue;
        }
        let alive =
            matches!(hv.domain_info(id), Ok(Some(i)) if i.flags & xenctrl::dominfo::DYING == 0);
        if alive
            && st
                .read(&format!("/local/domain/{id}/console/port"))
                .ok()
                .flatten()
                .is_some()
        {
            out.push(id);
        }
    }
    out
}

/// Parses a small decimal number a guest-writable node holds.
fn parse_num(v: Option<Vec<u8>>) -> Option<u32> {
    let v = v?;
    std::str::from_utf8(&v).ok()?.trim().parse().ok()
}

fn start(st: &mut dyn Store, domid: u16) -> Result<Running> {
    let base = format!("/local/domain/{domid}");
    let port = parse_num(st.read(&format!("{base}/console/port"))?)
        .context("console/port missing or not a number")?;
    let name = st
        .read(&format!("{base}/name"))?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let gnt = xenctrl::Gntdev::open()?;
    let map = gnt
        .map(domid, xen_abi::grant_table::GNTTAB_RESERVED_CONSOLE, true)
        .context("mapping the console page (grant 0)")?;
    let page = shared::SharedPage::new(map).context("console mapping has no address")?;
    let evtchn = xenctrl::Evtchn::open()?;
    let local_port = evtchn
        .bind_interdomain(domid, port)
        .with_context(|| format!("binding event channel {port}"))?;
    let sock_path = console::socket_path(domid);
    let _ = std::fs::remove_file(&sock_path);
    let listener = match std::os::unix::net::UnixListener::bind(&sock_path) {
        Ok(l) => l,
        Err(e) => {
            let _ = evtchn.unbind(local_port);
            return Err(e).with_context(|| format!("listening on {sock_path}"));
        }
    };
    let _ = std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600));
    let log_path = format!("{LOG_DIR}/{}", console::log_name(&name, domid));
    let c = console::Console {
        domid,
        events: console::Bound { evtchn, local_port },
        page,
        sock_path,
        log: console::open_log(&log_path).ok(),
        log_path,
        listener,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let stop = Arc::clone(&c.stop);
    let thread = std::thread::Builder::new()
        .name(format!("console-{domid}"))
        .spawn(move || c.run())?;
    Ok(Running { stop, thread })
}
