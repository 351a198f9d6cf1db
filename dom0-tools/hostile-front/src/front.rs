//! The frontend side of a PV device, done in userspace: the xenstore handshake (§10 of
//! docs/xen-pvh-abi.md), shared rings in gntalloc pages, an event channel for the
//! backend. Every wait is bounded: a deadline, polled every few milliseconds.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use xenctrl::Evtchn;
use xenstore::Client;

use crate::sys::{Gntalloc, GrantedPage};
use hostile_front::layout::{self, state, FrontRing, OFF_REQ_PROD, OFF_RSP_PROD};

const POLL: Duration = Duration::from_millis(20);

/// The domain's xenstore connection (through `/dev/xen/xenbus`, relative paths from
/// its home) with the few operations a frontend needs.
pub struct Store {
    xs: Client,
}

impl Store {
    pub fn open() -> Result<Store> {
        let xs = Client::connect().context("cannot reach xenstore")?;
        xs.set_read_timeout(Some(Duration::from_secs(10)))
            .context("xenstore read timeout")?;
        Ok(Store { xs })
    }

    /// The value at `path`, or None if it does not exist (or cannot be read).
    pub fn read(&mut self, path: &str) -> Option<String> {
        self.xs
            .read(0, path)
            .ok()
            .map(|v| String::from_utf8_lossy(&v).trim().to_string())
    }

    pub fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.xs
            .write(0, path, value.as_bytes())
            .with_context(|| format!("xenstore write {path}={value}"))
    }

    pub fn list(&mut self, path: &str) -> Vec<String> {
        self.xs.directory(0, path).unwrap_or_default()
    }

    /// `state` below `dir` as a number (None if missing or not a number).
    pub fn state(&mut self, dir: &str) -> Option<u32> {
        self.read(&format!("{dir}/state"))?.parse().ok()
    }

    /// Waits until the first device of `class` (`vbd`, `vif`) whose frontend is still
    /// Initialising appears (one nobody handled yet); returns its directory.
    pub fn wait_fresh_device(&mut self, class: &str, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        loop {
            let base = format!("device/{class}");
            let mut ids: Vec<u32> = self
                .list(&base)
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            ids.sort_unstable();
            for id in ids {
                let dir = format!("{base}/{id}");
                if self.state(&dir) == Some(state::INITIALISING)
                    && self.read(&format!("{dir}/backend")).is_some()
                {
                    return Some(dir);
                }
            }
            if Instant::now() >= end {
                return None;
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Polls `dir`'s state until `done(state)` or the deadline; returns the last state
    /// read (None if it never could be).
    pub fn wait_state(
        &mut self,
        dir: &str,
        until: Instant,
        done: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        loop {
            let s = self.state(dir);
            if s.is_some_and(&done) || Instant::now() >= until {
                return s;
            }
            sleep(POLL);
        }
    }
}

/// One shared ring of the frontend: the granted page, the private indexes, the entry
/// size.
pub struct Ring {
    page: GrantedPage,
    pub front: FrontRing,
    entry: usize,
}

impl Ring {
    /// A zeroed, initialised ring page granted (writable) to `backend`.
    pub fn new(gnt: &Gntalloc, backend: u16, entry: usize) -> Result<Ring> {
        let page = gnt.grant_page(backend, true)?;
        page.write(0, &layout::init_header());
        Ok(Ring {
            page,
            front: FrontRing::new(layout::ring_size(entry)),
            entry,
        })
    }

    pub fn gref(&self) -> u32 {
        self.page.gref()
    }

    /// Fills the next slot with `req` (not yet visible: see [`Ring::publish`]); false
    /// if the ring is full.
    pub fn put(&mut self, req: &[u8]) -> bool {
        assert!(req.len() <= self.entry);
        let Some(i) = self.front.take_request() else {
            return false;
        };
        let off = layout::slot_offset(i, self.entry, self.front.size as usize);
        self.page.write(off, req);
        true
    }

    /// `RING_PUSH_REQUESTS`: the requests before the index.
    pub fn publish(&self) {
        self.publish_raw(self.front.req_prod_pvt);
    }

    /// Writes `req_prod` as given, true or not.
    pub fn publish_raw(&self, req_prod: u32) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.page.write_u32(OFF_REQ_PROD, req_prod);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes the responses published since the last call, `size` bytes each.
    pub fn take_responses(&mut self, size: usize) -> Vec<Vec<u8>> {
        let prod = self.page.read_u32(OFF_RSP_PROD);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let n = self.front.unconsumed_responses(prod);
        let mut out = Vec::new();
        for _ in 0..n {
            let off =
                layout::slot_offset(self.front.rsp_cons, self.entry, self.front.size as usize);
            let mut b = vec![0u8; size];
            self.page.read(off, &mut b);
            out.push(b);
            self.front.rsp_cons = self.front.rsp_cons.wrapping_add(1);
        }
        out
    }
}

/// The device's backend directory and its event channel, once the backend is known.
pub struct Device {
    /// Backend directory, absolute.
    pub be: String,
    pub backend_id: u16,
    pub evtchn: Evtchn,
    pub port: u32,
}

impl Device {
    /// Reads where the backend is, binds an event channel for it, and waits (until
    /// `until`) for the backend to be past Initialising.
    pub fn prepare(xs: &mut Store, fe: &str, until: Instant) -> Result<Device> {
        let be = xs
            .read(&format!("{fe}/backend"))
            .ok_or_else(|| anyhow!("{fe}/backend missing"))?;
        let backend_id: u16 = xs
            .read(&format!("{fe}/backend-id"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("{fe}/backend-id missing or not a domain id"))?;
        let s = xs.wait_state(&be, until, |s| s >= state::INIT_WAIT);
        if s.is_none_or(|s| s < state::INIT_WAIT) {
            bail!("backend {be} stayed in state {s:?}");
        }
        let evtchn = Evtchn::open().context("/dev/xen/evtchn")?;
        let port = evtchn
            .bind_unbound(backend_id)
            .context("event channel for the backend")?;
        Ok(Device {
            be,
            backend_id,
            evtchn,
            port,
        })
    }

    pub fn notify(&self) {
        if let Err(e) = self.evtchn.notify(self.port) {
            eprintln!("fv-hostile-front: notify port {}: {e}", self.port);
        }
    }

    pub fn backend_state(&self, xs: &mut Store) -> Option<u32> {
        xs.state(&self.be)
    }
}
