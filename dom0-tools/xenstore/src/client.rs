//! A blocking client, over xenstored's Unix socket or the kernel's `/dev/xen/xenbus`.
//!
//! Every call sends one request and waits for its reply. Watch events that arrive meanwhile are
//! queued and handed out by [`Client::read_watch`]. Pass transaction id 0 for "no transaction".
//! [`Client::connect`] picks the transport the way Xen's libxenstore does: `$XENSTORED_PATH` if
//! set, else the socket if it exists, else the xenbus device.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::perms::Perm;
pub use crate::transport::{Transport, Xenbus, XENBUS_DEV};
use crate::wire::{
    join_strings, split_strings, Decoder, Errno, Message, MsgType, HEADER_LEN, PAYLOAD_MAX,
};

/// The socket xenstored listens on.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";
/// Environment variable overriding [`DEFAULT_SOCKET`] (a socket or a xenbus device).
pub const SOCKET_ENV: &str = "XENSTORED_PATH";

/// What can go wrong talking to xenstored.
#[derive(Debug)]
pub enum Error {
    /// xenstored answered with an error other than `EAGAIN`; its name (`ENOENT`, `EACCES`, ...).
    Xen(String),
    /// `EAGAIN` ending a transaction: it conflicted and may be retried from the start.
    Again,
    /// The socket or device failed (or a read timed out: see [`Error::is_timeout`]).
    Io(io::Error),
    /// xenstored said something that makes no sense, or a request was too big to send.
    Protocol(String),
}

impl Error {
    /// The Xen error name, if xenstored sent one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Error::Xen(n) => Some(n),
            Error::Again => Some("EAGAIN"),
            _ => None,
        }
    }

    /// The error as a known [`Errno`].
    pub fn errno(&self) -> Option<Errno> {
        self.name().and_then(Errno::from_name)
    }

    /// Whether this is the transaction conflict that calls for a retry.
    pub fn is_again(&self) -> bool {
        matches!(self, Error::Again)
    }

    /// Whether a read timed out (see [`Client::set_read_timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Xen(n) => write!(f, "xenstored: {n}"),
            Error::Again => f.write_str("xenstored: EAGAIN (transaction conflict, retry)"),
            Error::Io(e) => write!(f, "xenstore connection: {e}"),
            Error::Protocol(m) => write!(f, "xenstore protocol: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// Results of client calls.
pub type Result<T> = std::result::Result<T, Error>;

/// A connection to xenstored.
#[derive(Debug)]
pub struct Client {
    sock: Transport,
    decoder: Decoder,
    events: VecDeque<(String, String)>,
    next_req: u32,
    /// Requests whose replies were never read (their wait failed, e.g. timed out): their late
    /// replies are dropped.
    abandoned: u32,
}

fn strings(payload: &[u8]) -> Vec<String> {
    if payload.is_empty() {
        return Vec::new();
    }
    split_strings(payload)
        .into_iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl Client {
    /// Connects the way Xen's libxenstore does: to `$XENSTORED_PATH` if set (a socket or a
    /// device); else to `/var/run/xenstored/socket` if it exists and accepts the connection;
    /// else to `/dev/xen/xenbus`.
    pub fn connect() -> Result<Client> {
        if let Some(p) = std::env::var_os(SOCKET_ENV) {
            return Client::connect_path(Path::new(&p));
        }
        let sock = Path::new(DEFAULT_SOCKET);
        if sock.exists() {
            match Client::connect_to(sock) {
                Ok(c) => return Ok(c),
                Err(e) if !Path::new(XENBUS_DEV).exists() => return Err(e),
                Err(_) => {}
            }
        }
        Client::open_xenbus(Path::new(XENBUS_DEV))
    }

    /// Connects to the socket only: `$XENSTORED_PATH` or `/var/run/xenstored/socket`
    /// (what Xen's tools do with `-s`).
    pub fn connect_socket() -> Result<Client> {
        let p = std::env::var_os(SOCKET_ENV).unwrap_or_else(|| DEFAULT_SOCKET.into());
        Client::connect_to(Path::new(&p))
    }

    /// Connects to the Unix socket at `path`.
    pub fn connect_to(path: &Path) -> Result<Client> {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| with_path(path, e))?;
        Ok(Client::from_transport(Transport::Unix(s)))
    }

    /// Opens the xenbus device at `path` (normally [`XENBUS_DEV`]).
    pub fn open_xenbus(path: &Path) -> Result<Client> {
        let x = Xenbus::open(path).map_err(|e| with_path(path, e))?;
        Ok(Client::from_transport(Transport::Xenbus(x)))
    }

    /// Connects to `path` whatever it is: a Unix socket is connected to, anything else is
    /// opened as the xenbus device (how libxenstore treats `$XENSTORED_PATH`).
    pub fn connect_path(path: &Path) -> Result<Client> {
        let t = Transport::open(path).map_err(|e| with_path(path, e))?;
        Ok(Client::from_transport(t))
    }

    /// A client over an already open transport.
    pub fn from_transport(sock: Transport) -> Client {
        Client {
            sock,
            decoder: Decoder::new(),
            events: VecDeque::new(),
            next_req: 1,
            abandoned: 0,
        }
    }

    fn recv(&mut self) -> Result<Message> {
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let mut buf = [0u8; HEADER_LEN + PAYLOAD_MAX];
            let n = self.sock.recv(&mut buf)?;
            if n == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "xenstored closed the connection",
                )));
            }
            self.decoder.push(&buf[..n]);
        }
    }

    fn queue_event(&mut self, m: &Message) {
        let s = strings(&m.payload);
        if let [path, token, ..] = &s[..] {
            self.events.push_back((path.clone(), token.clone()));
        }
    }

    /// Sends a raw request and returns the reply payload.
    pub fn request(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> Result<Vec<u8>> {
        if payload.len() > PAYLOAD_MAX {
            return Err(Error::Protocol(format!(
                "request of {} bytes exceeds {PAYLOAD_MAX}",
                payload.len()
            )));
        }
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        self.sock
            .send(&Message::new(ty, req_id, tx, payload).encode())?;
        loop {
            let m = match self.recv() {
                Ok(m) => m,
                Err(e) => {
                    self.abandoned = self.abandoned.saturating_add(1);
                    return Err(e);
                }
            };
            if m.ty == MsgType::WatchEvent as u32 {
                self.queue_event(&m);
                continue;
            }
            if m.req_id != req_id && self.abandoned > 0 {
                // The late reply to a request we gave up waiting for.
                self.abandoned -= 1;
                continue;
            }
            if m.req_id != req_id {
                return Err(Error::Protocol(format!(
                    "reply to request {} while waiting for {req_id}",
                    m.req_id
                )));
            }
            if let Some(name) = m.error_name() {
                return Err(if name == "EAGAIN" {
                    Error::Again
                } else {
                    Error::Xen(name)
                });
            }
            if m.ty != ty as u32 {
                return Err(Error::Protocol(format!(
                    "reply type {} to a {} request",
                    m.ty,
                    ty.name()
                )));
            }
            return Ok(m.payload);
        }
    }

    fn path_req(&mut self, ty: MsgType, tx: u32, path: &str) -> Result<Vec<u8>> {
        self.request(ty, tx, &join_strings(&[path]))
    }

    /// The value at `path`.
    pub fn read(&mut self, tx: u32, path: &str) -> Result<Vec<u8>> {
        self.path_req(MsgType::Read, tx, path)
    }

    /// Writes `value` at `path`, creating missing parents.
    pub fn write(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<()> {
        let mut p = join_strings(&[path]);
        p.extend_from_slice(value);
        self.request(MsgType::Write, tx, &p).map(drop)
    }

    /// Creates `path` (and parents) if missing.
    pub fn mkdir(&mut self, tx: u32, path: &str) -> Result<()> {
        self.path_req(MsgType::Mkdir, tx, path).map(drop)
    }

    /// Removes `path` and everything below it.
    pub fn rm(&mut self, tx: u32, path: &str) -> Result<()> {
        self.path_req(MsgType::Rm, tx, path).map(drop)
    }

    /// Leaf names of the children of `path`.
    pub fn directory(&mut self, tx: u32, path: &str) -> Result<Vec<String>> {
        Ok(strings(&self.path_req(MsgType::Directory, tx, path)?))
    }

    /// Permissions of `path` (owner first).
    pub fn get_perms(&mut self, tx: u32, path: &str) -> Result<Vec<Perm>> {
        strings(&self.path_req(MsgType::GetPerms, tx, path)?)
            .iter()
            .map(|s| {
                s.parse::<Perm>()
                    .map_err(|e| Error::Protocol(e.to_string()))
            })
            .collect()
    }

    /// Replaces the permissions of `path` (owner first).
    pub fn set_perms(&mut self, tx: u32, path: &str, perms: &[Perm]) -> Result<()> {
        let mut items = vec![path.to_owned()];
        items.extend(perms.iter().map(Perm::to_string));
        self.request(MsgType::SetPerms, tx, &join_strings(&items))
            .map(drop)
    }

    /// Starts a transaction; returns its id.
    pub fn transaction_start(&mut self) -> Result<u32> {
        let r = self.request(MsgType::TransactionStart, 0, b"\0")?;
        let s = strings(&r);
        s.first().and_then(|id| id.parse().ok()).ok_or_else(|| {
            Error::Protocol(format!(
                "bad transaction id {:?}",
                String::from_utf8_lossy(&r)
            ))
        })
    }

    /// Commits (`commit`) or aborts a transaction. A conflict is [`Error::Again`]: start over.
    pub fn transaction_end(&mut self, tx: u32, commit: bool) -> Result<()> {
        self.request(
            MsgType::TransactionEnd,
            tx,
            if commit { b"T\0" } else { b"F\0" },
        )
        .map(drop)
    }

    /// Tells xenstored to serve domain `domid`, whose ring is page `gfn` (granted as ref 1) with
    /// event channel `port`.
    pub fn introduce(&mut self, domid: u16, gfn: u64, port: u32) -> Result<()> {
        let p = join_strings(&[domid.to_string(), gfn.to_string(), port.to_string()]);
        self.request(MsgType::Introduce, 0, &p).map(drop)
    }

    /// Tells xenstored to stop serving domain `domid`.
    pub fn release(&mut self, domid: u16) -> Result<()> {
        self.request(MsgType::Release, 0, &join_strings(&[domid.to_string()]))
            .map(drop)
    }

    /// `/local/domain/<domid>`, as xenstored says.
    pub fn get_domain_path(&mut self, domid: u16) -> Result<String> {
        let r = self.request(
            MsgType::GetDomainPath,
            0,
            &join_strings(&[domid.to_string()]),
        )?;
        strings(&r)
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty domain path".into()))
    }

    /// Whether xenstored serves domain `domid`.
    pub fn is_domain_introduced(&mut self, domid: u16) -> Result<bool> {
        let r = self.request(
            MsgType::IsDomainIntroduced,
            0,
            &join_strings(&[domid.to_string()]),
        )?;
        match strings(&r).first().map(String::as_str) {
            Some("T") => Ok(true),
            Some("F") => Ok(false),
            _ => Err(Error::Protocol(format!(
                "bad IS_DOMAIN_INTRODUCED reply {r:?}"
            ))),
        }
    }

    /// Watches `path` (and everything below it) with `token`; one event fires straight away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.request(MsgType::Watch, 0, &join_strings(&[path, token]))
            .map(drop)
    }

    /// Removes a watch.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.request(MsgType::Unwatch, 0, &join_strings(&[path, token]))
            .map(drop)
    }

    /// The next watch event `(path, token)`, waiting for one if none is queued.
    pub fn read_watch(&mut self) -> Result<(String, String)> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let m = self.recv()?;
            if m.ty == MsgType::WatchEvent as u32 {
                self.queue_event(&m);
            } else {
                return Err(Error::Protocol(format!(
                    "unsolicited message of type {}",
                    m.ty
                )));
            }
        }
    }

    /// Watch events already received and not yet handed out.
    pub fn queued_watches(&self) -> usize {
        self.events.len()
    }

    /// The transport, e.g. to poll it or set a read timeout.
    pub fn socket(&self) -> &Transport {
        &self.sock
    }

    /// Makes every wait for a reply or an event give up after `t` (`None`: wait forever);
    /// see [`Error::is_timeout`].
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        Ok(self.sock.set_read_timeout(t)?)
    }
}

fn with_path(path: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
