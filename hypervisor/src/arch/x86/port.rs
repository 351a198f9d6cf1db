//! Port I/O. These wrappers are safe to call because the hypervisor owns the machine:
//! it is the only software that touches I/O ports on the host, and every caller passes a
//! port it is responsible for.
#![allow(unsafe_code)]

use x86_64::instructions::port::Port;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port writes cannot break Rust memory safety; which device is touched is the
    // caller's responsibility (see module doc).
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { Port::<u32>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`.
    unsafe { Port::<u8>::new(port).read() }
}
