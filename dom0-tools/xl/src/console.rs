//! `xl console`: attach the terminal to xenconsoled's socket for a domain.
//!
//! The socket (`/var/run/xenconsoled/<domid>.sock`) carries raw bytes: what the guest
//! printed (recent history first, then live output) one way, keystrokes the other.
//! Ctrl-] (0x1d) detaches, as with Xen's xl.

use crate::tty::RawMode;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Detach key (Ctrl-]).
pub const ESCAPE: u8 = 0x1d;

pub fn socket_path(domid: u16) -> String {
    format!("/var/run/xenconsoled/{domid}.sock")
}

/// The keystrokes to forward from `input`, and whether the escape key was seen.
pub fn split_escape(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|&b| b == ESCAPE) {
        Some(i) => (&input[..i], true),
        None => (input, false),
    }
}

/// Connects (retrying for up to `wait`, for a domain just created) and runs until
/// detach or until the console goes away.
pub fn attach(domid: u16, wait: Duration) -> Result<()> {
    let path = socket_path(domid);
    let start = Instant::now();
    let sock = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) if start.elapsed() >= wait => {
                return Err(e).with_context(|| {
                    format!("connecting to xenconsoled for domain {domid} ({path}); is xenconsoled running?")
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let stdin = std::io::stdin();
    let raw = Arc::new(RawMode::enter(std::os::fd::AsFd::as_fd(&stdin)).context("raw terminal")?);
    let mut from = sock.try_clone()?;
    // The guest's output goes straight to file descriptor 1: the caller may hold the
    // process's `Stdout` lock for as long as the command runs.
    let mut out =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?);
    let raw2 = Arc::clone(&raw);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        // The console went away (domain destroyed): give the terminal back and leave.
        if let Some(r) = raw2.as_ref() {
            r.restore();
        }
        let _ = writeln!(std::io::stderr(), "\r\n[console closed]\r");
        std::process::exit(0);
    });
    let mut to = sock;
    let mut buf = [0u8; 1024];
    let mut input = stdin.lock();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let (keys, detach) = split_escape(&buf[..n]);
        if !keys.is_empty() && to.write_all(keys).is_err() {
            break;
        }
        if detach {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    drop(raw);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_splits_input() {
        assert_eq!(split_escape(b"abc"), (&b"abc"[..], false));
        assert_eq!(split_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_escape(b"\x1d"), (&b""[..], true));
    }
}
