//! The store: pure state and request handling, no I/O.
//!
//! `xenstored` owns one [`Store`], registers a connection per socket client and per domain ring,
//! feeds it each complete request with [`Store::handle`] and sends the returned messages
//! (the reply first, then watch events, possibly to other connections). Mapping a domain's ring
//! is the daemon's business: the store asks for it through [`DomainHost`].
//!
//! Semantics follow Xen's `tools/xenstored` (see `docs/misc/xenstore.txt`): dom0 is privileged;
//! everyone else is subject to node permissions and to per-domain quotas ([`Quotas`]).

pub mod path;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::BTreeMap;

pub use tree::Node;
use tree::{Event, Tree, Tx, View};

use crate::perms::{access_for, Access, Perm};
use crate::wire::{join_strings, split_strings, Errno, Message, MsgType, PAYLOAD_MAX};

/// Identifies a connection to the store.
pub type ConnId = u32;

/// First reserved domid (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// Special watch fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch fired when a domain is released, shuts down or dies.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Per-domain limits for unprivileged domains (Xen's defaults in `tools/xenstored/core.c`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`ENOSPC` beyond).
    pub nodes: usize,
    /// Largest value a domain may write (`ENOSPC` beyond).
    pub entry_size: usize,
    /// Watches per domain (`E2BIG` beyond).
    pub watches: usize,
    /// Open transactions per domain (`ENOSPC` beyond).
    pub transactions: usize,
    /// Permission entries per node besides the owner (`ENOSPC` beyond).
    pub perms_per_node: usize,
    /// Path length below the domain's home (`EINVAL` beyond).
    pub path_len: usize,
    /// Requests a connection may have waiting for their replies to be sent (the daemon stops
    /// reading from it meanwhile).
    pub outstanding: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            nodes: 1000,
            entry_size: 2048,
            watches: 128,
            transactions: 10,
            perms_per_node: 5,
            path_len: crate::wire::REL_PATH_MAX,
            outstanding: 20,
        }
    }
}

/// How a connection reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// A dom0 process on the read-write Unix socket.
    Socket,
    /// A dom0 process on the read-only socket: modifying requests get `EROFS`.
    SocketReadOnly,
    /// A domain's shared ring (dom0's kernel included).
    Ring,
}

/// What the toolstack library reports about an introduced domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainStatus {
    /// Alive.
    Running,
    /// Shut down, not yet destroyed.
    Shutdown,
    /// Dying or gone.
    Gone,
}

/// The daemon side of INTRODUCE and RELEASE.
pub trait DomainHost {
    /// Maps domain `domid`'s ring (page `gfn`, reached via its grant ref 1) and binds to its event
    /// channel `port`; the ring will be served as connection `conn`.
    fn introduce(&mut self, conn: ConnId, domid: u16, gfn: u64, port: u32) -> Result<(), Errno>;
    /// Unmaps and unbinds what `introduce` set up for `conn` (if anything is still set up).
    fn release(&mut self, conn: ConnId, domid: u16);
}

/// A host without domains: INTRODUCE records the domain, with no ring to serve.
#[derive(Debug, Default)]
pub struct NoRings;

impl DomainHost for NoRings {
    fn introduce(&mut self, _: ConnId, _: u16, _: u64, _: u32) -> Result<(), Errno> {
        Ok(())
    }
    fn release(&mut self, _: ConnId, _: u16) {}
}

#[derive(Debug)]
struct Watch {
    /// Absolute path or special name.
    abs: String,
    token: Vec<u8>,
    relative: bool,
}

#[derive(Debug)]
struct Conn {
    domid: u16,
    kind: ConnKind,
    watches: Vec<Watch>,
    txs: BTreeMap<u32, Tx>,
    next_tx: u32,
}

#[derive(Debug)]
struct Domain {
    conn: Option<ConnId>,
    shutdown_notified: bool,
}

/// Messages to send: `(connection, message)`, in order.
pub type Outgoing = Vec<(ConnId, Message)>;

/// The whole store.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    conns: BTreeMap<ConnId, Conn>,
    domains: BTreeMap<u16, Domain>,
    special: BTreeMap<String, Vec<Perm>>,
    quotas: Quotas,
    next_conn: ConnId,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(Quotas::default())
    }
}

/// Request types only dom0 may send (`XS_FLAG_PRIV` in Xen).
fn privileged_only(t: MsgType) -> bool {
    matches!(
        t,
        MsgType::Control
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::IsDomainIntroduced
            | MsgType::Resume
            | MsgType::SetTarget
    )
}

/// Request types that modify the store.
fn modifies(t: MsgType) -> bool {
    matches!(
        t,
        MsgType::Write
            | MsgType::Mkdir
            | MsgType::Rm
            | MsgType::SetPerms
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::Resume
            | MsgType::SetTarget
            | MsgType::TransactionStart
            | MsgType::TransactionEnd
    )
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

fn one_arg(payload: &[u8]) -> Result<&[u8], Errno> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if body.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(body)
}

fn parse_num<T: std::str::FromStr>(b: &[u8]) -> Result<T, Errno> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Errno::EINVAL)
}

fn parse_domid(b: &[u8]) -> Result<u16, Errno> {
    let d: u32 = parse_num(b)?;
    u16::try_from(d).map_err(|_| Errno::EINVAL)
}

struct Ctx {
    domid: u16,
    privileged: bool,
}

impl Ctx {
    fn access(&self, perms: &[Perm]) -> Access {
        if self.privileged {
            Access::Both
        } else {
            access_for(perms, self.domid)
        }
    }
    fn can_read(&self, perms: &[Perm]) -> bool {
        self.access(perms).can_read()
    }
    fn can_write(&self, perms: &[Perm]) -> bool {
        self.access(perms).can_write()
    }
}

impl Store {
    /// A store holding Xen's initial tree: `/`, `/local`, `/local/domain`, `/tool` (all `n0`) and
    /// `/local/domain/0` with `name = Domain-0` and `domid = 0`.
    pub fn new(quotas: Quotas) -> Store {
        let n0 = vec![Perm::new(0, Access::None)];
        let mut s = Store {
            tree: Tree::new(n0.clone()),
            conns: BTreeMap::new(),
            domains: BTreeMap::new(),
            special: [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
                .iter()
                .map(|n| (n.to_string(), n0.clone()))
                .collect(),
            quotas,
            next_conn: 1,
        };
        let mut v = View {
            tree: &mut s.tree,
            tx: None,
            events: Vec::new(),
        };
        let dom0 = Ctx {
            domid: 0,
            privileged: true,
        };
        for (p, val) in [
            ("/local/domain/0/name", &b"Domain-0"[..]),
            ("/local/domain/0/domid", b"0"),
            ("/tool", b""),
        ] {
            write_node(&mut v, &dom0, &s.quotas, p, val, false).expect("initial tree");
        }
        s
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Registers a connection of domain `domid` (0 for dom0 processes and dom0's kernel).
    pub fn add_connection(&mut self, domid: u16, kind: ConnKind) -> ConnId {
        let id = self.alloc_conn();
        self.conns.insert(
            id,
            Conn {
                domid,
                kind,
                watches: Vec::new(),
                txs: BTreeMap::new(),
                next_tx: 1,
            },
        );
        id
    }

    fn alloc_conn(&mut self) -> ConnId {
        loop {
            let id = self.next_conn;
            self.next_conn = self.next_conn.wrapping_add(1).max(1);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Marks `domid` introduced and served on `conn` (used for dom0, whose ring the daemon sets up
    /// itself), firing `@introduceDomain`.
    pub fn attach_domain(&mut self, domid: u16, conn: ConnId) -> Outgoing {
        self.domains.insert(
            domid,
            Domain {
                conn: Some(conn),
                shutdown_notified: false,
            },
        );
        let mut out = Vec::new();
        self.fire_special(INTRODUCE_DOMAIN, &mut out);
        out
    }

    /// Forgets a connection (closed socket, or a ring that misbehaved): its watches and open
    /// transactions go. A domain whose ring it was stays introduced until released or gone.
    pub fn remove_connection(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        for d in self.domains.values_mut() {
            if d.conn == Some(conn) {
                d.conn = None;
            }
        }
    }

    /// The domain a connection belongs to.
    pub fn connection_domid(&self, conn: ConnId) -> Option<u16> {
        self.conns.get(&conn).map(|c| c.domid)
    }

    /// Introduced domains and the connection serving each.
    pub fn introduced_domains(&self) -> Vec<(u16, Option<ConnId>)> {
        self.domains.iter().map(|(d, s)| (*d, s.conn)).collect()
    }

    /// Whether `domid` is introduced.
    pub fn is_introduced(&self, domid: u16) -> bool {
        self.domains.contains_key(&domid)
    }

    /// A committed node, for inspection.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.tree.get(path)
    }

    /// Committed nodes in all.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Reacts to what the toolstack reports about an introduced domain: `@releaseDomain` fires
    /// once on shutdown, and when it is gone the domain is released.
    pub fn domain_status(
        &mut self,
        domid: u16,
        status: DomainStatus,
        host: &mut dyn DomainHost,
    ) -> Outgoing {
        let mut out = Vec::new();
        match status {
            DomainStatus::Running => {}
            DomainStatus::Shutdown => {
                if let Some(d) = self.domains.get_mut(&domid) {
                    if !d.shutdown_notified {
                        d.shutdown_notified = true;
                        self.fire_special(RELEASE_DOMAIN, &mut out);
                    }
                }
            }
            DomainStatus::Gone => {
                if self.domains.contains_key(&domid) {
                    self.release_domain(domid, host, &mut out);
                }
            }
        }
        out
    }

    fn release_domain(&mut self, domid: u16, host: &mut dyn DomainHost, out: &mut Outgoing) {
        if let Some(d) = self.domains.remove(&domid) {
            if let Some(c) = d.conn {
                self.conns.remove(&c);
                host.release(c, domid);
            }
            self.fire_special(RELEASE_DOMAIN, out);
        }
    }

    /// Handles one request from `conn`: returns its reply (first) and any watch events.
    pub fn handle(&mut self, conn: ConnId, msg: &Message, host: &mut dyn DomainHost) -> Outgoing {
        let mut out = Vec::new();
        let reply = match self.dispatch(conn, msg, host, &mut out) {
            Ok(payload) => {
                let ty = msg.msg_type().unwrap_or(MsgType::Error);
                Message::new(ty, msg.req_id, msg.tx_id, payload)
            }
            Err(e) => Message::error_reply(msg.req_id, msg.tx_id, e),
        };
        out.insert(0, (conn, reply));
        out
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        msg: &Message,
        host: &mut dyn DomainHost,
        out: &mut Outgoing,
    ) -> Result<Vec<u8>, Errno> {
        let (domid, kind) = {
            let c = self.conns.get(&conn).ok_or(Errno::EINVAL)?;
            (c.domid, c.kind)
        };
        let ctx = Ctx {
            domid,
            privileged: domid == 0,
        };
        let ty = msg.msg_type().ok_or(Errno::ENOSYS)?;
        if privileged_only(ty) && !ctx.privileged {
            return Err(Errno::EACCES);
        }
        if kind == ConnKind::SocketReadOnly && modifies(ty) {
            return Err(Errno::EROFS);
        }
        let pq = (!ctx.privileged).then_some(self.quotas.path_len);
        let canon = |raw: &[u8]| path::canonicalize(domid, raw, pq);
        let p = &msg.payload;
        match ty {
            MsgType::Read => {
                let path = canon(one_arg(p)?)?;
                self.with_view(conn, msg.tx_id, |v| {
                    let n = readable_node(v, &ctx, &path)?;
                    Ok(n.value)
                })
                .map(|(r, _)| r)
            }
            MsgType::Directory => {
                let path = canon(one_arg(p)?)?;
                self.with_view(conn, msg.tx_id, |v| {
                    let n = readable_node(v, &ctx, &path)?;
                    let r = join_strings(&n.children);
                    if r.len() > PAYLOAD_MAX {
                        return Err(Errno::E2BIG);
                    }
                    Ok(r)
                })
                .map(|(r, _)| r)
            }
            MsgType::DirectoryPart => {
                let args = split_strings(p);
                let [path, off] = args[..] else {
                    return Err(Errno::EINVAL);
                };
                let path = canon(path)?;
                let off: usize = parse_num(off)?;
                self.with_view(conn, msg.tx_id, |v| {
                    let n = readable_node(v, &ctx, &path)?;
                    directory_part(&n, off)
                })
                .map(|(r, _)| r)
            }
            MsgType::Write => {
                let nul = p.iter().position(|b| *b == 0).ok_or(Errno::EINVAL)?;
                let path = canon(&p[..nul])?;
                let value = &p[nul + 1..];
                let q = self.quotas.clone();
                self.with_view(conn, msg.tx_id, |v| {
                    write_node(v, &ctx, &q, &path, value, false).map(|_| ok())
                })
                .map(|r| self.fire_pending(r, out))
            }
            MsgType::Mkdir => {
                let path = canon(one_arg(p)?)?;
                let q = self.quotas.clone();
                self.with_view(conn, msg.tx_id, |v| {
                    write_node(v, &ctx, &q, &path, b"", true).map(|_| ok())
                })
                .map(|r| self.fire_pending(r, out))
            }
            MsgType::Rm => {
                let path = canon(one_arg(p)?)?;
                self.with_view(conn, msg.tx_id, |v| rm_node(v, &ctx, &path).map(|_| ok()))
                    .map(|r| self.fire_pending(r, out))
            }
            MsgType::GetPerms => {
                let raw = one_arg(p)?;
                if let Some(s) = path::valid_special(raw) {
                    let perms = self.special.get(&s).ok_or(Errno::ENOENT)?;
                    if !ctx.can_read(perms) {
                        return Err(Errno::EACCES);
                    }
                    return Ok(perms_payload(perms));
                }
                let path = canon(raw)?;
                self.with_view(conn, msg.tx_id, |v| {
                    Ok(perms_payload(&readable_node(v, &ctx, &path)?.perms))
                })
                .map(|(r, _)| r)
            }
            MsgType::SetPerms => {
                let args = split_strings(p);
                let (raw, perm_args) = args.split_first().ok_or(Errno::EINVAL)?;
                let perms = perm_args
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(|a| Perm::parse(a).ok_or(Errno::EINVAL))
                    .collect::<Result<Vec<_>, _>>()?;
                if perms.is_empty() {
                    return Err(Errno::EINVAL);
                }
                if !ctx.privileged && perms.len() - 1 > self.quotas.perms_per_node {
                    return Err(Errno::ENOSPC);
                }
                if let Some(s) = path::valid_special(raw) {
                    if !ctx.privileged {
                        return Err(Errno::EACCES);
                    }
                    let slot = self.special.get_mut(&s).ok_or(Errno::ENOENT)?;
                    *slot = perms;
                    return Ok(ok());
                }
                let path = canon(raw)?;
                self.with_view(conn, msg.tx_id, |v| {
                    set_perms(v, &ctx, &path, perms).map(|_| ok())
                })
                .map(|r| self.fire_pending(r, out))
            }
            MsgType::Watch => self.watch(conn, &ctx, p, out),
            MsgType::Unwatch => {
                let args = split_strings(p);
                let [wpath, token, ..] = args[..] else {
                    return Err(Errno::EINVAL);
                };
                let abs = match path::valid_special(wpath) {
                    Some(s) => s,
                    None => canon(wpath)?,
                };
                let c = self.conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
                let i = c
                    .watches
                    .iter()
                    .position(|w| w.abs == abs && w.token == token)
                    .ok_or(Errno::ENOENT)?;
                c.watches.remove(i);
                Ok(ok())
            }
            MsgType::ResetWatches => {
                let c = self.conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
                c.watches.clear();
                c.txs.clear();
                Ok(ok())
            }
            MsgType::TransactionStart => {
                if msg.tx_id != 0 {
                    return Err(Errno::EBUSY);
                }
                if !ctx.privileged {
                    let open: usize = self
                        .conns
                        .values()
                        .filter(|c| c.domid == domid)
                        .map(|c| c.txs.len())
                        .sum();
                    if open >= self.quotas.transactions {
                        return Err(Errno::ENOSPC);
                    }
                }
                let c = self.conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
                let id = loop {
                    let id = c.next_tx;
                    c.next_tx = c.next_tx.wrapping_add(1).max(1);
                    if !c.txs.contains_key(&id) {
                        break id;
                    }
                };
                c.txs.insert(id, Tx::default());
                Ok(format!("{id}\0").into_bytes())
            }
            MsgType::TransactionEnd => {
                let commit = match one_arg(p)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(Errno::EINVAL),
                };
                let c = self.conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
                let tx = c.txs.remove(&msg.tx_id).ok_or(Errno::ENOENT)?;
                if !commit {
                    return Ok(ok());
                }
                if tx.conflicts(&self.tree) {
                    return Err(Errno::EAGAIN);
                }
                if !ctx.privileged {
                    let d = tx.delta().get(&domid).copied().unwrap_or(0);
                    if d > 0 && self.tree.owned(domid) + d as usize > self.quotas.nodes {
                        return Err(Errno::ENOSPC);
                    }
                }
                let events = tx.commit(&mut self.tree);
                for ev in &events {
                    self.fire(ev, out);
                }
                Ok(ok())
            }
            MsgType::Introduce => {
                let args = split_strings(p);
                let [d, gfn, port, ..] = args[..] else {
                    return Err(Errno::EINVAL);
                };
                let d: u32 = parse_num(d)?;
                if d == 0 || d >= DOMID_FIRST_RESERVED {
                    return Err(Errno::EINVAL);
                }
                let d = d as u16;
                // The page number is documented as signed decimal; accept both forms.
                let gfn: u64 =
                    parse_num(gfn).or_else(|_| parse_num::<i64>(gfn).map(|g| g as u64))?;
                let port: u32 = parse_num(port)?;
                if let Some(dom) = self.domains.get(&d) {
                    // Already introduced: nothing to redo while its ring is being served.
                    if dom.conn.is_some() {
                        return Ok(ok());
                    }
                }
                let id = self.alloc_conn();
                host.introduce(id, d, gfn, port)?;
                self.conns.insert(
                    id,
                    Conn {
                        domid: d,
                        kind: ConnKind::Ring,
                        watches: Vec::new(),
                        txs: BTreeMap::new(),
                        next_tx: 1,
                    },
                );
                self.domains.insert(
                    d,
                    Domain {
                        conn: Some(id),
                        shutdown_notified: false,
                    },
                );
                self.fire_special(INTRODUCE_DOMAIN, out);
                Ok(ok())
            }
            MsgType::Release => {
                let d = parse_domid(one_arg(p)?)?;
                if d == 0 {
                    return Err(Errno::EINVAL);
                }
                if !self.domains.contains_key(&d) {
                    return Err(Errno::ENOENT);
                }
                self.release_domain(d, host, out);
                Ok(ok())
            }
            MsgType::Resume => {
                let d = parse_domid(one_arg(p)?)?;
                let dom = self.domains.get_mut(&d).ok_or(Errno::ENOENT)?;
                dom.shutdown_notified = false;
                Ok(ok())
            }
            MsgType::GetDomainPath => {
                let d = parse_domid(one_arg(p)?)?;
                Ok(format!("{}\0", path::home(d)).into_bytes())
            }
            MsgType::IsDomainIntroduced => {
                let d = parse_domid(one_arg(p)?)?;
                Ok(if self.domains.contains_key(&d) {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                })
            }
            MsgType::Control => {
                let args = split_strings(p);
                match args.first().copied() {
                    Some(b"print") => Ok(ok()),
                    Some(b"help") => Ok(b"print|<string>\nhelp\n\0".to_vec()),
                    _ => Err(Errno::EINVAL),
                }
            }
            MsgType::SetTarget | MsgType::WatchEvent | MsgType::Error => Err(Errno::ENOSYS),
        }
    }

    fn watch(
        &mut self,
        conn: ConnId,
        ctx: &Ctx,
        p: &[u8],
        out: &mut Outgoing,
    ) -> Result<Vec<u8>, Errno> {
        let args = split_strings(p);
        let [wpath, token, ..] = args[..] else {
            return Err(Errno::EINVAL);
        };
        let (abs, relative) = match path::valid_special(wpath) {
            Some(s) => (s, false),
            None => {
                let pq = (!ctx.privileged).then_some(self.quotas.path_len);
                (
                    path::canonicalize(ctx.domid, wpath, pq)?,
                    !wpath.starts_with(b"/"),
                )
            }
        };
        let c = self.conns.get(&conn).ok_or(Errno::EINVAL)?;
        if c.watches.iter().any(|w| w.abs == abs && w.token == token) {
            return Err(Errno::EEXIST);
        }
        if !ctx.privileged {
            let n: usize = self
                .conns
                .values()
                .filter(|c| c.domid == ctx.domid)
                .map(|c| c.watches.len())
                .sum();
            if n >= self.quotas.watches {
                return Err(Errno::E2BIG);
            }
        }
        let c = self.conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
        c.watches.push(Watch {
            abs,
            token: token.to_vec(),
            relative,
        });
        // Fires once straight away, with the path as the caller gave it (after the OK reply).
        let shown = String::from_utf8_lossy(wpath).into_owned();
        out.push((conn, Message::watch_event(&shown, token)));
        Ok(ok())
    }

    /// Runs `f` on the tree or on transaction `tx_id` of `conn`.
    fn with_view<R>(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        f: impl FnOnce(&mut View<'_>) -> Result<R, Errno>,
    ) -> Result<(R, Vec<Event>), Errno> {
        let Store { tree, conns, .. } = self;
        let tx = if tx_id == 0 {
            None
        } else {
            let c = conns.get_mut(&conn).ok_or(Errno::EINVAL)?;
            Some(c.txs.get_mut(&tx_id).ok_or(Errno::ENOENT)?)
        };
        let mut v = View {
            tree,
            tx,
            events: Vec::new(),
        };
        let r = f(&mut v)?;
        Ok((r, v.events))
    }

    fn fire_pending<R>(&self, (r, events): (R, Vec<Event>), out: &mut Outgoing) -> R {
        for ev in &events {
            self.fire(ev, out);
        }
        r
    }

    fn fire_special(&self, name: &str, out: &mut Outgoing) {
        let perms = self.special.get(name).cloned().unwrap_or_default();
        self.fire(
            &Event {
                path: name.to_owned(),
                perms,
                recursive: false,
            },
            out,
        );
    }

    fn fire(&self, ev: &Event, out: &mut Outgoing) {
        for (id, c) in &self.conns {
            if c.domid != 0 && !access_for(&ev.perms, c.domid).can_read() {
                continue;
            }
            for w in &c.watches {
                let epath = if path::is_at_or_below(&ev.path, &w.abs) || ev.path == w.abs {
                    &ev.path
                } else if ev.recursive && path::is_at_or_below(&w.abs, &ev.path) {
                    &w.abs
                } else {
                    continue;
                };
                let shown = if w.relative {
                    path::relativize(epath, c.domid)
                } else {
                    epath.clone()
                };
                out.push((*id, Message::watch_event(&shown, &w.token)));
            }
        }
    }
}

fn perms_payload(perms: &[Perm]) -> Vec<u8> {
    join_strings(&perms.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

/// The node if the caller may read it; `ENOENT` if it is missing and the caller may read the
/// closest existing ancestor, else `EACCES` (no leaking what exists where one cannot look).
fn readable_node(v: &mut View<'_>, ctx: &Ctx, p: &str) -> Result<Node, Errno> {
    match v.get(p) {
        Some(n) if ctx.can_read(&n.perms) => Ok(n),
        Some(_) => Err(Errno::EACCES),
        None => {
            let (_, (_, anc)) = closest_ancestor(v, p);
            Err(if ctx.can_read(&anc.perms) {
                Errno::ENOENT
            } else {
                Errno::EACCES
            })
        }
    }
}

/// The closest existing proper ancestor of a missing node, and the missing paths from `p` up.
fn closest_ancestor(v: &mut View<'_>, p: &str) -> (Vec<String>, (String, Node)) {
    let mut missing = vec![p.to_owned()];
    let mut cur = path::parent(p).unwrap_or("/").to_owned();
    loop {
        if let Some(n) = v.get(&cur) {
            return (missing, (cur, n));
        }
        let next = path::parent(&cur).unwrap_or("/").to_owned();
        missing.push(std::mem::replace(&mut cur, next));
    }
}

/// WRITE (or MKDIR with `mkdir`): creates missing parents, each inheriting its parent's
/// permissions, except that an unprivileged creator becomes the owner.
fn write_node(
    v: &mut View<'_>,
    ctx: &Ctx,
    q: &Quotas,
    p: &str,
    value: &[u8],
    mkdir: bool,
) -> Result<(), Errno> {
    if !ctx.privileged && value.len() > q.entry_size {
        return Err(Errno::ENOSPC);
    }
    if let Some(mut n) = v.get(p) {
        if !ctx.can_write(&n.perms) {
            return Err(Errno::EACCES);
        }
        if mkdir {
            return Ok(());
        }
        n.value = value.to_vec();
        let perms = n.perms.clone();
        v.put(p, n);
        v.event(p, perms, false);
        return Ok(());
    }
    let (missing, (mut parent_path, mut parent)) = closest_ancestor(v, p);
    if !ctx.can_write(&parent.perms) {
        return Err(Errno::EACCES);
    }
    if !ctx.privileged && v.owned(ctx.domid) + missing.len() > q.nodes {
        return Err(Errno::ENOSPC);
    }
    for child_path in missing.iter().rev() {
        parent.children.push(path::basename(child_path).to_owned());
        let mut perms = parent.perms.clone();
        if !ctx.privileged {
            perms[0].domid = ctx.domid;
        }
        v.put(&parent_path, parent);
        let val = if child_path == p {
            value.to_vec()
        } else {
            Vec::new()
        };
        parent = Node {
            value: val,
            perms,
            children: Vec::new(),
            gen: 0,
        };
        parent_path = child_path.clone();
    }
    let perms = parent.perms.clone();
    v.put(p, parent);
    v.event(p, perms, false);
    Ok(())
}

/// RM: removes the subtree; a missing node is fine if its parent exists.
fn rm_node(v: &mut View<'_>, ctx: &Ctx, p: &str) -> Result<(), Errno> {
    let parent_path = path::parent(p).ok_or(Errno::EINVAL)?;
    let Some(n) = v.get(p) else {
        let parent = readable_node(v, ctx, parent_path)?;
        let _ = parent;
        return Ok(());
    };
    if !ctx.can_write(&n.perms) {
        return Err(Errno::EACCES);
    }
    v.del_subtree(p);
    if let Some(mut parent) = v.get(parent_path) {
        let base = path::basename(p);
        parent.children.retain(|c| c != base);
        v.put(parent_path, parent);
    }
    v.event(p, n.perms, true);
    Ok(())
}

fn set_perms(v: &mut View<'_>, ctx: &Ctx, p: &str, perms: Vec<Perm>) -> Result<(), Errno> {
    let mut n = v.get(p).ok_or(Errno::ENOENT)?;
    if !ctx.privileged {
        if n.owner() != ctx.domid || !ctx.can_write(&n.perms) {
            return Err(Errno::EACCES);
        }
        if perms[0].domid != ctx.domid {
            return Err(Errno::EPERM);
        }
    }
    n.perms = perms.clone();
    v.put(p, n);
    v.event(p, perms, false);
    Ok(())
}

/// DIRECTORY_PART: `<gen>\0` then whole children names from byte `off` of the full list, with an
/// empty name closing the list once its end is included.
fn directory_part(n: &Node, off: usize) -> Result<Vec<u8>, Errno> {
    let all = join_strings(&n.children);
    if off > all.len() {
        return Err(Errno::EINVAL);
    }
    let mut r = format!("{}\0", n.gen).into_bytes();
    let budget = PAYLOAD_MAX - r.len() - 1;
    let rest = &all[off..];
    let mut take = 0;
    for name in rest.split_inclusive(|b| *b == 0) {
        if take + name.len() > budget {
            break;
        }
        take += name.len();
    }
    r.extend_from_slice(&rest[..take]);
    if take == rest.len() {
        r.push(0);
    }
    Ok(r)
}
