//! Console output: `print!`/`println!` through `console_io(CONSOLEIO_write)`.
//!
//! Invariant: no global state. Each `print!` formats into a stack buffer of
//! [`LINE_BUFFER`] bytes and sends it with as few hypercalls as possible, so one short line
//! reaches the hypervisor in one `console_io` call and cannot be split by a nested print
//! (from a panic or exception handler).
//!
//! Port 0xE9 is never a silent fallback: if the hypercall fails, a line tagged
//! [`E9_TAG`] (`guest-rt/e9: console_io failed (<err>)`) goes to port 0xE9 before the
//! text, and the xtask harness fails any test whose console shows that tag. Without Xen
//! (bare mode, see [`crate::hypercall`]) the text goes to port 0xE9 as it is; the runtime
//! announces bare mode with a tagged line at start-up (see `crate::start`).

use core::fmt::{self, Write};

use crate::{arch, hypercall};

/// Size of the stack buffer one `print!` formats into before it flushes.
pub const LINE_BUFFER: usize = 256;

/// The Bochs/QEMU debug console port (QEMU `-debugcon stdio`, Bochs `port_e9_hack`).
pub const DEBUG_PORT: u16 = 0xe9;

/// Writes bytes to port 0xE9, one `out` per byte.
pub fn write_e9(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: port 0xE9 is a debug console (or nothing); writing it has no memory effects.
        unsafe { arch::outb(DEBUG_PORT, b) };
    }
}

/// Starts every line the runtime writes to port 0xE9 because something is wrong (a failed
/// `console_io`, bare mode under a hypervisor, a nested failure). The xtask harness fails any
/// test whose console shows it.
pub const E9_TAG: &str = "guest-rt/e9:";

/// Writes bytes to the hypervisor console. If `console_io` fails, a tagged line naming the
/// error and then the bytes go to port 0xE9; without Xen, the bytes go to port 0xE9.
pub fn write_bytes(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if hypercall::is_xen() {
        let rc = hypercall::console_io_write(bytes);
        if rc >= 0 {
            return;
        }
        write_e9_fmt(format_args!(
            "\n{E9_TAG} console_io failed ({}); the text follows\n",
            hypercall::describe(rc)
        ));
    }
    write_e9(bytes);
}

/// A `fmt::Write` sink that buffers on the stack and flushes to [`write_bytes`] (or to port
/// 0xE9 only, for [`write_e9_fmt`]).
struct LineWriter {
    buf: [u8; LINE_BUFFER],
    len: usize,
    e9_only: bool,
}

impl LineWriter {
    const fn new(e9_only: bool) -> Self {
        LineWriter {
            buf: [0; LINE_BUFFER],
            len: 0,
            e9_only,
        }
    }

    fn flush(&mut self) {
        let bytes = &self.buf[..self.len];
        if self.e9_only {
            write_e9(bytes);
        } else {
            write_bytes(bytes);
        }
        self.len = 0;
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = rest.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Formats `args` and writes them to the console (the implementation of `print!`).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new(false);
    let _ = w.write_fmt(args);
    w.flush();
}

/// Formats `args` and writes them to port 0xE9 only (for reporting console failures).
pub fn write_e9_fmt(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new(true);
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints to the hypervisor console (see [`write_bytes`]), like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the hypervisor console (see [`write_bytes`]), like `std::println!`.
/// The text and the newline go out together.
#[macro_export]
macro_rules! println {
    () => { $crate::console::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_writer_buffers_long_text() {
        let mut w = LineWriter::new(true);
        w.write_str("abc").unwrap();
        assert_eq!(&w.buf[..w.len], b"abc");
        // Filling exactly to capacity does not flush (flushing would touch port 0xE9).
        let filler = [b'x'; LINE_BUFFER - 3];
        w.write_str(core::str::from_utf8(&filler).unwrap()).unwrap();
        assert_eq!(w.len, LINE_BUFFER);
    }
}
