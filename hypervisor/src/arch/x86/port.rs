//! Port I/O. The wrappers are `unsafe fn`: a port write (or even a read) can reprogram a
//! device that does DMA, reset the machine or change interrupt routing, so every caller
//! states in its `SAFETY:` comment which device it touches and why that is sound.
#![allow(unsafe_code)]

use x86_64::instructions::port::Port;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns, and the write must not make that
/// device touch memory or machine state the hypervisor relies on.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port and the value (see the contract above).
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller guarantees the port and the value (see [`outb`]).
    unsafe { Port::<u32>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns and reading it (which can have
/// side effects, e.g. acknowledging a status) must be what the caller intends.
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller guarantees the port (see the contract above).
    unsafe { Port::<u8>::new(port).read() }
}
