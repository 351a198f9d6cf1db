//! One domain's console: its ring, log, history and attached `xl console` clients.

use crate::ring::{self, RingMem};
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

/// The console's event channel (xenctrl's `Evtchn` bound to one port; a fake in tests).
pub trait Events: Send {
    /// A descriptor that polls readable when an event is pending.
    fn fd(&self) -> std::os::fd::RawFd;
    /// Takes the pending event and re-enables delivery.
    fn ack(&self);
    fn notify(&self);
    fn unbind(&self);
}

/// The real event channel: `local_port` bound on `evtchn`.
pub struct Bound {
    pub evtchn: xenctrl::Evtchn,
    pub local_port: u32,
}

impl Events for Bound {
    fn fd(&self) -> std::os::fd::RawFd {
        self.evtchn.as_raw_fd()
    }
    fn ack(&self) {
        if let Ok(p) = self.evtchn.pending() {
            let _ = self.evtchn.unmask(p);
        }
    }
    fn notify(&self) {
        let _ = self.evtchn.notify(self.local_port);
    }
    fn unbind(&self) {
        let _ = self.evtchn.unbind(self.local_port);
    }
}

/// Everything the console thread owns.
pub struct Console<P: RingMem + Send, E: Events> {
    pub domid: u16,
    pub events: E,
    pub page: P,
    pub sock_path: String,
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

impl<P: RingMem + Send, E: Events> Console<P, E> {
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
        while !self.stop.load(Ordering::Relaxed) {
            let mut fds = vec![self.events.fd(), self.listener.as_raw_fd()];
            fds.extend(st.clients.iter().map(|c| c.as_raw_fd()));
            // The timeout also picks up output whose event was lost.
            let ready = match crate::sys::poll_readable(&fds, 500) {
                Ok(r) => r,
                Err(_) => vec![false; fds.len()],
            };
            if ready[0] {
                self.events.ack();
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
                self.events.notify();
            }
        }
        // Last words.
        self.service_output(&mut st);
        self.events.unbind();
        let _ = std::fs::remove_file(&self.sock_path);
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

    use crate::ring::{OFF_IN, OFF_IN_CONS, OFF_IN_PROD, OFF_OUT, OFF_OUT_CONS, OFF_OUT_PROD};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use xen_abi::io::console::{mask_in_idx, mask_out_idx};

    /// A page shared between the console thread and the test acting as the guest.
    #[derive(Clone)]
    struct SharedVec(Arc<Mutex<Vec<u8>>>);

    impl RingMem for SharedVec {
        fn read_u32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0.lock().unwrap()[off..off + 4].try_into().unwrap())
        }
        fn write_u32(&self, off: usize, v: u32) {
            self.0.lock().unwrap()[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn read_u8(&self, off: usize) -> u8 {
            self.0.lock().unwrap()[off]
        }
        fn write_u8(&self, off: usize, v: u8) {
            self.0.lock().unwrap()[off] = v;
        }
        fn fence(&self) {}
    }

    impl SharedVec {
        fn guest_print(&self, s: &[u8]) {
            let prod = self.read_u32(OFF_OUT_PROD);
            for (k, &b) in s.iter().enumerate() {
                self.write_u8(OFF_OUT + mask_out_idx(prod.wrapping_add(k as u32)), b);
            }
            self.write_u32(OFF_OUT_PROD, prod.wrapping_add(s.len() as u32));
        }
        fn guest_input(&self) -> Vec<u8> {
            let (mut c, p) = (self.read_u32(OFF_IN_CONS), self.read_u32(OFF_IN_PROD));
            let mut v = Vec::new();
            while c != p && v.len() < 4096 {
                v.push(self.read_u8(OFF_IN + mask_in_idx(c)));
                c = c.wrapping_add(1);
            }
            self.write_u32(OFF_IN_CONS, c);
            v
        }
    }

    /// Events through a socket pair: the test writes a byte to fire one.
    struct FakeEvents {
        mine: UnixStream,
        notified: Arc<Mutex<u32>>,
    }

    impl Events for FakeEvents {
        fn fd(&self) -> std::os::fd::RawFd {
            self.mine.as_raw_fd()
        }
        fn ack(&self) {
            let mut b = [0u8; 64];
            let _ = (&self.mine).read(&mut b);
        }
        fn notify(&self) {
            *self.notified.lock().unwrap() += 1;
        }
        fn unbind(&self) {}
    }

    fn read_until(c: &mut UnixStream, want: &[u8]) -> Vec<u8> {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            let mut b = [0u8; 256];
            if let Ok(n) = c.read(&mut b) {
                got.extend_from_slice(&b[..n]);
            }
            if got.windows(want.len()).any(|w| w == want) {
                break;
            }
        }
        got
    }

    #[test]
    fn output_logs_history_attach_and_input_flow() {
        let dir = std::env::temp_dir().join(format!("xenconsoled-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("5.sock").to_string_lossy().into_owned();
        let log_path = dir.join("guest-t.log").to_string_lossy().into_owned();
        let page = SharedVec(Arc::new(Mutex::new(vec![0; 4096])));
        let (mine, theirs) = UnixStream::pair().unwrap();
        mine.set_nonblocking(true).unwrap();
        let notified = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let c = Console {
            domid: 5,
            events: FakeEvents {
                mine,
                notified: Arc::clone(&notified),
            },
            page: page.clone(),
            sock_path: sock.clone(),
            log: open_log(&log_path).ok(),
            log_path: log_path.clone(),
            listener: UnixListener::bind(&sock).unwrap(),
            stop: Arc::clone(&stop),
        };
        let t = std::thread::spawn(move || c.run());
        let fire = || (&theirs).write_all(b"e").unwrap();

        page.guest_print(b"early boot\n");
        fire();
        // Wait until consumed.
        let start = Instant::now();
        while page.read_u32(OFF_OUT_CONS) != page.read_u32(OFF_OUT_PROD) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "output never consumed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // A client attaching now gets the history, then live output.
        let mut client = UnixStream::connect(&sock).unwrap();
        assert!(read_until(&mut client, b"early boot\n").ends_with(b"early boot\n"));
        page.guest_print(b"login: ");
        fire();
        assert!(read_until(&mut client, b"login: ").ends_with(b"login: "));
        // Keystrokes reach the input ring and the guest is notified.
        client.write_all(b"root\r").unwrap();
        let start = Instant::now();
        let mut input = Vec::new();
        while input.len() < 5 && start.elapsed() < Duration::from_secs(5) {
            input.extend(page.guest_input());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(input, b"root\r");
        assert!(*notified.lock().unwrap() > 0);
        // A hostile guest: output indexes far apart. The daemon survives and reports it.
        page.write_u32(
            OFF_OUT_PROD,
            page.read_u32(OFF_OUT_CONS).wrapping_add(100_000),
        );
        fire();
        std::thread::sleep(Duration::from_millis(100));
        page.guest_print(b"still alive\n");
        fire();
        assert!(read_until(&mut client, b"still alive\n").ends_with(b"still alive\n"));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(log.starts_with("early boot\nlogin: "), "{log}");
        assert!(log.contains("broke its console ring"), "{log}");
        assert!(log.ends_with("still alive\n"), "{log}");
        assert!(!std::path::Path::new(&sock).exists(), "socket removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
