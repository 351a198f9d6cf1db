//! `evtchn-pingpong`: two domains bounce an interdomain event channel back and forth.
//!
//! Command line: `role=ping peer=<domid> [count=N] [wait=hlt|poll] [loopback=N] [timeout=S]`
//! in one domain, `role=pong peer=<domid> [count=N] [wait=hlt|poll] [timeout=S]` in the other (same
//! `count`; default 10000, timeout 60 s of system time for the whole run).
//!
//! Rendezvous without xenstore:
//! 1. ping: `EVTCHNOP_alloc_unbound(DOMID_SELF, remote = peer)` and prints the port;
//! 2. pong: tries `EVTCHNOP_bind_interdomain(peer, p)` for p = 1..=[`MAX_REMOTE_PORT`]
//!    (`-ESRCH` while the peer does not exist, `-EINVAL` for ports that are not unbound
//!    for it), `SCHEDOP_yield` between rounds, until one succeeds; it checks with
//!    `EVTCHNOP_status` that its port is interdomain to (peer, p), clears its own pending bit
//!    (Xen sets it on bind: "we may have lost notifications") and sends one *hello*;
//! 3. ping: polls `EVTCHNOP_status` (yielding) until its port is interdomain to the peer,
//!    then waits for the hello.
//!
//! Exchange: `count` rounds, strictly alternating: ping sends and waits for the reply; pong
//! waits, then replies. Each side clears the pending bit *before* it sends, so no event can
//! coalesce with another and the counts must match exactly. Finally each side waits
//! [`STRAY_WINDOW_NS`] for events nobody sent. ping times each round trip with the pvclock;
//! pong times the intervals between pings (the same round trip, seen from its side). Each
//! prints `mean round trip X ns (min X ns, median X ns, max X ns)` (the median over the
//! first [`MAX_SAMPLES`]).
//!
//! `role=loopback [count=N] [timeout=S]` runs alone: the reference for the interdomain round
//! trip (`cargo xtask bench`). It binds a channel to itself (`alloc_unbound(DOMID_SELF,
//! remote = DOMID_SELF)` = port a, `bind_interdomain(DOMID_SELF, a)` = port b, b masked so
//! only `SCHEDOP_poll` sees it) and times `count` round trips made of the same steps as one
//! ping/pong round trip, in one domain: send on a (ping), `SCHEDOP_poll` on b (returns at
//! once: b is pending), clear b, send on b (pong), then ping's wait: `sti; hlt` woken by the
//! callback vector (a is already pending, so the vCPU never blocks) and a scan that finds
//! a. What it lacks against the pair is the two domain switches (each with the blocking of
//! one side and the wake-up of the other).
//!
//! `role=ping loopback=N` (with `wait=hlt`) also opens such a pair in ping's domain and,
//! after every N round trips with pong, makes N loopback round trips: both figures come
//! from the same run under the same host load, and ping ends with `ping: interdomain
//! median X ns, loopback median Y ns` (after its own and the loopback's result lines).
//!
//! Waiting: `wait=hlt` (ping's default) halts with `sti; hlt` and is woken by the callback
//! vector (a bound VIRQ_TIMER armed at the overall deadline bounds the wait);
//! `wait=poll` (pong's default) uses `SCHEDOP_poll` on the port with the deadline as
//! timeout, with no callback vector registered.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::evtchn;
use guest_rt::hypercall::{describe, sched_poll, sched_yield, set_timer_op};
use guest_rt::xen_abi::event_channel::{EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND};
use guest_rt::xen_abi::xen::DOMID_SELF;
use guest_rt::{arch, ensure, fail, println, pvclock, Fail, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// pong tries the peer's ports 1..=MAX_REMOTE_PORT.
const MAX_REMOTE_PORT: u32 = 8;
/// How long each side waits at the end for events nobody sent.
const STRAY_WINDOW_NS: u64 = 100_000_000;
/// Round trips kept for the median (the first this many of a run).
const MAX_SAMPLES: usize = 16_384;
static mut SAMPLES: [u64; MAX_SAMPLES] = [0; MAX_SAMPLES];
/// The same for the loopback's round trips.
static mut LOOPBACK_SAMPLES: [u64; MAX_SAMPLES] = [0; MAX_SAMPLES];

/// Round-trip times: mean, min, max over all, median over the first [`MAX_SAMPLES`].
struct Stats {
    samples: &'static mut [u64; MAX_SAMPLES],
    n: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl Stats {
    /// Call once per run (ping and pong make one; the loopback uses [`Stats::loopback`]).
    fn new() -> Self {
        // SAFETY: one vCPU, and each run calls this once, so this is the only reference
        // to SAMPLES.
        Self::with(unsafe { &mut *core::ptr::addr_of_mut!(SAMPLES) })
    }

    /// Call once per run (by [`Loopback::open`]).
    fn loopback() -> Self {
        // SAFETY: one vCPU, and each run opens at most one loopback, so this is the only
        // reference to LOOPBACK_SAMPLES.
        Self::with(unsafe { &mut *core::ptr::addr_of_mut!(LOOPBACK_SAMPLES) })
    }

    fn with(samples: &'static mut [u64; MAX_SAMPLES]) -> Self {
        Stats {
            samples,
            n: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn add(&mut self, ns: u64) {
        if let Some(slot) = self.samples.get_mut(self.n as usize) {
            *slot = ns;
        }
        self.n += 1;
        self.sum += ns;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    fn mean(&self) -> u64 {
        self.sum.checked_div(self.n).unwrap_or(0)
    }

    fn median(&mut self) -> u64 {
        let kept = &mut self.samples[..(self.n as usize).min(MAX_SAMPLES)];
        if kept.is_empty() {
            return 0;
        }
        kept.sort_unstable();
        kept[kept.len() / 2]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Hlt,
    Poll,
}

struct Side {
    port: u32,
    wait: Wait,
    deadline: u64,
    /// Events consumed on `port` so far (hlt mode: counted by `evtchn::scan`).
    received: u32,
}

impl Side {
    /// Waits for the next event on the port; fails at the deadline.
    fn next_event(&mut self, what: &str) -> TestResult {
        match self.wait {
            Wait::Hlt => {
                let seen = self.received;
                let mut late = false;
                evtchn::wait_until(|| {
                    late = pvclock::now_ns().is_none_or(|t| t >= self.deadline);
                    late || evtchn::count(self.port) > seen
                });
                self.received = evtchn::count(self.port);
                if self.received == seen {
                    fail!("timed out waiting for {what} on port {}", self.port);
                }
            }
            Wait::Poll => loop {
                if evtchn::test_and_clear(self.port) {
                    self.received += 1;
                    break;
                }
                if evtchn::now()? >= self.deadline {
                    fail!("timed out waiting for {what} on port {}", self.port);
                }
                let rc = sched_poll(&[self.port], self.deadline);
                ensure!(rc == 0, "SCHEDOP_poll returned {}", describe(rc));
            },
        }
        Ok(())
    }

    fn send(&self) -> TestResult {
        let rc = evtchn::send(self.port);
        ensure!(
            rc == 0,
            "EVTCHNOP_send({}) returned {}",
            self.port,
            describe(rc)
        );
        Ok(())
    }

    /// Events that arrive within [`STRAY_WINDOW_NS`] from now (none are expected).
    fn strays(&mut self) -> Result<u32, Fail> {
        let until = evtchn::now()? + STRAY_WINDOW_NS;
        match self.wait {
            Wait::Hlt => {
                evtchn::sleep_until(until)?;
                evtchn::scan();
                Ok(evtchn::count(self.port) - self.received)
            }
            Wait::Poll => {
                while evtchn::now()? < until && !evtchn::is_pending(self.port) {
                    sched_poll(&[self.port], until);
                }
                Ok(u32::from(evtchn::test_and_clear(self.port)))
            }
        }
    }
}

fn test_main(si: &StartInfo) -> TestResult {
    let role = si.arg("role").unwrap_or("");
    let count = si.arg_u64("count", 10_000)? as u32;
    let timeout_s = si.arg_u64("timeout", 60)?;
    if role == "loopback" {
        return loopback(count, timeout_s);
    }
    let Some(peer) = si.arg("peer").and_then(guest_rt::start_info::parse_u64) else {
        fail!("command line needs peer=<domid>");
    };
    let peer = peer as u16;
    let interleave = si.arg_u64("loopback", 0)? as u32;
    let wait = match si.arg("wait") {
        Some("hlt") => Wait::Hlt,
        Some("poll") => Wait::Poll,
        None if role == "ping" => Wait::Hlt,
        None => Wait::Poll,
        Some(other) => fail!("wait={other}: expected hlt or poll"),
    };
    ensure!(
        interleave == 0 || (role == "ping" && wait == Wait::Hlt),
        "loopback=N is for role=ping with wait=hlt"
    );
    let me = arch::xen_vcpu_and_domid().map(|(_, d)| d);
    if let Some(me) = me {
        ensure!(me != peer, "peer={peer} is this domain itself");
    }

    if wait == Wait::Hlt {
        evtchn::init_with_timer()?;
    } else {
        // Only the bitmaps are needed; no callback vector, so events never interrupt.
        let rc = pvclock::map_shared_info();
        ensure!(
            rc == 0,
            "XENMEM_add_to_physmap(shared_info) returned {}",
            describe(rc)
        );
    }
    let start = evtchn::now()?;
    let deadline = start + timeout_s * 1_000_000_000;
    println!(
        "{role}: domain {}, peer {peer}, {count} round trips, waiting with {}",
        me.map_or(-1, i32::from),
        if wait == Wait::Hlt {
            "sti; hlt"
        } else {
            "SCHEDOP_poll"
        }
    );
    match role {
        "ping" => ping(peer, count, wait, deadline, interleave),
        "pong" => pong(peer, count, wait, deadline),
        _ => fail!("role={role}: expected ping, pong or loopback"),
    }
}

/// `interleave` > 0: after every `interleave` round trips with pong, as many loopback round
/// trips in this domain (see the module documentation).
fn ping(peer: u16, count: u32, wait: Wait, deadline: u64, interleave: u32) -> TestResult {
    let port = evtchn::alloc_unbound(DOMID_SELF, peer);
    ensure!(
        port > 0,
        "EVTCHNOP_alloc_unbound(remote {peer}) returned {}",
        describe(port)
    );
    let port = port as u32;
    println!("ping: port {port} unbound for domain {peer}");

    // Wait for pong to bind it.
    let (rdom, rport) = loop {
        let st = match evtchn::status(DOMID_SELF, port) {
            Ok(st) => st,
            Err(rc) => fail!("EVTCHNOP_status({port}) returned {}", describe(rc)),
        };
        match st.status {
            EVTCHNSTAT_INTERDOMAIN => break st.interdomain(),
            EVTCHNSTAT_UNBOUND if evtchn::now()? < deadline => {
                sched_yield();
            }
            EVTCHNSTAT_UNBOUND => fail!("domain {peer} never bound port {port}"),
            s => fail!("port {port} went from unbound to status {s}"),
        }
    };
    println!("ping: port {port} bound by domain {rdom} port {rport}");
    ensure!(
        rdom == peer,
        "port {port} was bound by domain {rdom}, not {peer}"
    );

    let mut side = Side {
        port,
        wait,
        deadline,
        received: 0,
    };
    if wait == Wait::Hlt {
        // The overall deadline wakes a halt that would otherwise last forever.
        ensure!(
            set_timer_op(deadline) == 0,
            "set_timer_op({deadline}) failed"
        );
    }
    side.next_event("pong's hello")?;
    ensure!(
        side.received == 1,
        "{} events instead of one hello",
        side.received
    );
    println!("ping: hello received");

    let mut lo = match interleave {
        0 => None,
        _ => Some(Loopback::open(deadline)?),
    };
    let block = if interleave > 0 { interleave } else { count };
    let mut stats = Stats::new();
    let mut sent = 0u32;
    let before = side.received;
    let mut done = 0;
    while done < count {
        let n = block.min(count - done);
        for i in done..done + n {
            let t0 = evtchn::now()?;
            side.send()?;
            sent += 1;
            side.next_event("a reply")
                .map_err(|e| Fail::new(format_args!("round trip {i}: {e}")))?;
            stats.add(evtchn::now()? - t0);
        }
        if let Some(lo) = lo.as_mut() {
            for i in done..done + n {
                lo.round_trip(i)?;
            }
        }
        done += n;
    }
    let strays = side.strays()?;
    let received = side.received - before + strays;
    set_timer_op(0);
    report("ping", received, sent, count, strays, &mut stats)?;
    if let Some(lo) = lo.as_mut() {
        let loopback = lo.finish("loopback", count)?;
        println!(
            "ping: interdomain median {} ns, loopback median {loopback} ns (interleaved in \
             blocks of {interleave})",
            stats.median()
        );
    }
    Ok(())
}

fn pong(peer: u16, count: u32, wait: Wait, deadline: u64) -> TestResult {
    let mut tries = 0u32;
    let mut last = 0i64;
    let (port, remote_port) = 'found: loop {
        for p in 1..=MAX_REMOTE_PORT {
            tries += 1;
            let rc = evtchn::bind_interdomain(peer, p);
            if rc >= 0 {
                break 'found (rc as u32, p);
            }
            last = rc;
        }
        if evtchn::now()? >= deadline {
            fail!(
                "no unbound port of domain {peer} in 1..={MAX_REMOTE_PORT} after {tries} \
                 tries (last EVTCHNOP_bind_interdomain: {})",
                describe(last)
            );
        }
        sched_yield();
    };
    println!("pong: bound domain {peer} port {remote_port} as local port {port}");
    match evtchn::status(DOMID_SELF, port) {
        Ok(st) if st.status == EVTCHNSTAT_INTERDOMAIN => {
            ensure!(
                st.interdomain() == (peer, remote_port),
                "status says port {port} goes to {:?}, not ({peer}, {remote_port})",
                st.interdomain()
            );
        }
        Ok(st) => fail!("new port {port} has status {}, not interdomain", st.status),
        Err(rc) => fail!("EVTCHNOP_status({port}) returned {}", describe(rc)),
    }
    // Xen marks the new local port pending; drop that before the protocol starts.
    let was = evtchn::test_and_clear(port);
    if wait == Wait::Hlt {
        evtchn::scan();
        evtchn::take_count(port);
        ensure!(
            set_timer_op(deadline) == 0,
            "set_timer_op({deadline}) failed"
        );
    }
    println!(
        "pong: local port {} pending after the bind",
        if was { "was" } else { "was not" }
    );

    let mut side = Side {
        port,
        wait,
        deadline,
        received: 0,
    };
    side.send()?;
    println!("pong: hello sent");

    let mut stats = Stats::new();
    let mut sent = 0u32;
    let mut last_ping = None;
    for i in 0..count {
        side.next_event("a ping")
            .map_err(|e| Fail::new(format_args!("round trip {i}: {e}")))?;
        let now = evtchn::now()?;
        if let Some(prev) = last_ping.replace(now) {
            stats.add(now - prev);
        }
        side.send()?;
        sent += 1;
    }
    let strays = side.strays()?;
    let received = side.received + strays;
    set_timer_op(0);
    report("pong", received, sent, count, strays, &mut stats)
}

/// `role=loopback`: see the module documentation.
fn loopback(count: u32, timeout_s: u64) -> TestResult {
    evtchn::init_with_timer()?;
    let start = evtchn::now()?;
    let deadline = start + timeout_s * 1_000_000_000;
    let me = arch::xen_vcpu_and_domid().map_or(-1, |(_, d)| i32::from(d));
    println!("loopback: domain {me}, {count} round trips, waiting with sti; hlt");
    let mut lo = Loopback::open(deadline)?;
    for i in 0..count {
        lo.round_trip(i)?;
    }
    lo.finish("loopback", count).map(|_| ())
}

/// A channel bound to itself (see the module documentation); needs the callback vector
/// ([`evtchn::init_with_timer`]).
struct Loopback {
    /// ping's end (unmasked: the upcall's scan counts it).
    a: u32,
    /// pong's end (masked: only `SCHEDOP_poll` and `test_and_clear` see it).
    b: u32,
    deadline: u64,
    received: u32,
    sent: u32,
    stats: Stats,
}

impl Loopback {
    /// Binds the pair and arms the one-shot timer at `deadline`. Once per run.
    fn open(deadline: u64) -> Result<Self, Fail> {
        let a = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
        ensure!(
            a > 0,
            "EVTCHNOP_alloc_unbound(remote self) returned {}",
            describe(a)
        );
        let a = a as u32;
        let b = evtchn::bind_interdomain(DOMID_SELF, a);
        ensure!(
            b > 0,
            "EVTCHNOP_bind_interdomain(self, {a}) returned {}",
            describe(b)
        );
        let b = b as u32;
        // Masked, so the upcall's scan never consumes it, as with pong's port in the pair.
        // (Interrupts are off outside halts, so nothing scans before this.)
        evtchn::set_masked(b, true);
        let me = arch::xen_vcpu_and_domid().map(|(_, d)| d);
        for (port, other) in [(a, b), (b, a)] {
            match evtchn::status(DOMID_SELF, port) {
                Ok(st) if st.status == EVTCHNSTAT_INTERDOMAIN => {
                    let (dom, p) = st.interdomain();
                    ensure!(
                        p == other && me.is_none_or(|m| m == dom),
                        "status says port {port} goes to ({dom}, {p}), not (self, {other})"
                    );
                }
                Ok(st) => fail!("port {port} has status {}, not interdomain", st.status),
                Err(rc) => fail!("EVTCHNOP_status({port}) returned {}", describe(rc)),
            }
        }
        println!("loopback: port {a} bound to own port {b}");
        // Xen marks the newly bound port pending; drop that before the round trips.
        evtchn::test_and_clear(b);
        evtchn::scan();
        evtchn::take_count(a);
        ensure!(
            set_timer_op(deadline) == 0,
            "set_timer_op({deadline}) failed"
        );
        Ok(Loopback {
            a,
            b,
            deadline,
            received: 0,
            sent: 0,
            stats: Stats::loopback(),
        })
    }

    /// One timed round trip: ping's send, pong's poll, consume and reply, ping's wait.
    fn round_trip(&mut self, i: u32) -> TestResult {
        let (a, b) = (self.a, self.b);
        let t0 = evtchn::now()?;
        let rc = evtchn::send(a);
        ensure!(rc == 0, "EVTCHNOP_send({a}) returned {}", describe(rc));
        self.sent += 1;
        // pong's side: poll (returns at once: b is pending), consume, reply.
        let rc = sched_poll(&[b], self.deadline);
        ensure!(rc == 0, "SCHEDOP_poll returned {}", describe(rc));
        ensure!(
            evtchn::test_and_clear(b),
            "loopback round trip {i}: port {b} not pending after the send on {a}"
        );
        let rc = evtchn::send(b);
        ensure!(rc == 0, "EVTCHNOP_send({b}) returned {}", describe(rc));
        // ping's wait: the callback vector ends the halt at once, then the scan.
        arch::sti_hlt_cli();
        let deadline = self.deadline;
        let seen = self.received;
        evtchn::wait_until(|| {
            pvclock::now_ns().is_none_or(|t| t >= deadline) || evtchn::count(a) > seen
        });
        self.received = evtchn::count(a);
        if self.received == seen {
            fail!("loopback round trip {i}: timed out waiting for the event on port {a}");
        }
        self.stats.add(evtchn::now()? - t0);
        Ok(())
    }

    /// Waits [`STRAY_WINDOW_NS`] for strays, then prints the result lines as `role`;
    /// returns the median round trip.
    fn finish(&mut self, role: &str, count: u32) -> Result<u64, Fail> {
        let until = evtchn::now()? + STRAY_WINDOW_NS;
        evtchn::sleep_until(until)?;
        evtchn::scan();
        let strays =
            evtchn::count(self.a) - self.received + u32::from(evtchn::test_and_clear(self.b));
        set_timer_op(0);
        let received = self.received + strays;
        report(role, received, self.sent, count, strays, &mut self.stats)?;
        Ok(self.stats.median())
    }
}

/// The result lines: counts, then `mean round trip X ns (min X ns, median X ns, max X ns)`
/// (ping and loopback time `count` round trips, pong the `count - 1` intervals between
/// pings).
fn report(
    role: &str,
    received: u32,
    sent: u32,
    count: u32,
    strays: u32,
    stats: &mut Stats,
) -> TestResult {
    println!("{role}: received {received} events, sent {sent}");
    let min = if stats.n == 0 { 0 } else { stats.min };
    println!(
        "{role}: mean round trip {} ns (min {min} ns, median {} ns, max {} ns)",
        stats.mean(),
        stats.median(),
        stats.max
    );
    ensure!(
        strays == 0,
        "{strays} event(s) arrived after the last round trip"
    );
    ensure!(
        received == count && sent == count,
        "received {received} and sent {sent}, expected {count} each"
    );
    Ok(())
}
