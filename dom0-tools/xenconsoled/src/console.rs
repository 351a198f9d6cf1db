//! One domain's console: its ring, log, history and attached `xl console` clients.

use crate::ring;
use crate::shared::SharedPage;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Output kept for a client that attaches later.
pub const HISTORY: usize = 16 << 10;
/// Keystrokes waiting for room in the ring, at most.
const PENDING_INPUT: usize = 4096;
/// Stop reading a guest that breaks the ring protocol this many times.
const MAX_BAD: u32 = 16;
/// A log grows to this size, then starts over (the old one kept as `.old`).
const LOG_MAX: u64 = 8 << 20;

pub fn socket_dir() -> &'static str {
    "/var/run/xenconsoled"
}

pub fn socket_path(domid: u16) -> String {
    format!("{}/{domid}.sock", socket_dir())
}

/// A file-name-safe version of a guest-chosen name.
pub fn log_name(name: &str, domid: u16) -> String {
    let clean: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("guest-dom{domid}.log")
    } else {
        format!("guest-{clean}.log")
    }
}

/// Bounded history of recent output.
#[derive(Default)]
pub struct History(VecDeque<u8>);

impl History {
    pub fn push(&mut self, data: &[u8]) {
        self.0.extend(data);
        let extra = self.0.len().saturating_sub(HISTORY);
        self.0.drain(..extra);
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.iter().copied().collect()
    }
}

/// Everything the console thread owns.
pub struct Console {
    pub domid: u16,
    pub evtchn: xenctrl::Evtchn,
    pub local_port: u32,
    pub page: SharedPage,
    pub log: Option<File>,
    pub log_path: String,
    pub listener: UnixListener,
    pub stop: Arc<AtomicBool>,
}

struct State {
    history: History,
    clients: Vec<UnixStream>,
    pending: Vec<u8>,
    bad: u32,
    log_len: u64,
}

impl Console {
    /// Runs until `stop` is set; then unbinds and removes the socket.
    pub fn run(mut self) {
        let mut st = State {
            history: History::default(),
            clients: Vec::new(),
            pending: Vec::new(),
            bad: 0,
            log_len: self
                .log
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len()),
        };
        let _ = self.listener.set_nonblocking(true);
        let _ = self.evtchn.unmask(self.local_port);
        while !self.stop.load(Ordering::Relaxed) {
            let mut fds = vec![self.evtchn.as_raw_fd(), self.listener.as_raw_fd()];
            fds.extend(st.clients.iter().map(|c| c.as_raw_fd()));
            // The timeout also picks up output whose event was lost.
            let ready = match crate::sys::poll_readable(&fds, 500) {
                Ok(r) => r,
                Err(_) => vec![false; fds.len()],
            };
            if ready[0] {
                if let Ok(p) = self.evtchn.pending() {
                    let _ = self.evtchn.unmask(p);
                }
            }
            let mut notify = self.service_output(&mut st);
            if ready[1] {
                self.accept(&mut st);
            }
            let mut closed = Vec::new();
            for (i, c) in st.clients.iter_mut().enumerate() {
                if !ready.get(i + 2).copied().unwrap_or(false) {
                    continue;
                }
                let mut buf = [0u8; 1024];
                match c.read(&mut buf) {
                    Ok(0) => closed.push(i),
                    Ok(n) => {
                        let room = PENDING_INPUT.saturating_sub(st.pending.len());
                        st.pending.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed.push(i),
                }
            }
            for i in closed.into_iter().rev() {
                st.clients.remove(i);
            }
            if !st.pending.is_empty() && st.bad < MAX_BAD {
                match ring::push_input(&self.page, &st.pending) {
                    Ok(n) if n > 0 => {
                        st.pending.drain(..n);
                        notify = true;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        st.bad += 1;
                        st.pending.clear();
                    }
                }
            }
            if notify {
                let _ = self.evtchn.notify(self.local_port);
            }
        }
        // Last words.
        self.service_output(&mut st);
        let _ = self.evtchn.unbind(self.local_port);
        let _ = std::fs::remove_file(socket_path(self.domid));
    }

    /// Moves the guest's output to the log, history and clients; true if any was taken.
    fn service_output(&mut self, st: &mut State) -> bool {
        if st.bad >= MAX_BAD {
            return false;
        }
        let mut out = Vec::new();
        match ring::drain_output(&self.page, &mut out) {
            Ok(0) => false,
            Ok(_) => {
                self.write_log(st, &out);
                st.history.push(&out);
                st.clients.retain_mut(|c| write_all_nonblocking(c, &out));
                true
            }
            Err(bad) => {
                st.bad += 1;
                ring::resync_output(&self.page);
                let msg = format!(
                    "\n[xenconsoled: domain {} broke its console ring (cons {} prod {}){}]\n",
                    self.domid,
                    bad.cons,
                    bad.prod,
                    if st.bad >= MAX_BAD {
                        "; no longer reading it"
                    } else {
                        ""
                    }
                );
                self.write_log(st, msg.as_bytes());
                true
            }
        }
    }

    fn write_log(&mut self, st: &mut State, data: &[u8]) {
        if st.log_len + data.len() as u64 > LOG_MAX {
            let _ = std::fs::rename(&self.log_path, format!("{}.old", self.log_path));
            self.log = open_log(&self.log_path).ok();
            st.log_len = 0;
        }
        if let Some(f) = self.log.as_mut() {
            if f.write_all(data).is_ok() {
                st.log_len += data.len() as u64;
            }
        }
    }

    fn accept(&mut self, st: &mut State) {
        while let Ok((mut c, _)) = self.listener.accept() {
            let hist = st.history.bytes();
            let _ = c.set_nonblocking(false);
            let _ = c.set_write_timeout(Some(std::time::Duration::from_millis(500)));
            if c.write_all(&hist).is_ok() && c.set_nonblocking(true).is_ok() {
                if st.clients.len() >= 8 {
                    continue; // Too many attached: refuse (closing it).
                }
                st.clients.push(c);
            }
        }
    }
}

/// Writes `data` to a client; false (drop the client) if it cannot keep up.
fn write_all_nonblocking(c: &mut UnixStream, data: &[u8]) -> bool {
    let _ = c.set_nonblocking(false);
    let _ = c.set_write_timeout(Some(std::time::Duration::from_millis(200)));
    let ok = c.write_all(data).is_ok();
    let _ = c.set_nonblocking(true);
    ok
}

pub fn open_log(path: &str) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_are_safe() {
        assert_eq!(log_name("deb1", 3), "guest-deb1.log");
        assert_eq!(log_name("../../etc/passwd", 3), "guest-dom3.log");
        assert_eq!(log_name("a/../b", 3), "guest-a_.._b.log");
        assert_eq!(log_name("", 3), "guest-dom3.log");
        assert_eq!(log_name(".hidden", 3), "guest-dom3.log");
        assert_eq!(log_name("a b\n", 3), "guest-a_b_.log");
    }

    #[test]
    fn history_is_bounded_and_keeps_the_latest() {
        let mut h = History::default();
        h.push(&vec![b'a'; HISTORY]);
        h.push(b"xyz");
        let b = h.bytes();
        assert_eq!(b.len(), HISTORY);
        assert!(b.ends_with(b"axyz"));
    }
}
