//! Raw terminal mode for `xl console` (the only unsafe code in xl: termios calls).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Restores the saved terminal settings when dropped.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode; `Ok(None)` when it is not a terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<RawMode>> {
        let fd = fd.as_raw_fd();
        // SAFETY: isatty only inspects the descriptor, which the BorrowedFd keeps open.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain old data; an all-zero value is valid and is
        // overwritten by tcgetattr before use.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios and `fd` is open.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only modifies the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios and `fd` is open.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawMode { fd, saved }))
    }

    /// Puts the saved settings back (also done on drop).
    pub fn restore(&self) {
        // SAFETY: `saved` came from tcgetattr on this descriptor (stdin, open for the
        // life of the process); a failure leaves the terminal as it is.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}
