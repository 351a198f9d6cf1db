//! How a [`Client`](crate::Client) reaches xenstored: its Unix socket, or the kernel's xenbus
//! device.
//!
//! `/dev/xen/xenbus` (L `drivers/xen/xenbus/xenbus_dev_frontend.c`) forwards whole wire
//! messages: each `write` carries one request (header and payload together) and `read` returns
//! replies and watch events (type `WATCH_EVENT`) as a byte stream of messages. It works in a
//! domU and in dom0 alike; the store sees the requests as coming from the kernel's own
//! connection, so relative paths resolve to the domain's home.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The kernel's xenbus device.
pub const XENBUS_DEV: &str = "/dev/xen/xenbus";

/// The kernel's xenbus device (or anything that behaves like it: one message per write).
#[derive(Debug)]
pub struct Xenbus {
    file: File,
    /// Read timeout in nanoseconds; `NO_TIMEOUT` means none.
    timeout_ns: AtomicU64,
}

const NO_TIMEOUT: u64 = u64::MAX;

impl Xenbus {
    /// Opens the device at `path` for reading and writing.
    pub fn open(path: &Path) -> io::Result<Xenbus> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Xenbus::from_file(file))
    }

    /// Wraps an already open device (or, in tests, one end of a socketpair).
    pub fn from_file(file: File) -> Xenbus {
        Xenbus {
            file,
            timeout_ns: AtomicU64::new(NO_TIMEOUT),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        match self.timeout_ns.load(Ordering::Relaxed) {
            NO_TIMEOUT => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    fn wait_readable(&self) -> io::Result<()> {
        let Some(t) = self.timeout() else {
            return Ok(());
        };
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        // Round up so that a tiny timeout still waits a millisecond.
        let ms = t.as_millis().max(1).min(i32::MAX as u128) as i32;
        loop {
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out waiting for xenbus",
                    ))
                }
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A connection to xenstored: its Unix socket or the xenbus device.
#[derive(Debug)]
pub enum Transport {
    /// xenstored's Unix socket (dom0 processes).
    Unix(UnixStream),
    /// `/dev/xen/xenbus` (domUs, and dom0 without the socket).
    Xenbus(Xenbus),
}

impl Transport {
    /// Opens `path`: a Unix socket is connected to, anything else is opened as the xenbus
    /// device (the way Xen's libxenstore decides).
    pub fn open(path: &Path) -> io::Result<Transport> {
        let meta = std::fs::metadata(path)?;
        if meta.file_type().is_socket() {
            Ok(Transport::Unix(UnixStream::connect(path)?))
        } else {
            Ok(Transport::Xenbus(Xenbus::open(path)?))
        }
    }

    /// Whether this is the xenbus device.
    pub fn is_xenbus(&self) -> bool {
        matches!(self, Transport::Xenbus(_))
    }

    /// Makes reads give up after `t` (`None`: wait forever). A timed-out read fails with
    /// `WouldBlock` (socket) or `TimedOut` (xenbus).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a zero read timeout",
            ));
        }
        match self {
            Transport::Unix(s) => s.set_read_timeout(t),
            Transport::Xenbus(x) => {
                let ns = t.map_or(NO_TIMEOUT, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
                });
                x.timeout_ns.store(ns, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            Transport::Unix(s) => s.read_timeout(),
            Transport::Xenbus(x) => Ok(x.timeout()),
        }
    }

    /// Sends one whole encoded message. On the xenbus device it goes out in a single `write`,
    /// as the device requires.
    pub fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Transport::Unix(s) => s.write_all(msg),
            Transport::Xenbus(x) => loop {
                match x.file.write(msg) {
                    Ok(n) if n == msg.len() => return Ok(()),
                    Ok(n) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("xenbus took {n} of {} bytes of a message", msg.len()),
                        ))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            },
        }
    }

    /// Reads whatever bytes are available (0 at end of file).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                Transport::Unix(s) => s.read(buf),
                Transport::Xenbus(x) => x.wait_readable().and_then(|()| x.file.read(buf)),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Unix(s) => s.as_fd(),
            Transport::Xenbus(x) => x.file.as_fd(),
        }
    }
}
