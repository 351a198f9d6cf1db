//! `fv-hostile-front <scenario>`: a PV frontend in the userspace of a test domU that
//! misbehaves on purpose, to check that dom0's Linux blkback and netback give up the
//! device (error responses, a halted ring, a disabled vif) and nothing worse happens to
//! dom0 or the hypervisor (issue 10).
//!
//! The domU's kernel frontends must be unloaded first (`rmmod xen_blkfront
//! xen_netfront`), so that the device dom0 hot-plugs (`xl block-attach`,
//! `xl network-attach`) is left to this program: it waits for a frontend directory still
//! in state Initialising, does the handshake itself (rings and data pages granted through
//! `/dev/xen/gntalloc`, an unbound event channel for the backend, the xenstore keys),
//! checks the device works with one honest request, attacks, and prints what it saw:
//!
//! ```text
//! HOSTILE <scenario> outcome=<what> backend_state=<n|none> sanity=<ok|...> after=<ok|...>
//! ```
//!
//! `sanity` is the honest request before the attack, `after` the same request after
//! it. Scenarios (one device each):
//!
//! * `bad-gref` (vbd): a read into grant ref 0xFFFFFFF0;
//! * `too-many-segs` (vbd): reads claiming 12, then 255 segments (the limit is 11);
//! * `far-ahead` (vbd): `req_prod` published 10000 beyond what was filled;
//! * `revoke` (vbd): a read into a granted page that is unmapped and deallocated right
//!   after the request is published;
//! * `net` (vif): a transmit from grant ref 0xFFFFFFF0 (line `net-bad-gref`), then the
//!   transmit `req_prod` 10000 ahead (line `net-far-ahead`).
//!
//! Outcomes: `error-response` (the backend answered with an error status),
//! `completed` (answered OKAY: expected only for `revoke`), `accepted` (OKAY where
//! an error was due), `disconnected` (backend state Closing or Closed), `halted` (no
//! answer, and none to the honest request after it either: the backend stopped serving
//! the ring), `no-response` (no answer, but the ring still serves honest requests),
//! `no-device`, `no-connect`, `setup-error`. Details go to stderr.
#![deny(unsafe_code)]

mod front;
mod sys;

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use front::{Device, Ring, Store};
use hostile_front::layout::{blkif, netif, state};
use sys::{Gntalloc, GrantedPage};

/// A grant reference no domain has (beyond any grant table's size).
const BAD_GREF: u32 = 0xFFFF_FFF0;
/// How far beyond the truth the hostile `req_prod` goes.
const FAR_AHEAD: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    BadGref,
    TooManySegs,
    FarAhead,
    Revoke,
    Net,
}

impl Scenario {
    const ALL: [(&'static str, Scenario); 5] = [
        ("bad-gref", Scenario::BadGref),
        ("too-many-segs", Scenario::TooManySegs),
        ("far-ahead", Scenario::FarAhead),
        ("revoke", Scenario::Revoke),
        ("net", Scenario::Net),
    ];

    fn parse(s: &str) -> Option<Scenario> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    /// The lines this scenario prints.
    fn lines(self) -> &'static [&'static str] {
        match self {
            Scenario::BadGref => &["bad-gref"],
            Scenario::TooManySegs => &["too-many-segs"],
            Scenario::FarAhead => &["far-ahead"],
            Scenario::Revoke => &["revoke"],
            Scenario::Net => &["net-bad-gref", "net-far-ahead"],
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Opts {
    scenario: Scenario,
    /// How long to wait for the device to appear.
    wait: Duration,
    /// How long to wait for one answer (and for the handshake, 4 times this).
    timeout: Duration,
}

const USAGE: &str = "usage: fv-hostile-front <bad-gref|too-many-segs|far-ahead|revoke|net> [--wait SECS] [--timeout SECS]";

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut scenario = None;
    let mut wait = Duration::from_secs(300);
    let mut timeout = Duration::from_secs(15);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--wait" | "--timeout" => {
                let v: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .ok_or_else(|| format!("{a} needs a positive number of seconds"))?;
                if a == "--wait" {
                    wait = Duration::from_secs(v);
                } else {
                    timeout = Duration::from_secs(v);
                }
            }
            s if scenario.is_none() && !s.starts_with('-') => {
                scenario =
                    Some(Scenario::parse(s).ok_or_else(|| format!("unknown scenario {s:?}"))?);
            }
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    Ok(Opts {
        scenario: scenario.ok_or("no scenario given")?,
        wait,
        timeout,
    })
}

/// One result line.
struct Report {
    name: &'static str,
    outcome: &'static str,
    backend_state: Option<u32>,
    sanity: &'static str,
    after: &'static str,
}

impl Report {
    fn print(&self) {
        let bs = self
            .backend_state
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        println!(
            "HOSTILE {} outcome={} backend_state={bs} sanity={} after={}",
            self.name, self.outcome, self.sanity, self.after
        );
    }
}

/// What waiting for the answer to one request gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Status(i16),
    Disconnected,
    Nothing,
}

impl Answer {
    /// For the honest request: `ok`, `error`, `disconnected` or `none`.
    fn honest(self) -> &'static str {
        match self {
            Answer::Status(0) => "ok",
            Answer::Status(_) => "error",
            Answer::Disconnected => "disconnected",
            Answer::Nothing => "none",
        }
    }

    /// For a request that must be refused.
    fn refused(self) -> &'static str {
        match self {
            Answer::Status(0) => "accepted",
            Answer::Status(_) => "error-response",
            Answer::Disconnected => "disconnected",
            Answer::Nothing => "no-response",
        }
    }
}

/// The frontend of one vbd.
struct Blk {
    dev: Device,
    ring: Ring,
    /// The page honest reads land in.
    data: GrantedPage,
    next_id: u64,
}

impl Blk {
    fn connect(xs: &mut Store, gnt: &Gntalloc, fe: &str, timeout: Duration) -> Result<Blk> {
        let until = Instant::now() + timeout * 4;
        let dev = Device::prepare(xs, fe, until)?;
        let ring = Ring::new(gnt, dev.backend_id, blkif::ENTRY_SIZE)?;
        let data = gnt.grant_page(dev.backend_id, true)?;
        xs.write(&format!("{fe}/ring-ref"), &ring.gref().to_string())?;
        xs.write(&format!("{fe}/event-channel"), &dev.port.to_string())?;
        xs.write(&format!("{fe}/protocol"), "x86_64-abi")?;
        xs.write(&format!("{fe}/state"), &state::INITIALISED.to_string())?;
        let s = xs.wait_state(&dev.be, until, |s| {
            s == state::CONNECTED || state::is_disconnected(s)
        });
        if s != Some(state::CONNECTED) {
            bail!("backend {} did not connect (state {s:?})", dev.be);
        }
        Ok(Blk {
            dev,
            ring,
            data,
            next_id: 1,
        })
    }

    /// Queues `req` (its id replaced by a fresh one), publishes it, notifies; returns the id.
    fn submit(&mut self, mut req: blkif::Request) -> Result<u64> {
        req.id = self.next_id;
        self.next_id += 1;
        if !self.ring.put(&req.encode()) {
            bail!("block ring full");
        }
        self.ring.publish();
        self.dev.notify();
        Ok(req.id)
    }

    fn wait(&mut self, xs: &mut Store, id: u64, timeout: Duration) -> Answer {
        wait_answer(xs, &self.dev, timeout, || {
            self.ring
                .take_responses(blkif::RESPONSE_SIZE)
                .iter()
                .filter_map(|b| b.as_slice().try_into().ok())
                .map(blkif::Response::decode)
                .find(|r| r.id == id)
                .map(|r| r.status)
        })
    }

    /// One honest 4 KiB read of sector 0.
    fn honest(&mut self, xs: &mut Store, timeout: Duration) -> Answer {
        let req = blkif::Request::read(0, 0, &[blkif::Segment::page(self.data.gref())]);
        match self.submit(req) {
            Ok(id) => self.wait(xs, id, timeout),
            Err(e) => {
                eprintln!("fv-hostile-front: {e:#}");
                Answer::Nothing
            }
        }
    }
}

/// Polls `take` (which returns the awaited status once it arrived) and the backend's
/// state until an answer, a disconnection or `timeout`.
fn wait_answer(
    xs: &mut Store,
    dev: &Device,
    timeout: Duration,
    mut take: impl FnMut() -> Option<i16>,
) -> Answer {
    let end = Instant::now() + timeout;
    let mut next_state_check = Instant::now();
    loop {
        if let Some(s) = take() {
            return Answer::Status(s);
        }
        let now = Instant::now();
        if now >= next_state_check {
            if dev.backend_state(xs).is_some_and(state::is_disconnected) {
                return Answer::Disconnected;
            }
            next_state_check = now + Duration::from_millis(250);
        }
        if now >= end {
            return Answer::Nothing;
        }
        sleep(Duration::from_millis(10));
    }
}

/// The frontend of one vif.
struct Net {
    dev: Device,
    tx: Ring,
    _rx: Ring,
    /// The honest frame (granted read-only).
    frame: GrantedPage,
    next_id: u16,
}

impl Net {
    fn connect(xs: &mut Store, gnt: &Gntalloc, fe: &str, timeout: Duration) -> Result<Net> {
        let until = Instant::now() + timeout * 4;
        let dev = Device::prepare(xs, fe, until)?;
        let tx = Ring::new(gnt, dev.backend_id, netif::TX_ENTRY_SIZE)?;
        let rx = Ring::new(gnt, dev.backend_id, netif::RX_REQUEST_SIZE)?;
        let mac = xs
            .read(&format!("{fe}/mac"))
            .and_then(|m| netif::parse_mac(&m))
            .unwrap_or([0x00, 0x16, 0x3e, 0, 0, 1]);
        let frame = gnt.grant_page(dev.backend_id, false)?;
        frame.write(0, &netif::probe_frame(mac));
        for (k, v) in [
            ("tx-ring-ref", tx.gref().to_string()),
            ("rx-ring-ref", rx.gref().to_string()),
            ("event-channel", dev.port.to_string()),
            ("request-rx-copy", "1".into()),
            ("feature-rx-notify", "1".into()),
            ("state", state::CONNECTED.to_string()),
        ] {
            xs.write(&format!("{fe}/{k}"), &v)?;
        }
        let s = xs.wait_state(&dev.be, until, |s| {
            s == state::CONNECTED || state::is_disconnected(s)
        });
        if s != Some(state::CONNECTED) {
            bail!("backend {} did not connect (state {s:?})", dev.be);
        }
        Ok(Net {
            dev,
            tx,
            _rx: rx,
            frame,
            next_id: 1,
        })
    }

    fn submit(&mut self, mut req: netif::TxRequest) -> Result<u16> {
        req.id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if !self.tx.put(&req.encode()) {
            bail!("transmit ring full");
        }
        self.tx.publish();
        self.dev.notify();
        Ok(req.id)
    }

    fn wait(&mut self, xs: &mut Store, id: u16, timeout: Duration) -> Answer {
        wait_answer(xs, &self.dev, timeout, || {
            self.tx
                .take_responses(netif::TX_RESPONSE_SIZE)
                .iter()
                .filter_map(|b| b.as_slice().try_into().ok())
                .map(netif::TxResponse::decode)
                .find(|r| r.id == id && r.status != netif::RSP_NULL)
                .map(|r| r.status)
        })
    }

    fn send(&mut self, xs: &mut Store, gref: u32, timeout: Duration) -> Answer {
        let req = netif::TxRequest {
            gref,
            offset: 0,
            flags: 0,
            id: 0,
            size: 60,
        };
        match self.submit(req) {
            Ok(id) => self.wait(xs, id, timeout),
            Err(e) => {
                eprintln!("fv-hostile-front: {e:#}");
                Answer::Nothing
            }
        }
    }

    fn honest(&mut self, xs: &mut Store, timeout: Duration) -> Answer {
        let g = self.frame.gref();
        self.send(xs, g, timeout)
    }
}

/// Publishes a `req_prod` far ahead of what was filled, gives the backend `timeout` to
/// react, then restores the true index. True if the backend disconnected meanwhile.
fn publish_far_ahead(xs: &mut Store, dev: &Device, ring: &Ring, timeout: Duration) -> bool {
    ring.publish_raw(ring.front.bogus_req_prod(FAR_AHEAD));
    dev.notify();
    // Nothing was filled, so no answer can come: only a disconnection ends this early.
    let gone = wait_answer(xs, dev, timeout, || None) == Answer::Disconnected;
    ring.publish();
    gone
}

/// The far-ahead outcome from the honest request that followed it.
fn far_ahead_outcome(after: Answer) -> &'static str {
    match after {
        Answer::Disconnected => "disconnected",
        Answer::Nothing => "halted",
        // The backend shrugged the bogus index off and still serves the ring.
        Answer::Status(_) => "tolerated",
    }
}

fn run_blk(xs: &mut Store, gnt: &Gntalloc, opts: &Opts, fe: &str) -> Result<Report> {
    let t = opts.timeout;
    let mut blk = Blk::connect(xs, gnt, fe, t)?;
    eprintln!(
        "fv-hostile-front: {fe} connected to {} (ring gref {}, port {})",
        blk.dev.be,
        blk.ring.gref(),
        blk.dev.port
    );
    let sanity = blk.honest(xs, t).honest();
    let (outcome, after) = match opts.scenario {
        Scenario::BadGref => {
            let req = blkif::Request::read(0, 0, &[blkif::Segment::page(BAD_GREF)]);
            let id = blk.submit(req)?;
            let a = blk.wait(xs, id, t).refused();
            (a, blk.honest(xs, t))
        }
        Scenario::TooManySegs => {
            let g = blk.data.gref();
            let segs = [blkif::Segment::page(g); blkif::MAX_SEGMENTS];
            let mut outcome = "error-response";
            for n in [blkif::MAX_SEGMENTS as u8 + 1, 255] {
                let mut req = blkif::Request::read(0, 0, &segs);
                req.nr_segments = n;
                let id = blk.submit(req)?;
                outcome = blk.wait(xs, id, t).refused();
                eprintln!("fv-hostile-front: nr_segments={n}: {outcome}");
                if outcome != "error-response" {
                    break;
                }
            }
            (outcome, blk.honest(xs, t))
        }
        Scenario::FarAhead => {
            let after = if publish_far_ahead(xs, &blk.dev, &blk.ring, t) {
                Answer::Disconnected
            } else {
                blk.honest(xs, t)
            };
            (far_ahead_outcome(after), after)
        }
        Scenario::Revoke => {
            let victim = gnt.grant_page(blk.dev.backend_id, true)?;
            let req = blkif::Request::read(0, 0, &[blkif::Segment::page(victim.gref())]);
            let id = blk.submit(req)?;
            victim
                .revoke()
                .context("gntalloc: revoking the page in flight")?;
            let a = match blk.wait(xs, id, t) {
                Answer::Status(0) => "completed",
                a => a.refused(),
            };
            (a, blk.honest(xs, t))
        }
        Scenario::Net => unreachable!("net is not a block scenario"),
    };
    Ok(Report {
        name: opts.scenario.name(),
        outcome,
        backend_state: blk.dev.backend_state(xs),
        sanity,
        after: after.honest(),
    })
}

fn run_net(xs: &mut Store, gnt: &Gntalloc, opts: &Opts, fe: &str) -> Result<Vec<Report>> {
    let t = opts.timeout;
    let mut net = Net::connect(xs, gnt, fe, t)?;
    eprintln!(
        "fv-hostile-front: {fe} connected to {} (tx gref {}, port {})",
        net.dev.be,
        net.tx.gref(),
        net.dev.port
    );
    let sanity = net.honest(xs, t).honest();
    let bad = net.send(xs, BAD_GREF, t).refused();
    let after_bad = net.honest(xs, t);
    let first = Report {
        name: "net-bad-gref",
        outcome: bad,
        backend_state: net.dev.backend_state(xs),
        sanity,
        after: after_bad.honest(),
    };
    let sanity2 = after_bad.honest();
    let after = if publish_far_ahead(xs, &net.dev, &net.tx, t) {
        Answer::Disconnected
    } else {
        net.honest(xs, t)
    };
    let second = Report {
        name: "net-far-ahead",
        outcome: far_ahead_outcome(after),
        backend_state: net.dev.backend_state(xs),
        sanity: sanity2,
        after: after.honest(),
    };
    Ok(vec![first, second])
}

/// Runs the scenario; every line it owes is printed, whatever happens.
fn run(opts: &Opts) -> bool {
    let lines = opts.scenario.lines();
    let report_all = |outcome: &'static str, backend_state: Option<u32>| {
        for name in lines {
            Report {
                name,
                outcome,
                backend_state,
                sanity: "none",
                after: "none",
            }
            .print();
        }
    };
    let (mut xs, gnt) = match Store::open().and_then(|xs| Ok((xs, Gntalloc::open()?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fv-hostile-front: {e:#}");
            report_all("setup-error", None);
            return false;
        }
    };
    let class = if opts.scenario == Scenario::Net {
        "vif"
    } else {
        "vbd"
    };
    let Some(fe) = xs.wait_fresh_device(class, opts.wait) else {
        eprintln!(
            "fv-hostile-front: no new {class} device within {} s",
            opts.wait.as_secs()
        );
        report_all("no-device", None);
        return false;
    };
    eprintln!("fv-hostile-front: {} on {fe}", opts.scenario.name());
    let result = if opts.scenario == Scenario::Net {
        run_net(&mut xs, &gnt, opts, &fe)
    } else {
        run_blk(&mut xs, &gnt, opts, &fe).map(|r| vec![r])
    };
    match result {
        Ok(reports) => {
            reports.iter().for_each(Report::print);
            true
        }
        Err(e) => {
            eprintln!("fv-hostile-front: {e:#}");
            let be = xs.read(&format!("{fe}/backend"));
            let s = be.and_then(|be| xs.state(&be));
            report_all("no-connect", s);
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fv-hostile-front: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if run(&opts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn arguments() {
        let o = parse_args(&args("far-ahead --wait 60 --timeout 5")).unwrap();
        assert_eq!(o.scenario, Scenario::FarAhead);
        assert_eq!(o.wait, Duration::from_secs(60));
        assert_eq!(o.timeout, Duration::from_secs(5));
        let o = parse_args(&args("net")).unwrap();
        assert_eq!(o.scenario.lines(), ["net-bad-gref", "net-far-ahead"]);
        assert!(parse_args(&args("")).is_err());
        assert!(parse_args(&args("nosuch")).is_err());
        assert!(parse_args(&args("revoke extra")).is_err());
        assert!(parse_args(&args("revoke --wait")).is_err());
        assert!(parse_args(&args("revoke --wait 0")).is_err());
        for (name, s) in Scenario::ALL {
            assert_eq!(s.name(), name);
            assert_eq!(Scenario::parse(name), Some(s));
        }
    }

    #[test]
    fn answers_name_what_happened() {
        assert_eq!(Answer::Status(0).honest(), "ok");
        assert_eq!(Answer::Status(-1).honest(), "error");
        assert_eq!(Answer::Status(0).refused(), "accepted");
        assert_eq!(Answer::Status(blkif::RSP_ERROR).refused(), "error-response");
        assert_eq!(
            Answer::Status(netif::RSP_DROPPED).refused(),
            "error-response"
        );
        assert_eq!(Answer::Disconnected.refused(), "disconnected");
        assert_eq!(Answer::Nothing.refused(), "no-response");
    }
}
