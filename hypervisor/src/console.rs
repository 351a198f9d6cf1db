//! The hypervisor console: COM1 and/or the 0xE9 debug port, and the `log` backend.
//!
//! Output goes to every enabled device under one lock, so lines from different contexts do
//! not interleave. The fatal paths (exceptions, panics) call [`force_unlock`] first: they
//! may have interrupted a holder of the lock, and a stuck console would hide the very
//! diagnostic we are about to print.
#![allow(unsafe_code)]

use crate::arch::x86::port;
use crate::cmdline::{Consoles, LogLevel};
use crate::sync::{Level, Lock};
use core::fmt::{self, Write};
use uart_16550::SerialPort;

/// I/O port of the first UART.
const COM1: u16 = 0x3f8;
/// Bochs' `port_e9_hack` and QEMU's `-debugcon` print bytes written here.
const DEBUG_PORT: u16 = 0xe9;

/// Bytes of console output kept for the toolstack (`xl dmesg`).
const RING_SIZE: usize = 32 << 10;

struct Console {
    com1: Option<SerialPort>,
    e9: bool,
    /// The last [`RING_SIZE`] bytes written (without carriage returns).
    ring: [u8; RING_SIZE],
    /// Bytes written since boot (the ring holds `ring_pos - RING_SIZE..ring_pos`).
    ring_pos: u64,
    /// The domain whose console line is open on screen (its `(dN) ` prefix printed, no
    /// newline yet); None when the cursor is at a line start or after hypervisor text.
    guest_line: Option<u16>,
    /// Whether the cursor is at the start of a line.
    at_line_start: bool,
}

static CONSOLE: Lock<Console> = Lock::new(
    Level::Console,
    Console {
        com1: None,
        e9: false,
        ring: [0; RING_SIZE],
        ring_pos: 0,
        guest_line: None,
        at_line_start: true,
    },
);

/// Copies console output from position `pos` (bytes since boot; an older position starts
/// at the oldest byte kept) into `out`; returns the bytes copied and the position after.
pub fn ring_read(pos: u64, out: &mut [u8]) -> (usize, u64) {
    let c = CONSOLE.lock();
    let start = pos.max(c.ring_pos.saturating_sub(RING_SIZE as u64));
    let avail = c.ring_pos.saturating_sub(start);
    let n = (out.len() as u64).min(avail) as usize;
    for (i, b) in out[..n].iter_mut().enumerate() {
        *b = c.ring[((start + i as u64) % RING_SIZE as u64) as usize];
    }
    (n, start + n as u64)
}

impl Console {
    fn record(&mut self, b: u8) {
        self.ring[(self.ring_pos % RING_SIZE as u64) as usize] = b;
        self.ring_pos = self.ring_pos.wrapping_add(1);
    }

    fn put(&mut self, b: u8) {
        if let Some(port) = self.com1.as_mut() {
            port.send_raw(b);
        }
        if self.e9 {
            // SAFETY: port 0xE9 is the emulators' debug console (or nothing); the
            // hypervisor owns it (guests' writes to it are intercepted).
            unsafe { port::outb(DEBUG_PORT, b) };
        }
    }
}

impl Console {
    fn emit(&mut self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.record(b);
            self.put(b);
        }
        if let Some(&last) = s.as_bytes().last() {
            self.at_line_start = last == b'\n';
        }
    }

    /// Ends a domain's open line before other text, so hypervisor text never shares a
    /// line with guest text that follows it.
    fn close_guest_line(&mut self) {
        if self.guest_line.take().is_some() && !self.at_line_start {
            self.emit("\n");
        }
    }
}

/// Hypervisor text: any open guest line is ended first.
impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.close_guest_line();
        self.emit(s);
        Ok(())
    }
}

/// Writes guest console text (no newlines, already filtered) for domain `id`: unless this
/// domain's line is open on screen, a new line starts (after a newline if needed) with the
/// `(dN) ` prefix, so every guest byte after a newline, another domain's text or a
/// hypervisor line carries the prefix and a guest cannot forge a hypervisor line.
pub fn guest_text(id: u16, text: &str) {
    if text.is_empty() {
        return;
    }
    let mut c = CONSOLE.lock();
    if c.guest_line != Some(id) {
        c.close_guest_line();
        if !c.at_line_start {
            c.emit("\n");
        }
        let _ = write!(PrefixWriter(&mut c), "(d{id}) ");
        c.guest_line = Some(id);
    }
    c.emit(text);
}

/// Ends domain `id`'s console line (a guest newline); an empty line still gets the prefix.
pub fn guest_newline(id: u16) {
    let mut c = CONSOLE.lock();
    if c.guest_line != Some(id) {
        c.close_guest_line();
        if !c.at_line_start {
            c.emit("\n");
        }
        let _ = write!(PrefixWriter(&mut c), "(d{id})");
    }
    c.guest_line = None;
    c.emit("\n");
}

/// Ends domain `id`'s console line if it is open (before the hypervisor reports on it).
pub fn guest_end_line(id: u16) {
    let mut c = CONSOLE.lock();
    if c.guest_line == Some(id) {
        c.close_guest_line();
    }
}

/// Writes without closing the open guest line (only for the prefix itself).
struct PrefixWriter<'a>(&'a mut Console);

impl Write for PrefixWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.emit(s);
        Ok(())
    }
}

/// Enables the chosen devices. Called once with the defaults before the command line is
/// parsed, and again with the user's choice.
pub fn configure(consoles: Consoles) {
    let mut c = CONSOLE.lock();
    c.com1 = consoles.com1.then(|| {
        // SAFETY: 0x3f8 is the standard COM1 base; nothing else in the hypervisor drives
        // these ports, and the UART is only reached through this locked console.
        let mut port = unsafe { SerialPort::new(COM1) };
        port.init();
        port
    });
    c.e9 = consoles.e9;
}

/// Writes formatted text to the console.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Waits until COM1 has sent every byte (line status bit 6, transmitter empty), so that
/// nothing is lost when the machine powers off right after.
pub fn drain() {
    if CONSOLE.lock().com1.is_some() {
        for _ in 0..1_000_000 {
            // SAFETY: COM1's line status register belongs to the hypervisor's console;
            // reading it has no side effect.
            if unsafe { port::inb(COM1 + 5) } & 0x40 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Reads one byte of console input from COM1, if one is waiting.
pub fn read_byte() -> Option<u8> {
    let c = CONSOLE.lock();
    c.com1.as_ref()?;
    // Line status bit 0: data ready.
    // SAFETY: COM1 belongs to the hypervisor's console (we hold its lock); reading the line
    // status has no side effect, reading the data register takes the byte that is waiting.
    unsafe { (port::inb(COM1 + 5) & 1 != 0).then(|| port::inb(COM1)) }
}

/// Breaks the console lock for a fatal diagnostic.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: only called on paths that never return to the interrupted lock holder
        // (fatal exceptions and panics on a single CPU), so no one else will touch the
        // console state concurrently once we take it over.
        unsafe { CONSOLE.force_unlock() };
    }
}

/// Prints to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let tag = match record.level() {
                log::Level::Error => "(E)",
                log::Level::Warn => "(W)",
                log::Level::Info => "(I)",
                log::Level::Debug => "(D)",
                log::Level::Trace => "(T)",
            };
            write_fmt(format_args!("{tag} {}\n", record.args()));
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (idempotent) and sets its level.
pub fn set_log_level(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
}
