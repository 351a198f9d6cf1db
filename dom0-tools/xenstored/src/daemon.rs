//! The single-threaded poll loop: Unix-socket clients, domain rings, the event channel device.
//!
//! Each iteration: poll; accept and read sockets; take a pending event-channel port (a ring
//! kick, or `VIRQ_DOM_EXC`); pull requests from every ring; hand complete requests to the
//! [`Store`]; push replies and events out. A connection with [`Quotas::outstanding`] messages
//! waiting to be sent is not read from until its peer catches up, so a slow or hostile peer only
//! stalls itself; one that breaks the protocol (oversized message, corrupt ring indexes,
//! too much unsent output) is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use xenstore::core::{ConnId, ConnKind, DomainHost, DomainStatus, Outgoing, Quotas, Store};
use xenstore::wire::{Decoder, Errno, HEADER_LEN, PAYLOAD_MAX};

use crate::log;
use crate::platform::{Platform, GNTTAB_RESERVED_XENSTORE, VIRQ_DOM_EXC};
use crate::ring::Ring;

/// Unsent bytes after which a connection is dropped (a peer that never reads).
const OUT_HARD_CAP: usize = 1 << 20;
/// Most undecoded input kept per connection.
const IN_CAP: usize = 2 * (HEADER_LEN + PAYLOAD_MAX);

enum Transport {
    Socket(UnixStream),
    Ring {
        ring: Ring,
        port: u32,
        domid: u16,
    },
    /// Introduced without `/dev/xen` (`--no-domain-init`): nothing to serve.
    Detached,
}

struct Conn {
    transport: Transport,
    decoder: Decoder,
    out: VecDeque<Vec<u8>>,
    /// Bytes of `out.front()` already sent.
    sent: usize,
}

impl Conn {
    fn new(transport: Transport) -> Conn {
        Conn {
            transport,
            decoder: Decoder::new(),
            out: VecDeque::new(),
            sent: 0,
        }
    }
    fn out_bytes(&self) -> usize {
        self.out.iter().map(Vec::len).sum::<usize>() - self.sent
    }
}

/// Where to listen.
#[derive(Clone, Debug)]
pub struct Options {
    /// The read-write socket.
    pub socket: PathBuf,
    /// The read-only socket, if wanted.
    pub ro_socket: Option<PathBuf>,
}

/// The daemon's state.
pub struct Daemon {
    store: Store,
    conns: BTreeMap<ConnId, Conn>,
    listeners: Vec<(UnixListener, ConnKind)>,
    platform: Option<Box<dyn Platform>>,
    virq_port: Option<u32>,
}

/// The store's view of the daemon while it handles a request.
struct Host<'a> {
    platform: Option<&'a mut (dyn Platform + 'static)>,
    added: Vec<(ConnId, Transport)>,
    released: Vec<ConnId>,
}

fn io_errno(e: &io::Error) -> Errno {
    match e.raw_os_error() {
        Some(c) => Errno::ALL
            .iter()
            .copied()
            .find(|x| x.code() == c)
            .unwrap_or(Errno::EIO),
        None => Errno::EIO,
    }
}

impl DomainHost for Host<'_> {
    fn introduce(&mut self, conn: ConnId, domid: u16, gfn: u64, port: u32) -> Result<(), Errno> {
        let Some(p) = self.platform.as_deref_mut() else {
            log!("domain {domid} introduced (gfn {gfn:#x}, port {port}); no /dev/xen, not served");
            self.added.push((conn, Transport::Detached));
            return Ok(());
        };
        let page = p.map_grant(domid, GNTTAB_RESERVED_XENSTORE).map_err(|e| {
            log!("domain {domid}: mapping grant {GNTTAB_RESERVED_XENSTORE} failed: {e}");
            io_errno(&e)
        })?;
        let ring = Ring::new(page);
        let local = p.bind_interdomain(domid, port).map_err(|e| {
            log!("domain {domid}: binding to its port {port} failed: {e}");
            io_errno(&e)
        })?;
        if let Err(e) = p.notify(local) {
            log!("domain {domid}: notify on port {local} failed: {e}");
        }
        log!("domain {domid} introduced: gfn {gfn:#x}, remote port {port}, local port {local}");
        self.added.push((
            conn,
            Transport::Ring {
                ring,
                port: local,
                domid,
            },
        ));
        Ok(())
    }

    fn release(&mut self, conn: ConnId, domid: u16) {
        log!("domain {domid} released");
        self.released.push(conn);
    }
}

impl Daemon {
    /// Listens on the sockets (creating their directory, removing stale sockets).
    pub fn new(
        opts: &Options,
        quotas: Quotas,
        platform: Option<Box<dyn Platform>>,
    ) -> anyhow::Result<Daemon> {
        let mut listeners = vec![(listen(&opts.socket)?, ConnKind::Socket)];
        if let Some(ro) = &opts.ro_socket {
            listeners.push((listen(ro)?, ConnKind::SocketReadOnly));
        }
        Ok(Daemon {
            store: Store::new(quotas),
            conns: BTreeMap::new(),
            listeners,
            platform,
            virq_port: None,
        })
    }

    /// Connects dom0's kernel: maps its ring from the xenbus backend device, binds the loopback
    /// port, introduces domain 0, binds `VIRQ_DOM_EXC`, then kicks the kernel's probe thread.
    pub fn init_domains(&mut self) -> anyhow::Result<()> {
        let p = self.platform.as_deref_mut().context("no platform")?;
        let (page, kport) = p
            .local_ring()
            .context("opening dom0's xenbus backend ring")?;
        let ring = Ring::new(page);
        let local = p
            .bind_interdomain(0, kport)
            .context("binding dom0's store port")?;
        let virq = p.bind_virq(VIRQ_DOM_EXC).context("binding VIRQ_DOM_EXC")?;
        self.virq_port = Some(virq);
        let id = self.store.add_connection(0, ConnKind::Ring);
        self.conns.insert(
            id,
            Conn::new(Transport::Ring {
                ring,
                port: local,
                domid: 0,
            }),
        );
        let out = self.store.attach_domain(0, id);
        self.deliver(out);
        let p = self.platform.as_deref_mut().context("no platform")?;
        p.notify(local).context("notifying dom0's store port")?;
        log!(
            "dom0 connected: kernel port {kport}, local port {local}, VIRQ_DOM_EXC on port {virq}"
        );
        Ok(())
    }

    /// Serves until `stop` says so (checked once per wake-up).
    pub fn run(&mut self, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
        let mut busy = false;
        while !stop() {
            self.iterate(busy)?;
            busy = self.has_work();
        }
        Ok(())
    }

    fn has_work(&self) -> bool {
        let limit = self.store.quotas().outstanding;
        self.conns.values().any(|c| {
            c.out.len() < limit
                && (c.decoder.pending() >= HEADER_LEN
                    || matches!(&c.transport, Transport::Ring { ring, .. } if ring.has_requests()))
        })
    }

    /// One round: wait (not at all if `busy`), then do everything that is ready.
    fn iterate(&mut self, busy: bool) -> anyhow::Result<()> {
        #[derive(Clone, Copy)]
        enum Tag {
            Listener(usize),
            Evtchn,
            Conn(ConnId),
        }
        let limit = self.store.quotas().outstanding;
        let mut ready: Vec<(Tag, PollFlags)> = Vec::new();
        {
            let mut fds = Vec::new();
            let mut tags = Vec::new();
            for (i, (l, _)) in self.listeners.iter().enumerate() {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                tags.push(Tag::Listener(i));
            }
            if let Some(p) = self.platform.as_deref() {
                fds.push(PollFd::new(p.evtchn_fd(), PollFlags::POLLIN));
                tags.push(Tag::Evtchn);
            }
            for (id, c) in &self.conns {
                if let Transport::Socket(s) = &c.transport {
                    let mut f = PollFlags::empty();
                    if c.out.len() < limit && c.decoder.pending() < IN_CAP {
                        f |= PollFlags::POLLIN;
                    }
                    if !c.out.is_empty() {
                        f |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(s.as_fd(), f));
                    tags.push(Tag::Conn(*id));
                }
            }
            let timeout = if busy {
                PollTimeout::ZERO
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(e).context("poll"),
            }
            for (fd, tag) in fds.iter().zip(tags) {
                if let Some(r) = fd.revents() {
                    if !r.is_empty() {
                        ready.push((tag, r));
                    }
                }
            }
        }
        for (tag, revents) in ready {
            match tag {
                Tag::Listener(i) => self.accept(i),
                Tag::Evtchn => self.event_channel(),
                Tag::Conn(id) => self.socket_ready(id, revents),
            }
        }
        self.pull_rings();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
        self.flush_all();
        Ok(())
    }

    fn accept(&mut self, i: usize) {
        let (l, kind) = &self.listeners[i];
        match l.accept() {
            Ok((s, _)) => {
                if let Err(e) = s.set_nonblocking(true) {
                    log!("socket client: set_nonblocking: {e}");
                    return;
                }
                let id = self.store.add_connection(0, *kind);
                self.conns.insert(id, Conn::new(Transport::Socket(s)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => log!("accept: {e}"),
        }
    }

    fn socket_ready(&mut self, id: ConnId, revents: PollFlags) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Transport::Socket(s) = &mut c.transport else {
            return;
        };
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let mut buf = [0u8; 8192];
            let room = IN_CAP
                .saturating_sub(c.decoder.pending())
                .clamp(1, buf.len());
            match s.read(&mut buf[..room]) {
                Ok(0) => self.drop_conn(id, None),
                Ok(n) => c.decoder.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => self.drop_conn(id, Some(&format!("read: {e}"))),
            }
        }
    }

    fn event_channel(&mut self) {
        let Some(p) = self.platform.as_deref_mut() else {
            return;
        };
        let port = match p.pending() {
            Ok(port) => port,
            Err(e) => {
                log!("event channel read: {e}");
                return;
            }
        };
        if let Err(e) = p.unmask(port) {
            log!("unmask port {port}: {e}");
        }
        if Some(port) == self.virq_port {
            self.check_domains();
        }
        // Ring kicks need nothing more: every ring is looked at on every round.
    }

    /// After `VIRQ_DOM_EXC`: fire `@releaseDomain` for domains that shut down, release the dead.
    fn check_domains(&mut self) {
        for (domid, _) in self.store.introduced_domains() {
            if domid == 0 {
                continue;
            }
            let Some(p) = self.platform.as_deref_mut() else {
                return;
            };
            let status = match p.domain_status(domid) {
                Ok(s) => s,
                Err(e) => {
                    log!("domain {domid}: status unknown: {e}");
                    continue;
                }
            };
            if status == DomainStatus::Running {
                continue;
            }
            let mut host = Host {
                platform: self.platform.as_deref_mut(),
                added: Vec::new(),
                released: Vec::new(),
            };
            let out = self.store.domain_status(domid, status, &mut host);
            let (added, released) = (host.added, host.released);
            self.apply(added, released);
            self.deliver(out);
        }
    }

    /// Moves request bytes from every ring into its decoder.
    fn pull_rings(&mut self) {
        let limit = self.store.quotas().outstanding;
        let mut bad = Vec::new();
        let mut kick = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let Transport::Ring { ring, port, .. } = &mut c.transport else {
                continue;
            };
            if c.out.len() >= limit {
                continue;
            }
            let room = IN_CAP.saturating_sub(c.decoder.pending());
            if room == 0 {
                continue;
            }
            let mut buf = Vec::new();
            let mut r = Ok(0);
            // The readable span may wrap: at most two copies empty it.
            for _ in 0..2 {
                let want = room - buf.len();
                r = ring.read_requests(&mut buf, want);
                if !matches!(r, Ok(n) if n > 0) || buf.len() >= room {
                    break;
                }
            }
            match r {
                Ok(_) => {
                    if !buf.is_empty() {
                        c.decoder.push(&buf);
                        kick.push(*port);
                    }
                }
                Err(e) => bad.push((*id, e)),
            }
        }
        for port in kick {
            self.notify(port);
        }
        for (id, e) in bad {
            self.drop_conn(id, Some(&e.to_string()));
        }
    }

    fn notify(&mut self, port: u32) {
        if let Some(p) = self.platform.as_deref_mut() {
            if let Err(e) = p.notify(port) {
                log!("notify port {port}: {e}");
            }
        }
    }

    /// Handles the complete requests a connection has, while its output is not backed up.
    fn process(&mut self, id: ConnId) {
        let limit = self.store.quotas().outstanding;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.out.len() >= limit {
                return;
            }
            let msg = match c.decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => return self.drop_conn(id, Some(&e.to_string())),
            };
            let mut host = Host {
                platform: self.platform.as_deref_mut(),
                added: Vec::new(),
                released: Vec::new(),
            };
            let out = self.store.handle(id, &msg, &mut host);
            let (added, released) = (host.added, host.released);
            self.apply(added, released);
            self.deliver(out);
        }
    }

    fn apply(&mut self, added: Vec<(ConnId, Transport)>, released: Vec<ConnId>) {
        for (id, t) in added {
            self.conns.insert(id, Conn::new(t));
        }
        for id in released {
            if let Some(c) = self.conns.remove(&id) {
                self.close_transport(c.transport);
            }
        }
    }

    fn close_transport(&mut self, t: Transport) {
        if let Transport::Ring { port, .. } = t {
            if let Some(p) = self.platform.as_deref_mut() {
                p.unbind(port);
            }
            // Dropping the ring unmaps the page.
        }
    }

    fn deliver(&mut self, out: Outgoing) {
        for (id, m) in out {
            if let Some(c) = self.conns.get_mut(&id) {
                c.out.push_back(m.encode());
            }
        }
    }

    fn flush_all(&mut self) {
        let mut bad = Vec::new();
        let mut kick = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if c.out.is_empty() {
                continue;
            }
            let mut wrote = false;
            let res: Result<(), String> = loop {
                let Some(front) = c.out.front() else {
                    break Ok(());
                };
                let rest = &front[c.sent..];
                let n = match &mut c.transport {
                    Transport::Socket(s) => match s.write(rest) {
                        Ok(n) => n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock | ErrorKind::Interrupted
                            ) =>
                        {
                            0
                        }
                        Err(e) => break Err(format!("write: {e}")),
                    },
                    Transport::Ring { ring, .. } => match ring.write_responses(rest) {
                        Ok(n) => n,
                        Err(e) => break Err(e.to_string()),
                    },
                    Transport::Detached => rest.len(),
                };
                if n == 0 {
                    break Ok(());
                }
                wrote = true;
                c.sent += n;
                if c.sent == front.len() {
                    c.out.pop_front();
                    c.sent = 0;
                }
            };
            match res {
                Err(e) => bad.push((*id, e)),
                Ok(()) if c.out_bytes() > OUT_HARD_CAP => {
                    bad.push((*id, "peer does not read its replies".into()))
                }
                Ok(()) => {}
            }
            if let (true, Transport::Ring { port, .. }) = (wrote, &c.transport) {
                kick.push(*port);
            }
        }
        for port in kick {
            self.notify(port);
        }
        for (id, e) in bad {
            self.drop_conn(id, Some(&e));
        }
    }

    /// Drops a connection (`why` is logged when it misbehaved).
    fn drop_conn(&mut self, id: ConnId, why: Option<&str>) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(why) = why {
            match &c.transport {
                Transport::Ring { domid, .. } => log!("domain {domid}: dropping its ring: {why}"),
                _ => log!("socket client {id}: dropped: {why}"),
            }
        }
        self.store.remove_connection(id);
        self.close_transport(c.transport);
    }
}

fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests;
