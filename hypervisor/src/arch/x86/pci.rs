//! The host's PCI configuration space through configuration mechanism #1: the address
//! register at port 0xCF8 (enable bit 31, bus, device, function, dword-aligned register)
//! and the data window at 0xCFC..0xCFF, accessed with 1, 2 or 4 bytes.
//!
//! Selecting a register and reading or writing it are two port accesses, so every use goes
//! through [`HOST`], the one lock of these ports; dom0's mediated view of configuration
//! space (`hvm::vpci`) lives under the same lock. Only registers 0..0xFF are reachable
//! this way (no extended configuration space: MMCONFIG is not used).
#![allow(unsafe_code)]

use crate::hvm::vpci::{self, all_ones, valid_access, Bdf, ConfigSpace};
use crate::hvm::vpci::{ADDRESS_PORT, DATA_PORT};
use crate::sync::{Level, Lock};
use x86_64::instructions::port::Port;

/// The right to use the configuration ports; exists only inside [`HOST`].
pub struct Ports {
    _private: (),
}

/// Everything behind the configuration ports' lock.
pub struct Host {
    pub ports: Ports,
    /// dom0's mediated view of configuration space (its address latch, the devices'
    /// BARs and where they are mapped).
    pub vpci: vpci::State,
}

/// The configuration ports and what depends on their state, under one lock.
pub static HOST: Lock<Host> = Lock::new(
    Level::Pci,
    Host {
        ports: Ports { _private: () },
        vpci: vpci::State::new(),
    },
);

impl Ports {
    /// Reads `size` bytes at register `reg` of `bdf`; all ones for an access mechanism #1
    /// cannot make (and from a function that does not exist, as the bus answers).
    pub fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        if !valid_access(reg, size) {
            return all_ones(size);
        }
        let data = DATA_PORT + u16::from(reg & 3);
        // SAFETY: 0xCF8/0xCFC..0xCFF are the host bridge's configuration mechanism #1,
        // used by nothing but this module, and `&mut self` (held only under `HOST`'s lock)
        // keeps the address write and the data access together. Selecting a register and
        // reading it have no side effect the hypervisor depends on.
        unsafe {
            Port::<u32>::new(ADDRESS_PORT).write(vpci::address(bdf, reg));
            match size {
                1 => u32::from(Port::<u8>::new(data).read()),
                2 => u32::from(Port::<u16>::new(data).read()),
                _ => Port::<u32>::new(data).read(),
            }
        }
    }

    /// Writes the low `size` bytes of `value` at register `reg` of `bdf`; an access
    /// mechanism #1 cannot make is dropped. What the write does to the device is the
    /// caller's responsibility (`hvm::vpci` decides what dom0 may write).
    pub fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        if !valid_access(reg, size) {
            return;
        }
        let data = DATA_PORT + u16::from(reg & 3);
        // SAFETY: as in `read`, for the ports; the register and value are what the caller
        // (vpci, which validates dom0's writes: BARs, MSI, bus mastering) decided to write.
        unsafe {
            Port::<u32>::new(ADDRESS_PORT).write(vpci::address(bdf, reg));
            match size {
                1 => Port::<u8>::new(data).write(value as u8),
                2 => Port::<u16>::new(data).write(value as u16),
                _ => Port::<u32>::new(data).write(value),
            }
        }
    }
}

impl ConfigSpace for Ports {
    fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        Ports::read(self, bdf, reg, size)
    }
    fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        Ports::write(self, bdf, reg, size, value)
    }
}
